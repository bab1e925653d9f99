//! The `bottleneck` binary: parses the command line and calls [`run`]; nothing else lives here.

mod args;
mod commands;
mod errors;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Cli::parse();
    match commands::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", errors::describe(&e));
            ExitCode::from(1)
        }
    }
}
