//! kiln-build: runs a plan. Stages run in dependency order; each step's result comes from the
//! cache when its key is known, otherwise COPY/ADD write a fresh snapshot that becomes a layer;
//! metadata instructions change the image config.

pub mod build;
pub mod cache;
pub mod output;
pub mod pipeline;
pub mod remote;
pub mod secret_flags;
pub mod shared_cache;

pub use build::{build, plan_cache, BuildOptions, Built, Event, Progress, StepState, StoreImages};
pub use kiln_exec::{
    copy, diff, fetch, flatten, git, image, lookup, rootfs, run, run_settings, squash, unpack,
};
pub use kiln_exec::{ensure_unpacked, ExecError};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
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
    #[error("the plan has errors; nothing was built")]
    Plan,
    #[error("pull: {0}")]
    Pull(String),
    #[error("push: {0}")]
    Push(String),
    /// Pushing the built image failed.
    #[error("push {destination}: {source}")]
    PushTo {
        destination: String,
        source: Box<kiln_registry::RegistryError>,
    },
    /// The pushed image could not be named in the store.
    #[error("naming {name} in the store: {source}")]
    NameInStore {
        name: String,
        source: Box<BuildError>,
    },
    /// A `--cache-to` export failed (and was not told to ignore errors).
    #[error("--cache-to {location}: {source}")]
    CacheTo {
        location: String,
        source: Box<BuildError>,
    },
    /// Naming the built image in the store failed.
    #[error("tagging {name}: {source}")]
    Tag {
        name: String,
        source: Box<kiln_store::StoreError>,
    },
    /// `--iidfile` or `--metadata-file` could not be written.
    #[error("{flag} {}: {source}", path.display())]
    ResultFile {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ADD: {0}")]
    Fetch(#[from] kiln_exec::fetch::FetchError),
    /// A step executor failed.
    #[error(transparent)]
    Exec(#[from] kiln_exec::ExecError),
}
