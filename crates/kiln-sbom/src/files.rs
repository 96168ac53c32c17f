//! How the scanner reads the image.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use kiln_context::{resolve_scoped, DirTree, ScopeError};

use crate::{Error, Result};

/// The final image's filesystem as the scanner sees it. Paths are absolute inside the image
/// (`/var/lib/dpkg/status`); symlinks are resolved inside the image, never on the host.
pub trait ImageFiles {
    /// The first `limit + 1` bytes at most of the regular file at `path`, or `None` when there
    /// is no regular file there. Reading one byte more than `limit` lets the caller tell a file
    /// that is too large from one that fits.
    fn read(&self, path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>>;

    /// The names in the directory at `path`, in any order; `None` when it is not a directory.
    fn list(&self, path: &Path) -> io::Result<Option<Vec<OsString>>>;

    /// The index (0 = bottom) of the layer the entry at `path` comes from, or `None` when the
    /// image has no such entry. A single-directory image says `Some(0)` for every entry.
    fn layer_of(&self, path: &Path) -> Option<usize>;
}

/// Reads `path` with [`ImageFiles::read`] and refuses a file over `limit`.
pub(crate) fn read_capped(
    image: &dyn ImageFiles,
    path: &Path,
    limit: u64,
) -> Result<Option<Vec<u8>>> {
    let bytes = image.read(path, limit).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    match bytes {
        Some(bytes) if bytes.len() as u64 > limit => Err(Error::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
        }),
        other => Ok(other),
    }
}

/// Lists `path` with [`ImageFiles::list`], sorted so the scan order is stable.
pub(crate) fn list_sorted(image: &dyn ImageFiles, path: &Path) -> Result<Vec<OsString>> {
    let mut names = image
        .list(path)
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

/// An image root unpacked in one directory (every entry is in layer 0).
#[derive(Debug, Clone)]
pub struct DirImage {
    root: PathBuf,
}

impl DirImage {
    pub fn new(root: impl Into<PathBuf>) -> DirImage {
        DirImage { root: root.into() }
    }

    /// The host path of `path` inside the root, symlinks resolved inside it; `None` when it
    /// does not exist, or is a symlink loop (an image's odd link must not stop its SBOM).
    fn resolve(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        match resolve_scoped(&DirTree(&self.root), path, true) {
            Ok((relative, exists)) => Ok(exists.then(|| self.root.join(relative))),
            Err(ScopeError::TooManyLinks(_)) => Ok(None),
            Err(ScopeError::Io { source, .. }) => Err(source),
        }
    }
}

impl ImageFiles for DirImage {
    fn read(&self, path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(host) = self.resolve(path)? else {
            return Ok(None);
        };
        if !fs::symlink_metadata(&host)?.is_file() {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        fs::File::open(&host)?
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    fn list(&self, path: &Path) -> io::Result<Option<Vec<OsString>>> {
        let Some(host) = self.resolve(path)? else {
            return Ok(None);
        };
        if !fs::symlink_metadata(&host)?.is_dir() {
            return Ok(None);
        }
        let mut names = Vec::new();
        for entry in fs::read_dir(&host)? {
            names.push(entry?.file_name());
        }
        Ok(Some(names))
    }

    fn layer_of(&self, path: &Path) -> Option<usize> {
        matches!(self.resolve(path), Ok(Some(_))).then_some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"host file").unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("usr/lib")).unwrap();
        fs::write(root.path().join("usr/lib/os-release"), b"ID=x\n").unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", root.path().join("etc/os-release"))
            .unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            root.path().join("etc/escape"),
        )
        .unwrap();
        let image = DirImage::new(root.path());
        assert_eq!(
            image.read(Path::new("/etc/os-release"), 100).unwrap(),
            Some(b"ID=x\n".to_vec())
        );
        // An absolute link target is taken inside the root, where it does not exist.
        assert_eq!(image.read(Path::new("/etc/escape"), 100).unwrap(), None);
        assert_eq!(image.layer_of(Path::new("/etc/escape")), None);
        assert_eq!(image.layer_of(Path::new("/etc/os-release")), Some(0));
        assert_eq!(image.read(Path::new("/etc"), 100).unwrap(), None);
        // A link loop reads as nothing there, so the rest of the scan goes on.
        std::os::unix::fs::symlink("loop", root.path().join("etc/loop")).unwrap();
        assert_eq!(image.read(Path::new("/etc/loop"), 100).unwrap(), None);
        assert_eq!(image.list(Path::new("/etc/loop")).unwrap(), None);
    }

    #[test]
    fn reads_stop_one_byte_past_the_limit() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("big"), vec![b'x'; 100]).unwrap();
        let image = DirImage::new(root.path());
        assert_eq!(
            image.read(Path::new("/big"), 10).unwrap().unwrap().len(),
            11
        );
        assert!(matches!(
            read_capped(&image, Path::new("/big"), 10),
            Err(Error::TooLarge { limit: 10, .. })
        ));
    }
}
