//! The command line, in the flags people know from `docker build`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI container images from Dockerfile recipes, with no daemon"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a recipe (with --check: parse, expand and plan it only).
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,

    /// The recipe; `-` reads it from standard input. Default: CONTEXT/Dockerfile.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Set a build argument: KEY=VALUE, or KEY to take the value from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,

    /// Build this stage and the stages it needs, not the last one.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// The platform to build for (os/arch[/variant]). Default: this machine's.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// Only parse, expand and plan the recipe; run nothing. Exit 0 if it is valid, 1 if not.
    #[arg(long)]
    pub check: bool,
}
