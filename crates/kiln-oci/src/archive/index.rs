//! An OCI image layout tar holding an image index (a multi-platform image): `index.json` names
//! the index, the index lists one manifest per platform, and every manifest, config and layer
//! is in `blobs/`. skopeo (`oci-archive:FILE`), umoci and containerd read it; `docker load`
//! of Docker 20.10 reads only one image per `manifest.json` entry, so none is written.

use std::io::Write;

use super::{read_json_blob, resolve_image, BlobSource, Content, ImageRef, Plan, WriteOptions};
use crate::descriptor::annotations;
use crate::json::parse_json;
use crate::{media_types, to_canonical_json, Error, Index, OciLayout, Result};

/// Nested indexes deeper than this are refused (kiln writes one level).
const MAX_DEPTH: u32 = 4;

/// Writes `image` (whose `manifest` is the descriptor of an image index) as an OCI image
/// layout in a tar, named by `image.names` in `index.json`.
pub fn write_oci_index_archive<W: Write>(
    out: W,
    image: &ImageRef,
    blobs: &dyn BlobSource,
    opts: &WriteOptions,
) -> Result<()> {
    if !media_types::is_index(&image.manifest.media_type) {
        return Err(Error::UnsupportedMediaType(
            image.manifest.media_type.clone(),
        ));
    }
    let mut plan = Plan::default();
    plan.put(
        "oci-layout",
        Content::Bytes(to_canonical_json(&OciLayout::default())?),
    )?;
    put_index(&mut plan, &image.manifest, blobs, 0)?;
    let mut named = Vec::new();
    let names = image.unique_names();
    if names.is_empty() {
        named.push(image.manifest.clone());
    }
    for name in names {
        let mut descriptor = image.manifest.clone();
        descriptor
            .annotations
            .insert(annotations::CONTAINERD_IMAGE_NAME.into(), name.to_string());
        if let Some(tag) = name.tag() {
            descriptor.annotations.insert(
                annotations::REF_NAME.into(),
                super::oci::ref_name_for_tag(tag)?,
            );
        }
        named.push(descriptor);
    }
    plan.put(
        "index.json",
        Content::Bytes(to_canonical_json(&Index::new(named))?),
    )?;
    plan.write(out, blobs, opts.mtime)
}

/// Adds an index and everything below it to the archive's plan.
fn put_index(
    plan: &mut Plan,
    descriptor: &crate::Descriptor,
    blobs: &dyn BlobSource,
    depth: u32,
) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(Error::InvalidImage("indexes nested too deep".into()));
    }
    let bytes = read_json_blob(blobs, descriptor, "index")?;
    let index: Index = parse_json("index", &bytes)?;
    plan.put(&descriptor.digest.blob_path(), Content::Bytes(bytes))?;
    for child in &index.manifests {
        if media_types::is_index(&child.media_type) {
            put_index(plan, child, blobs, depth.saturating_add(1))?;
            continue;
        }
        let resolved = resolve_image(&ImageRef::new(child.clone()), blobs)?;
        plan.put(
            &child.digest.blob_path(),
            Content::Bytes(resolved.manifest_bytes),
        )?;
        plan.put(
            &resolved.manifest.config.digest.blob_path(),
            Content::Bytes(resolved.config_bytes),
        )?;
        for layer in &resolved.manifest.layers {
            plan.put(
                &layer.digest.blob_path(),
                Content::Blob(Box::new(layer.clone())),
            )?;
        }
    }
    Ok(())
}
