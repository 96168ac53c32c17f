//! `kiln build`: the flags read into a [`Build`], its progress shown. The build itself —
//! caches, steps, outputs, push, names — is kiln-build's.

use crate::cli::BuildArgs;
use crate::progress::{Plain, Style};
use crate::recipe::{self, INVALID, USAGE};
use kiln_build::output::{self, Destination, OutputKind, OutputSpec};
use kiln_build::pipeline::Build;
use kiln_build::remote::{PullPolicy, RemoteOptions};
use kiln_build::shared_cache::{CacheExport, CacheImport};
use kiln_build::{BuildOptions, StoreImages};
use kiln_context::Context;
use kiln_oci::ImageName;
use kiln_plan::Platform;
use kiln_store::Store;
use std::path::Path;
use std::process::ExitCode;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// Parses every value of a repeated flag, or says which one is wrong.
fn each<T, E: std::fmt::Display>(
    flag: &str,
    values: &[String],
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>, String> {
    let parsed = values
        .iter()
        .map(|v| parse(v).map_err(|e| format!("{flag} {v}: {e}")));
    parsed.collect()
}

/// What the flags ask for, checked before any work starts.
struct Flags {
    names: Vec<ImageName>,
    outputs: Vec<OutputSpec>,
    push_to: Vec<ImageName>,
    cache_to: Vec<CacheExport>,
    cache_from: Vec<CacheImport>,
    pull: Option<PullPolicy>,
    options: BuildOptions,
    attest: kiln_build::attest::AttestOptions,
}

fn read_flags(args: &BuildArgs) -> Result<Flags, String> {
    let names = each("-t", &args.tags, ImageName::parse)?;
    let outputs = each("-o", &args.outputs, OutputSpec::parse)?;
    let platform = args
        .recipe
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose();
    let env_snapshotter = std::env::var("KILN_SNAPSHOTTER")
        .ok()
        .filter(|v| !v.is_empty());
    let snapshotter = args
        .snapshotter
        .clone()
        .or(env_snapshotter)
        .unwrap_or("auto".into());
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let options = BuildOptions {
        secrets: kiln_build::secret_flags::parse_secrets(&args.secrets)?,
        remote: RemoteOptions::default(),
        snapshotter: kiln_build::run::Snapshotter::parse(&snapshotter).ok_or(format!(
            "--snapshotter {snapshotter}: expected auto, overlay or copy"
        ))?,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        source_date_epoch: recipe::source_date_epoch(args.source_date_epoch)?,
        compression: output::layer_compression(&outputs)?,
        platform: platform
            .map_err(|e| format!("--platform: {e}"))?
            .unwrap_or_else(Platform::host),
        squash: args.squash,
        jobs,
        recipe_id: String::new(),
        run: kiln_build::run_settings::RunSettings {
            network: args.network.unwrap_or(kiln_sandbox::Network::Host),
            extra_hosts: args.add_hosts.clone(),
            ssh: args.ssh.iter().cloned().collect(),
            allow_insecure: args.allow.iter().any(|a| a == "security.insecure"),
            shm_size: args.shm_size,
            ulimits: args.ulimits.clone(),
        },
        labels: args.labels.iter().cloned().collect(),
        annotations: args.annotations.iter().cloned().collect(),
    };
    let push_to = output::push_destinations(&outputs, &names, args.push)?;
    let (provenance, sbom) = kiln_build::attest::read_flags(
        args.attest.provenance.as_deref(),
        args.attest.sbom.as_deref(),
        &args.attest.attest,
        &outputs,
        !push_to.is_empty(),
    )?;
    let attest = kiln_build::attest::AttestOptions {
        provenance,
        sbom,
        build_args: recipe::parse_build_args(&args.recipe.build_args)?,
        target: args.recipe.target.clone(),
        started: Some(kiln_sbom::Timestamp::now()),
        asked: args.attest.provenance.is_some()
            || args.attest.sbom.is_some()
            || !args.attest.attest.is_empty(),
        ..Default::default()
    };
    Ok(Flags {
        push_to,
        attest,
        cache_to: each("--cache-to", &args.cache_to, CacheExport::parse)?,
        cache_from: each("--cache-from", &args.cache_from, CacheImport::parse)?,
        pull: PullPolicy::parse_flag(args.pull.as_deref())?,
        names,
        outputs,
        options,
    })
}

pub fn run(args: &BuildArgs, root: &Path) -> ExitCode {
    if args.check {
        return recipe::check(&args.recipe);
    }
    let flags = match read_flags(args) {
        Ok(flags) => flags,
        Err(message) => return fail(USAGE, message),
    };
    let store = match Store::open(root) {
        Ok(store) => store,
        Err(e) => return fail(INVALID, format!("store {}: {e}", root.display())),
    };
    let style = match args.progress {
        _ if args.quiet => Style::Quiet,
        mode => crate::registry_cmd::style(mode),
    };
    let progress = Plain::new(style);
    // The isolation rung RUN steps get, in one line at the start (not in quiet or json output).
    if let (Some(chosen), Style::Plain | Style::Tty) = (kiln_sandbox::isolation::chosen(), style) {
        eprintln!("{chosen}");
    }
    let code = build(args, flags, &store, &progress);
    progress.finish();
    code
}

/// Plans, builds and delivers the image, then shows the result.
fn build(args: &BuildArgs, flags: Flags, store: &Store, progress: &Plain) -> ExitCode {
    let Flags {
        names,
        outputs,
        push_to,
        cache_to,
        cache_from,
        pull,
        mut options,
        attest,
    } = flags;
    let mut job = Build {
        store,
        progress,
        registry: crate::registry_cmd::client(&args.registry),
        outputs: outputs
            .iter()
            .filter(|o| o.kind != OutputKind::Registry)
            .cloned()
            .collect(),
        names: names.clone(),
        push_to,
        cache_from,
        cache_to,
        iidfile: args.iidfile.clone(),
        metadata_file: args.metadata_file.clone(),
        attest,
    };
    let mut remote = job.remote(pull);
    let images = StoreImages {
        store,
        remote: &remote,
        progress,
    };
    // Local directories given as named contexts become one-layer images first (kept in a
    // work area of the store until the build ends).
    let recipe_args = match import_local_contexts(&args.recipe, store, &options) {
        Ok(imported) => imported,
        Err(message) => return fail(INVALID, message),
    };
    let loaded = match recipe::load(&recipe_args, &images) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let context = match Context::open(&args.recipe.context, loaded.recipe_path.as_deref()) {
        Ok(context) => context,
        Err(e) => {
            return fail(
                INVALID,
                format!("build context {}: {e}", args.recipe.context.display()),
            )
        }
    };
    job.attest.recipe = Some(kiln_attest::Recipe {
        path: loaded.name.clone(),
        digest: loaded.digest.clone(),
        source_uri: None,
    });
    job.attest.context_names =
        kiln_build::attest::context_names(&recipe_args.build_contexts, LOCAL_CONTEXT_REPOSITORY);
    options.recipe_id = kiln_build::build::recipe_id(loaded.recipe_path.as_deref(), context.root());
    job.import_caches(&loaded.plan, &options.platform, &mut remote);
    options.remote = remote;
    for wanted in kiln_build::build::unknown_stage_filters(&loaded.plan, &args.no_cache_filter) {
        eprintln!("warning: --no-cache-filter {wanted}: no stage has this name or index");
    }
    let result = job.run(&loaded.plan, &context, &options);
    // The live display is cleared before anything else is printed.
    progress.finish();
    let built = match result {
        Ok(built) => built,
        Err(e) => return fail(INVALID, e),
    };
    if let Some(warning) = output::docker_layer_warning(&outputs, built.layers.len()) {
        eprintln!("warning: {warning}");
    }
    let stdout_taken = outputs.iter().any(|o| o.destination == Destination::Stdout);
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    progress.built(&built, &names, stdout_taken);
    ExitCode::SUCCESS
}

/// `--build-context NAME=DIR`: each local directory is built into a one-layer image of the
/// store, as `FROM scratch` + `COPY . /` with the directory as its context (its own
/// `.dockerignore` applies, files belong to root), and the recipe names that image by its
/// manifest digest. The COPY is keyed and cached by content like any other, so an unchanged
/// directory gives the same image and the steps that use it stay cached.
fn import_local_contexts(
    recipe_args: &crate::cli::RecipeArgs,
    store: &Store,
    options: &BuildOptions,
) -> Result<crate::cli::RecipeArgs, String> {
    let local = recipe::local_contexts(&recipe_args.build_contexts);
    let mut args = recipe_args.clone();
    let recipe = kiln_recipe::parse_recipe("FROM scratch\nCOPY . /\n");
    let plan_options = kiln_plan::PlanOptions {
        target_platform: options.platform.clone(),
        ..kiln_plan::PlanOptions::default()
    };
    let plan = kiln_plan::plan(&recipe, &plan_options);
    // What is not a directory is left for the recipe's loading to refuse (a usage error).
    for (index, name, dir) in local.into_iter().filter(|(_, _, dir)| dir.is_dir()) {
        let what = format!("--build-context {name}={}", dir.display());
        let context = Context::open(&dir, None).map_err(|e| format!("{what}: {e}"))?;
        let context_options = BuildOptions {
            jobs: 1,
            no_cache: options.no_cache,
            no_cache_filter: Vec::new(),
            source_date_epoch: options.source_date_epoch,
            compression: options.compression,
            platform: options.platform.clone(),
            squash: false,
            recipe_id: format!("build-context {name}@{}", context.root().display()),
            snapshotter: options.snapshotter,
            secrets: Default::default(),
            remote: RemoteOptions::default(),
            run: Default::default(),
            labels: Default::default(),
            annotations: Default::default(),
        };
        let built = kiln_build::build(&plan, store, &context, &context_options, &Silent)
            .map_err(|e| format!("{what}: {e}"))?;
        if let Some(item) = args.build_contexts.get_mut(index) {
            *item = format!(
                "{name}=docker-image://{LOCAL_CONTEXT_REPOSITORY}@{}",
                built.manifest.digest
            );
        }
    }
    Ok(args)
}

/// The repository a local named context's image is referred to by (by digest, never tagged).
const LOCAL_CONTEXT_REPOSITORY: &str = "localhost/kiln-build-context";

/// Progress that shows nothing: a named context's own small build is not the user's recipe.
struct Silent;

impl kiln_build::Progress for Silent {
    fn event(&self, _: kiln_build::Event) {}
}
