//! Errors of SBOM generation.

use std::path::PathBuf;

/// What can stop an SBOM from being made. A package database that is malformed in part does not
/// stop it: the bad records are skipped and reported as [`crate::ScanWarning`]s.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image's files could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A database file is larger than kiln reads into memory.
    #[error("{path}: {size} bytes is more than the {limit} bytes read from a package database")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// The rpm database could not be copied aside to be opened.
    #[error("copying the rpm database {path} aside: {source}")]
    RpmCopy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The SBOM document could not be serialised.
    #[error("serialising the SPDX document: {0}")]
    Json(#[from] serde_json::Error),
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
