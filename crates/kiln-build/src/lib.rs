//! kiln-build: runs a plan. Stages run in dependency order; each step's result comes from the
//! cache when its key is known, otherwise COPY/ADD write a fresh snapshot that becomes a layer;
//! metadata instructions change the image config.

#![warn(missing_docs)]

pub mod build;
pub mod cache;
pub mod index;
pub mod nodes;
pub mod output;
pub mod pipeline;
pub mod platforms;
pub mod remote;
pub mod secret_flags;
pub mod shared_cache;

pub use build::{build, plan_cache, BuildOptions, Built, Event, Progress, StepState, StoreImages};
pub use kiln_exec::{
    copy, diff, fetch, flatten, git, image, lookup, rootfs, run, run_settings, squash, unpack,
};
pub use kiln_exec::{ensure_unpacked, ExecError};

use std::path::PathBuf;

/// What can stop a build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A COPY/ADD could not be done.
    #[error("{0}")]
    Copy(String),
    /// Something kiln does not do (yet).
    #[error("{0}")]
    Unsupported(String),
    /// An image (a base, a `--from`, the result) could not be read or made.
    #[error("{0}")]
    Image(String),
    /// A layer could not be written.
    #[error("writing a layer: {0}")]
    Layer(String),
    /// The store refused.
    #[error("store: {0}")]
    Store(#[from] kiln_store::StoreError),
    /// A RUN step failed: the message names the line, the command, how it ended and its last
    /// lines of output.
    #[error("RUN {0}")]
    Run(String),
    /// Another stage failed first; this one stopped.
    #[error("stopped: another stage of the build failed")]
    Cancelled,
    /// The plan has errors: nothing is built.
    #[error("the plan has errors; nothing was built")]
    Plan,
    /// A base image could not be pulled.
    #[error("pull: {0}")]
    Pull(String),
    /// A cache could not be pushed.
    #[error("push: {0}")]
    Push(String),
    /// Pushing the built image failed.
    #[error("push {destination}: {source}")]
    PushTo {
        /// Where it was pushed.
        destination: String,
        /// What the registry client said.
        source: Box<kiln_registry::RegistryError>,
    },
    /// The pushed image could not be named in the store.
    #[error("naming {name} in the store: {source}")]
    NameInStore {
        /// The name.
        name: String,
        /// Why.
        source: Box<BuildError>,
    },
    /// A `--cache-to` export failed (and was not told to ignore errors).
    #[error("--cache-to {location}: {source}")]
    CacheTo {
        /// The cache, as `--cache-to` named it.
        location: String,
        /// Why.
        source: Box<BuildError>,
    },
    /// Naming the built image in the store failed.
    #[error("tagging {name}: {source}")]
    Tag {
        /// The name.
        name: String,
        /// Why.
        source: Box<kiln_store::StoreError>,
    },
    /// `--iidfile` or `--metadata-file` could not be written.
    #[error("{flag} {}: {source}", path.display())]
    ResultFile {
        /// `--iidfile` or `--metadata-file`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// An ADD of a URL failed.
    #[error("ADD: {0}")]
    Fetch(#[from] kiln_exec::fetch::FetchError),
    /// A step executor failed.
    #[error(transparent)]
    Exec(#[from] kiln_exec::ExecError),
}
