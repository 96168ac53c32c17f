//! An OCI archive of an image index: the index (one image manifest per platform, and
//! BuildKit's attestation manifests beside them) is the one entry of `index.json`, named as a
//! single image would be. When the index holds one runnable image (one platform, with or
//! without attestations), `manifest.json` lists it for `docker load`; with several platforms
//! none is written, as `docker load` (20.10) takes images, not an index, and would give every
//! platform's image the same tag.

use std::io::Write;

use super::oci::ref_name_for_tag;
use super::{check_manifest, read_json_blob, BlobSource, Content, ImageRef, Plan, WriteOptions};
use crate::descriptor::annotations;
use crate::json::parse_json;
use crate::{
    media_types, to_canonical_json, Descriptor, DockerManifestEntry, Error, Index, Manifest,
    OciLayout, Result,
};

/// Whether an index entry is an attestation manifest rather than an image to run.
fn is_attestation(entry: &Descriptor) -> bool {
    entry
        .annotations
        .get(annotations::DOCKER_REFERENCE_TYPE)
        .is_some_and(|t| t == "attestation-manifest")
        || entry
            .platform
            .as_ref()
            .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// Writes `image`, whose descriptor is an OCI image index (not nested further), as an OCI
/// image layout tar. Every manifest of the index is written with its config and layers,
/// each blob verified as it streams.
pub(super) fn write_index_archive<W: Write>(
    out: W,
    image: &ImageRef,
    blobs: &dyn BlobSource,
    opts: &WriteOptions,
) -> Result<()> {
    let index_bytes = read_json_blob(blobs, &image.manifest, "index")?;
    let index: Index = parse_json("index", &index_bytes)?;
    let mut plan = Plan::default();
    let mut docker = Vec::new();
    for entry in &index.manifests {
        if !media_types::is_manifest(&entry.media_type) {
            return Err(Error::UnsupportedMediaType(entry.media_type.clone()));
        }
        let manifest_bytes = read_json_blob(blobs, entry, "manifest")?;
        let manifest: Manifest = parse_json("manifest", &manifest_bytes)?;
        check_manifest(&manifest, &entry.media_type)?;
        let config_bytes = read_json_blob(blobs, &manifest.config, "config")?;
        plan.put(&entry.digest.blob_path(), Content::Bytes(manifest_bytes))?;
        plan.put(
            &manifest.config.digest.blob_path(),
            Content::Bytes(config_bytes),
        )?;
        for layer in &manifest.layers {
            plan.put(
                &layer.digest.blob_path(),
                Content::Blob(Box::new(layer.clone())),
            )?;
        }
        if !is_attestation(entry) {
            docker.push(DockerManifestEntry {
                config: manifest.config.digest.blob_path(),
                repo_tags: image.repo_tags(),
                layers: manifest
                    .layers
                    .iter()
                    .map(|l| l.digest.blob_path())
                    .collect(),
                ..DockerManifestEntry::default()
            });
        }
    }
    let names = image.unique_names();
    let mut entries = Vec::new();
    if names.is_empty() {
        entries.push(image.manifest.clone());
    }
    for name in names {
        let mut entry = image.manifest.clone();
        entry
            .annotations
            .insert(annotations::CONTAINERD_IMAGE_NAME.into(), name.to_string());
        if let Some(tag) = name.tag() {
            entry
                .annotations
                .insert(annotations::REF_NAME.into(), ref_name_for_tag(tag)?);
        }
        entries.push(entry);
    }
    plan.put(
        "oci-layout",
        Content::Bytes(to_canonical_json(&OciLayout::default())?),
    )?;
    plan.put(
        "index.json",
        Content::Bytes(to_canonical_json(&Index::new(entries))?),
    )?;
    if docker.len() == 1 {
        plan.put("manifest.json", Content::Bytes(to_canonical_json(&docker)?))?;
    }
    plan.put(
        &image.manifest.digest.blob_path(),
        Content::Bytes(index_bytes),
    )?;
    plan.write(super::sink::Stream(out), blobs, opts.mtime)
}
