//! kiln-exec: the step executors. Each takes snapshots of the store (directories of unpacked
//! layers) and makes a new one: COPY/ADD (`copy`, with `fetch` for URLs and `unpack` for
//! archives), RUN in the sandbox (`run`, with `diff` for what it changed), and the views the
//! others read (`rootfs`, `flatten`, `squash`). `lookup` finds images in the store, archives and
//! layout directories; `image` makes their configs and history. Nothing here knows registries,
//! caches from elsewhere or the build's schedule: kiln-build drives these.

#![warn(missing_docs)]

pub mod copy;
pub mod diff;
pub mod fetch;
pub mod flatten;
mod fsmeta;
pub mod git;
pub mod image;
pub mod lookup;
pub mod reuse;
pub mod rootfs;
pub mod run;
pub mod run_settings;
pub mod squash;
#[cfg(test)]
mod test_skip;
pub mod unpack;

pub use lookup::ensure_unpacked;

use std::path::PathBuf;

/// What can go wrong while a step runs. System failures keep their source error and the file,
/// layer or image they concern, so [`ExecError::cause`] tells a full disk, a refused
/// permission, a missing file and damaged data apart.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A layer could not be written from a snapshot, or read from its blob.
    #[error("{what}: {source}")]
    Layer {
        /// The layer: which snapshot or blob, for what.
        what: String,
        /// What the layer writer or reader said.
        source: kiln_layer::LayerError,
    },
    /// A base image's layer could not be unpacked into its snapshot.
    #[error("{what}, layer {digest}: {source}")]
    Unpack {
        /// The image the layer belongs to.
        what: String,
        /// The layer blob's digest.
        digest: String,
        /// Why.
        source: Box<ExecError>,
    },
    /// A base image's layer holds an entry kiln refuses to unpack.
    #[error("base image layer entry {entry:?} {reason}")]
    LayerEntry {
        /// The entry's path, lossily decoded.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A base image's layer is not the one its config names.
    #[error("base image layer has diff_id {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        /// The diff_id the config names.
        expected: String,
        /// The diff_id of what the layer holds.
        actual: String,
    },
    /// An image document, name or digest is not valid, or an archive or layout directory
    /// could not be read.
    #[error("{reference}: {source}")]
    Oci {
        /// The image, document or digest concerned.
        reference: String,
        /// What kiln-oci said.
        source: kiln_oci::Error,
    },
    /// An image is not in the store.
    #[error("image {reference:?} is not in the store; pull it with `kiln pull {reference}`, build it with `kiln build -t {reference}`, or load it with `kiln load -i FILE`")]
    ImageNotFound {
        /// The image as the recipe or command names it.
        reference: String,
    },
    /// The store holds the image, but not for the platform asked for.
    #[error("image {reference:?} has no manifest for {platform} in the store; it has {} (choose one with --platform)", available.join(", "))]
    PlatformNotInStore {
        /// The image as the recipe or command names it.
        reference: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the store has it for.
        available: Vec<String>,
    },
    /// The store holds a multi-platform image's index, which lists the platform, but not that
    /// platform's image (a base pulled for other platforms), and no registry may be asked.
    #[error("image {reference:?}: the store holds its index, which lists {platform}, but not that platform's image (pulled: {}); pull it with `kiln pull --platform {platform} {reference}`", if pulled.is_empty() { "none".to_string() } else { pulled.join(", ") })]
    PlatformNotPulled {
        /// The image as the recipe or command names it.
        reference: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the store holds it for.
        pulled: Vec<String>,
    },
    /// A local archive ADD unpacks could not be read or written out.
    #[error("ADD {}: {source}{}", path.display(), inner_cause(source))]
    Archive {
        /// The archive in the build context.
        path: PathBuf,
        /// What the system or the archive reader said.
        source: std::io::Error,
    },
    /// A build context file changed while it was copied: the copy could hold part of each
    /// version, so it is not kept.
    #[error("{}: the file changed while it was being copied; build again once it is no longer being written", path.display())]
    Changed {
        /// The file in the build context.
        path: PathBuf,
    },
    /// What a COPY, ADD or WORKDIR asks cannot be done as written (an unknown user, a file
    /// where a directory must be, a source that is not there): the message names the path.
    #[error("{0}")]
    Copy(String),
    /// Something kiln does not do (yet).
    #[error("{0}")]
    Unsupported(String),
    /// The store refused.
    #[error("store: {0}")]
    Store(#[from] kiln_store::StoreError),
    /// A RUN step failed: the message names the line, the command, how it ended and its last
    /// lines of output.
    #[error("RUN {0}")]
    Run(String),
    /// A `RUN --mount` source in the build context could not be read.
    #[error("RUN --mount source {path} in the build context: {source}")]
    MountSource {
        /// The source as the mount names it.
        path: String,
        /// What the context said.
        source: kiln_context::ContextError,
    },
    /// The sandbox a RUN step (or `kiln run`) runs in could not be set up or started.
    #[error("RUN: {0}")]
    Sandbox(#[from] kiln_sandbox::SandboxError),
    /// Another stage failed first; this one stopped.
    #[error("stopped: another stage of the build failed")]
    Cancelled,
    /// An ADD of a URL failed.
    #[error("ADD: {0}")]
    Fetch(#[from] crate::fetch::FetchError),
    /// The build context could not be read.
    #[error(transparent)]
    Context(#[from] kiln_context::ContextError),
}

/// The cause the tar crate wraps inside its own error, as ": cause" (empty when none).
fn inner_cause(error: &std::io::Error) -> String {
    error
        .get_ref()
        .and_then(|inner| inner.source())
        .map(|cause| format!(": {cause}"))
        .unwrap_or_default()
}

/// What kind of failure an error comes down to, for messages and tests that must tell them
/// apart without reading the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The disk (or a quota) is full.
    DiskFull,
    /// The system refused access.
    PermissionDenied,
    /// A file or image is not there.
    NotFound,
    /// Data is damaged: a digest, size or format that does not match.
    Corrupt,
    /// Anything else.
    Other,
}

impl Cause {
    /// The kind of an I/O error.
    pub fn of_io(error: &std::io::Error) -> Cause {
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Cause::DiskFull,
            ErrorKind::PermissionDenied => Cause::PermissionDenied,
            ErrorKind::NotFound => Cause::NotFound,
            ErrorKind::InvalidData | ErrorKind::UnexpectedEof => Cause::Corrupt,
            _ => match error.get_ref() {
                Some(inner) => Cause::of_source(inner),
                None => Cause::Other,
            },
        }
    }

    /// The kind of a layer writer/reader error.
    pub fn of_layer(error: &kiln_layer::LayerError) -> Cause {
        use kiln_layer::LayerError;
        match error {
            LayerError::Fs { source, .. } | LayerError::Output(source) => Cause::of_io(source),
            LayerError::Read(source) => match Cause::of_io(source) {
                Cause::Other => Cause::Corrupt,
                cause => cause,
            },
            LayerError::BadHeader { .. } | LayerError::UnknownMediaType(_) => Cause::Corrupt,
            _ => Cause::Other,
        }
    }

    /// The kind of a kiln-oci error.
    pub fn of_oci(error: &kiln_oci::Error) -> Cause {
        use kiln_oci::Error;
        match error {
            Error::Io { source, .. } => Cause::of_io(source),
            Error::DigestMismatch { .. }
            | Error::SizeMismatch { .. }
            | Error::Json { .. }
            | Error::InvalidArchive(_)
            | Error::InvalidImage(_) => Cause::Corrupt,
            Error::MissingEntry(_) => Cause::NotFound,
            _ => Cause::Other,
        }
    }

    /// The kind of a store error.
    pub fn of_store(error: &kiln_store::StoreError) -> Cause {
        use kiln_store::StoreError;
        match error {
            StoreError::Io { source, .. } => Cause::of_io(source),
            StoreError::Oci { source, .. } => Cause::of_oci(source),
            StoreError::DigestMismatch { .. } => Cause::Corrupt,
            StoreError::UnknownImage(_) => Cause::NotFound,
            _ => Cause::Other,
        }
    }

    /// The kind of a build context error.
    pub fn of_context(error: &kiln_context::ContextError) -> Cause {
        use kiln_context::ContextError;
        match error {
            ContextError::Io { source, .. } => Cause::of_io(source),
            ContextError::NotFound { .. } | ContextError::NoMatch { .. } => Cause::NotFound,
            _ => Cause::Other,
        }
    }

    /// The kind of any error, by what it is or, failing that, by its sources.
    pub fn of_source(error: &(dyn std::error::Error + 'static)) -> Cause {
        let mut current = Some(error);
        while let Some(error) = current {
            let cause = if let Some(e) = error.downcast_ref::<std::io::Error>() {
                Cause::of_io(e)
            } else if let Some(e) = error.downcast_ref::<kiln_layer::LayerError>() {
                Cause::of_layer(e)
            } else if let Some(e) = error.downcast_ref::<kiln_oci::Error>() {
                Cause::of_oci(e)
            } else if let Some(e) = error.downcast_ref::<kiln_store::StoreError>() {
                Cause::of_store(e)
            } else if let Some(e) = error.downcast_ref::<kiln_context::ContextError>() {
                Cause::of_context(e)
            } else if let Some(e) = error.downcast_ref::<ExecError>() {
                e.own_cause()
            } else {
                Cause::Other
            };
            if cause != Cause::Other {
                return cause;
            }
            current = error.source();
        }
        Cause::Other
    }
}

impl ExecError {
    /// What kind of failure this is: a full disk, a refused permission, something missing,
    /// damaged data, or another.
    pub fn cause(&self) -> Cause {
        Cause::of_source(self)
    }

    fn own_cause(&self) -> Cause {
        match self {
            ExecError::Io { source, .. } | ExecError::Archive { source, .. } => {
                Cause::of_io(source)
            }
            ExecError::Layer { source, .. } => Cause::of_layer(source),
            ExecError::Oci { source, .. } => Cause::of_oci(source),
            ExecError::Store(source) => Cause::of_store(source),
            ExecError::Context(source) | ExecError::MountSource { source, .. } => {
                Cause::of_context(source)
            }
            ExecError::ImageNotFound { .. }
            | ExecError::PlatformNotInStore { .. }
            | ExecError::PlatformNotPulled { .. } => Cause::NotFound,
            ExecError::DiffIdMismatch { .. } | ExecError::LayerEntry { .. } => Cause::Corrupt,
            _ => Cause::Other,
        }
    }

    /// An [`ExecError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ExecError {
        let path = path.into();
        move |source| ExecError::Io { path, source }
    }

    /// An [`ExecError::Layer`] for the layer `what` names.
    pub fn layer(what: impl Into<String>) -> impl FnOnce(kiln_layer::LayerError) -> ExecError {
        let what = what.into();
        move |source| ExecError::Layer { what, source }
    }

    /// An [`ExecError::Oci`] for the image, document or digest `reference` names.
    pub fn oci(reference: impl Into<String>) -> impl FnOnce(kiln_oci::Error) -> ExecError {
        let reference = reference.into();
        move |source| ExecError::Oci { reference, source }
    }
}
