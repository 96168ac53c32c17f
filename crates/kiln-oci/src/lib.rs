//! kiln-oci: the OCI and Docker image documents, and the archive formats they travel in.
//!
//! * Documents — [`ImageConfig`], [`Manifest`], [`Index`], [`Descriptor`] — are owned types whose
//!   JSON has a fixed key order (struct field order, `BTreeMap` for maps), so the same image
//!   always serialises to the same bytes ([`to_canonical_json`]). They parse documents written
//!   by Docker, BuildKit, podman and buildah too: unknown fields are ignored and Docker schema2
//!   media types are understood.
//! * [`Digest`] is a validated `algorithm:hex` string; [`VerifyingReader`] checks a stream
//!   against a descriptor's digest and size as it is read.
//! * [`ImageName`] parses image references the way Docker normalises them.
//! * Archives: [`write_oci_archive`], [`write_docker_archive`], [`write_oci_layout_dir`] write
//!   deterministic bytes from a [`BlobSource`]; [`read_oci_archive`], [`read_oci_layout_dir`] and
//!   [`read_docker_archive`] read untrusted archives and layout directories, refusing unsafe paths and verifying every blob.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Archives, layouts and documents are untrusted: no arithmetic that can overflow or panic.
#![cfg_attr(not(test), warn(clippy::arithmetic_side_effects))]
#![warn(missing_docs)]

pub mod archive;
mod config;
mod descriptor;
mod digest;
mod error;
mod json;
pub mod media_types;
mod reference;
pub mod time;

pub use archive::{
    read_docker_archive, read_oci_archive, read_oci_archive_index, read_oci_layout_dir,
    write_docker_archive, write_docker_archive_file, write_oci_archive, write_oci_archive_file,
    write_oci_layout_dir, ArchiveFormat, ArchiveImage, ArchiveIndex, BlobSource, ImageRef,
    LayoutBlobs, MemoryBlobs, ReadOptions, WriteOptions,
};
pub use config::{
    chain_ids, ContainerConfig, EmptyObject, Healthcheck, History, ImageConfig, RootFs,
};
pub use descriptor::{
    annotations, is_valid_ref_name, Descriptor, DockerManifestEntry, DockerRepositories, Index,
    Manifest, OciLayout, Platform,
};
pub use digest::{sha256_digest, Algorithm, Digest, DigestHasher, VerifyingReader};
pub use error::{Error, Result};
pub use json::{from_json_slice, json_blob, to_canonical_json, MAX_JSON_SIZE};
pub use reference::ImageName;
