//! Canonical JSON out, bounded JSON in.

use std::io::Read;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::{sha256_digest, Descriptor, Error, Result};

/// The largest JSON document (manifest, index, config, `manifest.json`, …) read into memory
/// from untrusted input: 16 MiB.
pub const MAX_JSON_SIZE: u64 = 16 << 20;

/// The bytes kiln writes for a document: compact (no whitespace, no trailing newline), keys in
/// the order of the type's fields (maps are `BTreeMap`s, so sorted by key bytes).
///
/// Strings are escaped as serde_json does: `"` and `\` and the control characters
/// U+0000–U+001F only (as `\n`, `\t`, … or `\u00XX` with lowercase hex); everything else,
/// including `<`, `>`, `&`, U+2028/U+2029 and non-ASCII text, is written as plain UTF-8. This
/// differs from Go's `encoding/json`, which escapes `<>&` as `\u003c\u003e\u0026`; kiln never
/// re-serialises a foreign document to recompute its digest (it keeps the bytes it read), so
/// only kiln's own, stable output matters.
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| Error::Json {
        what: "serialising a document".into(),
        source,
    })
}

/// Canonical bytes of `value` plus a descriptor for them with `media_type`.
pub fn json_blob<T: Serialize + ?Sized>(
    media_type: &str,
    value: &T,
) -> Result<(Vec<u8>, Descriptor)> {
    let bytes = to_canonical_json(value)?;
    let desc = Descriptor::new(media_type, sha256_digest(&bytes), bytes.len() as u64);
    Ok((bytes, desc))
}

/// Parses an untrusted JSON document of at most [`MAX_JSON_SIZE`] bytes. Errors name the
/// document by its type (`Manifest`, `ImageConfig`, …).
pub fn from_json_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let full = std::any::type_name::<T>();
    let short = full.split('<').next().unwrap_or(full);
    let short = short.rsplit("::").next().unwrap_or(short);
    parse_json(short, bytes)
}

/// [`from_json_slice`] with `what` naming the document in errors.
pub(crate) fn parse_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    if bytes.len() as u64 > MAX_JSON_SIZE {
        return Err(Error::TooLarge {
            what: what.into(),
            size: bytes.len() as u64,
            limit: MAX_JSON_SIZE,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: what.into(),
        source,
    })
}

/// Reads at most `limit` bytes; more is an error rather than a truncation.
pub(crate) fn read_bounded(reader: impl Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("reading {what}"), e))?;
    if buf.len() as u64 > limit {
        return Err(Error::TooLarge {
            what: what.into(),
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// `null` (as Go writes empty slices and maps) reads as the empty value.
pub(crate) fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A string list that Docker may also have written as a single string (moby's `StrSlice`).
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrSeq {
    One(String),
    Many(Vec<String>),
}

impl From<StrOrSeq> for Vec<String> {
    fn from(v: StrOrSeq) -> Vec<String> {
        match v {
            StrOrSeq::One(s) => vec![s],
            StrOrSeq::Many(v) => v,
        }
    }
}

/// `null` → `None`, `"x"` → `Some(["x"])`, `[...]` → `Some([...])`.
pub(crate) fn opt_str_or_seq<'de, D>(d: D) -> std::result::Result<Option<Vec<String>>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<StrOrSeq>::deserialize(d)?.map(Vec::from))
}

/// `null` → `[]`, `"x"` → `["x"]`, `[...]` → `[...]`.
pub(crate) fn str_or_seq<'de, D>(d: D) -> std::result::Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(opt_str_or_seq(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn escaping_is_minimal_and_stable() {
        let s = "a<b>&c \"q\" back\\slash\n\t\u{1}\u{1f}\u{7f} é ☃ \u{2028}/";
        let out = String::from_utf8(to_canonical_json(&s).unwrap()).unwrap();
        assert_eq!(
            out,
            "\"a<b>&c \\\"q\\\" back\\\\slash\\n\\t\\u0001\\u001f\u{7f} é ☃ \u{2028}/\""
        );
    }

    #[test]
    fn compact_sorted_no_newline() {
        let mut m = BTreeMap::new();
        m.insert("b", 1);
        m.insert("a", 2);
        m.insert("B", 3);
        assert_eq!(to_canonical_json(&m).unwrap(), br#"{"B":3,"a":2,"b":1}"#);
    }

    #[test]
    fn errors_name_the_document_type() {
        let err = from_json_slice::<crate::Manifest>(b"{").unwrap_err();
        assert!(
            err.to_string().starts_with("Manifest: invalid JSON"),
            "{err}"
        );
    }

    #[test]
    fn bounded_reads() {
        assert_eq!(read_bounded(&b"12345"[..], 5, "x").unwrap(), b"12345");
        assert!(matches!(
            read_bounded(&b"123456"[..], 5, "x"),
            Err(Error::TooLarge { limit: 5, .. })
        ));
        let big = vec![b' '; (MAX_JSON_SIZE + 1) as usize];
        assert!(matches!(
            from_json_slice::<serde_json::Value>(&big),
            Err(Error::TooLarge { .. })
        ));
    }
}
