//! The image's filesystem as one tree: its layers merged the way a container sees them.
//!
//! Used by `-o type=local` (a directory) and `-o type=tar` (that directory as one tar).
//! Files are copied, or hardlinked when the caller asks (a private work area on the store's
//! filesystem, never a directory the user will edit: a hardlink shares the snapshot's inode).
//! Hardlinks inside the image stay hardlinks.
//!
//! Every entry keeps its extended attributes except overlayfs' own (`trusted.overlay.*`,
//! `user.overlay.*`: layer markers, not content), and `dest` itself gets the metadata of the
//! image's root directory, so the RUN fallback's diff sees nothing changed that the command
//! did not change.

use crate::fsmeta::{copy_xattrs, io_at, set_stamp, Stamp};
use crate::rootfs::{Found, Rootfs};
use crate::ExecError;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How files get into the flattened tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialize {
    /// Each file copied (the tree is independent of the store).
    Copy,
    /// Each file hard-linked to its snapshot (fast; the tree must not be modified).
    Hardlink,
}

/// What a flatten wrote, for progress and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlattenStats {
    /// Entries placed in the tree.
    pub entries: u64,
    /// Bytes of file content placed.
    pub bytes: u64,
}

/// Gives `target` the owner (when root), mode, mtime and xattrs of the entry `found`. As root
/// the xattrs go on after the owner, because chown drops `security.capability`; otherwise they
/// go on before the mode, which may take away the write permission that setting a `user.*`
/// xattr needs (no chown happens then). Setting xattrs does not touch the mtime.
fn finish(target: &Path, found: &Found, is_root: bool) -> Result<(), ExecError> {
    let is_symlink = found.meta.file_type().is_symlink();
    if is_root {
        set_stamp(target, Stamp::of(&found.meta), is_symlink, is_root)?;
        copy_xattrs(&found.path, target, is_root)
    } else {
        copy_xattrs(&found.path, target, is_root)?;
        set_stamp(target, Stamp::of(&found.meta), is_symlink, is_root)
    }
}

/// Writes the merged tree of `rootfs` into `dest` (which must exist and be empty or a fresh
/// directory). Owners are set when running as root; otherwise files belong to the caller.
/// Entries keep their xattrs (overlayfs' own left out; `trusted.*` and `security.*` ones the
/// destination refuses are left out when not root). `dest` gets the mode, owner (when root),
/// mtime and xattrs of the image's root directory, applied last. A hardlinked file
/// ([`Materialize::Hardlink`]) shares the snapshot's inode, and so its metadata, untouched.
pub fn flatten(rootfs: &Rootfs, dest: &Path, how: Materialize) -> Result<FlattenStats, ExecError> {
    flatten_from(rootfs, Path::new(""), dest, how)
}

/// [`flatten`] of the directory `start` (a path inside the image, already resolved) instead of
/// the whole image: its contents land in `dest`, which takes the directory's own metadata.
pub fn flatten_from(
    rootfs: &Rootfs,
    start: &Path,
    dest: &Path,
    how: Materialize,
) -> Result<FlattenStats, ExecError> {
    let mut stats = FlattenStats::default();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let is_root = rustix::process::geteuid().is_root();
    // Directory metadata is applied after their contents are written (writing changes mtime).
    let mut directories: Vec<(PathBuf, Found)> = Vec::new();
    let mut stack = vec![start.to_path_buf()];
    while let Some(relative) = stack.pop() {
        let mut children = Vec::new();
        for name in rootfs.list(&relative) {
            let child = relative.join(&name);
            let Some(found) = rootfs.lstat(&child) else {
                continue;
            };
            let target = dest.join(child.strip_prefix(start).unwrap_or(&child));
            let file_type = found.meta.file_type();
            stats.entries += 1;
            if file_type.is_dir() {
                fs::create_dir(&target).map_err(|e| io_at(&target, e))?;
                directories.push((target, found));
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
                        // After the data: writing drops security.capability.
                        finish(&target, &found, is_root)?;
                    }
                }
            } else if file_type.is_symlink() {
                let link = fs::read_link(&found.path).map_err(|e| io_at(&found.path, e))?;
                std::os::unix::fs::symlink(&link, &target).map_err(|e| io_at(&target, e))?;
                finish(&target, &found, is_root)?;
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
                finish(&target, &found, is_root)?;
            }
        }
        // Reverse so directories are visited in name order.
        stack.extend(children.into_iter().rev());
    }
    for (path, found) in directories.iter().rev() {
        finish(path, found, is_root)?;
    }
    // The image's root directory (the top layer's snapshot root), last: writing into `dest`
    // changed its mtime, and its mode may forbid writing.
    if let Some(root) = rootfs.lstat(start) {
        if root.meta.is_dir() {
            finish(dest, &root, is_root)?;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsmeta::{xattr_names, xattr_value};
    use std::ffi::OsStr;
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

    fn setx(path: &Path, name: &str, value: &[u8]) {
        rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
    }

    fn getx(path: &Path, name: &str) -> Option<Vec<u8>> {
        xattr_value(path, OsStr::new(name)).unwrap()
    }

    fn names(path: &Path) -> Vec<String> {
        let mut names: Vec<String> = xattr_names(path)
            .unwrap()
            .into_iter()
            .map(|n| String::from_utf8(n).unwrap())
            .filter(|n| !n.starts_with("security.selinux"))
            .collect();
        names.sort();
        names
    }

    fn set_mtime(path: &Path, seconds: i64, nanos: i64) {
        let time = rustix::fs::Timespec {
            tv_sec: seconds,
            tv_nsec: nanos,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &rustix::fs::Timestamps {
                last_access: time,
                last_modification: time,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    /// Whether the temp dir's filesystem takes `user.*` xattrs (and, for the `trusted.*`
    /// parts, whether we are root); prints why a test is skipped otherwise.
    fn xattrs_supported() -> bool {
        let probe = tempfile::tempdir().unwrap();
        let file = probe.path().join("probe");
        fs::write(&file, "").unwrap();
        match rustix::fs::lsetxattr(
            &file,
            "user.kiln.probe",
            b"1",
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => {}
            Err(e) => {
                crate::test_skip::skip_or_fail(&format!(
                    "the temp dir's filesystem refuses user xattrs ({e})"
                ));
                return false;
            }
        }
        if !rustix::process::geteuid().is_root() {
            crate::test_skip::skip_or_fail("needs root (trusted.* xattrs, chown)");
            return false;
        }
        true
    }

    #[test]
    fn keeps_xattrs_of_files_dirs_and_links_but_not_overlays() {
        if !xattrs_supported() {
            return;
        }
        let low = tempfile::tempdir().unwrap();
        let high = tempfile::tempdir().unwrap();
        // Lower layer: a file and a directory with xattrs of their own, plus overlay ones.
        fs::create_dir_all(low.path().join("etc")).unwrap();
        fs::write(low.path().join("etc/conf"), "conf").unwrap();
        setx(&low.path().join("etc/conf"), "user.kiln.note", b"file");
        setx(&low.path().join("etc/conf"), "trusted.kiln.t", b"trusted");
        setx(&low.path().join("etc/conf"), "trusted.overlay.origin", b"x");
        setx(&low.path().join("etc/conf"), "user.overlay.origin", b"x");
        setx(&low.path().join("etc"), "user.kiln.dir", b"dir");
        setx(&low.path().join("etc"), "user.overlay.opaque", b"x");
        // Upper layer: an opaque directory (its marker must not reach the tree), a symlink
        // with an xattr (only trusted.* and security.* are allowed on symlinks), and a file
        // owned by someone else whose capability must survive the chown.
        fs::create_dir_all(high.path().join("var")).unwrap();
        fs::write(high.path().join("var/data"), "data").unwrap();
        setx(&high.path().join("var"), "trusted.overlay.opaque", b"y");
        setx(&high.path().join("var"), "user.kiln.dir", b"var");
        std::os::unix::fs::symlink("../etc/conf", high.path().join("var/link")).unwrap();
        setx(&high.path().join("var/link"), "trusted.kiln.link", b"link");
        fs::create_dir_all(high.path().join("bin")).unwrap();
        let ping = high.path().join("bin/ping");
        fs::write(&ping, "ping").unwrap();
        fs::set_permissions(&ping, fs::Permissions::from_mode(0o755)).unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            &ping,
            Some(rustix::fs::Uid::from_raw(1000)),
            Some(rustix::fs::Gid::from_raw(1000)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        // VFS_CAP_REVISION_2 | effective, permitted = cap_net_raw (13).
        let capability: [u8; 20] = [
            0x01, 0, 0, 0x02, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let has_capability = match rustix::fs::lsetxattr(
            &ping,
            "security.capability",
            &capability,
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("security.capability not checked: cannot set it here ({e})");
                false
            }
        };
        setx(&ping, "user.kiln.note", b"ping");
        let view = Rootfs::new(vec![low.path().into(), high.path().into()]);
        for how in [Materialize::Copy, Materialize::Hardlink] {
            let out = tempfile::tempdir().unwrap();
            flatten(&view, out.path(), how).unwrap();
            let conf = out.path().join("etc/conf");
            assert_eq!(getx(&conf, "user.kiln.note").as_deref(), Some(&b"file"[..]));
            assert_eq!(
                getx(&conf, "trusted.kiln.t").as_deref(),
                Some(&b"trusted"[..])
            );
            let etc = out.path().join("etc");
            assert_eq!(names(&etc), ["user.kiln.dir"], "{how:?}");
            assert_eq!(getx(&etc, "user.kiln.dir").as_deref(), Some(&b"dir"[..]));
            let var = out.path().join("var");
            assert_eq!(names(&var), ["user.kiln.dir"], "{how:?}");
            assert_eq!(getx(&var, "user.kiln.dir").as_deref(), Some(&b"var"[..]));
            let link = out.path().join("var/link");
            assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
            assert_eq!(names(&link), ["trusted.kiln.link"], "{how:?}");
            assert_eq!(
                getx(&link, "trusted.kiln.link").as_deref(),
                Some(&b"link"[..])
            );
            let copied = out.path().join("bin/ping");
            let meta = fs::symlink_metadata(&copied).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
            assert_eq!(meta.mode() & 0o7777, 0o755);
            assert_eq!(
                getx(&copied, "user.kiln.note").as_deref(),
                Some(&b"ping"[..])
            );
            if has_capability {
                assert_eq!(
                    getx(&copied, "security.capability").as_deref(),
                    Some(&capability[..]),
                    "{how:?}: the capability survives the copy and the chown"
                );
            }
            if how == Materialize::Copy {
                // A copy, unlike a hardlink, has no overlay xattrs of the snapshot's inode.
                assert_eq!(
                    names(&conf),
                    ["trusted.kiln.t", "user.kiln.note"],
                    "{how:?}"
                );
                assert_ne!(
                    meta.ino(),
                    fs::symlink_metadata(&ping).unwrap().ino(),
                    "a copy"
                );
            }
        }
    }

    #[test]
    fn dest_gets_the_image_roots_metadata() {
        let low = tempfile::tempdir().unwrap();
        let high = tempfile::tempdir().unwrap();
        fs::write(low.path().join("file"), "x").unwrap();
        fs::create_dir(high.path().join("dir")).unwrap();
        fs::set_permissions(low.path(), fs::Permissions::from_mode(0o700)).unwrap();
        set_mtime(low.path(), 1_000_000, 1);
        // The top layer's root is the image's root.
        fs::set_permissions(high.path(), fs::Permissions::from_mode(0o751)).unwrap();
        set_mtime(high.path(), 1_234_567_890, 123_456_789);
        let user_xattrs = xattrs_supported();
        if user_xattrs {
            setx(high.path(), "user.kiln.root", b"root");
            setx(high.path(), "user.overlay.origin", b"x");
        }
        let view = Rootfs::new(vec![low.path().into(), high.path().into()]);
        for how in [Materialize::Copy, Materialize::Hardlink] {
            let out = tempfile::tempdir().unwrap();
            // Leave the tempdir's own mode and time different from the image's root.
            fs::set_permissions(out.path(), fs::Permissions::from_mode(0o700)).unwrap();
            flatten(&view, out.path(), how).unwrap();
            assert!(out.path().join("file").is_file());
            assert!(out.path().join("dir").is_dir());
            let meta = fs::symlink_metadata(out.path()).unwrap();
            let root = fs::symlink_metadata(high.path()).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o751, "{how:?}");
            assert_eq!(
                (meta.mtime(), meta.mtime_nsec()),
                (1_234_567_890, 123_456_789)
            );
            assert_eq!((meta.uid(), meta.gid()), (root.uid(), root.gid()));
            if user_xattrs {
                assert_eq!(names(out.path()), ["user.kiln.root"], "{how:?}");
            }
        }
    }
}
