//! An edit rebuild of a COPY: the files that did not change are hard-linked from the snapshot
//! the same step made last time instead of being copied again.
//!
//! A file is taken from the previous snapshot only when what is there is exactly what the copy
//! would write: the same path, content (SHA-256, from the hint and the build's memo), size,
//! mode, owner and modification time, and no extended attributes; anything else is copied as
//! before. Snapshots never change once committed and nothing writes into a file it did not
//! create (the copy sets metadata only on files it creates; RUN writes into an overlay's upper
//! directory; squash and flatten link or copy out of snapshots and never stamp a file), so a
//! file shared by two snapshots stays what both say. Two names linked into one snapshot from
//! one inode would become a tar hard link in the layer, so each inode of the previous
//! snapshot is taken at most once, and only for a context file with a single name (files with
//! several names go through the copy's own hard-link handling).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a COPY may take from the previous snapshot of the same step, and what it wrote (for
/// the next one).
#[derive(Default)]
pub struct SnapshotReuse {
    previous: Option<Previous>,
    written: Mutex<Vec<(PathBuf, [u8; 32])>>,
    linked: AtomicU64,
}

struct Previous {
    root: PathBuf,
    files: HashMap<PathBuf, [u8; 32]>,
    /// Inodes of the previous snapshot already linked into this one.
    taken: Mutex<HashSet<(u64, u64)>>,
}

/// What the copy would write for one file.
pub(crate) struct Wanted {
    pub hash: [u8; 32],
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
}

impl SnapshotReuse {
    /// Nothing to take from: only records what the copy writes.
    pub fn recording() -> Self {
        SnapshotReuse::default()
    }

    /// Takes unchanged files from the snapshot at `root`, whose regular files had the
    /// content hashes `files` (by their path in the snapshot).
    pub fn from_previous(root: PathBuf, files: Vec<(PathBuf, [u8; 32])>) -> Self {
        SnapshotReuse {
            previous: Some(Previous {
                root,
                files: files.into_iter().collect(),
                taken: Mutex::new(HashSet::new()),
            }),
            ..SnapshotReuse::default()
        }
    }

    /// Files linked from the previous snapshot.
    pub fn linked(&self) -> u64 {
        self.linked.load(Ordering::Relaxed)
    }

    /// The regular files the copy wrote whose content it knows, by path in the snapshot.
    pub fn into_written(self) -> Vec<(PathBuf, [u8; 32])> {
        self.written.into_inner().unwrap_or_default()
    }

    /// Forgets what was recorded at or below `relative` (replaced by a later source).
    pub(crate) fn forget(&self, relative: &Path) {
        if let Ok(mut written) = self.written.lock() {
            written.retain(|(path, _)| !path.starts_with(relative));
        }
    }

    pub(crate) fn record(&self, relative: &Path, hash: [u8; 32]) {
        if let Ok(mut written) = self.written.lock() {
            written.push((relative.to_path_buf(), hash));
        }
    }

    /// Links `relative` of the previous snapshot to `target` when it is what the copy would
    /// write there. Returns the new name's metadata when it did.
    pub(crate) fn link(
        &self,
        relative: &Path,
        target: &Path,
        wanted: &Wanted,
    ) -> Option<std::fs::Metadata> {
        let previous = self.previous.as_ref()?;
        if previous.files.get(relative) != Some(&wanted.hash) {
            return None;
        }
        let source = previous.root.join(relative);
        let meta = std::fs::symlink_metadata(&source).ok()?;
        let same = meta.file_type().is_file()
            && meta.len() == wanted.size
            && meta.mode() & 0o7777 == wanted.mode
            && meta.uid() == wanted.uid
            && meta.gid() == wanted.gid
            && (meta.mtime(), meta.mtime_nsec()) == wanted.mtime
            && !has_xattrs(&source);
        if !same {
            return None;
        }
        let inode = (meta.dev(), meta.ino());
        if !previous.taken.lock().ok()?.insert(inode) {
            return None;
        }
        // Something already at the target (a name an earlier source wrote), a link across
        // filesystems or past the inode's link limit: the copy takes over.
        let made = rustix::fs::linkat(
            rustix::fs::CWD,
            &source,
            rustix::fs::CWD,
            target,
            rustix::fs::AtFlags::empty(),
        );
        if made.is_err() {
            if let Ok(mut taken) = previous.taken.lock() {
                taken.remove(&inode);
            }
            return None;
        }
        let linked = std::fs::symlink_metadata(target)
            .ok()
            .filter(|linked| (linked.dev(), linked.ino()) == inode);
        let Some(linked) = linked else {
            // Not what was linked (cannot happen in a private work directory): copy instead.
            let _ = std::fs::remove_file(target);
            return None;
        };
        self.linked.fetch_add(1, Ordering::Relaxed);
        self.record(relative, wanted.hash);
        Some(linked)
    }
}

/// Whether the file has any extended attribute (a COPY writes none).
fn has_xattrs(path: &Path) -> bool {
    let mut names = [0u8; 256];
    !matches!(rustix::fs::llistxattr(path, &mut names), Ok(0))
}
