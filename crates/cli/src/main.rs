//! The `bottleneck` binary: parses the command line and calls [`run`]; nothing else lives here.

mod args;
mod commands;
mod errors;
mod progress;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (args, given) = args::Cli::parse_with_given();
    match commands::run(args, &given) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", errors::describe(&e));
            ExitCode::from(1)
        }
    }
}
