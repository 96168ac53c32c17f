//! `kiln build`: the flags handed to kiln-build as a [`BuildRequest`], its progress shown. The
//! build itself — reading the flags, caches, steps, outputs, push, names — is kiln-build's.

use crate::cli::BuildArgs;
use crate::progress::{Plain, Style};
use crate::recipe::{self, INVALID, USAGE};
use kiln_build::output::{self, Destination};
use kiln_build::pipeline::Build;
use kiln_build::request::BuildRequest;
use kiln_build::{local_context, BuildOptions, StoreImages};
use kiln_context::Context;
use kiln_plan::{Plan, Platform};
use kiln_store::Store;
use std::path::Path;
use std::process::ExitCode;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// The flags as kiln-build takes them (the recipe's own flags are read here, as every command
/// reading a recipe reads them).
fn request(args: &BuildArgs) -> Result<BuildRequest, String> {
    Ok(BuildRequest {
        tags: args.tags.clone(),
        outputs: args.outputs.clone(),
        push: args.push,
        platform: args.recipe.platform.clone(),
        secrets: args.secrets.clone(),
        snapshotter: args.snapshotter.clone(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        source_date_epoch: recipe::source_date_epoch(args.source_date_epoch)?,
        squash: args.squash,
        jobs: args.jobs,
        network: args.network,
        add_hosts: args.add_hosts.clone(),
        ssh: args.ssh.clone(),
        allow: args.allow.clone(),
        shm_size: args.shm_size,
        ulimits: args.ulimits.clone(),
        labels: args.labels.clone(),
        annotations: args.annotations.clone(),
        provenance: args.attest.provenance.clone(),
        sbom: args.attest.sbom.clone(),
        attest: args.attest.attest.clone(),
        build_args: recipe::parse_build_args(&args.recipe.build_args)?,
        target: args.recipe.target.clone(),
        cache_to: args.cache_to.clone(),
        cache_from: args.cache_from.clone(),
        pull: args.pull.clone(),
        iidfile: args.iidfile.clone(),
        metadata_file: args.metadata_file.clone(),
    })
}

pub fn run(args: &BuildArgs, root: &Path) -> ExitCode {
    if args.check {
        return recipe::check(&args.recipe);
    }
    let checked = match request(args).and_then(BuildRequest::check) {
        Ok(checked) => checked,
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
    let registry = crate::registry_cmd::client(&args.registry);
    let (mut job, mut options) = checked.into_build(&store, &progress, registry);
    let code = build(args, &mut job, &mut options, &progress);
    progress.finish();
    code
}

/// Plans, builds and delivers the image, then shows the result.
fn build(
    args: &BuildArgs,
    job: &mut Build,
    options: &mut BuildOptions,
    progress: &Plain,
) -> ExitCode {
    // Local directories given as named contexts become one-layer images first.
    let mut recipe_args = args.recipe.clone();
    match local_context::import(&args.recipe.build_contexts, job.store, options) {
        Ok(contexts) => recipe_args.build_contexts = contexts,
        Err(e) => return fail(INVALID, e),
    }
    let images = StoreImages {
        store: job.store,
        remote: &options.remote,
        progress,
    };
    // Every platform a RUN would execute on is checked before any base image is asked for.
    let can_run = |plans: &[(Platform, Plan)]| kiln_build::platforms::check_plans(plans);
    let loaded = match recipe::load_checked(&recipe_args, &images, Some(&can_run)) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let context_dir = &args.recipe.context;
    let context = match Context::open(context_dir, loaded.recipe_path.as_deref()) {
        Ok(context) => context,
        Err(e) => {
            let message = format!("build context {}: {e}", context_dir.display());
            return fail(INVALID, message);
        }
    };
    job.attest.recipe = Some(kiln_attest::Recipe {
        path: loaded.name.clone(),
        digest: loaded.digest.clone(),
        source_uri: None,
    });
    job.attest.context_names =
        kiln_build::attest::context_names(&recipe_args.build_contexts, local_context::REPOSITORY);
    let recipe_path = loaded.recipe_path.as_deref();
    job.prepare(&loaded.plans, recipe_path, &context, options);
    let result = job.run(&loaded.plans, &context, options);
    // The live display is cleared before anything else is printed.
    progress.finish();
    let built = match result {
        Ok(built) => built,
        Err(e) => return fail(INVALID, crate::hint::explain(&e)),
    };
    if let Some(warning) = output::docker_layer_warning(&job.outputs, built.layers.len()) {
        eprintln!("warning: {warning}");
    }
    let to_stdout = job
        .outputs
        .iter()
        .any(|o| o.destination == Destination::Stdout);
    let names: Vec<String> = job.names.iter().map(ToString::to_string).collect();
    progress.built(&built, &names, to_stdout);
    ExitCode::SUCCESS
}
