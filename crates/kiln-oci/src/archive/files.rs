//! Where the files of an image layout lie: in a tar archive ([`TarIndex`]) or in a directory
//! ([`LayoutDir`]). The OCI reader works on either through [`Files`].

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::tar_in::{normalize, TarIndex};
use crate::error::io_ctx;
use crate::json::{parse_json, read_bounded};
use crate::{Error, Result, MAX_JSON_SIZE};

/// One regular file of an archive or layout directory.
#[derive(Debug, Clone)]
pub(crate) enum Extent {
    /// `size` bytes at `offset` in the archive.
    InTar { offset: u64, size: u64 },
    /// A file of the directory (its resolved path, inside the directory) and the size it had
    /// when it was looked up; readers take no more than that.
    InDir { path: PathBuf, size: u64 },
}

impl Extent {
    pub(crate) fn size(&self) -> u64 {
        match self {
            Extent::InTar { size, .. } | Extent::InDir { size, .. } => *size,
        }
    }
}

/// An image layout's files, untrusted.
#[derive(Debug)]
pub(crate) enum Files {
    Tar(TarIndex),
    Dir(LayoutDir),
}

impl Files {
    /// The archive file or the directory.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Files::Tar(t) => t.path(),
            Files::Dir(d) => &d.root,
        }
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            Files::Tar(t) => t.contains(name),
            Files::Dir(d) => d.resolve(name).is_ok(),
        }
    }

    /// Where the regular file `name` lies.
    pub(crate) fn resolve(&self, name: &str) -> Result<Extent> {
        match self {
            Files::Tar(t) => t
                .resolve(name)
                .map(|(offset, size)| Extent::InTar { offset, size }),
            Files::Dir(d) => d.resolve(name),
        }
    }

    /// A reader over the extent's bytes (at most its size), on a file handle of its own.
    pub(crate) fn open(&self, extent: &Extent) -> Result<io::Take<BufReader<File>>> {
        match (self, extent) {
            (Files::Tar(t), Extent::InTar { offset, size }) => t.open_range(*offset, *size),
            (Files::Dir(_), Extent::InDir { path, size }) => {
                let file =
                    File::open(path).map_err(io_ctx(format!("opening {}", path.display())))?;
                Ok(BufReader::new(file).take(*size))
            }
            _ => Err(Error::InvalidArchive(
                "internal: an extent of another archive".into(),
            )),
        }
    }

    /// The bytes of a small file (at most [`MAX_JSON_SIZE`]).
    pub(crate) fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let extent = self.resolve(name)?;
        if extent.size() > MAX_JSON_SIZE {
            return Err(Error::TooLarge {
                what: name.into(),
                size: extent.size(),
                limit: MAX_JSON_SIZE,
            });
        }
        read_bounded(self.open(&extent)?, MAX_JSON_SIZE, name)
    }

    pub(crate) fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        parse_json(name, &self.read_small(name)?)
    }
}

/// An OCI image layout directory. Names are resolved inside it: `..`, absolute names and
/// symlinks that lead out of the directory are refused, and only regular files are read.
#[derive(Debug)]
pub(crate) struct LayoutDir {
    /// Canonical.
    root: PathBuf,
}

impl LayoutDir {
    pub(crate) fn open(dir: &Path) -> Result<LayoutDir> {
        let root = std::fs::canonicalize(dir).map_err(io_ctx(format!(
            "opening layout directory {}",
            dir.display()
        )))?;
        if !root.is_dir() {
            return Err(Error::InvalidArchive(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(LayoutDir { root })
    }

    fn resolve(&self, name: &str) -> Result<Extent> {
        let key = normalize(name)?;
        if key.is_empty() {
            return Err(Error::UnsafePath(name.into()));
        }
        let joined = self.root.join(&key);
        let path = match std::fs::canonicalize(&joined) {
            Ok(path) => path,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::MissingEntry(key)),
            Err(e) => return Err(io_ctx(format!("reading {}", joined.display()))(e)),
        };
        if !path.starts_with(&self.root) {
            return Err(Error::UnsafePath(format!(
                "{key} (a link out of the layout directory)"
            )));
        }
        let meta =
            std::fs::metadata(&path).map_err(io_ctx(format!("reading {}", path.display())))?;
        if !meta.is_file() {
            return Err(Error::InvalidArchive(format!(
                "{key:?} is not a regular file"
            )));
        }
        Ok(Extent::InDir {
            path,
            size: meta.len(),
        })
    }
}
