//! Base images from registries. A `FROM` image is looked up in the store first (so builds work
//! offline with what the store holds) and pulled when it is missing, or always with `--pull`.
//! The plan only needs the manifest and config (for the base's ENV, WORKDIR, SHELL, ONBUILD);
//! the layers are pulled when the stage runs, beside the other stages. One reference is
//! resolved once per build, so the plan and the build see the same image even if its tag moves
//! meanwhile.

use crate::lookup::find_in_store;
use crate::{BuildError, ExecError};
use kiln_oci::{Descriptor, ImageName, Manifest};
use kiln_plan::Platform;
use kiln_registry::{Progress as TransferSink, Registry};
use kiln_store::Store;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// When a base image is asked of the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when the store does not hold it (docker build's default).
    #[default]
    Missing,
    /// Every build asks the registry what the tag means now (`--pull`).
    Always,
}

impl PullPolicy {
    /// `--pull[=always|missing|never]` (`true`/`false` as buildx takes them); `None` for
    /// never: no registry is asked for a base image.
    pub fn parse_flag(value: Option<&str>) -> Result<Option<PullPolicy>, String> {
        match value {
            None | Some("missing") => Ok(Some(PullPolicy::Missing)),
            Some("always" | "true") => Ok(Some(PullPolicy::Always)),
            Some("never" | "false") => Ok(None),
            Some(other) => Err(format!("--pull={other}: expected always, missing or never")),
        }
    }
}

/// Where an image was found ([`RemoteOptions::locate`]).
pub enum Located {
    /// In an archive or layout directory, read and checked, not yet in the store.
    Archive(Box<kiln_oci::ArchiveImage>),
    /// A manifest resolved for this build, in the store or at the registry (what is still
    /// there is fetched by [`RemoteOptions::complete`]).
    Manifest(Box<Descriptor>),
}

/// How a build reaches registries; the default is offline (the store only).
#[derive(Default)]
pub struct RemoteOptions {
    /// `None`: nothing is pulled; a base image must be in the store.
    pub registry: Option<Arc<Registry>>,
    /// When base images are asked of the registry.
    pub pull: PullPolicy,
    /// `--cache-from`: caches read before the build, asked when the store's cache misses.
    pub cache_from: Vec<Arc<dyn crate::cache::CacheSource>>,
    /// `--cache-to type=inline`: the image's config carries the cache records of its layers.
    pub inline_cache: bool,
    /// Manifests resolved in this build: reference → the manifest, and the registry's answer
    /// while its layers are still to be fetched.
    resolved: Mutex<BTreeMap<String, Resolution>>,
    /// References that failed to resolve, with the error: the plan goes on without their
    /// config (a stage the target does not need may name an image nobody can pull), and the
    /// build that needs one fails with that error instead of asking again.
    failed: Mutex<BTreeMap<String, Arc<BuildError>>>,
}

#[derive(Debug, Clone)]
struct Resolution {
    manifest: Descriptor,
    /// Resolved from a registry, not yet in the store: its manifest goes there only after its
    /// layers, so a manifest in the store always has its blobs.
    pending: Option<Arc<kiln_registry::Resolved>>,
    /// What the store names the reference after the pull: the registry's index of a
    /// multi-platform image (every platform listed, the pulled ones held), else the manifest.
    names: Option<Descriptor>,
}

impl RemoteOptions {
    /// Options reaching `registry` (none: offline) with `pull`.
    pub fn new(registry: Option<Arc<Registry>>, pull: PullPolicy) -> RemoteOptions {
        RemoteOptions {
            registry,
            pull,
            ..RemoteOptions::default()
        }
    }

    fn remembered(&self, reference: &str) -> Option<Resolution> {
        self.resolved
            .lock()
            .ok()
            .and_then(|map| map.get(reference).cloned())
    }

    fn remember(&self, reference: &str, resolution: Resolution) {
        if let Ok(mut map) = self.resolved.lock() {
            map.insert(reference.to_string(), resolution);
        }
    }

    /// The build's one way to find an image: `oci-archive:`, `docker-archive:` and `oci:`
    /// references are read from their file or directory; any other name is looked up in the
    /// store and, when it is not there (or with `--pull`), resolved with the registry.
    pub fn locate(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
        progress: TransferSink,
    ) -> Result<Located, BuildError> {
        match crate::lookup::read_transport_for(reference, Some(platform))? {
            Some(archive) => Ok(Located::Archive(Box::new(archive))),
            None => Ok(Located::Manifest(Box::new(
                self.manifest(store, reference, platform, progress)?,
            ))),
        }
    }

    /// The manifest `reference` means for this build, with its manifest and config blobs in
    /// the store (its layers may still be missing: see [`RemoteOptions::complete`]).
    pub fn manifest(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
        progress: TransferSink,
    ) -> Result<Descriptor, BuildError> {
        if let Some(known) = self.remembered(&memo_key(reference, platform)) {
            return Ok(known.manifest);
        }
        if let Some(error) = self
            .failed
            .lock()
            .ok()
            .and_then(|f| f.get(&memo_key(reference, platform)).cloned())
        {
            return Err(BuildError::Failed(error));
        }
        self.resolve(store, reference, platform, progress)
            .map_err(|error| {
                let error = Arc::new(error);
                if let Ok(mut failed) = self.failed.lock() {
                    failed.insert(memo_key(reference, platform), Arc::clone(&error));
                }
                BuildError::Failed(error)
            })
    }

    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
        progress: TransferSink,
    ) -> Result<Descriptor, BuildError> {
        let name = ImageName::parse(reference).map_err(ExecError::oci(reference))?;
        let store_first = self.pull == PullPolicy::Missing || self.registry.is_none();
        if store_first {
            if let Some(found) = find_in_store(store, &name, platform) {
                self.remember(
                    &memo_key(reference, platform),
                    Resolution {
                        manifest: found.clone(),
                        pending: None,
                        names: None,
                    },
                );
                return Ok(found);
            }
        }
        let Some(registry) = &self.registry else {
            return Err(crate::lookup::not_in_store(store, &name, reference, platform).into());
        };
        // A multi-platform base the store keeps as an index without this platform's image:
        // that manifest, by the digest the index lists, so the index stays whole and the
        // build uses the image the store's name means even if the tag has moved since.
        let listed = store_first
            .then(|| crate::lookup::listed_in_store(store, &name, platform))
            .flatten();
        let mut resolved = match &listed {
            Some((_, entry)) => registry
                .resolve(&name.with_digest(entry.digest.clone()), &platform.to_oci())
                .map_err(pull_error(reference))?,
            None => registry
                .resolve(&name, &platform.to_oci())
                .map_err(pull_error(reference))?,
        };
        let names = match (&listed, &resolved.index) {
            (Some((index, entry)), _) => {
                resolved.manifest.platform = entry.platform.clone();
                index.clone()
            }
            (None, Some((index, _))) => index.clone(),
            (None, None) => resolved.manifest.clone(),
        };
        let manifest: Manifest = kiln_oci::from_json_slice(&resolved.manifest_bytes)
            .map_err(ExecError::oci(name.to_string()))?;
        // A config is a small JSON document; a manifest may not make kiln download more.
        if manifest.config.size > kiln_oci::MAX_JSON_SIZE {
            return Err(ExecError::oci(name.to_string())(kiln_oci::Error::TooLarge {
                what: "the config the manifest names".into(),
                size: manifest.config.size,
                limit: kiln_oci::MAX_JSON_SIZE,
            })
            .into());
        }
        registry
            .fetch_blob(&name, &manifest.config, store, progress)
            .map_err(pull_error(reference))?;
        let descriptor = resolved.manifest.clone();
        self.remember(
            &memo_key(reference, platform),
            Resolution {
                manifest: descriptor.clone(),
                pending: Some(Arc::new(resolved)),
                names: Some(names),
            },
        );
        Ok(descriptor)
    }

    /// The config of the image `reference` resolved to (its manifest from the registry's
    /// answer or the store; the config is in the store either way).
    pub fn config(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
        progress: TransferSink,
    ) -> Result<kiln_oci::ImageConfig, BuildError> {
        let descriptor = self.manifest(store, reference, platform, progress)?;
        let bytes = match self
            .remembered(&memo_key(reference, platform))
            .and_then(|r| r.pending)
        {
            Some(resolved) => resolved.manifest_bytes.clone(),
            None => store.read_blob(&descriptor.digest)?,
        };
        let manifest: Manifest =
            kiln_oci::from_json_slice(&bytes).map_err(ExecError::oci(reference))?;
        let config = kiln_oci::from_json_slice(&store.read_blob(&manifest.config.digest)?)
            .map_err(ExecError::oci(reference))?;
        Ok(config)
    }

    /// Makes sure every layer of the image `reference` resolved to is in the store, pulling
    /// the missing ones (several at once), and names the image in the store so later builds
    /// find it offline.
    pub fn complete(
        &self,
        store: &Store,
        reference: &str,
        manifest: &Descriptor,
        platform: &Platform,
        progress: TransferSink,
    ) -> Result<(), BuildError> {
        let name = ImageName::parse(reference).map_err(ExecError::oci(reference))?;
        let remembered = self.remembered(&memo_key(reference, platform));
        let pending = remembered.as_ref().and_then(|r| r.pending.clone());
        let mut names = remembered.and_then(|r| r.names);
        match (&self.registry, pending) {
            // What was planned with, fetched now: layers, config, then the manifest.
            (Some(registry), Some(resolved)) => {
                registry
                    .pull_resolved(&name, &resolved, store, progress)
                    .map_err(pull_error(reference))?;
            }
            _ => {
                let parsed: Manifest =
                    kiln_oci::from_json_slice(&store.read_blob(&manifest.digest)?)
                        .map_err(ExecError::oci(reference))?;
                if parsed.layers.iter().all(|l| store.has_blob(&l.digest)) {
                    return Ok(());
                }
                // A manifest the store holds without all its layers (a digest only): the rest
                // comes from the registry, if one may be asked.
                let Some(registry) = &self.registry else {
                    return Err(BuildError::LayersMissing {
                        reference: reference.to_string(),
                    });
                };
                registry
                    .pull(
                        &name.with_digest(manifest.digest.clone()),
                        &platform.to_oci(),
                        store,
                        progress,
                    )
                    .map_err(pull_error(reference))?;
                // The store's name may already lead to this manifest (an index): it stays.
                if crate::lookup::find_in_store(store, &name, platform).as_ref() != Some(manifest) {
                    names = Some(manifest.clone());
                }
            }
        }
        if let (Some(names), Some(_)) = (&names, name.tag()) {
            name_in_store(store, &name, names)?;
        }
        self.remember(
            &memo_key(reference, platform),
            Resolution {
                manifest: manifest.clone(),
                pending: None,
                names: None,
            },
        );
        Ok(())
    }
}

/// What a resolution is remembered under: one reference means one manifest per platform.
fn memo_key(reference: &str, platform: &Platform) -> String {
    format!("{reference} for {platform}")
}

/// Names an image in the store under its full reference (`docker.io/library/x:1`): one pulled
/// from there, or pushed there.
pub fn name_in_store(
    store: &Store,
    name: &ImageName,
    manifest: &Descriptor,
) -> Result<(), BuildError> {
    let untagged = ImageName::parse_normalized(&format!("{}/{}", name.domain(), name.path()))
        .map_err(ExecError::oci(name.to_string()))?;
    let tag = name.tag().unwrap_or("latest");
    let full = untagged
        .with_tag(tag)
        .map_err(ExecError::oci(name.to_string()))?;
    store.tag(&full.to_string(), tag, manifest)?;
    Ok(())
}

/// A [`BuildError::Pull`] of the image `reference` names.
fn pull_error(reference: &str) -> impl FnOnce(kiln_registry::RegistryError) -> BuildError + '_ {
    move |source| BuildError::Pull {
        reference: reference.to_string(),
        source: Box::new(source),
    }
}
