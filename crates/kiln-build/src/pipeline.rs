//! A whole `kiln build` after its arguments are read: caches imported and their cache mounts
//! restored, the plan built, the outputs written, the image pushed, the caches exported, the
//! image named, and the result files (`--iidfile`, `--metadata-file`) written — in that order,
//! so a name only ever points at an image whose outputs all exist.

use crate::build::{build, BuildOptions, Built, Event, Progress};
use crate::cache::{CacheSink, ExportInput};
use crate::output::{export, OutputKind, OutputSpec};
use crate::remote::{PullPolicy, RemoteOptions};
use crate::shared_cache::{
    describe_location, CacheExport, CacheExporter, CacheImport, CacheLocation, ImportedCache,
};
use crate::BuildError;
use kiln_context::Context;
use kiln_oci::ImageName;
use kiln_plan::{Plan, Platform};
use kiln_registry::Registry;
use kiln_store::Store;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most bytes of cache mounts a build restores from its `--cache-from` caches.
pub const MOUNTS_RESTORED_MAX: u64 = 4 << 30;

/// Stages run at once when `--jobs` does not say: one per core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Everything a build does besides running its steps, and where it goes.
pub struct Build<'a> {
    /// The store images, layers and cache records live in.
    pub store: &'a Store,
    /// Where events go.
    pub progress: &'a dyn Progress,
    /// The registry client: `--cache-from`/`--cache-to` registries and pushes.
    pub registry: Arc<Registry>,
    /// `-o` outputs other than `type=registry` (those are in `push_to`).
    pub outputs: Vec<OutputSpec>,
    /// `-t` names: the outputs' names, and the store's names once everything is written.
    pub names: Vec<ImageName>,
    /// Where the image is pushed.
    pub push_to: Vec<ImageName>,
    /// `--cache-from`: caches asked when the store's cache misses.
    pub cache_from: Vec<CacheImport>,
    /// `--cache-to`: `inline` goes into the image's config, the others are exported at the end.
    pub cache_to: Vec<CacheExport>,
    /// `--iidfile`: the image id is written there.
    pub iidfile: Option<PathBuf>,
    /// `--metadata-file`: digests and names as JSON, as buildx writes it.
    pub metadata_file: Option<PathBuf>,
    /// `--provenance`, `--sbom`: what to attest (see [`crate::attest`]).
    pub attest: crate::attest::AttestOptions,
}

impl Build<'_> {
    /// How the build reaches registries: base images pulled by `pull` (`None`: never; a cache
    /// may still be read), an inline cache when `--cache-to type=inline` asks for one.
    pub fn remote(&self, pull: Option<PullPolicy>) -> RemoteOptions {
        let registry = pull.map(|_| Arc::clone(&self.registry));
        let mut remote = RemoteOptions::new(registry, pull.unwrap_or_default());
        remote.inline_cache = self
            .cache_to
            .iter()
            .any(|e| e.location == CacheLocation::Inline);
        remote
    }

    /// The `--cache-to` caches written at the end (all but `inline`).
    fn cache_sinks(&self) -> Vec<Box<dyn CacheSink>> {
        let sinks = self
            .cache_to
            .iter()
            .filter(|e| e.location != CacheLocation::Inline);
        sinks
            .map(|spec| {
                Box::new(CacheExporter {
                    spec: spec.clone(),
                    registry: Some(Arc::clone(&self.registry)),
                }) as Box<dyn CacheSink>
            })
            .collect()
    }

    /// Reads the `--cache-from` caches into `remote` and restores the cache mounts the plan's
    /// RUN steps use from them. A cache that cannot be read only warns, as with docker build:
    /// the steps run instead.
    pub fn import_caches(&self, plan: &Plan, platform: &Platform, remote: &mut RemoteOptions) {
        let mount_ids = crate::run::planned_cache_mount_ids(plan);
        let sink = |event| self.progress.event(Event::Transfer(event));
        let warn = |message: String| self.progress.event(Event::Warning { message });
        for import in &self.cache_from {
            let cache = match ImportedCache::load(
                import,
                Some(&self.registry),
                platform,
                self.store,
                &sink,
            ) {
                Ok(cache) => cache,
                Err(message) => {
                    let location = describe_location(&import.location);
                    warn(format!("--cache-from {location}: {message}"));
                    continue;
                }
            };
            match cache.restore_mounts(self.store, &mount_ids, MOUNTS_RESTORED_MAX, &sink) {
                Ok((_, skipped)) => {
                    for id in skipped {
                        warn(format!(
                            "cache {}: cache mount {id:?} left out: the cache mounts pass {MOUNTS_RESTORED_MAX} bytes",
                            cache.name()
                        ));
                    }
                }
                Err(message) => warn(format!("cache {}: cache mounts: {message}", cache.name())),
            }
            remote.cache_from.push(Arc::new(cache));
        }
    }

    /// Readies `options` for building `plan` from `context` (the recipe read from
    /// `recipe_path`, none for standard input): names the recipe for miss explanations, reads
    /// the `--cache-from` caches and restores their cache mounts, and warns of
    /// `--no-cache-filter` values that name no stage.
    pub fn prepare(
        &self,
        plan: &Plan,
        recipe_path: Option<&Path>,
        context: &Context,
        options: &mut BuildOptions,
    ) {
        options.recipe_id = crate::build::recipe_id(recipe_path, context.root());
        self.import_caches(plan, &options.platform, &mut options.remote);
        for wanted in crate::build::unknown_stage_filters(plan, &options.no_cache_filter) {
            self.progress.event(Event::Warning {
                message: format!("--no-cache-filter {wanted}: no stage has this name or index"),
            });
        }
    }

    /// Builds `plan` and delivers the image: outputs, pushes, cache exports, names, result
    /// files. The first failure stops it.
    pub fn run(
        &self,
        plan: &Plan,
        context: &Context,
        options: &BuildOptions,
    ) -> Result<Built, BuildError> {
        let mut built = build(plan, self.store, context, options, self.progress)?;
        if !self.cache_sinks().is_empty() {
            // An exported cache holds every step's layer, shipped or not: their blobs now.
            let layer_options = crate::build::layer_options(options);
            crate::lazy::make_record_blobs(
                self.store,
                &built.memo,
                &mut built.records,
                &layer_options,
            )?;
        }
        let attested = crate::attest::attest_build(
            &self.attest,
            plan,
            &built,
            options,
            self.store,
            &self.names,
        )?;
        for spec in self
            .outputs
            .iter()
            .filter(|o| o.kind != OutputKind::Registry)
        {
            let image = crate::attest::image_for_output(spec, &built, attested.as_ref());
            export(spec, &image, self.store, &self.names)?;
            crate::attest::after_output(spec, attested.as_ref())?;
        }
        for destination in &self.push_to {
            let pushed = attested.as_ref().map(|a| &a.index);
            self.push(&built, pushed.unwrap_or(&built.manifest), destination)?;
        }
        self.export_caches(plan, &built)?;
        // Named only once every output is written: a failed export leaves no half-finished name.
        self.tag_names(&built.manifest)?;
        if let Some(attested) = &attested {
            crate::attest::record_in_store(self.store, attested)?;
        }
        // With attestations, what was delivered is the index holding the image (as buildx's
        // metadata names it).
        self.write_result_files(&built, attested.as_ref().map(|a| &a.index))?;
        Ok(built)
    }

    /// Builds the plans of several platforms (one per `--platform`, each planned with its own
    /// `TARGET*` arguments) as one graph and delivers the image index of their images, as
    /// [`Build::run`] delivers one image: outputs (see [`crate::output::export_platforms`]),
    /// pushes (every manifest, then the index), the cache records of every platform, names
    /// and result files all take the index. One plan is [`Build::run`].
    pub fn run_platforms(
        &self,
        plans: &[(Platform, Plan)],
        context: &Context,
        options: &BuildOptions,
    ) -> Result<Built, BuildError> {
        let [(_, plan)] = plans else {
            return self.deliver_platforms(plans, context, options);
        };
        self.run(plan, context, options)
    }

    fn deliver_platforms(
        &self,
        plans: &[(Platform, Plan)],
        context: &Context,
        options: &BuildOptions,
    ) -> Result<Built, BuildError> {
        let mut images =
            crate::platforms::build_platforms(plans, self.store, context, options, self.progress)?;
        if !self.cache_sinks().is_empty() {
            // An exported cache holds every step's layer, shipped or not: their blobs now.
            let layer_options = crate::build::layer_options(options);
            for image in &mut images {
                crate::lazy::make_record_blobs(
                    self.store,
                    &image.memo,
                    &mut image.records,
                    &layer_options,
                )?;
            }
        }
        let manifests: Vec<kiln_oci::Descriptor> =
            images.iter().map(|b| b.manifest.clone()).collect();
        // One attestation manifest per platform's image, beside it in the index.
        let attestations = crate::attest::attest_platforms(
            &self.attest,
            plans,
            &images,
            options,
            self.store,
            &self.names,
        )?;
        let index = crate::index::put_index(
            self.store,
            &manifests,
            &attestations,
            &std::collections::BTreeMap::new(),
        )?;
        let mut built = images.first().cloned().ok_or(BuildError::Plan)?;
        built.manifest = index;
        // The cache's mode=min keeps the records of the shipped layers: every platform's.
        built.layers = Vec::new();
        for image in &images {
            for layer in &image.layers {
                if !built.layers.contains(layer) {
                    built.layers.push(layer.clone());
                }
            }
        }
        built.platforms = images;
        for spec in self
            .outputs
            .iter()
            .filter(|o| o.kind != OutputKind::Registry)
        {
            crate::output::export_platforms(spec, &built, self.store, &self.names)?;
        }
        for destination in &self.push_to {
            self.push(&built, &built.manifest, destination)?;
        }
        // The records of every platform's steps (the build keeps them all).
        self.export_caches(
            plans.first().map(|(_, p)| p).ok_or(BuildError::Plan)?,
            &built,
        )?;
        self.tag_names(&built.manifest)?;
        self.write_result_files(&built, None)?;
        Ok(built)
    }

    /// Names `manifest` (an image, or a multi-platform image's index) in the store with every
    /// `-t` name.
    fn tag_names(&self, manifest: &kiln_oci::Descriptor) -> Result<(), BuildError> {
        for name in &self.names {
            let tag = name.tag().unwrap_or("latest");
            self.store
                .tag(&name.to_string(), tag, manifest)
                .map_err(|source| BuildError::Tag {
                    name: name.to_string(),
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// Pushes `pushed` (the image, or the index holding it and its attestations) to
    /// `destination`, and names the image so in the store (as `docker push` needs
    /// the name first): a later push to another repository of the registry can mount these
    /// blobs from it.
    fn push(
        &self,
        built: &Built,
        pushed: &kiln_oci::Descriptor,
        destination: &ImageName,
    ) -> Result<(), BuildError> {
        let sink = |event| self.progress.event(Event::Transfer(event));
        self.registry
            .push(self.store, pushed, destination, &sink)
            .map_err(|source| BuildError::PushTo {
                destination: destination.to_string(),
                source: Box::new(source),
            })?;
        if destination.tag().is_some() {
            crate::remote::name_in_store(self.store, destination, &built.manifest).map_err(
                |source| BuildError::NameInStore {
                    name: destination.to_string(),
                    source: Box::new(source),
                },
            )?;
        }
        Ok(())
    }

    fn export_caches(&self, plan: &Plan, built: &Built) -> Result<(), BuildError> {
        let mount_ids: BTreeSet<String> = crate::run::planned_cache_mount_ids(plan);
        let input = ExportInput {
            store: self.store,
            records: &built.records,
            image_layers: &built.layers,
            mount_ids: &mount_ids,
        };
        let sink = |event| self.progress.event(Event::Transfer(event));
        for cache in &self.cache_sinks() {
            match cache.export(&input, &sink) {
                Ok(report) => {
                    for id in &report.mounts_skipped {
                        self.progress.event(Event::Warning {
                            message: format!(
                                "--cache-to {}: cache mount {id:?} is larger than cache-mounts-max; left out",
                                cache.name()
                            ),
                        });
                    }
                }
                Err(e) if cache.ignore_error() => self.progress.event(Event::Warning {
                    message: format!("--cache-to {}: {e}", cache.name()),
                }),
                Err(e) => {
                    return Err(BuildError::CacheTo {
                        location: cache.name(),
                        source: Box::new(e),
                    })
                }
            }
        }
        Ok(())
    }

    fn write_result_files(
        &self,
        built: &Built,
        attested: Option<&kiln_oci::Descriptor>,
    ) -> Result<(), BuildError> {
        let delivered = attested.unwrap_or(&built.manifest);
        // A multi-platform image is known by its index (as buildx writes it).
        let image_id = if built.platforms.is_empty() {
            built.config_descriptor.digest.to_string()
        } else {
            built.manifest.digest.to_string()
        };
        if let Some(path) = &self.iidfile {
            write_file_atomic(path, image_id.as_bytes()).map_err(|source| {
                BuildError::ResultFile {
                    flag: "--iidfile",
                    path: path.clone(),
                    source,
                }
            })?;
        }
        if let Some(path) = &self.metadata_file {
            let metadata = serde_json::json!({
                "containerimage.config.digest": built.config_descriptor.digest.to_string(),
                "containerimage.digest": delivered.digest.to_string(),
                "containerimage.descriptor": {
                    "mediaType": delivered.media_type,
                    "digest": delivered.digest.to_string(),
                    "size": delivered.size,
                },
                "image.name": self.names.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                "kiln.layers": built.layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
            });
            let text = serde_json::to_string_pretty(&metadata).unwrap_or_default();
            write_file_atomic(path, text.as_bytes()).map_err(|source| BuildError::ResultFile {
                flag: "--metadata-file",
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Writes a small result file through a temp file beside it, so readers never see half of it.
fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.as_file().sync_all()?;
    file.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.persist(path).map(|_| ()).map_err(|e| e.error)
}
