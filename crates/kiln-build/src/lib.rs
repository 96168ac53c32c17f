//! kiln-build: runs a plan.

pub mod copy;
pub mod rootfs;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Copy(String),
    #[error("{0}")]
    Unsupported(String),
}
