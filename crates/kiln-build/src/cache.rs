//! Caches from elsewhere, as the build sees them: a [`CacheSource`] it asks for a step's record
//! when the store has none (`--cache-from`), and a [`CacheSink`] it hands its records to once
//! the image is made (`--cache-to`). Where a cache lives (a registry, a directory) is the
//! implementor's business (the `shared_cache` module); the build knows only these two traits.

use crate::BuildError;
use kiln_oci::Descriptor;
use kiln_registry::Progress as TransferSink;
use kiln_store::{CacheRecord, Store};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// A cache the build reads step records from.
pub trait CacheSource: Send + Sync {
    /// How the cache is named in messages (its reference or directory).
    fn name(&self) -> &str;

    /// The record of `key`, its layer fetched into `store` and checked; `None` when the cache
    /// has no such record, an error when it has one that cannot be used (the step then runs).
    fn hit(
        &self,
        key: &str,
        store: &Store,
        now_nanos: u128,
        progress: TransferSink,
    ) -> Option<Result<CacheRecord, CacheError>>;
}

/// A cache the build writes its records to when it has finished.
pub trait CacheSink {
    /// How the cache is named in messages.
    fn name(&self) -> String;

    /// Whether a failed export only warns (`ignore-error=true`).
    fn ignore_error(&self) -> bool;

    /// Writes the build's records (and, if asked, its cache mounts).
    fn export(
        &self,
        input: &ExportInput,
        progress: TransferSink,
    ) -> Result<ExportReport, BuildError>;
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Step records written.
    pub records: usize,
    /// Layers written.
    pub layers: usize,
    /// Cache mounts written.
    pub mounts: usize,
    /// Cache mounts left out because they would pass the cap.
    pub mounts_skipped: Vec<String>,
}

/// What a build hands an export.
pub struct ExportInput<'a> {
    /// The store the records' layers are in.
    pub store: &'a Store,
    /// Every cache record the build used or made, in build order.
    pub records: &'a [CacheRecord],
    /// The built image's layers (for `mode=min`).
    pub image_layers: &'a [Descriptor],
    /// The ids of the cache mounts the build's RUN steps name.
    pub mount_ids: &'a BTreeSet<String>,
}

/// What can go wrong reading a cache from elsewhere. Each case keeps what it concerns (a path,
/// a digest, a record) and its source, so a missing file, a full disk, a refused permission and
/// a blob whose content does not match its digest read differently and can be told apart.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing a file failed (missing, no permission, disk full, ...).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The store refused (its own I/O, a digest mismatch on commit, ...).
    #[error("store: {0}")]
    Store(#[from] kiln_store::StoreError),
    /// The registry refused or failed.
    #[error("{0}")]
    Registry(Box<kiln_registry::RegistryError>),
    /// A document of the cache is not what it should be.
    #[error("{what}: {source}")]
    Document {
        /// Which document.
        what: String,
        /// Why it could not be read.
        source: kiln_oci::Error,
    },
    /// A cache document (records list, inline cache) is malformed.
    #[error("{what}: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// Why it could not be read.
        source: serde_json::Error,
    },
    /// A blob's content does not have the digest that names it.
    #[error("{}: content does not match its digest {digest}", path.display())]
    Corrupt {
        /// Where the blob was read.
        path: PathBuf,
        /// The digest it should have.
        digest: String,
    },
    /// A layer holds another tar than the one its record names.
    #[error(
        "layer {layer} holds a tar of digest {actual}, not the diff_id {claimed} the record names"
    )]
    WrongLayer {
        /// The layer blob.
        layer: String,
        /// The diff_id of the tar it holds.
        actual: String,
        /// The diff_id the record claims.
        claimed: String,
    },
    /// A layer or cache mount could not be read as a tar.
    #[error("layer {layer}: {source}")]
    Layer {
        /// The layer blob.
        layer: String,
        /// Why.
        source: Box<kiln_layer::LayerError>,
    },
    /// Unpacking a cache mount failed.
    #[error("cache mount {id}: {source}")]
    Mount {
        /// The cache mount's id.
        id: String,
        /// Why.
        source: Box<kiln_exec::ExecError>,
    },
    /// The cache is not usable as it is (too big, not a cache, no manifest, a bad record).
    #[error("{0}")]
    Unusable(String),
}
