//! Content digests of COPY sources, for cache keys.
//!
//! A source's digest is a hash over its entries in walk order: for each, the length-prefixed
//! relative path, type, permission bits, link target and the SHA-256 of the content. Owners
//! and times are left out on purpose: COPY gives files the owner it is told (`--chown`, else
//! root), and a `touch` that changes nothing must not invalidate the cache.

use crate::{ContextError, Entry, EntryKind};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// What identifies a file's content without reading it: if none of these changed, neither did
/// the content (ctime catches writes that restore the mtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatKey {
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

impl StatKey {
    /// The key of a file, from its metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// A memo of file content hashes; the store keeps a persistent one.
pub trait HashMemo: Sync {
    /// The content hash of the file with this key, if known.
    fn get(&self, key: &StatKey) -> Option<[u8; 32]>;
    /// Remembers a file's content hash.
    fn put(&self, key: StatKey, hash: [u8; 32]);
    /// Told how many bytes were read to hash a file the memo did not know.
    fn record_read(&self, _bytes: u64) {}
    /// Remembers the content hash of a file this build wrote (a COPY's copy of a context
    /// file), so the layer writer need not read it to know it; kept for this process only.
    fn put_written(&self, _key: StatKey, _hash: [u8; 32]) {}
    /// The content hash of a file this build wrote, if known.
    fn get_written(&self, _key: &StatKey) -> Option<[u8; 32]> {
        None
    }
}

/// A memo of file hashes, kept in memory and, through [`MemoryMemo::load`] and
/// [`MemoryMemo::to_bytes`], in a file between builds (the store's `hashes/memo`).
#[derive(Default)]
pub struct MemoryMemo {
    hashes: Mutex<HashMap<StatKey, [u8; 32]>>,
    /// Files the build wrote (never saved: snapshots come and go).
    written: Mutex<HashMap<StatKey, [u8; 32]>>,
    bytes_read: std::sync::atomic::AtomicU64,
}

/// Entries kept in a saved memo at most (an arbitrary subset past it: the memo is only a
/// cache, and a file it forgot is read again).
const MAX_SAVED: usize = 1_000_000;

impl MemoryMemo {
    /// Reads a saved memo; a missing or damaged file gives an empty memo, never an error:
    /// the worst a bad memo can do is make hashing read files again.
    pub fn load(path: &std::path::Path) -> Self {
        let memo = MemoryMemo::default();
        let Ok(text) = std::fs::read_to_string(path) else {
            return memo;
        };
        if let Ok(mut hashes) = memo.hashes.lock() {
            for line in text.lines() {
                if let Some((key, hash)) = parse_line(line) {
                    hashes.insert(key, hash);
                }
            }
        }
        memo
    }

    /// The memo as text, one `dev ino size mtime_ns ctime_ns sha256hex` line per file.
    pub fn to_bytes(&self) -> Vec<u8> {
        use std::fmt::Write;
        let Ok(hashes) = self.hashes.lock() else {
            return Vec::new();
        };
        let mut out = String::with_capacity(hashes.len().min(MAX_SAVED) * 120);
        for (key, hash) in hashes.iter().take(MAX_SAVED) {
            let _ = writeln!(
                out,
                "{} {} {} {} {} {}",
                key.dev,
                key.ino,
                key.size,
                key.mtime_ns,
                key.ctime_ns,
                hex(hash)
            );
        }
        out.into_bytes()
    }

    /// How many files the memo knows.
    pub fn len(&self) -> usize {
        self.hashes.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// File content read to compute hashes this memo did not have.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the memo knows no file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_line(line: &str) -> Option<(StatKey, [u8; 32])> {
    let mut fields = line.split(' ');
    let key = StatKey {
        dev: fields.next()?.parse().ok()?,
        ino: fields.next()?.parse().ok()?,
        size: fields.next()?.parse().ok()?,
        mtime_ns: fields.next()?.parse().ok()?,
        ctime_ns: fields.next()?.parse().ok()?,
    };
    let text = fields.next()?;
    if text.len() != 64 || fields.next().is_some() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((key, hash))
}

impl HashMemo for MemoryMemo {
    fn get(&self, key: &StatKey) -> Option<[u8; 32]> {
        self.hashes.lock().ok()?.get(key).copied()
    }

    fn put(&self, key: StatKey, hash: [u8; 32]) {
        if let Ok(mut hashes) = self.hashes.lock() {
            hashes.insert(key, hash);
        }
    }

    fn record_read(&self, bytes: u64) {
        self.bytes_read
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn put_written(&self, key: StatKey, hash: [u8; 32]) {
        if let Ok(mut written) = self.written.lock() {
            written.insert(key, hash);
        }
    }

    fn get_written(&self, key: &StatKey) -> Option<[u8; 32]> {
        self.written.lock().ok()?.get(key).copied()
    }
}

/// SHA-256 of one file's content, read in one pass.
fn file_sha256(
    context: &crate::Context,
    path: &std::path::Path,
) -> Result<([u8; 32], u64), ContextError> {
    let to_error = |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = context.open_file(path).map_err(to_error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(to_error)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((hasher.finalize().into(), total))
}

fn put_field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// A source's digest and the hash of each entry in it (content for files, the entry's own
/// fields for directories and links), so a changed file can be named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailedDigest {
    /// `sha256:<hex>` of the whole source.
    pub digest: String,
    /// Each entry's path (relative to the source) and hash, in walk order.
    pub files: Vec<(std::path::PathBuf, String)>,
}

/// The digest of a walked source (`sha256:<hex>`). Files are hashed on all cores; hashes of
/// files whose [`StatKey`] the memo knows are not read again.
pub fn content_digest(
    context: &crate::Context,
    entries: &[Entry],
    memo: &dyn HashMemo,
) -> Result<String, ContextError> {
    Ok(content_digest_detailed(context, entries, memo)?.digest)
}

/// [`content_digest`] with the per-entry hashes.
pub fn content_digest_detailed(
    context: &crate::Context,
    entries: &[Entry],
    memo: &dyn HashMemo,
) -> Result<DetailedDigest, ContextError> {
    let hashes: Vec<Option<[u8; 32]>> = entries
        .par_iter()
        .map(|entry| match entry.kind {
            EntryKind::File => {
                if let Some(hash) = memo.get(&entry.stat) {
                    return Ok(Some(hash));
                }
                let (hash, read) = file_sha256(context, &entry.absolute)?;
                memo.record_read(read);
                memo.put(entry.stat, hash);
                Ok(Some(hash))
            }
            _ => Ok(None),
        })
        .collect::<Result<_, ContextError>>()?;
    let mut hasher = Sha256::new();
    put_field(&mut hasher, b"kiln-context-v1");
    let mut files = Vec::with_capacity(entries.len());
    for (entry, hash) in entries.iter().zip(hashes) {
        let mut one = Sha256::new();
        put_entry(&mut one, entry, hash);
        files.push((
            entry.relative.clone(),
            format!("sha256:{}", hex(&one.finalize())),
        ));
        put_entry(&mut hasher, entry, hash);
    }
    Ok(DetailedDigest {
        digest: format!("sha256:{}", hex(&hasher.finalize())),
        files,
    })
}

fn put_entry(hasher: &mut Sha256, entry: &Entry, hash: Option<[u8; 32]>) {
    {
        put_field(hasher, entry.relative.as_os_str().as_bytes());
        let (kind, target): (&[u8], &[u8]) = match &entry.kind {
            EntryKind::File => (b"f", b""),
            EntryKind::Dir => (b"d", b""),
            EntryKind::Symlink(target) => (b"l", target.as_os_str().as_bytes()),
        };
        put_field(hasher, kind);
        put_field(hasher, &entry.mode.to_le_bytes());
        put_field(hasher, target);
        put_field(hasher, &hash.unwrap_or_default());
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, IgnoreRules};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn digest(ctx: &Context, memo: &MemoryMemo) -> String {
        content_digest(ctx, &ctx.walk("", &IgnoreRules::default()).unwrap(), memo).unwrap()
    }

    #[test]
    fn same_content_same_digest_and_touch_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "one").unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let memo = MemoryMemo::default();
        let first = digest(&ctx, &memo);
        // Rewrite the same bytes: mtime and ctime change, content does not.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.path().join("a"), "one").unwrap();
        assert_eq!(digest(&ctx, &memo), first);
    }

    #[test]
    fn content_mode_name_and_links_change_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        fs::write(&path, "one").unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let memo = MemoryMemo::default();
        let base = digest(&ctx, &memo);
        fs::write(&path, "two").unwrap();
        let changed = digest(&ctx, &memo);
        assert_ne!(changed, base);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let chmodded = digest(&ctx, &memo);
        assert_ne!(chmodded, changed);
        fs::rename(&path, dir.path().join("b")).unwrap();
        assert_ne!(digest(&ctx, &memo), chmodded);
        std::os::unix::fs::symlink("b", dir.path().join("l")).unwrap();
        let linked = digest(&ctx, &memo);
        fs::remove_file(dir.path().join("l")).unwrap();
        std::os::unix::fs::symlink("c", dir.path().join("l")).unwrap();
        assert_ne!(digest(&ctx, &memo), linked);
    }

    #[test]
    fn a_saved_memo_loads_back_and_damage_is_ignored() {
        let memo = MemoryMemo::default();
        let key = StatKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: -4,
            ctime_ns: 5,
        };
        memo.put(key, [9u8; 32]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memo");
        let mut bytes = memo.to_bytes();
        bytes.extend_from_slice(b"garbage line\n1 2 3\n");
        fs::write(&path, bytes).unwrap();
        let loaded = MemoryMemo::load(&path);
        assert_eq!(loaded.get(&key), Some([9u8; 32]));
        assert_eq!(loaded.len(), 1);
        assert!(MemoryMemo::load(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn memo_hit_avoids_reading() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "one").unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let entries = ctx.walk("", &IgnoreRules::default()).unwrap();
        let memo = MemoryMemo::default();
        let file = entries.iter().find(|e| e.kind == EntryKind::File).unwrap();
        // A memo entry that lies proves the file was not read.
        memo.put(file.stat, [7u8; 32]);
        let lied = content_digest(&ctx, &entries, &memo).unwrap();
        let honest = content_digest(&ctx, &entries, &MemoryMemo::default()).unwrap();
        assert_ne!(lied, honest);
    }
}
