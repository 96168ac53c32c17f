//! The OCI image index of a multi-platform build: one entry per platform's image manifest,
//! each with its platform (`variant` where it applies), plus any extra entries a caller adds
//! (attestation manifests refer to the image they describe and go in the same index).

use crate::BuildError;
use kiln_oci::{media_types, to_canonical_json, Descriptor, Index};
use kiln_store::Store;

/// Puts an image index listing `images` (per-platform manifest descriptors; each must name its
/// platform) and then `extra` (e.g. attestation manifests) into the store; its descriptor.
/// Images of the same platform and manifest are listed once. `--annotation`s of the index go
/// on it, of manifest descriptors on each image's entry, of the index descriptor on the
/// descriptor returned (which an OCI archive's `index.json` lists).
pub fn put_index(
    store: &Store,
    images: &[Descriptor],
    extra: &[Descriptor],
    annotations: &crate::annotations::Annotations,
) -> Result<Descriptor, BuildError> {
    let mut manifests: Vec<Descriptor> = Vec::with_capacity(images.len() + extra.len());
    for image in images {
        if image.platform.is_none() {
            return Err(BuildError::Internal(
                "an image manifest of an index has no platform",
            ));
        }
        // An index entry names the image; names (ref annotations) belong to the index.
        let mut entry = Descriptor::new(image.media_type.clone(), image.digest.clone(), image.size);
        entry.platform = image.platform.clone();
        entry
            .annotations
            .extend(annotations.manifest_descriptor.clone());
        if !manifests.contains(&entry) {
            manifests.push(entry);
        }
    }
    manifests.extend(extra.iter().cloned());
    let mut index = Index::new(manifests);
    index.annotations.extend(annotations.index.clone());
    let bytes = to_canonical_json(&index).map_err(crate::ExecError::oci("image index"))?;
    let digest = store.put_blob(&bytes).map_err(BuildError::Store)?;
    let mut descriptor = Descriptor::new(media_types::OCI_INDEX, digest, bytes.len() as u64);
    descriptor
        .annotations
        .extend(annotations.index_descriptor.clone());
    Ok(descriptor)
}

/// The image manifests of an index in the store (its entries that have a platform and are
/// not attestations), in index order.
pub fn platform_manifests(
    store: &Store,
    index: &Descriptor,
) -> Result<Vec<Descriptor>, BuildError> {
    let bytes = store.read_blob(&index.digest).map_err(BuildError::Store)?;
    let index: Index = kiln_oci::from_json_slice(&bytes)
        .map_err(crate::ExecError::oci(index.digest.to_string()))?;
    Ok(index
        .manifests
        .into_iter()
        .filter(|d| {
            media_types::is_manifest(&d.media_type)
                && d.platform
                    .as_ref()
                    .is_some_and(|p| p.os != "unknown" && p.architecture != "unknown")
        })
        .collect())
}

/// A platform as a directory name, as buildx writes multi-platform local outputs:
/// `linux_arm64`, `linux_arm_v7`.
pub fn platform_dir_name(platform: &kiln_oci::Platform) -> String {
    let mut name = format!("{}_{}", platform.os, platform.architecture);
    if let Some(variant) = platform.variant.as_deref().filter(|v| !v.is_empty()) {
        name.push('_');
        name.push_str(variant);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_lists_every_platform_once_then_the_extras() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let manifest = |text: &str, arch: &str, variant: Option<&str>| {
            let digest = store
                .put_blob(text.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            let mut d = Descriptor::new(media_types::OCI_MANIFEST, digest, text.len() as u64);
            d.platform = Some(kiln_oci::Platform {
                variant: variant.map(str::to_string),
                ..kiln_oci::Platform::new("linux", arch)
            });
            d
        };
        let amd64 = manifest("{\"a\":1}", "amd64", None);
        let arm = manifest("{\"a\":2}", "arm", Some("v7"));
        let mut attestation = manifest("{\"a\":3}", "unknown", None);
        attestation.platform = Some(kiln_oci::Platform::new("unknown", "unknown"));
        let index = put_index(
            &store,
            &[amd64.clone(), arm.clone(), amd64.clone()],
            &[attestation],
            &crate::annotations::Annotations::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(index.media_type, media_types::OCI_INDEX);
        let listed = platform_manifests(&store, &index).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed, [amd64, arm.clone()]);
        assert_eq!(
            listed[1].platform.as_ref().and_then(|p| p.variant.clone()),
            Some("v7".to_string())
        );
        assert_eq!(
            platform_dir_name(arm.platform.as_ref().unwrap_or(&Default::default())),
            "linux_arm_v7"
        );
        let raw: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&index.digest).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(3));
    }
}
