//! OCI and docker archives, and OCI image layout directories: writing them with stable bytes
//! from a [`BlobSource`], reading untrusted ones back.
//!
//! Written archives are plain tars with sorted entries, directory entries for every
//! directory, mode 0644 files / 0755 directories, uid/gid 0, no owner names and one mtime
//! ([`WriteOptions::mtime`]: 0, or `SOURCE_DATE_EPOCH` via [`WriteOptions::from_env`]).
//!
//! Writers verify every blob they copy against its descriptor as it streams through, except a
//! blob the source vouches for ([`BlobSource::open_verified`], the store's own blobs): writing
//! to a file, that one is copied by the kernel (`copy_file_range`), never read into memory nor
//! hashed again. When a writer fails, what it wrote so far is incomplete and must be discarded.

mod docker;
mod files;
mod image;
mod index_out;
mod oci;
mod sink;
mod tar_in;
mod tar_out;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

pub use docker::{read_docker_archive, write_docker_archive, write_docker_archive_file};
pub use image::{ArchiveFormat, ArchiveImage};
pub use oci::{
    read_oci_archive, read_oci_archive_index, read_oci_layout_dir, write_oci_archive,
    write_oci_archive_file, write_oci_layout_dir, ArchiveIndex,
};

use crate::error::io_ctx;
use crate::json::{parse_json, read_bounded};
use crate::{
    media_types, sha256_digest, Descriptor, Digest, Error, ImageConfig, ImageName, Manifest,
    Platform, Result, VerifyingReader, MAX_JSON_SIZE,
};

/// Where writers get blobs from: the store, another archive, memory. Implementations need not
/// verify what they return; the writers check every blob against its descriptor.
pub trait BlobSource {
    /// A reader over the whole blob with this digest.
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>>;

    /// The blob as a file whose content the source has already checked against its digest
    /// (a content-addressed store that hashed it when it was written), so a writer may copy it
    /// without reading or hashing it again; its length is still checked. `None` (the default):
    /// the blob is streamed through [`BlobSource::open`] and verified.
    fn open_verified(&self, _digest: &Digest) -> Option<File> {
        None
    }
}

/// Blobs held in memory, keyed by their sha256 digest.
#[derive(Debug, Clone, Default)]
pub struct MemoryBlobs {
    blobs: BTreeMap<Digest, Vec<u8>>,
}

impl MemoryBlobs {
    /// An empty set of blobs.
    pub fn new() -> MemoryBlobs {
        MemoryBlobs::default()
    }

    /// Stores `bytes` and returns a descriptor for them with `media_type`.
    pub fn add(&mut self, media_type: &str, bytes: Vec<u8>) -> Descriptor {
        let digest = sha256_digest(&bytes);
        let desc = Descriptor::new(media_type, digest.clone(), bytes.len() as u64);
        self.blobs.insert(digest, bytes);
        desc
    }

    /// Stores `bytes` under `digest` as given, whether or not it is theirs (for tests of
    /// verification).
    pub fn insert_unchecked(&mut self, digest: Digest, bytes: Vec<u8>) {
        self.blobs.insert(digest, bytes);
    }
}

impl BlobSource for MemoryBlobs {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        match self.blobs.get(digest) {
            Some(b) => Ok(Box::new(&b[..])),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {digest} not found"),
            )),
        }
    }
}

/// Blobs of an OCI image layout directory (`<root>/blobs/<algorithm>/<hex>`), such as kiln's
/// store or a directory written by [`write_oci_layout_dir`].
#[derive(Debug, Clone)]
pub struct LayoutBlobs {
    /// The layout directory.
    pub root: PathBuf,
}

impl LayoutBlobs {
    /// The blobs of the layout directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> LayoutBlobs {
        LayoutBlobs { root: root.into() }
    }
}

impl BlobSource for LayoutBlobs {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        let f = File::open(self.root.join(digest.blob_path()))?;
        Ok(Box::new(io::BufReader::new(f)))
    }
}

/// The image to write: its manifest (found in the [`BlobSource`] like every other blob) and
/// the names to tag it with.
#[derive(Debug, Clone)]
pub struct ImageRef {
    /// Descriptor of an OCI or Docker schema 2 image manifest. Its annotations are kept in
    /// `index.json`; a missing `platform` is filled in from the config.
    pub manifest: Descriptor,
    /// Tags: `org.opencontainers.image.ref.name` (the tag), `io.containerd.image.name` (the
    /// full name) and `RepoTags` (Docker's short `name:tag`). May be empty.
    pub names: Vec<ImageName>,
}

impl ImageRef {
    /// An image by its manifest's descriptor, with no name.
    pub fn new(manifest: Descriptor) -> ImageRef {
        ImageRef {
            manifest,
            names: Vec::new(),
        }
    }

    /// Adds a name the image is known by in the archive.
    pub fn with_name(mut self, name: ImageName) -> ImageRef {
        self.names.push(name);
        self
    }

    /// The names, duplicates removed, in the order given.
    fn unique_names(&self) -> Vec<&ImageName> {
        let mut out: Vec<&ImageName> = Vec::new();
        for n in &self.names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }

    /// Docker `RepoTags`, for names with a tag: fully qualified (`docker.io/library/a:1`), as
    /// skopeo writes them. `docker save` writes the short form, but podman reads a short
    /// `RepoTags` name as `localhost/…`; Docker normalises both forms to the same name.
    fn repo_tags(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in self.unique_names() {
            if let Some(t) = n.tagged() {
                let s = t.to_string();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }
}

/// Options for the writers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Modification time of every tar entry, in seconds since the epoch.
    pub mtime: u64,
}

impl WriteOptions {
    /// `mtime` from `SOURCE_DATE_EPOCH` when set (an integer number of seconds), else 0.
    pub fn from_env() -> Result<WriteOptions> {
        WriteOptions::from_source_date_epoch(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref())
    }

    /// `mtime` from a `SOURCE_DATE_EPOCH` value; unset or blank means 0.
    pub fn from_source_date_epoch(value: Option<&str>) -> Result<WriteOptions> {
        match value.map(str::trim) {
            None | Some("") => Ok(WriteOptions::default()),
            Some(v) => v
                .parse::<u64>()
                .map(|mtime| WriteOptions { mtime })
                .map_err(|_| {
                    Error::InvalidImage(format!(
                        "SOURCE_DATE_EPOCH must be a non-negative integer, got {v:?}"
                    ))
                }),
        }
    }
}

/// Options for the readers: which image to take from an archive that holds several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// A tag or name: matched against `org.opencontainers.image.ref.name`,
    /// `io.containerd.image.name` and `RepoTags` (names are compared normalised, so `alpine`
    /// finds `docker.io/library/alpine:latest`).
    pub name: Option<String>,
    /// For multi-platform images: the platform to take.
    pub platform: Option<Platform>,
    /// For multi-platform images: the entry of the image index to take, by its manifest's
    /// digest (an attestation manifest too); before `platform`.
    pub manifest: Option<Digest>,
}

/// A manifest and config, read and checked.
pub(crate) struct Resolved {
    pub(crate) manifest_bytes: Vec<u8>,
    pub(crate) manifest: Manifest,
    pub(crate) config_bytes: Vec<u8>,
    pub(crate) config: ImageConfig,
}

/// Reads the manifest and config of `image` from `blobs`, verifying both.
pub(crate) fn resolve_image(image: &ImageRef, blobs: &dyn BlobSource) -> Result<Resolved> {
    if !media_types::is_manifest(&image.manifest.media_type) {
        return Err(Error::UnsupportedMediaType(
            image.manifest.media_type.clone(),
        ));
    }
    let manifest_bytes = read_json_blob(blobs, &image.manifest, "manifest")?;
    let manifest: Manifest = parse_json("manifest", &manifest_bytes)?;
    check_manifest(&manifest, &image.manifest.media_type)?;
    let config_bytes = read_json_blob(blobs, &manifest.config, "config")?;
    let config: ImageConfig = parse_json("config", &config_bytes)?;
    check_config(&manifest, &config)?;
    Ok(Resolved {
        manifest_bytes,
        manifest,
        config_bytes,
        config,
    })
}

pub(crate) fn check_manifest(manifest: &Manifest, descriptor_media_type: &str) -> Result<()> {
    if manifest.schema_version != 2 {
        return Err(Error::InvalidImage(format!(
            "manifest schemaVersion {} (expected 2)",
            manifest.schema_version
        )));
    }
    if let Some(mt) = &manifest.media_type {
        if mt != descriptor_media_type {
            return Err(Error::InvalidImage(format!(
                "manifest says mediaType {mt:?}, its descriptor {descriptor_media_type:?}"
            )));
        }
    }
    if !media_types::is_config(&manifest.config.media_type) {
        return Err(Error::UnsupportedMediaType(
            manifest.config.media_type.clone(),
        ));
    }
    Ok(())
}

pub(crate) fn check_config(manifest: &Manifest, config: &ImageConfig) -> Result<()> {
    if config.rootfs.fs_type != "layers" {
        return Err(Error::InvalidImage(format!(
            "rootfs type {:?} (expected \"layers\")",
            config.rootfs.fs_type
        )));
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::InvalidImage(format!(
            "manifest has {} layers, config {} diff_ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    Ok(())
}

/// A small blob from `blobs`, verified against `desc`.
fn read_json_blob(blobs: &dyn BlobSource, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let what = format!("{what} {}", desc.digest);
    if desc.size > MAX_JSON_SIZE {
        return Err(Error::TooLarge {
            what,
            size: desc.size,
            limit: MAX_JSON_SIZE,
        });
    }
    let reader = blobs
        .open(&desc.digest)
        .map_err(io_ctx(format!("opening {what}")))?;
    let verified = VerifyingReader::new(reader, desc.digest.clone(), desc.size, what.clone());
    read_bounded(verified, MAX_JSON_SIZE, &what)
}

/// What goes into one tar entry.
#[derive(Debug)]
enum Content {
    Dir,
    Bytes(Vec<u8>),
    /// Streamed from the blob source and verified against the descriptor.
    Blob(Box<Descriptor>),
    Symlink(String),
}

/// The entries of an archive, sorted by path; parent directories are added automatically.
#[derive(Debug, Default)]
struct Plan {
    entries: BTreeMap<String, Content>,
}

impl Plan {
    fn put(&mut self, path: &str, content: Content) -> Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end = end.saturating_add(i).saturating_add(1);
            self.entries
                .entry(path[..end].to_owned())
                .or_insert(Content::Dir);
        }
        if let Some(prev) = self.entries.get(path) {
            let same_blob = match (prev, &content) {
                (Content::Blob(a), Content::Blob(b)) => a.digest == b.digest && a.size == b.size,
                (Content::Bytes(a), Content::Bytes(b)) => a == b,
                _ => false,
            };
            if same_blob {
                return Ok(());
            }
            return Err(Error::InvalidImage(format!(
                "two different contents for archive entry {path:?} (same digest, different sizes?)"
            )));
        }
        self.entries.insert(path.to_owned(), content);
        Ok(())
    }

    fn write<W: sink::Sink>(self, out: W, blobs: &dyn BlobSource, mtime: u64) -> Result<()> {
        let mut tar = tar_out::TarOut::new(out, mtime)?;
        for (path, content) in self.entries {
            match content {
                Content::Dir => tar.dir(&path)?,
                Content::Bytes(b) => tar.file(&path, &b)?,
                Content::Symlink(target) => tar.symlink(&path, &target)?,
                Content::Blob(desc) if tar.takes_files() => {
                    match blobs.open_verified(&desc.digest) {
                        Some(mut file) => tar.file_copied(&path, desc.size, &mut file)?,
                        None => {
                            let what = format!("blob {}", desc.digest);
                            let reader = blobs
                                .open(&desc.digest)
                                .map_err(io_ctx(format!("opening {what}")))?;
                            let mut verified =
                                VerifyingReader::new(reader, desc.digest.clone(), desc.size, what);
                            tar.file_from(&path, desc.size, &mut verified)?;
                        }
                    }
                }
                Content::Blob(desc) => {
                    let what = format!("blob {}", desc.digest);
                    let reader = blobs
                        .open(&desc.digest)
                        .map_err(io_ctx(format!("opening {what}")))?;
                    let mut verified =
                        VerifyingReader::new(reader, desc.digest.clone(), desc.size, what);
                    tar.file_from(&path, desc.size, &mut verified)?;
                }
            }
        }
        tar.finish()?;
        Ok(())
    }
}

/// Whether an archive's name (`RepoTags` entry, `io.containerd.image.name`) is the one asked
/// for, comparing normalised forms so `alpine` finds `docker.io/library/alpine:latest`.
fn names_match(candidate: &str, wanted: &str) -> bool {
    if candidate == wanted {
        return true;
    }
    match (ImageName::parse(candidate), ImageName::parse(wanted)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_date_epoch() {
        let f = WriteOptions::from_source_date_epoch;
        assert_eq!(f(None).unwrap().mtime, 0);
        assert_eq!(f(Some("")).unwrap().mtime, 0);
        assert_eq!(f(Some(" 1700000000\n")).unwrap().mtime, 1_700_000_000);
        assert!(f(Some("-1")).is_err());
        assert!(f(Some("1.5")).is_err());
        assert!(f(Some("yesterday")).is_err());
    }

    #[test]
    fn plan_adds_parent_directories_in_order() {
        let mut p = Plan::default();
        p.put("b/c/d", Content::Bytes(vec![1])).unwrap();
        p.put("a", Content::Bytes(vec![2])).unwrap();
        p.put("b/c/d", Content::Bytes(vec![1])).unwrap();
        assert!(p.put("b/c/d", Content::Bytes(vec![3])).is_err());
        let keys: Vec<&str> = p.entries.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "b/", "b/c/", "b/c/d"]);
    }

    #[test]
    fn names_match_normalised() {
        assert!(names_match("docker.io/library/alpine:latest", "alpine"));
        assert!(names_match("alpine:3", "docker.io/library/alpine:3"));
        assert!(names_match("1.0", "1.0"));
        assert!(!names_match("1.0", "app:1.0"));
        assert!(!names_match("alpine:3", "alpine:4"));
    }
}
