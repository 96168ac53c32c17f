//! The `docker build` flags that shape every RUN and the image: `--network`, `--add-host`,
//! `--label`, `--annotation`, `--ssh`, `--allow`, `--shm-size`, `--ulimit`. RUN needs root (or
//! user namespaces) and Debian's busybox-static, which `.ci/run` installs.

mod common;

use common::*;
use kiln_oci::{read_oci_archive, ReadOptions};
use std::path::Path;

fn build_with(root: &Path, recipe: &str, flags: &[&str]) -> (Run, tempfile::TempDir) {
    let ctx = context(&[("Dockerfile", recipe)]);
    let r = root.to_string_lossy().into_owned();
    let mut args = vec!["--root", r.as_str(), "build", "--progress=plain"];
    args.extend_from_slice(flags);
    args.push(".");
    let run = kiln(&args, ctx.path(), &[]);
    (run, ctx)
}

fn output_of(run: &Run, marker: &str) -> String {
    run.stderr
        .lines()
        .filter_map(|line| line.split_once("| "))
        .map(|(_, text)| text)
        .filter(|text| text.starts_with(marker))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn network_add_host_shm_size_and_ulimit_reach_every_run() {
    let root = busybox_store("auto");
    let recipe = "FROM busybox:test\n\
        RUN echo \"lines $(wc -l < /proc/net/dev)\"\n\
        RUN --network=host echo \"host-lines $(wc -l < /proc/net/dev)\"\n\
        RUN echo \"hosts $(grep -E 'db|v6' /etc/hosts | tr '\\t\\n' '  ')\"\n\
        RUN echo \"shm $(df -k /dev/shm | tail -1 | awk '{print $2}')\"\n\
        RUN echo \"nofile $(ulimit -n) $(ulimit -Hn)\"\n";
    let (run, _ctx) = build_with(
        root.path(),
        recipe,
        &[
            "--network=none",
            "--add-host",
            "db:10.1.2.3",
            "--add-host=v6:::1",
            "--shm-size=16m",
            "--ulimit",
            "nofile=512:1024",
            "--no-cache",
        ],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    // --network=none: only the loopback interface (two header lines and lo).
    assert_eq!(output_of(&run, "lines "), "lines 3", "{}", run.stderr);
    // A RUN's own --network wins.
    let host = output_of(&run, "host-lines ");
    let host_lines: usize = host.trim_start_matches("host-lines ").parse().unwrap();
    let here = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count();
    assert_eq!(host_lines, here, "{}", run.stderr);
    assert_eq!(
        output_of(&run, "hosts "),
        "hosts 10.1.2.3 db ::1 v6 ",
        "{}",
        run.stderr
    );
    assert_eq!(output_of(&run, "shm "), "shm 16384", "{}", run.stderr);
    assert_eq!(
        output_of(&run, "nofile "),
        "nofile 512 1024",
        "{}",
        run.stderr
    );
}

#[test]
fn labels_and_annotations_go_on_the_image() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch\nLABEL team=recipe keep=yes\nCOPY Dockerfile /\n",
    )]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("a.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    build(
        ctx.path(),
        root.path(),
        &[
            "-o",
            &dest,
            "--label",
            "team=flag",
            "--label=org.opencontainers.image.version=1.2",
            "--annotation",
            "org.opencontainers.image.source=https://example.com/app",
            "--annotation=manifest:note=yes",
        ],
        &[],
    );
    let image = read_oci_archive(&archive, &ReadOptions::default()).unwrap();
    let labels = &image.config.config.labels;
    assert_eq!(labels.get("team").map(String::as_str), Some("flag"));
    assert_eq!(labels.get("keep").map(String::as_str), Some("yes"));
    assert_eq!(
        labels
            .get("org.opencontainers.image.version")
            .map(String::as_str),
        Some("1.2")
    );
    let annotations = &image.manifest.annotations;
    assert_eq!(
        annotations
            .get("org.opencontainers.image.source")
            .map(String::as_str),
        Some("https://example.com/app")
    );
    assert_eq!(annotations.get("note").map(String::as_str), Some("yes"));
}

#[test]
fn ssh_mounts_use_only_what_ssh_names() {
    let root = busybox_store("auto");
    let agent_dir = tempfile::tempdir().unwrap();
    let socket = agent_dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let recipe = "FROM busybox:test\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"agent at $SSH_AUTH_SOCK\"\n";
    // The caller's own agent is not forwarded without --ssh.
    let ctx = context(&[("Dockerfile", recipe)]);
    let r = root.path().to_string_lossy().into_owned();
    let sock = socket.to_string_lossy().into_owned();
    let without = kiln(
        &["--root", &r, "build", "--progress=plain", "."],
        ctx.path(),
        &[("SSH_AUTH_SOCK", sock.as_str())],
    );
    assert_ne!(without.status, 0);
    assert!(
        without.stderr.contains("pass --ssh default"),
        "{}",
        without.stderr
    );
    let ssh = format!("default={sock}");
    let (with, _ctx) = build_with(root.path(), recipe, &["--ssh", &ssh]);
    assert_eq!(with.status, 0, "{}", with.stderr);
    assert!(
        with.stderr.contains("agent at /run/buildkit/ssh_agent.0"),
        "{}",
        with.stderr
    );
    // `--ssh default` takes $SSH_AUTH_SOCK; an id names its own agent.
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\nRUN --mount=type=ssh,id=deploy test -S \"$SSH_AUTH_SOCK\"\n",
    )]);
    let named = kiln(
        &["--root", &r, "build", "--ssh", "default", "."],
        ctx.path(),
        &[("SSH_AUTH_SOCK", sock.as_str())],
    );
    assert_ne!(named.status, 0);
    assert!(
        named.stderr.contains("pass --ssh deploy"),
        "{}",
        named.stderr
    );
    let deploy = format!("deploy={sock}");
    let named = kiln(
        &["--root", &r, "build", "--ssh", &deploy, "."],
        ctx.path(),
        &[],
    );
    assert_eq!(named.status, 0, "{}", named.stderr);
}

#[test]
fn insecure_runs_need_the_entitlement() {
    let root = busybox_store("auto");
    let recipe = "FROM busybox:test\nRUN --security=insecure mkdir /m && mount -t tmpfs t /m && echo mounted\n";
    let (denied, _ctx) = build_with(root.path(), recipe, &[]);
    assert_ne!(denied.status, 0);
    assert!(
        denied
            .stderr
            .contains("build with --allow security.insecure"),
        "{}",
        denied.stderr
    );
    let (allowed, _ctx) = build_with(root.path(), recipe, &["--allow", "security.insecure"]);
    assert_eq!(allowed.status, 0, "{}", allowed.stderr);
    assert!(allowed.stderr.contains("| mounted"), "{}", allowed.stderr);
}

#[test]
fn bad_flag_values_are_usage_errors_naming_the_flag() {
    let ctx = context(&[("Dockerfile", "FROM scratch\n")]);
    for (flag, value) in [
        ("--add-host", "nohost"),
        ("--network", "bridge"),
        ("--ulimit", "nofile=x"),
        ("--shm-size", "lots"),
        ("--label", "=x"),
        ("--annotation", "bogus:a=b"),
        ("--allow", "everything"),
        ("--ssh", "default=/nonexistent/agent.sock"),
    ] {
        let run = kiln(&["build", flag, value, "."], ctx.path(), &[]);
        assert_eq!(run.status, 2, "{flag} {value}: {}", run.stderr);
        assert!(run.stderr.contains(flag), "{flag} {value}: {}", run.stderr);
    }
}
