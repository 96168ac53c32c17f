//! `docker save`'s archive format.
//!
//! kiln writes the classic layout that every Docker since 1.10 loads (and podman, skopeo's
//! `docker-archive:`, crane): `<config-hex>.json`, one `<layer-id>/` directory per layer with
//! `VERSION`, `json` and `layer.tar`, then `manifest.json` and `repositories`. Layer IDs are the
//! layers' chain IDs, so a layer that occurs twice gets two directories; the second
//! `layer.tar` is a symlink to the first, as `docker save` does. `layer.tar` holds the layer blob
//! as stored, compressed or not: Docker's loader (`image/tarexport/load.go`) passes every
//! layer file through `DecompressStream`, which sniffs gzip/zstd/xz/bzip2, and
//! containers/image (podman, skopeo) sniffs compression too, so a compressed `layer.tar` loads
//! without rewriting the layer. (Docker ≥ 25 also loads [`super::write_oci_archive`]'s output,
//! which carries the same `manifest.json`.)

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use super::files::{Extent, Files};
use super::image::{ArchiveFormat, ArchiveImage};
use super::tar_in::{normalize, read_up_to, TarIndex};
use super::{
    check_config, names_match, resolve_image, BlobSource, Content, ImageRef, Plan, ReadOptions,
    WriteOptions,
};
use crate::error::io_ctx;
use crate::json::parse_json;
use crate::media_types::{self, sniff_compression, LayerCompression};
use crate::{
    json_blob, sha256_digest, to_canonical_json, Algorithm, Descriptor, Digest, DigestHasher,
    DockerManifestEntry, DockerRepositories, Error, ImageConfig, Manifest, Result,
};

/// The per-layer `json` of the classic layout; only pre-1.10 loaders read it.
#[derive(Serialize)]
struct LegacyLayerJson<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<&'a str>,
    created: &'a str,
    os: &'a str,
    architecture: &'a str,
}

/// Writes `image` in `docker save`'s classic format (see the module docs).
pub fn write_docker_archive<W: Write>(
    out: W,
    image: &ImageRef,
    blobs: &dyn BlobSource,
    opts: &WriteOptions,
) -> Result<()> {
    write_docker_archive_to(super::sink::Stream(out), image, blobs, opts)
}

/// [`write_docker_archive`] into a file: blobs the source vouches for ([`BlobSource::open_verified`])
/// are copied by the kernel, at the disk's speed, without passing through memory.
pub fn write_docker_archive_file(
    out: &std::fs::File,
    image: &ImageRef,
    blobs: &dyn BlobSource,
    opts: &WriteOptions,
) -> Result<()> {
    write_docker_archive_to(super::sink::FileSink(out), image, blobs, opts)
}

fn write_docker_archive_to<W: super::sink::Sink>(
    out: W,
    image: &ImageRef,
    blobs: &dyn BlobSource,
    opts: &WriteOptions,
) -> Result<()> {
    let r = resolve_image(image, blobs)?;
    if r.manifest.config.digest.algorithm() != Algorithm::Sha256 {
        return Err(Error::InvalidImage(
            "docker archives need a sha256 config digest (the image ID)".into(),
        ));
    }
    let config_path = format!("{}.json", r.manifest.config.digest.hex());
    let chain = r.config.chain_ids();
    let created = r
        .config
        .created
        .as_deref()
        .unwrap_or("1970-01-01T00:00:00Z");

    let mut plan = Plan::default();
    plan.put(&config_path, Content::Bytes(r.config_bytes))?;
    let mut layer_paths = Vec::with_capacity(r.manifest.layers.len());
    let mut first_dir_of: BTreeMap<&Digest, String> = BTreeMap::new();
    for (i, (layer, chain_id)) in r.manifest.layers.iter().zip(&chain).enumerate() {
        let id = chain_id.hex();
        let parent = i.checked_sub(1).and_then(|p| chain.get(p)).map(Digest::hex);
        let json = to_canonical_json(&LegacyLayerJson {
            id,
            parent,
            created,
            os: &r.config.os,
            architecture: &r.config.architecture,
        })?;
        plan.put(&format!("{id}/VERSION"), Content::Bytes(b"1.0".to_vec()))?;
        plan.put(&format!("{id}/json"), Content::Bytes(json))?;
        let tar_path = format!("{id}/layer.tar");
        match first_dir_of.get(&layer.digest) {
            Some(first) => {
                plan.put(&tar_path, Content::Symlink(format!("../{first}/layer.tar")))?
            }
            None => {
                plan.put(&tar_path, Content::Blob(Box::new(layer.clone())))?;
                first_dir_of.insert(&layer.digest, id.to_owned());
            }
        }
        layer_paths.push(tar_path);
    }

    let repo_tags = image.repo_tags();
    let manifest = [DockerManifestEntry {
        config: config_path,
        repo_tags,
        layers: layer_paths,
        ..DockerManifestEntry::default()
    }];
    plan.put(
        "manifest.json",
        Content::Bytes(to_canonical_json(&manifest)?),
    )?;

    if let Some(top) = chain.last() {
        let mut repos = DockerRepositories::new();
        for name in image.unique_names() {
            if let Some(tag) = name.tag() {
                repos
                    .entry(name.familiar_repository())
                    .or_default()
                    .insert(tag.to_owned(), top.hex().to_owned());
            }
        }
        if !repos.is_empty() {
            plan.put("repositories", Content::Bytes(to_canonical_json(&repos)?))?;
        }
    }
    plan.write(out, blobs, opts.mtime)
}

/// Reads one image from a docker archive (`docker save`, `podman save`, skopeo
/// `docker-archive:`; the classic layout and Docker ≥ 25's OCI-flavoured one). With several
/// images in `manifest.json`, [`ReadOptions::name`] picks one by `RepoTags`.
///
/// The config is checked against the digest in its file name when it has one. `manifest.json`
/// names no layer digests, so a layer whose path is not `blobs/<alg>/<hex>` is hashed once
/// here to learn its digest; an uncompressed layer must match its diff ID. (A compressed
/// layer's diff ID can only be checked by decompressing it, which is the unpacker's job.) The
/// image gets a Docker schema 2 manifest built from what was found.
pub fn read_docker_archive(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<ArchiveImage> {
    let index = TarIndex::scan(path.as_ref())?;
    if !index.contains("manifest.json") {
        return Err(Error::InvalidArchive(
            "no manifest.json: not a docker archive (or a pre-1.10 one, not supported)".into(),
        ));
    }
    let entries: Vec<DockerManifestEntry> = index.read_json("manifest.json")?;
    let matching: Vec<&DockerManifestEntry> = match &opts.name {
        Some(wanted) => entries
            .iter()
            .filter(|e| e.repo_tags.iter().any(|t| names_match(t, wanted)))
            .collect(),
        None => entries.iter().collect(),
    };
    let entry = match matching.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::InvalidArchive(match &opts.name {
                Some(n) => format!("no image tagged {n:?} in manifest.json"),
                None => "manifest.json lists no images".into(),
            }))
        }
        many => {
            return Err(Error::InvalidArchive(format!(
                "the archive holds {} images; choose one by name",
                many.len()
            )))
        }
    };

    let config_bytes = index.read_small(&entry.config)?;
    let config_digest = sha256_digest(&config_bytes);
    if let Some(expected) = digest_in_path(&entry.config)? {
        if expected != config_digest {
            return Err(Error::DigestMismatch {
                what: format!("config {}", entry.config),
                expected,
                actual: config_digest,
            });
        }
    }
    let config: ImageConfig = parse_json("config", &config_bytes)?;
    if entry.layers.len() != config.rootfs.diff_ids.len() {
        return Err(Error::InvalidImage(format!(
            "manifest.json lists {} layers, the config {} diff_ids",
            entry.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }

    let mut layers = Vec::with_capacity(entry.layers.len());
    let mut layer_extents = Vec::with_capacity(entry.layers.len());
    for (i, (layer_path, diff_id)) in entry.layers.iter().zip(&config.rootfs.diff_ids).enumerate() {
        let (offset, size) = index.resolve(layer_path)?;
        let mut head = [0u8; 4];
        let n = read_up_to(&mut index.open_range(offset, size)?, &mut head)
            .map_err(io_ctx(format!("reading layer {layer_path}")))?;
        let compression = sniff_compression(&head[..n]);
        let digest = match digest_in_path(layer_path)? {
            Some(d) => d,
            None => hash_range(&index, offset, size, Algorithm::Sha256, layer_path)?,
        };
        if compression == LayerCompression::None && &digest != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("uncompressed layer {i} ({layer_path}) against its diff_id"),
                expected: diff_id.clone(),
                actual: digest,
            });
        }
        let media_type = match compression {
            LayerCompression::None => media_types::DOCKER_LAYER_TAR,
            LayerCompression::Gzip => media_types::DOCKER_LAYER_TAR_GZIP,
            LayerCompression::Zstd => media_types::DOCKER_LAYER_TAR_ZSTD,
        };
        layers.push(Descriptor::new(media_type, digest, size));
        layer_extents.push(Extent::InTar { offset, size });
    }

    let config_desc = Descriptor::new(
        media_types::DOCKER_CONFIG,
        config_digest,
        config_bytes.len() as u64,
    );
    let manifest = Manifest::new_docker(config_desc, layers);
    check_config(&manifest, &config)?;
    let (manifest_bytes, manifest_descriptor) = json_blob(media_types::DOCKER_MANIFEST, &manifest)?;
    Ok(ArchiveImage {
        format: ArchiveFormat::Docker,
        manifest_descriptor,
        manifest,
        manifest_bytes,
        config,
        config_bytes,
        names: entry.repo_tags.clone(),
        files: Files::Tar(index),
        layer_extents,
    })
}

/// The digest an archive path names: `blobs/<alg>/<hex>`, or `<hex>.json` / `<hex>.tar` /
/// `<hex>/…` forms with a 64-digit sha256 hex.
fn digest_in_path(path: &str) -> Result<Option<Digest>> {
    let norm = normalize(path)?;
    let parts: Vec<&str> = norm.split('/').collect();
    if let ["blobs", alg, hex] = parts.as_slice() {
        return Digest::parse(&format!("{alg}:{hex}")).map(Some);
    }
    if let [file] = parts.as_slice() {
        let stem = file
            .strip_suffix(".json")
            .or_else(|| file.strip_suffix(".tar"));
        if let Some(stem) = stem {
            if stem.len() == 64 && stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Digest::from_sha256_hex(stem).map(Some);
            }
        }
    }
    Ok(None)
}

fn hash_range(
    index: &TarIndex,
    offset: u64,
    size: u64,
    alg: Algorithm,
    what: &str,
) -> Result<Digest> {
    let mut hasher = DigestHasher::new(alg);
    let copied = io::copy(&mut index.open_range(offset, size)?, &mut hasher)
        .map_err(io_ctx(format!("hashing {what}")))?;
    if copied != size {
        return Err(Error::SizeMismatch {
            what: what.into(),
            expected: size,
            actual: copied,
        });
    }
    Ok(hasher.finish())
}
