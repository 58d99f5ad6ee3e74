//! Subcommands. Each lives in its own file and returns the process exit code.

/// `println!` that a closed stdout (`| head`) does not turn into a panic
/// (`softprompt::internals::stdout`).
macro_rules! outln {
    ($($arg:tt)*) => {
        softprompt::internals::stdout::write(format_args!($($arg)*), true)
    };
}

/// `print!` that a closed stdout does not turn into a panic.
macro_rules! out {
    ($($arg:tt)*) => {
        softprompt::internals::stdout::write(format_args!($($arg)*), false)
    };
}

mod bench;
mod common;
mod eval;
mod generate;
mod inspect;
mod kernels;
mod parity;
mod predict;
mod predict_mixed;
mod profile;
mod rows_bar;
#[cfg(feature = "serve")]
mod serve;
mod signals;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "softprompt",
    version,
    about = "Prompt tuning for large frozen BERT, T5 and decoder-only (BLOOM, Llama) models"
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
    /// Train a prompt on a data file (pet, cls, seq2seq or causal), with dev evaluation and checkpoints
    Train(Box<train::Args>),
    /// Accuracy and macro-F1 of a saved prompt on labelled data (--json for one JSON object)
    Eval(eval::Args),
    /// One JSON line per input row: the predicted label and the per-label scores
    Predict(predict::Args),
    /// Greedy generation behind a saved prompt on a decoder-only model (KV cache, batched)
    // the task flags generate refuses are left out of its help, which listed them (hostile
    // pass 29, F5)
    #[command(
        mut_arg("labels", |a| a.hide(true)),
        mut_arg("verbalizer", |a| a.hide(true)),
        mut_arg("pooling", |a| a.hide(true)),
        mut_arg("decode", |a| a.hide(true)),
        mut_arg("max_target_len", |a| a.hide(true)),
        mut_arg("free_targets", |a| a.hide(true)),
        mut_arg("task", |a| a.help("causal, the one task generate runs (default: the prompt's)"))
    )]
    Generate(generate::Args),
    /// Compile every CUDA kernel with NVRTC and print its resources (the CI compile gate)
    Kernels(kernels::Args),
    /// An HTTP server over one frozen model and many prompts, batching requests across prompts
    #[cfg(feature = "serve")]
    Serve(Box<serve::Args>),
}

/// What clap's `Error::exit` does (the help, the version or a usage error, and its exit
/// code), except that help or a version that cannot be written is an error: clap's `exit`
/// ignored the failed write, so `--help > /dev/full` exited 0 (hostile pass 17, F4). A reader
/// that went away (`--help | head`) is not a failure, as elsewhere.
pub fn usage(e: clap::Error) -> i32 {
    use std::io::Write;
    let printed = e.print().and_then(|()| match e.use_stderr() {
        true => Ok(()),
        false => std::io::stdout().flush(),
    });
    match printed {
        Err(err) if !e.use_stderr() && err.kind() != std::io::ErrorKind::BrokenPipe => {
            errln!("error: writing to stdout: {err}");
            2
        }
        _ => e.exit_code(),
    }
}

pub fn run(cli: Cli) -> i32 {
    // every command: a bad SOFTPROMPT_* value fails at start, not mid-run
    if let Err(e) = softprompt::internals::env::check() {
        return common::fail(e);
    }
    let code = match cli.command {
        Command::Parity(args) => parity::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Kernels(args) => kernels::run(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::run(*args),
    };
    // output that could not be written (a full disk behind `> file`) is a failure of its
    // file, as an --output file's is (2); a reader that went away (`| head`) is not
    match softprompt::internals::stdout::take_error() {
        Some(e) => {
            errln!("error: writing to stdout: {e}");
            // a command's own failure (1: a run that diverged) keeps its code
            if code == 0 {
                2
            } else {
                code
            }
        }
        None => code,
    }
}
