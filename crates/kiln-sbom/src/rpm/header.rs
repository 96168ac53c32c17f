//! The rpm header blob, as the rpmdb stores one per installed package.
//!
//! Layout (all integers big-endian; rpm's `lib/header.c`, "header structure" in rpm's
//! `docs/manual/format.md`):
//!
//! ```text
//! il: u32            number of index entries
//! dl: u32            size of the data store
//! il × { tag: u32, type: u32, offset: i32, count: u32 }
//! dl bytes of data; an entry's value starts at `offset` into it
//! ```
//!
//! The package file adds an 8-byte magic in front; the database blob does not. Every number
//! here is untrusted: counts and offsets are checked against the data store before use, and
//! nothing is allocated in proportion to a count.

use std::collections::BTreeMap;

/// Why a header blob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header blob of {0} bytes is shorter than its 8-byte preamble")]
    TooShort(usize),
    #[error("header claims {0} index entries (rpm allows at most {MAX_ENTRIES})")]
    TooManyEntries(u32),
    #[error("header claims a {0}-byte data store (rpm allows at most {MAX_DATA})")]
    DataTooLarge(u32),
    #[error("header needs {needed} bytes but the blob has {actual}")]
    Truncated { needed: u64, actual: usize },
    #[error("tag {tag}: type {kind} is not an rpm data type")]
    BadType { tag: u32, kind: u32 },
    #[error("tag {tag}: value at offset {offset} (count {count}) lies outside the data store")]
    OutOfBounds { tag: u32, offset: i64, count: u32 },
    #[error("tag {tag}: string is not terminated inside the data store")]
    Unterminated { tag: u32 },
    #[error("tag {tag}: expected {expected}")]
    WrongType { tag: u32, expected: &'static str },
}

/// rpm's `hdrchkTags`: at most 0xffff index entries.
pub const MAX_ENTRIES: u32 = 0xffff;
/// rpm's `hdrchkData`: at most 256 MiB of data.
pub const MAX_DATA: u32 = 0x0fff_ffff;

/// Tags read from a header (rpm's `rpmtag.h`).
pub mod tags {
    pub const NAME: u32 = 1000;
    pub const VERSION: u32 = 1001;
    pub const RELEASE: u32 = 1002;
    pub const EPOCH: u32 = 1003;
    pub const SUMMARY: u32 = 1004;
    pub const VENDOR: u32 = 1011;
    pub const LICENSE: u32 = 1014;
    pub const PACKAGER: u32 = 1015;
    pub const ARCH: u32 = 1022;
    pub const SOURCERPM: u32 = 1044;
    pub const DIRINDEXES: u32 = 1116;
    pub const BASENAMES: u32 = 1117;
    pub const DIRNAMES: u32 = 1118;
}

/// rpm data types (`rpmTagType`).
mod kind {
    pub const NULL: u32 = 0;
    pub const CHAR: u32 = 1;
    pub const INT8: u32 = 2;
    pub const INT16: u32 = 3;
    pub const INT32: u32 = 4;
    pub const INT64: u32 = 5;
    pub const STRING: u32 = 6;
    pub const BIN: u32 = 7;
    pub const STRING_ARRAY: u32 = 8;
    pub const I18NSTRING: u32 = 9;
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: u32,
    offset: usize,
    count: u32,
}

/// A parsed header: the index, checked, and the data store it points into.
#[derive(Debug, Clone)]
pub struct RpmHeader<'a> {
    data: &'a [u8],
    entries: BTreeMap<u32, Entry>,
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let slice = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

impl<'a> RpmHeader<'a> {
    /// Parses and checks a database header blob. Every entry's value must lie inside the data
    /// store; a later entry for the same tag replaces an earlier one (rpm's "dribble" entries
    /// override the immutable region).
    pub fn parse(blob: &'a [u8]) -> Result<RpmHeader<'a>, HeaderError> {
        let (Some(il), Some(dl)) = (be_u32(blob, 0), be_u32(blob, 4)) else {
            return Err(HeaderError::TooShort(blob.len()));
        };
        if il > MAX_ENTRIES {
            return Err(HeaderError::TooManyEntries(il));
        }
        if dl > MAX_DATA {
            return Err(HeaderError::DataTooLarge(dl));
        }
        // Both bounded above, so this cannot overflow a u64.
        let needed = 8 + u64::from(il) * 16 + u64::from(dl);
        if (blob.len() as u64) < needed {
            return Err(HeaderError::Truncated {
                needed,
                actual: blob.len(),
            });
        }
        let index_end = 8 + il as usize * 16;
        let data = &blob[index_end..index_end + dl as usize];
        let mut entries = BTreeMap::new();
        for i in 0..il as usize {
            let at = 8 + i * 16;
            let field = |n: usize| be_u32(blob, at + n * 4).unwrap_or(0);
            let (tag, kind, raw_offset, count) = (field(0), field(1), field(2), field(3));
            if kind > kind::I18NSTRING {
                return Err(HeaderError::BadType { tag, kind });
            }
            // Region tags (61-63) carry a negative-offset trailer; they describe the header
            // itself, not the package, and are not needed.
            let offset = raw_offset as i32;
            if (61..=63).contains(&tag) || kind == kind::NULL {
                continue;
            }
            let out_of_bounds = HeaderError::OutOfBounds {
                tag,
                offset: i64::from(offset),
                count,
            };
            let Ok(offset) = usize::try_from(offset) else {
                return Err(out_of_bounds);
            };
            if offset >= data.len() {
                return Err(out_of_bounds);
            }
            let fixed_width = match kind {
                kind::CHAR | kind::INT8 | kind::BIN => Some(1u64),
                kind::INT16 => Some(2),
                kind::INT32 => Some(4),
                kind::INT64 => Some(8),
                _ => None,
            };
            if let Some(width) = fixed_width {
                let end = offset as u64 + width * u64::from(count);
                if end > data.len() as u64 {
                    return Err(out_of_bounds);
                }
            }
            entries.insert(
                tag,
                Entry {
                    kind,
                    offset,
                    count,
                },
            );
        }
        Ok(RpmHeader { data, entries })
    }

    /// Whether the header has `tag`.
    pub fn has(&self, tag: u32) -> bool {
        self.entries.contains_key(&tag)
    }

    /// The NUL-terminated string at `offset`, checked.
    fn string_at(&self, tag: u32, offset: usize) -> Result<(&'a str, usize), HeaderError> {
        let rest = self
            .data
            .get(offset..)
            .ok_or(HeaderError::Unterminated { tag })?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(HeaderError::Unterminated { tag })?;
        let text = std::str::from_utf8(&rest[..len]).unwrap_or("\u{fffd}");
        Ok((text, offset + len + 1))
    }

    /// A string value (`STRING`, or the first of a `STRING_ARRAY`/`I18NSTRING`, as rpm does
    /// for a summary in the default locale). Invalid UTF-8 reads as U+FFFD.
    pub fn string(&self, tag: u32) -> Result<Option<&'a str>, HeaderError> {
        let Some(entry) = self.entries.get(&tag) else {
            return Ok(None);
        };
        match entry.kind {
            kind::STRING | kind::STRING_ARRAY | kind::I18NSTRING if entry.count > 0 => {
                Ok(Some(self.string_at(tag, entry.offset)?.0))
            }
            _ => Err(HeaderError::WrongType {
                tag,
                expected: "a string",
            }),
        }
    }

    /// Up to `limit` strings of a `STRING_ARRAY` (walked one by one, so a huge count costs
    /// nothing more than the data store holds).
    pub fn strings(&self, tag: u32, limit: usize) -> Result<Vec<&'a str>, HeaderError> {
        let Some(entry) = self.entries.get(&tag) else {
            return Ok(Vec::new());
        };
        if !matches!(entry.kind, kind::STRING_ARRAY | kind::I18NSTRING) {
            return Err(HeaderError::WrongType {
                tag,
                expected: "a string array",
            });
        }
        let wanted = limit.min(entry.count as usize);
        let mut out = Vec::with_capacity(wanted.min(64));
        let mut offset = entry.offset;
        while out.len() < wanted {
            let (text, next) = self.string_at(tag, offset)?;
            out.push(text);
            offset = next;
        }
        Ok(out)
    }

    /// Up to `limit` values of an `INT32` array.
    pub fn u32s(&self, tag: u32, limit: usize) -> Result<Vec<u32>, HeaderError> {
        let Some(entry) = self.entries.get(&tag) else {
            return Ok(Vec::new());
        };
        if entry.kind != kind::INT32 {
            return Err(HeaderError::WrongType {
                tag,
                expected: "INT32",
            });
        }
        // `parse` checked offset + 4 × count against the data store.
        let wanted = limit.min(entry.count as usize);
        Ok((0..wanted)
            .filter_map(|i| be_u32(self.data, entry.offset + i * 4))
            .collect())
    }

    /// The first value of an `INT32` tag.
    pub fn u32(&self, tag: u32) -> Result<Option<u32>, HeaderError> {
        Ok(self.u32s(tag, 1)?.first().copied())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A value to put in a test header.
    pub enum Value<'a> {
        Str(&'a str),
        Strs(&'a [&'a str]),
        Int32(&'a [u32]),
    }

    /// Builds a database header blob, laid out as rpm lays one out (strings unaligned, INT32
    /// values 4-aligned).
    pub fn build_header(entries: &[(u32, Value<'_>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        for (tag, value) in entries {
            let (kind, count) = match value {
                Value::Str(_) => (kind::STRING, 1),
                Value::Strs(list) => (kind::STRING_ARRAY, list.len() as u32),
                Value::Int32(list) => {
                    while !data.len().is_multiple_of(4) {
                        data.push(0);
                    }
                    (kind::INT32, list.len() as u32)
                }
            };
            let offset = data.len() as u32;
            match value {
                Value::Str(s) => {
                    data.extend_from_slice(s.as_bytes());
                    data.push(0);
                }
                Value::Strs(list) => {
                    for s in *list {
                        data.extend_from_slice(s.as_bytes());
                        data.push(0);
                    }
                }
                Value::Int32(list) => {
                    for n in *list {
                        data.extend_from_slice(&n.to_be_bytes());
                    }
                }
            }
            for field in [*tag, kind, offset, count] {
                index.extend_from_slice(&field.to_be_bytes());
            }
        }
        let mut blob = Vec::new();
        blob.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
        blob.extend_from_slice(&index);
        blob.extend_from_slice(&data);
        blob
    }

    pub fn sample() -> Vec<u8> {
        build_header(&[
            (tags::NAME, Value::Str("bash")),
            (tags::VERSION, Value::Str("5.2.26")),
            (tags::RELEASE, Value::Str("3.fc40")),
            (tags::EPOCH, Value::Int32(&[2])),
            (tags::ARCH, Value::Str("x86_64")),
            (tags::LICENSE, Value::Str("GPL-3.0-or-later")),
            (tags::DIRNAMES, Value::Strs(&["/usr/bin/", "/etc/"])),
            (tags::BASENAMES, Value::Strs(&["bash", "bashrc"])),
            (tags::DIRINDEXES, Value::Int32(&[0, 1])),
        ])
    }

    #[test]
    fn reads_fields() {
        let blob = sample();
        let header = RpmHeader::parse(&blob).unwrap();
        assert_eq!(header.string(tags::NAME).unwrap(), Some("bash"));
        assert_eq!(header.string(tags::RELEASE).unwrap(), Some("3.fc40"));
        assert_eq!(header.u32(tags::EPOCH).unwrap(), Some(2));
        assert_eq!(header.string(tags::VENDOR).unwrap(), None);
        assert_eq!(
            header.strings(tags::BASENAMES, 10).unwrap(),
            ["bash", "bashrc"]
        );
        assert_eq!(header.u32s(tags::DIRINDEXES, 10).unwrap(), [0, 1]);
        assert!(matches!(
            header.u32(tags::NAME),
            Err(HeaderError::WrongType { .. })
        ));
    }

    fn set_u32(blob: &mut [u8], at: usize, value: u32) {
        blob[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }

    #[test]
    fn every_truncation_is_refused_or_read_in_bounds() {
        let blob = sample();
        for len in 0..blob.len() {
            // Must not panic; a prefix is never a complete header.
            assert!(RpmHeader::parse(&blob[..len]).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn hostile_counts_and_offsets() {
        let blob = sample();
        // Entry 0 is NAME; entry 3 is EPOCH (INT32); entry 6 is DIRNAMES (STRING_ARRAY).
        let entry = |i: usize, field: usize| 8 + i * 16 + field * 4;

        let mut huge_il = blob.clone();
        set_u32(&mut huge_il, 0, u32::MAX);
        assert_eq!(
            RpmHeader::parse(&huge_il).unwrap_err(),
            HeaderError::TooManyEntries(u32::MAX)
        );

        let mut huge_dl = blob.clone();
        set_u32(&mut huge_dl, 4, u32::MAX);
        assert_eq!(
            RpmHeader::parse(&huge_dl).unwrap_err(),
            HeaderError::DataTooLarge(u32::MAX)
        );

        let mut large_il = blob.clone();
        set_u32(&mut large_il, 0, MAX_ENTRIES);
        assert!(matches!(
            RpmHeader::parse(&large_il).unwrap_err(),
            HeaderError::Truncated { .. }
        ));

        let mut int_count = blob.clone();
        set_u32(&mut int_count, entry(3, 3), u32::MAX);
        assert!(matches!(
            RpmHeader::parse(&int_count).unwrap_err(),
            HeaderError::OutOfBounds { .. }
        ));

        let mut negative_offset = blob.clone();
        set_u32(&mut negative_offset, entry(0, 2), (-8i32) as u32);
        assert!(matches!(
            RpmHeader::parse(&negative_offset).unwrap_err(),
            HeaderError::OutOfBounds { .. }
        ));

        let mut far_offset = blob.clone();
        set_u32(&mut far_offset, entry(0, 2), u32::MAX / 2);
        assert!(matches!(
            RpmHeader::parse(&far_offset).unwrap_err(),
            HeaderError::OutOfBounds { .. }
        ));

        let mut bad_type = blob.clone();
        set_u32(&mut bad_type, entry(0, 1), 77);
        assert!(matches!(
            RpmHeader::parse(&bad_type).unwrap_err(),
            HeaderError::BadType { .. }
        ));

        // A string array claiming four billion strings: read up to the limit or the end of
        // the data store, never allocated by count.
        let mut many_strings = blob.clone();
        set_u32(&mut many_strings, entry(6, 3), u32::MAX);
        let header = RpmHeader::parse(&many_strings).unwrap();
        assert!(header.strings(tags::DIRNAMES, 3).is_ok());
        assert!(matches!(
            header.strings(tags::DIRNAMES, usize::MAX),
            Err(HeaderError::Unterminated { .. })
        ));

        // A string whose terminator was cut off at the end of the data store.
        let unterminated = build_header(&[(tags::NAME, Value::Str("x"))]);
        let mut cut = unterminated.clone();
        let last = cut.len() - 1;
        cut[last] = b'y';
        let header = RpmHeader::parse(&cut).unwrap();
        assert!(matches!(
            header.string(tags::NAME),
            Err(HeaderError::Unterminated { .. })
        ));
    }

    #[test]
    fn pseudo_random_mutations_never_panic() {
        // A small xorshift fuzzer: flip bytes of a valid header and read every tag.
        let blob = sample();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut mutated = blob.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % mutated.len() as u64) as usize;
                mutated[at] = (state >> 32) as u8;
            }
            if let Ok(header) = RpmHeader::parse(&mutated) {
                for tag in [tags::NAME, tags::VERSION, tags::ARCH, tags::LICENSE] {
                    let _ = header.string(tag);
                }
                let _ = header.strings(tags::BASENAMES, 1 << 20);
                let _ = header.u32s(tags::DIRINDEXES, 1 << 20);
            }
        }
    }
}
