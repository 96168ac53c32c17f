//! Writing a layer with the store's chunk cache: unchanged chunks of earlier layers are taken
//! from the blobs they were written to (found through `chunks/index`) instead of reading and
//! compressing their files again, with the content digests of files this build copied (kept in
//! the hash memo) standing in for reading them.

use std::io::Write;
use std::path::Path;

use kiln_context::{HashMemo, MemoryMemo, StatKey};
use kiln_layer::{
    ChunkCache, ChunkKey, ChunkPlace, FileIdentity, HashState, Layer, LayerOptions, StoredChunk,
};
use kiln_oci::Digest;
use kiln_store::{ChunkStore, Store};

/// The store's chunks and the build's memo, as the layer writer asks for them.
struct StoreChunks<'s, 'm> {
    chunks: ChunkStore<'s>,
    memo: &'m MemoryMemo,
}

impl ChunkCache for StoreChunks<'_, '_> {
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

    fn remember_chunk(&self, key: &ChunkKey, place: &ChunkPlace) {
        self.chunks.put(
            key,
            &kiln_store::ChunkPlace {
                offset: place.offset,
                len: place.len,
                crc: place.crc,
                uncompressed_len: place.uncompressed_len,
                compressed_crc: place.compressed_crc,
            },
        );
    }

    fn remember_state(&self, prefix: &ChunkKey, state: &HashState) {
        self.chunks.put_state(prefix, &state.to_bytes());
    }
}

/// The chunks a layer write noted, not yet recorded.
pub(crate) struct NotedChunks<'a>(ChunkStore<'a>);

impl NotedChunks<'_> {
    /// Records them as ranges of `blob`, once the store holds it. Best effort: the layer is
    /// right whether or not its chunks are kept.
    pub(crate) fn record(self, blob: &Digest) {
        let _ = self.0.commit(blob);
    }
}

/// [`kiln_layer::write_layer`] through the store's chunk cache. The bytes are the same as
/// without it. The chunks stay in the blob written: commit it, then [`NotedChunks::record`].
pub(crate) fn write_layer<'a, W: Write + Send>(
    store: &'a Store,
    memo: &MemoryMemo,
    snapshot: &Path,
    options: &LayerOptions,
    out: W,
) -> Result<(Layer, W, NotedChunks<'a>), kiln_layer::LayerError> {
    let cache = StoreChunks {
        chunks: store.chunk_store(),
        memo,
    };
    let (layer, out) = kiln_layer::write_layer_reusing(snapshot, options, Some(&cache), out)?;
    Ok((layer, out, NotedChunks(cache.chunks)))
}
