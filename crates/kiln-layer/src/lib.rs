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
mod entries;
mod error;
pub mod limits;
mod read;
mod tarball;

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

pub use blob::{
    BlobInfo, BlobWriter, Compression, HashingWriter, ParallelGzip, Sha256Digest, GZIP_BLOCK_SIZE,
    MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD,
};
pub use entries::{list_entries, Entries, Entry, EntryKind, Xattr, OPAQUE_MARKER, WHITEOUT_PREFIX};
pub use error::LayerError;
pub use limits::{ReadLimits, UnpackCaps};
pub use read::{
    decompress, encoding_of, read_layer_entries, visit_layer, visit_layer_limited, Encoding,
    EntrySummary, EntryTypeSummary, VisitedLayer,
};
pub use tarball::write_tar;

use tarball::{read_retry, CopyError, TarSink};

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
    // Fail on a bad level before starting any thread.
    let blob = BlobWriter::new(out, options.compression, options.threads)?;
    let epoch = options.source_date_epoch;
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Chunk>(QUEUE_DEPTH);
        let (recycle_tx, recycle_rx) = sync_channel::<Vec<u8>>(QUEUE_DEPTH + 2);
        let producer = std::thread::Builder::new()
            .name("kiln-layer-tar".into())
            .spawn_scoped(scope, move || -> Result<(), LayerError> {
                let mut sink = ChunkWriter::new(tx, recycle_rx);
                tarball::write_tar_to(entries::Entries::new(root)?, epoch, &mut sink)?;
                sink.send_current().map_err(LayerError::Output)
            })
            .map_err(|e| LayerError::ThreadPool(e.to_string()))?;

        let consumed = consume(rx, &recycle_tx, blob);
        let produced = producer
            .join()
            .map_err(|_| LayerError::Internal("layer tar thread panicked"))?;
        // A producer error is the cause when the consumer merely saw the stream end; a consumer
        // (output) error is the cause when the producer merely saw the channel close.
        let blob = match (consumed, produced) {
            (Ok(blob), Ok(())) => blob,
            (Ok(_), Err(e)) | (Err(e), _) => return Err(e),
        };
        let (info, out) = blob.finish()?;
        let layer = Layer {
            diff_id: info.diff_id.to_string(),
            digest: info.digest.to_string(),
            size: info.size,
            media_type: info.media_type,
            uncompressed_size: info.uncompressed_size,
        };
        Ok((layer, out))
    })
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

/// Feeds chunks into the blob writer until the producer hangs up; returns the unfinished writer.
fn consume<W: Write>(
    rx: Receiver<Chunk>,
    recycle: &SyncSender<Vec<u8>>,
    mut blob: BlobWriter<W>,
) -> Result<BlobWriter<W>, LayerError> {
    for chunk in rx {
        blob.write_all(&chunk.buf[..chunk.len])
            .map_err(LayerError::Output)?;
        // If the pool of spare buffers is full, this one is simply dropped.
        let _ = recycle.try_send(chunk.buf);
    }
    Ok(blob)
}

/// A filled buffer and how much of it is data.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

/// The producer's end of the channel: fills fixed-size buffers and sends them when full.
struct ChunkWriter {
    tx: SyncSender<Chunk>,
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    len: usize,
}

impl ChunkWriter {
    fn new(tx: SyncSender<Chunk>, spare: Receiver<Vec<u8>>) -> Self {
        ChunkWriter {
            tx,
            spare,
            buf: vec![0; CHUNK_SIZE],
            len: 0,
        }
    }

    /// Sends the current buffer (if it holds anything) and takes a fresh one.
    fn send_current(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let fresh = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| vec![0; CHUNK_SIZE]);
        let buf = std::mem::replace(&mut self.buf, fresh);
        let len = std::mem::take(&mut self.len);
        self.tx
            .send(Chunk { buf, len })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "layer compressor stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_SIZE.saturating_sub(self.len));
        let end = self.len.saturating_add(n);
        self.buf[self.len..end].copy_from_slice(&data[..n]);
        self.len = end;
        if self.len == CHUNK_SIZE {
            self.send_current()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TarSink for ChunkWriter {
    /// Reads file contents straight into the chunk buffers.
    fn copy_from(&mut self, src: &mut File, limit: u64) -> Result<u64, CopyError> {
        let mut copied = 0u64;
        while copied < limit {
            let room = CHUNK_SIZE.saturating_sub(self.len);
            let want = usize::try_from(limit.saturating_sub(copied)).map_or(room, |n| n.min(room));
            let end = self.len.saturating_add(want);
            let n = read_retry(src, &mut self.buf[self.len..end])?;
            if n == 0 {
                break;
            }
            self.len = self.len.saturating_add(n);
            copied = copied.saturating_add(n as u64);
            if self.len == CHUNK_SIZE {
                self.send_current().map_err(CopyError::Sink)?;
            }
        }
        Ok(copied)
    }
}

#[cfg(test)]
mod tests;
