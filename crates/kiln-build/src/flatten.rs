//! The image's filesystem as one tree: its layers merged the way a container sees them.
//!
//! Used by `-o type=local` (a directory) and `-o type=tar` (that directory as one tar).
//! Files are copied, or hardlinked when the caller asks (a private work area on the store's
//! filesystem, never a directory the user will edit: a hardlink shares the snapshot's inode).
//! Hardlinks inside the image stay hardlinks.

use crate::fsmeta::{io_at, set_stamp, Stamp};
use crate::rootfs::Rootfs;
use crate::BuildError;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How files get into the flattened tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialize {
    Copy,
    Hardlink,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlattenStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Writes the merged tree of `rootfs` into `dest` (which must exist and be empty or a fresh
/// directory). Owners are set when running as root; otherwise files belong to the caller.
pub fn flatten(rootfs: &Rootfs, dest: &Path, how: Materialize) -> Result<FlattenStats, BuildError> {
    let mut stats = FlattenStats::default();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let is_root = rustix::process::geteuid().is_root();
    // Directory metadata is applied after their contents are written (writing changes mtime).
    let mut directories: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let mut children = Vec::new();
        for name in rootfs.list(&relative) {
            let child = relative.join(&name);
            let Some(found) = rootfs.lstat(&child) else {
                continue;
            };
            let target = dest.join(&child);
            let file_type = found.meta.file_type();
            stats.entries += 1;
            if file_type.is_dir() {
                fs::create_dir(&target).map_err(|e| io_at(&target, e))?;
                directories.push((target, found.meta.clone()));
                children.push(child);
                continue;
            }
            if file_type.is_file() && found.meta.nlink() > 1 {
                let key = (found.meta.dev(), found.meta.ino());
                if let Some(first) = links.get(&key) {
                    fs::hard_link(first, &target).map_err(|e| io_at(&target, e))?;
                    continue;
                }
                links.insert(key, target.clone());
            }
            if file_type.is_file() {
                match how {
                    Materialize::Hardlink => {
                        fs::hard_link(&found.path, &target).map_err(|e| io_at(&target, e))?
                    }
                    Materialize::Copy => {
                        let mut input =
                            File::open(&found.path).map_err(|e| io_at(&found.path, e))?;
                        let mut output = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                            .open(&target)
                            .map_err(|e| io_at(&target, e))?;
                        stats.bytes +=
                            io::copy(&mut input, &mut output).map_err(|e| io_at(&target, e))?;
                        drop(output);
                        set_stamp(&target, Stamp::of(&found.meta), false, is_root)?;
                    }
                }
            } else if file_type.is_symlink() {
                let link = fs::read_link(&found.path).map_err(|e| io_at(&found.path, e))?;
                std::os::unix::fs::symlink(&link, &target).map_err(|e| io_at(&target, e))?;
                set_stamp(&target, Stamp::of(&found.meta), true, is_root)?;
            } else if (file_type.is_char_device()
                || file_type.is_block_device()
                || file_type.is_fifo())
                && is_root
            {
                let kind = if file_type.is_char_device() {
                    rustix::fs::FileType::CharacterDevice
                } else if file_type.is_block_device() {
                    rustix::fs::FileType::BlockDevice
                } else {
                    rustix::fs::FileType::Fifo
                };
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    kind,
                    rustix::fs::Mode::from_raw_mode(found.meta.mode() & 0o7777),
                    found.meta.rdev(),
                )
                .map_err(|e| io_at(&target, e.into()))?;
                set_stamp(&target, Stamp::of(&found.meta), false, is_root)?;
            }
        }
        // Reverse so directories are visited in name order.
        stack.extend(children.into_iter().rev());
    }
    for (path, meta) in directories.iter().rev() {
        set_stamp(path, Stamp::of(meta), false, is_root)?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn merges_layers_and_keeps_links_modes_and_times() {
        let low = tempfile::tempdir().unwrap();
        let high = tempfile::tempdir().unwrap();
        fs::create_dir_all(low.path().join("etc")).unwrap();
        fs::write(low.path().join("etc/a"), "low").unwrap();
        fs::write(low.path().join("etc/b"), "low-b").unwrap();
        fs::create_dir_all(high.path().join("etc")).unwrap();
        fs::write(high.path().join("etc/a"), "high").unwrap();
        fs::hard_link(high.path().join("etc/a"), high.path().join("etc/a-link")).unwrap();
        std::os::unix::fs::symlink("a", high.path().join("etc/sym")).unwrap();
        fs::set_permissions(high.path().join("etc/a"), fs::Permissions::from_mode(0o751)).unwrap();
        let view = Rootfs::new(vec![low.path().into(), high.path().into()]);
        let out = tempfile::tempdir().unwrap();
        flatten(&view, out.path(), Materialize::Copy).unwrap();
        assert_eq!(
            fs::read_to_string(out.path().join("etc/a")).unwrap(),
            "high"
        );
        assert_eq!(
            fs::read_to_string(out.path().join("etc/b")).unwrap(),
            "low-b"
        );
        assert_eq!(
            fs::read_link(out.path().join("etc/sym")).unwrap(),
            Path::new("a")
        );
        let a = fs::metadata(out.path().join("etc/a")).unwrap();
        let link = fs::metadata(out.path().join("etc/a-link")).unwrap();
        assert_eq!(a.ino(), link.ino(), "hardlinks in the image stay hardlinks");
        assert_eq!(a.mode() & 0o7777, 0o751);
        assert_ne!(
            a.ino(),
            fs::metadata(high.path().join("etc/a")).unwrap().ino(),
            "copies, not links to the store"
        );
    }
}
