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

    /// Reads the `--cache-from` caches into `remote` (the records of every target platform of
    /// `plans`) and restores the cache mounts their RUN steps use from them. A cache that
    /// cannot be read only warns, as with docker build: the steps run instead.
    pub fn import_caches(&self, plans: &[(Platform, Plan)], remote: &mut RemoteOptions) {
        let mount_ids = cache_mount_ids(plans);
        let platforms: Vec<Platform> = plans.iter().map(|(p, _)| p.clone()).collect();
        let sink = |event| self.progress.event(Event::Transfer(event));
        let warn = |message: String| self.progress.event(Event::Warning { message });
        for import in &self.cache_from {
            let cache = match ImportedCache::load(
                import,
                Some(&self.registry),
                &platforms,
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

    /// Readies `options` for building `plans` (one per target platform) from `context` (the
    /// recipe read from `recipe_path`, none for standard input): names the recipe for miss
    /// explanations, reads the `--cache-from` caches and restores their cache mounts, and
    /// warns of `--no-cache-filter` values that name no stage.
    pub fn prepare(
        &self,
        plans: &[(Platform, Plan)],
        recipe_path: Option<&Path>,
        context: &Context,
        options: &mut BuildOptions,
    ) {
        options.recipe_id = crate::build::recipe_id(recipe_path, context.root());
        self.import_caches(plans, &mut options.remote);
        // Every platform's plan has the same stages: the first one's names them.
        let Some((_, plan)) = plans.first() else {
            return;
        };
        for wanted in crate::build::unknown_stage_filters(plan, &options.no_cache_filter) {
            self.progress.event(Event::Warning {
                message: format!("--no-cache-filter {wanted}: no stage has this name or index"),
            });
        }
    }

    /// Builds the plans (one per `--platform`, each planned with its own `TARGET*` arguments)
    /// and delivers the result: outputs, pushes, cache exports, names, result files, in that
    /// order; the first failure stops it. One plan delivers its image (an index only when
    /// attestations are attached); several are built as one graph and delivered as the index
    /// of their images (see [`crate::output::export_platforms`]), the cache holding the
    /// records of every platform.
    pub fn run(
        &self,
        plans: &[(Platform, Plan)],
        context: &Context,
        options: &BuildOptions,
    ) -> Result<Built, BuildError> {
        // One image and no attestations: no index to annotate, as BuildKit refuses too; said
        // before anything is built.
        if plans.len() == 1 && !self.attest.wanted() {
            let annotations = crate::annotations::Annotations::split(&options.annotations);
            let needing = annotations.needing_an_index();
            if !needing.is_empty() {
                return Err(BuildError::NoIndexToAnnotate {
                    types: needing.join(", "),
                });
            }
        }
        let images = match plans {
            [(_, plan)] => vec![build(plan, self.store, context, options, self.progress)?],
            _ => crate::platforms::build_platforms(
                plans,
                self.store,
                context,
                options,
                self.progress,
            )?,
        };
        let mut delivery = self.assemble(plans, images, options)?;
        if !self.cache_sinks().is_empty() {
            // An exported cache holds every step's layer, shipped or not: their blobs now.
            let layer_options = crate::build::layer_options(options);
            let built = &mut delivery.built;
            crate::lazy::make_record_blobs(
                self.store,
                &built.memo,
                &mut built.records,
                &layer_options,
            )?;
        }
        self.deliver(plans, &delivery)?;
        Ok(delivery.built)
    }

    /// The build's images made into what is delivered: one image as it is, several as the
    /// index of their images (per platform, in the order of `plans`), and the attestations
    /// of each attached.
    fn assemble(
        &self,
        plans: &[(Platform, Plan)],
        mut images: Vec<Built>,
        options: &BuildOptions,
    ) -> Result<Delivery, BuildError> {
        let annotations = crate::annotations::Annotations::split(&options.annotations);
        let manifests: Vec<kiln_oci::Descriptor> = images
            .iter()
            .map(|image| {
                let mut entry = image.manifest.clone();
                entry.platform = Some(image.config.platform());
                entry
            })
            .collect();
        let index_of = |attestations: &[kiln_oci::Descriptor]| {
            crate::index::put_index(self.store, &manifests, attestations, &annotations)
        };
        let attested = crate::attest::attest_images(
            &self.attest,
            plans,
            &images,
            options,
            self.store,
            &self.names,
            index_of,
        )?;
        let built = match images.len() {
            1 => images.pop().ok_or(BuildError::Plan)?,
            _ => {
                let index = match &attested {
                    Some(attested) => attested.index.clone(),
                    None => index_of(&[])?,
                };
                merge_platforms(images, index)?
            }
        };
        Ok(Delivery { built, attested })
    }

    /// Writes the outputs, pushes, exports the caches, names the image and writes the result
    /// files: a name only ever points at an image whose outputs all exist.
    fn deliver(&self, plans: &[(Platform, Plan)], delivery: &Delivery) -> Result<(), BuildError> {
        let Delivery { built, attested } = delivery;
        let outputs = self
            .outputs
            .iter()
            .filter(|o| o.kind != OutputKind::Registry);
        for spec in outputs {
            if built.platforms.is_empty() {
                let image = crate::attest::image_for_output(spec, built, attested.as_ref());
                export(spec, &image, self.store, &self.names)?;
                crate::attest::after_output(spec, attested.as_ref())?;
            } else {
                crate::output::export_platforms(spec, built, self.store, &self.names)?;
            }
        }
        for destination in &self.push_to {
            self.push(built, delivery.delivered(), destination)?;
        }
        self.export_caches(plans, built)?;
        // Named only once every output is written: a failed export leaves no half-finished name.
        self.tag_names(&built.manifest)?;
        if let Some(attested) = attested {
            crate::attest::record_in_store(self.store, attested)?;
        }
        self.write_result_files(built, delivery.delivered())
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

    /// Exports the build's cache records (every platform's: the build keeps them all) and the
    /// cache mounts of every plan's RUN steps to each `--cache-to`.
    fn export_caches(&self, plans: &[(Platform, Plan)], built: &Built) -> Result<(), BuildError> {
        let mount_ids = cache_mount_ids(plans);
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

    /// `--iidfile` and `--metadata-file`; `delivered` is what was written and pushed (the
    /// image, or the index holding it and its attestations, or a multi-platform index).
    fn write_result_files(
        &self,
        built: &Built,
        delivered: &kiln_oci::Descriptor,
    ) -> Result<(), BuildError> {
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

/// What a build delivers, one platform or several.
struct Delivery {
    /// The build's image; with several platforms, `manifest` is their index.
    built: Built,
    /// The attestations, with the index that holds them beside the images.
    attested: Option<crate::attest::Attested>,
}

impl Delivery {
    /// What is pushed and what `--metadata-file` names: the index with attestations, else the
    /// image (or the multi-platform index).
    fn delivered(&self) -> &kiln_oci::Descriptor {
        self.attested
            .as_ref()
            .map_or(&self.built.manifest, |a| &a.index)
    }
}

/// The images of several platforms as one [`Built`]: `manifest` their index, the other fields
/// the first platform's, `layers` every platform's (a cache's `mode=min` keeps the records of
/// every shipped layer), `platforms` the images.
fn merge_platforms(images: Vec<Built>, index: kiln_oci::Descriptor) -> Result<Built, BuildError> {
    let mut built = images.first().cloned().ok_or(BuildError::Plan)?;
    built.manifest = index;
    built.layers = Vec::new();
    for image in &images {
        for layer in &image.layers {
            if !built.layers.contains(layer) {
                built.layers.push(layer.clone());
            }
        }
    }
    built.platforms = images;
    Ok(built)
}

/// The ids of the cache mounts the RUN steps of every plan use.
fn cache_mount_ids(plans: &[(Platform, Plan)]) -> BTreeSet<String> {
    plans
        .iter()
        .flat_map(|(_, plan)| crate::run::planned_cache_mount_ids(plan))
        .collect()
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
