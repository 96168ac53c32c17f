//! Writing a layer with the store's chunk cache: unchanged chunks of earlier layers are taken
//! from `chunks/` instead of reading and compressing their files again, with the content
//! digests of files this build copied (kept in the hash memo) standing in for reading them.

use std::io::Write;
use std::path::Path;

use kiln_context::{HashMemo, MemoryMemo, StatKey};
use kiln_layer::{ChunkCache, ChunkKey, FileIdentity, HashState, Layer, LayerOptions, StoredChunk};
use kiln_store::{Chunk, ChunkStore, Store};

/// The store's chunks and the build's memo, as the layer writer asks for them.
struct StoreChunks<'a> {
    chunks: ChunkStore<'a>,
    memo: &'a MemoryMemo,
}

impl ChunkCache for StoreChunks<'_> {
    fn known_digest(&self, file: &FileIdentity) -> Option<[u8; 32]> {
        self.memo.get_written(&StatKey {
            dev: file.dev,
            ino: file.ino,
            size: file.size,
            mtime_ns: file.mtime_ns,
            ctime_ns: file.ctime_ns,
        })
    }

    fn chunk(&self, key: &ChunkKey) -> Option<StoredChunk> {
        self.chunks.get(key).map(|c| StoredChunk {
            bytes: c.bytes,
            crc: c.crc,
            uncompressed_len: c.uncompressed_len,
        })
    }

    fn hash_state(&self, prefix: &ChunkKey) -> Option<HashState> {
        HashState::from_bytes(&self.chunks.state(prefix)?)
    }

    fn remember_chunk(&self, key: &ChunkKey, chunk: &StoredChunk) {
        self.chunks.put(
            key,
            &Chunk {
                bytes: chunk.bytes.clone(),
                crc: chunk.crc,
                uncompressed_len: chunk.uncompressed_len,
            },
        );
    }

    fn remember_state(&self, prefix: &ChunkKey, state: &HashState) {
        self.chunks.put_state(prefix, &state.to_bytes());
    }
}

/// [`kiln_layer::write_layer`] through the store's chunk cache. The bytes are the same as
/// without it; a chunk cache that cannot be updated costs only later reuse.
pub(crate) fn write_layer<W: Write + Send>(
    store: &Store,
    memo: &MemoryMemo,
    snapshot: &Path,
    options: &LayerOptions,
    out: W,
) -> Result<(Layer, W), kiln_layer::LayerError> {
    let cache = StoreChunks {
        chunks: store.chunk_store(),
        memo,
    };
    let written = kiln_layer::write_layer_reusing(snapshot, options, Some(&cache), out)?;
    // Best effort: the layer is right whether or not its chunks are kept.
    let _ = cache.chunks.commit();
    Ok(written)
}
