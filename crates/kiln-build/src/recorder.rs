//! What a build used, recorded while it runs, for its provenance: the hooks `build.rs` calls
//! (base images, `ADD` URLs, git sources, step keys). A leaf module, so `attest` (which reads
//! the built image) and `build` (which records) do not use each other.

use kiln_attest::Material;
use kiln_oci::{Descriptor, Digest, Platform};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What a build used, recorded while it runs (from any stage's thread).
#[derive(Debug, Default)]
pub struct Recorder {
    materials: Mutex<Vec<Material>>,
    steps: Mutex<BTreeMap<usize, (String, bool)>>,
}

/// What [`Recorder`] saw: the materials, and each keyed step's key and whether it was cached,
/// by step number.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Base and `--from` images, `ADD` URLs, git sources.
    pub materials: Vec<Material>,
    /// Step number → (cache key, cached).
    pub steps: BTreeMap<usize, (String, bool)>,
}

/// An OCI platform from a plan platform.
pub fn oci_platform(platform: &kiln_plan::Platform) -> Platform {
    let mut oci = Platform::new(platform.os.clone(), platform.architecture.clone());
    oci.variant = platform.variant.clone();
    oci
}

impl Recorder {
    fn material(&self, material: Material) {
        if let Ok(mut materials) = self.materials.lock() {
            materials.push(material);
        }
    }

    /// A base or `--from` image, as written, and the manifest it resolved to.
    pub(crate) fn image(
        &self,
        reference: &str,
        manifest: &Descriptor,
        platform: &kiln_plan::Platform,
    ) {
        self.material(Material::Image {
            reference: reference.to_string(),
            digest: manifest.digest.clone(),
            platform: Some(oci_platform(platform)),
        });
    }

    /// An `ADD` URL and the digest of its content (the `--checksum`, or what was downloaded).
    pub(crate) fn url(&self, url: &str, digest: &str) {
        if let Ok(digest) = Digest::parse(digest) {
            self.material(Material::Http {
                url: url.to_string(),
                digest,
            });
        }
    }

    /// A git source and the commit its ref named.
    pub(crate) fn git(&self, url: &str, reference: &str, commit: &str) {
        self.material(Material::Git {
            url: url.to_string(),
            reference: (!reference.is_empty()).then(|| reference.to_string()),
            commit: commit.to_string(),
        });
    }

    /// A keyed step: its key and whether its result came from the cache.
    pub(crate) fn step(&self, number: usize, key: &str, cached: bool) {
        if let Ok(mut steps) = self.steps.lock() {
            steps.insert(number, (key.to_string(), cached));
        }
    }

    /// Everything recorded so far.
    pub(crate) fn recorded(&self) -> Recorded {
        Recorded {
            materials: self.materials.lock().map(|m| m.clone()).unwrap_or_default(),
            steps: self.steps.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }
}
