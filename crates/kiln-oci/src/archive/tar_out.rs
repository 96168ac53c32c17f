//! A tar writer with fixed headers: ustar, uid/gid 0, no user or group names, one mtime,
//! mode 0644 for files, 0755 for directories, 0777 for symlinks. Content streams through.

use std::fs::File;
use std::io::{self, Read, Write};

use super::sink::Sink;

use tar::{EntryType, Header};

use crate::error::io_ctx;
use crate::{Error, Result};

const BLOCK: usize = 512;
/// The largest value of the 11 octal digits of a ustar time field (year 2242).
const MAX_USTAR_TIME: u64 = 0o77777777777;

pub(crate) struct TarOut<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> TarOut<W> {
    pub(crate) fn new(out: W, mtime: u64) -> Result<TarOut<W>> {
        if mtime > MAX_USTAR_TIME {
            return Err(Error::InvalidImage(format!(
                "mtime {mtime} does not fit a tar header (at most {MAX_USTAR_TIME})"
            )));
        }
        Ok(TarOut { out, mtime })
    }

    fn header(
        &self,
        path: &str,
        kind: EntryType,
        mode: u32,
        size: u64,
        link: &str,
    ) -> Result<Header> {
        let mut h = Header::new_ustar();
        let ustar = h
            .as_ustar_mut()
            .ok_or_else(|| Error::InvalidArchive("ustar header expected".into()))?;
        put_name(&mut ustar.name, path)?;
        put_name(&mut ustar.linkname, link)?;
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(size);
        h.set_cksum();
        Ok(h)
    }

    fn write_header(&mut self, h: &Header, path: &str) -> Result<()> {
        self.out
            .write_all(h.as_bytes())
            .map_err(io_ctx(format!("writing tar header for {path}")))
    }

    /// A directory entry; `path` ends with `/`.
    pub(crate) fn dir(&mut self, path: &str) -> Result<()> {
        let h = self.header(path, EntryType::Directory, 0o755, 0, "")?;
        self.write_header(&h, path)
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let h = self.header(path, EntryType::Symlink, 0o777, 0, target)?;
        self.write_header(&h, path)
    }

    pub(crate) fn file(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        self.file_from(path, bytes.len() as u64, &mut &bytes[..])
    }

    /// A regular file of exactly `size` bytes read from `content`; a reader that ends early or
    /// runs long is an error (the output is then incomplete and must be discarded).
    pub(crate) fn file_from(
        &mut self,
        path: &str,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<()> {
        let h = self.header(path, EntryType::Regular, 0o644, size, "")?;
        self.write_header(&h, path)?;
        let copied = io::copy(&mut content.take(size), &mut self.out)
            .map_err(io_ctx(format!("writing {path}")))?;
        if copied != size {
            return Err(Error::SizeMismatch {
                what: path.into(),
                expected: size,
                actual: copied,
            });
        }
        // Drain to the end so a verifying reader gets to check what it read.
        let extra =
            io::copy(content, &mut io::sink()).map_err(io_ctx(format!("writing {path}")))?;
        if extra != 0 {
            return Err(Error::SizeMismatch {
                what: path.into(),
                expected: size,
                actual: size.saturating_add(extra),
            });
        }
        self.pad(path, size)
    }

    /// A regular file of exactly `size` bytes copied from `content` (a file the blob source
    /// vouches for) by the output itself; a file of another length is an error.
    pub(crate) fn file_copied(&mut self, path: &str, size: u64, content: &mut File) -> Result<()>
    where
        W: Sink,
    {
        let actual = content
            .metadata()
            .map_err(io_ctx(format!("reading {path}")))?
            .len();
        if actual != size {
            return Err(Error::SizeMismatch {
                what: path.into(),
                expected: size,
                actual,
            });
        }
        let h = self.header(path, EntryType::Regular, 0o644, size, "")?;
        self.write_header(&h, path)?;
        let copied = self
            .out
            .copy_file(content, size)
            .map_err(io_ctx(format!("writing {path}")))?;
        if copied != size {
            return Err(Error::SizeMismatch {
                what: path.into(),
                expected: size,
                actual: copied,
            });
        }
        self.pad(path, size)
    }

    /// Whether the output copies files itself ([`TarOut::file_copied`]).
    pub(crate) fn takes_files(&self) -> bool
    where
        W: Sink,
    {
        self.out.takes_files()
    }

    fn pad(&mut self, path: &str, size: u64) -> Result<()> {
        // `size % BLOCK` is below BLOCK, so neither the cast nor the subtraction can fail.
        let used = usize::try_from(size.rem_euclid(BLOCK as u64)).unwrap_or(0);
        let pad = BLOCK.saturating_sub(used).rem_euclid(BLOCK);
        self.out
            .write_all(&[0u8; BLOCK][..pad])
            .map_err(io_ctx(format!("writing {path}")))
    }

    /// Writes the end-of-archive marker and flushes.
    pub(crate) fn finish(mut self) -> Result<W> {
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .and_then(|()| self.out.flush())
            .map_err(io_ctx("finishing tar archive"))?;
        Ok(self.out)
    }
}

fn put_name(field: &mut [u8; 100], name: &str) -> Result<()> {
    let b = name.as_bytes();
    if b.len() > field.len() {
        return Err(Error::InvalidArchive(format!(
            "tar entry name longer than 100 bytes: {name}"
        )));
    }
    field[..b.len()].copy_from_slice(b);
    Ok(())
}
