//! kiln: the command line. It reads arguments, calls the libraries and reports; nothing else.

mod build_cmd;
mod cli;
mod progress;
mod recipe;
mod report;
mod store_cmd;

use clap::Parser;
use kiln_store::Store;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let root = cli.root.clone().unwrap_or_else(Store::default_root);
    match &cli.command {
        cli::Command::Build(args) => build_cmd::run(args, &root),
        other => store_cmd::run(other, &root),
    }
}
