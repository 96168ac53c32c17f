//! Independent stages run at the same time. Alone in its binary, so no other test competes for
//! the cores; measured from the build's own event times (overlap of step intervals), not from a
//! clock around the build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::collections::BTreeMap;

#[test]
fn four_cpu_bound_stages_overlap_on_two_cores() {
    let root = busybox_store("auto");
    let spin = "RUN i=0; while [ $i -lt 1200000 ]; do i=$((i+1)); done; echo $i > /n";
    let mut recipe = String::new();
    for stage in ["a", "b", "c", "d"] {
        recipe.push_str(&format!("FROM busybox:test AS {stage}\n{spin} # {stage}\n"));
    }
    recipe.push_str("FROM busybox:test\n");
    for stage in ["a", "b", "c", "d"] {
        recipe.push_str(&format!("COPY --from={stage} /n /{stage}\n"));
    }
    let ctx = context(&[("Dockerfile", &recipe)]);
    let run = build(
        ctx.path(),
        root.path(),
        &["--progress", "json", "--jobs", "2"],
        &[],
    );
    let steps = step_times(&run.stderr);
    // The four RUN steps are the first four (one per stage, in plan order).
    let runs: Vec<(f64, f64)> = steps.values().take(4).copied().collect();
    assert_eq!(runs.len(), 4, "{}", run.stderr);
    let sum: f64 = runs.iter().map(|(s, e)| e - s).sum();
    let span = runs.iter().map(|r| r.1).fold(0.0, f64::max)
        - runs.iter().map(|r| r.0).fold(f64::MAX, f64::min);
    assert!(
        sum > 2.0,
        "the stages did too little work to tell: {sum:.2}s"
    );
    assert!(
        span < 0.75 * sum,
        "4 stages took {span:.2}s from first start to last end, their steps {sum:.2}s in all: they did not overlap"
    );
}

/// Step number → (start, end), from a build's json events.
fn step_times(log: &str) -> BTreeMap<u64, (f64, f64)> {
    let mut steps: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(number), Some(at)) = (event["number"].as_u64(), event["at"].as_f64()) else {
            continue;
        };
        let times = steps.entry(number).or_insert((at, at));
        match event["event"].as_str() {
            Some("step") => times.0 = at,
            Some("done") => times.1 = at,
            _ => {}
        }
    }
    steps
}

#[test]
fn a_stage_starts_when_its_own_dependencies_are_built_not_when_a_slow_sibling_ends() {
    let root = busybox_store("auto");
    // `slow` and `fast` are independent; `after` needs only `fast`. With two jobs, `after`
    // must start while `slow` still runs.
    let recipe = "FROM busybox:test AS slow\nRUN sleep 3\n\nFROM busybox:test AS fast\nRUN echo fast > /f\n\nFROM fast AS after\nRUN cat /f > /g\n\nFROM busybox:test\nCOPY --from=slow /bin/sleep /s\nCOPY --from=after /g /g\n";
    let ctx = context(&[("Dockerfile", recipe)]);
    let run = build(
        ctx.path(),
        root.path(),
        &["--progress", "json", "--jobs", "2"],
        &[],
    );
    let steps = step_times(&run.stderr);
    let (slow, after) = (steps[&1], steps[&3]);
    assert!(
        after.0 < slow.1,
        "`after` started at {:.2}s, only once `slow` ended at {:.2}s:\n{}",
        after.0,
        slow.1,
        run.stderr
    );
}
