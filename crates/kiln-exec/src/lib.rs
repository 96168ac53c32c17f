//! kiln-exec: the step executors. Each takes snapshots of the store (directories of unpacked
//! layers) and makes a new one: COPY/ADD (`copy`, with `fetch` for URLs and `unpack` for
//! archives), RUN in the sandbox (`run`, with `diff` for what it changed), and the views the
//! others read (`rootfs`, `flatten`, `squash`). `lookup` finds images in the store, archives and
//! layout directories; `image` makes their configs and history. Nothing here knows registries,
//! caches from elsewhere or the build's schedule: kiln-build drives these.

pub mod copy;
pub mod diff;
pub mod fetch;
pub mod flatten;
mod fsmeta;
pub mod git;
pub mod image;
pub mod lookup;
pub mod rootfs;
pub mod run;
pub mod run_settings;
pub mod squash;
#[cfg(test)]
mod test_skip;
pub mod unpack;

pub use lookup::ensure_unpacked;

use std::path::PathBuf;

/// What can go wrong while a step runs.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Copy(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Image(String),
    #[error("writing a layer: {0}")]
    Layer(String),
    #[error("store: {0}")]
    Store(#[from] kiln_store::StoreError),
    /// A RUN step failed: the message names the line, the command, how it ended and its last
    /// lines of output.
    #[error("RUN {0}")]
    Run(String),
    /// Another stage failed first; this one stopped.
    #[error("stopped: another stage of the build failed")]
    Cancelled,
    #[error("ADD: {0}")]
    Fetch(#[from] crate::fetch::FetchError),
    /// The build context could not be read.
    #[error(transparent)]
    Context(#[from] kiln_context::ContextError),
}
