//! Small filesystem facts and edits shared by COPY, flattening and squashing: overlay markers,
//! and setting an entry's owner, mode and time without ever following a symlink.

use crate::BuildError;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

pub(crate) fn io_at(path: &Path, error: io::Error) -> BuildError {
    BuildError::Io {
        path: path.to_path_buf(),
        source: error,
    }
}

/// An overlayfs whiteout: a character device 0/0.
pub(crate) fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// An overlayfs opaque directory (`trusted.` or `user.overlay.opaque` = `y`).
pub(crate) fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut value = [0u8; 4];
            matches!(rustix::fs::lgetxattr(dir, *name, &mut value), Ok(1) if value[0] == b'y')
        })
}

/// Owner and times of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
}

impl Stamp {
    pub(crate) fn of(meta: &fs::Metadata) -> Self {
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
pub(crate) fn set_stamp(
    path: &Path,
    stamp: Stamp,
    is_symlink: bool,
    chown: bool,
) -> Result<(), BuildError> {
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
                BuildError::Unsupported(format!(
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
