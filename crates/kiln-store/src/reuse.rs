//! Reuse hints: for a COPY step, the snapshot it made last time and what each copied file
//! holds, so an edit rebuild links the unchanged files from it instead of copying them again.
//!
//! A hint is only an optimisation: it is never part of a cache key, every file taken from the
//! snapshot it names is checked again (content hash here, then owner, mode, time and size on
//! disk by the copy), and a missing, stale or damaged hint only means copying everything.
//! One hint per step slot (recipe, stage, position), under `cache/reuse/`; `prune` removes those
//! whose snapshot is gone.

use crate::{io_at, Result, Store};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

const MAGIC: &[u8] = b"kiln-reuse-v1\n";
/// Files a hint holds at most (past that, a step is not worth a hint's memory).
const MAX_FILES: usize = 2_000_000;
/// A path in a hint at most (Linux's PATH_MAX).
const MAX_PATH: usize = 4096;

/// What a COPY step made last time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReuseHint {
    /// The step's identity without what it reads (parent, instruction, owner, ...): a hint is
    /// used only by a step with the same identity.
    pub identity: String,
    /// The snapshot's name (the step's cache key then).
    pub snapshot: String,
    /// Regular files the step wrote, by their path in the snapshot, with their content's SHA-256.
    pub files: Vec<(PathBuf, [u8; 32])>,
}

impl ReuseHint {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 200 + self.files.len() * 72);
        out.extend_from_slice(MAGIC);
        put(&mut out, self.identity.as_bytes());
        put(&mut out, self.snapshot.as_bytes());
        out.extend_from_slice(&(self.files.len() as u64).to_le_bytes());
        for (path, hash) in &self.files {
            put(&mut out, path.as_os_str().as_bytes());
            out.extend_from_slice(hash);
        }
        let sum: [u8; 32] = Sha256::digest(&out).into();
        out.extend_from_slice(&sum);
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<ReuseHint> {
        let body_len = bytes.len().checked_sub(32)?;
        let (body, sum) = bytes.split_at(body_len);
        if Sha256::digest(body).as_slice() != sum {
            return None;
        }
        let mut rest = body.strip_prefix(MAGIC)?;
        let identity = String::from_utf8(take(&mut rest)?.to_vec()).ok()?;
        let snapshot = String::from_utf8(take(&mut rest)?.to_vec()).ok()?;
        let count = usize::try_from(u64::from_le_bytes(take_n(&mut rest, 8)?.try_into().ok()?))
            .ok()
            .filter(|n| *n <= MAX_FILES)?;
        let mut files = Vec::with_capacity(count.min(rest.len() / 40));
        for _ in 0..count {
            let path = take(&mut rest)?;
            if path.len() > MAX_PATH {
                return None;
            }
            let hash: [u8; 32] = take_n(&mut rest, 32)?.try_into().ok()?;
            files.push((
                PathBuf::from(std::ffi::OsString::from_vec(path.to_vec())),
                hash,
            ));
        }
        rest.is_empty().then_some(ReuseHint {
            identity,
            snapshot,
            files,
        })
    }
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_le_bytes());
    out.extend_from_slice(field);
}

fn take_n<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(take_n(rest, 4)?.try_into().ok()?);
    take_n(rest, usize::try_from(len).ok()?)
}

impl Store {
    fn reuse_dir(&self) -> PathBuf {
        self.root.join("cache/reuse")
    }

    fn reuse_path(&self, slot: &str) -> PathBuf {
        let digest = kiln_oci::sha256_digest(slot.as_bytes());
        self.reuse_dir().join(digest.hex())
    }

    /// The hint of a step slot, if there is a whole one whose snapshot is still in the store,
    /// with the snapshot's directory.
    pub fn reuse_hint(&self, slot: &str) -> Option<(ReuseHint, PathBuf)> {
        let bytes = fs::read(self.reuse_path(slot)).ok()?;
        let hint = ReuseHint::from_bytes(&bytes)?;
        let dir = self.snapshot_path(&hint.snapshot);
        let is_dir = fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        is_dir.then_some((hint, dir))
    }

    /// Records what a step slot's COPY just made (atomically, replacing the slot's hint).
    pub fn put_reuse_hint(&self, slot: &str, hint: &ReuseHint) -> Result<()> {
        let dir = self.reuse_dir();
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        self.write_atomic(&self.reuse_path(slot), &hint.to_bytes())
    }

    /// Removes the hints whose snapshot is not in `kept` (names of snapshots prune keeps).
    pub(crate) fn prune_reuse_hints(&self, kept: &std::collections::BTreeSet<String>) {
        let Ok(entries) = fs::read_dir(self.reuse_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let snapshot = fs::read(entry.path())
                .ok()
                .and_then(|bytes| ReuseHint::from_bytes(&bytes))
                .map(|hint| hint.snapshot.trim_start_matches("sha256:").to_string());
            if !snapshot.is_some_and(|s| kept.contains(&s)) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Whether `path` is under the store's `cache/reuse/` (for tests).
#[cfg(test)]
fn is_hint(store: &Store, path: &std::path::Path) -> bool {
    path.starts_with(store.reuse_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint() -> ReuseHint {
        ReuseHint {
            identity: "abc".into(),
            snapshot: "def".into(),
            files: vec![
                (PathBuf::from("app/a.txt"), [1u8; 32]),
                (PathBuf::from("app/b\nnewline"), [2u8; 32]),
            ],
        }
    }

    #[test]
    fn a_hint_reads_back_and_any_damage_is_no_hint() {
        let bytes = hint().to_bytes();
        assert_eq!(ReuseHint::from_bytes(&bytes), Some(hint()));
        for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(ReuseHint::from_bytes(&bytes[..cut]), None, "cut at {cut}");
        }
        for flip in [0, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 0x40;
            assert_eq!(ReuseHint::from_bytes(&damaged), None, "flip at {flip}");
        }
    }

    #[test]
    fn a_hint_is_given_only_while_its_snapshot_exists_and_prune_drops_it_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_reuse_hint("slot", &hint()).unwrap();
        assert!(is_hint(&store, &store.reuse_path("slot")));
        assert!(store.reuse_hint("slot").is_none(), "no snapshot `def` yet");
        fs::create_dir_all(store.snapshot_path("def")).unwrap();
        let (read, snapshot) = store.reuse_hint("slot").unwrap();
        assert_eq!((read, snapshot), (hint(), store.snapshot_path("def")));
        assert!(store.reuse_hint("other slot").is_none());
        store.prune_reuse_hints(&["def".to_string()].into_iter().collect());
        assert!(store.reuse_hint("slot").is_some());
        store.prune_reuse_hints(&Default::default());
        assert!(!store.reuse_path("slot").exists());
    }
}
