//! Attestation manifests of the store's images. Each is an entry of `index.json` without a
//! name, annotated as BuildKit annotates them in an image index
//! (`vnd.docker.reference.type: attestation-manifest`, `vnd.docker.reference.digest`: the
//! image manifest it is about), so `prune` keeps its blobs exactly as long as the entry is
//! there, and tools reading the layout see what they would see in a pushed index.

use crate::{Result, Store};
use kiln_oci::{Descriptor, Digest};

const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
const ATTESTATION_MANIFEST: &str = "attestation-manifest";

fn attests(entry: &Descriptor) -> Option<&str> {
    if entry.annotations.get(REFERENCE_TYPE).map(String::as_str) != Some(ATTESTATION_MANIFEST) {
        return None;
    }
    entry.annotations.get(REFERENCE_DIGEST).map(String::as_str)
}

impl Store {
    /// Records `entry` (an attestation manifest's index entry, its blobs already in the store)
    /// as the attestations of the image manifest it names. It replaces an earlier one for the
    /// same image; attestations of images no name points at any more are dropped, so their
    /// blobs go with the next `prune`.
    pub fn put_attestations(&self, entry: &Descriptor) -> Result<()> {
        let _lock = self.lock()?;
        let mut index = self.index()?;
        let image = attests(entry).map(str::to_string);
        let named: std::collections::BTreeSet<String> = index
            .manifests
            .iter()
            .filter(|d| attests(d).is_none())
            .map(|d| d.digest.as_str().to_string())
            .collect();
        index.manifests.retain(|d| match attests(d) {
            None => true,
            Some(about) => Some(about) != image.as_deref() && named.contains(about),
        });
        index.manifests.push(entry.clone());
        index.manifests.sort_by(|a, b| {
            (&a.annotations, a.digest.as_str()).cmp(&(&b.annotations, b.digest.as_str()))
        });
        self.write_index(&index)
    }

    /// The attestation manifest entry recorded for the image manifest `image`, if any.
    pub fn attestations_for(&self, image: &Digest) -> Result<Option<Descriptor>> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .find(|d| attests(d) == Some(image.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(about: &Digest, body: &[u8]) -> Descriptor {
        let mut d = Descriptor::new(
            "application/vnd.oci.image.manifest.v1+json",
            kiln_oci::sha256_digest(body),
            body.len() as u64,
        );
        d.annotations
            .insert(REFERENCE_TYPE.into(), ATTESTATION_MANIFEST.into());
        d.annotations
            .insert(REFERENCE_DIGEST.into(), about.as_str().into());
        d
    }

    #[test]
    fn replaced_and_dropped_with_their_image_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = Descriptor::new(
            "application/vnd.oci.image.manifest.v1+json",
            kiln_oci::sha256_digest(b"image"),
            5,
        );
        store.tag("example.com/a:1", "1", &image).unwrap();
        store
            .put_attestations(&entry(&image.digest, b"one"))
            .unwrap();
        store
            .put_attestations(&entry(&image.digest, b"two"))
            .unwrap();
        let found = store.attestations_for(&image.digest).unwrap().unwrap();
        assert_eq!(found.digest, kiln_oci::sha256_digest(b"two"));
        assert_eq!(store.index().unwrap().manifests.len(), 2);
        // Not an image: `images` lists names only.
        assert_eq!(store.images().unwrap().len(), 1);

        // The name moves to another image: the old attestations go at the next recording.
        let other = Descriptor::new(
            "application/vnd.oci.image.manifest.v1+json",
            kiln_oci::sha256_digest(b"other"),
            5,
        );
        store.tag("example.com/a:1", "1", &other).unwrap();
        store
            .put_attestations(&entry(&other.digest, b"three"))
            .unwrap();
        assert_eq!(store.attestations_for(&image.digest).unwrap(), None);
        assert!(store.attestations_for(&other.digest).unwrap().is_some());
        assert_eq!(store.index().unwrap().manifests.len(), 2);
    }
}
