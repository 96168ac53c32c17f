//! Multi-platform images in the store: a name may point at an OCI image index whose entries are
//! the image manifests of each platform (and, possibly, attestation manifests about them).

use crate::{Result, Store, StoreError, StoredImage};
use kiln_oci::{from_json_slice, media_types, Descriptor, Index};

/// Indexes inside indexes are followed this deep at most.
const MAX_DEPTH: u32 = 4;

impl Store {
    /// The image manifests a name's descriptor stands for: itself for a manifest, every
    /// manifest entry of an index (nested indexes followed) that the store holds.
    pub fn manifests_of(&self, descriptor: &Descriptor) -> Result<Vec<Descriptor>> {
        let mut found = Vec::new();
        self.collect_manifests(descriptor, 0, &mut found)?;
        Ok(found)
    }

    fn collect_manifests(
        &self,
        descriptor: &Descriptor,
        depth: u32,
        found: &mut Vec<Descriptor>,
    ) -> Result<()> {
        if !media_types::is_index(&descriptor.media_type) {
            found.push(descriptor.clone());
            return Ok(());
        }
        if depth >= MAX_DEPTH {
            return Ok(());
        }
        let path = self.blob_path(&descriptor.digest);
        let index: Index = from_json_slice(&self.read_blob(&descriptor.digest)?)
            .map_err(|source| StoreError::Oci { path, source })?;
        for entry in index.manifests {
            if self.has_blob(&entry.digest) {
                self.collect_manifests(&entry, depth.saturating_add(1), found)?;
            }
        }
        Ok(())
    }

    /// The image of a name's descriptor for `platform` (`None`: the first image manifest):
    /// the descriptor itself when it is a manifest, else the index entry whose platform
    /// satisfies it. `Ok(None)` when the index has no such platform.
    pub fn image_for_platform(
        &self,
        descriptor: &Descriptor,
        platform: Option<&kiln_oci::Platform>,
    ) -> Result<Option<(Descriptor, StoredImage)>> {
        for manifest in self.manifests_of(descriptor)? {
            let image = self.image(&manifest)?;
            let is_attestation = image.config.os == "unknown"
                || manifest
                    .platform
                    .as_ref()
                    .is_some_and(|p| p.os == "unknown");
            if is_attestation {
                continue;
            }
            let have = manifest
                .platform
                .clone()
                .unwrap_or_else(|| image.config.platform());
            if platform.is_none_or(|wanted| have.satisfies(wanted)) {
                return Ok(Some((manifest, image)));
            }
        }
        Ok(None)
    }
}
