//! `kiln run`: a command in an image of the store, for smoke tests; its exit code is kiln's.

use crate::cli::RunArgs;
use kiln_build::run::{run_image, RunImage, Snapshotter};
use kiln_store::Store;
use std::path::Path;
use std::process::ExitCode;

/// kiln's own failures (not the command's), as `docker run` reports them.
const RUN_FAILED: u8 = 125;

pub fn run(args: &RunArgs, root: &Path) -> ExitCode {
    let network = args.network.unwrap_or(kiln_sandbox::Network::Host);
    let snapshotter = Snapshotter::chosen(None).unwrap_or_default();
    let store = match Store::open(root) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: store {}: {e}", root.display());
            return ExitCode::from(RUN_FAILED);
        }
    };
    let platform = match args
        .platform
        .as_deref()
        .map(kiln_plan::Platform::parse)
        .transpose()
    {
        Ok(platform) => platform,
        Err(e) => {
            eprintln!("error: --platform: {e}");
            return ExitCode::from(RUN_FAILED);
        }
    };
    let request = RunImage {
        platform,
        reference: args.image.clone(),
        command: args.command.clone(),
        user: args.user.clone(),
        // `-e KEY` for a variable kiln does not have comes through empty: left out.
        env: args.env.iter().filter(|e| !e.is_empty()).cloned().collect(),
        network,
        snapshotter,
    };
    match run_image(&store, &request) {
        Ok(exit) => ExitCode::from(u8::try_from(exit.code()).unwrap_or(RUN_FAILED)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(RUN_FAILED)
        }
    }
}
