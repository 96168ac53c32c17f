use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while writing or reading a layer.
///
/// Errors that concern one file of the snapshot carry its path on disk, so the message alone
/// tells the user which file to look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// A filesystem call on a snapshot file failed.
    #[error("{op} {}: {source}", path.display())]
    Fs {
        /// What was attempted ("lstat", "read directory", "open", ...).
        op: &'static str,
        /// The file on disk.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A file changed (size, type or identity) between listing it and reading it.
    #[error("{}: changed while the layer was being written ({detail})", path.display())]
    Changed {
        /// The file on disk.
        path: PathBuf,
        /// What was noticed.
        detail: &'static str,
    },

    /// The snapshot holds a name starting with `.wh.`; in a layer such a name is a whiteout,
    /// so writing it would silently delete a file in the image instead of adding one.
    #[error("{}: names starting with \".wh.\" are reserved for whiteouts in OCI layers", path.display())]
    ReservedName {
        /// The file on disk.
        path: PathBuf,
    },

    /// The upper directory relies on a lower layer (overlayfs redirect or metacopy), so it
    /// is not a self-contained diff. Mount overlays with `redirect_dir=off,metacopy=off`.
    #[error(
        "{}: overlayfs attribute {xattr} means this snapshot is not self-contained \
         (mount with redirect_dir=off,metacopy=off)",
        path.display()
    )]
    OverlayIndirection {
        /// The file on disk.
        path: PathBuf,
        /// The overlay attribute found.
        xattr: String,
    },

    /// An extended attribute name that is not UTF-8 cannot be written as a PAX record.
    #[error("{}: extended attribute name {name:?} is not UTF-8", path.display())]
    XattrName {
        /// The file on disk.
        path: PathBuf,
        /// The name, lossily decoded.
        name: String,
    },

    /// The snapshot root is not a directory.
    #[error("{}: snapshot root is not a directory", path.display())]
    NotADirectory {
        /// The root given.
        path: PathBuf,
    },

    /// The compression level is outside what the codec accepts.
    #[error("{codec} compression level {level} is out of range ({range})")]
    InvalidLevel {
        /// "gzip" or "zstd".
        codec: &'static str,
        /// The level asked for.
        level: i64,
        /// The accepted range, for the message.
        range: String,
    },

    /// Writing the blob (or a compressor behind it) failed.
    #[error("writing the layer blob: {0}")]
    Output(#[source] io::Error),

    /// Reading a layer blob back failed (bad compression, bad tar).
    #[error("reading the layer blob: {0}")]
    Read(#[source] io::Error),

    /// A layer goes over one of the bounds of [`crate::ReadLimits`] (a layer is untrusted
    /// input: a few KB of gzip may expand to terabytes, or hold millions of entries).
    #[error("layer refused: {what} is over the limit of {limit} {unit}{}", setting.map(|s| format!(" (raise it with {s})")).unwrap_or_default())]
    OverLimit {
        /// What went over ("the uncompressed size", "the number of entries", ...).
        what: String,
        /// The bound.
        limit: u64,
        /// Its unit ("bytes", "entries").
        unit: &'static str,
        /// The setting that raises it, when there is one.
        setting: Option<&'static str>,
    },

    /// A setting (environment variable) whose value is not what it takes.
    #[error("{name}={value:?} is not a size (bytes, or with a K/M/G/T suffix)")]
    BadSetting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },

    /// A PAX record or tar header field that is not what the format allows.
    #[error("reading the layer blob: entry {path:?}: {detail}")]
    BadHeader {
        /// The entry's path as far as it is known, lossily decoded.
        path: String,
        /// What is wrong.
        detail: String,
    },

    /// The media type is not one of the layer types this crate reads.
    #[error("unsupported layer media type {0:?}")]
    UnknownMediaType(String),

    /// The worker thread pool could not be started.
    #[error("starting compression threads: {0}")]
    ThreadPool(String),

    /// A worker thread stopped without reporting (a bug).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl LayerError {
    pub(crate) fn fs(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LayerError::Fs {
            op,
            path: path.into(),
            source,
        }
    }
}
