//! Small filesystem facts and edits shared by COPY, flattening and squashing: overlay markers,
//! extended attributes (listing, reading, copying), and setting an entry's owner, mode and time
//! without ever following a symlink.

use crate::ExecError;
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub fn io_at(path: &Path, error: io::Error) -> ExecError {
    ExecError::Io {
        path: path.to_path_buf(),
        source: error,
    }
}

/// Prefix of a whiteout in OCI form: the empty regular file `.wh.NAME` deletes `NAME`.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The empty regular file that marks its directory opaque, in OCI form.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// An overlayfs whiteout: a character device 0/0. A snapshot may also hold the OCI form
/// (see [`whiteout_of`]), written where the overlay form is refused.
pub fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// The name a directory entry `name` (lstat'ed as `meta`) deletes, if it is a whiteout: a
/// char device 0/0 deletes its own name, an empty regular file `.wh.NAME` deletes `NAME`.
pub fn whiteout_of<'a>(name: &'a OsStr, meta: &fs::Metadata) -> Option<&'a OsStr> {
    if is_whiteout(meta) {
        return Some(name);
    }
    if is_opaque_marker(name, meta) || !meta.is_file() || meta.len() != 0 {
        return None;
    }
    let hidden = name.as_bytes().strip_prefix(WHITEOUT_PREFIX)?;
    (!hidden.is_empty()).then(|| OsStr::from_bytes(hidden))
}

/// Whether a directory entry is the OCI-form opaque marker of its directory.
pub fn is_opaque_marker(name: &OsStr, meta: &fs::Metadata) -> bool {
    name.as_bytes() == OPAQUE_MARKER && meta.is_file() && meta.len() == 0
}

/// The OCI-form whiteout file that deletes `path` (`parent/.wh.NAME`).
pub fn oci_whiteout_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let mut marker = WHITEOUT_PREFIX.to_vec();
    marker.extend_from_slice(name.as_bytes());
    Some(path.with_file_name(OsStr::from_bytes(&marker)))
}

/// The whiteout deleting `path` in its snapshot directory, in either form, if there is one.
pub fn find_whiteout(path: &Path) -> Option<(PathBuf, fs::Metadata)> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        return is_whiteout(&meta).then(|| (path.to_path_buf(), meta));
    }
    let marker = oci_whiteout_path(path)?;
    let meta = fs::symlink_metadata(&marker).ok()?;
    let name = marker.file_name()?;
    whiteout_of(name, &meta).is_some().then_some((marker, meta))
}

fn refused(error: Errno) -> bool {
    // ENOTSUP and EOPNOTSUPP are one value on Linux.
    matches!(error, Errno::PERM | Errno::NOTSUP)
}

fn create_empty(path: &Path) -> Result<(), ExecError> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map(drop)
        .map_err(|e| io_at(path, e))
}

/// Makes a whiteout deleting `path`: a char device 0/0 there, or, where that is refused
/// (overlayfs refuses it), the empty file `.wh.NAME` beside it. Returns the marker's path.
pub fn make_whiteout(path: &Path) -> Result<PathBuf, ExecError> {
    match rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    ) {
        Ok(()) => Ok(path.to_path_buf()),
        Err(e) if refused(e) => {
            let marker = oci_whiteout_path(path).ok_or_else(|| io_at(path, e.into()))?;
            create_empty(&marker)?;
            Ok(marker)
        }
        Err(e) => Err(io_at(path, e.into())),
    }
}

/// Marks `dir` opaque: the xattr `xattr` = `y`, or, where setting it is refused, the empty
/// file `.wh..wh..opq` in it (kept if already there). Returns whether the OCI file is used
/// (then the directory's entries, and so its mtime, may have changed).
pub fn make_opaque(dir: &Path, xattr: &str) -> Result<bool, ExecError> {
    match rustix::fs::lsetxattr(dir, xattr, b"y", rustix::fs::XattrFlags::empty()) {
        Ok(()) => Ok(false),
        Err(e) if refused(e) => {
            let marker = dir.join(OsStr::from_bytes(OPAQUE_MARKER));
            match fs::symlink_metadata(&marker) {
                Ok(meta) if is_opaque_marker(OsStr::from_bytes(OPAQUE_MARKER), &meta) => {}
                _ => create_empty(&marker)?,
            }
            Ok(true)
        }
        Err(e) => Err(xattr_error(dir, e)),
    }
}

/// Removes the OCI-form opaque marker of `dir`, if any. Returns whether there was one.
pub fn remove_opaque_marker(dir: &Path) -> Result<bool, ExecError> {
    let marker = dir.join(OsStr::from_bytes(OPAQUE_MARKER));
    match fs::symlink_metadata(&marker) {
        Ok(meta) if is_opaque_marker(OsStr::from_bytes(OPAQUE_MARKER), &meta) => {
            fs::remove_file(&marker).map_err(|e| io_at(&marker, e))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// An opaque directory: `trusted.` or `user.overlay.opaque` = `y`, or an empty regular file
/// `.wh..wh..opq` in it.
pub fn is_opaque(dir: &Path) -> bool {
    let xattr = ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut value = [0u8; 4];
            matches!(rustix::fs::lgetxattr(dir, *name, &mut value), Ok(1) if value[0] == b'y')
        });
    xattr
        || fs::symlink_metadata(dir.join(OsStr::from_bytes(OPAQUE_MARKER)))
            .is_ok_and(|meta| is_opaque_marker(OsStr::from_bytes(OPAQUE_MARKER), &meta))
}

/// The part of an overlayfs xattr name after `trusted.overlay.` or `user.overlay.` (`opaque`,
/// `redirect`, `origin`...); `None` for any other name.
pub fn overlay_xattr_key(name: &[u8]) -> Option<&[u8]> {
    name.strip_prefix(b"trusted.overlay.")
        .or_else(|| name.strip_prefix(b"user.overlay."))
}

/// Overlayfs' own xattrs (opaque markers, redirects, origins...): layer markers, not content.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    overlay_xattr_key(name).is_some()
}

/// Whether an xattr the destination refused may be left out: only a `trusted.*` or
/// `security.*` one, refused as unsupported or not permitted, when not running as root
/// (such attributes need privileges a plain user does not have).
pub fn may_skip_xattr(name: &[u8], error: Errno, is_root: bool) -> bool {
    !is_root
        && matches!(error, Errno::NOTSUP | Errno::PERM)
        && (name.starts_with(b"trusted.") || name.starts_with(b"security."))
}

pub fn xattr_error(path: &Path, error: Errno) -> ExecError {
    io_at(path, error.into())
}

/// The xattr names of `path` (never following a symlink), as listed. A filesystem without
/// xattrs has none.
pub fn xattr_names(path: &Path) -> Result<Vec<Vec<u8>>, ExecError> {
    let mut list = Vec::new();
    loop {
        let size = match rustix::fs::llistxattr_query(path) {
            Ok(n) => n,
            Err(Errno::NOTSUP | Errno::NOSYS) => return Ok(Vec::new()),
            Err(e) => return Err(xattr_error(path, e)),
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        list.resize(size, 0);
        match rustix::fs::llistxattr(path, &mut list[..]) {
            Ok(n) => {
                list.truncate(n);
                break;
            }
            // The list grew between the two calls.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(xattr_error(path, e)),
        }
    }
    Ok(list
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// The value of the xattr `name` of `path` (never following a symlink), `None` when it went
/// away since it was listed.
pub fn xattr_value(path: &Path, name: &OsStr) -> Result<Option<Vec<u8>>, ExecError> {
    let mut value = Vec::new();
    loop {
        let size = match rustix::fs::lgetxattr_query(path, name) {
            Ok(n) => n,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(xattr_error(path, e)),
        };
        value.resize(size, 0);
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(Some(value));
            }
            // The value grew between the two calls.
            Err(Errno::RANGE) => continue,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(xattr_error(path, e)),
        }
    }
}

/// Copies the xattrs of `from` to `to` (neither followed if a symlink), overlayfs' own left
/// out, and so is one that went away since it was listed. A refusal to set one is an error,
/// unless [`may_skip_xattr`] (never when `is_root`).
pub fn copy_xattrs(from: &Path, to: &Path, is_root: bool) -> Result<(), ExecError> {
    for name in xattr_names(from)? {
        if is_overlay_xattr(&name) {
            continue;
        }
        let name_os = OsStr::from_bytes(&name);
        let Some(value) = xattr_value(from, name_os)? else {
            continue;
        };
        match rustix::fs::lsetxattr(to, name_os, &value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(e) if may_skip_xattr(&name, e, is_root) => {}
            Err(e) => return Err(xattr_error(to, e)),
        }
    }
    Ok(())
}

/// Owner and times of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
}

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Self {
        Stamp {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// Sets owner (when `chown`), mode (not on symlinks) and mtime, never following a symlink.
/// The mode goes on after the owner because chown clears setuid/setgid.
pub fn set_stamp(
    path: &Path,
    stamp: Stamp,
    is_symlink: bool,
    chown: bool,
) -> Result<(), ExecError> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    if chown {
        rustix::fs::chownat(
            CWD,
            path,
            Some(rustix::fs::Uid::from_raw(stamp.uid)),
            Some(rustix::fs::Gid::from_raw(stamp.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| {
            if e == rustix::io::Errno::PERM {
                ExecError::Unsupported(format!(
                    "cannot give {} to {}:{}: building as a user other than root needs user namespaces, which come with RUN support; run kiln as root for now",
                    path.display(),
                    stamp.uid,
                    stamp.gid
                ))
            } else {
                io_at(path, e.into())
            }
        })?;
    }
    if !is_symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(stamp.mode))
            .map_err(|e| io_at(path, e))?;
    }
    let time = Timespec {
        tv_sec: stamp.mtime.0,
        tv_nsec: stamp.mtime.1,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: time,
            last_modification: time,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_at(path, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_privileged_xattrs_may_be_skipped_and_only_when_not_root() {
        assert!(may_skip_xattr(b"trusted.x", Errno::PERM, false));
        assert!(may_skip_xattr(b"security.capability", Errno::NOTSUP, false));
        assert!(!may_skip_xattr(b"security.capability", Errno::PERM, true));
        assert!(!may_skip_xattr(b"trusted.x", Errno::NOTSUP, true));
        assert!(!may_skip_xattr(b"user.x", Errno::NOTSUP, false));
        assert!(!may_skip_xattr(b"user.x", Errno::PERM, false));
        assert!(!may_skip_xattr(b"trusted.x", Errno::IO, false));
        assert!(!may_skip_xattr(
            b"system.posix_acl_access",
            Errno::PERM,
            false
        ));
    }

    #[test]
    fn overlay_xattrs_are_the_trusted_and_user_overlay_namespaces() {
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.overlay.redirect"));
        assert!(!is_overlay_xattr(b"user.overlayish"));
        assert!(!is_overlay_xattr(b"security.overlay.x"));
        assert_eq!(
            overlay_xattr_key(b"trusted.overlay.metacopy"),
            Some(&b"metacopy"[..])
        );
        assert_eq!(overlay_xattr_key(b"user.kiln.test"), None);
    }
}
