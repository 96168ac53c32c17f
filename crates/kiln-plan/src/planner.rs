//! Stages, ARG scopes and expansion: turns instructions into [`Step`]s.

use crate::graph;
use crate::platform::{platform_args, Platform};
use crate::step::*;
use kiln_recipe::diag::suggest;
use kiln_recipe::expand::{expand, Expansion, Mode, VarSource};
use kiln_recipe::instruction::{heredoc_source, Command, Healthcheck, Kind, Network, Security};
use kiln_recipe::mount::{parse_mount, Mount, MountType};
use kiln_recipe::syntax::Word;
use kiln_recipe::{parse_recipe, CheckPolicy, Diagnostic, Instruction, Recipe, Span};
use std::collections::{BTreeMap, BTreeSet};

/// What a base image brings that planning needs: its environment (for expansion), working
/// directory, shell and ONBUILD triggers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseConfig {
    /// The image's ENV, as name and value.
    pub env: Vec<(String, String)>,
    /// Its WORKDIR, if it has one.
    pub workdir: Option<String>,
    /// Its SHELL, if it has one.
    pub shell: Option<Vec<String>>,
    /// Its ONBUILD triggers, run as the first steps of a stage on it.
    pub onbuild: Vec<String>,
}

/// Looks up base images' configs. Checking a recipe without pulling uses [`NoImages`].
pub trait ImageConfigs {
    /// The config of the image `reference` for `platform`; `None` when it is not known.
    fn config(&self, reference: &str, platform: &Platform) -> Option<BaseConfig>;
}

/// Knows no image: expansion sees only what the recipe sets.
pub struct NoImages;

impl ImageConfigs for NoImages {
    fn config(&self, _: &str, _: &Platform) -> Option<BaseConfig> {
        None
    }
}

/// What planning needs besides the recipe.
pub struct PlanOptions<'a> {
    /// `--build-arg` values, in the order given.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (the last one when `None`).
    pub target: Option<String>,
    /// The platform the image is for (`TARGETPLATFORM`).
    pub target_platform: Platform,
    /// The platform kiln runs on (`BUILDPLATFORM`).
    pub build_platform: Platform,
    /// Where base images' configs come from.
    pub images: &'a dyn ImageConfigs,
    /// Named build contexts that are images (`--build-context NAME=…`): NAME → the image
    /// reference it stands for (`oci:DIR:TAG`, a store image). `FROM NAME`, `COPY --from=NAME`
    /// and `RUN --mount=from=NAME` take that image, even where a stage has the same name (as
    /// buildx does).
    pub contexts: BTreeMap<String, String>,
}

impl PlanOptions<'_> {
    /// The image a named build context gives `name`, if any (names compare case-insensitively,
    /// as stage names do).
    pub fn named_context(&self, name: &str) -> Option<&str> {
        self.contexts
            .get(name)
            .or_else(|| {
                self.contexts
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
            .map(String::as_str)
    }
}

impl Default for PlanOptions<'_> {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::host(),
            build_platform: Platform::host(),
            images: &NoImages,
            contexts: BTreeMap::new(),
        }
    }
}

/// One stage of the recipe (a FROM and its steps), planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Its position in the recipe, from 0.
    pub index: usize,
    /// `FROM … AS name`, lowercased.
    pub name: Option<String>,
    /// What it starts from.
    pub base: Base,
    /// `FROM --platform`, expanded.
    pub platform: Option<String>,
    /// The FROM instruction.
    pub from: Instruction,
    /// Its steps, ONBUILD triggers of the base first.
    pub steps: Vec<Step>,
    /// Stages this one needs: its base, COPY --from and RUN --mount from= sources.
    pub dependencies: BTreeSet<usize>,
}

impl Stage {
    /// `name` or `#index`, for messages.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("#{}", self.index))
    }
}

/// A planned recipe: its stages, the order to build them, and what was found wrong.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every stage, in recipe order.
    pub stages: Vec<Stage>,
    /// The stage `--target` selected (the last one by default).
    pub target: usize,
    /// The stages the target needs, dependencies first; stages not listed are pruned.
    pub order: Vec<usize>,
    /// Global ARGs with their resolved values.
    pub global_args: Vec<(String, Option<String>)>,
    /// Errors and warnings of the recipe and the plan, sorted.
    pub diagnostics: Vec<Diagnostic>,
}

impl Plan {
    /// Whether any diagnostic is an error (nothing may be built then).
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Build args that are always allowed and never reported as unused.
const BUILTIN_ARGS: [&str; 14] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SOURCE_DATE_EPOCH",
    "BUILDKIT_INLINE_CACHE",
    "BUILDKIT_CACHE_MOUNT_NS",
    "BUILDKIT_SYNTAX",
];

fn is_proxy_arg(name: &str) -> bool {
    BUILTIN_ARGS[..10].contains(&name)
}

/// Variables visible to expansion: ENV wins over ARG, as the reference says.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// ENV in the order first set (the image config keeps that order).
    env: Vec<(String, String)>,
    /// Position of each name in `env`, so long stages stay linear.
    env_index: BTreeMap<String, usize>,
    /// Declared ARGs; `None` when declared without any value.
    args: BTreeMap<String, Option<String>>,
}

impl Scope {
    fn with_env(env: Vec<(String, String)>) -> Self {
        let mut scope = Scope::default();
        for (key, value) in env {
            scope.set_env(key, value);
        }
        scope
    }

    fn set_env(&mut self, key: String, value: String) {
        match self.env_index.get(&key) {
            Some(&i) => self.env[i].1 = value,
            None => {
                self.env_index.insert(key.clone(), self.env.len());
                self.env.push((key, value));
            }
        }
    }
}

impl VarSource for Scope {
    fn get(&self, name: &str) -> Option<&str> {
        match self.env_index.get(name) {
            Some(&i) => Some(self.env[i].1.as_str()),
            None => self.args.get(name).and_then(|v| v.as_deref()),
        }
    }
}

/// The state of a stage as its steps are planned, kept for stages based on it.
#[derive(Debug, Clone, Default)]
struct StageState {
    scope: Scope,
    workdir: String,
    shell: Vec<String>,
    onbuild: Vec<String>,
}

fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

struct Planner<'a> {
    options: &'a PlanOptions<'a>,
    escape: char,
    diagnostics: Vec<Diagnostic>,
    /// Build args an ARG declared (consumed), with the stage that declared them (None for
    /// global ARGs), for the unused-arg warning: only built stages consume.
    declared: Vec<(Option<usize>, String)>,
    /// Diagnostics of each stage, reported only if the stage is built (BuildKit never looks
    /// at pruned stages either).
    staged: Vec<(usize, Diagnostic)>,
}

/// Plans a checked recipe. Everything wrong is a diagnostic in the returned plan, which also
/// carries the recipe's own diagnostics, filtered and promoted as `# check=` asks.
pub fn plan(recipe: &Recipe, options: &PlanOptions<'_>) -> Plan {
    let mut plan = plan_stages(recipe, options);
    let mut diagnostics = recipe.diagnostics.clone();
    diagnostics.append(&mut plan.diagnostics);
    let policy = match &recipe.directives.check {
        None => CheckPolicy::default(),
        Some((value, span)) => CheckPolicy::parse(value).unwrap_or_else(|message| {
            diagnostics.push(Diagnostic::error(*span, message));
            CheckPolicy::default()
        }),
    };
    let mut diagnostics = policy.apply(diagnostics);
    diagnostics.sort_by_key(|d| (!d.located, d.span.start, !d.is_error()));
    plan.diagnostics = diagnostics;
    plan
}

fn plan_stages(recipe: &Recipe, options: &PlanOptions<'_>) -> Plan {
    let mut planner = Planner {
        options,
        escape: recipe.directives.escape,
        diagnostics: Vec::new(),
        declared: Vec::new(),
        staged: Vec::new(),
    };
    let mut global = Scope::default();
    let platform_values = platform_args(&options.target_platform, &options.build_platform);
    for (name, value) in &platform_values {
        global.args.insert(name.clone(), Some(value.clone()));
    }
    let mut global_args = Vec::new();
    let mut global_declared: BTreeSet<String> = BTreeSet::new();

    // Split into the global part (ARGs before the first FROM) and stages.
    let mut groups: Vec<(&Instruction, Vec<&Instruction>)> = Vec::new();
    for instruction in &recipe.instructions {
        match (&instruction.kind, groups.last_mut()) {
            (Kind::From(_), _) => groups.push((instruction, Vec::new())),
            (_, Some((_, body))) => body.push(instruction),
            (Kind::Arg(decls), None) => {
                for decl in decls {
                    let name = decl.name.text.clone();
                    let value = match options.build_args.get(&name) {
                        Some(v) => Some(v.clone()),
                        None => decl
                            .default
                            .as_ref()
                            .and_then(|d| planner.expand_word(d, &global).map(|e| e.value)),
                    };
                    planner.declared.push((None, name.clone()));
                    global_declared.insert(name.clone());
                    global.args.insert(name.clone(), value.clone());
                    global_args.push((name, value));
                }
            }
            (_, None) => planner.diagnostics.push(
                Diagnostic::error(
                    instruction.keyword_span,
                    format!(
                        "{} before the first FROM: only ARG may come before FROM",
                        instruction.name()
                    ),
                )
                .with_help("move it after `FROM`, or add a `FROM` above it"),
            ),
        }
    }
    if groups.is_empty() {
        let span = recipe
            .instructions
            .first()
            .map(|i| i.span)
            .unwrap_or_default();
        planner.diagnostics.push(
            Diagnostic::error(span, "the recipe has no FROM: there is no stage to build")
                .with_help("start the stage with `FROM <image>` or `FROM scratch`"),
        );
        return Plan {
            stages: Vec::new(),
            target: 0,
            order: Vec::new(),
            global_args,
            diagnostics: planner.finish(&[]),
        };
    }

    // Stage names first, so COPY --from can name a later stage.
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (index, (from, _)) in groups.iter().enumerate() {
        if let Kind::From(f) = &from.kind {
            if let Some(name) = &f.name {
                if let Some(first) = names.get(&name.text) {
                    planner.diagnostics.push(
                        Diagnostic::error(
                            name.span,
                            format!("duplicate stage name {:?}", name.text),
                        )
                        .with_label(format!("stage #{first} already has this name")),
                    );
                } else {
                    names.insert(name.text.clone(), index);
                }
            }
        }
    }

    let mut stages: Vec<Stage> = Vec::new();
    let mut states: Vec<StageState> = Vec::new();
    for (index, (from_instruction, body)) in groups.iter().enumerate() {
        let Kind::From(from) = &from_instruction.kind else {
            continue;
        };
        let before = planner.diagnostics.len();
        // FROM sees only global args (and the automatic platform args).
        let image = planner
            .expand_from_word(&from.image, &global, &global_declared)
            .unwrap_or_default();
        let platform = from
            .platform
            .as_ref()
            .and_then(|p| planner.expand_from_word(p, &global, &global_declared));
        if let (Some(p), Some(word)) = (&platform, &from.platform) {
            if let Err(message) = Platform::parse(p) {
                planner
                    .diagnostics
                    .push(Diagnostic::error(word.span, message));
            }
        }
        // A named build context stands for its image, before any stage of that name.
        let (image, from_context) = match options.named_context(&image) {
            Some(reference) => (reference.to_string(), true),
            None => (image, false),
        };
        let lowered = image.to_ascii_lowercase();
        let base = if lowered == "scratch" && !from_context {
            Base::Scratch
        } else if let Some(&stage) = names.get(&lowered).filter(|&&s| s < index && !from_context) {
            Base::Stage(stage)
        } else {
            if image.is_empty() {
                planner.diagnostics.push(
                    Diagnostic::error(from.image.span, "FROM names no image after expansion")
                        .with_help("give the ARG a default or pass it with --build-arg"),
                );
            } else if let Err(problem) = check_reference_shape(&image) {
                planner.diagnostics.push(
                    Diagnostic::error(
                        from.image.span,
                        format!("invalid image reference {image:?}: {problem}"),
                    )
                    .with_help("an image is written name[:tag][@digest], e.g. alpine:3.20"),
                );
            }
            Base::Image(image.clone())
        };
        let platform_value = platform
            .as_deref()
            .and_then(|p| Platform::parse(p).ok())
            .unwrap_or_else(|| options.target_platform.clone());
        let mut state = match &base {
            Base::Stage(parent) => states.get(*parent).cloned().unwrap_or_default(),
            Base::Scratch => StageState::default(),
            Base::Image(reference) => {
                let config = options
                    .images
                    .config(reference, &platform_value)
                    .unwrap_or_default();
                StageState {
                    scope: Scope::with_env(config.env),
                    workdir: config.workdir.unwrap_or_default(),
                    shell: config.shell.unwrap_or_default(),
                    onbuild: config.onbuild,
                }
            }
        };
        // A stage starts with no ARGs of its own; ENV and the rest carry over from the base.
        state.scope.args.clear();
        let inherited_workdir = !state.workdir.is_empty() && state.workdir != "/";
        if state.workdir.is_empty() {
            state.workdir = "/".to_string();
        }
        if state.shell.is_empty() {
            state.shell = default_shell();
        }
        let triggers = std::mem::take(&mut state.onbuild);
        let mut stage = Stage {
            index,
            name: from.name.as_ref().map(|n| n.text.clone()),
            base: base.clone(),
            platform,
            from: (*from_instruction).clone(),
            steps: Vec::new(),
            dependencies: BTreeSet::new(),
        };
        if let Base::Stage(parent) = base {
            stage.dependencies.insert(parent);
        }
        let onbuild = planner.onbuild_instructions(&triggers, from_instruction);
        let mut ctx = StageContext {
            index,
            names: &names,
            global: &global,
            state,
            stage_count: groups.len(),
            // A base stage or image that set a WORKDIR makes a relative one well defined.
            seen_workdir: inherited_workdir,
            seen_single: BTreeMap::new(),
        };
        for instruction in &onbuild {
            if let Some(step) = planner.step(instruction, &mut ctx, &mut stage.dependencies) {
                stage.steps.push(Step {
                    from_onbuild: true,
                    ..step
                });
            }
        }
        for instruction in body {
            if let Some(step) = planner.step(instruction, &mut ctx, &mut stage.dependencies) {
                stage.steps.push(step);
            }
        }
        // Diagnostics of this stage are kept aside until we know whether it is built.
        let stage_diagnostics = planner.diagnostics.split_off(before);
        stages.push(stage);
        states.push(ctx.state);
        planner
            .staged
            .extend(stage_diagnostics.into_iter().map(|d| (index, d)));
    }

    let target = match &options.target {
        None => stages.len() - 1,
        Some(wanted) => match names.get(&wanted.to_ascii_lowercase()) {
            Some(&index) => index,
            None => {
                let known: Vec<&str> = names.keys().map(String::as_str).collect();
                let mut d = Diagnostic::error(
                    Span::default(),
                    format!("target stage {wanted:?} could not be found"),
                );
                d = match suggest(wanted, known.iter().copied()) {
                    Some(near) => d.with_help(format!("did you mean {near:?}?")),
                    None if known.is_empty() => {
                        d.with_help("the recipe names no stage (`FROM <image> AS <name>`)")
                    }
                    None => d.with_help(format!("stages: {}", known.join(", "))),
                };
                planner.diagnostics.push(d.unlocated());
                stages.len() - 1
            }
        },
    };
    let dependencies: Vec<BTreeSet<usize>> =
        stages.iter().map(|s| s.dependencies.clone()).collect();
    let order = match graph::build_order(&dependencies, target) {
        Ok(order) => order,
        Err(cycle) => {
            let names: Vec<String> = cycle
                .iter()
                .filter_map(|&i| stages.get(i).map(Stage::label))
                .collect();
            let span = cycle
                .first()
                .and_then(|&i| stages.get(i))
                .map(|s| s.from.span)
                .unwrap_or_default();
            planner.diagnostics.push(
                Diagnostic::error(
                    span,
                    format!("circular dependency between stages: {}", names.join(" → ")),
                )
                .with_help("a stage cannot depend on itself, directly or through other stages"),
            );
            Vec::new()
        }
    };
    let diagnostics = planner.finish(&order);
    Plan {
        stages,
        target,
        order,
        global_args,
        diagnostics,
    }
}

struct StageContext<'a> {
    index: usize,
    names: &'a BTreeMap<String, usize>,
    global: &'a Scope,
    state: StageState,
    stage_count: usize,
    seen_workdir: bool,
    /// CMD, ENTRYPOINT and HEALTHCHECK seen in this stage, for MultipleInstructionsDisallowed.
    seen_single: BTreeMap<&'static str, Span>,
}

impl Planner<'_> {
    /// Drops diagnostics of stages the target does not need, and warns about unused build args.
    fn finish(&mut self, order: &[usize]) -> Vec<Diagnostic> {
        let mut kept = std::mem::take(&mut self.diagnostics);
        let built: BTreeSet<usize> = order.iter().copied().collect();
        // With no order (a cycle) nothing is built, so every stage's findings are shown.
        kept.extend(
            std::mem::take(&mut self.staged)
                .into_iter()
                .filter(|(stage, _)| built.is_empty() || built.contains(stage))
                .map(|(_, d)| d),
        );
        let unused: Vec<&str> = self
            .options
            .build_args
            .keys()
            .map(String::as_str)
            .filter(|name| {
                let consumed = self.declared.iter().any(|(stage, declared)| {
                    declared == *name
                        && stage.is_none_or(|s| built.is_empty() || built.contains(&s))
                });
                !consumed && !BUILTIN_ARGS.contains(name)
            })
            .collect();
        if !unused.is_empty() {
            kept.push(
                Diagnostic::warning(
                    "UnusedBuildArg",
                    Span::default(),
                    format!(
                        "build arguments were not consumed by any ARG: {}",
                        unused.join(", ")
                    ),
                )
                .with_help("declare them with `ARG NAME` in the stage that uses them")
                .unlocated(),
            );
        }
        kept
    }

    fn expand_word(&mut self, word: &Word, scope: &Scope) -> Option<Expansion> {
        self.expand_in(word, scope, Mode::Word)
    }

    fn expand_in(&mut self, word: &Word, scope: &Scope, mode: Mode) -> Option<Expansion> {
        match expand(&word.text, self.escape, mode, scope) {
            Ok(expansion) => Some(expansion),
            Err(error) => {
                // Point into the word when its text sits verbatim in the source.
                let span = if word.span.len() == word.text.len() {
                    let start = word.span.start + error.offset.min(word.text.len());
                    Span::new(start, (start + error.len.max(1)).min(word.span.end))
                } else {
                    word.span
                };
                self.diagnostics
                    .push(Diagnostic::error(span, error.message));
                None
            }
        }
    }

    /// FROM may only use global ARGs; anything else expands to empty, which BuildKit warns about.
    fn expand_from_word(
        &mut self,
        word: &Word,
        global: &Scope,
        declared: &BTreeSet<String>,
    ) -> Option<String> {
        let expansion = self.expand_word(word, global)?;
        for name in &expansion.unset {
            if !declared.contains(name) {
                self.diagnostics.push(
                    Diagnostic::warning(
                        "UndefinedArgInFrom",
                        word.span,
                        format!("FROM uses ${name}, which no global ARG declares"),
                    )
                    .with_help(format!("declare `ARG {name}` before the first FROM")),
                );
            }
        }
        Some(expansion.value)
    }

    fn onbuild_instructions(
        &mut self,
        triggers: &[String],
        from: &Instruction,
    ) -> Vec<Instruction> {
        let mut instructions = Vec::new();
        for trigger in triggers {
            let recipe = parse_recipe(trigger);
            for diagnostic in recipe.diagnostics.iter().filter(|d| d.is_error()) {
                self.diagnostics.push(
                    Diagnostic::error(
                        from.span,
                        format!(
                            "ONBUILD trigger {trigger:?} of the base image: {}",
                            diagnostic.message
                        ),
                    )
                    .with_label("inherited from this base"),
                );
            }
            for mut instruction in recipe.instructions {
                // Triggers come from the base image, not this file: point at the FROM.
                instruction.span = from.span;
                instruction.keyword_span = from.keyword_span;
                instruction.start_line = from.start_line;
                instruction.end_line = from.end_line;
                instructions.push(instruction);
            }
        }
        instructions
    }

    fn step(
        &mut self,
        instruction: &Instruction,
        ctx: &mut StageContext<'_>,
        dependencies: &mut BTreeSet<usize>,
    ) -> Option<Step> {
        let mut used = BTreeSet::new();
        let workdir_before = ctx.state.workdir.clone();
        // Only ENV changes the environment; keep the names it had before, for args_used.
        let env_before =
            matches!(instruction.kind, Kind::Env(_)).then(|| ctx.state.scope.env_index.clone());
        let action = match &instruction.kind {
            Kind::From(_) => return None,
            Kind::Arg(decls) => {
                let mut resolved = Vec::new();
                for decl in decls {
                    let name = decl.name.text.clone();
                    self.declared.push((Some(ctx.index), name.clone()));
                    let value = if let Some(v) = self.options.build_args.get(&name) {
                        Some(v.clone())
                    } else if let Some(default) = &decl.default {
                        let e = self.expand_word(default, &ctx.state.scope)?;
                        used.extend(e.used);
                        Some(e.value)
                    } else {
                        // `ARG NAME` inside a stage picks up the global value (or platform arg).
                        ctx.global.args.get(&name).cloned().flatten()
                    };
                    ctx.state.scope.args.insert(name.clone(), value.clone());
                    resolved.push((name, value));
                }
                Action::Arg(resolved)
            }
            Kind::Env(pairs) => {
                let values = self.expand_pairs(pairs, &ctx.state.scope, &mut used)?;
                // All pairs of one ENV see the values before it, as in Docker.
                for (key, value) in &values {
                    ctx.state.scope.set_env(key.clone(), value.clone());
                }
                Action::Config(ConfigChange::Env(values))
            }
            Kind::Label(pairs) => {
                let values = self.expand_pairs(pairs, &ctx.state.scope, &mut used)?;
                Action::Config(ConfigChange::Label(values))
            }
            Kind::Expose(words) => {
                let mut ports = Vec::new();
                for word in words {
                    let e = self.expand_word(word, &ctx.state.scope)?;
                    used.extend(e.used);
                    for field in e.value.split_whitespace() {
                        match expose_ports(field) {
                            Ok(list) => ports.extend(list),
                            Err(message) => {
                                self.diagnostics.push(Diagnostic::error(word.span, message));
                                return None;
                            }
                        }
                        if field.chars().any(|c| c.is_ascii_uppercase()) {
                            self.diagnostics.push(Diagnostic::warning(
                                "ExposeProtoCasing",
                                word.span,
                                format!("protocol in EXPOSE {field} should be lowercase"),
                            ));
                        }
                    }
                }
                Action::Config(ConfigChange::Expose(ports))
            }
            Kind::Volume(words) => {
                let mut volumes = Vec::new();
                for word in words {
                    let e = self.expand_word(word, &ctx.state.scope)?;
                    used.extend(e.used);
                    if e.value.is_empty() {
                        self.diagnostics.push(Diagnostic::error(
                            word.span,
                            "VOLUME specified can not be an empty string",
                        ));
                        return None;
                    }
                    volumes.push(e.value);
                }
                Action::Config(ConfigChange::Volume(volumes))
            }
            Kind::User(word) => {
                let e = self.expand_word(word, &ctx.state.scope)?;
                used.extend(e.used);
                Action::Config(ConfigChange::User(e.value))
            }
            Kind::Workdir(word) => {
                let e = self.expand_word(word, &ctx.state.scope)?;
                used.extend(e.used);
                if !e.value.starts_with('/') && !ctx.seen_workdir {
                    self.diagnostics.push(
                        Diagnostic::warning(
                            "WorkdirRelativePath",
                            word.span,
                            format!("relative WORKDIR {:?} before any WORKDIR sets a directory in this stage", e.value),
                        )
                        .with_help("its meaning depends on the base image's WORKDIR; use an absolute path"),
                    );
                }
                ctx.seen_workdir = true;
                ctx.state.workdir = join_path(&ctx.state.workdir, &e.value);
                Action::Config(ConfigChange::Workdir(ctx.state.workdir.clone()))
            }
            Kind::Stopsignal(word) => {
                let e = self.expand_word(word, &ctx.state.scope)?;
                used.extend(e.used);
                if !valid_signal(&e.value) {
                    self.diagnostics.push(
                        Diagnostic::error(word.span, format!("invalid stop signal {:?}", e.value))
                            .with_help("use a signal name such as SIGTERM or a number such as 15"),
                    );
                    return None;
                }
                Action::Config(ConfigChange::StopSignal(e.value))
            }
            Kind::Maintainer(word) => Action::Config(ConfigChange::Maintainer(word.text.clone())),
            Kind::Cmd(command) => {
                self.single_instruction(ctx, "CMD", instruction.keyword_span);
                Action::Config(ConfigChange::Cmd(resolve_command(
                    command,
                    &ctx.state.shell,
                )))
            }
            Kind::Entrypoint(command) => {
                self.single_instruction(ctx, "ENTRYPOINT", instruction.keyword_span);
                Action::Config(ConfigChange::Entrypoint(resolve_command(
                    command,
                    &ctx.state.shell,
                )))
            }
            Kind::Shell(shell) => {
                ctx.state.shell = shell.clone();
                Action::Config(ConfigChange::Shell(shell.clone()))
            }
            Kind::Healthcheck(check) => {
                self.single_instruction(ctx, "HEALTHCHECK", instruction.keyword_span);
                let config = match check {
                    Healthcheck::None => None,
                    Healthcheck::Check {
                        command,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => Some(HealthcheckConfig {
                        test: match command {
                            Command::Exec(args) => std::iter::once("CMD".to_string())
                                .chain(args.iter().cloned())
                                .collect(),
                            Command::Shell(text) => {
                                vec!["CMD-SHELL".to_string(), text.text.clone()]
                            }
                        },
                        interval: *interval,
                        timeout: *timeout,
                        start_period: *start_period,
                        start_interval: *start_interval,
                        retries: *retries,
                    }),
                };
                Action::Config(ConfigChange::Healthcheck(config))
            }
            Kind::Onbuild(trigger) => {
                // Runs in the stage or image that uses this one as its base.
                ctx.state.onbuild.push(trigger.original.clone());
                Action::Config(ConfigChange::OnBuild(trigger.original.clone()))
            }
            Kind::Run(run) => {
                let mut mounts = Vec::new();
                let mut mount_sources = Vec::new();
                for word in &run.mounts {
                    let e = self.expand_word(word, &ctx.state.scope)?;
                    used.extend(e.used);
                    let mut mount = match parse_mount(&e.value) {
                        Ok(mount) => mount,
                        Err(message) => {
                            self.diagnostics.push(Diagnostic::error(
                                word.span,
                                format!("invalid --mount: {message}"),
                            ));
                            return None;
                        }
                    };
                    if let Err(message) = resolve_mount_target(&mut mount, &ctx.state.workdir) {
                        self.diagnostics.push(Diagnostic::error(
                            word.span,
                            format!("invalid --mount: {message}"),
                        ));
                        return None;
                    }
                    let source = match (&mount.kind, &mount.from) {
                        (_, Some(from)) => {
                            let source = self.resolve_source(from, word.span, ctx)?;
                            if let Source::Stage(stage) = source {
                                dependencies.insert(stage);
                            }
                            Some(source)
                        }
                        (kiln_recipe::mount::MountType::Bind, None) => Some(Source::Context),
                        _ => None,
                    };
                    mounts.push(mount);
                    mount_sources.push(source);
                }
                // ARGs with values (and proxy build args) are in the command's environment.
                let mut build_args: Vec<(String, String)> = ctx
                    .state
                    .scope
                    .args
                    .iter()
                    .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
                    .collect();
                for (name, value) in &self.options.build_args {
                    if is_proxy_arg(name) && !build_args.iter().any(|(k, _)| k == name) {
                        build_args.push((name.clone(), value.clone()));
                    }
                }
                used.extend(build_args.iter().map(|(k, _)| k.clone()));
                let (argv, script) = run_argv(&run.command, &run.heredocs, &ctx.state.shell);
                Action::Run(RunStep {
                    argv,
                    script,
                    command: run.command.clone(),
                    heredocs: run.heredocs.clone(),
                    mounts,
                    mount_sources,
                    network: run.network.unwrap_or(Network::Default),
                    security: run.security.unwrap_or(Security::Sandbox),
                    build_args,
                })
            }
            Kind::Copy(copy) | Kind::Add(copy) => {
                let is_add = matches!(instruction.kind, Kind::Add(_));
                let name = if is_add { "ADD" } else { "COPY" };
                let mut expand_opt =
                    |planner: &mut Self, word: &Option<Word>| -> Result<Option<String>, ()> {
                        match word {
                            None => Ok(None),
                            Some(w) => {
                                let e = planner.expand_word(w, &ctx.state.scope).ok_or(())?;
                                used.extend(e.used);
                                Ok(Some(e.value))
                            }
                        }
                    };
                let from_value = expand_opt(self, &copy.from).ok()?;
                let chown = expand_opt(self, &copy.chown).ok()?;
                let chmod = expand_opt(self, &copy.chmod).ok()?;
                let checksum = expand_opt(self, &copy.checksum).ok()?;
                let mut excludes = Vec::new();
                for word in &copy.excludes {
                    excludes.push(
                        expand_opt(self, &Some(word.clone()))
                            .ok()?
                            .unwrap_or_default(),
                    );
                }
                if let (Some(mode), Some(word)) = (&chmod, &copy.chmod) {
                    if let Err(message) = crate::chmod::Chmod::parse(mode).map(|_| ()) {
                        self.diagnostics.push(Diagnostic::error(word.span, message));
                        return None;
                    }
                }
                if let (Some(chown), Some(word)) = (&chown, &copy.chown) {
                    if chown.is_empty() || chown.split(':').count() > 2 {
                        self.diagnostics.push(
                            Diagnostic::error(word.span, format!("invalid --chown {chown:?}"))
                                .with_help("use user, user:group, uid or uid:gid"),
                        );
                        return None;
                    }
                }
                let from = match (&from_value, &copy.from) {
                    (Some(value), Some(word)) => {
                        let source = self.resolve_source(value, word.span, ctx)?;
                        if let Source::Stage(stage) = source {
                            dependencies.insert(stage);
                        }
                        source
                    }
                    _ => Source::Context,
                };
                let mut sources = Vec::new();
                for word in &copy.sources {
                    if let Some(marker) = heredoc_source(&word.text) {
                        if let Some(heredoc) = copy.heredocs.iter().find(|h| h.name == marker) {
                            let content = if heredoc.expand {
                                let body = Word {
                                    text: heredoc.content.clone(),
                                    span: heredoc.body_span,
                                };
                                let e = self.expand_in(&body, &ctx.state.scope, Mode::Heredoc)?;
                                used.extend(e.used);
                                e.value
                            } else {
                                heredoc.content.clone()
                            };
                            sources.push(CopySource::Heredoc {
                                name: heredoc.name.clone(),
                                content,
                            });
                            continue;
                        }
                    }
                    let e = self.expand_word(word, &ctx.state.scope)?;
                    used.extend(e.used);
                    let value = e.value;
                    let is_url = value.starts_with("http://") || value.starts_with("https://");
                    let is_git = is_git_url(&value);
                    if (is_url || is_git) && from != Source::Context {
                        self.diagnostics.push(Diagnostic::error(
                            word.span,
                            format!("{name} --from cannot take a URL source"),
                        ));
                        return None;
                    }
                    if is_git {
                        if !is_add {
                            self.diagnostics.push(
                                Diagnostic::error(word.span, "COPY cannot fetch a git repository")
                                    .with_help("use ADD for git sources"),
                            );
                            return None;
                        }
                        sources.push(CopySource::Git(value));
                    } else if is_url {
                        if !is_add {
                            self.diagnostics.push(
                                Diagnostic::error(word.span, "COPY cannot fetch a URL")
                                    .with_help("use ADD for URL sources"),
                            );
                            return None;
                        }
                        sources.push(CopySource::Url(value));
                    } else {
                        sources.push(CopySource::Path(value));
                    }
                }
                if let (Some(_), Some(word), true) = (&checksum, &copy.checksum, sources.len() != 1)
                {
                    self.diagnostics.push(
                        Diagnostic::error(word.span, "ADD --checksum takes exactly one source")
                            .with_help("split the ADD into one instruction per URL"),
                    );
                    return None;
                }
                if let (Some(sum), Some(word)) = (&checksum, &copy.checksum) {
                    // A git source's checksum is its commit (or a prefix of it), as in BuildKit.
                    let git = matches!(sources.as_slice(), [CopySource::Git(_)]);
                    let checked = if git {
                        check_commit_checksum(sum)
                    } else {
                        check_checksum(sum)
                    };
                    if let Err(message) = checked {
                        self.diagnostics.push(Diagnostic::error(word.span, message));
                        return None;
                    }
                    if !sources
                        .iter()
                        .all(|s| matches!(s, CopySource::Url(_) | CopySource::Git(_)))
                    {
                        self.diagnostics.push(Diagnostic::error(
                            word.span,
                            "ADD --checksum needs a URL or git source",
                        ));
                        return None;
                    }
                }
                let destination = self.expand_word(&copy.destination, &ctx.state.scope)?;
                used.extend(destination.used);
                if sources.len() > 1 && !destination.value.ends_with('/') {
                    // Docker rejects it too; say it clearly before touching any file.
                    let has_wildcard = sources
                        .iter()
                        .any(|s| matches!(s, CopySource::Path(p) if p.contains(['*', '?', '['])));
                    if !has_wildcard {
                        self.diagnostics.push(
                            Diagnostic::error(
                                copy.destination.span,
                                format!("when using {name} with more than one source, the destination must be a directory and end with a /"),
                            )
                            .with_help(format!("write `{}/`", destination.value)),
                        );
                        return None;
                    }
                }
                Action::Copy(CopyStep {
                    is_add,
                    sources,
                    destination: destination.value,
                    from,
                    chown,
                    chmod,
                    link: copy.link,
                    parents: copy.parents,
                    excludes,
                    checksum,
                    keep_git_dir: copy.keep_git_dir,
                    unpack: copy.unpack,
                })
            }
        };
        // A name ENV also sets reads the ENV value, so the build arg does not matter there.
        let env_names = env_before.as_ref().unwrap_or(&ctx.state.scope.env_index);
        let args_used = used
            .into_iter()
            .filter(|name| !env_names.contains_key(name))
            .filter_map(|name| {
                let value = ctx.state.scope.args.get(&name)?.clone();
                Some((name, value))
            })
            .collect();
        Some(Step {
            action,
            instruction: instruction.clone(),
            workdir: workdir_before,
            args_used,
            from_onbuild: false,
        })
    }

    /// ENV and LABEL pairs, keys and values expanded.
    fn expand_pairs(
        &mut self,
        pairs: &[kiln_recipe::instruction::KeyValue],
        scope: &Scope,
        used: &mut BTreeSet<String>,
    ) -> Option<Vec<(String, String)>> {
        let mut values = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let key = self.expand_word(&pair.key, scope)?;
            let value = self.expand_word(&pair.value, scope)?;
            used.extend(key.used);
            used.extend(value.used);
            values.push((key.value, value.value));
        }
        Some(values)
    }

    fn single_instruction(&mut self, ctx: &mut StageContext<'_>, name: &'static str, span: Span) {
        if let Some(previous) = ctx.seen_single.insert(name, span) {
            let _ = previous;
            self.diagnostics.push(
                Diagnostic::warning(
                    "MultipleInstructionsDisallowed",
                    span,
                    format!("multiple {name} instructions in one stage"),
                )
                .with_help(format!("only the last {name} takes effect")),
            );
        }
    }

    /// `--from=` / `from=`: a stage name, a stage index, or an image.
    fn resolve_source(
        &mut self,
        value: &str,
        span: Span,
        ctx: &StageContext<'_>,
    ) -> Option<Source> {
        if let Ok(index) = value.parse::<usize>() {
            if index >= ctx.index {
                let message = if index >= ctx.stage_count {
                    format!(
                        "--from={index} refers to stage #{index}, but the recipe has {} stages",
                        ctx.stage_count
                    )
                } else {
                    format!("--from={index} refers to the current or a later stage")
                };
                self.diagnostics.push(
                    Diagnostic::error(span, message)
                        .with_help("a stage index must name an earlier stage"),
                );
                return None;
            }
            return Some(Source::Stage(index));
        }
        if let Some(reference) = self.options.named_context(value) {
            return Some(Source::Image(reference.to_string()));
        }
        let lowered = value.to_ascii_lowercase();
        match ctx.names.get(&lowered) {
            Some(&index) if index == ctx.index => {
                self.diagnostics.push(Diagnostic::error(
                    span,
                    format!("stage {value:?} cannot copy from itself"),
                ));
                None
            }
            Some(&index) => Some(Source::Stage(index)),
            None if value.is_empty() => {
                self.diagnostics
                    .push(Diagnostic::error(span, "--from is empty after expansion"));
                None
            }
            None if value.contains(['/', ':', '@']) || value == "scratch" => {
                Some(Source::Image(value.to_string()))
            }
            None => {
                // A bare word that is no stage: BuildKit would pull an image of that name. Say
                // so, since a typo in a stage name is the usual cause.
                if let Some(near) = suggest(value, ctx.names.keys().map(String::as_str)) {
                    self.diagnostics.push(
                        Diagnostic::warning(
                            "UnknownStage",
                            span,
                            format!("{value:?} names no stage, so it is taken as an image"),
                        )
                        .with_help(format!("did you mean stage {near:?}?")),
                    );
                }
                Some(Source::Image(value.to_string()))
            }
        }
    }
}

/// The shape every image reference has, checked before anything tries to pull it. Transport
/// prefixes (`oci-archive:`, `docker-archive:`, `oci:`) name files and are left alone.
fn check_reference_shape(reference: &str) -> Result<(), &'static str> {
    if ["oci-archive:", "docker-archive:", "oci:", "docker://"]
        .iter()
        .any(|p| reference.starts_with(p))
    {
        return Ok(());
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("it contains whitespace");
    }
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let (algorithm, hex) = digest
            .split_once(':')
            .ok_or("the digest needs algorithm:hex")?;
        if algorithm.is_empty() || hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("the digest is not algorithm:hex");
        }
    }
    // A tag is after the last `:` that follows the last `/` (a `:` before it is a port).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if repository.is_empty()
        || repository.starts_with('/')
        || repository.ends_with('/')
        || repository.contains("//")
    {
        return Err("the repository name is empty");
    }
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err("the tag is empty or has characters a tag cannot have");
        }
    }
    let path = repository
        .split_once('/')
        .map_or(repository, |(host, rest)| {
            if host.contains(['.', ':']) || host == "localhost" {
                rest
            } else {
                repository
            }
        });
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository names must be lowercase");
    }
    Ok(())
}

/// Exec form runs as is; shell form goes through SHELL.
fn resolve_command(command: &Command, shell: &[String]) -> Vec<String> {
    match command {
        Command::Exec(args) => args.clone(),
        Command::Shell(text) => shell
            .iter()
            .cloned()
            .chain(std::iter::once(text.text.clone()))
            .collect(),
    }
}

/// The process a RUN starts. `RUN <<EOF` alone runs the heredoc as a script: through the shell,
/// or, when it starts with `#!`, as a file of its own (returned second, for the executor to
/// write and run). With other text, heredocs are the command's input files.
fn run_argv(
    command: &Command,
    heredocs: &[kiln_recipe::syntax::Heredoc],
    shell: &[String],
) -> (Vec<String>, Option<String>) {
    if let (Command::Shell(text), [only]) = (command, heredocs) {
        if heredoc_source(text.text.trim()) == Some(only.name.as_str()) {
            if only.content.starts_with("#!") {
                return (Vec::new(), Some(only.content.clone()));
            }
            let argv = shell
                .iter()
                .cloned()
                .chain(std::iter::once(only.content.clone()))
                .collect();
            return (argv, None);
        }
    }
    (resolve_command(command, shell), None)
}

fn is_git_url(value: &str) -> bool {
    value.starts_with("git@")
        || value.starts_with("git://")
        || value.starts_with("ssh://")
        || ((value.starts_with("https://") || value.starts_with("http://"))
            && (value
                .split(['#', '?'])
                .next()
                .is_some_and(|u| u.ends_with(".git"))))
}

/// Joins a WORKDIR onto the current one and cleans `.` and `..` like Go's `path.Clean`.
pub fn join_path(current: &str, path: &str) -> String {
    let combined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{current}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in combined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A bind, cache or tmpfs mount's target as an absolute, clean path: relative to the working
/// directory, and the working directory itself when none is given (as BuildKit resolves it).
/// Mounting over `/` is refused.
fn resolve_mount_target(mount: &mut Mount, workdir: &str) -> Result<(), String> {
    if !matches!(
        mount.kind,
        MountType::Bind | MountType::Cache | MountType::Tmpfs
    ) {
        return Ok(());
    }
    let given = mount.target.as_deref().unwrap_or("");
    let target = join_path(workdir, given);
    if target == "/" {
        return Err(if given.is_empty() {
            "no target= and the working directory is /: a mount cannot replace the root \
             (set target= or WORKDIR)"
                .to_string()
        } else {
            format!("target {given:?} resolves to /: a mount cannot replace the root")
        });
    }
    mount.target = Some(target);
    Ok(())
}

/// `80`, `80/tcp`, `8000-8010/udp` → `port/proto` keys.
fn expose_ports(field: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = field.split_once('/').unwrap_or((field, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "invalid protocol {proto:?} in EXPOSE {field} (use tcp, udp or sctp)"
        ));
    }
    let parse = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid port {p:?} in EXPOSE {field}"))
    };
    let (low, high) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if high < low {
        return Err(format!(
            "invalid port range {ports:?} in EXPOSE: the end is before the start"
        ));
    }
    Ok((low..=high).map(|p| format!("{p}/{proto}")).collect())
}

/// Signals by name (with or without SIG) or number, as Docker accepts them.
fn valid_signal(value: &str) -> bool {
    const NAMES: [&str; 35] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "UNUSED",
    ];
    if let Ok(n) = value.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let upper = value.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(offset) = name
        .strip_prefix("RTMIN")
        .or_else(|| name.strip_prefix("RTMAX"))
    {
        return offset.is_empty()
            || offset
                .trim_start_matches(['+', '-'])
                .parse::<u32>()
                .is_ok_and(|n| n <= 15);
    }
    NAMES.contains(&name)
}

/// `--checksum=<commit>` of a git source: hexadecimal, a whole object name or a prefix of one.
fn check_commit_checksum(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 64 || !value.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid --checksum {value:?}: a git source's checksum is its commit, in hexadecimal"
        ));
    }
    Ok(())
}

/// `--checksum=sha256:<hex>` (also sha384 and sha512).
fn check_checksum(value: &str) -> Result<(), String> {
    let (algorithm, hex) = value
        .split_once(':')
        .ok_or_else(|| format!("invalid --checksum {value:?}: expected sha256:<hex>"))?;
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => {
            return Err(format!(
                "unsupported checksum algorithm {other:?} (use sha256, sha384 or sha512)"
            ))
        }
    };
    if hex.len() != length || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid --checksum {value:?}: {algorithm} needs {length} hex digits"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_joins_and_cleans() {
        assert_eq!(join_path("/", "app"), "/app");
        assert_eq!(join_path("/app", "src/../lib"), "/app/lib");
        assert_eq!(join_path("/app", "/abs"), "/abs");
        assert_eq!(join_path("/", "../.."), "/");
    }

    #[test]
    fn expose_forms() {
        assert_eq!(expose_ports("80"), Ok(vec!["80/tcp".to_string()]));
        assert_eq!(expose_ports("53/UDP"), Ok(vec!["53/udp".to_string()]));
        assert_eq!(expose_ports("8000-8002/tcp").map(|p| p.len()), Ok(3));
        assert!(expose_ports("0").is_err());
        assert!(expose_ports("70000").is_err());
        assert!(expose_ports("80/icmp").is_err());
        assert!(expose_ports("90-80").is_err());
    }

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "SIGUSR1"] {
            assert!(valid_signal(ok), "{ok}");
        }
        for bad in ["SIGNOPE", "0", "65", ""] {
            assert!(!valid_signal(bad), "{bad}");
        }
    }

    #[test]
    fn chmod_and_checksum() {
        assert!(check_checksum(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(check_checksum("sha256:abc").is_err());
        assert!(check_checksum("md5:abc").is_err());
        assert!(check_commit_checksum("5167ecfeb9d3").is_ok());
        assert!(check_commit_checksum("sha256:abc").is_err());
        assert!(check_commit_checksum("").is_err());
    }

    #[test]
    fn reference_shapes() {
        for ok in [
            "alpine",
            "alpine:3.20",
            "docker.io/library/alpine:latest",
            "localhost:5000/a/b:c",
            "MyRegistry.io/a",
            "a@sha256:abcd",
            "oci-archive:./x.tar",
        ] {
            assert!(check_reference_shape(ok).is_ok(), "{ok}");
        }
        for bad in [
            "alpine:",
            "Alpine",
            "a b",
            "a@sha256:",
            "/a",
            "a:b:c!",
            "docker.io/Library/x",
        ] {
            assert!(check_reference_shape(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn git_urls() {
        assert!(is_git_url("https://github.com/a/b.git#main"));
        assert!(is_git_url("git@github.com:a/b.git"));
        assert!(!is_git_url("https://example.com/file.tar.gz"));
    }

    #[test]
    fn named_contexts_stand_for_their_images() {
        let recipe = parse_recipe(
            "FROM alpine AS base\nRUN true\nFROM base\nCOPY --from=tools /t /t\n\
             RUN --mount=from=tools,target=/m true\n",
        );
        let mut contexts = BTreeMap::new();
        contexts.insert("base".to_string(), "oci:layout:v1".to_string());
        contexts.insert("Tools".to_string(), "tools-image:2".to_string());
        let options = PlanOptions {
            contexts,
            ..PlanOptions::default()
        };
        let plan = plan(&recipe, &options);
        assert!(
            plan.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            plan.diagnostics
        );
        let last = &plan.stages[1];
        assert_eq!(last.base, Base::Image("oci:layout:v1".into()));
        assert!(
            last.dependencies.is_empty(),
            "the stage `base` is not needed"
        );
        assert_eq!(plan.order, vec![1]);
        let copy = last.steps.iter().find_map(|s| match &s.action {
            Action::Copy(c) => Some(c),
            _ => None,
        });
        assert_eq!(
            copy.map(|c| &c.from),
            Some(&Source::Image("tools-image:2".into()))
        );
        let run = last.steps.iter().find_map(|s| match &s.action {
            Action::Run(r) => Some(r),
            _ => None,
        });
        assert_eq!(
            run.map(|r| r.mount_sources.clone()),
            Some(vec![Some(Source::Image("tools-image:2".into()))])
        );
    }

    fn run_mount_targets(recipe_text: &str) -> Result<Vec<Option<String>>, Vec<String>> {
        let recipe = parse_recipe(recipe_text);
        let plan = plan(&recipe, &PlanOptions::default());
        let errors: Vec<String> = plan
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.message.clone())
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        let last = plan
            .stages
            .last()
            .map(|s| s.steps.clone())
            .unwrap_or_default();
        Ok(last
            .iter()
            .filter_map(|s| match &s.action {
                Action::Run(r) => Some(r.mounts.iter().map(|m| m.target.clone())),
                _ => None,
            })
            .flatten()
            .collect())
    }

    #[test]
    fn a_mount_without_target_mounts_at_the_working_directory() {
        let targets = run_mount_targets(
            "FROM alpine AS build\nRUN true\nFROM alpine\nWORKDIR /src\n\
             RUN --mount=from=build make\n\
             RUN --mount=type=cache,id=x true\n\
             RUN --mount=type=tmpfs,target=../tmp true\n\
             RUN --mount=type=bind,target=/abs/./x true\n",
        );
        assert_eq!(
            targets,
            Ok(vec![
                Some("/src".to_string()),
                Some("/src".to_string()),
                Some("/tmp".to_string()),
                Some("/abs/x".to_string()),
            ])
        );
    }

    #[test]
    fn a_mount_that_resolves_to_the_root_is_an_error() {
        let errors = run_mount_targets("FROM alpine AS b\nFROM alpine\nRUN --mount=from=b true\n")
            .unwrap_err();
        assert!(errors[0].contains("working directory is /"), "{errors:?}");
        let errors =
            run_mount_targets("FROM alpine\nWORKDIR /a\nRUN --mount=type=cache,target=.. true\n")
                .unwrap_err();
        assert!(errors[0].contains("resolves to /"), "{errors:?}");
    }
}
