//! ARG scoping, expansion and stage planning, each case as the Dockerfile reference documents it.

// Tests and benchmarks fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_plan::{
    plan, Action, Base, ConfigChange, CopySource, Plan, PlanOptions, Platform, Source,
};
use kiln_recipe::parse_recipe;
use std::collections::BTreeMap;

fn plan_with(text: &str, args: &[(&str, &str)], target: Option<&str>) -> Plan {
    let recipe = parse_recipe(text);
    let options = PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        target: target.map(str::to_string),
        target_platform: Platform::parse("linux/arm64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        ..PlanOptions::default()
    };
    plan(&recipe, &options)
}

fn ok(text: &str, args: &[(&str, &str)]) -> Plan {
    let plan = plan_with(text, args, None);
    let errors: Vec<_> = plan.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
    plan
}

fn errors(text: &str, args: &[(&str, &str)], target: Option<&str>) -> Vec<String> {
    plan_with(text, args, target)
        .diagnostics
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| d.message)
        .collect()
}

fn warnings(plan: &Plan) -> Vec<&'static str> {
    plan.diagnostics
        .iter()
        .filter(|d| !d.is_error())
        .filter_map(|d| d.rule)
        .collect()
}

/// The value of env `key` set by the last ENV of the last stage.
fn env(plan: &Plan, key: &str) -> Option<String> {
    let stage = plan.stages.last()?;
    stage
        .steps
        .iter()
        .rev()
        .find_map(|step| match &step.action {
            Action::Config(ConfigChange::Env(pairs)) => {
                pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
            }
            _ => None,
        })
}

fn run_args(plan: &Plan) -> Vec<(String, String)> {
    plan.stages
        .last()
        .and_then(|s| {
            s.steps.iter().find_map(|step| match &step.action {
                Action::Run(run) => Some(run.build_args.clone()),
                _ => None,
            })
        })
        .unwrap_or_default()
}

fn base(plan: &Plan, stage: usize) -> Base {
    plan.stages[stage].base.clone()
}

// ---- ARG scoping ----

#[test]
fn global_arg_is_usable_in_from() {
    let plan = ok("ARG VERSION=latest\nFROM busybox:$VERSION\n", &[]);
    assert_eq!(base(&plan, 0), Base::Image("busybox:latest".into()));
}

#[test]
fn build_arg_overrides_global_default_in_from() {
    let plan = ok(
        "ARG VERSION=latest\nFROM busybox:${VERSION}\n",
        &[("VERSION", "1.36")],
    );
    assert_eq!(base(&plan, 0), Base::Image("busybox:1.36".into()));
}

#[test]
fn global_arg_is_not_visible_inside_a_stage_without_redeclaring() {
    let plan = ok("ARG V=1\nFROM a\nENV X=\"[$V]\"\nRUN true\n", &[]);
    assert_eq!(env(&plan, "X").as_deref(), Some("[]"));
    assert!(run_args(&plan).iter().all(|(k, _)| k != "V"));
}

#[test]
fn redeclared_global_arg_takes_the_global_value() {
    let plan = ok("ARG V=1\nFROM a\nARG V\nENV X=$V\n", &[]);
    assert_eq!(env(&plan, "X").as_deref(), Some("1"));
    let plan = ok("ARG V=1\nFROM a\nARG V\nENV X=$V\n", &[("V", "cli")]);
    assert_eq!(env(&plan, "X").as_deref(), Some("cli"));
}

#[test]
fn stage_arg_is_visible_from_its_declaration_on() {
    let plan = ok("FROM a\nENV A=\"[$V]\"\nARG V=2\nENV B=$V\n", &[]);
    assert_eq!(env(&plan, "A").as_deref(), Some("[]"));
    assert_eq!(env(&plan, "B").as_deref(), Some("2"));
}

#[test]
fn env_overrides_arg_of_the_same_name() {
    let text = "FROM a\nARG V=arg\nENV V=env\nENV X=$V\n";
    assert_eq!(env(&ok(text, &[]), "X").as_deref(), Some("env"));
    // Even a --build-arg does not win over ENV.
    assert_eq!(env(&ok(text, &[("V", "cli")]), "X").as_deref(), Some("env"));
}

#[test]
fn build_arg_overrides_a_stage_default() {
    let text = "FROM a\nARG V=default\nENV X=$V\n";
    assert_eq!(env(&ok(text, &[]), "X").as_deref(), Some("default"));
    assert_eq!(env(&ok(text, &[("V", "cli")]), "X").as_deref(), Some("cli"));
}

#[test]
fn arg_scope_ends_with_its_stage() {
    let plan = ok("FROM a AS one\nARG V=1\nFROM a\nENV X=\"[$V]\"\n", &[]);
    assert_eq!(env(&plan, "X").as_deref(), Some("[]"));
}

#[test]
fn child_stage_inherits_env_but_not_args() {
    let plan = ok(
        "FROM a AS base\nARG V=1\nENV E=e\nFROM base\nENV X=\"[$V$E]\"\n",
        &[],
    );
    assert_eq!(env(&plan, "X").as_deref(), Some("[e]"));
}

#[test]
fn arg_default_can_use_earlier_args() {
    let plan = ok("FROM a\nARG A=1\nARG B=${A}2\nENV X=$B\n", &[]);
    assert_eq!(env(&plan, "X").as_deref(), Some("12"));
    let plan = ok("ARG A=x\nARG B=$A-y\nFROM img:$B\n", &[]);
    assert_eq!(base(&plan, 0), Base::Image("img:x-y".into()));
}

#[test]
fn automatic_platform_args_need_declaring_inside_a_stage() {
    let plan = ok("FROM --platform=$BUILDPLATFORM a\nENV BEFORE=\"[$TARGETARCH]\"\nARG TARGETARCH\nENV AFTER=$TARGETARCH\n", &[]);
    assert_eq!(plan.stages[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(env(&plan, "BEFORE").as_deref(), Some("[]"));
    assert_eq!(env(&plan, "AFTER").as_deref(), Some("arm64"));
}

#[test]
fn every_platform_arg_is_defined() {
    let text = "FROM a\nARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT\n\
                ENV X=\"$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT|$BUILDPLATFORM|$BUILDOS|$BUILDARCH|$BUILDVARIANT\"\n";
    let plan = ok(text, &[]);
    assert_eq!(
        env(&plan, "X").as_deref(),
        Some("linux/arm64|linux|arm64||linux/amd64|linux|amd64|")
    );
}

#[test]
fn proxy_args_reach_run_without_declaration_and_are_not_unused() {
    let plan = ok(
        "FROM a\nRUN true\n",
        &[("HTTP_PROXY", "http://proxy:3128"), ("no_proxy", "local")],
    );
    let args = run_args(&plan);
    assert!(args.contains(&("HTTP_PROXY".into(), "http://proxy:3128".into())));
    assert!(args.contains(&("no_proxy".into(), "local".into())));
    assert!(!warnings(&plan).contains(&"UnusedBuildArg"));
}

#[test]
fn declared_args_reach_run_as_environment() {
    let plan = ok("FROM a\nARG A=1\nARG NOVALUE\nRUN true\n", &[]);
    assert_eq!(run_args(&plan), [("A".to_string(), "1".to_string())]);
}

#[test]
fn unused_build_arg_is_a_warning_not_an_error() {
    let plan = ok("FROM a\nARG USED\n", &[("USED", "1"), ("TYPO", "2")]);
    let unused: Vec<_> = plan
        .diagnostics
        .iter()
        .filter(|d| d.rule == Some("UnusedBuildArg"))
        .collect();
    assert_eq!(unused.len(), 1);
    assert!(unused[0].message.contains("TYPO"));
    assert!(!unused[0].message.contains("USED"));
}

#[test]
fn args_used_records_only_build_args() {
    let plan = ok("FROM a\nARG V=1\nENV E=x\nWORKDIR /$V/$E\n", &[]);
    let step = plan.stages[0].steps.last().unwrap();
    assert_eq!(step.args_used, [("V".to_string(), Some("1".to_string()))]);
}

#[test]
fn from_with_undeclared_variable_warns() {
    let plan = ok("FROM alpine:${TAG:-3}\n", &[]);
    assert!(warnings(&plan).contains(&"UndefinedArgInFrom"));
    assert_eq!(base(&plan, 0), Base::Image("alpine:3".into()));
}

// ---- stages ----

#[test]
fn stages_by_name_and_index() {
    let text = "FROM a AS build\nRUN make\nFROM b AS Test\nCOPY --from=0 /x /x\nFROM build\nCOPY --from=test /y /y\nCOPY --from=nginx:1 /z /z\n";
    let plan = ok(text, &[]);
    assert_eq!(plan.stages.len(), 3);
    assert_eq!(plan.stages[1].name.as_deref(), Some("test"));
    assert_eq!(base(&plan, 2), Base::Stage(0));
    let froms: Vec<Source> = plan.stages[2]
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Copy(c) => Some(c.from.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(froms, [Source::Stage(1), Source::Image("nginx:1".into())]);
    assert_eq!(plan.order, [0, 1, 2]);
    assert_eq!(plan.target, 2);
}

#[test]
fn run_mount_from_is_an_edge() {
    let plan = ok(
        "FROM a AS tools\nFROM b\nRUN --mount=from=tools,target=/t,source=/bin true\n",
        &[],
    );
    assert_eq!(plan.order, [0, 1]);
}

#[test]
fn target_prunes_unneeded_stages() {
    let text = "FROM a AS one\nFROM b AS two\nCOPY --from=one /x /x\nFROM c AS three\n";
    let plan = plan_with(text, &[], Some("two"));
    assert_eq!(plan.target, 1);
    assert_eq!(plan.order, [0, 1]);
    let plan = plan_with(text, &[], None);
    assert_eq!(plan.order, [2]);
}

#[test]
fn errors_in_pruned_stages_are_not_reported() {
    let text = "FROM a AS broken\nENV X=\"${MISSING:?must be set}\"\nFROM b AS good\n";
    assert!(errors(text, &[], Some("good")).is_empty());
    assert!(!errors(text, &[], Some("broken")).is_empty());
}

#[test]
fn unknown_target_is_an_error_with_a_suggestion() {
    let plan = plan_with("FROM a AS build\nFROM b AS final\n", &[], Some("biuld"));
    let error = plan.diagnostics.iter().find(|d| d.is_error()).unwrap();
    assert!(error.message.contains("biuld"));
    assert_eq!(error.help.as_deref(), Some("did you mean \"build\"?"));
}

#[test]
fn duplicate_stage_name_is_an_error() {
    assert!(errors("FROM a AS x\nFROM b AS X\n", &[], None)
        .iter()
        .any(|e| e.contains("duplicate stage name")));
}

#[test]
fn cycles_are_errors() {
    let text = "FROM a AS one\nCOPY --from=two /x /x\nFROM b AS two\nCOPY --from=one /y /y\n";
    let errs = errors(text, &[], None);
    assert!(
        errs.iter().any(|e| e.contains("circular dependency")),
        "{errs:?}"
    );
}

#[test]
fn copy_from_self_and_bad_index_are_errors() {
    assert!(!errors("FROM a AS me\nCOPY --from=me /x /x\n", &[], None).is_empty());
    assert!(!errors("FROM a\nCOPY --from=3 /x /x\n", &[], None).is_empty());
    assert!(!errors("FROM a\nCOPY --from=0 /x /x\n", &[], None).is_empty());
}

#[test]
fn from_a_later_stage_name_is_an_image() {
    let plan = ok("FROM later\nFROM b AS later\n", &[]);
    assert_eq!(base(&plan, 0), Base::Image("later".into()));
}

#[test]
fn instructions_before_from_other_than_arg_are_errors() {
    assert!(!errors("ENV A=1\nFROM a\n", &[], None).is_empty());
    assert!(!errors("ARG A=1\n", &[], None).is_empty());
}

#[test]
fn onbuild_of_a_stage_base_runs_in_the_child() {
    let plan = ok(
        "FROM a AS base\nONBUILD ENV FROM_TRIGGER=yes\nFROM base\nENV X=$FROM_TRIGGER\n",
        &[],
    );
    assert_eq!(env(&plan, "X").as_deref(), Some("yes"));
    assert!(plan.stages[1].steps[0].from_onbuild);
}

#[test]
fn copy_sources_are_classified() {
    let text = "FROM a\nARG F=file.txt\nADD $F https://example.com/x.tgz https://github.com/a/b.git#v1 /dst/\nCOPY <<EOF /greeting\nhello $F\nEOF\n";
    let plan = ok(text, &[]);
    let copies: Vec<_> = plan.stages[0]
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Copy(c) => Some(c.sources.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        copies[0],
        [
            CopySource::Path("file.txt".into()),
            CopySource::Url("https://example.com/x.tgz".into()),
            CopySource::Git("https://github.com/a/b.git#v1".into())
        ]
    );
    assert_eq!(
        copies[1],
        [CopySource::Heredoc {
            name: "EOF".into(),
            content: "hello file.txt\n".into()
        }]
    );
}

#[test]
fn copy_source_errors() {
    assert!(!errors("FROM a\nCOPY https://example.com/x /x\n", &[], None).is_empty());
    assert!(!errors("FROM a\nCOPY a b /notadir\n", &[], None).is_empty());
    assert!(!errors(
        "FROM a\nADD --checksum=sha256:00 https://x/y /y\n",
        &[],
        None
    )
    .is_empty());
    assert!(!errors("FROM a\nCOPY --chmod=999 a /b\n", &[], None).is_empty());
}

#[test]
fn shell_form_uses_the_current_shell() {
    let plan = ok("FROM a\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\nRUN make\nCMD serve --port 80\n", &[]);
    let steps = &plan.stages[0].steps;
    match &steps[1].action {
        Action::Run(run) => assert_eq!(run.argv, ["/bin/bash", "-eo", "pipefail", "-c", "make"]),
        other => panic!("expected RUN, got {other:?}"),
    }
    assert_eq!(
        steps[2].action,
        Action::Config(ConfigChange::Cmd(vec![
            "/bin/bash".into(),
            "-eo".into(),
            "pipefail".into(),
            "-c".into(),
            "serve --port 80".into()
        ]))
    );
}

#[test]
fn workdir_is_resolved_and_recorded_per_step() {
    let plan = ok("FROM a\nWORKDIR /app\nWORKDIR src\nRUN make\n", &[]);
    let steps = &plan.stages[0].steps;
    assert_eq!(
        steps[1].action,
        Action::Config(ConfigChange::Workdir("/app/src".into()))
    );
    assert_eq!(steps[2].workdir, "/app/src");
}

#[test]
fn expose_and_stopsignal_are_checked_after_expansion() {
    let plan = ok(
        "FROM a\nARG P=8080\nEXPOSE $P 53/udp\nSTOPSIGNAL SIGQUIT\n",
        &[],
    );
    assert_eq!(
        plan.stages[0].steps[1].action,
        Action::Config(ConfigChange::Expose(vec![
            "8080/tcp".into(),
            "53/udp".into()
        ]))
    );
    assert!(!errors("FROM a\nARG P=http\nEXPOSE $P\n", &[], None).is_empty());
    assert!(!errors("FROM a\nSTOPSIGNAL SIGBOGUS\n", &[], None).is_empty());
}

#[test]
fn check_directive_skips_and_promotes_lints() {
    let skipped = ok("# check=skip=JSONArgsRecommended\nFROM a\nCMD run\n", &[]);
    assert!(!warnings(&skipped).contains(&"JSONArgsRecommended"));
    let promoted = errors("# check=error=true\nFROM a\nCMD run\n", &[], None);
    assert!(promoted.iter().any(|e| e.contains("JSON arguments")));
}

#[test]
fn no_input_panics_the_planner() {
    for text in [
        "",
        "FROM",
        "FROM a AS",
        "ARG",
        "FROM a\nCOPY",
        "FROM ${",
        "FROM a\nRUN --mount=type= x",
        "ONBUILD\n",
    ] {
        let _ = plan_with(text, &[], Some("x"));
    }
}

#[test]
fn relative_workdir_after_a_base_stage_workdir_is_fine() {
    let plan = ok(
        "FROM a AS base\nWORKDIR /app\nFROM base\nWORKDIR src\n",
        &[],
    );
    assert!(!warnings(&plan).contains(&"WorkdirRelativePath"));
    let plan = ok("FROM a\nWORKDIR src\n", &[]);
    assert!(warnings(&plan).contains(&"WorkdirRelativePath"));
}

#[test]
fn build_arg_used_only_by_a_pruned_stage_is_unused() {
    let text = "FROM a AS skipped\nARG ONLY_HERE\nFROM b AS built\n";
    let plan = plan_with(text, &[("ONLY_HERE", "1")], Some("built"));
    assert!(warnings(&plan).contains(&"UnusedBuildArg"));
    let plan = plan_with(text, &[("ONLY_HERE", "1")], Some("skipped"));
    assert!(!warnings(&plan).contains(&"UnusedBuildArg"));
}

#[test]
fn args_shadowed_by_env_are_not_recorded_as_used() {
    let plan = ok("FROM a\nARG V=1\nENV V=$V\nWORKDIR /$V\n", &[]);
    let steps = &plan.stages[0].steps;
    assert_eq!(
        steps[1].args_used,
        [("V".to_string(), Some("1".to_string()))],
        "ENV V=$V reads the ARG"
    );
    assert!(
        steps[2].args_used.is_empty(),
        "after ENV V, $V is the ENV value"
    );
}

#[test]
fn json_copy_with_several_sources_needs_a_directory() {
    assert!(!errors("FROM a\nCOPY [\"a\", \"b\", \"/dst\"]\n", &[], None).is_empty());
    assert!(errors("FROM a\nCOPY [\"a\", \"b\", \"/dst/\"]\n", &[], None).is_empty());
}

#[test]
fn from_with_an_empty_tag_is_an_error() {
    let errs = errors("ARG TAG\nFROM alpine:${TAG}\n", &[], None);
    assert!(
        errs.iter()
            .any(|e| e.contains("invalid image reference \"alpine:\"")),
        "{errs:?}"
    );
}
