//! Reading a layer blob back: what `kiln inspect` shows and what tests check.

use std::borrow::Cow;
use std::cell::Cell;
use std::io::{self, BufReader, Read};

use tar::EntryType;

use crate::error::LayerError;
use crate::limits::ReadLimits;

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

/// The uncompressed stream, hashed and counted as it is read (for the diff_id, and so a layer
/// that expands past its bound stops before anything past the bound is handed on).
struct HashingReader<'a, R> {
    inner: R,
    hasher: sha2::Sha256,
    read: u64,
    max: u64,
    over: &'a Cell<bool>,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = u64::try_from(n)
            .ok()
            .and_then(|n| self.read.checked_add(n))
            .filter(|total| *total <= self.max);
        let Some(total) = total else {
            self.over.set(true);
            return Err(io::Error::other("layer over its size bound"));
        };
        self.read = total;
        let data = buf.get(..n).unwrap_or_default();
        sha2::Digest::update(&mut self.hasher, data);
        Ok(n)
    }
}

/// Calls `visit` with each entry of a layer blob and a reader of its content (what `visit`
/// leaves unread is skipped), and returns the diff_id (`sha256:` of the uncompressed tar,
/// trailing blocks included) so the caller can check the layer against the image config.
/// The default [`ReadLimits`] apply; see [`visit_layer_limited`].
pub fn visit_layer(
    blob: impl Read,
    media_type: &str,
    visit: impl FnMut(EntrySummary, &mut dyn Read) -> Result<(), LayerError>,
) -> Result<String, LayerError> {
    visit_layer_limited(blob, media_type, &ReadLimits::default(), visit).map(|v| v.diff_id)
}

/// What [`visit_layer_limited`] found besides the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitedLayer {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// [`visit_layer`] within `limits`: a layer that expands past `max_bytes`, holds more than
/// `max_entries` entries, a longer path or a larger extension header is refused with
/// [`LayerError::OverLimit`] before more than the bound reaches `visit`. PAX `uid`, `gid`,
/// `size` and `mtime` must be decimal numbers in range, and a PAX `size` must agree with the
/// header's (the tar reader here reads by the header; two sizes would let two readers see
/// two different layers).
pub fn visit_layer_limited(
    blob: impl Read,
    media_type: &str,
    limits: &ReadLimits,
    mut visit: impl FnMut(EntrySummary, &mut dyn Read) -> Result<(), LayerError>,
) -> Result<VisitedLayer, LayerError> {
    let over = Cell::new(false);
    let too_large = || LayerError::OverLimit {
        what: "the uncompressed size".to_string(),
        limit: limits.max_bytes,
        unit: "bytes",
        setting: limits.bytes_setting,
    };
    let stream = HashingReader {
        inner: decompress(blob, media_type)?,
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
        read: 0,
        max: limits.max_bytes,
        over: &over,
    };
    let read_error = |e: io::Error| {
        if over.get() {
            too_large()
        } else {
            LayerError::Read(e)
        }
    };
    let mut archive = tar::Archive::new(stream);
    let mut pax: Option<Vec<PaxRecord>> = None;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut entry_count: u64 = 0;
    let entries = archive.entries().map_err(read_error)?.raw(true);
    for entry in entries {
        let mut entry = entry.map_err(read_error)?;
        let ty = entry.header().entry_type();
        match ty {
            EntryType::XHeader => {
                pax = Some(parse_pax(&read_extension(
                    &mut entry,
                    limits,
                    &read_error,
                )?)?);
                continue;
            }
            EntryType::XGlobalHeader => {
                // Global records (rare in layers) are checked for form, then not applied.
                parse_pax(&read_extension(&mut entry, limits, &read_error)?)?;
                continue;
            }
            EntryType::GNULongName => {
                long_name = Some(trim_nul(read_extension(&mut entry, limits, &read_error)?));
                continue;
            }
            EntryType::GNULongLink => {
                long_link = Some(trim_nul(read_extension(&mut entry, limits, &read_error)?));
                continue;
            }
            _ => {}
        }
        entry_count = entry_count.saturating_add(1);
        if entry_count > limits.max_entries {
            return Err(LayerError::OverLimit {
                what: "the number of entries".to_string(),
                limit: limits.max_entries,
                unit: "entries",
                setting: Some(crate::limits::ENTRIES_VAR),
            });
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
        let header_size = summary.size;
        for (key, value) in records {
            let bad = |detail: String| LayerError::BadHeader {
                path: String::from_utf8_lossy(&summary.path).into_owned(),
                detail,
            };
            match key.as_slice() {
                b"path" => summary.path = value.clone(),
                b"linkpath" if summary.link_target.is_some() => {
                    summary.link_target = Some(value.clone())
                }
                b"uid" => {
                    summary.uid = pax_id(&value).ok_or_else(|| bad(pax_detail("uid", &value)))?
                }
                b"gid" => {
                    summary.gid = pax_id(&value).ok_or_else(|| bad(pax_detail("gid", &value)))?
                }
                b"mtime" => {
                    summary.mtime =
                        pax_time(&value).ok_or_else(|| bad(pax_detail("mtime", &value)))?
                }
                b"size" => {
                    let size = pax_number(&value).ok_or_else(|| bad(pax_detail("size", &value)))?;
                    if size != header_size {
                        return Err(bad(format!(
                            "PAX size {size} disagrees with the header's {header_size}"
                        )));
                    }
                }
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
        check_entry(&summary, limits)?;
        if summary.size > limits.max_bytes {
            return Err(too_large());
        }
        visit(summary, &mut entry).map_err(|e| match e {
            LayerError::Read(_) if over.get() => too_large(),
            other => other,
        })?;
        io::copy(&mut entry, &mut io::sink()).map_err(read_error)?;
    }
    let mut stream = archive.into_inner();
    io::copy(&mut stream, &mut io::sink()).map_err(read_error)?;
    let uncompressed_size = stream.read;
    let digest = sha2::Digest::finalize(stream.hasher);
    let diff_id = format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    Ok(VisitedLayer {
        diff_id,
        uncompressed_size,
    })
}

/// Path and link target within `limits.max_path`.
fn check_entry(summary: &EntrySummary, limits: &ReadLimits) -> Result<(), LayerError> {
    let longest = summary
        .path
        .len()
        .max(summary.link_target.as_ref().map_or(0, Vec::len));
    if longest > limits.max_path {
        return Err(LayerError::OverLimit {
            what: format!(
                "the path or link target of entry {:?}",
                String::from_utf8_lossy(summary.path.get(..64).unwrap_or(&summary.path))
            ),
            limit: u64::try_from(limits.max_path).unwrap_or(u64::MAX),
            unit: "bytes",
            setting: None,
        });
    }
    Ok(())
}

fn pax_detail(key: &str, value: &[u8]) -> String {
    format!(
        "PAX {key} {:?} is not a number in range",
        String::from_utf8_lossy(value.get(..40).unwrap_or(value))
    )
}

/// A PAX decimal number: digits only (no sign, no spaces), fitting in a u64.
fn pax_number(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A PAX `uid`/`gid`: a decimal number of 32 bits (what Linux owners are).
fn pax_id(value: &[u8]) -> Option<u64> {
    pax_number(value).filter(|n| *n <= u64::from(u32::MAX))
}

/// A PAX `mtime`: `[-]seconds[.fraction]`; the fraction is dropped (layers keep seconds).
fn pax_time(value: &[u8]) -> Option<i64> {
    let (negative, rest) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (seconds, fraction) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (rest.get(..dot)?, rest.get(dot.checked_add(1)?..)?),
        None => (rest, &b""[..]),
    };
    if !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let seconds = i64::try_from(pax_number(seconds)?).ok()?;
    if negative {
        seconds.checked_neg()
    } else {
        Some(seconds)
    }
}

fn read_extension(
    entry: &mut impl Read,
    limits: &ReadLimits,
    read_error: &impl Fn(io::Error) -> LayerError,
) -> Result<Vec<u8>, LayerError> {
    let mut data = Vec::new();
    entry
        .take(limits.max_extension.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(read_error)?;
    if u64::try_from(data.len()).unwrap_or(u64::MAX) > limits.max_extension {
        return Err(LayerError::OverLimit {
            what: "an extended (PAX or long-name) header".to_string(),
            limit: limits.max_extension,
            unit: "bytes",
            setting: None,
        });
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
        // `len > space + 2` makes `len - 1` and `space + 1` safe below.
        let last = len.checked_sub(1);
        if len <= space.saturating_add(2)
            || len > data.len()
            || last.and_then(|i| data.get(i)) != Some(&b'\n')
        {
            return Err(malformed("record length does not match"));
        }
        let body = data
            .get(space.saturating_add(1)..len.saturating_sub(1))
            .ok_or_else(|| malformed("record length does not match"))?;
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| malformed("record without '='"))?;
        let (key, value) = body.split_at(eq);
        records.push((key.to_vec(), value.get(1..).unwrap_or_default().to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::UnpackCaps;

    /// One ustar member: name, type, size field, data (padded here).
    fn member(out: &mut Vec<u8>, name: &str, kind: EntryType, size: u64, data: &[u8]) {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        // The length counts itself: find the fixed point.
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}").len() + body.len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    /// A file `f` with PAX records before it.
    fn with_pax(records: &[(&str, &str)], data: &[u8]) -> Vec<u8> {
        let pax: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut out = Vec::new();
        member(
            &mut out,
            "PaxHeaders/f",
            EntryType::XHeader,
            pax.len() as u64,
            &pax,
        );
        member(&mut out, "f", EntryType::Regular, data.len() as u64, data);
        out.extend_from_slice(&[0; 1024]);
        out
    }

    fn read(bytes: &[u8], limits: &ReadLimits) -> Result<Vec<EntrySummary>, LayerError> {
        let mut out = Vec::new();
        visit_layer_limited(bytes, crate::MEDIA_TYPE_TAR, limits, |e, _| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    /// PAX `uid`/`gid` used to be read with `n as u64`: `-1` became 18446744073709551615.
    #[test]
    fn pax_numbers_must_be_decimal_and_in_range() {
        let good = with_pax(
            &[("uid", "1000"), ("gid", "4294967295"), ("mtime", "-5.25")],
            b"x",
        );
        let entries = read(&good, &ReadLimits::default()).unwrap();
        assert_eq!(
            (entries[0].uid, entries[0].gid, entries[0].mtime),
            (1000, u64::from(u32::MAX), -5)
        );
        for (key, value) in [
            ("uid", "-1"),
            ("gid", "-1"),
            ("uid", "4294967296"),
            ("uid", "12abc"),
            ("uid", ""),
            ("mtime", "99999999999999999999"),
            ("mtime", "1.x"),
            ("size", "-1"),
            ("size", "18446744073709551616"),
        ] {
            let bytes = with_pax(&[(key, value)], b"x");
            let error = read(&bytes, &ReadLimits::default()).unwrap_err();
            assert!(
                matches!(error, LayerError::BadHeader { .. }),
                "{key}={value}: {error}"
            );
        }
    }

    /// The reader reads data by the header's size: a PAX size that says otherwise would make
    /// kiln and another reader see different layers, so it is refused.
    #[test]
    fn a_pax_size_that_disagrees_with_the_header_is_refused() {
        let agree = with_pax(&[("size", "1")], b"x");
        assert_eq!(read(&agree, &ReadLimits::default()).unwrap()[0].size, 1);
        let disagree = with_pax(&[("size", "4000000000000")], b"x");
        let error = read(&disagree, &ReadLimits::default()).unwrap_err();
        assert!(error.to_string().contains("disagrees"), "{error}");
    }

    /// A zip bomb: 64 MiB of zeros in 128 files of 512 KiB (each under the bound, so the
    /// bytes, not a header's size, are what stop it), gzip-compressed to a few KB. With a
    /// 1 MiB bound the reader stops before handing on more than 1 MiB.
    #[test]
    fn a_layer_that_expands_past_its_bound_is_refused_early() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 512 << 10];
        for i in 0..128 {
            let mut header = tar::Header::new_ustar();
            header.set_path(format!("bomb{i}")).unwrap();
            header.set_size(512 << 10);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            std::io::Write::write_all(&mut gz, header.as_bytes()).unwrap();
            std::io::Write::write_all(&mut gz, &zeros).unwrap();
        }
        std::io::Write::write_all(&mut gz, &[0; 1024]).unwrap();
        let blob = gz.finish().unwrap();
        assert!(blob.len() < 200_000, "{}", blob.len());
        let limits = UnpackCaps {
            layer_ceiling: 1 << 20,
            ..UnpackCaps::default()
        }
        .read_limits(blob.len() as u64, u64::MAX);
        assert_eq!(limits.max_bytes, 1 << 20);
        let mut handed_on = 0u64;
        let error = visit_layer_limited(
            &blob[..],
            crate::MEDIA_TYPE_TAR_GZIP,
            &limits,
            |_, content| {
                handed_on += io::copy(content, &mut io::sink()).map_err(LayerError::Read)?;
                Ok(())
            },
        )
        .map(|_| ())
        .err();
        let error = error.expect("refused");
        assert!(handed_on <= 1 << 20, "{handed_on}");
        assert!(matches!(error, LayerError::OverLimit { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("KILN_MAX_LAYER_SIZE"), "{message}");
    }

    #[test]
    fn a_declared_size_over_the_bound_is_refused_before_reading() {
        let mut out = Vec::new();
        member(&mut out, "big", EntryType::Regular, 1 << 30, b"");
        let limits = ReadLimits {
            max_bytes: 1 << 20,
            ..ReadLimits::default()
        };
        let error = read(&out, &limits).unwrap_err();
        assert!(matches!(error, LayerError::OverLimit { .. }), "{error}");
    }

    #[test]
    fn entries_paths_and_extension_headers_are_bounded() {
        let mut out = Vec::new();
        for i in 0..5 {
            member(&mut out, &format!("f{i}"), EntryType::Regular, 0, b"");
        }
        out.extend_from_slice(&[0; 1024]);
        let limits = ReadLimits {
            max_entries: 4,
            ..ReadLimits::default()
        };
        let error = read(&out, &limits).unwrap_err();
        assert!(error.to_string().contains("number of entries"), "{error}");
        assert!(
            error.to_string().contains("KILN_MAX_LAYER_ENTRIES"),
            "{error}"
        );
        assert_eq!(read(&out, &ReadLimits::default()).unwrap().len(), 5);

        let long = "d/".repeat(2100);
        let bytes = with_pax(&[("path", &long)], b"");
        let error = read(&bytes, &ReadLimits::default()).unwrap_err();
        assert!(error.to_string().contains("path or link target"), "{error}");

        let huge = "v".repeat(2 << 20);
        let bytes = with_pax(&[("SCHILY.xattr.user.big", &huge)], b"");
        let error = read(&bytes, &ReadLimits::default()).unwrap_err();
        assert!(error.to_string().contains("extended"), "{error}");
    }

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
