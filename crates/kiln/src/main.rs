//! kiln: the command line. It only reads arguments and files, calls the libraries and reports.

mod check;
mod cli;
mod report;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Build(args) => check::build(&args),
    }
}
