//! kiln-build: runs a plan. Stages run in dependency order; each step's result comes from the
//! cache when its key is known, otherwise COPY/ADD write a fresh snapshot that becomes a layer;
//! metadata instructions change the image config.

#![warn(missing_docs)]

pub mod annotations;
pub mod archive_io;
pub mod attest;
pub mod build;
pub mod cache;
mod chunk_reuse;
mod edit_reuse;
pub mod index;
pub mod lazy;
pub mod local_context;
pub mod nodes;
pub mod output;
pub mod pipeline;
pub mod platforms;
pub mod recorder;
pub mod remote;
pub mod request;
pub mod secret_flags;
pub mod shared_cache;

pub use build::{
    build, plan_cache, plan_cache_nodes, BuildOptions, Built, Event, Progress, StepState,
    StoreImages,
};
pub use kiln_exec::{
    copy, diff, fetch, flatten, git, image, lookup, rootfs, run, run_settings, squash, unpack,
};
pub use kiln_exec::{ensure_unpacked, Cause, ExecError};

use std::path::PathBuf;

/// What can stop a build. A step's own failures are [`BuildError::Exec`]; what is the
/// build's (pulls, pushes, outputs, names, caches) has its own variants, each with its source
/// and what it concerns. [`BuildError::cause`] tells a full disk, a refused permission, a
/// missing file and damaged data apart.
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
    /// The store refused.
    #[error("store: {0}")]
    Store(#[from] kiln_store::StoreError),
    /// Another stage failed first; this one stopped.
    #[error("stopped: another stage of the build failed")]
    Cancelled,
    /// The plan has errors: nothing is built.
    #[error("the plan has errors; nothing was built")]
    Plan,
    /// A stage's thread ended without its result (a bug in kiln, not in the recipe).
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// An image (a base, a `--from`) could not be pulled from its registry.
    #[error("pull {reference}: {source}")]
    Pull {
        /// The image as the recipe names it.
        reference: String,
        /// What the registry client said.
        source: Box<kiln_registry::RegistryError>,
    },
    /// The same image failed earlier in this build (planning and the stages ask once).
    #[error(transparent)]
    Failed(std::sync::Arc<BuildError>),
    /// The store holds an image's manifest without all its layers, and no registry may be asked.
    #[error(
        "image {reference:?}: the store lacks some of its layers and no registry may be asked"
    )]
    LayersMissing {
        /// The image.
        reference: String,
    },
    /// An image from an archive or layout could not be copied into the store.
    #[error("{reference}: cannot copy it into the store: {source}")]
    Import {
        /// The image as the recipe names it.
        reference: String,
        /// What the store said.
        source: Box<kiln_store::StoreError>,
    },
    /// An `-o` output asks for what cannot be done (a destination it needs, a directory that
    /// is not empty).
    #[error("{0}")]
    Output(String),
    /// An image archive (`type=oci`, `type=docker`) could not be written.
    #[error("writing the archive: {0}")]
    Archive(#[source] kiln_oci::Error),
    /// A cache could not be pushed to its registry.
    #[error("push {reference}: {source}")]
    CachePush {
        /// Where the cache was pushed.
        reference: String,
        /// What the registry client said.
        source: Box<kiln_registry::RegistryError>,
    },
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
    /// An attestation (provenance, SBOM) or the index holding it could not be made.
    #[error("{what}: {source}")]
    Attestation {
        /// Which document.
        what: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `-o type=local`: the image holds a file where an attestation statement would go.
    #[error("type=local: the image has {file} at its root; the attestation would replace it")]
    AttestationClash {
        /// The statement's file name.
        file: &'static str,
    },
    /// A RUN step's platform cannot execute on this machine (no emulator registered).
    #[error("RUN in stage {stage}: {source}")]
    CannotExecute {
        /// The stage, as progress names it.
        stage: String,
        /// What is missing, and how to install and register it.
        source: Box<kiln_sandbox::emulation::EmulationError>,
    },
    /// A step executor failed.
    #[error(transparent)]
    Exec(kiln_exec::ExecError),
    /// `--annotation index:...` (or `index-descriptor:`, `manifest-descriptor:`) on a build that
    /// makes no image index: one platform, no attestations.
    #[error("--annotation {types}: a build of one platform without attestations writes no image index to annotate (build several --platform values, or add --provenance or --sbom)")]
    NoIndexToAnnotate {
        /// The annotation types given.
        types: String,
    },
    /// A `--build-context NAME=DIR` directory could not be made into an image.
    #[error("--build-context {name}={}: {source}", dir.display())]
    LocalContext {
        /// The context's name.
        name: String,
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: Box<BuildError>,
    },
}

impl From<ExecError> for BuildError {
    /// A step that stopped because another stage failed is the build's [`BuildError::Cancelled`],
    /// so the scheduler reports the stage that failed first, not this one.
    fn from(error: ExecError) -> Self {
        match error {
            ExecError::Cancelled => BuildError::Cancelled,
            error => BuildError::Exec(error),
        }
    }
}

impl From<kiln_exec::fetch::FetchError> for BuildError {
    fn from(error: kiln_exec::fetch::FetchError) -> Self {
        BuildError::Exec(ExecError::Fetch(error))
    }
}

impl From<kiln_context::ContextError> for BuildError {
    fn from(error: kiln_context::ContextError) -> Self {
        BuildError::Exec(ExecError::Context(error))
    }
}

impl BuildError {
    /// What kind of failure this is: a full disk, a refused permission, something missing,
    /// damaged data, or another.
    pub fn cause(&self) -> Cause {
        match self {
            BuildError::Io { source, .. } | BuildError::ResultFile { source, .. } => {
                Cause::of_io(source)
            }
            BuildError::Store(source) => Cause::of_store(source),
            BuildError::Tag { source, .. } | BuildError::Import { source, .. } => {
                Cause::of_store(source)
            }
            BuildError::Archive(source) => Cause::of_oci(source),
            BuildError::Exec(source) => source.cause(),
            BuildError::NameInStore { source, .. }
            | BuildError::CacheTo { source, .. }
            | BuildError::LocalContext { source, .. } => source.cause(),
            BuildError::Failed(source) => source.cause(),
            _ => Cause::of_source(self),
        }
    }
}
