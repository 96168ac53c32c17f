//! Reading a layer blob back: what `kiln inspect` shows and what tests check.

use std::borrow::Cow;
use std::io::{self, BufReader, Read};

use tar::EntryType;

use crate::error::LayerError;

/// Type of a tar entry as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryTypeSummary {
    /// Regular file (whiteouts and opaque markers included).
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Hard link.
    Hardlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Anything else, with its type flag.
    Other(u8),
}

/// One tar entry as read back from a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySummary {
    /// Name in the tar (PAX `path` applied).
    pub path: Vec<u8>,
    /// Entry type.
    pub kind: EntryTypeSummary,
    /// Mode field (permission bits, setuid/setgid/sticky).
    pub mode: u32,
    /// Numeric owner (PAX `uid` applied).
    pub uid: u64,
    /// Numeric group (PAX `gid` applied).
    pub gid: u64,
    /// Content size (PAX `size` applied).
    pub size: u64,
    /// Modification time in seconds (PAX `mtime` applied).
    pub mtime: i64,
    /// Link target of symlinks and hard links (PAX `linkpath` applied).
    pub link_target: Option<Vec<u8>>,
    /// Device numbers of character and block devices.
    pub device: Option<(u32, u32)>,
    /// `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Names of the PAX records present (for checking what the writer emitted).
    pub pax_keys: Vec<String>,
}

impl EntrySummary {
    /// The path, lossily decoded.
    pub fn path_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }

    /// The link target, lossily decoded.
    pub fn link_str(&self) -> Option<Cow<'_, str>> {
        self.link_target.as_deref().map(String::from_utf8_lossy)
    }
}

/// How a layer media type is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Plain tar.
    Tar,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The compression of an OCI or Docker layer media type.
pub fn encoding_of(media_type: &str) -> Result<Encoding, LayerError> {
    let m = media_type;
    if m.ends_with("+gzip") || m.ends_with(".tar.gzip") {
        Ok(Encoding::Gzip)
    } else if m.ends_with("+zstd") || m.ends_with(".tar.zstd") {
        Ok(Encoding::Zstd)
    } else if m.ends_with(".tar") {
        Ok(Encoding::Tar)
    } else {
        Err(LayerError::UnknownMediaType(media_type.to_string()))
    }
}

/// Wraps `blob` in the decompressor its media type calls for.
pub fn decompress<'a>(
    blob: impl Read + 'a,
    media_type: &str,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    Ok(match encoding_of(media_type)? {
        Encoding::Tar => Box::new(blob),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(blob))),
        Encoding::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(blob).map_err(LayerError::Read)?)
        }
    })
}

/// A PAX record's key and value.
type PaxRecord = (Vec<u8>, Vec<u8>);

/// Largest PAX or GNU long-name member accepted (a layer is untrusted input).
const MAX_EXTENSION: u64 = 16 * 1024 * 1024;

/// Lists the entries of a layer blob (decompressing per `media_type`), in archive order.
/// Contents are read through, never kept.
///
/// PAX records are parsed here by their length prefixes (values may hold newlines, as binary
/// xattrs do); GNU long names (`L`/`K`) from other writers are understood too.
pub fn read_layer_entries(
    blob: impl Read,
    media_type: &str,
) -> Result<Vec<EntrySummary>, LayerError> {
    let mut out = Vec::new();
    visit_layer(blob, media_type, |summary, _content| {
        out.push(summary);
        Ok(())
    })?;
    Ok(out)
}

/// The uncompressed stream, hashed as it is read (for the diff_id).
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
}

/// Calls `visit` with each entry of a layer blob and a reader of its content (what `visit`
/// leaves unread is skipped), and returns the diff_id (`sha256:` of the uncompressed tar,
/// trailing blocks included) so the caller can check the layer against the image config.
pub fn visit_layer(
    blob: impl Read,
    media_type: &str,
    mut visit: impl FnMut(EntrySummary, &mut dyn Read) -> Result<(), LayerError>,
) -> Result<String, LayerError> {
    let stream = HashingReader {
        inner: decompress(blob, media_type)?,
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
    };
    let mut archive = tar::Archive::new(stream);
    let mut pax: Option<Vec<PaxRecord>> = None;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let entries = archive.entries().map_err(LayerError::Read)?.raw(true);
    for entry in entries {
        let mut entry = entry.map_err(LayerError::Read)?;
        let ty = entry.header().entry_type();
        match ty {
            EntryType::XHeader => {
                pax = Some(parse_pax(&read_extension(&mut entry)?)?);
                continue;
            }
            EntryType::XGlobalHeader => {
                // Global records (rare in layers) are checked for form, then not applied.
                parse_pax(&read_extension(&mut entry)?)?;
                continue;
            }
            EntryType::GNULongName => {
                long_name = Some(trim_nul(read_extension(&mut entry)?));
                continue;
            }
            EntryType::GNULongLink => {
                long_link = Some(trim_nul(read_extension(&mut entry)?));
                continue;
            }
            _ => {}
        }
        let records = pax.take().unwrap_or_default();
        let header = entry.header();
        let kind = match ty {
            EntryType::Regular | EntryType::Continuous => EntryTypeSummary::File,
            EntryType::Directory => EntryTypeSummary::Dir,
            EntryType::Symlink => EntryTypeSummary::Symlink,
            EntryType::Link => EntryTypeSummary::Hardlink,
            EntryType::Char => EntryTypeSummary::CharDevice,
            EntryType::Block => EntryTypeSummary::BlockDevice,
            EntryType::Fifo => EntryTypeSummary::Fifo,
            other => EntryTypeSummary::Other(other.as_byte()),
        };
        let device = match kind {
            EntryTypeSummary::CharDevice | EntryTypeSummary::BlockDevice => Some((
                header
                    .device_major()
                    .map_err(LayerError::Read)?
                    .unwrap_or(0),
                header
                    .device_minor()
                    .map_err(LayerError::Read)?
                    .unwrap_or(0),
            )),
            _ => None,
        };
        let link_target = match kind {
            EntryTypeSummary::Symlink | EntryTypeSummary::Hardlink => Some(
                long_link
                    .take()
                    .or_else(|| header.link_name_bytes().map(Cow::into_owned))
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        let mut summary = EntrySummary {
            path: long_name
                .take()
                .unwrap_or_else(|| header.path_bytes().into_owned()),
            kind,
            mode: header.mode().map_err(LayerError::Read)?,
            uid: header.uid().map_err(LayerError::Read)?,
            gid: header.gid().map_err(LayerError::Read)?,
            size: header.entry_size().map_err(LayerError::Read)?,
            mtime: i64::try_from(header.mtime().map_err(LayerError::Read)?).unwrap_or(i64::MAX),
            link_target,
            device,
            xattrs: Vec::new(),
            pax_keys: Vec::new(),
        };
        long_link = None;
        for (key, value) in records {
            let text = std::str::from_utf8(&value).ok();
            let int = || text.and_then(|t| t.split('.').next()?.parse::<i64>().ok());
            match key.as_slice() {
                b"path" => summary.path = value.clone(),
                b"linkpath" if summary.link_target.is_some() => {
                    summary.link_target = Some(value.clone())
                }
                b"uid" => summary.uid = int().map_or(summary.uid, |n| n as u64),
                b"gid" => summary.gid = int().map_or(summary.gid, |n| n as u64),
                b"mtime" => summary.mtime = int().unwrap_or(summary.mtime),
                b"size" => summary.size = int().map_or(summary.size, |n| n as u64),
                _ => {}
            }
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                summary
                    .xattrs
                    .push((String::from_utf8_lossy(name).into_owned(), value));
            }
            summary
                .pax_keys
                .push(String::from_utf8_lossy(&key).into_owned());
        }
        visit(summary, &mut entry)?;
        io::copy(&mut entry, &mut io::sink()).map_err(LayerError::Read)?;
    }
    let mut stream = archive.into_inner();
    io::copy(&mut stream, &mut io::sink()).map_err(LayerError::Read)?;
    let digest = sha2::Digest::finalize(stream.hasher);
    Ok(format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

fn read_extension(entry: &mut impl Read) -> Result<Vec<u8>, LayerError> {
    let mut data = Vec::new();
    entry
        .take(MAX_EXTENSION + 1)
        .read_to_end(&mut data)
        .map_err(LayerError::Read)?;
    if data.len() as u64 > MAX_EXTENSION {
        return Err(malformed("extended header too large"));
    }
    Ok(data)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn malformed(what: &str) -> LayerError {
    LayerError::Read(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed PAX header: {what}"),
    ))
}

/// Parses PAX records `"<len> <key>=<value>\n"`, where len counts the whole record.
pub(crate) fn parse_pax(mut data: &[u8]) -> Result<Vec<PaxRecord>, LayerError> {
    let mut records = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break; // padding some writers leave
        }
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| malformed("record without length"))?;
        let digits = &data[..space];
        if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(malformed("bad record length"));
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| malformed("bad record length"))?;
        if len <= space + 2 || len > data.len() || data[len - 1] != b'\n' {
            return Err(malformed("record length does not match"));
        }
        let body = &data[space + 1..len - 1];
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| malformed("record without '='"))?;
        records.push((body[..eq].to_vec(), body[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_values_may_hold_newlines() {
        let data = b"29 SCHILY.xattr.user.a=x\ny\nz\n11 path=ab\n";
        let r = parse_pax(data).unwrap();
        assert_eq!(r[0], (b"SCHILY.xattr.user.a".to_vec(), b"x\ny\nz".to_vec()));
        assert_eq!(r[1], (b"path".to_vec(), b"ab".to_vec()));
    }

    #[test]
    fn malformed_pax_is_refused() {
        for bad in [
            &b"5 a=b"[..],
            b"99 path=x\n",
            b"x path=y\n",
            b"6 ab\n\n",
            b"3 \n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn media_types_map_to_encodings() {
        assert_eq!(
            encoding_of(crate::MEDIA_TYPE_TAR_GZIP).unwrap(),
            Encoding::Gzip
        );
        assert_eq!(
            encoding_of(crate::MEDIA_TYPE_TAR_ZSTD).unwrap(),
            Encoding::Zstd
        );
        assert_eq!(encoding_of(crate::MEDIA_TYPE_TAR).unwrap(), Encoding::Tar);
        assert_eq!(
            encoding_of("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Encoding::Gzip
        );
        assert!(encoding_of("application/vnd.oci.image.config.v1+json").is_err());
    }
}
