//! Hashing and compressing writers: the part of the pipeline after the tar.
//!
//! [`BlobWriter`] takes uncompressed bytes, hashes them (the diff_id), compresses them and hashes
//! and writes what comes out (the digest) — all as the bytes arrive, nothing kept whole. The store
//! uses it (or the plain [`HashingWriter`]) for any blob, not only layers.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use flate2::{Compress, FlushCompress, Status};
use sha2::{Digest as _, Sha256};

use crate::error::LayerError;

/// Media type of an uncompressed layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd layer.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How a blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Block-parallel gzip (see [`ParallelGzip`]); `level` 0–9.
    Gzip {
        /// zlib level, 0 (store) to 9 (smallest).
        level: u32,
    },
    /// zstd, multi-threaded; `level` as zstd accepts (1–22, negative for fast modes).
    Zstd {
        /// zstd level.
        level: i32,
    },
    /// No compression: the blob is the tar, and digest = diff_id.
    None,
}

impl Default for Compression {
    /// Gzip level 6: every registry and runtime reads gzip (zstd is still optional in some), and
    /// 6 is gzip's own default, the level Docker and BuildKit use: levels 7–9 take two to three
    /// times as long for a percent or two less.
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => MEDIA_TYPE_TAR_GZIP,
            Compression::Zstd { .. } => MEDIA_TYPE_TAR_ZSTD,
            Compression::None => MEDIA_TYPE_TAR,
        }
    }

    /// Checks the level against what the codec accepts.
    pub fn validate(&self) -> Result<(), LayerError> {
        match *self {
            Compression::Gzip { level } if level > 9 => Err(LayerError::InvalidLevel {
                codec: "gzip",
                level: i64::from(level),
                range: "0..=9".into(),
            }),
            Compression::Zstd { level } => {
                let range = zstd::compression_level_range();
                if range.contains(&level) {
                    Ok(())
                } else {
                    Err(LayerError::InvalidLevel {
                        codec: "zstd",
                        level: i64::from(level),
                        range: format!("{}..={}", range.start(), range.end()),
                    })
                }
            }
            _ => Ok(()),
        }
    }
}

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// Lower-case hex, 64 characters.
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }
}

/// `sha256:<hex>`, the OCI digest form.
impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A writer that passes bytes through to `inner`, hashing and counting exactly the bytes that
/// `inner` accepted.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flushes and returns the inner writer, the digest and the byte count.
    pub fn finish(mut self) -> io::Result<(W, Sha256Digest, u64)> {
        self.inner.flush()?;
        Ok((
            self.inner,
            Sha256Digest(self.hasher.finalize().into()),
            self.len,
        ))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len = self.len.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Size of the independent deflate blocks of [`ParallelGzip`]. Part of the output format: a
/// different block size gives different (equally valid) bytes, so it is fixed.
pub const GZIP_BLOCK_SIZE: usize = 1 << 20;
/// Each block is compressed with the previous block's last 32 KiB as preset dictionary (the
/// deflate window), which keeps the ratio within a fraction of a percent of a single stream.
pub(crate) const DICT_SIZE: usize = 32 * 1024;

pub(crate) type BlockResult = Result<(Vec<u8>, crc32fast::Hasher), String>;

/// Where gzip blocks are compressed.
#[derive(Clone)]
pub(crate) enum Pool {
    /// rayon's global pool (one thread per core).
    Global,
    /// A pool of our own with a fixed thread count.
    Own(Arc<rayon::ThreadPool>),
}

impl Pool {
    pub(crate) fn new(threads: usize) -> Result<Self, LayerError> {
        if threads == 0 {
            return Ok(Pool::Global);
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("kiln-gzip-{i}"))
            .build()
            .map(|p| Pool::Own(Arc::new(p)))
            .map_err(|e| LayerError::ThreadPool(e.to_string()))
    }

    pub(crate) fn threads(&self) -> usize {
        match self {
            Pool::Global => rayon::current_num_threads(),
            Pool::Own(p) => p.current_num_threads(),
        }
    }

    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        match self {
            Pool::Global => rayon::spawn(job),
            Pool::Own(p) => p.spawn(job),
        }
    }
}

/// Gzip compressed block-parallel, pigz-style, with output that depends only on the input, the
/// level and [`GZIP_BLOCK_SIZE`] — never on the number of threads or their timing.
///
/// The input is cut into blocks of [`GZIP_BLOCK_SIZE`]; each block is deflated on its own (with
/// the previous block's last 32 KiB as dictionary) and ends with a sync flush, so the blocks'
/// outputs concatenate into one deflate stream; an empty final block, the CRC-32 (combined from
/// the blocks' CRCs) and the length close it. A bounded number of blocks is in flight, so memory
/// stays at a few blocks per thread whatever the input size.
///
/// Header: no file name, mtime 0, XFL by level, OS byte 255 ("unknown", as Go's gzip writes).
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    pool: Pool,
    block: Vec<u8>,
    dict: Option<Arc<[u8]>>,
    pending: VecDeque<Receiver<BlockResult>>,
    max_in_flight: usize,
    crc: crc32fast::Hasher,
    total_in: u64,
}

impl<W: Write> ParallelGzip<W> {
    /// Starts a gzip stream on `out`: writes the header. `threads` = 0 uses one per core.
    pub fn new(mut out: W, level: u32, threads: usize) -> Result<Self, LayerError> {
        Compression::Gzip { level }.validate()?;
        let pool = Pool::new(threads)?;
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])
            .map_err(LayerError::Output)?;
        let max_in_flight = pool.threads().saturating_mul(2).saturating_add(2);
        Ok(ParallelGzip {
            out,
            level,
            pool,
            block: Vec::with_capacity(GZIP_BLOCK_SIZE),
            dict: None,
            pending: VecDeque::new(),
            max_in_flight,
            crc: crc32fast::Hasher::new(),
            total_in: 0,
        })
    }

    fn dispatch(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(GZIP_BLOCK_SIZE));
        let next_dict: Arc<[u8]> = Arc::from(&block[block.len().saturating_sub(DICT_SIZE)..]);
        let dict = self.dict.replace(next_dict);
        let level = self.level;
        let (tx, rx) = sync_channel(1);
        self.pool.spawn(move || {
            // The receiver is gone only if the writer was dropped; nothing to report then.
            let _ = tx.send(deflate_block(level, dict.as_deref(), &block));
        });
        self.pending.push_back(rx);
        while self.pending.len() > self.max_in_flight {
            self.collect_one()?;
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let (bytes, crc) = rx
            .recv()
            .map_err(|_| io::Error::other("gzip worker stopped"))?
            .map_err(io::Error::other)?;
        self.crc.combine(&crc);
        self.out.write_all(&bytes)
    }

    /// Compresses what is left, writes the trailer and returns `out`.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.block.is_empty() {
            self.dispatch()?;
        }
        while !self.pending.is_empty() {
            self.collect_one()?;
        }
        // An empty final block with fixed codes: BFINAL=1, BTYPE=01, end-of-block, padding.
        self.out.write_all(&[0x03, 0x00])?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        // ISIZE is the input length modulo 2^32 (RFC 1952).
        self.out.write_all(&(self.total_in as u32).to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = GZIP_BLOCK_SIZE.saturating_sub(self.block.len());
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        self.total_in = self.total_in.saturating_add(n as u64);
        if self.block.len() == GZIP_BLOCK_SIZE {
            self.dispatch()?;
        }
        Ok(n)
    }

    /// Blocks are cut at fixed sizes only (a flush must not change the bytes), so this only
    /// flushes what already came out.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Deflates one block (raw deflate, no zlib header) ending in a sync flush, and its CRC-32.
/// Whether a block is so close to uniformly random bytes (already compressed or encrypted data)
/// that deflate cannot shrink it: a chi-square test of its byte counts against uniform, in
/// integers so the answer, and so the output, is the same on every machine. Random data scores
/// about 255; text and code score in the millions.
fn looks_incompressible(input: &[u8]) -> bool {
    const THRESHOLD: u128 = 1024;
    if input.len() < 64 * 1024 {
        return false;
    }
    let mut counts = [0u64; 256];
    for byte in input {
        let count = &mut counts[usize::from(*byte)];
        *count = count.saturating_add(1);
    }
    let n = input.len() as u128;
    let scaled: u128 = counts
        .iter()
        .map(|c| {
            let d = u128::from(*c).saturating_mul(256).abs_diff(n);
            d.saturating_mul(d)
        })
        .fold(0u128, u128::saturating_add);
    // chi² = Σ (c - n/256)² / (n/256) = scaled / (256 n); counts are below 2^64, so none of
    // this comes near u128's range.
    scaled < THRESHOLD.saturating_mul(256).saturating_mul(n)
}

pub(crate) fn deflate_block(level: u32, dict: Option<&[u8]>, input: &[u8]) -> BlockResult {
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    // Deflating random bytes costs the most time and saves nothing: store them.
    let level = if looks_incompressible(input) {
        0
    } else {
        level
    };
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if let Some(dict) = dict {
        c.set_dictionary(dict).map_err(|e| e.to_string())?;
    }
    // Worst-case deflate expansion is ~0.03% plus a few bytes per stored block.
    let mut out = Vec::with_capacity(
        input
            .len()
            .saturating_add(input.len() / 64)
            .saturating_add(64),
    );
    loop {
        let consumed = usize::try_from(c.total_in()).map_err(|e| e.to_string())?;
        let before = (c.total_in(), out.len());
        let status = c
            .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
            .map_err(|e| e.to_string())?;
        // Done once all input is in and the flush fit (zlib leaves output room then).
        if c.total_in() == input.len() as u64 && out.len() < out.capacity() {
            break;
        }
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        } else if status == Status::BufError && before == (c.total_in(), out.len()) {
            return Err("deflate made no progress".into());
        }
    }
    Ok((out, crc))
}

enum Codec<W: Write> {
    Plain(HashingWriter<W>),
    Gzip(ParallelGzip<HashingWriter<W>>),
    Zstd(zstd::stream::write::Encoder<'static, HashingWriter<W>>),
}

/// What a [`BlobWriter`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Digest of the uncompressed bytes (a layer's diff_id).
    pub diff_id: Sha256Digest,
    /// Digest of the bytes written to the output.
    pub digest: Sha256Digest,
    /// Bytes written to the output.
    pub size: u64,
    /// Bytes given to the writer.
    pub uncompressed_size: u64,
    /// The media type of a layer compressed this way.
    pub media_type: &'static str,
}

/// Hash the input, compress it, hash and write the output: one pass, bounded memory.
pub struct BlobWriter<W: Write> {
    input: Sha256,
    input_len: u64,
    media_type: &'static str,
    codec: Codec<W>,
}

impl<W: Write> BlobWriter<W> {
    /// A writer compressing into `out`. `threads` = 0 uses one per core; the output bytes do not
    /// depend on it.
    pub fn new(out: W, compression: Compression, threads: usize) -> Result<Self, LayerError> {
        compression.validate()?;
        let out = HashingWriter::new(out);
        let codec = match compression {
            Compression::None => Codec::Plain(out),
            Compression::Gzip { level } => Codec::Gzip(ParallelGzip::new(out, level, threads)?),
            Compression::Zstd { level } => {
                let mut enc =
                    zstd::stream::write::Encoder::new(out, level).map_err(LayerError::Output)?;
                // With one worker or more, zstd's output is the same whatever the count, so use
                // at least one even on a single core: single-threaded mode would differ.
                let workers = if threads == 0 {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    threads
                };
                enc.multithread(u32::try_from(workers).unwrap_or(u32::MAX))
                    .map_err(LayerError::Output)?;
                enc.include_checksum(true).map_err(LayerError::Output)?;
                Codec::Zstd(enc)
            }
        };
        Ok(BlobWriter {
            input: Sha256::new(),
            input_len: 0,
            media_type: compression.media_type(),
            codec,
        })
    }

    /// Ends the stream and returns the digests and sizes (and the output writer).
    pub fn finish(self) -> Result<(BlobInfo, W), LayerError> {
        let out = match self.codec {
            Codec::Plain(w) => w,
            Codec::Gzip(g) => g.finish().map_err(LayerError::Output)?,
            Codec::Zstd(z) => z.finish().map_err(LayerError::Output)?,
        };
        let (w, digest, size) = out.finish().map_err(LayerError::Output)?;
        let diff_id = if matches!(self.media_type, MEDIA_TYPE_TAR) {
            digest
        } else {
            Sha256Digest(self.input.finalize().into())
        };
        Ok((
            BlobInfo {
                diff_id,
                digest,
                size,
                uncompressed_size: self.input_len,
                media_type: self.media_type,
            },
            w,
        ))
    }
}

impl<W: Write> Write for BlobWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.codec {
            Codec::Plain(w) => w.write(buf)?,
            Codec::Gzip(g) => g.write(buf)?,
            Codec::Zstd(z) => z.write(buf)?,
        };
        // Uncompressed, the output digest is the diff_id: no need to hash twice.
        if !matches!(self.codec, Codec::Plain(_)) {
            self.input.update(&buf[..n]);
        }
        self.input_len = self.input_len.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.codec {
            Codec::Plain(w) => w.flush(),
            Codec::Gzip(g) => g.flush(),
            Codec::Zstd(z) => z.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pseudo_text(n: usize, seed: u64) -> Vec<u8> {
        let words: [&[u8]; 8] = [
            b"layer ", b"kiln ", b"image ", b"blob ", b"tar\n", b"digest ", b"0123 ", b"zz ",
        ];
        let mut x = seed | 1;
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(5) {
                v.push((x >> 24) as u8);
            } else {
                v.extend_from_slice(words[(x >> 40) as usize % 8]);
            }
        }
        v.truncate(n);
        v
    }

    fn gzip_with(data: &[u8], level: u32, threads: usize, write_size: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), level, threads).unwrap();
        for chunk in data.chunks(write_size.max(1)) {
            g.write_all(chunk).unwrap();
        }
        g.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn parallel_gzip_round_trips_and_ignores_thread_count_and_write_sizes() {
        let data = pseudo_text(3 * GZIP_BLOCK_SIZE + 12345, 7);
        let one = gzip_with(&data, 6, 1, 4096);
        let four = gzip_with(&data, 6, 4, 1 << 20);
        let global = gzip_with(&data, 6, 0, 77_777);
        assert_eq!(one, four);
        assert_eq!(one, global);
        assert_eq!(gunzip(&one), data);
        assert!(one.len() < data.len() / 2, "compresses: {}", one.len());
        // Fixed header: no name, mtime 0, OS unknown.
        assert_eq!(&one[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    }

    /// Pinned output: the same bytes on every machine and with every thread count. A change
    /// here (a flate2/zlib-rs/zstd upgrade that compresses differently, a format change of ours)
    /// changes every layer digest kiln produces, so it must be deliberate.
    #[test]
    fn random_blocks_are_stored_and_text_is_compressed() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..3 * 1024 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        assert!(looks_incompressible(&random[..1024 * 1024]));
        assert!(!looks_incompressible(&pseudo_text(1024 * 1024, 3)));
        let gz = gzip_with(&random, 6, 2, 1 << 16);
        assert_eq!(gunzip(&gz), random);
        // Stored: a few bytes of framing per 64 KiB, never a deflate search.
        assert!(gz.len() < random.len() + random.len() / 1000 + 64);
        // Mixed input still round-trips.
        let mut mixed = pseudo_text(1024 * 1024, 9);
        mixed.extend_from_slice(&random[..1024 * 1024]);
        assert_eq!(gunzip(&gzip_with(&mixed, 6, 2, 4096)), mixed);
    }

    #[test]
    fn compressed_bytes_are_pinned() {
        let data = pseudo_text(2 * GZIP_BLOCK_SIZE + 5000, 42);
        let gz = gzip_with(&data, 6, 2, 100_000);
        assert_eq!(
            Sha256Digest::of(&gz).to_string(),
            "sha256:a37b83c4035dc71f8ca3ec07ee692cf7e316846bd8a80c8f80a96a1f2260a954"
        );
        let mut w = BlobWriter::new(Vec::new(), Compression::Zstd { level: 3 }, 2).unwrap();
        w.write_all(&data).unwrap();
        let zst = w.finish().unwrap().1;
        assert_eq!(
            Sha256Digest::of(&zst).to_string(),
            "sha256:9891c4a9ccdac7f10ffcd461c6373ef3e45819ebb2e9f60e39ee713ec1996bd1"
        );
    }

    /// Cutting the stream into blocks costs next to nothing in size (each block starts with
    /// the previous 32 KiB as dictionary).
    #[test]
    fn parallel_gzip_ratio_is_close_to_a_single_stream() {
        let data = pseudo_text(4 * GZIP_BLOCK_SIZE, 9);
        let parallel = gzip_with(&data, 6, 2, 1 << 16).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap().len();
        let overhead = parallel as f64 / single as f64 - 1.0;
        assert!(overhead < 0.005, "parallel {parallel} vs single {single}");
    }

    #[test]
    fn parallel_gzip_edge_sizes() {
        for n in [
            0,
            1,
            GZIP_BLOCK_SIZE - 1,
            GZIP_BLOCK_SIZE,
            GZIP_BLOCK_SIZE + 1,
        ] {
            let data = pseudo_text(n, n as u64);
            for level in [0, 1, 9] {
                let gz = gzip_with(&data, level, 2, 1000);
                assert_eq!(gunzip(&gz), data, "size {n} level {level}");
            }
        }
    }

    #[test]
    fn parallel_gzip_is_read_by_system_gzip() {
        let data = pseudo_text(2 * GZIP_BLOCK_SIZE + 99, 3);
        let gz = gzip_with(&data, 6, 2, 65536);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, &gz).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, data);
        let t = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&path)
            .status()
            .unwrap();
        assert!(t.success());
    }

    #[test]
    fn blob_writer_digests_match_rehash() {
        let data = pseudo_text(500_000, 11);
        for c in [
            Compression::None,
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            let mut w = BlobWriter::new(Vec::new(), c, 2).unwrap();
            w.write_all(&data).unwrap();
            let (info, out) = w.finish().unwrap();
            assert_eq!(info.digest, Sha256Digest::of(&out));
            assert_eq!(info.diff_id, Sha256Digest::of(&data));
            assert_eq!(info.size, out.len() as u64);
            assert_eq!(info.uncompressed_size, data.len() as u64);
            assert_eq!(info.media_type, c.media_type());
        }
    }

    #[test]
    fn zstd_output_does_not_depend_on_workers() {
        let data = pseudo_text(3_000_000, 5);
        let run = |threads| {
            let mut w =
                BlobWriter::new(Vec::new(), Compression::Zstd { level: 3 }, threads).unwrap();
            w.write_all(&data).unwrap();
            w.finish().unwrap().1
        };
        let a = run(1);
        assert_eq!(a, run(3));
        assert_eq!(zstd::decode_all(&a[..]).unwrap(), data);
    }

    #[test]
    fn invalid_levels_are_refused() {
        assert!(matches!(
            BlobWriter::new(Vec::new(), Compression::Gzip { level: 10 }, 1),
            Err(LayerError::InvalidLevel { .. })
        ));
        assert!(matches!(
            BlobWriter::new(Vec::new(), Compression::Zstd { level: 99 }, 1),
            Err(LayerError::InvalidLevel { .. })
        ));
    }

    #[test]
    fn digest_formats() {
        assert_eq!(
            Sha256Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
