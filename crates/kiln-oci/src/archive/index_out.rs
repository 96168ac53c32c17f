//! An OCI archive of an image index: the index (one image manifest per platform, and
//! BuildKit's attestation manifests beside them) is the one entry of `index.json`, named as a
//! single image would be. When the index holds one runnable image (one platform, with or
//! without attestations), `manifest.json` lists it for `docker load`; with several platforms
//! none is written, as `docker load` (20.10) takes images, not an index, and would give every
//! platform's image the same tag.

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
pub(super) fn write_index_archive<W: super::sink::Sink>(
    out: W,
    image: &ImageRef,
    blobs: &dyn BlobSource,
    opts: &WriteOptions,
) -> Result<()> {
    let index_bytes = read_json_blob(blobs, &image.manifest, "index")?;
    let index: Index = parse_json("index", &index_bytes)?;
    // The document must be the index its descriptor says it is.
    if let Some(media_type) = index.media_type.as_deref() {
        if media_type != image.manifest.media_type {
            return Err(Error::UnsupportedMediaType(media_type.to_string()));
        }
    }
    if index.schema_version != 2 || index.manifests.is_empty() {
        return Err(Error::InvalidImage(format!(
            "index {}: schemaVersion {} with {} manifests (expected 2, and at least one)",
            image.manifest.digest,
            index.schema_version,
            index.manifests.len()
        )));
    }
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
    plan.write(out, blobs, opts.mtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{read_oci_archive, MemoryBlobs, ReadOptions};
    use crate::{ImageConfig, ImageName, Platform, RootFs};

    #[test]
    fn an_index_archive_names_the_index_and_reads_back_as_its_image() {
        let mut blobs = MemoryBlobs::new();
        let layer_bytes = b"not really a tar, never opened here".to_vec();
        let layer = blobs.add(media_types::OCI_LAYER_TAR_GZIP, layer_bytes);
        let mut config = ImageConfig::new("linux", "amd64");
        config.rootfs = RootFs::layers(vec![crate::sha256_digest(b"diff")]);
        let config = blobs.add(media_types::OCI_CONFIG, to_canonical_json(&config).unwrap());
        let manifest = Manifest::new(config, vec![layer]);
        let mut image = blobs.add(
            media_types::OCI_MANIFEST,
            to_canonical_json(&manifest).unwrap(),
        );
        image.platform = Some(Platform::new("linux", "amd64"));
        let statement = blobs.add("application/vnd.in-toto+json", b"{}".to_vec());
        let mut unknown = ImageConfig::new("unknown", "unknown");
        unknown.rootfs = RootFs::layers(vec![statement.digest.clone()]);
        let unknown = blobs.add(
            media_types::OCI_CONFIG,
            to_canonical_json(&unknown).unwrap(),
        );
        let attestation = Manifest::new(unknown, vec![statement]);
        let mut entry = blobs.add(
            media_types::OCI_MANIFEST,
            to_canonical_json(&attestation).unwrap(),
        );
        entry.platform = Some(Platform::new("unknown", "unknown"));
        entry.annotations.insert(
            annotations::DOCKER_REFERENCE_TYPE.into(),
            "attestation-manifest".into(),
        );
        let index = blobs.add(
            media_types::OCI_INDEX,
            to_canonical_json(&Index::new(vec![image.clone(), entry])).unwrap(),
        );
        let reference =
            ImageRef::new(index.clone()).with_name(ImageName::parse("example.com/app:1").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.tar");
        let mut file = std::fs::File::create(&path).unwrap();
        super::super::write_oci_archive(&mut file, &reference, &blobs, &WriteOptions::default())
            .unwrap();
        drop(file);
        let read = read_oci_archive(&path, &ReadOptions::default()).unwrap();
        assert_eq!(read.image_ref().manifest.digest, image.digest);
        // The tar names the index once, and lists the one runnable image for docker load.
        let listed = std::process::Command::new("tar")
            .arg("-xOf")
            .arg(&path)
            .arg("manifest.json")
            .output()
            .unwrap();
        let docker: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(docker.as_array().unwrap().len(), 1);
        assert_eq!(docker[0]["RepoTags"][0], "example.com/app:1");
    }
}
