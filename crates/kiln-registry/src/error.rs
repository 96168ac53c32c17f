//! The error type, and turning what a registry says into short, safe text.

use std::io;

use kiln_store::StoreError;

/// Everything a registry operation can fail with. Each message names the registry and
/// repository (`host/path`), what was being done, and what the server said; none carries
/// credentials or tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry answered with a status the operation cannot go on from.
    #[error("{repo}: {what}: the registry answered {status}{}", detail(.body))]
    Status {
        /// The repository (`host/path`) concerned.
        repo: String,
        /// What was being done (`fetching blob sha256:…`).
        what: String,
        /// The HTTP status.
        status: u16,
        /// The server's error, summarised and cut to ~300 characters.
        body: String,
    },

    /// The manifest, blob or upload does not exist (404).
    #[error("{repo}: {what}: not found{}", detail(.body))]
    NotFound {
        /// The repository (`host/path`) concerned.
        repo: String,
        /// What was being done (`fetching blob sha256:…`).
        what: String,
        /// The server's error, summarised and cut to ~300 characters.
        body: String,
    },

    /// No HTTP answer at all: refused, reset, timed out, TLS failed, host unknown.
    #[error("{repo}: {what}: cannot reach {url}: {message}")]
    Connection {
        /// The repository (`host/path`) concerned.
        repo: String,
        /// What was being done (`fetching blob sha256:…`).
        what: String,
        /// The URL asked, without its query.
        url: String,
        /// What went wrong, in words.
        message: String,
    },

    /// The TLS handshake failed in a way trying again does not change: a certificate kiln
    /// does not trust, or one the server wants and kiln did not present. The message says
    /// how to fix it.
    #[error("{repo}: {what}: cannot reach {url}: TLS: {message}")]
    TlsHandshake {
        /// The repository (`host/path`) concerned.
        repo: String,
        /// What was being done (`fetching blob sha256:…`).
        what: String,
        /// The URL asked, without its query.
        url: String,
        /// What went wrong, in words.
        message: String,
    },

    /// The registry (or its token service) refused us: no or wrong credentials, or no access.
    #[error("{repo}: {what}: {host} {reason}; `kiln login {host}` sets credentials")]
    Unauthorized {
        /// The registry host.
        host: String,
        /// The repository (`host/path`) concerned.
        repo: String,
        /// What was being done (`fetching blob sha256:…`).
        what: String,
        /// Why.
        reason: String,
    },

    /// A manifest request answered with something that is not an image manifest or index.
    #[error("{name}: the registry's answer is not a manifest: {reason}")]
    NotAManifest {
        /// The image name asked for.
        name: String,
        /// Why.
        reason: String,
    },

    /// Docker's schema 1 manifests (signed, pre-2017) are not read.
    #[error("{name}: the registry only has a Docker schema 1 manifest ({media_type}), which kiln does not read; push the image again with a current client")]
    Schema1 {
        /// The image name asked for.
        name: String,
        /// The manifest's media type.
        media_type: String,
    },

    /// An index without an entry for the wanted platform.
    #[error("{name}: no image for platform {wanted}; the index has: {available}")]
    NoPlatform {
        /// The image name asked for.
        name: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms the index has.
        available: String,
    },

    /// Content whose digest is not the one asked for. `what` is e.g. `blob sha256:…`.
    #[error("{what} from {repo}: digest mismatch (got {actual})")]
    DigestMismatch {
        /// The content (`blob sha256:…`, `manifest …`).
        what: String,
        /// The repository (`host/path`) concerned.
        repo: String,
        /// The digest of what came.
        actual: String,
    },

    /// Content whose length is not the one its descriptor gives.
    #[error("{what} from {repo}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The content (`blob sha256:…`, `manifest …`).
        what: String,
        /// The repository (`host/path`) concerned.
        repo: String,
        /// The size the descriptor gives.
        expected: u64,
        /// The size of what came (so far).
        actual: u64,
    },

    /// The registry broke the protocol: a missing or bad header, an unreadable token answer.
    #[error("{repo}: {what}: {message}")]
    Protocol {
        /// The repository (`host/path`) concerned.
        repo: String,
        /// What was being done (`fetching blob sha256:…`).
        what: String,
        /// What went wrong, in words.
        message: String,
    },

    /// config.json or a credential helper could not be read or written.
    #[error("credentials for {server}: {message}")]
    Credentials {
        /// The registry server.
        server: String,
        /// What went wrong, in words.
        message: String,
    },

    /// Something the caller passed that cannot work (a manifest that is not in the store, …).
    #[error("{0}")]
    Invalid(
        /// What is wrong.
        String,
    ),

    /// The TLS settings for a host could not be made: a `certs.d` file that cannot be read or
    /// used, or a trust store named by `SSL_CERT_FILE` that holds nothing.
    #[error("TLS settings for {host}: {source}")]
    Tls {
        /// The registry host.
        host: String,
        /// The underlying error.
        #[source]
        source: crate::tls::TlsError,
    },

    /// A blob download that kept breaking off (stalling or closing) and ran out of retries.
    #[error("{repo}: blob {digest}: the download broke off {attempts} times and was given up after {done} of {size} bytes; the last time: {why}")]
    BlobInterrupted {
        /// The repository (`host/path`) concerned.
        repo: String,
        /// The blob's digest.
        digest: String,
        /// How many attempts were made.
        attempts: u32,
        /// Bytes received when it was given up.
        done: u64,
        /// The blob's size.
        size: u64,
        /// Why the last attempt broke off.
        why: String,
    },

    /// The store could not take or give what was needed.
    #[error("{context}: {source}")]
    Store {
        /// What was being done, and to what.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<StoreError>,
    },

    /// Reading or writing a local file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and to what.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// `Result` with [`RegistryError`].
pub type Result<T> = std::result::Result<T, RegistryError>;

impl RegistryError {
    /// Whether the thing asked for does not exist on the registry (as opposed to any failure
    /// to ask): lets a caller treat a missing cache manifest as a miss.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// Whether the failure is the registry being unreachable or overloaded, so trying again
    /// later may work.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Connection { .. } => true,
            RegistryError::Status { status, .. } => retryable_status(*status),
            _ => false,
        }
    }
}

/// 5xx and 429: the registry is overloaded, restarting, or behind a failing proxy.
pub(crate) fn retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

fn detail(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// The longest piece of server text put in a message.
const BODY_MAX: usize = 300;

/// A registry's error body made short and printable: the `errors` array of the distribution
/// spec as `CODE: message` items, or else the text itself with control characters and runs
/// of whitespace squeezed to single spaces, cut to ~300 characters.
pub(crate) fn summarize_body(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    let text = match serde_json::from_slice::<Errors>(bytes) {
        Ok(parsed) if !parsed.errors.is_empty() => parsed
            .errors
            .iter()
            .map(|e| {
                let mut s = match (e.code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{}: {}", e.code, e.message),
                    (false, true) => e.code.clone(),
                    _ => e.message.clone(),
                };
                // Details such as "manifest blob unknown to registry: sha256:…" say which.
                if let serde_json::Value::String(d) = &e.detail {
                    s.push_str(&format!(" ({d})"));
                }
                s
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    };
    clean_text(&text, BODY_MAX)
}

/// Printable, single-line, at most `max` characters (then `…`).
pub(crate) fn clean_text(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut space = false;
    let mut count = 0usize;
    for c in text.trim().chars() {
        if c.is_whitespace() || c.is_control() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
            count = count.saturating_add(1);
        }
        space = false;
        if count >= max {
            out.push('…');
            return out;
        }
        out.push(c);
        count = count.saturating_add(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_errors_are_summarised() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}},{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:abc"}]}"#;
        assert_eq!(
            summarize_body(body),
            "MANIFEST_UNKNOWN: manifest unknown; BLOB_UNKNOWN: blob unknown to registry (sha256:abc)"
        );
    }

    #[test]
    fn other_bodies_are_cleaned_and_cut() {
        assert_eq!(
            summarize_body(b"<html>\r\n<body>\n\t502  Bad\x07Gateway</body></html>\n"),
            "<html> <body> 502 Bad Gateway</body></html>"
        );
        let long = "x".repeat(1000);
        let s = summarize_body(long.as_bytes());
        assert_eq!(s.chars().count(), 301);
        assert!(s.ends_with('…'));
        assert_eq!(summarize_body(b""), "");
        assert_eq!(summarize_body(b"\xff\xfeok"), "\u{fffd}\u{fffd}ok");
    }

    #[test]
    fn messages_name_the_repository() {
        let e = RegistryError::Status {
            repo: "127.0.0.1:5000/foo".into(),
            what: "pushing manifest 1".into(),
            status: 400,
            body: "MANIFEST_INVALID: manifest invalid".into(),
        };
        assert_eq!(
            e.to_string(),
            "127.0.0.1:5000/foo: pushing manifest 1: the registry answered 400: MANIFEST_INVALID: manifest invalid"
        );
        let e = RegistryError::DigestMismatch {
            what: "blob sha256:aa".into(),
            repo: "h/r".into(),
            actual: "sha256:bb".into(),
        };
        assert_eq!(
            e.to_string(),
            "blob sha256:aa from h/r: digest mismatch (got sha256:bb)"
        );
    }
}
