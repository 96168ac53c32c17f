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
use std::hash::BuildHasherDefault;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

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

    /// The key of a file, from `statx` (the call [`std::fs::Metadata`] is made from: the two
    /// agree field for field, so memo entries made either way match).
    pub fn of_statx(stat: &rustix::fs::Statx) -> Self {
        let nanos = |t: &rustix::fs::StatxTimestamp| {
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        };
        StatKey {
            dev: rustix::fs::makedev(stat.stx_dev_major, stat.stx_dev_minor),
            ino: stat.stx_ino,
            size: stat.stx_size,
            mtime_ns: nanos(&stat.stx_mtime),
            ctime_ns: nanos(&stat.stx_ctime),
        }
    }
}

/// A memo of file content hashes; the store keeps a persistent one.
pub trait HashMemo: Sync {
    /// The content hash of the file with this key, if known.
    fn get(&self, key: &StatKey) -> Option<[u8; 32]>;
    /// [`HashMemo::get`] of many keys at once (one lock for all of them, where there is one).
    fn get_many(&self, keys: &mut dyn Iterator<Item = &StatKey>) -> Vec<Option<[u8; 32]>> {
        keys.map(|key| self.get(key)).collect()
    }
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
    hashes: RwLock<Hashes>,
    /// Whether `hashes` differs from what was loaded (or last saved): an unchanged memo is
    /// not written again.
    changed: AtomicBool,
    /// Files the build wrote (never saved: snapshots come and go).
    written: Mutex<Hashes>,
    bytes_read: std::sync::atomic::AtomicU64,
}

/// File hashes by what identifies the file.
type Hashes = HashMap<StatKey, [u8; 32], BuildHasherDefault<StatKeyHasher>>;

/// A hasher for [`StatKey`]s: a multiply-rotate mix of their words. Keys come from the
/// kernel (device, inode, sizes, times), not from anyone choosing them to collide, and a memo
/// lookup per context file is the warm path's hot loop, where SipHash cost a sixth of it.
#[derive(Default)]
pub struct StatKeyHasher(u64);

impl StatKeyHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for StatKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (to, from) in word.iter_mut().zip(chunk) {
                *to = *from;
            }
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    fn write_i128(&mut self, value: i128) {
        self.mix(value as u64);
        self.mix((value >> 64) as u64);
    }
}

/// Entries kept in a saved memo at most (an arbitrary subset past it: the memo is only a
/// cache, and a file it forgot is read again).
const MAX_SAVED: usize = 1_000_000;

/// What a saved memo starts with. Earlier memos were text (a line per file); they still
/// load, and the next save writes this form.
const MEMO_MAGIC: &[u8; 16] = b"kiln-hash-memo2\n";

/// One saved file: dev, ino, size (u64 each), mtime and ctime (i128 nanoseconds), all
/// little-endian, then the SHA-256.
const MEMO_RECORD: usize = 8 * 3 + 16 * 2 + 32;

impl MemoryMemo {
    /// Reads a saved memo; a missing or damaged file gives an empty memo, never an error:
    /// the worst a bad memo can do is make hashing read files again.
    pub fn load(path: &std::path::Path) -> Self {
        let memo = MemoryMemo::default();
        let Ok(bytes) = std::fs::read(path) else {
            return memo;
        };
        let hashes = match bytes.strip_prefix(MEMO_MAGIC.as_slice()) {
            Some(records) => parse_records(records),
            None => {
                // The text form of earlier versions: rewritten in the current form next save.
                memo.changed.store(true, Ordering::Relaxed);
                parse_text(&bytes)
            }
        };
        if let Ok(mut slot) = memo.hashes.write() {
            *slot = hashes;
        }
        memo
    }

    /// The memo as saved: [`MEMO_MAGIC`], then a fixed-size record per file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let Ok(hashes) = self.hashes.read() else {
            return Vec::new();
        };
        let count = hashes.len().min(MAX_SAVED);
        let mut out = Vec::with_capacity(MEMO_MAGIC.len() + count * MEMO_RECORD);
        out.extend_from_slice(MEMO_MAGIC);
        for (key, hash) in hashes.iter().take(MAX_SAVED) {
            out.extend_from_slice(&key.dev.to_le_bytes());
            out.extend_from_slice(&key.ino.to_le_bytes());
            out.extend_from_slice(&key.size.to_le_bytes());
            out.extend_from_slice(&key.mtime_ns.to_le_bytes());
            out.extend_from_slice(&key.ctime_ns.to_le_bytes());
            out.extend_from_slice(hash);
        }
        out
    }

    /// [`MemoryMemo::to_bytes`] if the memo learnt something since it was loaded or last
    /// taken this way; `None` when saving would write the same entries again.
    pub fn bytes_if_changed(&self) -> Option<Vec<u8>> {
        self.changed
            .swap(false, Ordering::Relaxed)
            .then(|| self.to_bytes())
    }

    /// How many files the memo knows.
    pub fn len(&self) -> usize {
        self.hashes.read().map(|h| h.len()).unwrap_or(0)
    }

    /// File content read to compute hashes this memo did not have.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Whether the memo knows no file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_records(records: &[u8]) -> Hashes {
    let mut hashes =
        Hashes::with_capacity_and_hasher(records.len() / MEMO_RECORD, Default::default());
    // A torn last record (a damaged file) is left out.
    for record in records.chunks_exact(MEMO_RECORD) {
        let (dev, rest) = record.split_at(8);
        let (ino, rest) = rest.split_at(8);
        let (size, rest) = rest.split_at(8);
        let (mtime, rest) = rest.split_at(16);
        let (ctime, hash) = rest.split_at(16);
        let (Ok(dev), Ok(ino), Ok(size), Ok(mtime), Ok(ctime), Ok(hash)) = (
            dev.try_into(),
            ino.try_into(),
            size.try_into(),
            mtime.try_into(),
            ctime.try_into(),
            hash.try_into(),
        ) else {
            continue;
        };
        let key = StatKey {
            dev: u64::from_le_bytes(dev),
            ino: u64::from_le_bytes(ino),
            size: u64::from_le_bytes(size),
            mtime_ns: i128::from_le_bytes(mtime),
            ctime_ns: i128::from_le_bytes(ctime),
        };
        hashes.insert(key, hash);
    }
    hashes
}

/// The text memo of earlier versions: one `dev ino size mtime_ns ctime_ns sha256hex` line per
/// file; lines that do not parse are skipped.
fn parse_text(bytes: &[u8]) -> Hashes {
    let mut hashes = Hashes::default();
    if let Ok(text) = std::str::from_utf8(bytes) {
        for line in text.lines() {
            if let Some((key, hash)) = parse_line(line) {
                hashes.insert(key, hash);
            }
        }
    }
    hashes
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
    let hash = parse_hex32(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    Some((key, hash))
}

impl HashMemo for MemoryMemo {
    fn get(&self, key: &StatKey) -> Option<[u8; 32]> {
        self.hashes.read().ok()?.get(key).copied()
    }

    fn get_many(&self, keys: &mut dyn Iterator<Item = &StatKey>) -> Vec<Option<[u8; 32]>> {
        match self.hashes.read() {
            Ok(hashes) => keys.map(|key| hashes.get(key).copied()).collect(),
            Err(_) => keys.map(|_| None).collect(),
        }
    }

    fn put(&self, key: StatKey, hash: [u8; 32]) {
        if let Ok(mut hashes) = self.hashes.write() {
            if hashes.insert(key, hash) != Some(hash) {
                self.changed.store(true, Ordering::Relaxed);
            }
        }
    }

    fn record_read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
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

/// A source's digest and the hash of each of its first entries (content for files, the
/// entry's own fields for directories and links), so a changed file can be named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailedDigest {
    /// `sha256:<hex>` of the whole source.
    pub digest: String,
    /// The hash of each of the first entries asked for, in walk order (`files[i]` is the
    /// `i`th entry's; [`sha256_text`] writes one as a digest).
    pub files: Vec<[u8; 32]>,
}

/// The digest of a walked source (`sha256:<hex>`). Files are hashed on all cores; hashes of
/// files whose [`StatKey`] the memo knows are not read again.
pub fn content_digest(
    context: &crate::Context,
    entries: &[Entry],
    memo: &dyn HashMemo,
) -> Result<String, ContextError> {
    Ok(content_digest_detailed(context, entries, memo, 0)?.digest)
}

/// [`content_digest`] with the hashes of the first `named` entries (only those are computed).
pub fn content_digest_detailed(
    context: &crate::Context,
    entries: &[Entry],
    memo: &dyn HashMemo,
    named: usize,
) -> Result<DetailedDigest, ContextError> {
    // Per entry: its content hash (files), and its own hash if it is among the named.
    type Hashes = (Option<[u8; 32]>, Option<[u8; 32]>);
    // What the memo knows, looked up in one go (on a warm build, every file).
    let known = memo.get_many(&mut entries.iter().map(|entry| &entry.stat));
    let hashes: Vec<Hashes> = entries
        .par_iter()
        .zip(known)
        .enumerate()
        .map(|(index, (entry, known))| {
            let content = match entry.kind {
                EntryKind::File => match known {
                    Some(hash) => Some(hash),
                    None => {
                        let (hash, read) = file_sha256(context, &entry.absolute)?;
                        memo.record_read(read);
                        memo.put(entry.stat, hash);
                        Some(hash)
                    }
                },
                _ => None,
            };
            let own = (index < named).then(|| {
                let mut one = Sha256::new();
                put_entry(&mut one, entry, content);
                one.finalize().into()
            });
            Ok((content, own))
        })
        .collect::<Result<_, ContextError>>()?;
    let mut hasher = Sha256::new();
    put_field(&mut hasher, b"kiln-context-v1");
    let mut files = Vec::with_capacity(named.min(entries.len()));
    for (entry, (content, own)) in entries.iter().zip(hashes) {
        files.extend(own);
        put_entry(&mut hasher, entry, content);
    }
    Ok(DetailedDigest {
        digest: sha256_text(&hasher.finalize().into()),
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

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for &byte in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
    }
}

/// `sha256:<hex>` of a SHA-256.
pub fn sha256_text(hash: &[u8; 32]) -> String {
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    push_hex(&mut out, hash);
    out
}

/// The 32 bytes 64 hex digits (either case) spell; `None` for anything else.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [high, low] = pair else {
            return None;
        };
        *byte = (nibble(*high)? << 4) | nibble(*low)?;
    }
    Some(out)
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
    #[test]
    fn hex_round_trips_and_matches_the_formatter() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&bytes), expected);
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let text = hex(&hash);
        assert_eq!(parse_hex32(&text), Some(hash));
        assert_eq!(parse_hex32(&text.to_uppercase()), Some(hash));
        assert_eq!(sha256_text(&hash), format!("sha256:{text}"));
        assert_eq!(parse_hex32(&text[..62]), None);
        assert_eq!(parse_hex32(&format!("{text}00")), None);
        assert_eq!(parse_hex32(&format!("g{}", &text[1..])), None);
        assert_eq!(parse_hex32(&format!("+{}", &text[1..])), None);
    }

    fn key(ino: u64) -> StatKey {
        StatKey {
            dev: 0x803,
            ino,
            size: 12,
            mtime_ns: -1_500_000_000,
            ctime_ns: i128::from(u64::MAX) * 3,
        }
    }

    #[test]
    fn a_text_memo_of_earlier_versions_loads_and_is_rewritten_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memo");
        let k = key(7);
        let text = format!(
            "{} {} {} {} {} {}\nnot a line\n",
            k.dev,
            k.ino,
            k.size,
            k.mtime_ns,
            k.ctime_ns,
            hex(&[0xabu8; 32])
        );
        fs::write(&path, text).unwrap();
        let loaded = MemoryMemo::load(&path);
        assert_eq!(loaded.get(&k), Some([0xab; 32]));
        assert_eq!(loaded.len(), 1);
        // Loaded from the old form, it is saved in the new one.
        let bytes = loaded.bytes_if_changed().expect("converted");
        assert!(bytes.starts_with(MEMO_MAGIC));
        fs::write(&path, bytes).unwrap();
        let again = MemoryMemo::load(&path);
        assert_eq!(again.get(&k), Some([0xab; 32]));
        assert_eq!(again.bytes_if_changed(), None);
    }

    #[test]
    fn an_unchanged_memo_is_not_saved_again() {
        let memo = MemoryMemo::default();
        assert_eq!(memo.bytes_if_changed(), None, "nothing learnt yet");
        memo.put(key(1), [1; 32]);
        let saved = memo.bytes_if_changed().expect("a new entry");
        assert_eq!(memo.bytes_if_changed(), None, "taken once");
        // The same hash again teaches nothing; a new one does.
        memo.put(key(1), [1; 32]);
        assert_eq!(memo.bytes_if_changed(), None);
        memo.put(key(1), [2; 32]);
        assert!(memo.bytes_if_changed().is_some());
        // What the build wrote is never saved, so it changes nothing either.
        memo.put_written(key(9), [9; 32]);
        assert_eq!(memo.bytes_if_changed(), None);
        // A memo loaded from a save knows it is saved.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memo");
        fs::write(&path, &saved).unwrap();
        let loaded = MemoryMemo::load(&path);
        assert_eq!(loaded.get(&key(1)), Some([1; 32]));
        assert_eq!(loaded.bytes_if_changed(), None);
        loaded.put(key(2), [2; 32]);
        assert!(loaded.bytes_if_changed().is_some());
    }

    #[test]
    fn detailed_digest_names_the_first_entries_as_before() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/a"), "one").unwrap();
        fs::write(dir.path().join("b"), "two").unwrap();
        std::os::unix::fs::symlink("b", dir.path().join("c")).unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let entries = ctx.walk("", &IgnoreRules::default()).unwrap();
        let memo = MemoryMemo::default();
        let all = content_digest_detailed(&ctx, &entries, &memo, usize::MAX).unwrap();
        assert_eq!(all.files.len(), entries.len());
        assert_eq!(all.digest, content_digest(&ctx, &entries, &memo).unwrap());
        // Each entry's hash is its fields and content, hashed alone.
        for (entry, hash) in entries.iter().zip(&all.files) {
            let content = (entry.kind == EntryKind::File)
                .then(|| Sha256::digest(fs::read(&entry.absolute).unwrap()).into());
            let mut one = Sha256::new();
            put_entry(&mut one, entry, content);
            assert_eq!(hash, &<[u8; 32]>::from(one.finalize()));
        }
        let two = content_digest_detailed(&ctx, &entries, &memo, 2).unwrap();
        assert_eq!(two.digest, all.digest);
        assert_eq!(two.files, all.files[..2]);
        // The digest text is what keys were made of before: `sha256:` and lowercase hex.
        assert!(all.digest.starts_with("sha256:") && all.digest.len() == 71);
    }

    #[test]
    fn stat_keys_from_statx_and_metadata_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "content").unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        let stat = rustix::fs::statx(
            rustix::fs::CWD,
            &path,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            rustix::fs::StatxFlags::BASIC_STATS,
        )
        .unwrap();
        assert_eq!(StatKey::of_statx(&stat), StatKey::of(&meta));
    }
    #[test]
    fn many_keys_at_once_give_what_each_gives() {
        struct OneByOne(MemoryMemo);
        impl HashMemo for OneByOne {
            fn get(&self, key: &StatKey) -> Option<[u8; 32]> {
                self.0.get(key)
            }
            fn put(&self, key: StatKey, hash: [u8; 32]) {
                self.0.put(key, hash)
            }
        }
        let memo = MemoryMemo::default();
        for ino in (0..200).step_by(3) {
            memo.put(key(ino), [ino as u8; 32]);
        }
        let keys: Vec<StatKey> = (0..200).map(key).collect();
        let each: Vec<_> = keys.iter().map(|k| memo.get(k)).collect();
        assert_eq!(memo.get_many(&mut keys.iter()), each);
        assert_eq!(each.iter().filter(|h| h.is_some()).count(), 67);
        let default = OneByOne(memo);
        assert_eq!(default.get_many(&mut keys.iter()), each);
    }
}
