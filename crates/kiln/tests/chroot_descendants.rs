//! The chroot rung has no pid namespace, so nothing ends a step's processes with it: a process
//! that starts a session of its own (`setsid`) leaves the step's process group, and killing
//! the group misses it. kiln's helper is the step's child subreaper and kills every descendant
//! after the step: nothing a RUN started is running once the build is done, and the build does
//! not wait for an escaped process that holds its output open.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::registry::run_bounded;
use common::{busybox_store, context};
use std::process::Command;
use std::time::Duration;

/// The pids of processes whose command line is `sleep SECONDS`.
fn sleeping(seconds: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if words.len() >= 2 && words[0].ends_with(b"sleep") && words[1] == seconds.as_bytes() {
            found.push(pid);
        }
    }
    found
}

#[test]
fn processes_a_run_step_started_in_their_own_session_are_gone_after_the_build() {
    let store = busybox_store("auto");
    // A number no other sleep on this machine uses, to find this test's processes.
    let seconds = format!("{}", 900_000 + std::process::id() % 90_000);
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM busybox:test\n\
             RUN setsid sleep {seconds} >/dev/null 2>&1 </dev/null & \
                 sh -c 'setsid sh -c \"sleep {seconds} </dev/null >/dev/null 2>&1 &\" &' ; \
                 sleep 0.3; echo started\n\
             RUN setsid sleep {seconds} & sleep 0.3; echo holding the output\n"
        ),
    )]);
    let root = store.path().display().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args([
            "--isolation=chroot-on-host",
            "--root",
            &root,
            "build",
            "--progress=plain",
            ".",
        ])
        .current_dir(ctx.path())
        .env("NO_COLOR", "1");
    let run = run_bounded(&mut command, Duration::from_secs(60));
    let left = sleeping(&seconds);
    for pid in &left {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(
        !run.timed_out,
        "the build waited for a process the step left holding its output:\n{}",
        run.stderr
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("isolation: chroot"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("started"), "{}", run.stderr);
    assert!(
        left.is_empty(),
        "still running after the build: {left:?} (sleep {seconds})"
    );
}
