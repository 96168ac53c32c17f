//! The one error type of this crate.

use std::io;

use crate::Digest;

/// Everything that can go wrong reading or writing image documents and archives.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string that is not a digest this crate accepts (`sha256:` or `sha512:` + lowercase hex).
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An image reference that does not follow the reference grammar.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Content whose digest is not the one its descriptor promised.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was read.
        what: String,
        /// The digest its descriptor names.
        expected: Digest,
        /// The digest of what was read.
        actual: Digest,
    },

    /// Content whose length is not the one its descriptor promised.
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was read.
        what: String,
        /// The size its descriptor names.
        expected: u64,
        /// The size read (at least).
        actual: u64,
    },

    /// A document larger than the bound this crate reads into memory.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was read.
        what: String,
        /// Its size (or as much as was read before giving up).
        size: u64,
        /// The bound.
        limit: u64,
    },

    /// A document that is not the JSON it should be.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        /// Which document.
        what: String,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },

    /// An I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        #[source]
        source: io::Error,
    },

    /// An archive entry or archive-relative path that is absolute, climbs out with `..`, or
    /// resolves outside the archive through a link.
    #[error("unsafe path in archive: {0:?}")]
    UnsafePath(String),

    /// An archive that is not a well-formed OCI or docker archive.
    #[error("invalid archive: {0}")]
    InvalidArchive(String),

    /// A file that an archive's documents name but the archive lacks.
    #[error("{0:?} not found in archive")]
    MissingEntry(String),

    /// Image documents that are individually valid but do not fit together.
    #[error("invalid image: {0}")]
    InvalidImage(String),

    /// A media type this crate does not know how to handle where it is found.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with context; an error of this crate carried inside the I/O error
    /// (as [`crate::VerifyingReader`] reports a mismatch) comes back out as itself.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        if source.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(inner) = source.into_inner() {
                return match inner.downcast::<Error>() {
                    Ok(err) => *err,
                    Err(other) => Error::Io {
                        context: context.into(),
                        source: io::Error::other(other),
                    },
                };
            }
            return Error::Io {
                context: context.into(),
                source: io::Error::other("unknown error"),
            };
        }
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps this error in an `io::Error` (kind `InvalidData`), for `Read` implementations.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// `map_err` helper: `.map_err(io_ctx("reading x"))`.
pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |e| Error::io(context, e)
}
