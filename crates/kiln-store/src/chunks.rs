//! The chunk store: where the compressed chunks of layers written earlier are, so a layer
//! written again with most entries unchanged takes them instead of reading and compressing its
//! files again.
//!
//! ```text
//! chunks/index    what is where: one line per blob, chunk and saved hash state
//! chunks/lock     flock'd while the index is merged and rewritten
//! ```
//!
//! A chunk's bytes are never copied here: they stay in the layer blob that was written with
//! them (`blobs/`), and the index says at which offset. A layer write notes its chunks as it
//! goes; once its blob is committed, under the lock the index is read again, the new lines
//! merged in, lines of blobs that are gone (pruned) dropped, the least recently used blobs'
//! lines evicted past the budget, and the index written atomically. Every chunk read is
//! checked against the CRC-32 the index holds for it, so a blob that is missing, truncated or
//! damaged only means its chunks are written afresh (and dropped from the index at the next
//! merge). Nothing here is needed for correctness: deleting `chunks/` loses nothing but time.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_oci::Digest;

use crate::{io_at, Result, Store};

/// Bytes of chunks the index names at most, unless `KILN_CHUNK_CACHE_MB` says otherwise.
pub const DEFAULT_BUDGET: u64 = 1 << 30;
/// First line of the index: its format (1 kept chunks in packs of their own).
const INDEX_HEADER: &str = "kiln-chunks 2";
/// A chunk holds at most 4 MiB of tar; compressed it is hardly larger. An index line naming
/// more is damaged (and is not allowed to make a read allocate it).
const MAX_CHUNK_BYTES: u64 = 16 << 20;

/// Where a chunk is: a byte range of a layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    blob: String,
    offset: u64,
    len: u64,
    crc: u32,
    uncompressed_len: u64,
    compressed_crc: u32,
}

/// What the index keeps of a blob it names chunks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlobInfo {
    /// Bytes of its chunks the index names.
    size: u64,
    last_used: u64,
}

/// The index as read from (and written to) `chunks/index`.
#[derive(Debug, Default, Clone)]
struct ChunkIndex {
    blobs: HashMap<String, BlobInfo>,
    chunks: HashMap<[u8; 32], Location>,
    states: HashMap<[u8; 32], (String, Vec<u8>)>,
}

/// A chunk as stored: compressed bytes, CRC-32 and length of the uncompressed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The compressed bytes.
    pub bytes: Vec<u8>,
    /// CRC-32 of the uncompressed bytes.
    pub crc: u32,
    /// Length of the uncompressed bytes.
    pub uncompressed_len: u64,
}

/// Where a chunk just written sits in the blob being written, and what checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlace {
    /// Offset of its first compressed byte in the blob.
    pub offset: u64,
    /// Its compressed length.
    pub len: u64,
    /// CRC-32 of the uncompressed bytes.
    pub crc: u32,
    /// Length of the uncompressed bytes.
    pub uncompressed_len: u64,
    /// CRC-32 of the compressed bytes.
    pub compressed_crc: u32,
}

/// What one layer write adds.
#[derive(Default)]
struct Session {
    chunks: Vec<([u8; 32], ChunkPlace)>,
    states: Vec<([u8; 32], Vec<u8>)>,
    used: HashSet<String>,
    bad: HashSet<[u8; 32]>,
    readers: HashMap<String, File>,
}

/// The chunk store of one layer write: look chunks up, note new ones, then
/// [`ChunkStore::commit`] with the blob they were written to.
pub struct ChunkStore<'s> {
    store: &'s Store,
    dir: PathBuf,
    budget: u64,
    index: ChunkIndex,
    session: Mutex<Session>,
}

impl Store {
    /// The chunk store, with the size budget from `KILN_CHUNK_CACHE_MB` (default 1 GiB).
    pub fn chunk_store(&self) -> ChunkStore<'_> {
        let budget = std::env::var("KILN_CHUNK_CACHE_MB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_BUDGET, |mb| mb.saturating_mul(1 << 20));
        self.chunk_store_with_budget(budget)
    }

    /// The chunk store, naming at most `budget` bytes of chunks.
    pub fn chunk_store_with_budget(&self, budget: u64) -> ChunkStore<'_> {
        let dir = self.root.join("chunks");
        let index = read_index(&dir.join("index"));
        ChunkStore {
            store: self,
            dir,
            budget,
            index,
            session: Mutex::new(Session::default()),
        }
    }
}

impl ChunkStore<'_> {
    /// The chunk stored under `key`, checked against its CRC-32; `None` when unknown or when
    /// its blob is missing or damaged.
    pub fn get(&self, key: &[u8; 32]) -> Option<Chunk> {
        let location = self.index.chunks.get(key)?;
        let mut session = self.session.lock().ok()?;
        match read_chunk(self.store, &mut session.readers, location) {
            Some(bytes) => {
                session.used.insert(location.blob.clone());
                Some(Chunk {
                    bytes,
                    crc: location.crc,
                    uncompressed_len: location.uncompressed_len,
                })
            }
            None => {
                session.bad.insert(*key);
                None
            }
        }
    }

    /// The hash state saved after the chunks whose key chain is `prefix`.
    pub fn state(&self, prefix: &[u8; 32]) -> Option<Vec<u8>> {
        let (blob, state) = self.index.states.get(prefix)?;
        if let Ok(mut session) = self.session.lock() {
            session.used.insert(blob.clone());
        }
        Some(state.clone())
    }

    /// Notes a chunk of the blob being written (kept once [`ChunkStore::commit`] names it).
    pub fn put(&self, key: &[u8; 32], place: &ChunkPlace) {
        if self.index.chunks.contains_key(key) || place.offset.checked_add(place.len).is_none() {
            return;
        }
        if let Ok(mut session) = self.session.lock() {
            session.chunks.push((*key, *place));
        }
    }

    /// Saves a hash state after the chunks whose key chain is `prefix`.
    pub fn put_state(&self, prefix: &[u8; 32], state: &[u8]) {
        if self.index.states.contains_key(prefix) {
            return;
        }
        if let Ok(mut session) = self.session.lock() {
            session.states.push((*prefix, state.to_vec()));
        }
    }

    /// Merges what this write noted, as chunks of `blob` (committed to the store before this
    /// is called), and which blobs it used into the index, dropping blobs that are gone and
    /// evicting the least recently used past the budget. Without it, nothing of this write is
    /// kept.
    pub fn commit(self, blob: &Digest) -> Result<()> {
        let session = self
            .session
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Session {
            chunks,
            states,
            used,
            bad,
            ..
        } = session;
        let blob_name = blob.to_string();
        let adds = self.store.has_blob(blob) && !(chunks.is_empty() && states.is_empty());
        if !adds && used.is_empty() && bad.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir).map_err(io_at(&self.dir))?;
        // Chunks were kept in packs of their own before this format.
        let _ = fs::remove_dir_all(self.dir.join("packs"));
        let lock_path = self.dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_at(&lock_path)(e.into()))?;

        let index_path = self.dir.join("index");
        let mut index = read_index(&index_path);
        // Nanoseconds: writes within one second still have an order.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // Blobs pruned since stay gone.
        index
            .blobs
            .retain(|name, _| Digest::parse(name).is_ok_and(|digest| self.store.has_blob(&digest)));
        for name in &used {
            if let Some(info) = index.blobs.get_mut(name) {
                info.last_used = now;
            }
        }
        if adds {
            let info = index.blobs.entry(blob_name.clone()).or_insert(BlobInfo {
                size: 0,
                last_used: now,
            });
            info.last_used = now;
            for (key, place) in chunks {
                if index.chunks.contains_key(&key) {
                    continue;
                }
                info.size = info.size.saturating_add(place.len);
                index.chunks.insert(
                    key,
                    Location {
                        blob: blob_name.clone(),
                        offset: place.offset,
                        len: place.len,
                        crc: place.crc,
                        uncompressed_len: place.uncompressed_len,
                        compressed_crc: place.compressed_crc,
                    },
                );
            }
            for (prefix, state) in states {
                index
                    .states
                    .entry(prefix)
                    .or_insert((blob_name.clone(), state));
            }
        }
        for key in &bad {
            index.chunks.remove(key);
        }
        evict(&mut index, self.budget);
        index
            .chunks
            .retain(|_, l| index.blobs.contains_key(&l.blob));
        index
            .states
            .retain(|_, (blob, _)| index.blobs.contains_key(blob));
        self.store.write_atomic(&index_path, &index_text(&index))?;
        drop(lock);
        Ok(())
    }
}

/// Forgets the least recently used blobs until the chunks left fit the budget.
fn evict(index: &mut ChunkIndex, budget: u64) {
    let mut total: u64 = index
        .blobs
        .values()
        .map(|b| b.size)
        .fold(0, u64::saturating_add);
    if total <= budget {
        return;
    }
    let mut by_age: Vec<(u64, String, u64)> = index
        .blobs
        .iter()
        .map(|(name, b)| (b.last_used, name.clone(), b.size))
        .collect();
    by_age.sort_unstable();
    for (_, name, size) in by_age {
        if total <= budget {
            break;
        }
        index.blobs.remove(&name);
        total = total.saturating_sub(size);
    }
}

/// Reads a chunk's bytes from its blob and checks them; `None` when the blob is missing, short
/// or damaged.
fn read_chunk(
    store: &Store,
    readers: &mut HashMap<String, File>,
    location: &Location,
) -> Option<Vec<u8>> {
    let file = match readers.entry(location.blob.clone()) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let digest = Digest::parse(&location.blob).ok()?;
            v.insert(store.open_blob(&digest).ok()?)
        }
    };
    // Read into the spare capacity: zeroing bytes about to be overwritten cost as much as
    // reading them (a `memset` of every reused chunk).
    let len = usize::try_from(location.len).ok()?;
    let mut bytes = Vec::with_capacity(len);
    file.seek(SeekFrom::Start(location.offset)).ok()?;
    let read = file.take(location.len).read_to_end(&mut bytes).ok()?;
    (read == len && crc32fast::hash(&bytes) == location.compressed_crc).then_some(bytes)
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

fn key32(text: &str) -> Option<[u8; 32]> {
    unhex(text)?.try_into().ok()
}

fn index_text(index: &ChunkIndex) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(index.chunks.len().saturating_mul(250));
    out.push_str(INDEX_HEADER);
    out.push('\n');
    for (name, b) in &index.blobs {
        let _ = writeln!(out, "b {name} {} {}", b.size, b.last_used);
    }
    for (key, l) in &index.chunks {
        let _ = writeln!(
            out,
            "c {} {} {} {} {} {} {}",
            hex(key),
            l.blob,
            l.offset,
            l.len,
            l.crc,
            l.uncompressed_len,
            l.compressed_crc
        );
    }
    for (prefix, (blob, state)) in &index.states {
        let _ = writeln!(out, "s {} {blob} {}", hex(prefix), hex(state));
    }
    out.into_bytes()
}

/// Reads the index; a missing or damaged one (or damaged lines) gives what could be read.
fn read_index(path: &Path) -> ChunkIndex {
    let mut index = ChunkIndex::default();
    let Ok(text) = fs::read_to_string(path) else {
        return index;
    };
    let mut lines = text.lines();
    if lines.next() != Some(INDEX_HEADER) {
        return index;
    }
    for line in lines {
        let _ = parse_line(&mut index, line);
    }
    index
        .chunks
        .retain(|_, l| index.blobs.contains_key(&l.blob));
    index
        .states
        .retain(|_, (blob, _)| index.blobs.contains_key(blob));
    index
}

/// A blob name as the index holds it: a digest, so it names a file under `blobs/` only.
fn blob_name(text: &str) -> Option<String> {
    Digest::parse(text).ok().map(|d| d.to_string())
}

fn parse_line(index: &mut ChunkIndex, line: &str) -> Option<()> {
    let mut f = line.split(' ');
    match f.next()? {
        "b" => {
            let name = blob_name(f.next()?)?;
            let size = f.next()?.parse().ok()?;
            let last_used = f.next()?.parse().ok()?;
            index.blobs.insert(name, BlobInfo { size, last_used });
        }
        "c" => {
            let key = key32(f.next()?)?;
            let location = Location {
                blob: blob_name(f.next()?)?,
                offset: f.next()?.parse().ok()?,
                len: f.next()?.parse().ok()?,
                crc: f.next()?.parse().ok()?,
                uncompressed_len: f.next()?.parse().ok()?,
                compressed_crc: f.next()?.parse().ok()?,
            };
            location.offset.checked_add(location.len)?;
            if location.len > MAX_CHUNK_BYTES {
                return None;
            }
            index.chunks.insert(key, location);
        }
        "s" => {
            let prefix = key32(f.next()?)?;
            let blob = blob_name(f.next()?)?;
            index.states.insert(prefix, (blob, unhex(f.next()?)?));
        }
        _ => return None,
    }
    f.next().is_none().then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob of `chunks` back to back, committed to the store, and each chunk's place.
    fn blob_of(store: &Store, chunks: &[Chunk]) -> (Digest, Vec<ChunkPlace>) {
        let mut bytes = b"header".to_vec();
        let mut places = Vec::new();
        for chunk in chunks {
            places.push(ChunkPlace {
                offset: bytes.len() as u64,
                len: chunk.bytes.len() as u64,
                crc: chunk.crc,
                uncompressed_len: chunk.uncompressed_len,
                compressed_crc: crc32fast::hash(&chunk.bytes),
            });
            bytes.extend_from_slice(&chunk.bytes);
        }
        (store.put_blob(&bytes).unwrap(), places)
    }

    fn chunk(n: u8) -> Chunk {
        Chunk {
            bytes: vec![n; 1000 + usize::from(n)],
            crc: u32::from(n),
            uncompressed_len: 5000,
        }
    }

    #[test]
    fn chunks_and_states_survive_a_commit_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chunks = store.chunk_store();
        let (blob, places) = blob_of(&store, &[chunk(1), chunk(2)]);
        chunks.put(&[1; 32], &places[0]);
        chunks.put(&[2; 32], &places[1]);
        chunks.put_state(&[9; 32], b"state");
        // Not visible before the commit.
        assert!(chunks.get(&[1; 32]).is_none());
        chunks.commit(&blob).unwrap();

        let chunks = store.chunk_store();
        assert_eq!(chunks.get(&[1; 32]), Some(chunk(1)));
        assert_eq!(chunks.get(&[2; 32]), Some(chunk(2)));
        assert_eq!(chunks.state(&[9; 32]).as_deref(), Some(&b"state"[..]));
        drop(chunks);
        // Nothing but the index is written: the bytes stay in the blob.
        let names: Vec<_> = fs::read_dir(dir.path().join("chunks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "lock")
            .collect();
        assert_eq!(names, ["index"]);

        // Damage the blob: a flipped byte and a truncation are misses, never wrong bytes.
        let path = store.blob_path(&blob);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        bytes.truncate(1500);
        fs::write(&path, &bytes).unwrap();
        let chunks = store.chunk_store();
        assert_eq!(chunks.get(&[1; 32]), None);
        assert_eq!(chunks.get(&[2; 32]), None);
        chunks.commit(&blob).unwrap();
        // The damaged chunks left the index.
        let index = read_index(&dir.path().join("chunks/index"));
        assert!(index.chunks.is_empty());
    }

    #[test]
    fn a_damaged_index_is_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chunks = store.chunk_store();
        let (blob, places) = blob_of(&store, &[chunk(1)]);
        chunks.put(&[1; 32], &places[0]);
        chunks.commit(&blob).unwrap();
        let index_path = dir.path().join("chunks/index");
        let text = fs::read_to_string(&index_path).unwrap();
        // A torn line (as a writer that was not atomic would leave) is skipped.
        fs::write(&index_path, &text[..text.len() - 7]).unwrap();
        assert!(store.chunk_store().get(&[1; 32]).is_none());
        fs::write(&index_path, "garbage").unwrap();
        assert!(store.chunk_store().get(&[1; 32]).is_none());
        // A line naming a huge chunk, or a blob outside blobs/, is damage too.
        let huge = text.replace(" 1001 ", &format!(" {} ", 1u64 << 40));
        fs::write(&index_path, huge).unwrap();
        assert!(store.chunk_store().get(&[1; 32]).is_none());
        let outside = text.replace(&blob.to_string(), "../../etc/passwd");
        fs::write(&index_path, outside).unwrap();
        assert!(store.chunk_store().get(&[1; 32]).is_none());
        // And a new commit writes a good one again.
        let chunks = store.chunk_store();
        let (blob, places) = blob_of(&store, &[chunk(3)]);
        chunks.put(&[3; 32], &places[0]);
        chunks.commit(&blob).unwrap();
        assert_eq!(store.chunk_store().get(&[3; 32]), Some(chunk(3)));
    }

    #[test]
    fn least_recently_used_blobs_go_past_the_budget_and_pruned_ones_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut blobs = Vec::new();
        for n in 1..=5u8 {
            let chunks = store.chunk_store_with_budget(3000);
            let (blob, places) = blob_of(&store, &[chunk(n)]);
            chunks.put(&[n; 32], &places[0]);
            chunks.commit(&blob).unwrap();
            blobs.push(blob);
        }
        let chunks = store.chunk_store_with_budget(3000);
        let kept: Vec<u8> = (1..=5u8)
            .filter(|n| chunks.get(&[*n; 32]).is_some())
            .collect();
        assert_eq!(kept, [4, 5]);
        drop(chunks);
        // The blobs themselves are the store's: eviction only forgets where chunks are.
        assert!(blobs.iter().all(|b| store.has_blob(b)));

        // A blob removed (as prune does) takes its lines with it at the next merge.
        fs::remove_file(store.blob_path(&blobs[4])).unwrap();
        let chunks = store.chunk_store_with_budget(3000);
        let (blob, places) = blob_of(&store, &[chunk(6)]);
        chunks.put(&[6; 32], &places[0]);
        chunks.commit(&blob).unwrap();
        let index = read_index(&dir.path().join("chunks/index"));
        assert!(!index.blobs.contains_key(&blobs[4].to_string()));
        assert!(index.chunks.contains_key(&[4; 32]));
        assert!(!index.chunks.contains_key(&[5; 32]));
    }

    #[test]
    fn an_index_of_the_old_format_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::create_dir_all(dir.path().join("chunks/packs")).unwrap();
        fs::write(dir.path().join("chunks/packs/00.pack"), b"old").unwrap();
        fs::write(dir.path().join("chunks/index"), "kiln-chunks 1\np 00 3 1\n").unwrap();
        assert!(store.chunk_store().get(&[1; 32]).is_none());
        let chunks = store.chunk_store();
        let (blob, places) = blob_of(&store, &[chunk(1)]);
        chunks.put(&[1; 32], &places[0]);
        chunks.commit(&blob).unwrap();
        assert_eq!(store.chunk_store().get(&[1; 32]), Some(chunk(1)));
        assert!(!dir.path().join("chunks/packs").exists());
    }
}
