//! Chunk reuse gives the bytes of a cold write, for every kind of change, and reuses.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::Sha256Digest;

/// Small chunks, so that trees of a few dozen small files make many.
const SMALL: Shape = Shape {
    min: 4096,
    max: 64 * 1024,
    mask: 3,
};

/// A cache in memory that counts what it is asked, and knows the digests of the files it was
/// told about.
#[derive(Default)]
struct MemoryCache {
    chunks: Mutex<HashMap<ChunkKey, StoredChunk>>,
    /// Places told during a write, kept (sliced from its output) by [`MemoryCache::keep`].
    places: Mutex<Vec<(ChunkKey, ChunkPlace)>>,
    states: Mutex<HashMap<ChunkKey, HashState>>,
    digests: Mutex<HashMap<FileIdentity, [u8; 32]>>,
    hits: AtomicUsize,
    misses: AtomicUsize,
    state_hits: AtomicUsize,
}

impl MemoryCache {
    /// Learns the digest of every regular file under `root`, as COPY tells it.
    fn learn_digests(&self, root: &Path) {
        for entry in crate::list_entries(root).unwrap() {
            if entry.kind == crate::EntryKind::File {
                let bytes = fs::read(&entry.source).unwrap();
                self.digests
                    .lock()
                    .unwrap()
                    .insert(identity(&entry), Sha256::digest(&bytes).into());
            }
        }
    }

    /// Keeps the chunks the last write told of, read from its output and checked, as a store
    /// does once the blob is committed.
    fn keep(&self, output: &[u8]) {
        for (key, place) in self.places.lock().unwrap().drain(..) {
            let start = usize::try_from(place.offset).unwrap();
            let bytes = output[start..start + usize::try_from(place.len).unwrap()].to_vec();
            assert_eq!(
                crc32fast::hash(&bytes),
                place.compressed_crc,
                "the place's CRC-32 is its bytes'"
            );
            let chunk = StoredChunk {
                bytes,
                crc: place.crc,
                uncompressed_len: place.uncompressed_len,
            };
            self.chunks.lock().unwrap().entry(key).or_insert(chunk);
        }
    }

    fn reset_counts(&self) {
        self.hits.store(0, Ordering::SeqCst);
        self.misses.store(0, Ordering::SeqCst);
        self.state_hits.store(0, Ordering::SeqCst);
    }
}

impl ChunkCache for MemoryCache {
    fn known_digest(&self, file: &FileIdentity) -> Option<[u8; 32]> {
        self.digests.lock().unwrap().get(file).copied()
    }
    fn chunk(&self, key: &ChunkKey) -> Option<StoredChunk> {
        let found = self.chunks.lock().unwrap().get(key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::SeqCst);
        found
    }
    fn hash_state(&self, prefix: &ChunkKey) -> Option<HashState> {
        let found = self.states.lock().unwrap().get(prefix).cloned();
        if found.is_some() {
            self.state_hits.fetch_add(1, Ordering::SeqCst);
        }
        found
    }
    fn remember_chunk(&self, key: &ChunkKey, place: &ChunkPlace) {
        self.places.lock().unwrap().push((*key, *place));
    }
    fn remember_state(&self, prefix: &ChunkKey, state: &HashState) {
        self.states.lock().unwrap().insert(*prefix, state.clone());
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&[u8]; 6] = [
        b"fn ",
        b"main ",
        b"let x = 1;\n",
        b"kiln ",
        b"{ }\n",
        b"layer ",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.below(6) as usize]);
        if rng.below(9) == 0 {
            out.push(rng.next() as u8);
        }
    }
    out.truncate(len);
    out
}

/// The tree's files, sorted by path: what a change picks from.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = crate::list_entries(root)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == crate::EntryKind::File)
        .map(|e| e.source)
        .collect();
    out.sort();
    out
}

fn make_tree(root: &Path, rng: &mut Rng) {
    let dirs = 1 + rng.below(4);
    let count = 30 + rng.below(60);
    for i in 0..count {
        let dir = root.join(format!("d{}", i % dirs));
        fs::create_dir_all(&dir).unwrap();
        let len = rng.below(3000) as usize;
        fs::write(dir.join(format!("f{i:03}.txt")), text(rng, len)).unwrap();
    }
    settle_times(root);
}

/// The mtime every entry of a fresh tree has.
const MADE_AT: i64 = 1_600_000_000;
/// The mtime every entry touched by a change has.
const CHANGED_AT: i64 = 1_700_000_000;

/// Gives every entry still carrying the clock's time a fixed one: `MADE_AT` in a fresh tree,
/// `CHANGED_AT` after a change (the edited file, the directory an entry was added to, removed
/// from or renamed in). Without it, the shape of a change would depend on whether the clock's
/// second ticked between writing the tree and changing it.
fn settle_times(root: &Path) {
    let to = if fs::metadata(root).unwrap().mtime() == MADE_AT {
        CHANGED_AT
    } else {
        MADE_AT
    };
    let mut paths = vec![root.to_path_buf()];
    let mut i = 0;
    while let Some(path) = paths.get(i).cloned() {
        i += 1;
        if path.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                paths.push(entry.unwrap().path());
            }
        }
    }
    for path in paths {
        let mtime = fs::metadata(&path).unwrap().mtime();
        if mtime != MADE_AT && mtime != CHANGED_AT {
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(to as u64);
            fs::File::open(&path)
                .unwrap()
                .set_times(fs::FileTimes::new().set_modified(when))
                .unwrap();
        }
    }
    if to == CHANGED_AT {
        // The root keeps MADE_AT, so a second change still knows the tree was made.
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(MADE_AT as u64);
        fs::File::open(root)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(when))
            .unwrap();
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Edit,
    EditSameSize,
    Add,
    Delete,
    Rename,
    Mode,
}

const CHANGES: [Change; 6] = [
    Change::Edit,
    Change::EditSameSize,
    Change::Add,
    Change::Delete,
    Change::Rename,
    Change::Mode,
];

/// Applies `change` to the file at `at` (0 = first, 1 = middle, 2 = last).
fn apply(root: &Path, change: Change, at: usize, rng: &mut Rng) {
    let all = files(root);
    let index = match at {
        0 => 0,
        1 => all.len() / 2,
        _ => all.len() - 1,
    };
    let path = &all[index];
    match change {
        Change::Edit => {
            let len = rng.below(4000) as usize;
            fs::write(path, text(rng, len)).unwrap();
        }
        Change::EditSameSize => {
            let mut bytes = fs::read(path).unwrap();
            if bytes.is_empty() {
                bytes.push(b'x');
            } else {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] = bytes[i].wrapping_add(1);
            }
            fs::write(path, bytes).unwrap();
        }
        Change::Add => {
            let name = path.with_file_name(format!(
                "{}-new",
                path.file_name().unwrap().to_string_lossy()
            ));
            let len = rng.below(3000) as usize;
            fs::write(name, text(rng, len)).unwrap();
        }
        Change::Delete => fs::remove_file(path).unwrap(),
        Change::Rename => {
            fs::rename(path, path.with_file_name("renamed.txt")).unwrap();
        }
        Change::Mode => {
            let mode = fs::metadata(path).unwrap().mode();
            fs::set_permissions(path, fs::Permissions::from_mode((mode ^ 0o111) & 0o7777)).unwrap();
        }
    }
    settle_times(root);
}

fn write(
    root: &Path,
    options: &LayerOptions,
    cache: Option<&MemoryCache>,
) -> (crate::Layer, Vec<u8>) {
    let dyn_cache = cache.map(|c| c as &dyn ChunkCache);
    let (layer, bytes) = write_shaped(root, options, dyn_cache, SMALL, Vec::new()).unwrap();
    if let Some(cache) = cache {
        cache.keep(&bytes);
    }
    (layer, bytes)
}

fn uncompressed(compression: Compression, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match compression {
        // A plain (single-member) gzip decoder reads it: one gzip member.
        Compression::Gzip { .. } => {
            flate2::read::GzDecoder::new(blob)
                .read_to_end(&mut out)
                .unwrap();
        }
        Compression::Zstd { .. } => out = zstd::decode_all(blob).unwrap(),
        Compression::None => out = blob.to_vec(),
    }
    out
}

/// Hundreds of seeded cases: a tree is written with a cache, changed in one way at its start,
/// middle or end, and written again with that cache; the bytes, diff_id and digest must be
/// those of a cold write of the changed tree (with another thread count), the tar inside must
/// be the plain tar writer's, and most chunks must have been reused.
#[test]
fn reuse_gives_the_cold_bytes_for_every_change_shape() {
    let mut rng = Rng(0x5eed_c0ff_ee12_3457);
    let mut cases = 0;
    let mut reused_chunks = 0;
    let mut resumed_states = 0;
    for round in 0..12 {
        for change in CHANGES {
            for at in 0..3 {
                let dir = tempfile::tempdir().unwrap();
                let root = dir.path();
                make_tree(root, &mut rng);
                // Fast levels: the test binary is not optimised.
                let compression = match round % 3 {
                    0 | 1 => Compression::Gzip { level: 1 },
                    _ => Compression::Zstd { level: 1 },
                };
                let options = LayerOptions {
                    compression,
                    source_date_epoch: (round % 2 == 0).then_some(0),
                    threads: 1 + (round % 2) as usize,
                };
                // Half the rounds know digests without reading (as after a COPY).
                let knows_digests = round % 4 < 2;
                let cache = MemoryCache::default();
                if knows_digests {
                    cache.learn_digests(root);
                }
                let (first, first_bytes) = write(root, &options, Some(&cache));
                let (cold_first, cold_first_bytes) = write(root, &options, None);
                assert_eq!(first, cold_first);
                assert_eq!(first_bytes, cold_first_bytes);

                apply(root, change, at, &mut rng);
                if knows_digests {
                    cache.learn_digests(root);
                }
                cache.reset_counts();
                let (again, again_bytes) = write(root, &options, Some(&cache));
                let cold_options = LayerOptions {
                    threads: 3 - options.threads,
                    ..options
                };
                let (cold, cold_bytes) = write(root, &cold_options, None);
                let what = format!("round {round} {change:?} at {at}");
                assert_eq!(again, cold, "{what}");
                assert!(again_bytes == cold_bytes, "{what}: bytes differ");
                assert_eq!(
                    Sha256Digest::of(&cold_bytes).to_string(),
                    cold.digest,
                    "{what}"
                );
                let tar = uncompressed(compression, &cold_bytes);
                assert_eq!(Sha256Digest::of(&tar).to_string(), cold.diff_id, "{what}");
                let mut plain = Vec::new();
                crate::write_tar(
                    crate::Entries::new(root).unwrap(),
                    options.source_date_epoch,
                    &mut plain,
                )
                .unwrap();
                assert!(tar == plain, "{what}: tar differs from the plain writer's");

                let hits = cache.hits.load(Ordering::SeqCst);
                let misses = cache.misses.load(Ordering::SeqCst);
                assert!(
                    hits + misses >= 2,
                    "{what}: too few chunks ({hits}+{misses})"
                );
                // Each place a change touches costs one or two chunks, and the cuts
                // resynchronise after it. The places: the file; for an add, delete or rename
                // also its directory's header (its mtime changed); a rename is two places in the
                // name order.
                let places = match change {
                    Change::Edit | Change::EditSameSize | Change::Mode => 1,
                    Change::Add | Change::Delete => 2,
                    Change::Rename => 3,
                };
                assert!(
                    misses <= 2 * places,
                    "{what}: {misses} chunks written again of {}",
                    hits + misses
                );
                reused_chunks += hits;
                resumed_states += cache.state_hits.load(Ordering::SeqCst);
                cases += 1;
            }
        }
    }
    assert!(cases >= 200, "{cases} cases");
    assert!(reused_chunks > cases * 3, "{reused_chunks} chunks reused");
    assert!(
        resumed_states > cases,
        "{resumed_states} hash states resumed"
    );
}

/// A chunk the cache gives back damaged is noticed (length and CRC of its inflated bytes) and
/// the chunk written afresh: the layer is still right. Its entries are then written by the
/// consumer, whether their contents were read for their digests or are known (and read only
/// then); the chunks so written are remembered with their keys and the hash states after
/// them, so a third write reuses them and resumes the diff_id from those states.
#[test]
fn a_damaged_cached_chunk_is_written_afresh() {
    for digests_known in [false, true] {
        let mut rng = Rng(99);
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path(), &mut rng);
        let options = LayerOptions::default();
        let cache = MemoryCache::default();
        if digests_known {
            cache.learn_digests(dir.path());
        }
        let (cold, cold_bytes) = write(dir.path(), &options, Some(&cache));
        for chunk in cache.chunks.lock().unwrap().values_mut() {
            let last = chunk.bytes.len() - 1;
            chunk.bytes[last / 2] ^= 0x55;
        }
        // No saved states: every reused chunk has to be inflated, and fails its check.
        cache.states.lock().unwrap().clear();
        cache.reset_counts();
        let dyn_cache: &dyn ChunkCache = &cache;
        let (again, again_bytes) =
            write_shaped(dir.path(), &options, Some(dyn_cache), SMALL, Vec::new()).unwrap();
        assert!(
            cache.hits.load(Ordering::SeqCst) > 1,
            "the damaged chunks were offered"
        );
        assert_eq!(again, cold, "digests known: {digests_known}");
        assert!(again_bytes == cold_bytes, "digests known: {digests_known}");
        // Only what the second write remembered: its chunks (read from its output) and the
        // states after them.
        cache.chunks.lock().unwrap().clear();
        cache.keep(&again_bytes);
        assert!(
            cache.chunks.lock().unwrap().len() > 1,
            "the chunks written afresh were remembered"
        );
        cache.reset_counts();
        let (third, third_bytes) = write(dir.path(), &options, Some(&cache));
        assert!(
            cache.hits.load(Ordering::SeqCst) > 1,
            "the third write reused them"
        );
        assert!(
            cache.state_hits.load(Ordering::SeqCst) > 1,
            "and resumed from the states saved after them"
        );
        assert_eq!(third, cold);
        assert!(third_bytes == cold_bytes);
    }
}

/// Where the cuts fall does not depend on the cache: with a cache that holds everything, or
/// nothing, or without one, the same bytes; and the default shape keeps a small tree whole.
#[test]
fn cuts_do_not_depend_on_the_cache_or_threads() {
    let mut rng = Rng(7);
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), &mut rng);
    for compression in [
        Compression::Gzip { level: 1 },
        Compression::Zstd { level: 1 },
        Compression::None,
    ] {
        let base = LayerOptions {
            compression,
            source_date_epoch: Some(0),
            threads: 1,
        };
        let cache = MemoryCache::default();
        cache.learn_digests(dir.path());
        let (_, a) = write(dir.path(), &base, None);
        let (_, b) = write(
            dir.path(),
            &LayerOptions { threads: 4, ..base },
            Some(&cache),
        );
        let (_, c) = write(
            dir.path(),
            &LayerOptions { threads: 2, ..base },
            Some(&cache),
        );
        assert!(a == b && b == c, "{compression:?}");
        let (_, whole) = write_layer_reusing(dir.path(), &base, None, Vec::new()).unwrap();
        assert_eq!(
            uncompressed(compression, &whole),
            uncompressed(compression, &a)
        );
    }
}

/// A tree with files larger than a chunk (text, random bytes, one just past a piece with its
/// header) among small ones.
fn tree_with_large_files(root: &Path, rng: &mut Rng) {
    make_tree(root, rng);
    let big = root.join("big");
    fs::create_dir_all(&big).unwrap();
    fs::write(big.join("a-text.bin"), text(rng, 2 * 1024 * 1024 + 777)).unwrap();
    let random: Vec<u8> = (0..1536 * 1024).map(|_| rng.next() as u8).collect();
    fs::write(big.join("b-random.bin"), random).unwrap();
    fs::write(big.join("c-edge.bin"), text(rng, 1024 * 1024 - 512)).unwrap();
    fs::write(big.join("d-small-large.bin"), text(rng, 100 * 1024)).unwrap();
    fs::write(root.join("zz-after.txt"), text(rng, 3000)).unwrap();
    settle_times(root);
}

/// Files larger than a chunk are cut into pieces that are reused one by one: an edit before
/// them (no saved hash state: the pieces are read to hash them) or after them (the states
/// resume), or in one of them, writes the bytes of a cold write and compresses again only
/// what changed.
#[test]
fn pieces_of_large_files_are_reused_and_give_the_cold_bytes() {
    for (round, compression) in [
        Compression::Gzip { level: 1 },
        Compression::Zstd { level: 1 },
        Compression::Gzip { level: 6 },
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Rng(0xb16_f11e5 + round as u64);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        tree_with_large_files(root, &mut rng);
        let options = LayerOptions {
            compression,
            source_date_epoch: Some(0),
            threads: 2,
        };
        let cache = MemoryCache::default();
        cache.learn_digests(root);
        let (first, first_bytes) = write(root, &options, Some(&cache));
        let (cold, cold_bytes) = write(root, &options, None);
        assert_eq!(first, cold);
        assert!(
            first_bytes == cold_bytes,
            "round {round}: pieces changed the bytes"
        );
        // 3 + 2 + 2 + 1 pieces: each remembered.
        let piece_count = 8;
        assert!(cache.chunks.lock().unwrap().len() >= piece_count);

        for (what, target) in [
            ("an edit before them", "d0/f000.txt"),
            ("an edit after them", "zz-after.txt"),
            ("an edit in one", "big/a-text.bin"),
        ] {
            let path = root.join(target);
            let mut bytes = fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x20;
            fs::write(&path, bytes).unwrap();
            settle_times(root);
            cache.learn_digests(root);
            cache.reset_counts();
            let (again, again_bytes) = write(root, &options, Some(&cache));
            let (cold, cold_bytes) = write(root, &options, None);
            let what = format!("round {round}, {what}");
            assert_eq!(again, cold, "{what}");
            assert!(again_bytes == cold_bytes, "{what}: bytes differ");
            let tar = uncompressed(compression, &cold_bytes);
            assert_eq!(Sha256Digest::of(&tar).to_string(), cold.diff_id, "{what}");
            let hits = cache.hits.load(Ordering::SeqCst);
            let misses = cache.misses.load(Ordering::SeqCst);
            // The edited file's pieces (3 for a-text) and a chunk or two around a small edit.
            assert!(misses <= 4, "{what}: {misses} written again, {hits} reused");
            assert!(hits >= piece_count - 3, "{what}: only {hits} reused");
        }

        // A cache that lost every other chunk: reused pieces and pieces compressed afresh
        // alternate, each fresh one taking the reused one's tail as dictionary; with the saved
        // hash states, then without them.
        for keep_states in [true, false] {
            let mut keys: Vec<ChunkKey> = cache.chunks.lock().unwrap().keys().copied().collect();
            keys.sort_unstable();
            let lost: HashMap<ChunkKey, StoredChunk> = keys
                .iter()
                .step_by(2)
                .filter_map(|k| Some((*k, cache.chunks.lock().unwrap().remove(k)?)))
                .collect();
            if !keep_states {
                cache.states.lock().unwrap().clear();
            }
            cache.reset_counts();
            let (again, again_bytes) = write(root, &options, Some(&cache));
            let (cold, cold_bytes) = write(root, &options, None);
            assert_eq!(
                again, cold,
                "round {round}, half lost, states {keep_states}"
            );
            assert!(again_bytes == cold_bytes, "round {round}: bytes differ");
            assert!(cache.hits.load(Ordering::SeqCst) >= 3);
            assert!(cache.misses.load(Ordering::SeqCst) >= 3);
            cache.chunks.lock().unwrap().extend(lost);
        }
    }
}

/// A cached piece whose bytes are damaged is noticed when its tar bytes are read to hash them
/// (their CRC-32 is not the chunk's) and written afresh.
#[test]
fn a_damaged_piece_is_written_afresh() {
    let mut rng = Rng(4242);
    let dir = tempfile::tempdir().unwrap();
    tree_with_large_files(dir.path(), &mut rng);
    let options = LayerOptions::default();
    let cache = MemoryCache::default();
    cache.learn_digests(dir.path());
    let (cold, cold_bytes) = write(dir.path(), &options, Some(&cache));
    for chunk in cache.chunks.lock().unwrap().values_mut() {
        chunk.crc ^= 1;
    }
    cache.states.lock().unwrap().clear();
    let (again, again_bytes) = write(dir.path(), &options, Some(&cache));
    assert_eq!(again, cold);
    assert!(again_bytes == cold_bytes);
}
