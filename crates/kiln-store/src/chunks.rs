//! The chunk store: compressed chunks of layers written earlier, so a layer written again with
//! most entries unchanged takes them instead of reading and compressing its files again.
//!
//! ```text
//! chunks/index              what is where: one line per pack, chunk and saved hash state
//! chunks/packs/<id>.pack    the chunks one layer write added, back to back
//! chunks/lock               flock'd while the index is merged and rewritten
//! ```
//!
//! A layer write appends its new chunks to a pack of its own in tmp/; at the end the pack is
//! fsynced and renamed into `packs/`, then, under the lock, the index is read again, the new
//! lines merged in, the least recently used packs evicted past the size budget, and the index
//! written atomically. Every chunk read is checked against the SHA-256 the index holds for it,
//! so a pack that is missing, truncated or damaged only means its chunks are written afresh
//! (and dropped from the index at the next merge). Nothing here is needed for correctness:
//! deleting `chunks/` loses nothing but time.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::{io_at, Result, Store};

/// Bytes of packs kept at most, unless `KILN_CHUNK_CACHE_MB` says otherwise.
pub const DEFAULT_BUDGET: u64 = 1 << 30;
/// First line of the index: its format.
const INDEX_HEADER: &str = "kiln-chunks 1";
/// A pack file the index does not name is removed after this long (a writer that died
/// between renaming its pack and merging the index).
const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Where a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    pack: u64,
    offset: u64,
    len: u64,
    crc: u32,
    uncompressed_len: u64,
    sha256: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackInfo {
    size: u64,
    last_used: u64,
}

/// The index as read from (and written to) `chunks/index`.
#[derive(Debug, Default, Clone)]
struct ChunkIndex {
    packs: HashMap<u64, PackInfo>,
    chunks: HashMap<[u8; 32], Location>,
    states: HashMap<[u8; 32], (u64, Vec<u8>)>,
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

/// What one layer write adds.
#[derive(Default)]
struct Session {
    pack: Option<(PathBuf, BufWriter<File>)>,
    pack_id: u64,
    written: u64,
    chunks: Vec<([u8; 32], Location)>,
    states: Vec<([u8; 32], Vec<u8>)>,
    used: HashSet<u64>,
    bad: HashSet<[u8; 32]>,
    readers: HashMap<u64, File>,
}

/// The chunk store of one layer write: look chunks up, add new ones, then
/// [`ChunkStore::commit`].
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

    /// The chunk store, keeping at most `budget` bytes of packs.
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
    /// The chunk stored under `key`, checked against its SHA-256; `None` when unknown or when
    /// its pack is missing or damaged.
    pub fn get(&self, key: &[u8; 32]) -> Option<Chunk> {
        let location = *self.index.chunks.get(key)?;
        let mut session = self.session.lock().ok()?;
        let bytes = read_chunk(&self.dir, &mut session.readers, &location);
        match bytes {
            Some(bytes) => {
                session.used.insert(location.pack);
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
        let (pack, state) = self.index.states.get(prefix)?;
        if let Ok(mut session) = self.session.lock() {
            session.used.insert(*pack);
        }
        Some(state.clone())
    }

    /// Adds a chunk (best effort: a failure to write only loses the chance to reuse it).
    pub fn put(&self, key: &[u8; 32], chunk: &Chunk) {
        if self.index.chunks.contains_key(key) {
            return;
        }
        let Ok(mut session) = self.session.lock() else {
            return;
        };
        if session.pack.is_none() {
            let Ok(file) = tempfile::Builder::new()
                .prefix("chunks-")
                .tempfile_in(self.store.session.path())
            else {
                return;
            };
            let Ok((file, path)) = file.keep() else {
                return;
            };
            session.pack_id = new_pack_id();
            session.pack = Some((path, BufWriter::with_capacity(1 << 20, file)));
        }
        let offset = session.written;
        let pack = session.pack_id;
        let Some((_, writer)) = session.pack.as_mut() else {
            return;
        };
        if writer.write_all(&chunk.bytes).is_err() {
            // Drop the pack: nothing of it is trusted.
            if let Some((path, _)) = session.pack.take() {
                let _ = fs::remove_file(path);
            }
            session.chunks.clear();
            return;
        }
        session.written = offset.saturating_add(chunk.bytes.len() as u64);
        session.chunks.push((
            *key,
            Location {
                pack,
                offset,
                len: chunk.bytes.len() as u64,
                crc: chunk.crc,
                uncompressed_len: chunk.uncompressed_len,
                sha256: Sha256::digest(&chunk.bytes).into(),
            },
        ));
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

    /// Moves this write's pack into place and merges what it added (and which packs it used)
    /// into the index, evicting the least recently used packs past the budget. Call it once
    /// the layer is written; without it, nothing of this write is kept.
    pub fn commit(self) -> Result<()> {
        let session = self
            .session
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Session {
            pack,
            pack_id,
            written,
            chunks,
            states,
            used,
            bad,
            ..
        } = session;
        let new_pack = match pack {
            Some((tmp, writer)) => {
                let packs = self.dir.join("packs");
                fs::create_dir_all(&packs).map_err(io_at(&packs))?;
                let file = writer
                    .into_inner()
                    .map_err(|e| io_at(&tmp)(e.into_error()))?;
                file.sync_all().map_err(io_at(&tmp))?;
                let path = pack_path(&self.dir, pack_id);
                fs::rename(&tmp, &path).map_err(io_at(&path))?;
                crate::sync_parent(&path)?;
                true
            }
            None => false,
        };
        if !new_pack && used.is_empty() && bad.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir).map_err(io_at(&self.dir))?;
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
        // Packs another writer evicted meanwhile stay gone.
        index
            .packs
            .retain(|id, _| pack_path(&self.dir, *id).is_file());
        for id in &used {
            if let Some(info) = index.packs.get_mut(id) {
                info.last_used = now;
            }
        }
        if new_pack {
            index.packs.insert(
                pack_id,
                PackInfo {
                    size: written,
                    last_used: now,
                },
            );
            for (key, location) in chunks {
                index.chunks.entry(key).or_insert(location);
            }
            for (prefix, state) in states {
                index.states.entry(prefix).or_insert((pack_id, state));
            }
        }
        for key in &bad {
            index.chunks.remove(key);
        }
        evict(&mut index, self.budget, &self.dir);
        index
            .chunks
            .retain(|_, l| index.packs.contains_key(&l.pack));
        index
            .states
            .retain(|_, (pack, _)| index.packs.contains_key(pack));
        remove_orphans(&self.dir, &index);
        self.store.write_atomic(&index_path, &index_text(&index))?;
        drop(lock);
        Ok(())
    }
}

/// Drops the least recently used packs until the rest fit the budget.
fn evict(index: &mut ChunkIndex, budget: u64, dir: &Path) {
    let mut total: u64 = index
        .packs
        .values()
        .map(|p| p.size)
        .fold(0, u64::saturating_add);
    if total <= budget {
        return;
    }
    let mut by_age: Vec<(u64, u64, u64)> = index
        .packs
        .iter()
        .map(|(id, p)| (p.last_used, *id, p.size))
        .collect();
    by_age.sort_unstable();
    for (_, id, size) in by_age {
        if total <= budget {
            break;
        }
        index.packs.remove(&id);
        let _ = fs::remove_file(pack_path(dir, id));
        total = total.saturating_sub(size);
    }
}

/// Removes pack files the index does not name once they are old enough not to be a pack
/// another writer is about to merge.
fn remove_orphans(dir: &Path, index: &ChunkIndex) {
    let Ok(entries) = fs::read_dir(dir.join("packs")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let known = name
            .to_str()
            .and_then(|n| n.strip_suffix(".pack"))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .is_some_and(|id| index.packs.contains_key(&id));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > ORPHAN_AGE);
        if !known && old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn pack_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("packs").join(format!("{id:016x}.pack"))
}

/// A pack id no other writer picks: hashed from the time, the process and a counter.
fn new_pack_id() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = Sha256::new();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// Reads a chunk's bytes and checks them; `None` when the pack is missing, short or damaged.
fn read_chunk(
    dir: &Path,
    readers: &mut HashMap<u64, File>,
    location: &Location,
) -> Option<Vec<u8>> {
    let file = match readers.entry(location.pack) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(File::open(pack_path(dir, location.pack)).ok()?)
        }
    };
    let mut bytes = vec![0u8; usize::try_from(location.len).ok()?];
    file.read_exact_at(&mut bytes, location.offset).ok()?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    (digest == location.sha256).then_some(bytes)
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
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i.checked_add(2)?)?, 16).ok())
        .collect()
}

fn key32(text: &str) -> Option<[u8; 32]> {
    unhex(text)?.try_into().ok()
}

fn index_text(index: &ChunkIndex) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(index.chunks.len().saturating_mul(200));
    out.push_str(INDEX_HEADER);
    out.push('\n');
    for (id, p) in &index.packs {
        let _ = writeln!(out, "p {id:016x} {} {}", p.size, p.last_used);
    }
    for (key, l) in &index.chunks {
        let _ = writeln!(
            out,
            "c {} {:016x} {} {} {} {} {}",
            hex(key),
            l.pack,
            l.offset,
            l.len,
            l.crc,
            l.uncompressed_len,
            hex(&l.sha256)
        );
    }
    for (prefix, (pack, state)) in &index.states {
        let _ = writeln!(out, "s {} {pack:016x} {}", hex(prefix), hex(state));
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
        .retain(|_, l| index.packs.contains_key(&l.pack));
    index
        .states
        .retain(|_, (pack, _)| index.packs.contains_key(pack));
    index
}

fn parse_line(index: &mut ChunkIndex, line: &str) -> Option<()> {
    let mut f = line.split(' ');
    match f.next()? {
        "p" => {
            let id = u64::from_str_radix(f.next()?, 16).ok()?;
            let size = f.next()?.parse().ok()?;
            let last_used = f.next()?.parse().ok()?;
            index.packs.insert(id, PackInfo { size, last_used });
        }
        "c" => {
            let key = key32(f.next()?)?;
            let location = Location {
                pack: u64::from_str_radix(f.next()?, 16).ok()?,
                offset: f.next()?.parse().ok()?,
                len: f.next()?.parse().ok()?,
                crc: f.next()?.parse().ok()?,
                uncompressed_len: f.next()?.parse().ok()?,
                sha256: key32(f.next()?)?,
            };
            location.offset.checked_add(location.len)?;
            index.chunks.insert(key, location);
        }
        "s" => {
            let prefix = key32(f.next()?)?;
            let pack = u64::from_str_radix(f.next()?, 16).ok()?;
            index.states.insert(prefix, (pack, unhex(f.next()?)?));
        }
        _ => return None,
    }
    f.next().is_none().then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        chunks.put(&[1; 32], &chunk(1));
        chunks.put(&[2; 32], &chunk(2));
        chunks.put_state(&[9; 32], b"state");
        // Not visible before the commit.
        assert!(chunks.get(&[1; 32]).is_none());
        chunks.commit().unwrap();

        let chunks = store.chunk_store();
        assert_eq!(chunks.get(&[1; 32]), Some(chunk(1)));
        assert_eq!(chunks.get(&[2; 32]), Some(chunk(2)));
        assert_eq!(chunks.state(&[9; 32]).as_deref(), Some(&b"state"[..]));
        drop(chunks);

        // Damage the pack: a flipped byte and a truncation are misses, never wrong bytes.
        let packs: Vec<_> = fs::read_dir(dir.path().join("chunks/packs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(packs.len(), 1);
        let mut bytes = fs::read(&packs[0]).unwrap();
        bytes[10] ^= 1;
        bytes.truncate(1500);
        fs::write(&packs[0], &bytes).unwrap();
        let chunks = store.chunk_store();
        assert_eq!(chunks.get(&[1; 32]), None);
        assert_eq!(chunks.get(&[2; 32]), None);
        chunks.commit().unwrap();
        // The damaged chunks left the index.
        let index = read_index(&dir.path().join("chunks/index"));
        assert!(index.chunks.is_empty());
    }

    #[test]
    fn a_damaged_index_is_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chunks = store.chunk_store();
        chunks.put(&[1; 32], &chunk(1));
        chunks.commit().unwrap();
        let index_path = dir.path().join("chunks/index");
        let text = fs::read_to_string(&index_path).unwrap();
        // A torn line (as a writer that was not atomic would leave) is skipped.
        fs::write(&index_path, &text[..text.len() - 7]).unwrap();
        assert!(store.chunk_store().get(&[1; 32]).is_none());
        fs::write(&index_path, "garbage").unwrap();
        assert!(store.chunk_store().get(&[1; 32]).is_none());
        // And a new commit writes a good one again.
        let chunks = store.chunk_store();
        chunks.put(&[3; 32], &chunk(3));
        chunks.commit().unwrap();
        assert_eq!(store.chunk_store().get(&[3; 32]), Some(chunk(3)));
    }

    #[test]
    fn least_recently_used_packs_go_past_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for n in 1..=5u8 {
            let chunks = store.chunk_store_with_budget(3000);
            chunks.put(&[n; 32], &chunk(n));
            chunks.commit().unwrap();
        }
        let chunks = store.chunk_store_with_budget(3000);
        let kept: Vec<u8> = (1..=5u8)
            .filter(|n| chunks.get(&[*n; 32]).is_some())
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.contains(&5));
        let files = fs::read_dir(dir.path().join("chunks/packs"))
            .unwrap()
            .count();
        assert_eq!(files, 2);
    }
}
