//! Multi-platform images in the store: a name may point at an OCI image index whose entries are
//! the image manifests of each platform (and, possibly, attestation manifests about them).

use crate::{Result, Store, StoreError, StoredImage};
use kiln_oci::{from_json_slice, media_types, Descriptor, Index, Platform};

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

/// One platform a name of the store stands for: the image manifest listed for it, and whether
/// the store holds that manifest. A multi-platform base pulled for some platforms keeps the
/// registry's whole index; the other platforms' manifests come when a build needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformEntry {
    /// The platform (from the index entry, else the image's config).
    pub platform: Platform,
    /// The image manifest's descriptor, its platform set.
    pub manifest: Descriptor,
    /// Whether the store holds the manifest (and so its config; its layers may be lazy).
    pub held: bool,
}

impl PlatformEntry {
    /// `os/arch[/variant]`.
    pub fn text(&self) -> String {
        platform_text(&self.platform)
    }
}

/// `os/arch[/variant]` of an OCI platform.
pub fn platform_text(platform: &Platform) -> String {
    match &platform.variant {
        Some(v) if !v.is_empty() => format!("{}/{}/{v}", platform.os, platform.architecture),
        _ => format!("{}/{}", platform.os, platform.architecture),
    }
}

/// Whether an index entry is an attestation (BuildKit's `unknown/unknown` manifests, or one
/// that says it refers to another manifest): never an image to run.
pub fn is_attestation_entry(entry: &Descriptor) -> bool {
    entry
        .annotations
        .contains_key(kiln_oci::annotations::DOCKER_REFERENCE_TYPE)
        || entry
            .platform
            .as_ref()
            .is_some_and(|p| p.os == "unknown" || p.architecture == "unknown")
}

impl Store {
    /// Every platform a name's descriptor lists, attestations left out, in index order: the
    /// descriptor itself for a manifest, each image entry of an index (nested indexes the
    /// store holds followed), whether or not the store holds its manifest.
    pub fn platforms_of(&self, descriptor: &Descriptor) -> Result<Vec<PlatformEntry>> {
        let mut found = Vec::new();
        self.collect_platforms(descriptor, 0, &mut found)?;
        Ok(found)
    }

    fn collect_platforms(
        &self,
        descriptor: &Descriptor,
        depth: u32,
        found: &mut Vec<PlatformEntry>,
    ) -> Result<()> {
        let held = self.has_blob(&descriptor.digest);
        if media_types::is_index(&descriptor.media_type) {
            if !held || depth >= MAX_DEPTH {
                return Ok(());
            }
            let path = self.blob_path(&descriptor.digest);
            let index: Index = from_json_slice(&self.read_blob(&descriptor.digest)?)
                .map_err(|source| StoreError::Oci { path, source })?;
            for entry in index.manifests {
                let is_image = media_types::is_manifest(&entry.media_type)
                    || media_types::is_index(&entry.media_type);
                if is_image && !is_attestation_entry(&entry) {
                    self.collect_platforms(&entry, depth.saturating_add(1), found)?;
                }
            }
            return Ok(());
        }
        if !media_types::is_manifest(&descriptor.media_type) {
            return Ok(());
        }
        let platform = match (&descriptor.platform, held) {
            (Some(platform), _) => platform.clone(),
            (None, true) => {
                let image = self.image(descriptor)?;
                if image.config.os == "unknown" {
                    return Ok(());
                }
                image.config.platform()
            }
            // Neither the entry nor a config says which platform: nothing to choose it by.
            (None, false) => return Ok(()),
        };
        let mut manifest = descriptor.clone();
        manifest.platform = Some(platform.clone());
        found.push(PlatformEntry {
            platform,
            manifest,
            held,
        });
        Ok(())
    }

    /// The entry of a name's descriptor for `wanted`: the first listed platform that satisfies
    /// it, held or not. `Ok(None)`: the image has no such platform.
    pub fn platform_entry(
        &self,
        descriptor: &Descriptor,
        wanted: &Platform,
    ) -> Result<Option<PlatformEntry>> {
        Ok(self
            .platforms_of(descriptor)?
            .into_iter()
            .find(|entry| entry.platform.satisfies(wanted)))
    }
}

impl Store {
    /// The entries of a name's index (nested indexes followed) whose manifests the store does
    /// not hold: other platforms of a base pulled for some, and attestation manifests that
    /// came with the index but were never pulled. Empty for a manifest, or a whole index.
    pub fn missing_entries(&self, descriptor: &Descriptor) -> Result<Vec<Descriptor>> {
        let mut missing = Vec::new();
        self.collect_missing(descriptor, 0, &mut missing)?;
        Ok(missing)
    }

    fn collect_missing(
        &self,
        descriptor: &Descriptor,
        depth: u32,
        missing: &mut Vec<Descriptor>,
    ) -> Result<()> {
        if !self.has_blob(&descriptor.digest) {
            missing.push(descriptor.clone());
            return Ok(());
        }
        if !media_types::is_index(&descriptor.media_type) || depth >= MAX_DEPTH {
            return Ok(());
        }
        let path = self.blob_path(&descriptor.digest);
        let index: Index = from_json_slice(&self.read_blob(&descriptor.digest)?)
            .map_err(|source| StoreError::Oci { path, source })?;
        for entry in &index.manifests {
            self.collect_missing(entry, depth.saturating_add(1), missing)?;
        }
        Ok(())
    }
}

impl Store {
    /// Copies a multi-platform image read from an archive into the store: every image of its
    /// index (each checked as [`Store::import`] checks one), then the index itself, checked
    /// against its descriptor. Nothing is named here. Returns the index's descriptor.
    pub fn import_index(
        &self,
        index: &Descriptor,
        index_bytes: &[u8],
        images: &[kiln_oci::ArchiveImage],
    ) -> Result<Descriptor> {
        for image in images {
            self.import(image)?;
        }
        let actual = self.put_blob(index_bytes)?;
        if actual != index.digest {
            return Err(StoreError::DigestMismatch {
                expected: index.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let mut descriptor = index.clone();
        descriptor.annotations.clear();
        Ok(descriptor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kiln_oci::{to_canonical_json, ImageConfig, Manifest, RootFs};

    /// An image for `arch` in the store: its manifest's descriptor (platform set).
    fn image(store: &Store, arch: &str) -> Descriptor {
        let mut config = ImageConfig::new("linux", arch);
        config.rootfs = RootFs::layers(vec![]);
        let bytes = to_canonical_json(&config).unwrap();
        let config = Descriptor::new(
            media_types::OCI_CONFIG,
            store.put_blob(&bytes).unwrap(),
            bytes.len() as u64,
        );
        let bytes = to_canonical_json(&Manifest::new(config, vec![])).unwrap();
        let mut manifest = Descriptor::new(
            media_types::OCI_MANIFEST,
            store.put_blob(&bytes).unwrap(),
            bytes.len() as u64,
        );
        manifest.platform = Some(Platform::new("linux", arch));
        manifest
    }

    #[test]
    fn an_index_pulled_for_one_platform_lists_the_others_as_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let amd64 = image(&store, "amd64");
        // Listed by the registry's index, never fetched.
        let mut arm64 = Descriptor::new(
            media_types::OCI_MANIFEST,
            kiln_oci::sha256_digest(b"arm64 manifest"),
            14,
        );
        arm64.platform = Some(Platform::new("linux", "arm64"));
        let mut attestation = Descriptor::new(
            media_types::OCI_MANIFEST,
            kiln_oci::sha256_digest(b"attestation"),
            11,
        );
        attestation.platform = Some(Platform::new("unknown", "unknown"));
        let bytes = to_canonical_json(&Index::new(vec![amd64.clone(), arm64.clone(), attestation]))
            .unwrap();
        let index = Descriptor::new(
            media_types::OCI_INDEX,
            store.put_blob(&bytes).unwrap(),
            bytes.len() as u64,
        );
        let listed = store.platforms_of(&index).unwrap();
        let shown: Vec<(String, bool)> = listed.iter().map(|e| (e.text(), e.held)).collect();
        assert_eq!(
            shown,
            [
                ("linux/amd64".to_string(), true),
                ("linux/arm64".to_string(), false)
            ]
        );
        let arm = store
            .platform_entry(&index, &Platform::new("linux", "arm64"))
            .unwrap()
            .unwrap();
        assert_eq!((arm.manifest.digest, arm.held), (arm64.digest, false));
        assert!(store
            .platform_entry(&index, &Platform::new("linux", "s390x"))
            .unwrap()
            .is_none());
        // Only what the store holds is an image to use.
        assert_eq!(
            store.manifests_of(&index).unwrap(),
            std::slice::from_ref(&amd64)
        );
        // A plain manifest stands for its own platform.
        let mut plain = amd64.clone();
        plain.platform = None;
        assert_eq!(store.platforms_of(&plain).unwrap()[0].text(), "linux/amd64");
    }
}
