//! An edit rebuild of a COPY: the files that did not change are hard-linked from the snapshot
//! the same step made last time instead of being copied again.
//!
//! A file is taken from the previous snapshot only when what is there is exactly what the copy
//! would write: the same path, content (SHA-256, from the hint and the build's memo), size,
//! mode, owner and modification time; anything else is copied as before. Extended attributes
//! are not looked at: the copy writes none, and the previous snapshot's files are what that
//! copy wrote (their contents are trusted the same way, by the hashes it recorded). What the
//! system itself puts on every file (a security module's label) a fresh copy gets as well.
//! Snapshots never change once committed and nothing writes into a file it did not create (the
//! copy sets metadata only on files it creates; RUN writes into an overlay's upper directory;
//! squash and flatten link or copy out of snapshots and never stamp a file), so a file shared
//! by two snapshots stays what both say. Two names linked into one snapshot from one inode
//! would become a tar hard link in the layer, so each inode of the previous snapshot is taken
//! at most once, and only for a context file with a single name (files with several names go
//! through the copy's own hard-link handling).

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
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
    /// The directory pairs files were last linked between, most recent last.
    open: Mutex<Vec<std::sync::Arc<DirPair>>>,
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
                open: Mutex::new(Vec::new()),
            }),
            ..SnapshotReuse::default()
        }
    }

    /// Whether there is a previous snapshot to link from (else the copy only records).
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
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
    ///
    /// Every call works on the two parent directories held open (the last few pairs are kept):
    /// each file costs lookups of its name alone, not of the whole snapshot path.
    pub(crate) fn link(
        &self,
        relative: &Path,
        target: &Path,
        wanted: &Wanted,
    ) -> Option<LinkedMeta> {
        let previous = self.previous.as_ref()?;
        if previous.files.get(relative) != Some(&wanted.hash) {
            return None;
        }
        let (Some(name), Some(target_name)) = (relative.file_name(), target.file_name()) else {
            return None;
        };
        let dirs = previous.dirs(relative.parent()?, target.parent()?)?;
        // Linked first and checked after, through the new name: two calls per file (the
        // stat is needed anyway, for the new name's ctime) where opening it to check first
        // took six, on 20,000 files the bulk of an edit's COPY. Something already at the
        // target (a name an earlier source wrote), a link across filesystems or past the
        // inode's link limit: the copy takes over.
        rustix::fs::linkat(
            &dirs.previous,
            name,
            &dirs.target,
            target_name,
            AtFlags::empty(),
        )
        .ok()?;
        let linked = rustix::fs::statx(
            &dirs.target,
            target_name,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        )
        .ok()
        .filter(|meta| is_wanted(meta, wanted))
        .filter(|meta| {
            previous
                .taken
                .lock()
                .is_ok_and(|mut taken| taken.insert(identity(meta)))
        });
        let Some(linked) = linked else {
            // Not what the copy would write (or an inode already taken): the name made here,
            // in the step's private work directory, goes, and the copy writes the file.
            let _ = rustix::fs::unlinkat(&dirs.target, target_name, AtFlags::empty());
            return None;
        };
        self.linked.fetch_add(1, Ordering::Relaxed);
        self.record(relative, wanted.hash);
        Some(LinkedMeta {
            stat: kiln_context::StatKey::of_statx(&linked),
        })
    }
}

/// What a file linked from the previous snapshot is, under its new name.
pub(crate) struct LinkedMeta {
    /// Its key for the memo.
    pub stat: kiln_context::StatKey,
}

/// A directory of the previous snapshot and the directory of the new one its files are
/// linked into, both held open.
struct DirPair {
    /// The directory's path in the previous snapshot.
    relative: PathBuf,
    /// The new snapshot's directory, as the copy names it.
    target_path: PathBuf,
    previous: OwnedFd,
    target: OwnedFd,
}

/// Directory pairs kept open at most: a walk comes back to a directory after the
/// subdirectories sorted between its files.
const OPEN_PAIRS: usize = 8;

impl Previous {
    /// The open pair for files of `relative` (in the previous snapshot) linked into
    /// `target_dir`; `None` when one of them cannot be opened (then the file is copied).
    fn dirs(&self, relative: &Path, target_dir: &Path) -> Option<std::sync::Arc<DirPair>> {
        let mut open = self.open.lock().ok()?;
        if let Some(pair) = open
            .iter()
            .find(|p| p.relative == relative && p.target_path == target_dir)
        {
            return Some(pair.clone());
        }
        // Private directories (the store's snapshot, the step's work directory): opened by
        // path once, the last component never followed.
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let previous = rustix::fs::open(self.root.join(relative), flags, Mode::empty()).ok()?;
        let target = rustix::fs::open(target_dir, flags, Mode::empty()).ok()?;
        let pair = std::sync::Arc::new(DirPair {
            relative: relative.to_path_buf(),
            target_path: target_dir.to_path_buf(),
            previous,
            target,
        });
        if open.len() >= OPEN_PAIRS {
            open.remove(0);
        }
        open.push(pair.clone());
        Some(pair)
    }
}

/// A file's (device, inode).
fn identity(stat: &rustix::fs::Statx) -> (u64, u64) {
    (
        rustix::fs::makedev(stat.stx_dev_major, stat.stx_dev_minor),
        stat.stx_ino,
    )
}

/// Whether a linked file is what the copy would write: a regular file of the wanted size, mode,
/// owner and modification time (its content is the recorded hash's: snapshots never change).
fn is_wanted(meta: &rustix::fs::Statx, wanted: &Wanted) -> bool {
    FileType::from_raw_mode(u32::from(meta.stx_mode)) == FileType::RegularFile
        && meta.stx_size == wanted.size
        && u32::from(meta.stx_mode) & 0o7777 == wanted.mode
        && meta.stx_uid == wanted.uid
        && meta.stx_gid == wanted.gid
        && (meta.stx_mtime.tv_sec, i64::from(meta.stx_mtime.tv_nsec)) == wanted.mtime
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn wanted_of(path: &Path, hash: [u8; 32]) -> Wanted {
        let meta = fs::symlink_metadata(path).unwrap();
        Wanted {
            hash,
            size: meta.size(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }

    /// A previous snapshot of `dirs` directories of `per_dir` files each, and an empty new one
    /// with the same directories.
    fn snapshots(
        dirs: usize,
        per_dir: usize,
    ) -> (tempfile::TempDir, tempfile::TempDir, Vec<PathBuf>) {
        let previous = tempfile::tempdir().unwrap();
        let next = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for d in 0..dirs {
            let dir = PathBuf::from(format!("app/d{d}"));
            fs::create_dir_all(previous.path().join(&dir)).unwrap();
            fs::create_dir_all(next.path().join(&dir)).unwrap();
            for f in 0..per_dir {
                let relative = dir.join(format!("f{f}"));
                fs::write(previous.path().join(&relative), format!("{d} {f}")).unwrap();
                files.push(relative);
            }
        }
        (previous, next, files)
    }

    #[test]
    fn files_of_many_directories_in_any_order_are_linked_with_their_new_names_stat() {
        let (previous, next, files) = snapshots(OPEN_PAIRS * 2 + 1, 3);
        let hash =
            |p: &Path| <[u8; 32]>::from(sha2::Sha256::digest(p.as_os_str().as_encoded_bytes()));
        let reuse = SnapshotReuse::from_previous(
            previous.path().to_path_buf(),
            files.iter().map(|f| (f.clone(), hash(f))).collect(),
        );
        // Back and forth between directories, as a walk comes back to a parent after its
        // subdirectories: more pairs than are kept open.
        let mut order: Vec<&PathBuf> = files.iter().step_by(2).collect();
        order.extend(files.iter().skip(1).step_by(2).rev());
        for relative in &order {
            let wanted = wanted_of(&previous.path().join(relative), hash(relative));
            let target = next.path().join(relative);
            let linked = reuse.link(relative, &target, &wanted).expect("linked");
            let meta = fs::symlink_metadata(&target).unwrap();
            assert_eq!(linked.stat, kiln_context::StatKey::of(&meta));
            assert_eq!(
                meta.ino(),
                fs::symlink_metadata(previous.path().join(relative))
                    .unwrap()
                    .ino()
            );
        }
        assert_eq!(reuse.linked(), files.len() as u64);
        let mut written = reuse.into_written();
        written.sort();
        let mut expected: Vec<_> = files.iter().map(|f| (f.clone(), hash(f))).collect();
        expected.sort();
        assert_eq!(written, expected);
    }

    #[test]
    fn a_file_unlike_what_the_copy_would_write_is_not_linked() {
        let (previous, next, files) = snapshots(1, 9);
        // The last name of the previous snapshot is a symlink, not a file.
        fs::remove_file(previous.path().join(&files[8])).unwrap();
        std::os::unix::fs::symlink("f0", previous.path().join(&files[8])).unwrap();
        let reuse = SnapshotReuse::from_previous(
            previous.path().to_path_buf(),
            files.iter().map(|f| (f.clone(), [1; 32])).collect(),
        );
        let wanted = |i: usize| wanted_of(&previous.path().join(&files[i]), [1; 32]);
        let target = |i: usize| next.path().join(&files[i]);
        // Another content hash, size, mode, owner, group, time (seconds or nanoseconds), or
        // not a regular file: copied, not linked.
        type Change = fn(&mut Wanted);
        let mismatches: [(usize, Change); 8] = [
            (0, |w| w.hash = [2; 32]),
            (1, |w| w.size += 1),
            (2, |w| w.mode ^= 0o100),
            (3, |w| w.mtime.1 += 1),
            (4, |w| w.uid += 1),
            (5, |w| w.gid += 1),
            (6, |w| w.mtime.0 -= 1),
            (8, |_| {}),
        ];
        for (i, change) in mismatches {
            let mut other = wanted(i);
            change(&mut other);
            assert!(
                reuse.link(&files[i], &target(i), &other).is_none(),
                "file {i}"
            );
        }
        // Something at the target already.
        fs::write(target(7), "earlier").unwrap();
        assert!(reuse.link(&files[7], &target(7), &wanted(7)).is_none());
        assert_eq!(fs::read_to_string(target(7)).unwrap(), "earlier");
        assert_eq!(reuse.linked(), 0);
        // Nothing was made but what was there.
        let names: Vec<_> = fs::read_dir(next.path().join("app/d0"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f7"]);
        // A file refused once is not used up: asked again with what it is, it is linked.
        assert!(reuse.link(&files[4], &target(4), &wanted(4)).is_some());
    }

    #[test]
    fn an_inode_is_taken_once() {
        let (previous, next, files) = snapshots(1, 1);
        let reuse = SnapshotReuse::from_previous(
            previous.path().to_path_buf(),
            vec![(files[0].clone(), [3; 32])],
        );
        let wanted = wanted_of(&previous.path().join(&files[0]), [3; 32]);
        assert!(reuse
            .link(&files[0], &next.path().join(&files[0]), &wanted)
            .is_some());
        // The same file again under another name would become a tar hard link.
        assert!(reuse
            .link(&files[0], &next.path().join("app/d0/again"), &wanted)
            .is_none());
        // And the name tried is gone again: the copy writes it.
        assert!(fs::symlink_metadata(next.path().join("app/d0/again")).is_err());
    }
}
