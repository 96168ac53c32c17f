//! Chunked layers: the tar is cut at entry boundaries into chunks whose compressed forms are
//! independent (a run of sync-flushed deflate blocks of the one gzip member, or whole zstd
//! frames), so a chunk whose entries did not change can be taken from a [`ChunkCache`]
//! instead of its files being read and compressed again.
//!
//! Where the cuts fall depends only on the entries' header bytes (path, type, mode, owner,
//! clamped mtime, size, link, xattrs): after an entry once the chunk holds [`MIN_CHUNK`] bytes
//! and the hash of the entry's header has its low bits zero, or before an entry that would
//! take it past [`MAX_CHUNK`]. Never on thread count, timing or what a cache holds, so every
//! machine writes the same bytes, and an edit, insertion or deletion moves the cuts only near
//! it: the next content-defined cut after it is where it was.
//!
//! A chunk's key is the SHA-256 of the compression settings and, per entry, its header bytes
//! and its content's SHA-256 — from the caller when it knows it without reading the file
//! ([`ChunkCache::known_digest`]: COPY knows what it copied), else read. The diff_id (SHA-256
//! of the whole tar) of a reused chunk resumes from the state saved after it when the layer's
//! chunks up to it are the ones the state was saved for (the chain of chunk keys names that
//! prefix); otherwise the chunk is inflated and hashed, which costs a fraction of compressing
//! and reads no file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read as _, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::blob::{deflate_block, BlockResult, Pool, DICT_SIZE};
use crate::entries::{Entries, Entry};
use crate::error::LayerError;
use crate::sha::{HashState, Sha256Stream};
use crate::tarball::{
    content_size, copy_contents, entry_header, open_listed, padding, read_retry, CopyError,
    PlainSink, TarSink, BLOCK,
};
use crate::{
    Compression, HashingWriter, Layer, LayerOptions, CHUNK_SIZE, GZIP_BLOCK_SIZE, QUEUE_DEPTH,
};

/// A chunk is not cut before it holds this many tar bytes.
pub const MIN_CHUNK: u64 = 256 * 1024;
/// A chunk never holds more tar bytes than this, except one entry larger than it on its own.
/// Such an entry is a run of pieces of [`PIECE`] bytes each (the last shorter), cached one by
/// one when its content digest is known.
pub const MAX_CHUNK: u64 = 4 * 1024 * 1024;
/// A piece of an entry larger than [`MAX_CHUNK`]: one compression block, so a piece ends where
/// a block of the unpieced stream ends and the bytes are the same either way (the block after
/// it still takes the piece's tail as dictionary: a piece ends a chunk but not the stream of
/// blocks).
pub const PIECE: u64 = GZIP_BLOCK_SIZE as u64;
/// Past [`MIN_CHUNK`], a cut follows an entry whose header hash has these bits zero: one
/// entry in 16.
const CUT_MASK: u64 = 0xf;
/// Where chunks are cut; tests use small ones to get many chunks from small trees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) mask: u64,
}

/// The shape every layer has: part of the format.
const SHAPE: Shape = Shape {
    min: MIN_CHUNK,
    max: MAX_CHUNK,
    mask: CUT_MASK,
};

/// Names the chunk format in every key: a change of format gives new keys.
const KEY_DOMAIN: &[u8] = b"kiln-chunk-v1";
/// Names the pieces of a large entry (differs from [`KEY_DOMAIN`] at a fixed byte, so no
/// piece key's input is a chunk key's).
const PIECE_DOMAIN: &[u8] = b"kiln-chunk-piece-v1";

/// A chunk's key: SHA-256 of what went into it.
pub type ChunkKey = [u8; 32];

/// What identifies a file's content without reading it: if none of these changed, neither
/// did the content (the same fields as the build context's hash memo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
}

/// A chunk as a cache keeps it: its compressed bytes (deflate blocks ending in a sync flush,
/// or zstd frames), the CRC-32 and length of its uncompressed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    /// The compressed bytes, as they appear in the layer.
    pub bytes: Vec<u8>,
    /// CRC-32 of the uncompressed bytes (gzip's trailer is combined from it).
    pub crc: u32,
    /// Length of the uncompressed bytes.
    pub uncompressed_len: u64,
}

/// Where a chunk just written sits in the layer's output, and what checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlace {
    /// Offset of its first compressed byte in the output.
    pub offset: u64,
    /// Its compressed length.
    pub len: u64,
    /// CRC-32 of the uncompressed bytes.
    pub crc: u32,
    /// Length of the uncompressed bytes.
    pub uncompressed_len: u64,
    /// CRC-32 of the compressed bytes: what a read of them is checked against (they sit in
    /// a blob the store named by its digest; this catches a damaged or truncated file).
    pub compressed_crc: u32,
}

/// Where chunks of earlier layers are found and new ones remembered. Best effort: a cache
/// that forgets, or answers nothing, only costs reading and compressing again; a chunk it
/// gives back must be the bytes of the place it was told of under that key (a store checks
/// them).
pub trait ChunkCache: Sync {
    /// The content SHA-256 of a snapshot file, if known without reading it.
    fn known_digest(&self, file: &FileIdentity) -> Option<[u8; 32]>;
    /// A chunk remembered under `key`.
    fn chunk(&self, key: &ChunkKey) -> Option<StoredChunk>;
    /// The diff_id hash state after the chunks whose key chain is `prefix`.
    fn hash_state(&self, prefix: &ChunkKey) -> Option<HashState>;
    /// Remembers where in this layer's output a chunk just compressed is (the cache reads it
    /// from there once the layer is kept).
    fn remember_chunk(&self, key: &ChunkKey, place: &ChunkPlace);
    /// Remembers the hash state after the chunks whose key chain is `prefix`.
    fn remember_state(&self, prefix: &ChunkKey, state: &HashState);
}

/// What the tar thread sends the compressing thread.
enum Message {
    /// Tar bytes of the current chunk.
    Data { buf: Vec<u8>, len: usize },
    /// The current chunk ends; `key` when it may be cached, `prefix` when the chain of keys up
    /// to here is known; `piece` when it is a piece of a large entry that goes on (the next
    /// block keeps this one's tail as dictionary).
    End {
        key: Option<ChunkKey>,
        prefix: Option<ChunkKey>,
        piece: bool,
    },
    /// A whole chunk taken from the cache; `dict` is the tail of its tar bytes when it is a
    /// piece of a large entry that goes on.
    Reused {
        prefix: Option<ChunkKey>,
        chunk: StoredChunk,
        diff: ResumeDiff,
        dict: Option<Vec<u8>>,
    },
}

/// How the diff_id goes on past a reused chunk.
enum ResumeDiff {
    /// From the state saved after it.
    State(HashState),
    /// By hashing its bytes (read from the files of a piece).
    Bytes(Vec<u8>),
    /// By hashing its bytes inflated from the chunk, on the consumer's thread: the tar thread
    /// goes on listing meanwhile. Should the chunk not inflate to what it was stored with,
    /// `entries` are written afresh instead, as a chunk under `key`.
    Inflate {
        key: ChunkKey,
        entries: Vec<Pending>,
    },
}

/// [`crate::write_layer`] taking unchanged chunks from `cache` (when given and the layer is
/// compressed) and remembering new ones there. The bytes written are the same with or
/// without a cache, whatever it holds.
pub fn write_layer_reusing<W: Write + Send>(
    root: &Path,
    options: &LayerOptions,
    cache: Option<&dyn ChunkCache>,
    out: W,
) -> Result<(Layer, W), LayerError> {
    write_shaped(root, options, cache, SHAPE, out)
}

pub(crate) fn write_shaped<W: Write + Send>(
    root: &Path,
    options: &LayerOptions,
    cache: Option<&dyn ChunkCache>,
    shape: Shape,
    out: W,
) -> Result<(Layer, W), LayerError> {
    options.compression.validate()?;
    let cache = cache.filter(|_| options.compression != Compression::None);
    let epoch = options.source_date_epoch;
    let params = key_params(options.compression);
    std::thread::scope(|scope| {
        // The output is hashed and written on a thread of its own, beside the diff_id's hash.
        let (out_tx, out_rx) = sync_channel::<Vec<u8>>(QUEUE_DEPTH);
        let writer = std::thread::Builder::new()
            .name("kiln-layer-out".into())
            .spawn_scoped(
                scope,
                move || -> io::Result<(W, crate::Sha256Digest, u64)> {
                    let mut hashing = HashingWriter::new(out);
                    for bytes in out_rx {
                        hashing.write_all(&bytes)?;
                    }
                    hashing.finish()
                },
            )
            .map_err(|e| LayerError::ThreadPool(e.to_string()))?;
        let output = Spool { tx: out_tx };
        let compressor = match Compressor::new(output, options, cache, shape.max.max(PIECE)) {
            Ok(compressor) => compressor,
            Err(e) => {
                return Err(match writer.join() {
                    Ok(Err(out_err)) => LayerError::Output(out_err),
                    _ => e,
                })
            }
        };
        let (tx, rx) = sync_channel::<Message>(QUEUE_DEPTH);
        let (recycle_tx, recycle_rx) = sync_channel::<Vec<u8>>(QUEUE_DEPTH.saturating_add(2));
        let producer = std::thread::Builder::new()
            .name("kiln-layer-tar".into())
            .spawn_scoped(scope, move || -> Result<(), LayerError> {
                let mut chunker = Chunker {
                    sink: MessageWriter::new(tx, recycle_rx),
                    cache,
                    shape,
                    params,
                    epoch,
                    pending: Vec::new(),
                    pending_len: 0,
                    total_len: 0,
                    prefix: Some(Sha256::digest(params).into()),
                    pax: Vec::new(),
                };
                for entry in Entries::new(root)? {
                    chunker.entry(entry?)?;
                }
                chunker.finish()
            })
            .map_err(|e| LayerError::ThreadPool(e.to_string()))?;

        let consumed = consume(rx, &recycle_tx, compressor, cache);
        let produced = producer
            .join()
            .map_err(|_| LayerError::Internal("layer tar thread panicked"))?;
        // A producer error is the cause when the consumer merely saw the stream end; a consumer
        // error is the cause when the producer merely saw the channel close; an output error is
        // the cause when the consumer merely saw the output thread stop.
        let finished = match (consumed, produced) {
            (Ok((compressor, diff)), Ok(())) => compressor
                .finish()
                .map(|()| diff)
                .map_err(LayerError::Output),
            (Ok(_), Err(e)) | (Err(e), _) => Err(e),
        };
        let written = writer
            .join()
            .map_err(|_| LayerError::Internal("layer output thread panicked"))?;
        let (diff, (out, digest, size)) = match (finished, written) {
            (Ok(diff), Ok(written)) => (diff, written),
            (_, Err(e)) => return Err(LayerError::Output(e)),
            (Err(e), Ok(_)) => return Err(e),
        };
        let uncompressed_size = diff.len();
        let diff_id = if options.compression == Compression::None {
            digest
        } else {
            crate::Sha256Digest(diff.finalize())
        };
        Ok((
            Layer {
                diff_id: diff_id.to_string(),
                digest: digest.to_string(),
                size,
                media_type: options.compression.media_type(),
                uncompressed_size,
            },
            out,
        ))
    })
}

/// The compression settings as they enter every chunk key.
fn key_params(compression: Compression) -> [u8; 9] {
    let (codec, level) = match compression {
        Compression::Gzip { level } => (1u8, i32::try_from(level).unwrap_or(i32::MAX)),
        Compression::Zstd { level } => (2u8, level),
        Compression::None => (0u8, 0),
    };
    let mut params = [0u8; 9];
    params[0] = codec;
    params[1..5].copy_from_slice(&level.to_le_bytes());
    params[5..9].copy_from_slice(&u32::try_from(GZIP_BLOCK_SIZE).unwrap_or(0).to_le_bytes());
    params
}

/// The consumer: hashes the tar (the diff_id), feeds the compressor, saves hash states.
fn consume<'c>(
    rx: Receiver<Message>,
    recycle: &SyncSender<Vec<u8>>,
    mut compressor: Compressor<'c>,
    cache: Option<&'c dyn ChunkCache>,
) -> Result<(Compressor<'c>, Sha256Stream), LayerError> {
    let mut diff = Sha256Stream::new();
    for message in rx {
        match message {
            Message::Data { buf, len } => {
                diff.update(&buf[..len]);
                compressor.write(&buf[..len]).map_err(LayerError::Output)?;
                // If the pool of spare buffers is full, this one is simply dropped.
                let _ = recycle.try_send(buf);
            }
            Message::End { key, prefix, piece } => {
                compressor
                    .end_chunk(key, piece)
                    .map_err(LayerError::Output)?;
                if let (Some(cache), Some(prefix)) = (cache, prefix) {
                    cache.remember_state(&prefix, &diff.state());
                }
            }
            Message::Reused {
                prefix,
                chunk,
                diff: resume,
                dict,
            } => {
                match resume {
                    ResumeDiff::State(state) => diff = Sha256Stream::resume(&state),
                    ResumeDiff::Bytes(bytes) => diff.update(&bytes),
                    ResumeDiff::Inflate { key, entries } => {
                        match inflate(compressor.compression, &chunk) {
                            Some(bytes) => diff.update(&bytes),
                            None => {
                                let mut bytes = Vec::new();
                                write_pending(entries, &mut PlainSink(&mut bytes))?;
                                diff.update(&bytes);
                                compressor.write(&bytes).map_err(LayerError::Output)?;
                                compressor
                                    .end_chunk(Some(key), false)
                                    .map_err(LayerError::Output)?;
                                if let (Some(cache), Some(prefix)) = (cache, prefix) {
                                    cache.remember_state(&prefix, &diff.state());
                                }
                                continue;
                            }
                        }
                    }
                }
                compressor.reused(chunk, dict).map_err(LayerError::Output)?;
                if let (Some(cache), Some(prefix)) = (cache, prefix) {
                    cache.remember_state(&prefix, &diff.state());
                }
            }
        }
    }
    Ok((compressor, diff))
}

/// One entry waiting in the current chunk.
struct Pending {
    /// Its header blocks (or, for the end of the archive, the two zero blocks).
    header: Vec<u8>,
    content: Content,
}

enum Content {
    /// No content (not a regular file, or empty).
    Nothing,
    /// To be read when the chunk is written, with its digest when known.
    Later(Box<Entry>, Option<[u8; 32]>),
    /// Already read (to learn its digest).
    Loaded(Vec<u8>),
}

/// The tar thread: lists entries, cuts chunks, reuses or writes them.
struct Chunker<'c> {
    sink: MessageWriter,
    cache: Option<&'c dyn ChunkCache>,
    shape: Shape,
    params: [u8; 9],
    epoch: Option<i64>,
    pending: Vec<Pending>,
    /// Tar bytes of the pending entries.
    pending_len: u64,
    /// Tar bytes of the chunks before them.
    total_len: u64,
    /// Hash of the keys of the chunks so far, or `None` once a chunk had no key.
    prefix: Option<ChunkKey>,
    pax: Vec<u8>,
}

impl Chunker<'_> {
    fn entry(&mut self, entry: Entry) -> Result<(), LayerError> {
        let mut header = Vec::with_capacity(2 * BLOCK);
        entry_header(&entry, self.epoch, &mut self.pax, &mut header);
        let size = content_size(&entry);
        let entry_len = (header.len() as u64)
            .saturating_add(size)
            .saturating_add(padding(size) as u64);
        if entry_len > self.shape.max {
            self.flush()?;
            return self.large(entry, header);
        }
        if !self.pending.is_empty() && self.pending_len.saturating_add(entry_len) > self.shape.max {
            self.flush()?;
        }
        let cut_after = cut_hash(&header) & self.shape.mask == 0;
        let content = if size == 0 {
            Content::Nothing
        } else {
            match self.cache {
                None => Content::Later(Box::new(entry), None),
                Some(cache) => match cache.known_digest(&identity(&entry)) {
                    Some(digest) => Content::Later(Box::new(entry), Some(digest)),
                    None => {
                        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                        copy_contents(&entry, &mut PlainSink(&mut bytes))?;
                        Content::Loaded(bytes)
                    }
                },
            }
        };
        self.pending.push(Pending { header, content });
        self.pending_len = self.pending_len.saturating_add(entry_len);
        if self.pending_len >= self.shape.min && cut_after {
            self.flush()?;
        }
        Ok(())
    }

    /// Ends the archive (two zero blocks, in the last chunk) and sends what is pending.
    fn finish(mut self) -> Result<(), LayerError> {
        let end = vec![0u8; 2 * BLOCK];
        if !self.pending.is_empty()
            && self.pending_len.saturating_add(end.len() as u64) > self.shape.max
        {
            self.flush()?;
        }
        self.pending_len = self.pending_len.saturating_add(end.len() as u64);
        self.pending.push(Pending {
            header: end,
            content: Content::Nothing,
        });
        self.flush()?;
        self.sink.send_current().map_err(LayerError::Output)
    }

    /// The pending entries' chunk key.
    fn key(&self) -> ChunkKey {
        let mut h = Sha256::new();
        h.update(KEY_DOMAIN);
        h.update(self.params);
        for p in &self.pending {
            h.update((p.header.len() as u64).to_le_bytes());
            h.update(&p.header);
            match &p.content {
                Content::Nothing => h.update([0u8]),
                Content::Later(_, Some(digest)) => {
                    h.update([1u8]);
                    h.update(digest);
                }
                Content::Loaded(bytes) => {
                    h.update([1u8]);
                    h.update(Sha256::digest(bytes));
                }
                // Only without a cache, where keys are not used.
                Content::Later(_, None) => h.update([2u8]),
            }
        }
        h.finalize().into()
    }

    fn chain(&self, key: &ChunkKey) -> Option<ChunkKey> {
        let prefix = self.prefix?;
        let mut h = Sha256::new();
        h.update(prefix);
        h.update(key);
        Some(h.finalize().into())
    }

    /// Sends the pending entries as one chunk: from the cache when it has it, else written.
    fn flush(&mut self) -> Result<(), LayerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk_len = std::mem::take(&mut self.pending_len);
        let pending = std::mem::take(&mut self.pending);
        let Some(cache) = self.cache else {
            self.prefix = None;
            self.write_entries(pending)?;
            self.total_len = self.total_len.saturating_add(chunk_len);
            return self.end_chunk(None);
        };
        self.pending = pending;
        let key = self.key();
        let pending = std::mem::take(&mut self.pending);
        let prefix = self.chain(&key);
        self.prefix = prefix;
        self.total_len = self.total_len.saturating_add(chunk_len);
        if let Some(chunk) = cache
            .chunk(&key)
            .filter(|c| c.uncompressed_len == chunk_len)
        {
            let saved = prefix
                .and_then(|p| cache.hash_state(&p))
                .filter(|s| s.len() == self.total_len);
            let diff = match saved {
                Some(state) => ResumeDiff::State(state),
                None => ResumeDiff::Inflate {
                    key,
                    entries: pending,
                },
            };
            self.sink.send_current().map_err(LayerError::Output)?;
            return self
                .sink
                .send(Message::Reused {
                    prefix,
                    chunk,
                    diff,
                    dict: None,
                })
                .map_err(LayerError::Output);
        }
        self.write_entries(pending)?;
        self.end_chunk(Some(key))
    }

    fn end_chunk(&mut self, key: Option<ChunkKey>) -> Result<(), LayerError> {
        self.end(key, false)
    }

    fn end(&mut self, key: Option<ChunkKey>, piece: bool) -> Result<(), LayerError> {
        self.sink.send_current().map_err(LayerError::Output)?;
        let prefix = self.prefix;
        self.sink
            .send(Message::End { key, prefix, piece })
            .map_err(LayerError::Output)
    }

    fn write_entries(&mut self, pending: Vec<Pending>) -> Result<(), LayerError> {
        write_pending(pending, &mut self.sink)
    }

    /// An entry larger than [`MAX_CHUNK`]: pieces of its own, cached when its content digest
    /// is known without reading it; else streamed as one chunk, never cached.
    fn large(&mut self, entry: Entry, header: Vec<u8>) -> Result<(), LayerError> {
        let size = content_size(&entry);
        let entry_len = (header.len() as u64)
            .saturating_add(size)
            .saturating_add(padding(size) as u64);
        let known = self
            .cache
            .and_then(|cache| Some((cache, cache.known_digest(&identity(&entry))?)));
        if let Some((cache, digest)) = known.filter(|_| size > 0) {
            return self.pieces(cache, &entry, &header, &digest);
        }
        self.total_len = self.total_len.saturating_add(entry_len);
        self.prefix = None;
        self.write_entries(vec![Pending {
            header,
            content: if size == 0 {
                Content::Nothing
            } else {
                Content::Later(Box::new(entry), None)
            },
        }])?;
        self.end_chunk(None)
    }

    /// A large entry as pieces of [`PIECE`] tar bytes: each taken from the cache when it has
    /// it, else read and compressed, and then remembered.
    fn pieces(
        &mut self,
        cache: &dyn ChunkCache,
        entry: &Entry,
        header: &[u8],
        digest: &[u8; 32],
    ) -> Result<(), LayerError> {
        let listed = LargeEntry {
            entry,
            header,
            file: open_listed(entry)?,
        };
        listed.check_size()?;
        let entry_len = listed.tar_len();
        let mut offset = 0u64;
        let mut index = 0u64;
        while offset < entry_len {
            let len = PIECE.min(entry_len.saturating_sub(offset));
            let end = offset.saturating_add(len);
            let last = end == entry_len;
            let key = self.piece_key(header, digest, entry_len, index);
            let prefix = self.chain(&key);
            self.prefix = prefix;
            self.total_len = self.total_len.saturating_add(len);
            let found = cache.chunk(&key).filter(|c| c.uncompressed_len == len);
            let reuse = match found {
                Some(chunk) => self.resume_piece(cache, &listed, chunk, prefix, offset..end)?,
                None => None,
            };
            match reuse {
                Some(message) => {
                    self.sink.send_current().map_err(LayerError::Output)?;
                    self.sink.send(message).map_err(LayerError::Output)?;
                }
                None => {
                    listed.write_range(&mut self.sink, offset, end)?;
                    self.end(Some(key), !last)?;
                }
            }
            offset = end;
            index = index.saturating_add(1);
        }
        Ok(())
    }

    /// The message that reuses a cached piece (tar bytes `range` of the entry), or `None` when
    /// its bytes do not check out (then it is written afresh).
    fn resume_piece(
        &self,
        cache: &dyn ChunkCache,
        listed: &LargeEntry<'_>,
        chunk: StoredChunk,
        prefix: Option<ChunkKey>,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Message>, LayerError> {
        let std::ops::Range { start, end } = range;
        // The last piece ends the entry's chunk: the next chunk starts without a dictionary.
        let last = end == listed.tar_len();
        let saved = prefix
            .and_then(|p| cache.hash_state(&p))
            .filter(|s| s.len() == self.total_len);
        let dict_from = end.saturating_sub(DICT_SIZE as u64).max(start);
        let (diff, dict) = match saved {
            Some(state) => {
                let dict = if last {
                    None
                } else {
                    Some(listed.read_range(dict_from, end)?)
                };
                (ResumeDiff::State(state), dict)
            }
            None => {
                // The piece's tar bytes, read from the file: they give the diff_id and check
                // the cached chunk against the CRC it was stored with.
                let bytes = listed.read_range(start, end)?;
                if crc32fast::hash(&bytes) != chunk.crc {
                    return Ok(None);
                }
                let tail = usize::try_from(dict_from.saturating_sub(start)).unwrap_or(0);
                let dict = (!last).then(|| bytes.get(tail..).unwrap_or_default().to_vec());
                (ResumeDiff::Bytes(bytes), dict)
            }
        };
        Ok(Some(Message::Reused {
            prefix,
            chunk,
            diff,
            dict,
        }))
    }

    /// The key of piece `index` of a large entry: its header, content digest and length name
    /// every byte of it, and the block before it, whose tail is its dictionary.
    fn piece_key(&self, header: &[u8], digest: &[u8; 32], entry_len: u64, index: u64) -> ChunkKey {
        let mut h = Sha256::new();
        h.update(PIECE_DOMAIN);
        h.update(self.params);
        h.update((header.len() as u64).to_le_bytes());
        h.update(header);
        h.update(digest);
        h.update(entry_len.to_le_bytes());
        h.update(index.to_le_bytes());
        h.finalize().into()
    }
}

/// A large entry's tar bytes, read by range: header, content from its (checked) file, padding.
struct LargeEntry<'a> {
    entry: &'a Entry,
    header: &'a [u8],
    file: File,
}

impl LargeEntry<'_> {
    fn header_len(&self) -> u64 {
        self.header.len() as u64
    }

    fn content_end(&self) -> u64 {
        self.header_len().saturating_add(self.entry.size)
    }

    /// Header, content and padding.
    fn tar_len(&self) -> u64 {
        self.content_end()
            .saturating_add(padding(self.entry.size) as u64)
    }

    /// The file still has the size listed (its identity was checked when it was opened).
    fn check_size(&self) -> Result<(), LayerError> {
        let md = self
            .file
            .metadata()
            .map_err(|err| LayerError::fs("stat", &self.entry.source, err))?;
        if md.len() == self.entry.size {
            Ok(())
        } else {
            Err(LayerError::Changed {
                path: self.entry.source.clone(),
                detail: "changed size",
            })
        }
    }

    /// The tar bytes `start..end` of the entry.
    fn read_range(&self, start: u64, end: u64) -> Result<Vec<u8>, LayerError> {
        let len = usize::try_from(end.saturating_sub(start))
            .map_err(|_| LayerError::Internal("piece larger than memory"))?;
        let mut out = Vec::with_capacity(len);
        self.each_part(start, end, |part| match part {
            Part::Bytes(bytes) => {
                out.extend_from_slice(bytes);
                Ok(())
            }
            Part::Content(from, n) => {
                // Read into the spare capacity: no zeroing of bytes about to be overwritten.
                let mut file = &self.file;
                file.seek(SeekFrom::Start(from))
                    .map_err(|err| LayerError::fs("seek", &self.entry.source, err))?;
                let read = io::Read::take(file, n as u64)
                    .read_to_end(&mut out)
                    .map_err(|err| self.read_error(err))?;
                if read == n {
                    Ok(())
                } else {
                    Err(self.read_error(io::ErrorKind::UnexpectedEof.into()))
                }
            }
        })?;
        Ok(out)
    }

    /// Writes the tar bytes `start..end` of the entry to `sink`, the content straight from the
    /// file into the sink's buffers.
    fn write_range(
        &self,
        sink: &mut MessageWriter,
        start: u64,
        end: u64,
    ) -> Result<(), LayerError> {
        // A second handle on the same open file: the parts are read through it while `self`
        // lends the header.
        let mut file = self
            .file
            .try_clone()
            .map_err(|err| LayerError::fs("read", &self.entry.source, err))?;
        self.each_part(start, end, |part| match part {
            Part::Bytes(bytes) => sink.write_all(bytes).map_err(LayerError::Output),
            Part::Content(from, n) => {
                file.seek(SeekFrom::Start(from))
                    .map_err(|err| LayerError::fs("seek", &self.entry.source, err))?;
                let copied = sink
                    .copy_from(&mut file, n as u64)
                    .map_err(|err| match err {
                        CopyError::Source(err) => LayerError::fs("read", &self.entry.source, err),
                        CopyError::Sink(err) => LayerError::Output(err),
                    })?;
                if copied == n as u64 {
                    Ok(())
                } else {
                    Err(self.read_error(io::ErrorKind::UnexpectedEof.into()))
                }
            }
        })
    }

    fn read_error(&self, err: io::Error) -> LayerError {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            LayerError::Changed {
                path: self.entry.source.clone(),
                detail: "shrank",
            }
        } else {
            LayerError::fs("read", &self.entry.source, err)
        }
    }

    /// Splits `start..end` into header bytes, content (file offset and length) and padding.
    fn each_part(
        &self,
        start: u64,
        end: u64,
        mut each: impl FnMut(Part<'_>) -> Result<(), LayerError>,
    ) -> Result<(), LayerError> {
        const ZEROS: [u8; BLOCK] = [0u8; BLOCK];
        let header_len = self.header_len();
        let content_end = self.content_end();
        if start < header_len {
            let from = usize::try_from(start).unwrap_or(usize::MAX);
            let to = usize::try_from(end.min(header_len)).unwrap_or(usize::MAX);
            each(Part::Bytes(self.header.get(from..to).unwrap_or_default()))?;
        }
        let from = start.max(header_len);
        let to = end.min(content_end);
        if from < to {
            let n = usize::try_from(to.saturating_sub(from))
                .map_err(|_| LayerError::Internal("piece larger than memory"))?;
            each(Part::Content(from.saturating_sub(header_len), n))?;
        }
        let from = start.max(content_end);
        if from < end {
            let n = usize::try_from(end.saturating_sub(from))
                .unwrap_or(0)
                .min(BLOCK);
            each(Part::Bytes(&ZEROS[..n]))?;
        }
        Ok(())
    }
}

/// A part of a large entry's tar bytes.
enum Part<'a> {
    /// Header or padding bytes.
    Bytes(&'a [u8]),
    /// Content: offset in the file and length.
    Content(u64, usize),
}

/// Writes the tar bytes of `pending` entries: header, content, padding.
fn write_pending<S: TarSink>(pending: Vec<Pending>, sink: &mut S) -> Result<(), LayerError> {
    for p in pending {
        sink.write_all(&p.header).map_err(LayerError::Output)?;
        let size = match p.content {
            Content::Nothing => continue,
            Content::Loaded(bytes) => {
                sink.write_all(&bytes).map_err(LayerError::Output)?;
                bytes.len() as u64
            }
            Content::Later(entry, _) => {
                copy_contents(&entry, sink)?;
                entry.size
            }
        };
        sink.write_all(&[0u8; BLOCK][..padding(size)])
            .map_err(LayerError::Output)?;
    }
    Ok(())
}

/// The first 8 bytes of an entry header's SHA-256: decides the cuts.
fn cut_hash(header: &[u8]) -> u64 {
    let digest = Sha256::digest(header);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

fn identity(entry: &Entry) -> FileIdentity {
    FileIdentity {
        dev: entry.ident.0,
        ino: entry.ident.1,
        size: entry.size,
        mtime_ns: entry.times_ns.0,
        ctime_ns: entry.times_ns.1,
    }
}

/// The uncompressed bytes of a cached chunk, checked against its length and CRC; `None` when
/// they do not match (then the chunk is written afresh).
fn inflate(compression: Compression, chunk: &StoredChunk) -> Option<Vec<u8>> {
    let len = usize::try_from(chunk.uncompressed_len).ok()?;
    let bytes = match compression {
        Compression::Gzip { .. } => {
            let mut d = flate2::Decompress::new(false);
            let mut out = Vec::with_capacity(len.checked_add(1)?);
            loop {
                let consumed = usize::try_from(d.total_in()).ok()?;
                let before = (d.total_in(), out.len());
                d.decompress_vec(
                    chunk.bytes.get(consumed..)?,
                    &mut out,
                    flate2::FlushDecompress::Sync,
                )
                .ok()?;
                if d.total_in() == chunk.bytes.len() as u64 || out.len() > len {
                    break;
                }
                if before == (d.total_in(), out.len()) {
                    return None;
                }
            }
            out
        }
        Compression::Zstd { .. } => zstd::bulk::Decompressor::new()
            .ok()?
            .decompress(&chunk.bytes, len)
            .ok()?,
        Compression::None => return None,
    };
    (bytes.len() == len && crc32fast::hash(&bytes) == chunk.crc).then_some(bytes)
}

/// The tar thread's end of the channel: fills fixed-size buffers and sends them when full.
struct MessageWriter {
    tx: SyncSender<Message>,
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    len: usize,
}

impl MessageWriter {
    fn new(tx: SyncSender<Message>, spare: Receiver<Vec<u8>>) -> Self {
        MessageWriter {
            tx,
            spare,
            buf: vec![0; CHUNK_SIZE],
            len: 0,
        }
    }

    fn send(&self, message: Message) -> io::Result<()> {
        self.tx
            .send(message)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "layer compressor stopped"))
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
        self.send(Message::Data { buf, len })
    }
}

impl Write for MessageWriter {
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

impl TarSink for MessageWriter {
    /// Reads file contents straight into the message buffers.
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

/// What waits, in output order, to be written.
enum Queued {
    /// A block being compressed, and its input length.
    Block(Receiver<BlockResult>, u64),
    /// The end of a written chunk (with its key when it is to be remembered).
    End(Option<ChunkKey>),
    /// A chunk from the cache.
    Ready(StoredChunk),
}

/// Compresses chunks on all cores, each block of a chunk with the previous block of the same
/// chunk as dictionary (gzip) and every block its own frame (zstd), and writes the blocks in
/// order; gzip's header and trailer (CRC combined from the chunks') frame the whole.
struct Compressor<'c> {
    out: Spool,
    compression: Compression,
    pool: Pool,
    block: Vec<u8>,
    dict: Option<Arc<[u8]>>,
    queue: VecDeque<Queued>,
    max_queued: usize,
    crc: crc32fast::Hasher,
    total_in: u64,
    cache: Option<&'c dyn ChunkCache>,
    /// Bytes written to the output so far.
    written: u64,
    /// The chunk at the head of the output, to be remembered: where it starts, the CRC-32 of
    /// its compressed bytes, the CRC-32 and length of its tar bytes.
    chunk_start: u64,
    chunk_out_crc: crc32fast::Hasher,
    chunk_crc: crc32fast::Hasher,
    chunk_len: u64,
    /// Chunks longer than this are not remembered.
    max_chunk: u64,
}

impl<'c> Compressor<'c> {
    fn new(
        out: Spool,
        options: &LayerOptions,
        cache: Option<&'c dyn ChunkCache>,
        max_chunk: u64,
    ) -> Result<Self, LayerError> {
        let pool = Pool::new(options.threads)?;
        let mut written = 0u64;
        if let Compression::Gzip { level } = options.compression {
            let xfl = match level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            let header = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255];
            written = header.len() as u64;
            out.send(header).map_err(LayerError::Output)?;
        }
        let max_queued = pool.threads().saturating_mul(2).saturating_add(2);
        Ok(Compressor {
            out,
            compression: options.compression,
            pool,
            block: Vec::with_capacity(GZIP_BLOCK_SIZE),
            dict: None,
            queue: VecDeque::new(),
            max_queued,
            crc: crc32fast::Hasher::new(),
            total_in: 0,
            cache,
            written,
            chunk_start: written,
            chunk_out_crc: crc32fast::Hasher::new(),
            chunk_crc: crc32fast::Hasher::new(),
            chunk_len: 0,
            max_chunk,
        })
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.compression == Compression::None {
            self.total_in = self.total_in.saturating_add(data.len() as u64);
            return self.write_out(data.to_vec());
        }
        while !data.is_empty() {
            let room = GZIP_BLOCK_SIZE.saturating_sub(self.block.len());
            let n = room.min(data.len());
            self.block.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.block.len() == GZIP_BLOCK_SIZE {
                self.dispatch()?;
            }
        }
        Ok(())
    }

    fn dispatch(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(GZIP_BLOCK_SIZE));
        let len = block.len() as u64;
        self.total_in = self.total_in.saturating_add(len);
        let (tx, rx) = sync_channel(1);
        match self.compression {
            Compression::Gzip { level } => {
                let next_dict: Arc<[u8]> =
                    Arc::from(&block[block.len().saturating_sub(DICT_SIZE)..]);
                let dict = self.dict.replace(next_dict);
                self.pool.spawn(move || {
                    // The receiver is gone only if the writer was dropped: nothing to report.
                    let _ = tx.send(deflate_block(level, dict.as_deref(), &block));
                });
            }
            Compression::Zstd { level } => {
                self.pool.spawn(move || {
                    let _ = tx.send(zstd_frame(level, &block));
                });
            }
            Compression::None => return self.write_out(block),
        }
        self.push(Queued::Block(rx, len))
    }

    fn push(&mut self, item: Queued) -> io::Result<()> {
        self.queue.push_back(item);
        while self.queue.len() > self.max_queued {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Ends a chunk; the next one starts without a dictionary (it must inflate on its own)
    /// unless this is a piece of a large entry that goes on.
    fn end_chunk(&mut self, key: Option<ChunkKey>, piece: bool) -> io::Result<()> {
        if self.compression == Compression::None {
            return Ok(());
        }
        self.dispatch()?;
        if !piece {
            self.dict = None;
        }
        self.push(Queued::End(key))
    }

    /// A chunk from the cache; `dict` is its tail when it is a piece of a large entry that
    /// goes on (the next block's dictionary, as if it had been compressed here).
    fn reused(&mut self, chunk: StoredChunk, dict: Option<Vec<u8>>) -> io::Result<()> {
        self.dispatch()?;
        self.dict = dict.map(Arc::from);
        self.total_in = self.total_in.saturating_add(chunk.uncompressed_len);
        self.push(Queued::Ready(chunk))
    }

    fn write_out(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        self.written = self.written.saturating_add(bytes.len() as u64);
        self.out.send(bytes)
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let Some(item) = self.queue.pop_front() else {
            return Ok(());
        };
        match item {
            Queued::Block(rx, len) => {
                let (bytes, crc) = rx
                    .recv()
                    .map_err(|_| io::Error::other("compression worker stopped"))?
                    .map_err(io::Error::other)?;
                self.crc.combine(&crc);
                if self.cache.is_some() {
                    self.chunk_len = self.chunk_len.saturating_add(len);
                    self.chunk_crc.combine(&crc);
                    if self.chunk_len <= self.max_chunk {
                        self.chunk_out_crc.update(&bytes);
                    }
                }
                self.write_out(bytes)?;
            }
            Queued::End(key) => {
                let out_crc = std::mem::replace(&mut self.chunk_out_crc, crc32fast::Hasher::new());
                let crc = std::mem::replace(&mut self.chunk_crc, crc32fast::Hasher::new());
                let len = std::mem::take(&mut self.chunk_len);
                let start = std::mem::replace(&mut self.chunk_start, self.written);
                if let (Some(cache), Some(key)) = (self.cache, key) {
                    if len <= self.max_chunk {
                        let place = ChunkPlace {
                            offset: start,
                            len: self.written.saturating_sub(start),
                            crc: crc.finalize(),
                            uncompressed_len: len,
                            compressed_crc: out_crc.finalize(),
                        };
                        cache.remember_chunk(&key, &place);
                    }
                }
            }
            Queued::Ready(chunk) => {
                self.crc.combine(&crc32fast::Hasher::new_with_initial_len(
                    chunk.crc,
                    chunk.uncompressed_len,
                ));
                self.write_out(chunk.bytes)?;
                self.chunk_start = self.written;
            }
        }
        Ok(())
    }

    /// Writes everything still queued and gzip's trailer, and closes the output.
    fn finish(mut self) -> io::Result<()> {
        self.dispatch()?;
        while !self.queue.is_empty() {
            self.collect_one()?;
        }
        if let Compression::Gzip { .. } = self.compression {
            // An empty final block with fixed codes: BFINAL=1, BTYPE=01, end-of-block, padding.
            let mut trailer = vec![0x03, 0x00];
            trailer.extend_from_slice(&self.crc.clone().finalize().to_le_bytes());
            // ISIZE is the input length modulo 2^32 (RFC 1952).
            trailer.extend_from_slice(&(self.total_in as u32).to_le_bytes());
            self.write_out(trailer)?;
        }
        Ok(())
    }
}

/// The compressed output's way to the thread that hashes and writes it.
struct Spool {
    tx: SyncSender<Vec<u8>>,
}

impl Spool {
    fn send(&self, bytes: Vec<u8>) -> io::Result<()> {
        self.tx
            .send(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "layer output stopped"))
    }
}

/// One zstd frame (with its checksum) of a block, single-threaded so its bytes depend on
/// nothing but the block and the level, and its CRC-32.
fn zstd_frame(level: i32, input: &[u8]) -> BlockResult {
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(|e| e.to_string())?;
    compressor
        .include_checksum(true)
        .map_err(|e| e.to_string())?;
    let bytes = compressor.compress(input).map_err(|e| e.to_string())?;
    Ok((bytes, crc))
}

#[cfg(test)]
mod tests;
