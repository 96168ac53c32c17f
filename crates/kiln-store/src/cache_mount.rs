//! `RUN --mount=type=cache` directories: one per cache id under `cache-mounts/`, each with a
//! lock file its users hold while they use it (shared together, `locked` alone).

use crate::{io_at, Result, Store};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The directory under the store's root that holds the cache mounts.
pub(crate) const CACHE_MOUNTS_DIR: &str = "cache-mounts";

/// One cache mount of the store: where its files live and its lock file, open but not locked.
#[derive(Debug)]
pub struct CacheMount {
    dir: PathBuf,
    lock_path: PathBuf,
    lock: File,
}

impl Store {
    /// The cache mount `id` (its directory may not exist yet; its parent does), with its lock
    /// file opened. Ids are hashed, so any id names a path inside the store.
    pub fn cache_mount(&self, id: &str) -> Result<CacheMount> {
        let mounts = self.root().join(CACHE_MOUNTS_DIR);
        std::fs::create_dir_all(&mounts).map_err(io_at(&mounts))?;
        let hex = kiln_oci::sha256_digest(id.as_bytes()).hex().to_string();
        let lock_path = mounts.join(format!("{hex}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        Ok(CacheMount {
            dir: mounts.join(hex),
            lock_path,
            lock,
        })
    }
}

impl CacheMount {
    /// The directory the mount's files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for the lock alone (a `sharing=locked` user, or a restore filling the directory).
    pub fn lock_exclusive(&self) -> Result<()> {
        self.lock.lock().map_err(io_at(&self.lock_path))
    }

    /// Waits for the lock beside the other shared users.
    pub fn lock_shared(&self) -> Result<()> {
        self.lock.lock_shared().map_err(io_at(&self.lock_path))
    }

    /// Takes the lock alone if nobody holds it; `false` when someone does.
    pub fn try_lock_exclusive(&self) -> bool {
        self.lock.try_lock().is_ok()
    }

    /// The lock file, to hold (and with it the lock) for as long as the mount is used.
    pub fn into_lock(self) -> File {
        self.lock
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cache_mount_dirs_are_per_id_inside_the_store_and_locks_exclude() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let a = store.cache_mount("/root/.cache").unwrap();
        let b = store.cache_mount("../../etc").unwrap();
        assert_ne!(a.dir(), b.dir());
        for mount in [&a, &b] {
            assert!(mount.dir().starts_with(root.path().join(CACHE_MOUNTS_DIR)));
        }
        a.lock_exclusive().unwrap();
        let again = store.cache_mount("/root/.cache").unwrap();
        assert_eq!(again.dir(), a.dir());
        assert!(!again.try_lock_exclusive(), "a held lock excludes others");
        drop(a);
        assert!(again.try_lock_exclusive());
    }
}
