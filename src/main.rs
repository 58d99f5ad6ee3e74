//! The `softprompt` command line: a thin layer over the library.

mod cli;
mod prediction_json;
#[cfg(feature = "serve")]
mod serve;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    std::process::exit(cli::run(args));
}
