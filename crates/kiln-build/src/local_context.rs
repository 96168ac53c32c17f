//! `--build-context NAME=DIR`: a local directory given as a named context is built into a
//! one-layer image of the store, as `FROM scratch` + `COPY . /` with the directory as its
//! context (its own `.dockerignore` applies, files belong to root), and the recipe names that
//! image by its manifest digest. The COPY is keyed and cached by content like any other, so an
//! unchanged directory gives the same image and the steps that use it stay cached.

use crate::build::{build, BuildOptions, Event, Progress};
use crate::BuildError;
use kiln_context::Context;
use kiln_exec::ExecError;
use kiln_store::Store;
use std::path::PathBuf;

/// The repository a local named context's image is referred to by (by digest, never tagged).
pub const REPOSITORY: &str = "localhost/kiln-build-context";

/// The local directories among `--build-context NAME=VALUE` values (what is neither a URL nor
/// a `target:`): (index of the item, NAME, DIR).
pub fn local_contexts(raw: &[String]) -> Vec<(usize, String, PathBuf)> {
    raw.iter()
        .enumerate()
        .filter_map(|(index, item)| {
            let (name, value) = item.split_once('=')?;
            let local = !value.contains("://") && !value.starts_with("target:");
            local.then(|| (index, name.to_string(), PathBuf::from(value)))
        })
        .collect()
}

/// Builds every local directory among `build_contexts` into an image of `store` and returns
/// the values with each such `NAME=DIR` replaced by `NAME=docker-image://REPOSITORY@DIGEST`.
/// What is not a directory is left as it is, for the recipe's loading to refuse.
pub fn import(
    build_contexts: &[String],
    store: &Store,
    options: &BuildOptions,
) -> Result<Vec<String>, BuildError> {
    let mut contexts = build_contexts.to_vec();
    let recipe = kiln_recipe::parse_recipe("FROM scratch\nCOPY . /\n");
    let plan_options = kiln_plan::PlanOptions {
        target_platform: options.platform.clone(),
        ..kiln_plan::PlanOptions::default()
    };
    let plan = kiln_plan::plan(&recipe, &plan_options);
    let local = local_contexts(build_contexts);
    for (index, name, dir) in local.into_iter().filter(|(_, _, dir)| dir.is_dir()) {
        let context = Context::open(&dir, None).map_err(|source| BuildError::LocalContext {
            name: name.clone(),
            dir: dir.clone(),
            source: Box::new(BuildError::Exec(ExecError::from(source))),
        })?;
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
            remote: Default::default(),
            run: Default::default(),
            labels: Default::default(),
            annotations: Default::default(),
        };
        let built = build(&plan, store, &context, &context_options, &Silent).map_err(|source| {
            BuildError::LocalContext {
                name: name.clone(),
                dir: dir.clone(),
                source: Box::new(source),
            }
        })?;
        if let Some(item) = contexts.get_mut(index) {
            *item = format!(
                "{name}=docker-image://{REPOSITORY}@{}",
                built.manifest.digest
            );
        }
    }
    Ok(contexts)
}

/// Progress that shows nothing: a named context's own small build is not the user's recipe.
struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_are_local_contexts() {
        let raw = [
            "a=./dir".to_string(),
            "b=docker-image://alpine".to_string(),
            "c=target:base".to_string(),
            "d=oci-layout:///x".to_string(),
            "no-equals".to_string(),
            "e=/abs/dir".to_string(),
        ];
        let local = local_contexts(&raw);
        assert_eq!(
            local,
            vec![
                (0, "a".to_string(), PathBuf::from("./dir")),
                (5, "e".to_string(), PathBuf::from("/abs/dir")),
            ]
        );
    }
}
