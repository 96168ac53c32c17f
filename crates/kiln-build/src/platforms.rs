//! Multi-platform builds: the recipe planned once per target platform, merged into one build
//! graph of (stage, platform) nodes. A stage whose result cannot depend on the target platform
//! is one node shared by every platform, so it is built once (the cross-compile pattern:
//! `FROM --platform=$BUILDPLATFORM` and no use of a `TARGET*` argument).
//!
//! A stage is shared when, planned for two targets, it is the same stage (every step the same
//! after expansion: a `TARGETARCH` it reads makes them differ), it starts from the same node
//! (a stage of the graph, or an image with its own `--platform`), and it reads no image
//! without a platform of its own (`COPY --from=IMAGE` takes the target's). Cache keys need no
//! change for this: they already hold what a step reads (build args, the base manifest, the
//! platform of a scratch base), so a shared node has one key and the others one per platform.

use crate::build::{build_nodes, BuildOptions, Built, Progress};
use crate::nodes::NodePlan;
use crate::BuildError;
use kiln_context::Context;
use kiln_plan::{Action, Base, Plan, Platform, Source, Stage};
use kiln_store::Store;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The build graph of several platforms.
pub struct Merged {
    /// The nodes and what each is built for.
    pub nodes: NodePlan<'static>,
    /// Per platform (in the order given): the node of its target stage.
    pub finals: Vec<usize>,
    /// Per node: the platform its RUN steps execute on (its base's platform).
    pub run_platforms: Vec<Platform>,
    /// Per node: the platforms it is built for (several when shared).
    pub shared_by: Vec<Vec<Platform>>,
}

/// Whether a stage's result can be the same for every target platform: its base does not come
/// for the target (a stage, or an image with `FROM --platform`), and it reads no image that
/// would.
fn may_be_shared(stage: &Stage) -> bool {
    let base_fixed = match stage.base {
        Base::Stage(_) => true,
        Base::Scratch | Base::Image(_) => stage.platform.is_some(),
    };
    let reads_target_image = stage.steps.iter().any(|step| match &step.action {
        Action::Copy(copy) => matches!(copy.from, Source::Image(_)),
        Action::Run(run) => run
            .mount_sources
            .iter()
            .any(|s| matches!(s, Some(Source::Image(_)))),
        Action::Config(_) | Action::Arg(_) => false,
    });
    base_fixed && !reads_target_image
}

/// The stage with every reference to another stage turned into that stage's node.
fn remap(stage: &Stage, node_of: &BTreeMap<usize, usize>) -> Result<Stage, BuildError> {
    let node = |index: &usize| node_of.get(index).copied().ok_or(BuildError::Plan);
    let mut mapped = stage.clone();
    if let Base::Stage(parent) = &stage.base {
        mapped.base = Base::Stage(node(parent)?);
    }
    mapped.dependencies = stage
        .dependencies
        .iter()
        .map(node)
        .collect::<Result<_, _>>()?;
    for step in &mut mapped.steps {
        match &mut step.action {
            Action::Copy(copy) => {
                if let Source::Stage(index) = &copy.from {
                    copy.from = Source::Stage(node(index)?);
                }
            }
            Action::Run(run) => {
                for source in run.mount_sources.iter_mut() {
                    if let Some(Source::Stage(index)) = source {
                        *source = Some(Source::Stage(node(index)?));
                    }
                }
            }
            Action::Config(_) | Action::Arg(_) => {}
        }
    }
    Ok(mapped)
}

/// Merges the plans of several target platforms (each planned with its own `TARGET*`
/// arguments) into one graph; stages that come out the same for several platforms become one
/// node.
pub fn merge(plans: &[(Platform, Plan)]) -> Result<Merged, BuildError> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut targets: Vec<Platform> = Vec::new();
    let mut shareable: Vec<bool> = Vec::new();
    let mut run_platforms: Vec<Platform> = Vec::new();
    let mut shared_by: Vec<Vec<Platform>> = Vec::new();
    let mut finals = Vec::with_capacity(plans.len());
    for (target, plan) in plans {
        if plan.has_errors() {
            return Err(BuildError::Plan);
        }
        let mut node_of: BTreeMap<usize, usize> = BTreeMap::new();
        for &index in &plan.order {
            let stage = plan.stages.get(index).ok_or(BuildError::Plan)?;
            let mapped = remap(stage, &node_of)?;
            let share = may_be_shared(stage);
            let existing = share
                .then(|| (0..stages.len()).find(|&n| shareable[n] && stages[n] == mapped))
                .flatten();
            let node = match existing {
                Some(node) => {
                    if !shared_by[node].contains(target) {
                        shared_by[node].push(target.clone());
                    }
                    node
                }
                None => {
                    let run_platform = match &mapped.base {
                        Base::Stage(parent) => run_platforms
                            .get(*parent)
                            .cloned()
                            .ok_or(BuildError::Plan)?,
                        Base::Scratch | Base::Image(_) => mapped
                            .platform
                            .as_deref()
                            .and_then(|p| Platform::parse(p).ok())
                            .unwrap_or_else(|| target.clone()),
                    };
                    stages.push(mapped);
                    targets.push(target.clone());
                    shareable.push(share);
                    run_platforms.push(run_platform);
                    shared_by.push(vec![target.clone()]);
                    stages.len() - 1
                }
            };
            node_of.insert(index, node);
        }
        finals.push(node_of.get(&plan.target).copied().ok_or(BuildError::Plan)?);
    }
    let labels = shared_by
        .iter()
        .map(|platforms| {
            let names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
            format!(" [{}]", names.join(", "))
        })
        .collect();
    let order = (0..stages.len()).collect();
    let first = plans.first().ok_or(BuildError::Plan)?;
    let plan = Plan {
        stages,
        target: finals.first().copied().unwrap_or(0),
        order,
        global_args: first.1.global_args.clone(),
        diagnostics: Vec::new(),
    };
    Ok(Merged {
        nodes: NodePlan {
            plan: Cow::Owned(plan),
            targets,
            labels,
        },
        finals,
        run_platforms,
        shared_by,
    })
}

/// Builds every platform's image: the merged graph, each node once, all under `--jobs`.
/// Before anything is built, every platform a RUN step would execute on is checked (see
/// [`kiln_sandbox::emulation`]): a platform this machine cannot run fails the build with what
/// to install, and the store is left as it was. The images come back in the order of `plans`.
pub fn build_platforms(
    plans: &[(Platform, Plan)],
    store: &Store,
    context: &Context,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Vec<Built>, BuildError> {
    let merged = merge(plans)?;
    check_runnable(&merged)?;
    build_nodes(
        &merged.nodes,
        &merged.finals,
        store,
        context,
        options,
        progress,
    )
}

/// [`check_runnable`] of the plans of a build (one or several platforms), as a message: what
/// `kiln build` asks before it fetches or stores anything.
pub fn check_plans(plans: &[(Platform, Plan)]) -> Result<(), String> {
    let merged = merge(plans).map_err(|e| e.to_string())?;
    check_runnable(&merged).map_err(|e| e.to_string())
}

/// Fails when a node with RUN steps executes on a platform this machine cannot run.
pub fn check_runnable(merged: &Merged) -> Result<(), BuildError> {
    let mut checked: Vec<&Platform> = Vec::new();
    for (node, stage) in merged.nodes.plan.stages.iter().enumerate() {
        let runs = stage
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::Run(_)));
        let Some(platform) = merged.run_platforms.get(node) else {
            continue;
        };
        if !runs || checked.contains(&platform) {
            continue;
        }
        checked.push(platform);
        kiln_sandbox::emulation::check(
            &platform.os,
            &platform.architecture,
            platform.variant.as_deref(),
        )
        .map_err(|source| BuildError::CannotExecute {
            stage: stage.label(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plan::PlanOptions;

    fn plan_for(recipe: &str, target: &str) -> (Platform, Plan) {
        let target = Platform::parse(target).unwrap_or_else(|_| Platform::host());
        let options = PlanOptions {
            target_platform: target.clone(),
            build_platform: Platform::parse("linux/amd64").unwrap_or_else(|_| Platform::host()),
            ..PlanOptions::default()
        };
        let plan = kiln_plan::plan(&kiln_recipe::parse_recipe(recipe), &options);
        (target, plan)
    }

    #[test]
    fn a_build_platform_stage_is_one_node_and_target_stages_one_per_platform() {
        let recipe = "FROM --platform=$BUILDPLATFORM busybox AS tools\nRUN make-tools\n\nFROM --platform=$BUILDPLATFORM busybox AS cross\nARG TARGETARCH\nRUN build-for $TARGETARCH\n\nFROM busybox\nCOPY --from=tools /t /t\nCOPY --from=cross /out /out\n";
        let plans = [
            plan_for(recipe, "linux/amd64"),
            plan_for(recipe, "linux/arm64"),
        ];
        let merged = merge(&plans).unwrap_or_else(|e| panic!("{e}"));
        // tools once; cross and the final stage once per platform.
        assert_eq!(merged.nodes.plan.stages.len(), 5);
        let tools: Vec<usize> = (0..5)
            .filter(|&n| merged.nodes.plan.stages[n].name.as_deref() == Some("tools"))
            .collect();
        assert_eq!(tools.len(), 1);
        assert_eq!(merged.shared_by[tools[0]].len(), 2);
        assert_ne!(merged.finals[0], merged.finals[1]);
        // Each final stage reads the shared node and its own platform's cross stage.
        let deps = |n: usize| merged.nodes.plan.stages[n].dependencies.clone();
        assert!(deps(merged.finals[0]).contains(&tools[0]));
        assert!(deps(merged.finals[1]).contains(&tools[0]));
        assert_ne!(deps(merged.finals[0]), deps(merged.finals[1]));
        // RUN steps of the build-platform stages execute on the build platform.
        assert_eq!(merged.run_platforms[tools[0]].to_string(), "linux/amd64");
        assert_eq!(
            merged.run_platforms[merged.finals[1]].to_string(),
            "linux/arm64"
        );
    }

    #[test]
    fn a_stage_without_a_platform_of_its_own_is_never_shared() {
        // Same steps, but the base (and so the image) comes for each target.
        let recipe = "FROM busybox\nRUN echo same\n";
        let plans = [
            plan_for(recipe, "linux/amd64"),
            plan_for(recipe, "linux/arm64"),
        ];
        let merged = merge(&plans).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(merged.nodes.plan.stages.len(), 2);
        // COPY --from an image takes the target's image: not shared either.
        let recipe = "FROM --platform=linux/amd64 busybox\nCOPY --from=alpine /x /x\n";
        let plans = [
            plan_for(recipe, "linux/amd64"),
            plan_for(recipe, "linux/arm64"),
        ];
        let merged = merge(&plans).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(merged.nodes.plan.stages.len(), 2);
    }
}
