//! Reading a recipe and planning it: what `kiln build` and `kiln build --check` share.

use crate::cli::RecipeArgs;
use crate::report::{self, Source};
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use kiln_plan::{plan, Base, ImageConfigs, NoImages, Plan, PlanOptions, Platform};
use kiln_recipe::parse_recipe;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit codes: 0 valid, 1 invalid recipe or failed build, 2 wrong usage.
pub const INVALID: u8 = 1;
pub const USAGE: u8 = 2;

/// A recipe read, planned and reported on.
pub struct Loaded {
    /// The plan for the first platform of `--platform` (this machine's by default).
    pub plan: Plan,
    /// The plan for each platform of `--platform`, in the order given (`plan` is the first).
    pub plans: Vec<(Platform, Plan)>,
    /// The recipe file, when it came from one (for `<recipe>.dockerignore`).
    pub recipe_path: Option<PathBuf>,
    pub name: String,
    pub warnings: usize,
    /// The digest of the recipe's bytes (for the provenance).
    pub digest: kiln_oci::Digest,
}

/// What is checked of every platform's plan before any base image is asked for (so a build it
/// refuses has touched nothing): planned without base images, it sees each stage's platform.
pub type Precheck<'a> = &'a dyn Fn(&[(Platform, Plan)]) -> Result<(), String>;

/// Reads the recipe, plans it and prints its diagnostics. Errors come back as the exit code.
pub fn load(args: &RecipeArgs, images: &dyn ImageConfigs) -> Result<Loaded, ExitCode> {
    load_checked(args, images, None)
}

/// [`load`], running `precheck` on plans made without base images first (a plan with errors
/// is left for the real planning to report).
pub fn load_checked(
    args: &RecipeArgs,
    images: &dyn ImageConfigs,
    precheck: Option<Precheck<'_>>,
) -> Result<Loaded, ExitCode> {
    let (name, text, recipe_path) = read_recipe(args).map_err(|message| {
        eprintln!("error: {message}");
        ExitCode::from(INVALID)
    })?;
    let build_args = parse_build_args(&args.build_args).map_err(|message| {
        eprintln!("error: {message}");
        ExitCode::from(USAGE)
    })?;
    let contexts = parse_build_contexts(&args.build_contexts).map_err(|message| {
        eprintln!("error: {message}");
        ExitCode::from(USAGE)
    })?;
    let platforms = match args
        .platform
        .as_deref()
        .map(Platform::parse_list)
        .transpose()
    {
        Ok(platforms) => platforms.unwrap_or_else(|| vec![Platform::host()]),
        Err(message) => {
            eprintln!("error: --platform: {message}");
            return Err(ExitCode::from(USAGE));
        }
    };
    let target_platform = platforms.first().cloned().unwrap_or_else(Platform::host);
    let recipe = parse_recipe(&text);
    if let Some(precheck) = precheck {
        let offline: Vec<(Platform, Plan)> = platforms
            .iter()
            .map(|platform| {
                let options = PlanOptions {
                    build_args: build_args.clone(),
                    target: args.target.clone(),
                    target_platform: platform.clone(),
                    contexts: contexts.clone(),
                    ..PlanOptions::default()
                };
                (platform.clone(), plan(&recipe, &options))
            })
            .collect();
        if offline.iter().all(|(_, p)| !p.has_errors()) {
            if let Err(message) = precheck(&offline) {
                eprintln!("error: {message}");
                return Err(ExitCode::from(INVALID));
            }
        }
    }
    let options = PlanOptions {
        build_args,
        target: args.target.clone(),
        target_platform,
        images,
        contexts,
        ..PlanOptions::default()
    };
    let plan = plan(&recipe, &options);
    // Every platform's own plan (its TARGET* arguments); the diagnostics shown are the first's.
    let mut plans = vec![(options.target_platform.clone(), plan.clone())];
    for platform in platforms.iter().skip(1) {
        let options = PlanOptions {
            target_platform: platform.clone(),
            build_args: options.build_args.clone(),
            target: options.target.clone(),
            images: options.images,
            contexts: options.contexts.clone(),
            ..PlanOptions::default()
        };
        plans.push((platform.clone(), kiln_plan::plan(&recipe, &options)));
    }
    let choice = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let mut stderr = StandardStream::stderr(choice);
    let diagnostics = platform_diagnostics(&plans);
    if let Err(error) = report::emit(
        &mut stderr,
        &Source {
            name: &name,
            text: &text,
        },
        &diagnostics,
    ) {
        eprintln!("error: cannot write diagnostics: {error}");
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if errors > 0 {
        eprintln!("{name}: {errors} error(s), {warnings} warning(s)");
        return Err(ExitCode::from(INVALID));
    }
    Ok(Loaded {
        plan,
        plans,
        recipe_path,
        name,
        warnings,
        digest: kiln_oci::sha256_digest(text.as_bytes()),
    })
}

/// The diagnostics of every platform's plan, each once: one every platform has is shown as it
/// is; one only some platforms have (a `TARGETARCH` that picks a missing stage, a warning about
/// one platform's expansion) says which, as `(for linux/arm64)`.
fn platform_diagnostics(plans: &[(Platform, Plan)]) -> Vec<kiln_recipe::Diagnostic> {
    let same = |a: &kiln_recipe::Diagnostic, b: &kiln_recipe::Diagnostic| {
        a.severity == b.severity && a.message == b.message && a.span == b.span
    };
    let mut found: Vec<(kiln_recipe::Diagnostic, Vec<&Platform>)> = Vec::new();
    for (platform, plan) in plans {
        for diagnostic in &plan.diagnostics {
            match found.iter_mut().find(|(d, _)| same(d, diagnostic)) {
                Some((_, platforms)) => platforms.push(platform),
                None => found.push((diagnostic.clone(), vec![platform])),
            }
        }
    }
    found
        .into_iter()
        .map(|(mut diagnostic, platforms)| {
            if platforms.len() < plans.len() {
                let names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
                diagnostic.message = format!("{} (for {})", diagnostic.message, names.join(", "));
            }
            diagnostic
        })
        .collect()
}

/// `--source-date-epoch`, else `$SOURCE_DATE_EPOCH`: seconds, never negative.
pub fn source_date_epoch(flag: Option<i64>) -> Result<Option<i64>, String> {
    match flag {
        Some(epoch) if epoch < 0 => {
            Err(format!("--source-date-epoch {epoch}: must not be negative"))
        }
        Some(epoch) => Ok(Some(epoch)),
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(value) if !value.is_empty() => match value.parse::<i64>() {
                Ok(epoch) if epoch >= 0 => Ok(Some(epoch)),
                _ => Err(format!(
                    "SOURCE_DATE_EPOCH={value:?} is not a non-negative number of seconds"
                )),
            },
            _ => Ok(None),
        },
    }
}

/// `kiln build --check`: every platform of `--platform` is planned and checked.
pub fn check(args: &RecipeArgs) -> ExitCode {
    match load(args, &NoImages) {
        Ok(loaded) if loaded.plans.len() > 1 => match kiln_build::platforms::merge(&loaded.plans) {
            Ok(merged) => {
                print_platforms_summary(&loaded, &merged);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(INVALID)
            }
        },
        Ok(loaded) => {
            print_summary(&loaded.name, &loaded.plan, loaded.warnings);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `-f -` is standard input; `-f` defaults to CONTEXT/Dockerfile.
fn read_recipe(args: &RecipeArgs) -> Result<(String, String, Option<PathBuf>), String> {
    let path = match &args.file {
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read the recipe from standard input: {e}"))?;
            return Ok(("<stdin>".to_string(), text, None));
        }
        Some(path) => path.clone(),
        None => args.context.join("Dockerfile"),
    };
    let bytes = std::fs::read(&path).map_err(|e| {
        let hint = if args.file.is_none() && e.kind() == std::io::ErrorKind::NotFound {
            " (pass the recipe with -f FILE)"
        } else {
            ""
        };
        format!("cannot read recipe {}: {e}{hint}", path.display())
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..offset]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        format!(
            "recipe {} is not valid UTF-8 (line {line}, byte {offset})",
            path.display()
        )
    })?;
    Ok((display_path(&path), text, Some(path)))
}

fn display_path(path: &Path) -> String {
    path.strip_prefix("./")
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `KEY=VALUE` or `KEY` (taken from the environment, skipped when unset), as docker does.
pub fn parse_build_args(raw: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for item in raw {
        let (key, value) = match item.split_once('=') {
            Some((key, value)) => (key, Some(value.to_string())),
            None => (item.as_str(), std::env::var(item).ok()),
        };
        if key.is_empty() {
            return Err(format!("--build-arg {item:?}: the name is empty"));
        }
        if let Some(value) = value {
            values.insert(key.to_string(), value);
        }
    }
    Ok(values)
}

/// `--build-context NAME=VALUE` as buildx takes it, for the values that are images:
/// `oci-layout://DIR[:TAG]` becomes the `oci:DIR[:TAG]` transport, `docker-image://REF` the
/// image REF of the store. NAME → the image reference the planner uses for it.
fn parse_build_contexts(raw: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut contexts = BTreeMap::new();
    for item in raw {
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!(
                "--build-context {item:?}: expected NAME=VALUE (NAME=oci-layout://DIR[:TAG] or NAME=docker-image://REF)"
            ));
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "--build-context {item:?}: the name is empty or has whitespace"
            ));
        }
        let reference = if let Some(dir) = value.strip_prefix("oci-layout://") {
            if dir.is_empty() {
                return Err(format!(
                    "--build-context {item:?}: oci-layout:// needs a directory"
                ));
            }
            if dir.contains(':') {
                format!("oci:{dir}")
            } else {
                // As buildx: no tag is `latest` if the layout has it, else its only image.
                if has_latest(Path::new(dir)) {
                    format!("oci:{dir}:latest")
                } else {
                    format!("oci:{dir}")
                }
            }
        } else if let Some(image) = value.strip_prefix("docker-image://") {
            if image.is_empty() {
                return Err(format!(
                    "--build-context {item:?}: docker-image:// needs an image name"
                ));
            }
            image.to_string()
        } else if value.contains("://") || value.starts_with("target:") {
            return Err(format!(
                "--build-context {item:?}: this kind of context is not available in this version; use a local directory, oci-layout://DIR[:TAG] or docker-image://REF"
            ));
        } else {
            let dir = Path::new(value);
            if !dir.is_dir() {
                return Err(format!(
                    "--build-context {item:?}: {value} is not a directory"
                ));
            }
            // Planning alone (--check) reads nothing of it: the name stands for an image.
            format!("oci:{value}")
        };
        let key = name.to_ascii_lowercase();
        if contexts.insert(key, reference).is_some() {
            return Err(format!("--build-context {name}: given twice"));
        }
    }
    Ok(contexts)
}

/// Whether the layout directory's `index.json` names an image `latest` (only to choose the
/// ref: the layout is read and checked when the build uses it).
fn has_latest(dir: &Path) -> bool {
    let path = dir.join("index.json");
    let small =
        std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() <= kiln_oci::MAX_JSON_SIZE);
    small
        && std::fs::read(&path)
            .ok()
            .and_then(|bytes| kiln_oci::from_json_slice::<kiln_oci::Index>(&bytes).ok())
            .is_some_and(|index| {
                index
                    .manifests
                    .iter()
                    .any(|d| d.ref_name() == Some("latest"))
            })
}

/// FROM of a stage, as the summary shows it.
fn base_text(plan: &Plan, stage: &kiln_plan::Stage) -> String {
    match &stage.base {
        Base::Scratch => "scratch".to_string(),
        Base::Image(reference) => reference.clone(),
        Base::Stage(index) => format!(
            "stage {}",
            plan.stages
                .get(*index)
                .map(|s| s.label())
                .unwrap_or_default()
        ),
    }
}

/// The `--check` summary of several platforms: each stage once, with the platforms it is built
/// for, once for all of them (a shared stage) or once per platform.
fn print_platforms_summary(loaded: &Loaded, merged: &kiln_build::platforms::Merged) {
    let platforms: Vec<String> = loaded.plans.iter().map(|(p, _)| p.to_string()).collect();
    let plan = &loaded.plan;
    let stage_word = if plan.stages.len() == 1 {
        "stage"
    } else {
        "stages"
    };
    println!(
        "{}: valid for {}, {} {stage_word}, {} warning(s)",
        loaded.name,
        platforms.join(", "),
        plan.stages.len(),
        loaded.warnings
    );
    for stage in &plan.stages {
        let layers = stage.steps.iter().filter(|s| s.makes_layer()).count();
        // The nodes of the build graph this stage became, with the platforms of each.
        let nodes: Vec<&Vec<Platform>> = merged
            .nodes
            .plan
            .stages
            .iter()
            .enumerate()
            .filter(|(_, node)| node.index == stage.index)
            .filter_map(|(node, _)| merged.shared_by.get(node))
            .collect();
        let names = |shared: &Vec<Platform>| {
            let names: Vec<String> = shared.iter().map(ToString::to_string).collect();
            names.join(", ")
        };
        let marker = if stage.index == plan.target {
            "target"
        } else if !nodes.is_empty() {
            "needed"
        } else {
            "skipped"
        };
        let built = match nodes.as_slice() {
            [] => String::new(),
            [shared] if shared.len() > 1 => format!(", built once for {}", names(shared)),
            each => {
                let each: Vec<String> = each.iter().map(|shared| names(shared)).collect();
                format!(", built for each of {}", each.join("; "))
            }
        };
        println!(
            "  #{} {:<12} FROM {}: {} steps, {layers} layers [{marker}]{built}",
            stage.index,
            stage.name.as_deref().unwrap_or("-"),
            base_text(plan, stage),
            stage.steps.len()
        );
    }
}

fn print_summary(name: &str, plan: &Plan, warnings: usize) {
    let stage_word = if plan.stages.len() == 1 {
        "stage"
    } else {
        "stages"
    };
    println!(
        "{name}: valid, {} {stage_word}, {warnings} warning(s)",
        plan.stages.len()
    );
    for stage in &plan.stages {
        let built = plan.order.contains(&stage.index);
        let base = base_text(plan, stage);
        let layers = stage.steps.iter().filter(|s| s.makes_layer()).count();
        let marker = if stage.index == plan.target {
            "target"
        } else if built {
            "needed"
        } else {
            "skipped"
        };
        println!(
            "  #{} {:<12} FROM {base}: {} steps, {layers} layers [{marker}]",
            stage.index,
            stage.name.as_deref().unwrap_or("-"),
            stage.steps.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_take_values_or_the_environment() {
        std::env::set_var("KILN_TEST_FROM_ENV", "env-value");
        let args = parse_build_args(&[
            "A=1".into(),
            "B=".into(),
            "KILN_TEST_FROM_ENV".into(),
            "KILN_TEST_UNSET_X".into(),
        ])
        .unwrap();
        assert_eq!(args.get("A").map(String::as_str), Some("1"));
        assert_eq!(args.get("B").map(String::as_str), Some(""));
        assert_eq!(
            args.get("KILN_TEST_FROM_ENV").map(String::as_str),
            Some("env-value")
        );
        assert!(!args.contains_key("KILN_TEST_UNSET_X"));
        assert!(parse_build_args(&["=x".into()]).is_err());
    }

    #[test]
    fn build_contexts_name_images() {
        let contexts = parse_build_contexts(&[
            "base=oci-layout://./layout:v1".into(),
            "Tools=docker-image://docker.io/library/alpine:3.20".into(),
            "untagged=oci-layout://no-such-layout".into(),
        ])
        .unwrap();
        assert_eq!(
            contexts.get("base").map(String::as_str),
            Some("oci:./layout:v1")
        );
        assert_eq!(
            contexts.get("tools").map(String::as_str),
            Some("docker.io/library/alpine:3.20")
        );
        assert_eq!(
            contexts.get("untagged").map(String::as_str),
            Some("oci:no-such-layout")
        );
        for bad in [
            "base",
            "=oci-layout://x",
            "a=oci-layout://",
            "a=docker-image://",
            "a=https://example.com/x.tar",
            "a=./some/dir",
        ] {
            assert!(parse_build_contexts(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(
            parse_build_contexts(&["a=docker-image://x".into(), "A=docker-image://y".into()])
                .is_err()
        );
    }
}
