//! Caches from elsewhere, as the build sees them: a [`CacheSource`] it asks for a step's record
//! when the store has none (`--cache-from`), and a [`CacheSink`] it hands its records to once
//! the image is made (`--cache-to`). Where a cache lives (a registry, a directory) is the
//! implementor's business (the `shared_cache` module); the build knows only these two traits.

use crate::BuildError;
use kiln_oci::Descriptor;
use kiln_registry::Progress as TransferSink;
use kiln_store::{CacheRecord, Store};
use std::collections::BTreeSet;

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
    ) -> Option<Result<CacheRecord, String>>;
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
