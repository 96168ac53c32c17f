//! `kiln build`: the flags read into a [`Build`], its progress shown. The build itself —
//! caches, steps, outputs, push, names — is kiln-build's.

use crate::cli::BuildArgs;
use crate::progress::{Plain, Style};
use crate::recipe::{self, INVALID, USAGE};
use kiln_build::local_context;
use kiln_build::output::{self, Destination, OutputSpec};
use kiln_build::pipeline::Build;
use kiln_build::remote::{PullPolicy, RemoteOptions};
use kiln_build::run::Snapshotter;
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
        .map(Platform::parse_list)
        .transpose()
        .map(|list| list.and_then(|l| l.into_iter().next()));
    let options = BuildOptions {
        secrets: kiln_build::secret_flags::parse_secrets(&args.secrets)?,
        remote: RemoteOptions::default(),
        snapshotter: Snapshotter::chosen(args.snapshotter.as_deref())
            .map_err(|name| format!("--snapshotter {name}: expected auto, overlay or copy"))?,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        source_date_epoch: recipe::source_date_epoch(args.source_date_epoch)?,
        compression: output::layer_compression(&outputs)?,
        platform: platform
            .map_err(|e| format!("--platform: {e}"))?
            .unwrap_or_else(Platform::host),
        squash: args.squash,
        jobs: args.jobs.unwrap_or_else(kiln_build::pipeline::default_jobs),
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
    let mut job = Build {
        store,
        progress,
        registry: crate::registry_cmd::client(&args.registry),
        outputs: flags.outputs,
        names: flags.names,
        push_to: flags.push_to,
        cache_from: flags.cache_from,
        cache_to: flags.cache_to,
        iidfile: args.iidfile.clone(),
        metadata_file: args.metadata_file.clone(),
        attest: flags.attest,
    };
    let mut options = flags.options;
    options.remote = job.remote(flags.pull);
    // Local directories given as named contexts become one-layer images first.
    let mut recipe_args = args.recipe.clone();
    match local_context::import(&args.recipe.build_contexts, store, &options) {
        Ok(contexts) => recipe_args.build_contexts = contexts,
        Err(e) => return fail(INVALID, e),
    }
    let images = StoreImages {
        store,
        remote: &options.remote,
        progress,
    };
    // Every platform a RUN would execute on is checked before any base image is asked for.
    let can_run = |plans: &[(Platform, kiln_plan::Plan)]| kiln_build::platforms::check_plans(plans);
    let loaded = match recipe::load_checked(&recipe_args, &images, Some(&can_run)) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let context_dir = &args.recipe.context;
    let context = match Context::open(context_dir, loaded.recipe_path.as_deref()) {
        Ok(context) => context,
        Err(e) => {
            return fail(
                INVALID,
                format!("build context {}: {e}", context_dir.display()),
            )
        }
    };
    job.attest.recipe = Some(kiln_attest::Recipe {
        path: loaded.name.clone(),
        digest: loaded.digest.clone(),
        source_uri: None,
    });
    job.attest.context_names =
        kiln_build::attest::context_names(&recipe_args.build_contexts, local_context::REPOSITORY);
    job.prepare(
        &loaded.plan,
        loaded.recipe_path.as_deref(),
        &context,
        &mut options,
    );
    // Several --platform values: one graph over every platform, delivered as an index.
    let result = job.run_platforms(&loaded.plans, &context, &options);
    // The live display is cleared before anything else is printed.
    progress.finish();
    let built = match result {
        Ok(built) => built,
        Err(e) => return fail(INVALID, crate::hint::explain(&e)),
    };
    if let Some(warning) = output::docker_layer_warning(&job.outputs, built.layers.len()) {
        eprintln!("warning: {warning}");
    }
    let stdout_taken = job
        .outputs
        .iter()
        .any(|o| o.destination == Destination::Stdout);
    let names: Vec<String> = job.names.iter().map(ToString::to_string).collect();
    progress.built(&built, &names, stdout_taken);
    ExitCode::SUCCESS
}
