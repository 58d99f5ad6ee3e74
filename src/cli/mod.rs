//! Subcommands. Each lives in its own file and returns the process exit code.

mod bench;
mod inspect;
mod kernels;
mod parity;
mod profile;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "softprompt",
    version,
    about = "Prompt tuning for large frozen BERT and T5 models"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compare the engine with a PyTorch reference file (exit 0 pass, 1 fail, 2 unusable input)
    Parity(parity::Args),
    /// Time one prompt-tuning step on preset shapes with random weights
    Bench(bench::Args),
    /// Profile one step: a per-op time table
    Profile(profile::Args),
    /// Show what the engine reads from a model folder or a saved prompt
    Inspect(inspect::Args),
    /// Compile every CUDA kernel with NVRTC and print its resources (the CI compile gate)
    Kernels(kernels::Args),
}

pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Parity(args) => parity::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Kernels(args) => kernels::run(args),
    }
}
