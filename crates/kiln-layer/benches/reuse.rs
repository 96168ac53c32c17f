//! Chunk reuse: what writing a layer of 20,000 small files costs cold, and again after one
//! file is edited at the start, in the middle and at the end (an in-memory chunk cache that
//! knows every file's digest, as after a COPY), against the cold write in the same run.
//!
//! Past the edit, the diff_id needs the bytes of every reused chunk: they are inflated from
//! the cache (an edit at the start is the worst case); before it, the SHA-256 state saved at
//! the chunk boundary is resumed (an edit at the end is the best case).
//!
//! Run: `cargo bench -p kiln-layer --bench reuse` (KILN_BENCH_SMALL_FILES=… to resize).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_layer::{
    write_layer_reusing, ChunkCache, ChunkKey, ChunkPlace, FileIdentity, HashState, LayerOptions,
    StoredChunk,
};
use sha2::{Digest, Sha256};

#[derive(Default)]
struct Cache {
    chunks: Mutex<HashMap<ChunkKey, StoredChunk>>,
    places: Mutex<Vec<(ChunkKey, ChunkPlace)>>,
    states: Mutex<HashMap<ChunkKey, HashState>>,
    digests: HashMap<FileIdentity, [u8; 32]>,
}

impl ChunkCache for Cache {
    fn known_digest(&self, file: &FileIdentity) -> Option<[u8; 32]> {
        self.digests.get(file).copied()
    }
    fn chunk(&self, key: &ChunkKey) -> Option<StoredChunk> {
        self.chunks.lock().ok()?.get(key).cloned()
    }
    fn hash_state(&self, prefix: &ChunkKey) -> Option<HashState> {
        self.states.lock().ok()?.get(prefix).cloned()
    }
    fn remember_chunk(&self, key: &ChunkKey, place: &ChunkPlace) {
        if let Ok(mut p) = self.places.lock() {
            p.push((*key, *place));
        }
    }
    fn remember_state(&self, prefix: &ChunkKey, state: &HashState) {
        if let Ok(mut s) = self.states.lock() {
            s.insert(*prefix, state.clone());
        }
    }
}

impl Cache {
    /// Keeps the chunks the last write told of, from its output (as a store does).
    fn keep(&self, output: &[u8]) {
        let (Ok(mut places), Ok(mut chunks)) = (self.places.lock(), self.chunks.lock()) else {
            return;
        };
        for (key, place) in places.drain(..) {
            let (Ok(start), Ok(len)) = (usize::try_from(place.offset), usize::try_from(place.len))
            else {
                continue;
            };
            if let Some(bytes) = output.get(start..start.saturating_add(len)) {
                chunks.entry(key).or_insert(StoredChunk {
                    bytes: bytes.to_vec(),
                    crc: place.crc,
                    uncompressed_len: place.uncompressed_len,
                });
            }
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn identity(path: &Path) -> Result<FileIdentity> {
    let md = fs::symlink_metadata(path)?;
    Ok(FileIdentity {
        dev: md.dev(),
        ino: md.ino(),
        size: md.len(),
        mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
        ctime_ns: i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
    })
}

fn learn(cache: &mut Cache, files: &[PathBuf]) -> Result<()> {
    for f in files {
        let bytes = fs::read(f)?;
        cache
            .digests
            .insert(identity(f)?, Sha256::digest(&bytes).into());
    }
    Ok(())
}

fn make_tree(root: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let words: [&[u8]; 8] = [
        b"fn ", b"let ", b"layer ", b"kiln ", b"{\n", b"}\n", b"data ", b"= ",
    ];
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let dir = root.join(format!("m{:02}/p{}", i / 1000, i / 100 % 10));
        if i % 100 == 0 {
            fs::create_dir_all(&dir)?;
        }
        let mut text = Vec::with_capacity(4200);
        let len = 1024 + (i * 7919) % 3072;
        while text.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.extend_from_slice(words[(x % 8) as usize]);
            text.extend_from_slice((x % 100_000).to_string().as_bytes());
        }
        let path = dir.join(format!("f{:03}.txt", i % 100));
        fs::write(&path, &text)?;
        files.push(path);
    }
    Ok(files)
}

fn timed(root: &Path, cache: Option<&Cache>) -> Result<(Duration, String)> {
    let options = LayerOptions::default();
    let start = Instant::now();
    let (layer, output) = write_layer_reusing(
        root,
        &options,
        cache.map(|c| c as &dyn ChunkCache),
        Vec::new(),
    )?;
    let elapsed = start.elapsed();
    if let Some(cache) = cache {
        cache.keep(&output);
    }
    Ok((elapsed, layer.digest))
}

fn main() -> Result<()> {
    let n: usize = std::env::var("KILN_BENCH_SMALL_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir()?;
    let files = make_tree(dir.path(), n.max(1))?;
    let mut cache = Cache::default();
    learn(&mut cache, &files)?;
    // Warm the page cache and the cache of chunks.
    timed(dir.path(), Some(&cache))?;
    println!(
        "chunk reuse, {n} files, gzip level 6, {} cores",
        rayon_threads()
    );
    for (name, index) in [
        ("start", 0),
        ("middle", files.len() / 2),
        ("end", files.len() - 1),
    ] {
        let path = &files[index];
        let mut text = fs::read(path)?;
        text.extend_from_slice(format!("// edit {name}\n").as_bytes());
        fs::write(path, &text)?;
        learn(&mut cache, std::slice::from_ref(path))?;
        let (cold, cold_digest) = timed(dir.path(), None)?;
        let (reuse, digest) = timed(dir.path(), Some(&cache))?;
        assert_eq!(digest, cold_digest, "reuse must give the cold bytes");
        println!(
            "  edit at the {name:<6}  cold {:>7.3} s   reusing {:>7.3} s   ratio {:.3}",
            cold.as_secs_f64(),
            reuse.as_secs_f64(),
            reuse.as_secs_f64() / cold.as_secs_f64()
        );
    }
    let (cold, _) = timed(dir.path(), None)?;
    let (reuse, _) = timed(dir.path(), Some(&cache))?;
    println!(
        "  unchanged            cold {:>7.3} s   reusing {:>7.3} s   ratio {:.3}",
        cold.as_secs_f64(),
        reuse.as_secs_f64(),
        reuse.as_secs_f64() / cold.as_secs_f64()
    );
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
