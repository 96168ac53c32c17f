//! `kiln build`: plan, build, name, export.

use crate::cli::{BuildArgs, ProgressMode};
use crate::progress::{Plain, Style};
use crate::recipe::{self, INVALID, USAGE};
use kiln_build::output::{export, OutputKind, OutputSpec};
use kiln_build::remote::{PullPolicy, RemoteOptions};
use kiln_build::shared_cache::{
    CacheExport, CacheImport, CacheLocation, ExportInput, ImportedCache,
};
use kiln_build::{build, BuildOptions, Event, Progress, StoreImages};
use kiln_context::Context;
use kiln_layer::Compression;
use kiln_oci::ImageName;
use kiln_plan::Platform;
use kiln_store::Store;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// The most bytes of cache mounts a build restores from its `--cache-from` caches.
const MOUNTS_RESTORED_MAX: u64 = 4 << 30;

/// The most layers `docker load` accepts.
const DOCKER_MAX_LAYERS: usize = 125;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

pub fn run(args: &BuildArgs, root: &Path) -> ExitCode {
    if args.check {
        return recipe::check(&args.recipe);
    }
    // Usage problems are found before any work starts.
    let mut names = Vec::new();
    for tag in &args.tags {
        match ImageName::parse(tag) {
            Ok(name) => names.push(name),
            Err(e) => return fail(USAGE, format!("-t {tag}: {e}")),
        }
    }
    let mut outputs = Vec::new();
    for output in &args.outputs {
        match OutputSpec::parse(output) {
            Ok(spec) => outputs.push(spec),
            Err(e) => return fail(USAGE, format!("-o {output}: {e}")),
        }
    }
    // Layers are compressed once, as they are built: outputs that ask must agree.
    let asked: Vec<Compression> = outputs.iter().filter_map(|o| o.compression).collect();
    let compression = match asked.first() {
        None => Compression::default(),
        Some(first) if asked.iter().all(|c| c == first) => *first,
        Some(_) => {
            return fail(
                USAGE,
                "outputs ask for different compressions; kiln compresses layers once per build",
            )
        }
    };
    let mut cache_exports = Vec::new();
    for text in &args.cache_to {
        match CacheExport::parse(text) {
            Ok(export) => cache_exports.push(export),
            Err(e) => return fail(USAGE, format!("--cache-to {text}: {e}")),
        }
    }
    let mut cache_imports = Vec::new();
    for text in &args.cache_from {
        match CacheImport::parse(text) {
            Ok(import) => cache_imports.push(import),
            Err(e) => return fail(USAGE, format!("--cache-from {text}: {e}")),
        }
    }
    // Where the image is pushed: `-o type=registry,name=...`, and every -t name with --push.
    let mut push_to: Vec<ImageName> = Vec::new();
    for spec in outputs.iter().filter(|o| o.kind == OutputKind::Registry) {
        let spec_names = if spec.names.is_empty() {
            names.clone()
        } else {
            let mut parsed = Vec::new();
            for name in &spec.names {
                match ImageName::parse(name) {
                    Ok(name) => parsed.push(name),
                    Err(e) => return fail(USAGE, format!("-o name={name}: {e}")),
                }
            }
            parsed
        };
        if spec_names.is_empty() {
            return fail(USAGE, "-o type=registry needs name=NAME (or -t NAME)");
        }
        push_to.extend(spec_names);
    }
    if args.push {
        if names.is_empty() {
            return fail(USAGE, "--push needs -t NAME: the name says where to push");
        }
        push_to.extend(names.iter().cloned());
    }
    let mut seen = std::collections::BTreeSet::new();
    push_to.retain(|name| seen.insert(name.to_string()));
    let source_date_epoch = match recipe::source_date_epoch(args.source_date_epoch) {
        Ok(epoch) => epoch,
        Err(message) => return fail(USAGE, message),
    };
    let store = match Store::open(root) {
        Ok(store) => store,
        Err(e) => return fail(INVALID, format!("store {}: {e}", root.display())),
    };
    let quiet = args.quiet || args.progress == ProgressMode::Quiet;
    let style = match args.progress {
        _ if quiet => Style::Quiet,
        ProgressMode::Json => Style::Json,
        ProgressMode::Tty => Style::Tty,
        ProgressMode::Auto => crate::progress::auto_style(),
        ProgressMode::Plain | ProgressMode::Quiet => Style::Plain,
    };
    let progress = Plain::new(style);
    if let (Some(chosen), Style::Plain | Style::Tty) = (kiln_sandbox::isolation::chosen(), style) {
        eprintln!("{chosen}");
    }
    let registry = crate::registry_cmd::client(&args.registry);
    let pull = match args.pull.as_deref() {
        None | Some("missing") => Some(PullPolicy::Missing),
        Some("always" | "true") => Some(PullPolicy::Always),
        Some("never" | "false") => None,
        Some(other) => {
            return fail(
                USAGE,
                format!("--pull={other}: expected always, missing or never"),
            )
        }
    };
    // `--pull=never`: no registry is asked for a base image (a cache may still be read).
    let mut remote = match pull {
        Some(policy) => RemoteOptions::new(Some(Arc::clone(&registry)), policy),
        None => RemoteOptions::new(None, PullPolicy::Missing),
    };
    remote.inline_cache = cache_exports
        .iter()
        .any(|e| e.location == CacheLocation::Inline);
    let images = StoreImages {
        store: &store,
        remote: &remote,
        progress: &progress,
    };
    let loaded = match recipe::load(&args.recipe, &images) {
        Ok(loaded) => loaded,
        Err(code) => {
            progress.finish();
            return code;
        }
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
    let platform = match args
        .recipe
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
    {
        Ok(platform) => platform.unwrap_or_else(Platform::host),
        Err(e) => return fail(USAGE, format!("--platform: {e}")),
    };
    let snapshotter_name = args
        .snapshotter
        .clone()
        .or_else(|| {
            std::env::var("KILN_SNAPSHOTTER")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| "auto".into());
    let Some(snapshotter) = kiln_build::run::Snapshotter::parse(&snapshotter_name) else {
        return fail(
            USAGE,
            format!("--snapshotter {snapshotter_name}: expected auto, overlay or copy"),
        );
    };
    let secrets = match parse_secrets(&args.secrets) {
        Ok(secrets) => secrets,
        Err(message) => return fail(USAGE, message),
    };
    // The cache mounts this build's RUN steps use: the ones restored from a cache, and carried
    // by an export with cache-mounts=true.
    let mount_ids = kiln_build::run::planned_cache_mount_ids(&loaded.plan);
    // A cache that cannot be read only warns, as with docker build: the steps run instead.
    let sink = |event| progress.event(Event::Transfer(event));
    for import in &cache_imports {
        match ImportedCache::load(import, Some(&registry), &platform, &store, &sink) {
            Ok(cache) => {
                match cache.restore_mounts(&store, &mount_ids, MOUNTS_RESTORED_MAX, &sink) {
                    Ok((_, skipped)) => {
                        for id in skipped {
                            progress.event(Event::Warning {
                                message: format!(
                                    "cache {}: cache mount {id:?} left out: the cache mounts pass {} bytes",
                                    cache.name(),
                                    MOUNTS_RESTORED_MAX
                                ),
                            });
                        }
                    }
                    Err(message) => progress.event(Event::Warning {
                        message: format!("cache {}: cache mounts: {message}", cache.name()),
                    }),
                }
                remote.cache_from.push(Arc::new(cache));
            }
            Err(message) => progress.event(Event::Warning {
                message: format!(
                    "--cache-from {}: {message}",
                    describe_location(&import.location)
                ),
            }),
        }
    }
    let options = BuildOptions {
        secrets,
        remote,
        snapshotter,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        source_date_epoch,
        compression,
        platform,
        squash: args.squash,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
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
        recipe_id: loaded
            .recipe_path
            .as_deref()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("stdin@{}", context.root().display())),
    };
    for wanted in &args.no_cache_filter {
        let known = loaded.plan.stages.iter().any(|s| {
            s.name.as_deref() == Some(wanted.to_ascii_lowercase().as_str())
                || s.index.to_string() == *wanted
        });
        if !known {
            eprintln!("warning: --no-cache-filter {wanted}: no stage has this name or index");
        }
    }
    let result = build(&loaded.plan, &store, &context, &options, &progress);
    let built = match result {
        Ok(built) => built,
        Err(e) => {
            // The live display is cleared before the error is printed.
            progress.finish();
            return fail(INVALID, e);
        }
    };
    // Docker refuses images deeper than 125 layers; say so before someone tries to load one.
    let for_docker = outputs
        .iter()
        .any(|o| o.kind == kiln_build::output::OutputKind::Docker);
    if for_docker && built.layers.len() > DOCKER_MAX_LAYERS {
        eprintln!(
            "warning: the image has {} layers; docker cannot load more than {DOCKER_MAX_LAYERS} (merge steps to have fewer)",
            built.layers.len()
        );
    }
    for spec in outputs.iter().filter(|o| o.kind != OutputKind::Registry) {
        if let Err(e) = export(spec, &built, &store, &names) {
            progress.finish();
            return fail(INVALID, e);
        }
    }
    for destination in &push_to {
        if let Err(e) = crate::registry_cmd::push_image(
            &registry,
            &store,
            &built.manifest,
            destination,
            &progress,
        ) {
            progress.finish();
            return fail(INVALID, e);
        }
    }
    let input = ExportInput {
        store: &store,
        records: &built.records,
        image_layers: &built.layers,
        mount_ids: &mount_ids,
    };
    for export in cache_exports
        .iter()
        .filter(|e| e.location != CacheLocation::Inline)
    {
        match kiln_build::shared_cache::export(export, &input, Some(&registry), &sink) {
            Ok(report) => {
                for id in &report.mounts_skipped {
                    progress.event(Event::Warning {
                        message: format!(
                            "--cache-to {}: cache mount {id:?} is larger than cache-mounts-max; left out",
                            describe_location(&export.location)
                        ),
                    });
                }
            }
            Err(e) if export.ignore_error => progress.event(Event::Warning {
                message: format!("--cache-to {}: {e}", describe_location(&export.location)),
            }),
            Err(e) => {
                progress.finish();
                return fail(
                    INVALID,
                    format!("--cache-to {}: {e}", describe_location(&export.location)),
                );
            }
        }
    }
    progress.finish();
    // Named only once every output is written: a failed export leaves no half-finished name.
    for name in &names {
        let tag = name.tag().unwrap_or("latest");
        if let Err(e) = store.tag(&name.to_string(), tag, &built.manifest) {
            return fail(INVALID, format!("tagging {name}: {e}"));
        }
    }
    let image_id = built.config_descriptor.digest.to_string();
    if let Some(path) = &args.iidfile {
        if let Err(e) = write_file_atomic(path, image_id.as_bytes()) {
            return fail(INVALID, format!("--iidfile {}: {e}", path.display()));
        }
    }
    if let Some(path) = &args.metadata_file {
        let metadata = serde_json::json!({
            "containerimage.config.digest": image_id,
            "containerimage.digest": built.manifest.digest.to_string(),
            "containerimage.descriptor": {
                "mediaType": built.manifest.media_type,
                "digest": built.manifest.digest.to_string(),
                "size": built.manifest.size,
            },
            "image.name": names.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            "kiln.layers": built.layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&metadata).unwrap_or_default();
        if let Err(e) = write_file_atomic(path, text.as_bytes()) {
            return fail(INVALID, format!("--metadata-file {}: {e}", path.display()));
        }
    }
    let stdout_taken = outputs
        .iter()
        .any(|o| o.destination == kiln_build::output::Destination::Stdout);
    if quiet && stdout_taken {
        // Standard output carries the archive: the ID must not be mixed into it.
        eprintln!("{image_id}");
    } else if quiet {
        println!("{image_id}");
    } else if progress.style() == Style::Json {
        let summary = serde_json::json!({
            "event": "built",
            "at": progress.elapsed(),
            "image": image_id,
            "manifest": built.manifest.digest.to_string(),
            "steps": built.steps,
            "cached": built.cached,
            "layers": built.layers.len(),
            "context_bytes_read": built.context_bytes_read,
            "names": names.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        eprintln!("{summary}");
    } else {
        let short = image_id
            .trim_start_matches("sha256:")
            .get(..12)
            .unwrap_or_default()
            .to_string();
        eprintln!(
            "built {short} in {:.2}s: {} steps, {} cached, {} layers, {} bytes of context read",
            progress.elapsed(),
            built.steps,
            built.cached,
            built.layers.len(),
            built.context_bytes_read
        );
        for name in &names {
            eprintln!("tagged {name}");
        }
    }
    ExitCode::SUCCESS
}

fn describe_location(location: &CacheLocation) -> String {
    match location {
        CacheLocation::Registry(name) => name.to_string(),
        CacheLocation::Local(dir) => dir.display().to_string(),
        CacheLocation::Inline => "inline".into(),
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

/// `--secret id=ID,src=PATH` / `--secret id=ID,env=VAR` (buildx's `source=` and `type=file|env`
/// too).
fn parse_secrets(
    values: &[String],
) -> Result<std::collections::BTreeMap<String, kiln_build::run::SecretSource>, String> {
    use kiln_build::run::SecretSource;
    let mut secrets = std::collections::BTreeMap::new();
    for value in values {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut kind = None;
        for field in value.split(',').filter(|f| !f.is_empty()) {
            let Some((key, v)) = field.split_once('=') else {
                return Err(format!(
                    "--secret {value}: expected key=value fields, got {field:?}"
                ));
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => kind = Some(v.to_string()),
                other => return Err(format!("--secret {value}: unknown key {other:?}")),
            }
        }
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            return Err(format!("--secret {value}: id=ID is required"));
        };
        let source = match (kind.as_deref(), src, env) {
            (_, Some(_), Some(_)) => {
                return Err(format!("--secret {value}: give src= or env=, not both"))
            }
            (Some("env"), Some(name), None) | (_, None, Some(name)) => SecretSource::Env(name),
            (None | Some("file"), Some(path), None) => SecretSource::File(path.into()),
            (Some("env"), None, None) => SecretSource::Env(id.clone()),
            (Some(other), _, _) if other != "file" && other != "env" => {
                return Err(format!(
                    "--secret {value}: type is file or env, not {other:?}"
                ))
            }
            _ => return Err(format!("--secret {value}: give src=PATH or env=VAR")),
        };
        if secrets.insert(id.clone(), source).is_some() {
            return Err(format!("--secret id={id} given twice"));
        }
    }
    Ok(secrets)
}
