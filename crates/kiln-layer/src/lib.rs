//! kiln-layer: a snapshot directory → a deterministic OCI layer blob, in one streaming pass
//! (and back, for inspection).
//!
//! ```text
//!   walk (sorted, whiteouts converted)            ┐ producer thread
//!   → tar bytes (ustar + PAX, file contents read once) ┘
//!   → bounded channel of 256 KiB chunks
//!   → sha256 (diff_id) → gzip blocks on all cores / zstd workers → sha256 (digest) → out
//! ```
//!
//! The bytes depend only on the tree and the options: entries are sorted by name, owners are
//! numeric, times are seconds (clamped to `SOURCE_DATE_EPOCH` when given), no atime/ctime, and the
//! compressors' output does not depend on thread count or timing.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_docs)]
// A layer read back is untrusted, and a written one must never wrap: no arithmetic that can
// overflow or panic.
#![cfg_attr(not(test), warn(clippy::arithmetic_side_effects))]

mod blob;
mod chunked;
mod entries;
mod error;
pub mod limits;
mod read;
mod sha;
mod tarball;

use std::fs::File;
use std::io::Write;
use std::path::Path;

pub use blob::{
    BlobInfo, BlobWriter, Compression, HashingWriter, ParallelGzip, Sha256Digest, GZIP_BLOCK_SIZE,
    MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD,
};
pub use chunked::{
    write_layer_reusing, ChunkCache, ChunkKey, ChunkPlace, FileIdentity, StoredChunk, MAX_CHUNK,
    MIN_CHUNK, PIECE,
};
pub use entries::{list_entries, Entries, Entry, EntryKind, Xattr, OPAQUE_MARKER, WHITEOUT_PREFIX};
pub use error::LayerError;
pub use limits::{ReadLimits, UnpackCaps};
pub use read::{
    decompress, encoding_of, read_layer_entries, visit_layer, visit_layer_limited, Encoding,
    EntrySummary, EntryTypeSummary, VisitedLayer,
};
pub use sha::HashState;
pub use tarball::write_tar;

/// Size of the buffers passed from the tar producer to the compressor.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// How many buffers may wait between them: bounds memory, lets reading and compressing overlap.
pub const QUEUE_DEPTH: usize = 8;

/// How to write a layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// Compression of the blob. Default: gzip level 6 (see [`Compression::default`]).
    pub compression: Compression,
    /// Clamp every mtime to at most this (seconds since the epoch), for reproducible builds.
    pub source_date_epoch: Option<i64>,
    /// Compression threads; 0 = one per core. The bytes written do not depend on it.
    pub threads: usize,
}

/// A written layer: what the store and the image config need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:<hex>` of the blob as written.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`, `+zstd`, or `.tar`.
    pub media_type: &'static str,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// Writes `root` (a snapshot directory: an overlay upper dir or a fresh COPY target) as a layer
/// into `out` (any writer; the store passes a temp file it later renames to
/// `blobs/sha256/<digest>`), and gives `out` back, flushed, with the layer's description.
///
/// One pass: a producer thread walks the tree and produces the tar, reading each file once; the
/// calling thread hashes the tar, hands 1 MiB blocks to the compression threads, and hashes and
/// writes their output in order. Memory stays bounded whatever the layer size. On error, `out`
/// holds an unusable partial blob and must be discarded.
///
/// ```no_run
/// # fn main() -> Result<(), kiln_layer::LayerError> {
/// use kiln_layer::{write_layer, LayerOptions};
/// let options = LayerOptions { source_date_epoch: Some(0), ..LayerOptions::default() };
/// let (layer, _sink) = write_layer(std::path::Path::new("/var/lib/kiln/snapshots/42"), &options, std::io::sink())?;
/// println!("{} ({} bytes), diff_id {}", layer.digest, layer.size, layer.diff_id);
/// # Ok(())
/// # }
/// ```
pub fn write_layer<W: Write + Send>(
    root: &Path,
    options: &LayerOptions,
    out: W,
) -> Result<(Layer, W), LayerError> {
    chunked::write_layer_reusing(root, options, None, out)
}

/// Writes a layer to `path` (created or truncated) and syncs it — a convenience for tools and
/// tests; the store does its own temp-file-and-rename.
pub fn write_layer_to_file(
    root: &Path,
    options: &LayerOptions,
    path: &Path,
) -> Result<Layer, LayerError> {
    let file = File::create(path).map_err(|e| LayerError::fs("create", path, e))?;
    let (layer, file) = write_layer(root, options, file)?;
    file.sync_all()
        .map_err(|e| LayerError::fs("sync", path, e))?;
    Ok(layer)
}

#[cfg(test)]
mod tests;
