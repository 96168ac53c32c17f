//! Content digests: parsing untrusted digest strings, hashing, verifying streams.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256, Sha512};

use crate::{Error, Result};

/// A digest algorithm this crate can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears in digests and in `blobs/<name>/` paths.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// A validated digest: `sha256:` followed by 64 lowercase hex digits, or `sha512:` followed by
/// 128. Anything else — other algorithms, uppercase, wrong lengths, stray characters — is
/// refused, because digests arrive from untrusted documents and become file names.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    value: String,
    algorithm: Algorithm,
}

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(input: &str) -> Result<Digest> {
        let invalid = |reason| Error::InvalidDigest {
            input: truncate_for_message(input),
            reason,
        };
        let (name, hex) = input
            .split_once(':')
            .ok_or_else(|| invalid("expected <algorithm>:<hex>"))?;
        let algorithm = Algorithm::from_name(name)
            .ok_or_else(|| invalid("unsupported algorithm (sha256 or sha512 only)"))?;
        if hex.len() != algorithm.hex_len() {
            return Err(invalid("wrong length for the algorithm"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("encoded part must be lowercase hex"));
        }
        Ok(Digest {
            value: input.to_owned(),
            algorithm,
        })
    }

    /// `sha256:<hex>` from a bare 64-digit hex string.
    pub fn from_sha256_hex(hex: &str) -> Result<Digest> {
        Digest::parse(&format!("sha256:{hex}"))
    }

    /// Which hash function.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part, after the colon.
    pub fn hex(&self) -> &str {
        let start = self.algorithm.name().len().saturating_add(1);
        self.value.get(start..).unwrap_or_default()
    }

    /// The whole digest, `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The blob's path in an OCI image layout: `blobs/<algorithm>/<hex>`.
    pub fn blob_path(&self) -> String {
        format!("blobs/{}/{}", self.algorithm.name(), self.hex())
    }

    /// The digest of `bytes` under the same algorithm as `self`.
    pub fn of_same_kind(&self, bytes: &[u8]) -> Digest {
        let mut h = DigestHasher::new(self.algorithm);
        h.update(bytes);
        h.finish()
    }
}

fn truncate_for_message(input: &str) -> String {
    if input.len() <= 200 {
        return input.to_owned();
    }
    let mut end = 200;
    while !input.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    format!("{}…", &input[..end])
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    let mut h = DigestHasher::new(Algorithm::Sha256);
    h.update(bytes);
    h.finish()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.value)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.value)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental hashing for any [`Algorithm`].
#[derive(Clone)]
pub enum DigestHasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl DigestHasher {
    /// A hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> DigestHasher {
        match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(Sha512::new()),
        }
    }

    /// Hashes more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(bytes),
            DigestHasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything hashed.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            DigestHasher::Sha256(h) => (Algorithm::Sha256, to_hex(&h.finalize())),
            DigestHasher::Sha512(h) => (Algorithm::Sha512, to_hex(&h.finalize())),
        };
        Digest {
            value: format!("{}:{hex}", algorithm.name()),
            algorithm,
        }
    }
}

impl io::Write for DigestHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// Reads exactly `size` bytes from `inner` while hashing them, and reports end-of-stream only
/// once the content has been checked: a stream that is shorter or longer than `size`, or whose
/// digest differs, ends in an `InvalidData` error instead of `Ok(0)`. Consumers must therefore
/// read to the end (and see `Ok(0)`) before trusting what they read; [`crate::Error`]s come out
/// of the `io::Error` intact through this crate's APIs.
pub struct VerifyingReader<R> {
    inner: R,
    what: String,
    expected: Digest,
    size: u64,
    remaining: u64,
    hasher: Option<DigestHasher>,
}

impl<R: Read> VerifyingReader<R> {
    /// `what` names the content in error messages (e.g. `"layer sha256:…"`).
    pub fn new(inner: R, expected: Digest, size: u64, what: impl Into<String>) -> Self {
        VerifyingReader {
            hasher: Some(DigestHasher::new(expected.algorithm())),
            inner,
            what: what.into(),
            expected,
            size,
            remaining: size,
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(hasher) = self.hasher.take() else {
            return Ok(());
        };
        // The stream must end where the descriptor says it does.
        let mut probe = [0u8; 1];
        loop {
            match self.inner.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => {
                    return Err(Error::SizeMismatch {
                        what: self.what.clone(),
                        expected: self.size,
                        actual: self.size.saturating_add(1),
                    }
                    .into_io())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let actual = hasher.finish();
        if actual != self.expected {
            return Err(Error::DigestMismatch {
                what: self.what.clone(),
                expected: self.expected.clone(),
                actual,
            }
            .into_io());
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            self.finish()?;
            return Ok(0);
        }
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(0);
        };
        let max = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            let actual = self.size.saturating_sub(self.remaining);
            self.hasher = None;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                Error::SizeMismatch {
                    what: self.what.clone(),
                    expected: self.size,
                    actual,
                },
            ));
        }
        hasher.update(&buf[..n]);
        // `n` is at most `remaining` (the read was capped to it).
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_known_inputs() {
        assert_eq!(sha256_digest(b"").as_str(), EMPTY);
        assert_eq!(
            sha256_digest(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_accepts_sha256_and_sha512() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(
            d.blob_path(),
            "blobs/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let s512 = format!("sha512:{}", "ab".repeat(64));
        assert_eq!(Digest::parse(&s512).unwrap().algorithm(), Algorithm::Sha512);
        assert_eq!(d, EMPTY.parse::<Digest>().unwrap());
    }

    #[test]
    fn parse_rejects_everything_else() {
        let hex = "a".repeat(64);
        for bad in [
            String::new(),
            "sha256".into(),
            format!("sha256{hex}"),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}g", "a".repeat(63)),
            format!("SHA256:{hex}"),
            format!("md5:{hex}"),
            format!("sha384:{}", "a".repeat(96)),
            format!("sha256+b64u:{hex}"),
            format!(" sha256:{hex}"),
            format!("sha256:{hex}\n"),
            format!("sha256:../{}", "a".repeat(61)),
            format!("sha512:{hex}"),
        ] {
            assert!(Digest::parse(&bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn serde_validates() {
        let json = format!("\"{EMPTY}\"");
        let d: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), json);
        assert!(serde_json::from_str::<Digest>("\"sha256:abc\"").is_err());
    }

    #[test]
    fn verifying_reader_passes_good_content() {
        let data = b"hello world";
        let mut r = VerifyingReader::new(&data[..], sha256_digest(data), 11, "blob");
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    fn read_err(data: &[u8], digest: Digest, size: u64) -> Error {
        let mut r = VerifyingReader::new(data, digest, size, "blob");
        let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
        Error::io("copy", e)
    }

    #[test]
    fn verifying_reader_refuses_bad_content() {
        let data = b"hello world";
        let good = sha256_digest(data);
        assert!(matches!(
            read_err(b"hello worle", good.clone(), 11),
            Error::DigestMismatch { .. }
        ));
        assert!(matches!(
            read_err(b"hello", good.clone(), 11),
            Error::SizeMismatch {
                expected: 11,
                actual: 5,
                ..
            }
        ));
        assert!(matches!(
            read_err(b"hello world!", good, 11),
            Error::SizeMismatch { expected: 11, .. }
        ));
    }
}
