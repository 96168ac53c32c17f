//! Runs a plan: every needed stage in dependency order, each step from the cache when its key
//! is known, else executed; then the image config and manifest of the target.

use crate::copy::{run_copy, CopyFrom, CopyJob};
use crate::fetch::{fetch_url, FetchLimits, Fetched};
use crate::image::{apply_config, base_config, history_entry, parse_rfc3339, rfc3339};
use crate::lookup::ensure_snapshot;
use crate::remote::Located;
use crate::rootfs::Rootfs;
use crate::BuildError;
use kiln_context::{Context, IgnoreRules, MemoryMemo};
use kiln_layer::{write_layer, Compression, LayerOptions};
use kiln_oci::{media_types, to_canonical_json, Descriptor, Digest, ImageConfig, Manifest};
use kiln_plan::cache_key::{
    build_arg_digest, env_digest, instruction_digest, KeyHasher, KeyPart, LayerCompression,
    StepKey, StepKind,
};
use kiln_plan::{Action, Base, CopySource, Plan, Platform, Source, Stage, Step};
use kiln_store::{CacheRecord, LayerRecord, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A layer step's named key parts, in order.
type KeyParts = Vec<(String, String)>;

/// How to build: everything besides the plan, the store and the context.
pub struct BuildOptions {
    /// Stages run at once at most (independent stages of the graph run in parallel).
    pub jobs: usize,
    /// Run every step, ignoring the cache (results are still recorded).
    pub no_cache: bool,
    /// Stages (by name or index) whose steps ignore the cache.
    pub no_cache_filter: Vec<String>,
    /// Clamp layer mtimes to it and use it as the config's creation time.
    pub source_date_epoch: Option<i64>,
    /// How layers are compressed (once, as they are made).
    pub compression: Compression,
    /// The platform the image is for.
    pub platform: Platform,
    /// Merge the layers this recipe adds into one.
    pub squash: bool,
    /// Names the recipe (its canonical path), so a miss is explained against earlier builds of
    /// the same recipe only.
    pub recipe_id: String,
    /// How RUN gets a writable root (overlay unless it cannot be mounted).
    pub snapshotter: crate::run::Snapshotter,
    /// `--secret id=ID,...`: what `RUN --mount=type=secret` reads. Only ids reach keys.
    pub secrets: BTreeMap<String, crate::run::SecretSource>,
    /// Registries: pulling base images, `--cache-from`, `--cache-to type=inline`.
    pub remote: crate::remote::RemoteOptions,
    /// What the build's flags say about every RUN (network, hosts, ssh, entitlements, limits).
    pub run: crate::run_settings::RunSettings,
    /// `--label`: added to the image's config (they win over the recipe's `LABEL`s).
    pub labels: BTreeMap<String, String>,
    /// `--annotation`: the image manifest's annotations, and under `TYPES:KEY` those of other
    /// documents (see [`crate::annotations`]).
    pub annotations: BTreeMap<String, String>,
}

/// Names a recipe for miss explanations: its canonical path, or, read from standard input,
/// the context it was built in.
pub fn recipe_id(recipe_path: Option<&Path>, context_root: &Path) -> String {
    recipe_path
        .and_then(|p| std::fs::canonicalize(p).ok())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("stdin@{}", context_root.display()))
}

/// The `--no-cache-filter` values that name no stage of `plan` (by name or index).
pub fn unknown_stage_filters<'a>(plan: &Plan, filters: &'a [String]) -> Vec<&'a str> {
    filters
        .iter()
        .filter(|wanted| {
            let lower = wanted.to_ascii_lowercase();
            !plan.stages.iter().any(|s| {
                s.name.as_deref() == Some(lower.as_str()) || s.index.to_string() == **wanted
            })
        })
        .map(String::as_str)
        .collect()
}

/// What a build does to the store besides computing keys: fetching a base image's layers,
/// importing an archive, unpacking a layer into its snapshot. Planning runs nothing: a dry run
/// ([`plan_cache`]) keys every step with [`KeysOnly`], which does none of it.
trait Effects: Sync {
    /// Copies an archive's image into the store; `None` when nothing is copied (the archive's
    /// own manifest is used then).
    fn import(
        &self,
        store: &Store,
        archive: &kiln_oci::ArchiveImage,
        reference: &str,
    ) -> Result<Option<Descriptor>, BuildError>;

    /// Fetches the layers of a resolved base image into the store.
    fn pull_layers(
        &self,
        remote: &crate::remote::RemoteOptions,
        store: &Store,
        reference: &str,
        manifest: &Descriptor,
        platform: &Platform,
        progress: kiln_registry::Progress,
    ) -> Result<(), BuildError>;

    /// Where a layer's snapshot is, unpacked from its blob if a build needs it, within the
    /// image's `budget` of decompressed bytes.
    fn snapshot(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        diff_id: &str,
        what: &str,
        budget: &mut crate::unpack::ImageBudget,
    ) -> Result<PathBuf, BuildError>;
}

/// A build's effects: everything is fetched, imported and unpacked.
struct Materialize;

impl Effects for Materialize {
    fn import(
        &self,
        store: &Store,
        archive: &kiln_oci::ArchiveImage,
        reference: &str,
    ) -> Result<Option<Descriptor>, BuildError> {
        store
            .import(archive)
            .map(Some)
            .map_err(|source| BuildError::Import {
                reference: reference.to_string(),
                source: Box::new(source),
            })
    }

    fn pull_layers(
        &self,
        remote: &crate::remote::RemoteOptions,
        store: &Store,
        reference: &str,
        manifest: &Descriptor,
        platform: &Platform,
        progress: kiln_registry::Progress,
    ) -> Result<(), BuildError> {
        remote.complete(store, reference, manifest, platform, progress)
    }

    fn snapshot(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        diff_id: &str,
        what: &str,
        budget: &mut crate::unpack::ImageBudget,
    ) -> Result<PathBuf, BuildError> {
        Ok(ensure_snapshot(store, descriptor, diff_id, what, budget)?)
    }
}

/// A dry run's effects: none. Layers are where their snapshots would be.
struct KeysOnly;

impl Effects for KeysOnly {
    fn import(
        &self,
        _: &Store,
        _: &kiln_oci::ArchiveImage,
        _: &str,
    ) -> Result<Option<Descriptor>, BuildError> {
        Ok(None)
    }

    fn pull_layers(
        &self,
        _: &crate::remote::RemoteOptions,
        _: &Store,
        _: &str,
        _: &Descriptor,
        _: &Platform,
        _: kiln_registry::Progress,
    ) -> Result<(), BuildError> {
        Ok(())
    }

    fn snapshot(
        &self,
        store: &Store,
        _: &Descriptor,
        diff_id: &str,
        _: &str,
        _: &mut crate::unpack::ImageBudget,
    ) -> Result<PathBuf, BuildError> {
        Ok(store.snapshot_path(diff_id))
    }
}

/// What progress displays hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A step starts; `number` counts steps across the build, from 1.
    Step {
        /// The step's number.
        number: usize,
        /// How many steps the build has.
        total: usize,
        /// The stage's label and the step's place in it.
        stage: String,
        /// The instruction as written.
        text: String,
    },
    /// The step's result came from the cache.
    Cached {
        /// The step's number.
        number: usize,
    },
    /// The step runs because its key is new; `reason` says what changed.
    Miss {
        /// The step's number.
        number: usize,
        /// Why it runs (see docs/cache.md).
        reason: String,
    },
    /// The step finished.
    Done {
        /// The step's number.
        number: usize,
        /// How long it took.
        elapsed: Duration,
    },
    /// A line a RUN printed (standard output and error together).
    Output {
        /// The step's number.
        number: usize,
        /// The line, without its end.
        line: String,
    },
    /// A blob moves from or to a registry.
    Transfer(kiln_registry::TransferEvent),
    /// Something to know that does not stop the build (a cache that cannot be read, say).
    Warning {
        /// What to know.
        message: String,
    },
}

/// Stages run on several threads at once, so a progress display must be shareable.
pub trait Progress: Sync {
    /// Hears one event; called from any stage's thread.
    fn event(&self, event: Event);
}

/// The image a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image's manifest, in the store.
    pub manifest: Descriptor,
    /// Where each layer is unpacked, first to last (for the flattened outputs).
    pub snapshots: Vec<PathBuf>,
    /// The build's SOURCE_DATE_EPOCH: outputs clamp file times to it as the layers do.
    pub source_date_epoch: Option<i64>,
    /// The image's config.
    pub config: ImageConfig,
    /// The config's descriptor: its digest is the image id.
    pub config_descriptor: Descriptor,
    /// The image's layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// Steps the build ran or found in the cache.
    pub steps: usize,
    /// Steps found in the cache.
    pub cached: usize,
    /// Bytes of build-context files read to hash them (0 when every hash was memoised).
    pub context_bytes_read: u64,
    /// Every cache record the build used or made, in the order the steps finished: what
    /// `--cache-to` exports.
    pub records: Vec<CacheRecord>,
    /// What the build used (materials, step keys), for its provenance.
    pub recorded: crate::recorder::Recorded,
    /// A multi-platform build: each platform's image, in the order of `--platform`. `manifest`
    /// is then the image index listing them, and the other fields are the first platform's
    /// (`layers`: every platform's). Empty for one platform.
    pub platforms: Vec<Built>,
    /// The build's hash memo, with the digests of the files its steps wrote: blobs made after
    /// the build (`--cache-to`) use it instead of reading those files again.
    pub memo: crate::lazy::SharedMemo,
}

/// URL sources of one ADD, downloaded; the files live as long as this does.
#[derive(Default)]
struct Downloads {
    _dir: Option<kiln_store::WorkDir>,
    files: Vec<Fetched>,
    /// Git sources with the commits their refs named when the key was made.
    git: Vec<crate::git::ResolvedGit>,
    /// Those commits checked out (the directory to copy of each), in a work area of their own.
    git_trees: Vec<PathBuf>,
    _git_dir: Option<kiln_store::WorkDir>,
}

/// A layer of a stage's image and where it is unpacked.
#[derive(Debug, Clone)]
struct LayerRef {
    descriptor: Descriptor,
    snapshot: PathBuf,
    /// A lazy layer whose blob is not made yet: the cache key it is recorded under. Its
    /// descriptor and diff_id stand in until the blob is made (see [`crate::lazy`]).
    pending: Option<String>,
}

/// A step's layer as the cache or the step gave it: its blob when made, and its snapshot.
#[derive(Debug, Clone)]
struct StepLayer {
    layer: Option<LayerRecord>,
    snapshot: PathBuf,
}

impl StepLayer {
    /// The layer of a cache record: a lazy record's snapshot is named by its key, an older
    /// record's (or a shared cache's) by its diff_id.
    fn of_record(store: &Store, record: &CacheRecord) -> Option<StepLayer> {
        let snapshot = match (&record.snapshot, &record.layer) {
            (Some(name), _) => store.snapshot_path(name),
            (None, Some(layer)) => store.snapshot_path(&layer.diff_id),
            (None, None) => return None,
        };
        Some(StepLayer {
            layer: record.layer.clone(),
            snapshot,
        })
    }
}

/// A stage's image while it is built.
#[derive(Debug, Clone)]
struct StageImage {
    config: ImageConfig,
    layers: Vec<LayerRef>,
    /// The key of the filesystem so far: every layer step chains on it.
    chain_key: String,
    /// CMD set in this stage (a later ENTRYPOINT then keeps it).
    cmd_set: bool,
    /// When the newest layer so far was made: history times come from the layers, so a
    /// cached rebuild gives the same image.
    time: i64,
    /// Layers and history entries that came from the base image (not from this recipe).
    base_layers: usize,
    base_history: usize,
    /// The stage's layers end up in the build's image: their blobs are made as they come.
    ships: bool,
    /// The platform the stage is built for: images it reads without a platform of their own
    /// (`COPY --from=IMAGE`, `RUN --mount=from=IMAGE`) are taken for it.
    target: Platform,
}

impl StageImage {
    /// A metadata step: the config changes, and history gets an entry with no layer.
    fn apply_metadata(&mut self, step: &Step, change: &kiln_plan::ConfigChange) {
        apply_config(&mut self.config, change, &mut self.cmd_set);
        self.config
            .history
            .push(history_entry(step, rfc3339(self.time), true));
    }
}

struct Builder<'a> {
    store: &'a Store,
    context: &'a Context,
    options: &'a BuildOptions,
    progress: &'a dyn Progress,
    memo: &'a MemoryMemo,
    now: i64,
    /// Finished stages (nodes); a step that reads one waits for it (see [`crate::nodes`]).
    results: crate::nodes::Results<StageImage>,
    /// Job slots (`--jobs`): a stage holds one while it works, not while it waits.
    slots: crate::nodes::Slots,
    total: usize,
    cached: std::sync::atomic::AtomicUsize,
    /// Overlay failed once: later RUN steps copy the image straight away.
    overlay_broken: std::sync::atomic::AtomicBool,
    /// A stage failed: the others stop at their next step, and a running RUN is killed.
    failed: std::sync::atomic::AtomicBool,
    /// What the build does to the store beyond keying: [`Materialize`] for a build, [`KeysOnly`]
    /// for `plan_cache`, which computes keys and looks them up but fetches, imports and unpacks
    /// nothing.
    effects: &'a dyn Effects,
    /// The cache records this build used or made, for `--cache-to`.
    records: std::sync::Mutex<Vec<CacheRecord>>,
    /// Materials and step keys, for the provenance.
    recorder: crate::recorder::Recorder,
    /// Makes the blobs of shipping layers in the background (none in a dry run).
    blobs: Option<&'a crate::lazy::BlobMaker<'a>>,
    /// The stages whose layers the image holds (see [`crate::lazy::shipping_stages`]).
    shipping: std::collections::BTreeSet<usize>,
}

/// Builds the plan's target stage (and the stages it needs) into an image in the store.
pub fn build(
    plan: &Plan,
    store: &Store,
    context: &Context,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Built, BuildError> {
    if plan.has_errors() {
        return Err(BuildError::Plan);
    }
    let nodes = crate::nodes::NodePlan::single(plan, &options.platform);
    let mut built = build_nodes(&nodes, &[plan.target], store, context, options, progress)?;
    built.pop().ok_or(BuildError::Plan)
}

/// Builds the nodes `wanted` (and what they need) of a node plan, each into an image in the
/// store, in the order asked. Every node is built once, whoever needs it.
pub fn build_nodes(
    nodes: &crate::nodes::NodePlan<'_>,
    wanted: &[usize],
    store: &Store,
    context: &Context,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Vec<Built>, BuildError> {
    let plan = nodes.plan.as_ref();
    if plan.has_errors() {
        return Err(BuildError::Plan);
    }
    let now = options.source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let total = plan
        .order
        .iter()
        .filter_map(|i| plan.stages.get(*i))
        .map(|s| s.steps.len())
        .sum();
    let memo = crate::lazy::SharedMemo::load(store);
    let blobs = crate::lazy::BlobMaker::new(store, &memo, layer_options(options));
    let builder = Builder {
        store,
        context,
        options,
        progress,
        memo: &memo,
        now,
        results: crate::nodes::Results::scheduled(),
        slots: crate::nodes::Slots::new(options.jobs),
        total,
        cached: std::sync::atomic::AtomicUsize::new(0),
        overlay_broken: std::sync::atomic::AtomicBool::new(false),
        failed: std::sync::atomic::AtomicBool::new(false),
        effects: &Materialize,
        records: std::sync::Mutex::new(Vec::new()),
        recorder: Default::default(),
        blobs: Some(&blobs),
        shipping: crate::lazy::shipping_stages(plan, wanted),
    };
    // Step numbers follow the planned order whatever runs first, so logs read the same.
    let mut first_step = BTreeMap::new();
    let mut next = 1;
    for &index in &plan.order {
        first_step.insert(index, next);
        next += plan.stages.get(index).map_or(0, |s| s.steps.len());
    }
    // Shipping layers' blobs are made on a thread of their own while later steps run.
    let built = std::thread::scope(|scope| {
        scope.spawn(|| blobs.run());
        let built = schedule(nodes, &builder, &first_step).and_then(|()| {
            let mut built = Vec::with_capacity(wanted.len());
            for &node in wanted {
                let image = builder.result(node)?;
                built.push(builder.finish(image)?);
            }
            Ok(built)
        });
        blobs.close();
        built
    })?;
    // Keep the file hashes for the next build (when it learnt some); losing them only costs
    // a re-read.
    if let Some(bytes) = builder.memo.bytes_if_changed() {
        let _ = store.write_atomic(&store.hash_memo_path(), &bytes);
    }
    let mut built = built;
    for image in &mut built {
        image.memo = memo.clone();
    }
    Ok(built)
}

/// Runs the nodes: each starts as soon as its base is built (a step that reads another stage
/// waits for it there, see [`crate::nodes`]), with at most `--jobs` of them working at a time.
/// When one fails, the others stop at their next step; the error returned is the failure's,
/// not the "stopped" of the others.
fn schedule(
    nodes: &crate::nodes::NodePlan<'_>,
    builder: &Builder<'_>,
    first_step: &BTreeMap<usize, usize>,
) -> Result<(), BuildError> {
    let plan = nodes.plan.as_ref();
    let mut pending: Vec<usize> = plan.order.clone();
    let mut failure: Option<BuildError> = None;
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Result<(), BuildError>)>();
        let mut running = 0usize;
        loop {
            if failure.is_none() {
                // In plan order, so step numbers and logs read the same from run to run.
                let ready: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|i| {
                        plan.stages.get(*i).is_some_and(|s| match s.base {
                            Base::Stage(parent) => builder.results.contains(parent),
                            Base::Scratch | Base::Image(_) => true,
                        })
                    })
                    .collect();
                for index in ready {
                    pending.retain(|i| *i != index);
                    running += 1;
                    let done_tx = done_tx.clone();
                    let first = first_step.get(&index).copied().unwrap_or(1);
                    scope.spawn(move || {
                        builder.slots.acquire();
                        // A panic must still report, or the loop would wait for it forever.
                        let result =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                match (plan.stages.get(index), nodes.target(index)) {
                                    (Some(stage), Some(target)) => {
                                        let node = NodeRun {
                                            target,
                                            label: nodes.label(index),
                                        };
                                        builder.stage(stage, first, &node)
                                    }
                                    _ => Err(BuildError::Plan),
                                }
                            }))
                            .unwrap_or_else(|_| {
                                Err(BuildError::Internal("a stage's thread panicked"))
                            });
                        builder.slots.release();
                        let result = match result {
                            Ok(image) => {
                                builder.results.insert(index, image);
                                Ok(())
                            }
                            Err(error) => {
                                builder
                                    .failed
                                    .store(true, std::sync::atomic::Ordering::Relaxed);
                                // Stages waiting for a result that will not come give up.
                                builder.results.wake_all();
                                Err(error)
                            }
                        };
                        let _ = done_tx.send((index, result));
                    });
                }
            }
            if running == 0 {
                if failure.is_none() && !pending.is_empty() {
                    // Nothing runs and nothing can start: the plan's dependencies are broken.
                    failure = Some(BuildError::Plan);
                }
                break;
            }
            let Ok((_, result)) = done_rx.recv() else {
                failure.get_or_insert(BuildError::Internal("a stage's thread ended early"));
                break;
            };
            running -= 1;
            match result {
                Ok(()) => {}
                // The stage that failed says why; the ones it stopped only say that they stopped.
                Err(BuildError::Cancelled) => {
                    failure.get_or_insert(BuildError::Cancelled);
                }
                Err(error) => {
                    if matches!(failure, None | Some(BuildError::Cancelled)) {
                        failure = Some(error);
                    }
                }
            }
        }
    });
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// What a node is built for, as its stage's steps need it.
struct NodeRun<'n> {
    /// The platform the node is built for (`TARGETPLATFORM`).
    target: &'n Platform,
    /// Shown after the stage's name in progress (the platform, in a multi-platform build).
    label: &'n str,
}

/// What a build would do with one step, as `plan_cache` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepState {
    /// The stage's index in the plan.
    pub stage: usize,
    /// The step's position in its stage, from 0.
    pub position: usize,
    /// The step's number in the build (as `kiln build` prints it), from 1.
    pub number: usize,
    /// The instruction as written.
    pub text: String,
    /// `Some(true)`: the cache holds the layer; `Some(false)`: the step would run; `None`: a
    /// metadata step, which makes no layer.
    pub cached: Option<bool>,
    /// Why the answer is not certain: an ADD of a URL without `--checksum` is not downloaded
    /// to key it, so it counts as running.
    pub note: Option<String>,
}

/// Says nothing: a dry run has no progress to show.
struct Silent;

impl Progress for Silent {
    fn event(&self, _event: Event) {}
}

/// A dry run of `build`: walks the stages the target needs, in plan order, computes each layer
/// step's key as a build would and looks it up in the store's cache. Nothing is copied,
/// downloaded, unpacked or run, and nothing is written: a miss puts a placeholder layer under
/// the computed key, so the steps after it are keyed as the build would key them. Context files
/// without a memoised hash are read to hash them.
pub fn plan_cache(
    plan: &Plan,
    store: &Store,
    context: &Context,
    options: &BuildOptions,
) -> Result<Vec<StepState>, BuildError> {
    plan_cache_nodes(
        &crate::nodes::NodePlan::single(plan, &options.platform),
        store,
        context,
        options,
    )
}

/// [`plan_cache`] of a build graph (the merged graph of several platforms): each node keyed
/// for the platform it is built for; a state's `stage` is its node.
pub fn plan_cache_nodes(
    nodes: &crate::nodes::NodePlan<'_>,
    store: &Store,
    context: &Context,
    options: &BuildOptions,
) -> Result<Vec<StepState>, BuildError> {
    let plan = nodes.plan.as_ref();
    if plan.has_errors() {
        return Err(BuildError::Plan);
    }
    let now = options.source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let memo = MemoryMemo::load(&store.hash_memo_path());
    let builder = Builder {
        store,
        context,
        options,
        progress: &Silent,
        memo: &memo,
        now,
        results: crate::nodes::Results::in_order(),
        slots: crate::nodes::Slots::new(1),
        total: 0,
        cached: std::sync::atomic::AtomicUsize::new(0),
        overlay_broken: std::sync::atomic::AtomicBool::new(false),
        failed: std::sync::atomic::AtomicBool::new(false),
        effects: &KeysOnly,
        records: std::sync::Mutex::new(Vec::new()),
        recorder: Default::default(),
        blobs: None,
        shipping: std::collections::BTreeSet::new(),
    };
    let mut states = Vec::new();
    let mut number = 1;
    // The order puts every stage after the stages it needs.
    for &index in &plan.order {
        let stage = plan.stages.get(index).ok_or(BuildError::Plan)?;
        let target = nodes.target(index).unwrap_or(&options.platform);
        let first = states.len();
        let image = builder.plan_stage(stage, number, target, &mut states)?;
        for state in states.iter_mut().skip(first) {
            state.stage = index;
        }
        number += stage.steps.len();
        builder.results.insert(index, image);
    }
    Ok(states)
}

impl Builder<'_> {
    /// One stage of `plan_cache`.
    fn plan_stage(
        &self,
        stage: &Stage,
        first_step: usize,
        target: &Platform,
        states: &mut Vec<StepState>,
    ) -> Result<StageImage, BuildError> {
        let mut image = self.base(stage, target)?;
        for (position, step) in stage.steps.iter().enumerate() {
            let mut state = StepState {
                stage: stage.index,
                position,
                number: first_step + position,
                text: crate::image::redact_credentials(&step.instruction.original),
                cached: None,
                note: None,
            };
            match &step.action {
                Action::Config(change @ kiln_plan::ConfigChange::Workdir(dir)) if dir != "/" => {
                    apply_config(&mut image.config, change, &mut image.cmd_set);
                    let below = self.rootfs(&image)?;
                    let (key, _, _) = self.workdir_key(step, &image, &below);
                    state.cached = Some(self.plan_layer(stage, step, key, false, &mut image)?);
                }
                Action::Config(change) => image.apply_metadata(step, change),
                Action::Arg(_) => {}
                Action::Run(run) => {
                    let (key, _, _, _) = self.run_key(step, run, &image)?;
                    state.cached = Some(self.plan_layer(stage, step, key, false, &mut image)?);
                }
                Action::Copy(copy) => {
                    // A URL without checksum, or a git ref that is not a commit, is known only by
                    // asking the network, which a dry run does not do.
                    let unchecked_url = (copy.checksum.is_none()
                        && copy.sources.iter().any(|s| matches!(s, CopySource::Url(_))))
                        || copy.sources.iter().any(|s| {
                            matches!(s, CopySource::Git(url) if !crate::git::names_a_commit(url))
                        });
                    // Below a placeholder there is no /etc/passwd to resolve a --chown name in;
                    // such a step runs anyway unless it is --link.
                    let placeholder_below = image.layers.iter().any(|l| !l.snapshot.is_dir());
                    let key = if unchecked_url {
                        state.note = Some("URL not checked".to_string());
                        None
                    } else {
                        let walks = self.context_walks(copy)?;
                        let inputs = self.copy_inputs(
                            copy,
                            &walks,
                            &mut Downloads::default(),
                            &image.target,
                        )?;
                        match self.copy_key(step, copy, &image, inputs) {
                            Ok((key, _)) => Some(key),
                            Err(_) if placeholder_below => None,
                            Err(e) => return Err(e),
                        }
                    };
                    state.cached = Some(match key {
                        Some(key) => self.plan_layer(stage, step, key, copy.link, &mut image)?,
                        None => {
                            // Not known without running: a key of its own, found nowhere.
                            let mut unknown = KeyHasher::new("unknown-step");
                            unknown
                                .str("parent", &image.chain_key)
                                .str("stage", &stage.index.to_string())
                                .str("position", &position.to_string());
                            let key = unknown.finish();
                            self.push_layer(
                                &mut image,
                                &self.placeholder(&key),
                                self.now,
                                step,
                                key,
                                false,
                            )?;
                            false
                        }
                    });
                }
            }
            states.push(state);
        }
        Ok(image)
    }

    /// Looks a layer step's key up; on a miss a placeholder layer stands for what it would
    /// make. Whether it was found.
    fn plan_layer(
        &self,
        stage: &Stage,
        step: &Step,
        key: String,
        link: bool,
        image: &mut StageImage,
    ) -> Result<bool, BuildError> {
        let record = if self.no_cache_for(stage) {
            None
        } else {
            self.store.cache_get(&key).and_then(|r| {
                let created = r.created;
                StepLayer::of_record(self.store, &r).map(|l| (l, created))
            })
        };
        let cached = record.is_some();
        let (layer, created) = record.unwrap_or_else(|| (self.placeholder(&key), self.now));
        self.push_layer(image, &layer, created, step, key, link)?;
        Ok(cached)
    }
}

/// Wall-clock nanoseconds, for a record's `recorded`.
fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A layer that was not made: named by the step's key, unpacked nowhere.
fn placeholder_layer(key: &str) -> LayerRecord {
    LayerRecord {
        digest: key.to_string(),
        diff_id: key.to_string(),
        size: 0,
        media_type: media_types::OCI_LAYER_TAR_GZIP.to_string(),
    }
}

impl Builder<'_> {
    /// A dry run's stand-in for a layer that was not made.
    fn placeholder(&self, key: &str) -> StepLayer {
        StepLayer {
            layer: Some(placeholder_layer(key)),
            snapshot: self.store.snapshot_path(key),
        }
    }

    /// The image's filesystem, its layers unpacked: a layer that came from a `--cache-from`
    /// cache, or whose snapshot was pruned, is unpacked from its blob now. A dry run unpacks
    /// nothing (its placeholders have no blob).
    fn rootfs(&self, image: &StageImage) -> Result<Rootfs, BuildError> {
        let mut budget =
            crate::unpack::ImageBudget::new(image.layers.iter().map(|l| l.descriptor.size))?;
        for (layer, diff_id) in image.layers.iter().zip(&image.config.rootfs.diff_ids) {
            if !layer.snapshot.is_dir() && self.store.has_blob(&layer.descriptor.digest) {
                let (descriptor, diff_id) = (&layer.descriptor, diff_id.as_str());
                self.effects
                    .snapshot(self.store, descriptor, diff_id, "layer", &mut budget)?;
            }
        }
        Ok(Rootfs::new(
            image.layers.iter().map(|l| l.snapshot.clone()).collect(),
        ))
    }

    fn no_cache_for(&self, stage: &Stage) -> bool {
        self.options.no_cache
            || self.options.no_cache_filter.iter().any(|f| {
                stage.name.as_deref() == Some(f.to_ascii_lowercase().as_str())
                    || f == &stage.index.to_string()
            })
    }

    /// The image a stage starts from, for a node built for `target`.
    fn base(&self, stage: &Stage, target: &Platform) -> Result<StageImage, BuildError> {
        let platform = self.platform_of(stage, target);
        match &stage.base {
            Base::Scratch => {
                let mut key = KeyHasher::new("base");
                key.str("kind", "scratch")
                    .str("platform", &platform.to_string());
                Ok(StageImage {
                    config: base_config(&platform),
                    layers: Vec::new(),
                    chain_key: key.finish(),
                    cmd_set: false,
                    time: self.options.source_date_epoch.unwrap_or(0),
                    base_layers: 0,
                    base_history: 0,
                    ships: false,
                    target: target.clone(),
                })
            }
            Base::Stage(parent) => {
                let mut image = self.result(*parent)?;
                // Its ONBUILD triggers ran as this stage's first steps (the plan put them there).
                image.config.config.on_build.clear();
                image.cmd_set = false;
                image.target = target.clone();
                Ok(image)
            }
            Base::Image(reference) => {
                let mut image = self.image_from_store(reference, &platform)?;
                image.target = target.clone();
                Ok(image)
            }
        }
    }

    /// The platform of a stage's base: its `FROM --platform`, else the node's target.
    fn platform_of(&self, stage: &Stage, target: &Platform) -> Platform {
        stage
            .platform
            .as_deref()
            .and_then(|p| Platform::parse(p).ok())
            .unwrap_or_else(|| target.clone())
    }

    /// A base image: from the store, or pulled into it (see [`crate::remote`]); its layers
    /// unpacked there.
    fn image_from_store(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<StageImage, BuildError> {
        let remote = &self.options.remote;
        let sink = |event| self.progress.event(Event::Transfer(event));
        let manifest_descriptor = match remote.locate(self.store, reference, platform, &sink)? {
            // `oci:`, `oci-archive:` and `docker-archive:` as buildah takes them: copied into
            // the store (every blob checked) and used from there. Keying alone reads the
            // archive's manifest and copies nothing.
            Located::Archive(archive) => {
                match self.effects.import(self.store, &archive, reference)? {
                    Some(descriptor) => descriptor,
                    None => {
                        let layers = self.layers(&archive.manifest, &archive.config, reference)?;
                        let descriptor = archive.manifest_descriptor;
                        return Ok(self.store_image(descriptor, archive.config, layers));
                    }
                }
            }
            Located::Manifest(manifest) => {
                self.effects
                    .pull_layers(remote, self.store, reference, &manifest, platform, &sink)?;
                *manifest
            }
        };
        self.recorder
            .image(reference, &manifest_descriptor, platform);
        let manifest_bytes = self
            .store
            .read_blob(&manifest_descriptor.digest)
            .map_err(BuildError::Store)?;
        let manifest: Manifest = kiln_oci::from_json_slice(&manifest_bytes).map_err(
            crate::ExecError::oci(manifest_descriptor.digest.to_string()),
        )?;
        let config_bytes = self
            .store
            .read_blob(&manifest.config.digest)
            .map_err(BuildError::Store)?;
        let config: ImageConfig = kiln_oci::from_json_slice(&config_bytes)
            .map_err(crate::ExecError::oci(manifest.config.digest.to_string()))?;
        let layers = self.layers(&manifest, &config, reference)?;
        Ok(self.store_image(manifest_descriptor, config, layers))
    }

    /// The layers of a base image, each with its snapshot (unpacked by a build if need be).
    fn layers(
        &self,
        manifest: &Manifest,
        config: &ImageConfig,
        reference: &str,
    ) -> Result<Vec<LayerRef>, BuildError> {
        let what = format!("base image {reference:?}");
        let mut budget = crate::unpack::ImageBudget::new(manifest.layers.iter().map(|l| l.size))?;
        manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(descriptor, diff_id)| {
                Ok(LayerRef {
                    descriptor: descriptor.clone(),
                    pending: None,
                    snapshot: self.effects.snapshot(
                        self.store,
                        descriptor,
                        diff_id.as_str(),
                        &what,
                        &mut budget,
                    )?,
                })
            })
            .collect()
    }

    /// A base image's starting point: its config and layers, keyed by its manifest.
    fn store_image(
        &self,
        manifest_descriptor: Descriptor,
        config: ImageConfig,
        layers: Vec<LayerRef>,
    ) -> StageImage {
        let mut key = KeyHasher::new("base");
        key.str("kind", "image")
            .str("manifest", manifest_descriptor.digest.as_str());
        let mut config = config;
        // The image's ONBUILD triggers run in this stage; the child image does not keep them,
        // nor the base's inline cache, which is of the base's layers.
        config.config.on_build.clear();
        config.inline_cache = None;
        let time = self.options.source_date_epoch.unwrap_or_else(|| {
            config
                .created
                .as_deref()
                .and_then(parse_rfc3339)
                .unwrap_or(0)
        });
        let (base_layers, base_history) = (layers.len(), config.history.len());
        StageImage {
            config,
            layers,
            chain_key: key.finish(),
            cmd_set: false,
            time,
            base_layers,
            base_history,
            ships: false,
            target: self.options.platform.clone(),
        }
    }

    /// A stage's image, waiting for it if it is still being built (the caller's job slot is
    /// given back meanwhile).
    fn result(&self, index: usize) -> Result<StageImage, BuildError> {
        self.results
            .wait(index, &self.slots, &self.failed)
            .map_err(|e| match e {
                crate::nodes::WaitError::Stopped => BuildError::Cancelled,
                crate::nodes::WaitError::Missing => BuildError::Plan,
            })
    }

    fn stage(
        &self,
        stage: &Stage,
        first_step: usize,
        node: &NodeRun<'_>,
    ) -> Result<StageImage, BuildError> {
        let mut image = self.base(stage, node.target)?;
        image.ships = self.shipping.contains(&stage.index);
        if image.ships {
            // A parent stage that did not ship by itself (a cached one, say) ships now.
            for layer in &image.layers {
                self.make_in_background(layer);
            }
        }
        let count = stage.steps.len();
        for (position, step) in stage.steps.iter().enumerate() {
            if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(BuildError::Cancelled);
            }
            let number = first_step + position;
            self.progress.event(Event::Step {
                number,
                total: self.total,
                stage: format!("{}{} {}/{count}", stage.label(), node.label, position + 1),
                text: crate::image::redact_credentials(&step.instruction.original),
            });
            let started = Instant::now();
            match &step.action {
                Action::Config(change @ kiln_plan::ConfigChange::Workdir(dir)) if dir != "/" => {
                    self.workdir_step(number, stage, position, step, change, dir, &mut image)?;
                }
                Action::Config(change) => image.apply_metadata(step, change),
                Action::Arg(_) => {}
                Action::Run(run) => {
                    self.run_step(number, stage, position, step, run, &mut image)?;
                }
                Action::Copy(copy) => {
                    self.layer_step(number, stage, position, step, copy, &mut image)?;
                }
            }
            self.progress.event(Event::Done {
                number,
                elapsed: started.elapsed(),
            });
        }
        Ok(image)
    }

    /// Downloads every URL source of an ADD into a work area of the store.
    fn download(&self, copy: &kiln_plan::CopyStep) -> Result<Downloads, BuildError> {
        let dir = self.store.work_dir().map_err(BuildError::Store)?;
        let mut files = Vec::new();
        for source in &copy.sources {
            if let CopySource::Url(url) = source {
                files.push(fetch_url(
                    url,
                    copy.checksum.as_deref(),
                    dir.path(),
                    &FetchLimits::default(),
                )?);
            }
        }
        Ok(Downloads {
            _dir: Some(dir),
            files,
            ..Downloads::default()
        })
    }

    /// Checks out the git sources `copy_inputs` resolved, at the commits it keyed on.
    fn checkout_git(&self, downloads: &mut Downloads) -> Result<(), BuildError> {
        let dir = self.store.work_dir().map_err(BuildError::Store)?;
        let mut trees = Vec::new();
        for (index, resolved) in downloads.git.iter().enumerate() {
            trees.push(crate::git::checkout(
                resolved,
                &dir.path().join(format!("git-{index}")),
            )?);
        }
        downloads.git_trees = trees;
        downloads._git_dir = Some(dir);
        Ok(())
    }

    /// Key parts of a COPY/ADD: what it reads, named so a miss can say what changed.
    fn copy_inputs(
        &self,
        copy: &kiln_plan::CopyStep,
        walks: &[(String, Vec<kiln_context::Entry>)],
        downloads: &mut Downloads,
        target: &Platform,
    ) -> Result<Vec<KeyPart>, BuildError> {
        let mut parts = Vec::new();
        // URL content: with --checksum the checksum is the content (a hit downloads nothing,
        // as in BuildKit); without it the file must be fetched to know what it is.
        let urls: Vec<&String> = copy
            .sources
            .iter()
            .filter_map(|s| {
                if let CopySource::Url(u) = s {
                    Some(u)
                } else {
                    None
                }
            })
            .collect();
        if !urls.is_empty() {
            match &copy.checksum {
                Some(checksum) => parts.extend(urls.iter().map(|u| {
                    self.recorder.url(u, checksum);
                    KeyPart::UrlChecksum {
                        url: u.to_string(),
                        checksum: checksum.clone(),
                    }
                })),
                None => {
                    *downloads = self.download(copy)?;
                    for (url, file) in urls.iter().zip(&downloads.files) {
                        self.recorder.url(url, &file.digest);
                        parts.push(KeyPart::UrlContent {
                            url: url.to_string(),
                            digest: file.digest.clone(),
                            file_name: file.file_name.clone(),
                            mtime: file.mtime,
                        });
                    }
                }
            }
        }
        // A git source is keyed on the commit its ref names now (without credentials).
        for source in &copy.sources {
            if let CopySource::Git(url) = source {
                let parsed =
                    crate::git::GitSource::parse(url, copy.checksum.as_deref(), copy.keep_git_dir)
                        .map_err(|e| crate::ExecError::Copy(format!("ADD {e}")))?;
                let resolved = crate::git::resolve(&parsed)?;
                self.recorder.git(
                    &parsed.display_remote(),
                    &parsed.reference,
                    &resolved.commit,
                );
                parts.push(KeyPart::GitCommit {
                    source: format!(
                        "{}#{}:{}",
                        parsed.display_remote(),
                        parsed.reference,
                        parsed.subdir
                    ),
                    commit: resolved.commit.clone(),
                    keep_git_dir: parsed.keep_git_dir,
                });
                downloads.git.push(resolved);
            }
        }
        match &copy.from {
            Source::Context => {
                for (matched, entries) in walks {
                    let detail = kiln_context::hash::content_digest_detailed(
                        self.context,
                        entries,
                        self.memo,
                        MAX_FILE_PARTS,
                    )?;
                    parts.push(KeyPart::ContextSource {
                        pattern: matched.clone(),
                        digest: detail.digest,
                    });
                    // Per-file hashes let a miss name the file that changed.
                    for (entry, hash) in entries.iter().zip(&detail.files) {
                        let shown = if entry.relative.as_os_str().is_empty() {
                            matched.clone()
                        } else {
                            format!("{matched}/{}", entry.relative.display())
                        };
                        parts.push(KeyPart::ContextFile {
                            path: shown,
                            digest: kiln_context::hash::sha256_text(hash),
                        });
                    }
                }
            }
            Source::Stage(index) => {
                let image = self.result(*index)?;
                parts.push(KeyPart::Stage(image.chain_key.clone()));
            }
            Source::Image(reference) => {
                let image = self.image_from_store(reference, target)?;
                parts.push(KeyPart::Image(image.chain_key));
            }
        }
        Ok(parts)
    }

    fn layer_step(
        &self,
        number: usize,
        stage: &Stage,
        position: usize,
        step: &Step,
        copy: &kiln_plan::CopyStep,
        image: &mut StageImage,
    ) -> Result<(), BuildError> {
        let no_cache = self.no_cache_for(stage);
        // Files whose hash is not known yet are hashed while they are copied, before the key
        // is known: one read of each instead of two. On a cache hit the copy is dropped.
        let walks = self.context_walks(copy)?;
        let slot = format!("{}#{}:{position}", self.options.recipe_id, stage.label());
        // The previous snapshot's hint is read only when the step copies (never on a hit).
        let mut reuse = None;
        let speculative = if self.needs_hashing(copy, &walks) {
            reuse = self.copy_reuse(step, copy, image, &slot)?;
            let files = reuse.as_ref().map(|r| &r.files);
            Some(self.copy_into_snapshot(step, copy, image, &walks, &[], &[], files)?)
        } else {
            None
        };
        let mut downloads = Downloads::default();
        let inputs = self.copy_inputs(copy, &walks, &mut downloads, &image.target)?;
        let (key, parts) = self.copy_key(step, copy, image, inputs)?;
        let (layer, created) =
            self.cached_or_made(number, &slot, &key, parts, no_cache, step, || {
                let has_urls = copy.sources.iter().any(|s| matches!(s, CopySource::Url(_)));
                if has_urls && downloads.files.is_empty() {
                    let fetched = self.download(copy)?;
                    downloads.files = fetched.files;
                    downloads._dir = fetched._dir;
                }
                if !downloads.git.is_empty() {
                    self.checkout_git(&mut downloads)?;
                }
                let layer = match speculative {
                    Some((_work, snapshot)) => self.commit_layer(&snapshot, &key)?,
                    None => {
                        reuse = self.copy_reuse(step, copy, image, &slot)?;
                        let (_work, snapshot) = self.copy_into_snapshot(
                            step,
                            copy,
                            image,
                            &walks,
                            &downloads.files,
                            &downloads.git_trees,
                            reuse.as_ref().map(|r| &r.files),
                        )?;
                        self.commit_layer(&snapshot, &key)?
                    }
                };
                if let Some(reuse) = reuse {
                    crate::edit_reuse::remember(self.store, &slot, &key, reuse);
                }
                Ok(layer)
            })?;
        self.push_layer(image, &layer, created, step, key, copy.link)
    }

    /// `WORKDIR` other than `/`: the config takes the directory, and a layer holds the
    /// directories it had to make (empty when the image has the directory), as BuildKit's
    /// `mkdir -p` file operation gives, owned by the stage's USER.
    #[allow(clippy::too_many_arguments)]
    fn workdir_step(
        &self,
        number: usize,
        stage: &Stage,
        position: usize,
        step: &Step,
        change: &kiln_plan::ConfigChange,
        dir: &str,
        image: &mut StageImage,
    ) -> Result<(), BuildError> {
        apply_config(&mut image.config, change, &mut image.cmd_set);
        let below = self.rootfs(image)?;
        let (key, parts, owner) = self.workdir_key(step, image, &below);
        let slot = format!("{}#{}:{position}", self.options.recipe_id, stage.label());
        let no_cache = self.no_cache_for(stage);
        let (layer, created) =
            self.cached_or_made(number, &slot, &key, parts, no_cache, step, || {
                let work = self.store.work_dir().map_err(BuildError::Store)?;
                let snapshot = work.path().join("snapshot");
                std::fs::create_dir(&snapshot).map_err(|e| BuildError::Io {
                    path: snapshot.clone(),
                    source: e,
                })?;
                crate::copy::make_workdir(&snapshot, &below, dir, owner, self.now)?;
                self.commit_layer(&snapshot, &key)
            })?;
        self.push_layer(image, &layer, created, step, key, false)
    }

    /// A `WORKDIR` layer's key, its parts and the owner of what it makes: the directory (in
    /// the instruction) and the owner's ids, on top of the filesystem below.
    fn workdir_key(
        &self,
        step: &Step,
        image: &StageImage,
        below: &Rootfs,
    ) -> (String, KeyParts, crate::copy::Owner) {
        let owner = crate::copy::workdir_owner(&image.config.config.user, below);
        let mut key = StepKey::new(StepKind::Layer);
        key.push(KeyPart::Parent(image.chain_key.clone()))
            .push(KeyPart::Instruction(instruction_digest(step)))
            .push(KeyPart::Chown {
                uid: owner.uid,
                gid: owner.gid,
            });
        self.common_parts(step, &mut key);
        let (key, parts) = key.finish();
        (key, parts, owner)
    }

    /// A COPY/ADD's key and its parts, given what it reads (`copy_inputs`).
    fn copy_key(
        &self,
        step: &Step,
        copy: &kiln_plan::CopyStep,
        image: &StageImage,
        inputs: Vec<KeyPart>,
    ) -> Result<(String, Vec<(String, String)>), BuildError> {
        let mut key = StepKey::new(StepKind::Layer);
        // --link makes the layer independent of what is below it.
        key.push(if copy.link {
            KeyPart::LinkedParent
        } else {
            KeyPart::Parent(image.chain_key.clone())
        });
        key.push(KeyPart::Instruction(instruction_digest(step)));
        if let Some(owner) = self.chown_part(copy, image)? {
            key.push(owner);
        }
        self.common_parts(step, &mut key);
        for part in inputs {
            key.push(part);
        }
        Ok(key.finish())
    }

    /// A RUN's key and its parts, the config it runs with and its bind mounts' sources.
    #[allow(clippy::type_complexity)]
    fn run_key(
        &self,
        step: &Step,
        run: &kiln_plan::RunStep,
        image: &StageImage,
    ) -> Result<
        (
            String,
            Vec<(String, String)>,
            ImageConfig,
            Vec<crate::run::MountInput>,
        ),
        BuildError,
    > {
        let mut config = image.config.clone();
        if !step.workdir.is_empty() {
            config.config.working_dir = step.workdir.clone();
        }
        let mut key = StepKey::new(StepKind::Run);
        key.push(KeyPart::Parent(image.chain_key.clone()))
            .push(KeyPart::Instruction(instruction_digest(step)))
            .push(KeyPart::Env(env_digest(&config.config.env)))
            .push(KeyPart::User(config.config.user.clone()))
            .push(KeyPart::Workdir(config.config.working_dir.clone()));
        self.common_parts(step, &mut key);
        let mount_inputs = self.mount_inputs(run, &image.target, &mut key)?;
        let (key, parts) = key.finish();
        Ok((key, parts, config, mount_inputs))
    }

    /// A RUN: keyed on the filesystem below, the command and everything of the config it sees
    /// (environment, user, working directory); on a miss it runs in the sandbox.
    fn run_step(
        &self,
        number: usize,
        stage: &Stage,
        position: usize,
        step: &Step,
        run: &kiln_plan::RunStep,
        image: &mut StageImage,
    ) -> Result<(), BuildError> {
        let no_cache = self.no_cache_for(stage);
        let (key, parts, config, mount_inputs) = self.run_key(step, run, image)?;
        let slot = format!("{}#{}:{position}", self.options.recipe_id, stage.label());
        let on_line = |line: &str| {
            self.progress.event(Event::Output {
                number,
                line: line.to_string(),
            })
        };
        let (layer, created) =
            self.cached_or_made(number, &slot, &key, parts, no_cache, step, || {
                let rootfs = self.rootfs(image)?;
                let job = crate::run::RunJob {
                    store: self.store,
                    image: &rootfs,
                    config: &config,
                    run,
                    line: step.instruction.start_line,
                    text: &step.instruction.original,
                    snapshotter: self.options.snapshotter,
                    overlay_broken: &self.overlay_broken,
                    cancel: &self.failed,
                    on_line: &on_line,
                    mount_inputs: &mount_inputs,
                    settings: &self.options.run,
                    context: Some(self.context),
                    secrets: &self.options.secrets,
                };
                let (_work, snapshot) = crate::run::execute(&job)?;
                self.commit_layer(&snapshot, &key)
            })?;
        self.push_layer(image, &layer, created, step, key, false)
    }

    /// The sources of a RUN's bind mounts, and their key parts: the content digest of a context
    /// source, the chain key of a stage or image. Secrets add nothing (their ids are in the
    /// instruction's key).
    fn mount_inputs(
        &self,
        run: &kiln_plan::RunStep,
        target: &Platform,
        key: &mut StepKey,
    ) -> Result<Vec<crate::run::MountInput>, BuildError> {
        use crate::run::MountInput;
        use kiln_recipe::mount::MountType;
        let mut inputs = Vec::new();
        for (index, (mount, source)) in run.mounts.iter().zip(&run.mount_sources).enumerate() {
            // Binds read their source; a cache with from= starts as a copy of its source.
            let seeded_cache = mount.kind == MountType::Cache && mount.from.is_some();
            if mount.kind != MountType::Bind && !seeded_cache {
                inputs.push(MountInput::None);
                continue;
            }
            let path = mount.source.clone().unwrap_or_default();
            let input = match source {
                None => MountInput::None,
                Some(Source::Context) => {
                    let shown = if path.is_empty() { "." } else { path.as_str() };
                    let bad = |source| crate::ExecError::MountSource {
                        path: shown.to_string(),
                        source,
                    };
                    let resolved = self.context.resolve(&path, true).map_err(bad)?;
                    let entries = self
                        .context
                        .walk(&path, &IgnoreRules::default())
                        .map_err(bad)?;
                    let digest = kiln_context::content_digest(self.context, &entries, self.memo)
                        .map_err(bad)?;
                    key.push(KeyPart::MountContext {
                        index,
                        path: shown.to_string(),
                        digest,
                    });
                    // What `.dockerignore` leaves out is not seen through the mount either.
                    let filtered = if self.context.ignore().is_empty() {
                        None
                    } else {
                        Some(entries)
                    };
                    MountInput::Context {
                        path: resolved,
                        filtered,
                    }
                }
                Some(Source::Stage(stage)) => {
                    let image = self.result(*stage)?;
                    key.push(KeyPart::MountStage {
                        index,
                        chain_key: image.chain_key.clone(),
                    });
                    MountInput::Image(self.rootfs(&image)?)
                }
                Some(Source::Image(reference)) => {
                    let image = self.image_from_store(reference, target)?;
                    key.push(KeyPart::MountImage {
                        index,
                        chain_key: image.chain_key.clone(),
                    });
                    MountInput::Image(self.rootfs(&image)?)
                }
            };
            inputs.push(input);
        }
        Ok(inputs)
    }

    /// Key parts every layer step has: the build args it read (hashed), compression, epoch.
    fn common_parts(&self, step: &Step, key: &mut StepKey) {
        for (name, value) in &step.args_used {
            // Only a hash of the value: a build arg may hold something private, and cache
            // records are plain files.
            key.push(KeyPart::BuildArg {
                name: name.clone(),
                value_digest: build_arg_digest(value.as_deref()),
            });
        }
        let compression = match self.options.compression {
            Compression::Gzip { level } => LayerCompression::Gzip(level),
            Compression::Zstd { level } => LayerCompression::Zstd(level),
            Compression::None => LayerCompression::None,
        };
        key.push(KeyPart::Compression(compression))
            .push(KeyPart::Epoch(self.options.source_date_epoch));
    }

    /// The step's layer from the cache, or made by `make` and recorded; with its time.
    #[allow(clippy::too_many_arguments)]
    fn cached_or_made(
        &self,
        number: usize,
        slot: &str,
        key: &str,
        parts: Vec<(String, String)>,
        no_cache: bool,
        step: &Step,
        make: impl FnOnce() -> Result<StepLayer, BuildError>,
    ) -> Result<(StepLayer, i64), BuildError> {
        let record = if no_cache {
            None
        } else {
            self.cache_lookup(key)
        };
        // A lazy record is a hit whether or not its blob is made yet.
        if let Some((record, layer)) =
            record.and_then(|r| StepLayer::of_record(self.store, &r).map(|l| (r, l)))
        {
            self.cached
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.progress.event(Event::Cached { number });
            let created = record.created;
            self.recorder.step(number, key, true);
            self.keep_record(record);
            return Ok((layer, created));
        }
        let reason = if no_cache {
            "--no-cache".to_string()
        } else {
            self.miss_reason(slot, &parts)
        };
        self.progress.event(Event::Miss { number, reason });
        self.recorder.step(number, key, false);
        let layer = make()?;
        self.store.slot_put(slot, key).map_err(BuildError::Store)?;
        let mut stored_parts = vec![("slot".to_string(), slot.to_string())];
        stored_parts.extend(parts);
        let record = CacheRecord {
            key: key.to_string(),
            layer: layer.layer.clone(),
            snapshot: Some(key.to_string()),
            created_by: crate::image::redact_credentials(&step.instruction.original),
            parts: stored_parts,
            created: self.now,
            recorded: now_nanos(),
        };
        self.store.cache_put(&record).map_err(BuildError::Store)?;
        self.keep_record(record);
        Ok((layer, self.now))
    }

    fn keep_record(&self, record: CacheRecord) {
        if let Ok(mut records) = self.records.lock() {
            records.push(record);
        }
    }

    /// A step's record: from the store's cache, else from a `--cache-from` cache (its layer
    /// fetched into the store, the record kept there too). A cache that fails to give a layer
    /// only warns: the step runs.
    fn cache_lookup(&self, key: &str) -> Option<CacheRecord> {
        if let Some(record) = self.store.cache_get(key) {
            return Some(record);
        }
        let sink = |event| self.progress.event(Event::Transfer(event));
        for imported in &self.options.remote.cache_from {
            let Some(hit) = imported.hit(key, self.store, now_nanos(), &sink) else {
                continue;
            };
            match hit {
                Ok(record) => {
                    let _ = self.store.cache_put(&record);
                    return Some(record);
                }
                Err(message) => self.progress.event(Event::Warning {
                    message: format!("cache {}: {message}", imported.name()),
                }),
            }
        }
        None
    }

    /// Puts a step's layer on the stage's image: layer list, diff_ids, history, chain key.
    fn push_layer(
        &self,
        image: &mut StageImage,
        layer: &StepLayer,
        created: i64,
        step: &Step,
        key: String,
        link: bool,
    ) -> Result<(), BuildError> {
        // SOURCE_DATE_EPOCH, when given, is the time of everything.
        image.time = self
            .options
            .source_date_epoch
            .unwrap_or(image.time.max(created));
        // A lazy layer stands in as its key until its blob is made.
        let (record, pending) = match &layer.layer {
            Some(record) => (record.clone(), None),
            None => (placeholder_layer(&key), Some(key.clone())),
        };
        let digest =
            Digest::parse(&record.digest).map_err(crate::ExecError::oci(&record.digest))?;
        let diff_id =
            Digest::parse(&record.diff_id).map_err(crate::ExecError::oci(&record.diff_id))?;
        let layer_ref = LayerRef {
            descriptor: Descriptor::new(record.media_type.clone(), digest, record.size),
            snapshot: layer.snapshot.clone(),
            pending,
        };
        if image.ships {
            self.make_in_background(&layer_ref);
        }
        image.layers.push(layer_ref);
        image.config.rootfs.diff_ids.push(diff_id);
        image
            .config
            .history
            .push(history_entry(step, rfc3339(image.time), false));
        // A --link layer's own key ignores what is below it, but the filesystem after it does
        // not: later steps chain on both.
        image.chain_key = if link {
            let mut chain = KeyHasher::new("linked-chain");
            chain.str("below", &image.chain_key).str("layer", &key);
            chain.finish()
        } else {
            key
        };
        Ok(())
    }

    /// Compares this step's key parts with the last record of the same step to say why it
    /// runs: the question people most ask of a builder.
    fn miss_reason(&self, slot: &str, parts: &[(String, String)]) -> String {
        let previous = self.store.slot_get(slot);
        let Some(previous) = previous else {
            return "not built before".to_string();
        };
        // Parts recorded under another key scheme cannot be compared with these.
        if kiln_plan::cache_key::written_by_other_scheme(&previous.parts) {
            return kiln_plan::cache_key::UPGRADED_REASON.to_string();
        }
        let old: BTreeMap<&str, &str> = previous
            .parts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let new: BTreeMap<&str, &str> = parts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut reasons = Vec::new();
        for (name, value) in &new {
            match old.get(name) {
                Some(before) if before == value => {}
                Some(_) if *name == "parent" => reasons.push("parent changed".to_string()),
                Some(_) if *name == "instruction" => {
                    reasons.push("instruction changed".to_string())
                }
                Some(_) => reasons.push(format!("{} changed", describe(name))),
                None if name.starts_with("file ") => {
                    reasons.push(format!("{} added", describe(name)))
                }
                None => reasons.push(format!("{} is new", describe(name))),
            }
        }
        for name in old
            .keys()
            .filter(|n| n.starts_with("file ") && !new.contains_key(*n))
        {
            reasons.push(format!("{} removed", describe(name)));
        }
        // A changed file also changes its source's digest; the file says more.
        if reasons
            .iter()
            .any(|r| r.starts_with("file ") || r.contains(" added") || r.contains(" removed"))
        {
            reasons.retain(|r| !r.starts_with("source "));
        }
        if reasons.is_empty() {
            return "the cached layer is no longer in the store".to_string();
        }
        let shown: Vec<String> = reasons.iter().take(3).cloned().collect();
        let more = reasons.len().saturating_sub(3);
        if more > 0 {
            format!("{} (and {more} more)", shown.join(", "))
        } else {
            shown.join(", ")
        }
    }

    /// A COPY's `--chown` as the ids it resolves to: by name it depends on the image's
    /// /etc/passwd and /etc/group, so keys carry the ids.
    fn chown_part(
        &self,
        copy: &kiln_plan::CopyStep,
        image: &StageImage,
    ) -> Result<Option<KeyPart>, BuildError> {
        let Some(spec) = &copy.chown else {
            return Ok(None);
        };
        let owner = crate::copy::resolve_chown(spec, &self.rootfs(image)?)
            .map_err(crate::ExecError::Copy)?;
        Ok(Some(KeyPart::Chown {
            uid: owner.uid,
            gid: owner.gid,
        }))
    }

    /// A COPY from the context: its identity apart from what it reads and what is below it,
    /// and the previous snapshot of the same step to take unchanged files from (see
    /// [`crate::edit_reuse`]; each file taken is checked, so the identity only picks the
    /// snapshot most likely to have them).
    fn copy_reuse(
        &self,
        step: &Step,
        copy: &kiln_plan::CopyStep,
        image: &StageImage,
        slot: &str,
    ) -> Result<Option<crate::edit_reuse::CopyReuse>, BuildError> {
        let from_context = copy.from == Source::Context
            && copy
                .sources
                .iter()
                .all(|s| matches!(s, CopySource::Path(_)));
        if !from_context {
            return Ok(None);
        }
        let mut key = StepKey::new(StepKind::Layer);
        key.push(KeyPart::Instruction(instruction_digest(step)));
        if let Some(owner) = self.chown_part(copy, image)? {
            key.push(owner);
        }
        self.common_parts(step, &mut key);
        let (identity, _) = key.finish();
        Ok(Some(crate::edit_reuse::previous(
            self.store, slot, identity,
        )))
    }

    /// Runs a COPY/ADD into a fresh snapshot in a work area; context files are hashed as they
    /// are copied (and, with `reuse`, unchanged ones linked from the step's previous snapshot).
    #[allow(clippy::too_many_arguments)]
    fn copy_into_snapshot(
        &self,
        step: &Step,
        copy: &kiln_plan::CopyStep,
        image: &StageImage,
        walked: &[(String, Vec<kiln_context::Entry>)],
        fetched: &[Fetched],
        git_trees: &[PathBuf],
        reuse: Option<&kiln_exec::reuse::SnapshotReuse>,
    ) -> Result<(kiln_store::WorkDir, PathBuf), BuildError> {
        let work = self.store.work_dir().map_err(BuildError::Store)?;
        let snapshot = work.path().join("snapshot");
        std::fs::create_dir(&snapshot).map_err(|e| BuildError::Io {
            path: snapshot.clone(),
            source: e,
        })?;
        let empty = Rootfs::default();
        let below = self.rootfs(image)?;
        let job = CopyJob {
            step: copy,
            workdir: &step.workdir,
            image: if copy.link { &empty } else { &below },
            users: &below,
            snapshot: &snapshot,
            now: self.now,
            fetched,
            git_trees,
            memo: Some(self.memo),
            reuse,
            walked,
        };
        let from_rootfs;
        let from = match &copy.from {
            Source::Context => CopyFrom::Context(self.context),
            Source::Stage(index) => {
                from_rootfs = self.rootfs(&self.result(*index)?)?;
                CopyFrom::Stage(&from_rootfs)
            }
            Source::Image(reference) => {
                from_rootfs = self.rootfs(&self.image_from_store(reference, &image.target)?)?;
                CopyFrom::Stage(&from_rootfs)
            }
        };
        run_copy(&job, &from)?;
        Ok((work, snapshot))
    }

    /// Moves a step's snapshot into the store under the step's key. Its layer blob is made
    /// later, only if something needs it (see [`crate::lazy`]).
    fn commit_layer(&self, snapshot: &Path, key: &str) -> Result<StepLayer, BuildError> {
        let snapshot = self
            .store
            .commit_snapshot(snapshot, key)
            .map_err(BuildError::Store)?;
        Ok(StepLayer {
            layer: None,
            snapshot,
        })
    }

    /// Hands a lazy layer of a shipping stage to the background blob maker.
    fn make_in_background(&self, layer: &LayerRef) {
        if let (Some(blobs), Some(key)) = (self.blobs, &layer.pending) {
            blobs.submit(key, &layer.snapshot);
        }
    }

    /// Makes (or waits for) the blob of every lazy layer of the image, filling in descriptors,
    /// diff_ids and the build's records: the image ships.
    fn make_blobs(&self, image: &mut StageImage) -> Result<(), BuildError> {
        for (index, layer) in image.layers.iter_mut().enumerate() {
            let Some(key) = layer.pending.take() else {
                continue;
            };
            let made = match self.blobs {
                Some(blobs) => blobs.layer(&key, &layer.snapshot)?,
                None => crate::lazy::make_lazy_blob(
                    self.store,
                    self.memo,
                    &key,
                    &layer.snapshot,
                    &layer_options(self.options),
                )?,
            };
            let digest =
                Digest::parse(&made.digest).map_err(crate::ExecError::oci(&made.digest))?;
            let diff_id =
                Digest::parse(&made.diff_id).map_err(crate::ExecError::oci(&made.diff_id))?;
            layer.descriptor = Descriptor::new(made.media_type.clone(), digest, made.size);
            if let Some(slot) = image.config.rootfs.diff_ids.get_mut(index) {
                *slot = diff_id;
            }
            if let Ok(mut records) = self.records.lock() {
                for record in records.iter_mut().filter(|r| r.key == key) {
                    record.layer = Some(made.clone());
                }
            }
        }
        Ok(())
    }

    /// The context entries a COPY/ADD reads, per matched source (a metadata walk; nothing is
    /// read). Empty for sources outside the context.
    fn context_walks(
        &self,
        copy: &kiln_plan::CopyStep,
    ) -> Result<Vec<(String, Vec<kiln_context::Entry>)>, BuildError> {
        if copy.from != Source::Context {
            return Ok(Vec::new());
        }
        let excludes = IgnoreRules::parse(&copy.excludes.join("\n"))?;
        let mut walks = Vec::new();
        for source in &copy.sources {
            let CopySource::Path(pattern) = source else {
                continue;
            };
            walks.extend(crate::copy::context_walks(
                self.context,
                pattern,
                &excludes,
            )?);
        }
        Ok(walks)
    }

    /// Whether some context file the walks found has no memoised hash (a cold or changed file).
    fn needs_hashing(
        &self,
        copy: &kiln_plan::CopyStep,
        walks: &[(String, Vec<kiln_context::Entry>)],
    ) -> bool {
        let all_paths = copy
            .sources
            .iter()
            .all(|s| matches!(s, CopySource::Path(_)));
        all_paths && {
            let mut files = walks
                .iter()
                .flat_map(|(_, entries)| entries)
                .filter(|e| e.kind == kiln_context::EntryKind::File)
                .map(|e| &e.stat);
            kiln_context::HashMemo::get_many(self.memo, &mut files)
                .iter()
                .any(Option::is_none)
        }
    }

    fn finish(&self, image: StageImage) -> Result<Built, BuildError> {
        let mut image = if self.options.squash {
            self.squash(image)?
        } else {
            image
        };
        self.make_blobs(&mut image)?;
        let mut config = image.config;
        config.config.labels.extend(self.options.labels.clone());
        // An image of metadata alone has no layer time to inherit: it is made now.
        let created = if image.time == 0 && self.options.source_date_epoch.is_none() {
            self.now
        } else {
            image.time
        };
        config.created = Some(rfc3339(created));
        // Metadata steps of a FROM scratch stage before its first layer have no layer time to
        // take: they get the image's own.
        if self.options.source_date_epoch.is_none() {
            let unset = rfc3339(0);
            for entry in &mut config.history {
                if entry.created.as_deref() == Some(unset.as_str()) {
                    entry.created = config.created.clone();
                }
            }
        }
        let records = self.records.lock().map(|r| r.clone()).unwrap_or_default();
        let layers: Vec<Descriptor> = image.layers.iter().map(|l| l.descriptor.clone()).collect();
        if self.options.remote.inline_cache {
            config.inline_cache = Some(crate::shared_cache::inline_value(&records, &layers));
        }
        let config_bytes =
            to_canonical_json(&config).map_err(crate::ExecError::oci("the image config"))?;
        let config_digest = self
            .store
            .put_blob(&config_bytes)
            .map_err(BuildError::Store)?;
        let config_descriptor = Descriptor::new(
            media_types::OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        );
        let mut manifest = Manifest::new(config_descriptor.clone(), layers.clone());
        manifest
            .annotations
            .extend(crate::annotations::Annotations::split(&self.options.annotations).manifest);
        let manifest_bytes =
            to_canonical_json(&manifest).map_err(crate::ExecError::oci("the image manifest"))?;
        let manifest_digest = self
            .store
            .put_blob(&manifest_bytes)
            .map_err(BuildError::Store)?;
        let mut descriptor = Descriptor::new(
            media_types::OCI_MANIFEST,
            manifest_digest,
            manifest_bytes.len() as u64,
        );
        descriptor.platform = Some(config.platform());
        Ok(Built {
            manifest: descriptor,
            snapshots: image.layers.iter().map(|l| l.snapshot.clone()).collect(),
            source_date_epoch: self.options.source_date_epoch,
            config,
            config_descriptor,
            layers,
            steps: self.total,
            cached: self.cached.load(std::sync::atomic::Ordering::Relaxed),
            context_bytes_read: self.memo.bytes_read(),
            records,
            recorded: self.recorder.recorded(),
            platforms: Vec::new(),
            memo: crate::lazy::SharedMemo::default(),
        })
    }
}

impl Builder<'_> {
    /// `--squash`: the layers this recipe added become one, made by applying each in order as
    /// overlayfs would (whiteouts remove, opaque directories replace). History keeps every
    /// instruction; the squashed ones are marked empty and one entry says what was merged.
    fn squash(&self, mut image: StageImage) -> Result<StageImage, BuildError> {
        let added = image.layers.len().saturating_sub(image.base_layers);
        if added < 2 {
            return Ok(image);
        }
        let work = self.store.work_dir().map_err(BuildError::Store)?;
        let merged = work.path().join("merged");
        std::fs::create_dir(&merged).map_err(|e| BuildError::Io {
            path: merged.clone(),
            source: e,
        })?;
        let base = Rootfs::new(
            image.layers[..image.base_layers]
                .iter()
                .map(|l| l.snapshot.clone())
                .collect(),
        );
        for layer in &image.layers[image.base_layers..] {
            crate::squash::apply_layer(&layer.snapshot, &merged, &base)?;
        }
        let options = layer_options(self.options);
        let blob = self.store.blob_writer().map_err(BuildError::Store)?;
        let (written, written_back) =
            kiln_store::writing_back(blob, |blob| write_layer(&merged, &options, blob));
        let (layer, blob) = written.map_err(crate::ExecError::layer(format!(
            "writing the squashed layer of {}",
            merged.display()
        )))?;
        let digest = Digest::parse(&layer.digest).map_err(crate::ExecError::oci(&layer.digest))?;
        let diff_id =
            Digest::parse(&layer.diff_id).map_err(crate::ExecError::oci(&layer.diff_id))?;
        self.store
            .commit_written_back(blob, &digest, written_back)
            .map_err(BuildError::Store)?;
        let snapshot = self
            .store
            .commit_snapshot(&merged, &layer.diff_id)
            .map_err(BuildError::Store)?;
        image.layers.truncate(image.base_layers);
        image.layers.push(LayerRef {
            descriptor: Descriptor::new(layer.media_type, digest, layer.size),
            snapshot,
            pending: None,
        });
        image.config.rootfs.diff_ids.truncate(image.base_layers);
        image.config.rootfs.diff_ids.push(diff_id);
        for entry in image.config.history.iter_mut().skip(image.base_history) {
            entry.empty_layer = true;
        }
        image.config.history.push(kiln_oci::History {
            created: Some(rfc3339(image.time)),
            created_by: Some(format!(
                "kiln build --squash: {added} layers merged into one"
            )),
            ..kiln_oci::History::default()
        });
        Ok(image)
    }
}

/// Base image configs from the store, for planning: a stage on an image sees that image's ENV
/// in expansion, starts in its WORKDIR with its SHELL, and runs its ONBUILD triggers.
/// An image the store lacks is asked of the registry (manifest and config only).
pub struct StoreImages<'a> {
    /// The store images are looked up in.
    pub store: &'a Store,
    /// Where images the store lacks are asked for.
    pub remote: &'a crate::remote::RemoteOptions,
    /// Where pull transfers are shown.
    pub progress: &'a dyn Progress,
}

impl kiln_plan::ImageConfigs for StoreImages<'_> {
    fn config(&self, reference: &str, platform: &Platform) -> Option<kiln_plan::BaseConfig> {
        let sink = |event| self.progress.event(Event::Transfer(event));
        let config = match self
            .remote
            .locate(self.store, reference, platform, &sink)
            .ok()?
        {
            Located::Archive(archive) => archive.config.config,
            // Resolved once per build, so this asks nothing again.
            Located::Manifest(_) => {
                let config = self.remote.config(self.store, reference, platform, &sink);
                config.ok()?.config
            }
        };
        Some(kiln_plan::BaseConfig {
            env: config
                .env
                .iter()
                .map(|entry| match entry.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (entry.clone(), String::new()),
                })
                .collect(),
            workdir: (!config.working_dir.is_empty()).then_some(config.working_dir),
            shell: (!config.shell.is_empty()).then_some(config.shell),
            onbuild: config.on_build,
        })
    }
}

/// How the build's layers are written (the step keys hold the same compression and epoch).
pub(crate) fn layer_options(options: &BuildOptions) -> LayerOptions {
    LayerOptions {
        compression: options.compression,
        source_date_epoch: options.source_date_epoch,
        threads: 0,
    }
}

/// Files named in a step's key parts at most; past it only each source's digest is kept.
const MAX_FILE_PARTS: usize = 10_000;

fn describe(part: &str) -> String {
    if let Some(arg) = part.strip_prefix("arg ") {
        return format!("build arg {arg}");
    }
    part.to_string()
}
