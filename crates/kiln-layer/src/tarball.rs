//! Entries → tar bytes: ustar headers with PAX extended headers where ustar falls short.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use tar::{EntryType, Header};

use crate::entries::{Entry, EntryKind};
use crate::error::LayerError;

pub(crate) const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (uid, gid): 7 digits.
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (size, mtime): 11 digits.
const MAX_OCTAL_12: u64 = 0o77777777777;
/// Name under which PAX extended headers appear to readers that do not know them.
const PAX_HEADER_NAME: &[u8] = b"././@PaxHeader";

/// Why copying file contents failed.
pub(crate) enum CopyError {
    /// Reading the source file.
    Source(io::Error),
    /// Writing the tar.
    Sink(io::Error),
}

/// Reads into `buf`, retrying when interrupted.
pub(crate) fn read_retry(src: &mut File, buf: &mut [u8]) -> Result<usize, CopyError> {
    loop {
        match src.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map_err(CopyError::Source),
        }
    }
}

/// Where tar bytes go. Besides `Write`, it can take file contents straight from a file, so the
/// pipeline's chunk writer reads files into its own buffers without another copy.
pub(crate) trait TarSink: Write {
    /// Copies up to `limit` bytes from `src`; returns how many (fewer only at end of file).
    fn copy_from(&mut self, src: &mut File, limit: u64) -> Result<u64, CopyError> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut copied = 0u64;
        while copied < limit {
            let want = usize::try_from(limit.saturating_sub(copied))
                .map_or(buf.len(), |n| n.min(buf.len()));
            let n = read_retry(src, &mut buf[..want])?;
            if n == 0 {
                break;
            }
            self.write_all(&buf[..n]).map_err(CopyError::Sink)?;
            copied = copied.saturating_add(n as u64);
        }
        Ok(copied)
    }
}

/// Any writer, through `io::copy`.
pub(crate) struct PlainSink<W>(pub W);

impl<W: Write> Write for PlainSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> TarSink for PlainSink<W> {}

/// Writes `entries` as a tar stream (ending in two zero blocks) to `out`, with mtimes clamped
/// to `source_date_epoch` when given. Regular files are read from their `source`, exactly once.
pub fn write_tar(
    entries: impl IntoIterator<Item = Result<Entry, LayerError>>,
    source_date_epoch: Option<i64>,
    out: impl Write,
) -> Result<(), LayerError> {
    let mut sink = PlainSink(out);
    write_tar_to(entries, source_date_epoch, &mut sink)?;
    sink.flush().map_err(LayerError::Output)
}

pub(crate) fn write_tar_to<S: TarSink>(
    entries: impl IntoIterator<Item = Result<Entry, LayerError>>,
    source_date_epoch: Option<i64>,
    out: &mut S,
) -> Result<(), LayerError> {
    let mut w = TarWriter {
        out,
        epoch: source_date_epoch,
        pax: Vec::new(),
        header: Vec::new(),
    };
    for entry in entries {
        w.entry(&entry?)?;
    }
    w.out.write_all(&[0; 2 * BLOCK]).map_err(LayerError::Output)
}

struct TarWriter<'a, S> {
    out: &'a mut S,
    epoch: Option<i64>,
    /// PAX records of the current entry (reused buffer).
    pax: Vec<u8>,
    /// The current entry's header blocks (reused buffer).
    header: Vec<u8>,
}

impl<S: TarSink> TarWriter<'_, S> {
    fn entry(&mut self, e: &Entry) -> Result<(), LayerError> {
        self.header.clear();
        entry_header(e, self.epoch, &mut self.pax, &mut self.header);
        self.out
            .write_all(&self.header)
            .map_err(LayerError::Output)?;
        if e.kind == EntryKind::File {
            copy_contents(e, self.out)?;
            pad(self.out, e.size)?;
        }
        Ok(())
    }
}

/// Appends the header blocks of `e` (a PAX extended header first when ustar falls short, then
/// the ustar header) to `out`; `pax` is a scratch buffer. The content, if any, follows them in
/// the tar, padded to a whole block.
pub(crate) fn entry_header(e: &Entry, epoch: Option<i64>, pax: &mut Vec<u8>, out: &mut Vec<u8>) {
    let (ty, link): (EntryType, Option<&[u8]>) = match &e.kind {
        EntryKind::File | EntryKind::Whiteout | EntryKind::OpaqueMarker => {
            (EntryType::Regular, None)
        }
        EntryKind::Dir => (EntryType::Directory, None),
        EntryKind::Symlink { target } => (EntryType::Symlink, Some(target)),
        EntryKind::Hardlink { target } => (EntryType::Link, Some(target)),
        EntryKind::CharDevice { .. } => (EntryType::Char, None),
        EntryKind::BlockDevice { .. } => (EntryType::Block, None),
        EntryKind::Fifo => (EntryType::Fifo, None),
    };
    let size = content_size(e);
    let mtime = match epoch {
        Some(epoch) => e.mtime.min(epoch),
        None => e.mtime,
    };

    // PAX records, in a fixed order, for whatever ustar cannot hold.
    pax.clear();
    // Readers that split PAX data on newlines instead of using the record lengths (the tar
    // crate's, for one) could take a line inside an xattr value for a record of its own; with
    // the true path and link target written first, they find those first.
    let newline_in_value = e.xattrs.iter().any(|x| x.value.contains(&b'\n'));
    let name_needs_pax = newline_in_value || needs_pax(&e.path);
    let link_needs_pax = link.is_some_and(|l| newline_in_value || needs_pax(l));
    let binary = (name_needs_pax && std::str::from_utf8(&e.path).is_err())
        || (link_needs_pax && link.is_some_and(|l| std::str::from_utf8(l).is_err()));
    if binary {
        pax_record(pax, b"hdrcharset", b"BINARY");
    }
    if name_needs_pax {
        pax_record(pax, b"path", &e.path);
    }
    if let Some(link) = link.filter(|_| link_needs_pax) {
        pax_record(pax, b"linkpath", link);
    }
    if u64::from(e.uid) > MAX_OCTAL_8 {
        pax_record(pax, b"uid", e.uid.to_string().as_bytes());
    }
    if u64::from(e.gid) > MAX_OCTAL_8 {
        pax_record(pax, b"gid", e.gid.to_string().as_bytes());
    }
    let header_mtime = u64::try_from(mtime).unwrap_or(0);
    if mtime < 0 || header_mtime > MAX_OCTAL_12 {
        pax_record(pax, b"mtime", mtime.to_string().as_bytes());
    }
    if size > MAX_OCTAL_12 {
        pax_record(pax, b"size", size.to_string().as_bytes());
    }
    for x in &e.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(x.name.as_bytes());
        pax_record(pax, &key, &x.value);
    }
    if !pax.is_empty() {
        let mut h = Header::new_ustar();
        put_bytes(&mut h.as_old_mut().name, PAX_HEADER_NAME);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(pax.len() as u64);
        h.set_entry_type(EntryType::XHeader);
        set_devices(&mut h, 0, 0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(pax);
        out.resize(out.len().saturating_add(padding(pax.len() as u64)), 0);
    }

    let mut h = Header::new_ustar();
    put_bytes(&mut h.as_old_mut().name, &e.path);
    if let Some(link) = link {
        put_bytes(&mut h.as_old_mut().linkname, link);
    }
    h.set_mode(e.mode & 0o7777);
    // Values past the octal range go in base-256 (GNU's extension, which the tar crate uses
    // by itself) as well as in the PAX record, so readers that skip PAX still find the
    // right size and the archive stays in step.
    h.set_uid(u64::from(e.uid));
    h.set_gid(u64::from(e.gid));
    h.set_mtime(header_mtime);
    h.set_size(size);
    h.set_entry_type(ty);
    match e.kind {
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            set_devices(&mut h, major, minor)
        }
        _ => set_devices(&mut h, 0, 0),
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
}

/// Bytes of content an entry has in the tar (regular files only).
pub(crate) fn content_size(e: &Entry) -> u64 {
    if e.kind == EntryKind::File {
        e.size
    } else {
        0
    }
}

/// Zero bytes that follow `len` bytes of content to fill the last block.
pub(crate) fn padding(len: u64) -> usize {
    let rem = usize::try_from(len.rem_euclid(BLOCK as u64)).unwrap_or(0);
    if rem == 0 {
        0
    } else {
        BLOCK.saturating_sub(rem)
    }
}

/// Opens the regular file an entry lists, checking it is that very inode.
pub(crate) fn open_listed(e: &Entry) -> Result<File, LayerError> {
    let file = open_regular(&e.source)?;
    let md = file
        .metadata()
        .map_err(|err| LayerError::fs("stat", &e.source, err))?;
    if !md.is_file() || (md.dev(), md.ino()) != e.ident {
        return Err(LayerError::Changed {
            path: e.source.clone(),
            detail: "replaced by another file",
        });
    }
    Ok(file)
}

/// Copies exactly `e.size` bytes of the file to `out`, checking it is still the file listed.
pub(crate) fn copy_contents<S: TarSink>(e: &Entry, out: &mut S) -> Result<(), LayerError> {
    let mut file = open_listed(e)?;
    let copied = out.copy_from(&mut file, e.size).map_err(|err| match err {
        CopyError::Source(err) => LayerError::fs("read", &e.source, err),
        CopyError::Sink(err) => LayerError::Output(err),
    })?;
    if copied != e.size {
        return Err(LayerError::Changed {
            path: e.source.clone(),
            detail: "shrank",
        });
    }
    let mut probe = [0u8; 1];
    match file.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(LayerError::Changed {
            path: e.source.clone(),
            detail: "grew",
        }),
        Err(err) => Err(LayerError::fs("read", &e.source, err)),
    }
}

/// Opens a regular file for reading without following a symlink at its last component, and
/// without blocking should it have been swapped for a FIFO. The caller then checks that the
/// open file is the very inode that was listed (a snapshot is quiescent when it is written; this
/// makes a change an error instead of a different, or outside, file in the layer).
fn open_regular(path: &Path) -> Result<File, LayerError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    rustix::fs::open(path, flags, Mode::empty())
        .map(File::from)
        .map_err(|e| LayerError::fs("open", path, e.into()))
}

/// Whether a name or link target needs a PAX record: too long for the 100-byte field, or not
/// ASCII (PAX says what the bytes mean: UTF-8, or BINARY).
fn needs_pax(bytes: &[u8]) -> bool {
    bytes.len() > 100 || !bytes.is_ascii()
}

/// Copies as much of `src` as fits into a header field (the rest is in a PAX record), cutting
/// at a character boundary when it is UTF-8.
fn put_bytes(field: &mut [u8], src: &[u8]) {
    let mut n = src.len().min(field.len());
    if let Ok(s) = std::str::from_utf8(src) {
        while !s.is_char_boundary(n) {
            n = n.saturating_sub(1);
        }
    }
    field[..n].copy_from_slice(&src[..n]);
}

fn set_devices(h: &mut Header, major: u32, minor: u32) {
    if let Some(u) = h.as_ustar_mut() {
        u.set_device_major(major);
        u.set_device_minor(minor);
    }
}

fn pad(out: &mut impl Write, len: u64) -> Result<(), LayerError> {
    out.write_all(&[0; BLOCK][..padding(len)])
        .map_err(LayerError::Output)
}

/// Appends one PAX record: `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // ' ', '=', '\n'; keys and values are bounded by memory, far from usize's range.
    let rest = key.len().saturating_add(value.len()).saturating_add(3);
    let mut len = rest.saturating_add(1);
    while decimal_len(len).saturating_add(rest) != len {
        len = decimal_len(len).saturating_add(rest);
    }
    buf.extend_from_slice(len.to_string().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(key);
    buf.push(b'=');
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

fn decimal_len(mut n: usize) -> usize {
    let mut digits: usize = 1;
    while n >= 10 {
        n /= 10;
        digits = digits.saturating_add(1);
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for vlen in [
            0usize, 1, 4, 5, 6, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 995, 996, 997, 998,
            9990,
        ] {
            let mut buf = Vec::new();
            let value = vec![b'v'; vlen];
            pax_record(&mut buf, b"path", &value);
            let text = String::from_utf8(buf.clone()).unwrap();
            let (n, _) = text.split_once(' ').unwrap();
            assert_eq!(
                n.parse::<usize>().unwrap(),
                buf.len(),
                "value length {vlen}"
            );
        }
    }

    #[test]
    fn put_bytes_cuts_at_char_boundary() {
        let mut field = [0u8; 5];
        put_bytes(&mut field, "abcdé".as_bytes()); // é is 2 bytes at offset 4
        assert_eq!(&field, b"abcd\0");
    }
}
