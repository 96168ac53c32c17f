//! `kiln graph`: the recipe's stages and steps, what depends on what, which stages the target
//! builds, and which layer steps the cache already holds. Nothing runs and nothing is written.

use crate::cli::{GraphArgs, GraphFormat};
use crate::recipe::{self, INVALID, USAGE};
use kiln_build::{plan_cache_nodes, BuildOptions, StepState, StoreImages};
use kiln_context::Context;
use kiln_layer::Compression;
use kiln_plan::{Action, Base, Plan, Platform, Source, Stage};
use kiln_store::Store;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

pub fn run(args: &GraphArgs, root: &Path) -> ExitCode {
    let epoch = match recipe::source_date_epoch(args.source_date_epoch) {
        Ok(epoch) => epoch,
        Err(message) => return fail(USAGE, message),
    };
    // Of several platforms, one graph: their plans merged as the build merges them.
    let platform = match args
        .recipe
        .platform
        .as_deref()
        .map(Platform::parse_list)
        .transpose()
    {
        Ok(platforms) => platforms
            .and_then(|list| list.into_iter().next())
            .unwrap_or_else(Platform::host),
        Err(e) => return fail(USAGE, format!("--platform: {e}")),
    };
    let store = match Store::open(root) {
        Ok(store) => store,
        Err(e) => return fail(INVALID, format!("store {}: {e}", root.display())),
    };
    // A dry run asks no registry: it knows what the store knows.
    let remote = kiln_build::remote::RemoteOptions::default();
    let silent = crate::progress::Plain::new(crate::progress::Style::Quiet);
    let images = StoreImages {
        store: &store,
        remote: &remote,
        progress: &silent,
    };
    let loaded = match recipe::load(&args.recipe, &images) {
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
    // Everything that reaches a key is what `kiln build` would use.
    let options = BuildOptions {
        jobs: 1,
        no_cache: false,
        no_cache_filter: Vec::new(),
        source_date_epoch: epoch,
        compression: Compression::default(),
        platform,
        squash: false,
        recipe_id: String::new(),
        snapshotter: kiln_build::run::Snapshotter::Copy,
        secrets: BTreeMap::new(),
        remote,
        run: kiln_build::run_settings::RunSettings::default(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
    };
    let merged = if loaded.plans.len() > 1 {
        match kiln_build::platforms::merge(&loaded.plans) {
            Ok(merged) => Some(merged),
            Err(e) => return fail(INVALID, e),
        }
    } else {
        None
    };
    let single = kiln_build::nodes::NodePlan::single(&loaded.plan, &options.platform);
    let nodes = merged.as_ref().map_or(&single, |m| &m.nodes);
    let states = match plan_cache_nodes(nodes, &store, &context, &options) {
        Ok(states) => states,
        Err(e) => return fail(INVALID, e),
    };
    let graph = Graph {
        plan: nodes.plan.as_ref(),
        labels: &nodes.labels,
        recipe: &loaded.plan,
    };
    let out = match args.format {
        GraphFormat::Text => text(&graph, &states),
        GraphFormat::Dot => dot(&graph, &states),
    };
    print!("{out}");
    ExitCode::SUCCESS
}

/// What is drawn: the nodes of the build graph (the recipe's stages, or, for several
/// platforms, a stage per platform it is built for and one for the platforms that share it),
/// with the platforms of each, and the recipe's plan for the first platform.
struct Graph<'a> {
    plan: &'a Plan,
    /// Per node: ` [linux/amd64, linux/arm64]`, or nothing with one platform.
    labels: &'a [String],
    recipe: &'a Plan,
}

impl Graph<'_> {
    fn label(&self, node: usize) -> &str {
        self.labels.get(node).map_or("", String::as_str)
    }

    /// `name (#i)` for a named stage, `#i` for another, and its platforms.
    fn stage_title(&self, node: usize, stage: &Stage) -> String {
        let label = self.label(node);
        match &stage.name {
            Some(name) => format!("{name} (#{}){label}", stage.index),
            None => format!("#{}{label}", stage.index),
        }
    }

    fn base_text(&self, stage: &Stage) -> String {
        match &stage.base {
            Base::Scratch => "scratch".to_string(),
            Base::Image(reference) => reference.clone(),
            Base::Stage(node) => self.plan.stages.get(*node).map_or_else(
                || format!("#{node}"),
                |parent| format!("{}{}", parent.label(), self.label(*node)),
            ),
        }
    }
}

/// The instruction on one line: continuation and heredoc lines are cut off.
fn one_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().trim_end();
    if lines.next().is_some() {
        format!("{first} ...")
    } else {
        first.to_string()
    }
}

fn state_word(state: &StepState) -> &'static str {
    match state.cached {
        Some(true) => "CACHED",
        Some(false) => "RUN",
        None => "-",
    }
}

fn pruned_stages(plan: &Plan) -> Vec<String> {
    plan.stages
        .iter()
        .filter(|s| !plan.order.contains(&s.index))
        .map(Stage::label)
        .collect()
}

fn target_label(plan: &Plan) -> String {
    plan.stages
        .get(plan.target)
        .map_or_else(|| format!("#{}", plan.target), Stage::label)
}

fn text(graph: &Graph<'_>, states: &[StepState]) -> String {
    let plan = graph.plan;
    let mut out = String::new();
    for &index in &plan.order {
        let Some(stage) = plan.stages.get(index) else {
            continue;
        };
        let _ = write!(
            out,
            "stage {} FROM {}",
            graph.stage_title(index, stage),
            graph.base_text(stage)
        );
        if !stage.dependencies.is_empty() {
            let needs: Vec<String> = stage
                .dependencies
                .iter()
                .filter_map(|d| {
                    plan.stages
                        .get(*d)
                        .map(|s| format!("{}{}", s.label(), graph.label(*d)))
                })
                .collect();
            let _ = write!(out, "  [needs: {}]", needs.join(", "));
        }
        out.push('\n');
        for state in states.iter().filter(|s| s.stage == index) {
            let _ = write!(
                out,
                "  #{} {}  {}",
                state.number,
                state_word(state),
                one_line(&state.text)
            );
            if let Some(note) = &state.note {
                let _ = write!(out, "  (would run: {note})");
            }
            out.push('\n');
        }
    }
    let pruned = pruned_stages(graph.recipe);
    if !pruned.is_empty() {
        let _ = writeln!(
            out,
            "not built for target {}: {}",
            target_label(graph.recipe),
            pruned.join(", ")
        );
    }
    out
}

/// A DOT string literal's content.
fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The node of a step: `s<stage>_<position>`; a stage without steps has `s<stage>_from`.
fn node(stage: usize, position: usize) -> String {
    format!("s{stage}_{position}")
}

fn dot(graph: &Graph<'_>, states: &[StepState]) -> String {
    let plan = graph.plan;
    // Each built stage's first and last node, for the edges between stages.
    let mut ends: BTreeMap<usize, (String, String)> = BTreeMap::new();
    let mut out = String::from(
        "digraph kiln {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for &index in &plan.order {
        let Some(stage) = plan.stages.get(index) else {
            continue;
        };
        let title = format!(
            "stage {} FROM {}",
            graph.stage_title(index, stage),
            graph.base_text(stage)
        );
        let _ = writeln!(out, "  subgraph cluster_{index} {{");
        let _ = writeln!(out, "    label=\"{}\";", escape(&title));
        let steps: Vec<&StepState> = states.iter().filter(|s| s.stage == index).collect();
        if steps.is_empty() {
            let from = format!("s{index}_from");
            let _ = writeln!(
                out,
                "    {from} [label=\"{}\", shape=ellipse];",
                escape(&format!("FROM {}", graph.base_text(stage)))
            );
            ends.insert(index, (from.clone(), from));
        }
        for state in &steps {
            let mut label = format!("#{} {}", state.number, state.text);
            if let Some(note) = &state.note {
                let _ = write!(label, "\n(would run: {note})");
            }
            let style = if state.cached == Some(true) {
                ", style=filled, fillcolor=lightgrey"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} [label=\"{}\"{style}];",
                node(index, state.position),
                escape(&label)
            );
        }
        for pair in steps.windows(2) {
            let _ = writeln!(
                out,
                "    {} -> {};",
                node(index, pair[0].position),
                node(index, pair[1].position)
            );
        }
        if let (Some(first), Some(last)) = (steps.first(), steps.last()) {
            ends.insert(
                index,
                (node(index, first.position), node(index, last.position)),
            );
        }
        out.push_str("  }\n");
    }
    // Stage dependencies: from the source stage's last step to the step that reads it.
    for &index in &plan.order {
        let Some(stage) = plan.stages.get(index) else {
            continue;
        };
        let Some((first, _)) = ends.get(&index) else {
            continue;
        };
        if let Base::Stage(parent) = stage.base {
            if let Some((_, last)) = ends.get(&parent) {
                let _ = writeln!(out, "  {last} -> {first} [label=\"FROM\", style=dashed];");
            }
        }
        for (position, step) in stage.steps.iter().enumerate() {
            let sources: Vec<(usize, &str)> = match &step.action {
                Action::Copy(copy) => match copy.from {
                    Source::Stage(from) => vec![(from, "COPY --from")],
                    _ => Vec::new(),
                },
                Action::Run(run) => run
                    .mount_sources
                    .iter()
                    .filter_map(|s| match s {
                        Some(Source::Stage(from)) => Some((*from, "RUN --mount from")),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for (from, label) in sources {
                if let Some((_, last)) = ends.get(&from) {
                    let _ = writeln!(
                        out,
                        "  {last} -> {} [label=\"{label}\", style=dashed];",
                        node(index, position)
                    );
                }
            }
        }
    }
    let pruned = pruned_stages(graph.recipe);
    if !pruned.is_empty() {
        let _ = writeln!(
            out,
            "  pruned [shape=note, label=\"{}\"];",
            escape(&format!(
                "not built for target {}: {}",
                target_label(graph.recipe),
                pruned.join(", ")
            ))
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_makes_dot_string_content() {
        assert_eq!(escape("a\"b\\c\nd\r"), "a\\\"b\\\\c\\nd");
        assert_eq!(one_line("RUN a\nb"), "RUN a ...");
        assert_eq!(one_line("RUN a"), "RUN a");
    }
}
