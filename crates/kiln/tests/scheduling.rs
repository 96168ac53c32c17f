//! Step-level scheduling: a stage starts when its base is ready, and a step waits only for what
//! it reads. Shown by the build's own json events and by builds that could not finish
//! otherwise, never by a clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

/// (event, step number, time) of every step event of a json progress log, in order.
fn step_events(log: &str) -> Vec<(String, u64, f64)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| {
            Some((
                event["event"].as_str()?.to_string(),
                event["number"].as_u64()?,
                event["at"].as_f64()?,
            ))
        })
        .collect()
}

/// The number of the step whose instruction contains `text`.
fn step_number(log: &str, text: &str) -> u64 {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|e| {
            e["event"] == "step" && e["instruction"].as_str().is_some_and(|i| i.contains(text))
        })
        .and_then(|e| e["number"].as_u64())
        .unwrap_or_else(|| panic!("no step {text:?} in:\n{log}"))
}

#[test]
fn the_final_stage_runs_its_first_step_while_the_build_stage_still_runs() {
    let root = busybox_store("auto");
    // The build stage's RUN finishes only once the final stage's first RUN has started (it
    // leaves a file in a shared cache mount; the wait gives up after 60 s). With stage-level
    // scheduling the final stage would wait for the whole build stage, and the build would fail.
    let recipe = "FROM busybox:test AS build\n\
        RUN --mount=type=cache,id=sync,target=/sync,sharing=shared i=0; while [ ! -e /sync/final-started ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; test -e /sync/final-started && echo built > /built\n\
        \n\
        FROM busybox:test\n\
        RUN --mount=type=cache,id=sync,target=/sync,sharing=shared touch /sync/final-started\n\
        COPY --from=build /built /built\n";
    let ctx = context(&[("Dockerfile", recipe)]);
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("image.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let run = build(
        ctx.path(),
        root.path(),
        &["--progress", "json", "--jobs", "2", "-o", &dest],
        &[],
    );
    let events = step_events(&run.stderr);
    let waiting = step_number(&run.stderr, "while [ ! -e /sync/final-started ]");
    let toucher = step_number(&run.stderr, "touch /sync/final-started");
    let at = |kind: &str, number: u64| {
        events
            .iter()
            .position(|(e, n, _)| e == kind && *n == number)
            .unwrap_or_else(|| panic!("no {kind} event for step {number}:\n{}", run.stderr))
    };
    assert!(
        at("step", toucher) < at("done", waiting),
        "the final stage's RUN started only after the build stage's RUN ended:\n{}",
        run.stderr
    );
    let image = read_image(&archive);
    let last = image.layers.last().unwrap();
    let built = last.iter().find(|e| e.path_str() == "built").unwrap();
    assert_eq!(built.size, 6, "/built holds \"built\\n\"");
}

#[test]
fn one_job_still_finishes_when_a_stage_waits_for_another_midway() {
    let root = busybox_store("auto");
    // The final stage starts first (its base is ready), then its COPY --from waits for `build`:
    // with one job it must give the slot to `build`, or the build never ends.
    let recipe = "FROM busybox:test AS build\nRUN echo one > /one\nRUN echo two > /two\n\nFROM busybox:test\nRUN echo first > /first\nCOPY --from=build /one /two /got/\nRUN cat /got/one /got/two > /both\n";
    let ctx = context(&[("Dockerfile", recipe)]);
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("image.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(["--root", &root.path().display().to_string(), "build"])
        .args(["--progress", "json", "--jobs", "1", "-o", &dest, "."])
        .current_dir(ctx.path());
    // A deadlock would hang: the build gets two minutes, then it is killed and the test fails.
    let finished = common::registry::run_bounded(&mut command, std::time::Duration::from_secs(120));
    assert!(
        !finished.timed_out,
        "the build at --jobs 1 did not end:\n{}",
        finished.stderr
    );
    assert_eq!(finished.status, 0, "{}", finished.stderr);
    let image = read_image(&archive);
    let both = image
        .layers
        .last()
        .unwrap()
        .iter()
        .find(|e| e.path_str() == "both")
        .unwrap();
    assert_eq!(both.size, 8, "/both holds \"one\\ntwo\\n\"");
}
