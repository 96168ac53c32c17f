//! An index of an untrusted tar archive on disk: every entry's normalised path and where its
//! content lies, so documents and blobs can be read back by seeking. Entry names that are
//! absolute or contain `..` make the whole archive refused; links are followed only inside it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::io_ctx;
use crate::json::{parse_json, read_bounded};
use crate::{Error, Result, MAX_JSON_SIZE};

const MAX_LINK_HOPS: usize = 16;
const MAX_ENTRIES: usize = 1_000_000;

#[derive(Debug, Clone)]
enum Node {
    File { offset: u64, size: u64 },
    Symlink(String),
    Hardlink(String),
    Dir,
    Other,
}

#[derive(Debug)]
pub(crate) struct TarIndex {
    path: PathBuf,
    entries: BTreeMap<String, Node>,
}

impl TarIndex {
    pub(crate) fn scan(path: &Path) -> Result<TarIndex> {
        let ctx = || format!("reading archive {}", path.display());
        let mut file = File::open(path).map_err(io_ctx(ctx()))?;
        let mut head = [0u8; 6];
        let n = read_up_to(&mut file, &mut head).map_err(io_ctx(ctx()))?;
        if let Some(kind) = compression_name(&head[..n]) {
            return Err(Error::InvalidArchive(format!(
                "{} is {kind}-compressed; decompress it first",
                path.display()
            )));
        }
        file.seek(SeekFrom::Start(0)).map_err(io_ctx(ctx()))?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut entries = BTreeMap::new();
        for entry in archive.entries_with_seek().map_err(io_ctx(ctx()))? {
            let entry = entry.map_err(io_ctx(ctx()))?;
            let kind = entry.header().entry_type();
            if matches!(kind, tar::EntryType::XGlobalHeader) {
                continue;
            }
            let raw = entry.path_bytes();
            let name = std::str::from_utf8(&raw)
                .map_err(|_| Error::UnsafePath(String::from_utf8_lossy(&raw).into_owned()))?;
            let key = normalize(name)?;
            let node = match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => Node::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry.link_name_bytes().ok_or_else(|| {
                        Error::InvalidArchive(format!("link {name:?} has no target"))
                    })?;
                    let target = std::str::from_utf8(&target)
                        .map_err(|_| {
                            Error::UnsafePath(String::from_utf8_lossy(&target).into_owned())
                        })?
                        .to_owned();
                    if matches!(kind, tar::EntryType::Link) {
                        Node::Hardlink(normalize(&target)?)
                    } else {
                        Node::Symlink(target)
                    }
                }
                _ => Node::Other,
            };
            if key.is_empty() {
                continue; // "./": the archive's root directory
            }
            let is_dir = matches!(node, Node::Dir);
            if let Some(prev) = entries.insert(key.clone(), node) {
                if !(is_dir && matches!(prev, Node::Dir)) {
                    return Err(Error::InvalidArchive(format!("duplicate entry {key:?}")));
                }
            }
            if entries.len() > MAX_ENTRIES {
                return Err(Error::InvalidArchive(format!(
                    "more than {MAX_ENTRIES} entries"
                )));
            }
        }
        Ok(TarIndex {
            path: path.to_owned(),
            entries,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        normalize(name).is_ok_and(|k| self.entries.contains_key(&k))
    }

    /// Where the regular file `name` (after following links inside the archive) lies.
    pub(crate) fn resolve(&self, name: &str) -> Result<(u64, u64)> {
        let mut cur = normalize(name)?;
        if cur.is_empty() {
            return Err(Error::UnsafePath(name.into()));
        }
        for _ in 0..MAX_LINK_HOPS {
            match self.entries.get(&cur) {
                None => return Err(Error::MissingEntry(cur)),
                Some(Node::File { offset, size }) => return Ok((*offset, *size)),
                Some(Node::Hardlink(target)) => cur = target.clone(),
                Some(Node::Symlink(target)) => cur = resolve_symlink(&cur, target)?,
                Some(Node::Dir | Node::Other) => {
                    return Err(Error::InvalidArchive(format!(
                        "{cur:?} is not a regular file"
                    )))
                }
            }
        }
        Err(Error::InvalidArchive(format!(
            "too many levels of links at {name:?}"
        )))
    }

    /// A reader over `size` bytes at `offset`, on a file handle of its own.
    pub(crate) fn open_range(&self, offset: u64, size: u64) -> Result<io::Take<BufReader<File>>> {
        let ctx = || format!("reading archive {}", self.path.display());
        let mut file = File::open(&self.path).map_err(io_ctx(ctx()))?;
        file.seek(SeekFrom::Start(offset)).map_err(io_ctx(ctx()))?;
        Ok(BufReader::new(file).take(size))
    }

    /// The bytes of a small file (at most [`MAX_JSON_SIZE`]).
    pub(crate) fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let (offset, size) = self.resolve(name)?;
        if size > MAX_JSON_SIZE {
            return Err(Error::TooLarge {
                what: name.into(),
                size,
                limit: MAX_JSON_SIZE,
            });
        }
        read_bounded(self.open_range(offset, size)?, MAX_JSON_SIZE, name)
    }

    pub(crate) fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        parse_json(name, &self.read_small(name)?)
    }
}

/// Normalises an archive path: `./a//b` → `a/b`. Absolute paths, `..` components, NUL and
/// backslashes are refused.
pub(crate) fn normalize(name: &str) -> Result<String> {
    if name.starts_with('/') || name.contains(['\0', '\\']) {
        return Err(Error::UnsafePath(name.into()));
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(Error::UnsafePath(name.into())),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// The archive path a symlink at `link` pointing to `target` names; escaping the archive's
/// root is refused.
fn resolve_symlink(link: &str, target: &str) -> Result<String> {
    if target.starts_with('/') || target.contains(['\0', '\\']) {
        return Err(Error::UnsafePath(target.into()));
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Error::UnsafePath(target.into()));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn compression_name(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if head.starts_with(b"BZh") {
        Some("bzip2")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else {
        None
    }
}

pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n = n.saturating_add(k),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing() {
        assert_eq!(normalize("./a//b/").unwrap(), "a/b");
        assert_eq!(normalize("manifest.json").unwrap(), "manifest.json");
        assert_eq!(normalize("./").unwrap(), "");
        for bad in ["../x", "a/../b", "/etc/passwd", "a/..", "a\\b", "a\0b"] {
            assert!(matches!(normalize(bad), Err(Error::UnsafePath(_))), "{bad}");
        }
    }

    #[test]
    fn symlinks_stay_inside() {
        assert_eq!(
            resolve_symlink("b/layer.tar", "../a/layer.tar").unwrap(),
            "a/layer.tar"
        );
        assert_eq!(resolve_symlink("b/layer.tar", "x.tar").unwrap(), "b/x.tar");
        assert!(resolve_symlink("b/layer.tar", "../../x").is_err());
        assert!(resolve_symlink("layer.tar", "../x").is_err());
        assert!(resolve_symlink("b/layer.tar", "/etc/passwd").is_err());
    }
}
