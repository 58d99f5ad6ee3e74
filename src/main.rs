//! The `softprompt` command line: a thin layer over the library.

/// `eprintln!` that a closed or full stderr does not turn into a panic
/// (`softprompt::internals::stdout::write_stderr`): a warning said to a reader who is gone
/// ended the command with exit code 101.
macro_rules! errln {
    ($($arg:tt)*) => {
        softprompt::internals::stdout::write_stderr(format_args!($($arg)*))
    };
}

mod cli;
mod open_files;
mod prediction_json;
#[cfg(feature = "serve")]
mod serve;

use clap::Parser;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => std::process::exit(cli::usage(e)),
    };
    std::process::exit(cli::run(args));
}
