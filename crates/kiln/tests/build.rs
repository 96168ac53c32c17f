//! `kiln build` producing real images: read back, rebuilt from cache, reproduced, and
//! checked by the tools people feed them to (skopeo, umoci) when those are installed.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_oci::{read_oci_archive, ReadOptions};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

#[test]
fn builds_the_hello_example_into_an_oci_archive() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("hello.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    build(&example, root.path(), &["-t", "hello:1", "-o", &dest], &[]);
    let image = read_image(&archive);
    let config = &image.config.config;
    assert_eq!(config.cmd.as_deref(), Some(&["/hello.txt".to_string()][..]));
    assert_eq!(
        config
            .labels
            .get("org.opencontainers.image.title")
            .map(String::as_str),
        Some("hello from kiln")
    );
    assert!(config.env.contains(&"GREETING_FILE=/hello.txt".to_string()));
    assert_eq!(config.working_dir, "/");
    assert_eq!(image.layers.len(), 1);
    assert_eq!(paths(&image.layers[0]), ["hello.txt"]);
    let entry = &image.layers[0][0];
    assert_eq!(
        (entry.uid, entry.gid),
        (0, 0),
        "COPY makes files root-owned"
    );
    // One history entry per instruction; only COPY made a layer.
    let history: Vec<(String, bool)> = image
        .config
        .history
        .iter()
        .map(|h| (h.created_by.clone().unwrap_or_default(), h.empty_layer))
        .collect();
    assert_eq!(history.len(), 5);
    assert_eq!(history.iter().filter(|(_, empty)| !empty).count(), 1);
    // The store knows the image by name.
    let root_arg = root.path().to_string_lossy().into_owned();
    let images = kiln(&["--root", &root_arg, "images"], &example, &[]);
    assert!(images.stdout.contains("hello:1"), "{}", images.stdout);
}

#[test]
fn cached_rebuild_runs_nothing_and_writes_the_same_bytes() {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY a.txt /a.txt\nENV X=1\nCOPY dir/ /dir/\n",
        ),
        ("a.txt", "A"),
        ("dir/b", "B"),
    ]);
    let root = tempfile::tempdir().unwrap();
    // The default provenance of an OCI archive records when the build ran (as buildx's does),
    // so only a build without it, or with SOURCE_DATE_EPOCH, can repeat its bytes exactly.
    let first = build(
        ctx.path(),
        root.path(),
        &["-o", "type=oci,dest=one.tar", "--provenance=false"],
        &[],
    );
    assert!(
        first.stderr.contains("running: not built before"),
        "{}",
        first.stderr
    );
    // The file-hash memo learnt nothing from the second build: it is not written again.
    let memo = root.path().join("hashes/memo");
    let identity = |m: fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        (m.ino(), m.mtime(), m.mtime_nsec(), m.len())
    };
    let saved = identity(fs::metadata(&memo).unwrap());
    let second = build(
        ctx.path(),
        root.path(),
        &["-o", "type=oci,dest=two.tar", "--provenance=false"],
        &[],
    );
    assert_eq!(identity(fs::metadata(&memo).unwrap()), saved);
    assert!(
        !second.stderr.contains("running:"),
        "a step ran again:\n{}",
        second.stderr
    );
    assert_eq!(
        second.stderr.matches("CACHED").count(),
        2,
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("2 cached"), "{}", second.stderr);
    assert!(
        first.stderr.contains(" 2 bytes of context read"),
        "{}",
        first.stderr
    );
    assert!(
        second.stderr.contains(" 0 bytes of context read"),
        "hashes come from the memo, no file is read again:\n{}",
        second.stderr
    );
    assert_eq!(
        fs::read(ctx.path().join("one.tar")).unwrap(),
        fs::read(ctx.path().join("two.tar")).unwrap()
    );
}

#[test]
fn touching_a_file_changes_nothing_and_editing_one_reruns_from_its_step() {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY a.txt /a\nCOPY src/ /src/\nCOPY c.txt /c\n",
        ),
        ("a.txt", "A"),
        ("src/main.rs", "fn main() {}"),
        ("c.txt", "C"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &[], &[]);
    // Same bytes, new mtime and ctime.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(ctx.path().join("src/main.rs"), "fn main() {}").unwrap();
    let touched = build(ctx.path(), root.path(), &[], &[]);
    assert!(!touched.stderr.contains("running:"), "{}", touched.stderr);
    fs::write(
        ctx.path().join("src/main.rs"),
        "fn main() { println!(\"changed\"); }",
    )
    .unwrap();
    let edited = build(ctx.path(), root.path(), &[], &[]);
    let lines: Vec<&str> = edited.stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("#1 CACHED")),
        "{}",
        edited.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("#2 running:") && l.contains("file src/main.rs changed")),
        "the miss must name the file:\n{}",
        edited.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("#3 running: parent changed")),
        "{}",
        edited.stderr
    );
}

#[test]
fn build_arg_change_is_named_as_the_reason() {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nARG VERSION=1\nCOPY a.txt /v$VERSION/a\n",
        ),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &[], &[]);
    let changed = build(ctx.path(), root.path(), &["--build-arg", "VERSION=2"], &[]);
    assert!(
        changed.stderr.contains("build arg VERSION changed"),
        "{}",
        changed.stderr
    );
}

/// A record an older kiln wrote (another key scheme) is never a hit, and the step says why.
#[test]
fn a_record_of_an_older_key_scheme_is_a_miss_because_kiln_was_upgraded() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a\n"),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &[], &[]);
    // Rewrite the step's record as a kiln of scheme "1" left it: another key (old keys were
    // hashed under another scheme) and parts that say so. The slot points at it.
    let slots: Vec<PathBuf> = fs::read_dir(root.path().join("cache/slots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(slots.len(), 1, "{slots:?}");
    let key = fs::read_to_string(&slots[0]).unwrap();
    let hex = key.trim().trim_start_matches("sha256:").to_string();
    let record_path = root.path().join(format!("cache/{hex}.json"));
    let mut record: serde_json::Value =
        serde_json::from_slice(&fs::read(&record_path).unwrap()).unwrap();
    let old_hex = "0".repeat(64);
    record["key"] = serde_json::Value::String(format!("sha256:{old_hex}"));
    let parts = record["parts"].as_array_mut().unwrap();
    let scheme = parts
        .iter_mut()
        .find(|p| p[0] == "kiln key scheme")
        .expect("records carry their key scheme");
    scheme[1] = serde_json::Value::String("1".to_string());
    fs::write(
        root.path().join(format!("cache/{old_hex}.json")),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    fs::remove_file(&record_path).unwrap();
    fs::write(&slots[0], format!("sha256:{old_hex}")).unwrap();
    let again = build(ctx.path(), root.path(), &[], &[]);
    assert!(
        again.stderr.contains("running: kiln was upgraded"),
        "{}",
        again.stderr
    );
}

#[test]
fn no_cache_runs_every_step() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a\n"),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &[], &[]);
    let again = build(ctx.path(), root.path(), &["--no-cache"], &[]);
    assert!(
        again.stderr.contains("running: --no-cache"),
        "{}",
        again.stderr
    );
}

#[test]
fn same_recipe_in_two_places_at_two_times_gives_the_same_digest() {
    let files = [
        (
            "Dockerfile",
            "FROM scratch\nCOPY --chmod=0755 tool /usr/bin/tool\nCOPY data/ /data/\nLABEL a=b\n",
        ),
        ("tool", "#!/bin/sh\n"),
        ("data/x", "1"),
        ("data/y/z", "2"),
    ];
    let one = context(&files);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let two = context(&files);
    let mut digests = Vec::new();
    for ctx in [&one, &two] {
        let root = tempfile::tempdir().unwrap();
        build(
            ctx.path(),
            root.path(),
            &["-o", "type=oci,dest=image.tar"],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        );
        let image = read_image(&ctx.path().join("image.tar"));
        assert_eq!(
            image.config.created.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert!(image
            .layers
            .iter()
            .flatten()
            .all(|e| e.mtime <= 1_700_000_000));
        digests.push(image.manifest_digest);
    }
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn stages_copy_from_each_other_and_the_store() {
    let ctx = context(&[
        ("base.Dockerfile", "FROM scratch\nCOPY etc/ /etc/\nWORKDIR /app\nCMD [\"base\"]\n"),
        ("Dockerfile", "FROM kiln-test-base:1 AS one\nCOPY --chown=app:staff a.txt ./\nENTRYPOINT [\"/app/run\"]\n\nFROM scratch\nCOPY --from=one /app/ /copied/\nCOPY --from=one /etc/passwd /etc/\n"),
        ("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n"),
        ("etc/group", "root:x:0:\nstaff:x:50:\n"),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        root.path(),
        &["-f", "base.Dockerfile", "-t", "kiln-test-base:1"],
        &[],
    );
    build(
        ctx.path(),
        root.path(),
        &["--target", "one", "-o", "type=oci,dest=one.tar"],
        &[],
    );
    let one = read_image(&ctx.path().join("one.tar"));
    assert_eq!(one.config.config.working_dir, "/app");
    assert_eq!(
        one.config.config.entrypoint.as_deref(),
        Some(&["/app/run".to_string()][..])
    );
    assert_eq!(
        one.config.config.cmd, None,
        "ENTRYPOINT resets the inherited CMD"
    );
    let top = one.layers.last().unwrap();
    let file = top
        .iter()
        .find(|e| e.path_str() == "app/a.txt")
        .expect("a.txt in the top layer");
    assert_eq!((file.uid, file.gid), (1000, 50));
    build(
        ctx.path(),
        root.path(),
        &["-o", "type=oci,dest=final.tar"],
        &[],
    );
    let last = read_image(&ctx.path().join("final.tar"));
    let all: Vec<String> = last.layers.iter().flat_map(|l| paths(l)).collect();
    assert!(all.contains(&"copied/a.txt".to_string()), "{all:?}");
    assert!(all.contains(&"etc/passwd".to_string()), "{all:?}");
}

#[test]
fn dockerignore_keeps_files_out() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY . /ctx/\n"),
        (".dockerignore", "secret.key\n*.log\n"),
        ("keep.txt", "k"),
        ("secret.key", "s"),
        ("debug.log", "d"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        root.path(),
        &["-o", "type=oci,dest=../out.tar"],
        &[],
    );
    let image = read_image(&ctx.path().join("../out.tar"));
    let all: Vec<String> = image.layers.iter().flat_map(|l| paths(l)).collect();
    assert!(all.contains(&"ctx/keep.txt".to_string()), "{all:?}");
    assert!(
        !all.iter()
            .any(|p| p.contains("secret") || p.ends_with(".log")),
        "{all:?}"
    );
}

#[test]
fn run_and_missing_sources_fail_clearly_and_leave_the_store_usable() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY missing.txt /x\n")]);
    let root = tempfile::tempdir().unwrap();
    let root_arg = root.path().to_string_lossy().into_owned();
    let missing = kiln(&["--root", &root_arg, "build", "."], ctx.path(), &[]);
    assert_eq!(missing.status, 1);
    assert!(missing.stderr.contains("missing.txt"), "{}", missing.stderr);
    fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nRUN echo hi\n").unwrap();
    let run = kiln(&["--root", &root_arg, "build", "."], ctx.path(), &[]);
    assert_eq!(run.status, 1);
    assert!(
        run.stderr.contains("/bin/sh: not found in the image"),
        "{}",
        run.stderr
    );
    let verify = kiln(&["--root", &root_arg, "verify"], ctx.path(), &[]);
    assert_eq!(verify.status, 0, "{}", verify.stderr);
}

#[test]
fn store_commands_round_trip() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a\nCMD [\"x\"]\n"),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_string_lossy().into_owned();
    build(
        ctx.path(),
        root.path(),
        &["-t", "app:1", "--iidfile", "iid"],
        &[],
    );
    let iid = fs::read_to_string(ctx.path().join("iid")).unwrap();
    assert!(iid.starts_with("sha256:") && iid.len() == 71, "{iid}");
    assert_eq!(
        kiln(&["--root", &r, "tag", "app:1", "app:2"], ctx.path(), &[]).status,
        0
    );
    let inspect = kiln(&["--root", &r, "inspect", "app:2"], ctx.path(), &[]);
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(json["Id"].as_str(), Some(iid.as_str()));
    let history = kiln(&["--root", &r, "history", "app:1"], ctx.path(), &[]);
    assert!(
        history.stdout.contains("COPY a.txt /a") && history.stdout.contains("CMD [\"x\"]"),
        "{}",
        history.stdout
    );
    let save = kiln(
        &["--root", &r, "save", "app:1", "-o", "saved.tar"],
        ctx.path(),
        &[],
    );
    assert_eq!(save.status, 0, "{}", save.stderr);
    assert_eq!(
        read_image(&ctx.path().join("saved.tar"))
            .config
            .config
            .cmd
            .as_deref(),
        Some(&["x".to_string()][..])
    );
    assert_eq!(
        kiln(&["--root", &r, "rmi", "app:1", "app:2"], ctx.path(), &[]).status,
        0
    );
    let prune = kiln(&["--root", &r, "prune", "--all"], ctx.path(), &[]);
    assert!(prune.stdout.contains("removed"), "{}", prune.stdout);
    let du = kiln(&["--root", &r, "du"], ctx.path(), &[]);
    let blobs_line = du
        .stdout
        .lines()
        .find(|l| l.starts_with("blobs"))
        .unwrap_or_default();
    assert_eq!(
        blobs_line.split_whitespace().nth(1),
        Some("0"),
        "{}",
        du.stdout
    );
}

/// Incompressible bytes from a seed (xorshift): layers that take real time to compress.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// skopeo and umoci read what kiln writes; umoci unpacks the tree the recipe describes.
#[test]
fn consumers_accept_the_archive_and_the_store() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY app/ /app/\nCOPY --chmod=0755 run.sh /usr/local/bin/run\nCMD [\"/usr/local/bin/run\"]\n"), ("app/a.txt", "A"), ("app/sub/b.txt", "B"), ("run.sh", "#!/bin/sh\n")]);
    let root = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        root.path(),
        &["-t", "consumer:1", "-o", "type=oci,dest=image.tar"],
        &[],
    );
    if require_tool("skopeo") {
        let archive = format!("oci-archive:{}", ctx.path().join("image.tar").display());
        let out = Command::new("skopeo")
            .args(["inspect", &archive])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let copied = tempfile::tempdir().unwrap();
        let dir = format!("dir:{}", copied.path().join("image").display());
        let out = Command::new("skopeo")
            .args(["copy", &archive, &dir])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(copied.path().join("image/manifest.json").is_file());
        let layout = format!("oci:{}:1", root.path().display());
        let out = Command::new("skopeo")
            .args(["inspect", &layout])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo reads the store as a layout: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if require_tool("umoci") {
        let layout = tempfile::tempdir().unwrap();
        let layout_dir = layout.path().join("layout");
        let copy = Command::new("cp")
            .args([
                "-a",
                &root.path().display().to_string(),
                &layout_dir.display().to_string(),
            ])
            .status()
            .unwrap();
        assert!(copy.success());
        let bundle = layout.path().join("bundle");
        let out = Command::new("umoci")
            .args([
                "unpack",
                "--rootless",
                "--image",
                &format!("{}:1", layout_dir.display()),
                &bundle.display().to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rootfs: PathBuf = bundle.join("rootfs");
        assert_eq!(
            fs::read_to_string(rootfs.join("app/sub/b.txt")).unwrap(),
            "B"
        );
        let mode = fs::metadata(rootfs.join("usr/local/bin/run")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o755
        );
    }
}

#[test]
fn onbuild_triggers_of_a_store_image_run_in_the_child() {
    let ctx = context(&[
        (
            "base.Dockerfile",
            "FROM scratch\nENV FROM_BASE=yes\nONBUILD COPY trigger.txt /triggered\n",
        ),
        (
            "Dockerfile",
            "FROM kiln-onbuild-base:1\nCOPY --chmod=0600 a.txt /a-$FROM_BASE\n",
        ),
        ("trigger.txt", "T"),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        root.path(),
        &["-f", "base.Dockerfile", "-t", "kiln-onbuild-base:1"],
        &[],
    );
    build(
        ctx.path(),
        root.path(),
        &["-o", "type=oci,dest=child.tar"],
        &[],
    );
    let child = read_image(&ctx.path().join("child.tar"));
    let all: Vec<String> = child.layers.iter().flat_map(|l| paths(l)).collect();
    assert!(
        all.contains(&"triggered".to_string()),
        "the trigger ran: {all:?}"
    );
    assert!(
        all.contains(&"a-yes".to_string()),
        "the base's ENV reached expansion: {all:?}"
    );
    assert!(
        child.config.config.on_build.is_empty(),
        "triggers do not pass to grandchildren"
    );
}

#[test]
fn flattened_and_per_layer_outputs() {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY a/ /a/\nCOPY --chmod=0600 b.txt /a/b.txt\nCOPY c.txt /c.txt\n",
        ),
        ("a/one", "1"),
        ("a/b.txt", "old"),
        ("b.txt", "new"),
        ("c.txt", "C"),
    ]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("rootfs");
    let tar = out.path().join("fs.tar");
    let layers = out.path().join("layers");
    build(
        ctx.path(),
        root.path(),
        &[
            "-o",
            &format!("type=local,dest={}", local.display()),
            "-o",
            &format!("type=tar,dest={}", tar.display()),
            "-o",
            &format!("type=layers,dest={}", layers.display()),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    // The upper layer's b.txt wins, with its mode.
    assert_eq!(fs::read_to_string(local.join("a/b.txt")).unwrap(), "new");
    assert_eq!(fs::read_to_string(local.join("a/one")).unwrap(), "1");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(local.join("a/b.txt")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let listing = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in ["a/", "a/b.txt", "a/one", "c.txt"] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} missing in:\n{listing}"
        );
    }
    assert!(
        listing.contains("2023-11-14"),
        "times are clamped to SOURCE_DATE_EPOCH:\n{listing}"
    );
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(layers.join("layers.json")).unwrap()).unwrap();
    let listed = index["layers"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed[1]["created_by"].as_str(),
        Some("COPY --chmod=0600 b.txt /a/b.txt")
    );
    for layer in listed {
        let file = layers.join(layer["file"].as_str().unwrap());
        let bytes = fs::read(&file).unwrap();
        assert_eq!(
            kiln_oci::sha256_digest(&bytes).to_string(),
            layer["digest"].as_str().unwrap()
        );
    }
}

#[test]
fn local_output_matches_what_umoci_unpacks() {
    if !require_tool("umoci") {
        return;
    }
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY tree/ /srv/\nCOPY --chmod=4755 tool /usr/bin/tool\n",
        ),
        ("tree/x/y", "Y"),
        ("tree/z", "Z"),
        ("tool", "T"),
    ]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("local");
    build(
        ctx.path(),
        root.path(),
        &[
            "-t",
            "cmp:1",
            "-o",
            &format!("type=local,dest={}", local.display()),
        ],
        &[],
    );
    let bundle = umoci_unpack(root.path(), "1", out.path());
    assert_eq!(describe_tree(&local), describe_tree(&bundle.join("rootfs")));
}

#[test]
fn podman_loads_both_archive_formats() {
    if !require_tool("podman") {
        return;
    }
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY a.txt /a.txt\nCMD [\"/a.txt\"]\n",
        ),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        root.path(),
        &[
            "-t",
            "kiln-podman:1",
            "-o",
            "type=oci,dest=oci.tar",
            "-o",
            "type=docker,dest=docker.tar",
            "--iidfile",
            "iid",
        ],
        &[],
    );
    let iid = fs::read_to_string(ctx.path().join("iid")).unwrap();
    let storage = tempfile::tempdir().unwrap();
    for archive in ["oci.tar", "docker.tar"] {
        let out = Command::new("podman")
            .args([
                "--root",
                &storage.path().join("root").display().to_string(),
                "--runroot",
                &storage.path().join("run").display().to_string(),
                "--storage-driver",
                "vfs",
                "load",
                "-i",
            ])
            .arg(ctx.path().join(archive))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "podman load {archive}: {text}");
        assert!(
            text.contains(iid.trim_start_matches("sha256:")) || text.contains("kiln-podman"),
            "{archive}: {text}"
        );
    }
}

#[test]
fn docker_output_warns_past_125_layers() {
    let mut recipe = String::from("FROM scratch\n");
    for i in 0..126 {
        recipe.push_str(&format!("COPY a.txt /l{i}\n"));
    }
    let ctx = context(&[("Dockerfile", &recipe), ("a.txt", "A")]);
    let root = tempfile::tempdir().unwrap();
    let run = build(
        ctx.path(),
        root.path(),
        &["-o", "type=docker,dest=d.tar"],
        &[],
    );
    assert!(
        run.stderr
            .contains("warning: the image has 126 layers; docker cannot load more than 125"),
        "{}",
        run.stderr
    );
    let oci_only = build(ctx.path(), root.path(), &["-o", "type=oci,dest=o.tar"], &[]);
    assert!(!oci_only.stderr.contains("docker cannot load"));
}

#[test]
fn load_reads_archives_back_into_an_empty_store_and_refuses_tampered_ones() {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY a.txt /a.txt\nCMD [\"/a.txt\"]\n",
        ),
        ("a.txt", "A"),
    ]);
    let built_root = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        built_root.path(),
        &[
            "-t",
            "moved:1",
            "-o",
            "type=oci,dest=oci.tar",
            "-o",
            "type=docker,dest=docker.tar",
            "--iidfile",
            "iid",
        ],
        &[],
    );
    let iid = fs::read_to_string(ctx.path().join("iid")).unwrap();
    for archive in ["oci.tar", "docker.tar"] {
        let fresh = tempfile::tempdir().unwrap();
        let r = fresh.path().to_string_lossy().into_owned();
        let load = kiln(&["--root", &r, "load", "-i", archive], ctx.path(), &[]);
        assert_eq!(load.status, 0, "{archive}: {}", load.stderr);
        assert!(
            load.stdout.contains("loaded moved:1"),
            "{archive}: {}",
            load.stdout
        );
        let inspect = kiln(&["--root", &r, "inspect", "moved:1"], ctx.path(), &[]);
        let json: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
        assert_eq!(
            json["Id"].as_str(),
            Some(iid.as_str()),
            "{archive}: the image ID survives the trip"
        );
        assert_eq!(kiln(&["--root", &r, "verify"], ctx.path(), &[]).status, 0);
    }
    // Flip one byte inside the layer blob of the OCI archive: load must refuse it and name nothing.
    let mut bytes = fs::read(ctx.path().join("oci.tar")).unwrap();
    let image = read_oci_archive(ctx.path().join("oci.tar"), &ReadOptions::default()).unwrap();
    let layer_hex = image.layers()[0].digest.hex().to_string();
    let name = format!("blobs/sha256/{layer_hex}");
    let header_at = bytes
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap();
    let data_at = header_at + 512 + 20;
    bytes[data_at] ^= 0xff;
    fs::write(ctx.path().join("tampered.tar"), &bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let r = fresh.path().to_string_lossy().into_owned();
    let load = kiln(
        &["--root", &r, "load", "-i", "tampered.tar"],
        ctx.path(),
        &[],
    );
    assert_eq!(load.status, 1, "{}", load.stdout);
    let images = kiln(&["--root", &r, "images"], ctx.path(), &[]);
    assert!(!images.stdout.contains("moved"), "{}", images.stdout);
}

#[test]
fn concurrent_builds_share_one_store() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a/ /a/\nCOPY b.txt /b\n"),
        ("a/x", "X"),
        ("b.txt", "B"),
    ]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_string_lossy().into_owned();
    // Eight builds at once, half of them ignoring the cache so layers are written concurrently.
    let spawned: Vec<_> = (0..8)
        .map(|i| {
            let mut args = vec!["--root".to_string(), r.clone(), "build".to_string()];
            if i % 2 == 1 {
                args.push("--no-cache".to_string());
            }
            args.extend([
                "-t".to_string(),
                format!("same:{i}"),
                "--iidfile".to_string(),
                format!("iid{i}"),
                ".".to_string(),
            ]);
            Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args(&args)
                .current_dir(ctx.path())
                .env("SOURCE_DATE_EPOCH", "0")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ids: std::collections::BTreeSet<String> = (0..8)
        .map(|i| fs::read_to_string(ctx.path().join(format!("iid{i}"))).unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every build made the same image: {ids:?}");
    let images = kiln(&["--root", &r, "images"], ctx.path(), &[]);
    assert_eq!(
        images
            .stdout
            .lines()
            .filter(|l| l.starts_with("same:"))
            .count(),
        8,
        "{}",
        images.stdout
    );
    assert_eq!(kiln(&["--root", &r, "verify"], ctx.path(), &[]).status, 0);
}

#[test]
fn no_cache_filter_reruns_only_the_named_stage() {
    let ctx = context(&[("Dockerfile", "FROM scratch AS one\nCOPY a.txt /a\nFROM scratch AS two\nCOPY --from=one /a /b\nCOPY a.txt /c\n"), ("a.txt", "A")]);
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &[], &[]);
    let run = build(ctx.path(), root.path(), &["--no-cache-filter", "two"], &[]);
    assert!(run.stderr.contains("#1 CACHED"), "{}", run.stderr);
    assert!(
        run.stderr.contains("#2 running: --no-cache")
            && run.stderr.contains("#3 running: --no-cache"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_failed_build_leaves_the_store_as_it_was() {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY a.txt /a\nCOPY missing /m\n",
        ),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_string_lossy().into_owned();
    let failed = kiln(
        &["--root", &r, "build", "-t", "broken:1", "."],
        ctx.path(),
        &[],
    );
    assert_eq!(failed.status, 1);
    assert!(
        failed
            .stderr
            .contains("\"missing\": not found in the build context"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        fs::read_dir(root.path().join("tmp")).unwrap().count(),
        0,
        "no work area is left behind"
    );
    assert!(!kiln(&["--root", &r, "images"], ctx.path(), &[])
        .stdout
        .contains("broken"));
    assert_eq!(kiln(&["--root", &r, "verify"], ctx.path(), &[]).status, 0);
}

#[test]
fn squash_merges_the_recipes_layers_over_the_base() {
    let ctx = context(&[
        ("base.Dockerfile", "FROM scratch\nCOPY base.txt /base.txt\n"),
        (
            "Dockerfile",
            "FROM squash-base:1\nCOPY a.txt /a\nCOPY b.txt /b\nCOPY b.txt /a\nENV X=1\n",
        ),
        ("base.txt", "base"),
        ("a.txt", "A"),
        ("b.txt", "B"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        root.path(),
        &["-f", "base.Dockerfile", "-t", "squash-base:1"],
        &[],
    );
    build(
        ctx.path(),
        root.path(),
        &[
            "--squash",
            "-o",
            "type=oci,dest=squashed.tar",
            "-o",
            "type=local,dest=tree",
        ],
        &[],
    );
    let image = read_image(&ctx.path().join("squashed.tar"));
    assert_eq!(
        image.layers.len(),
        2,
        "the base layer plus one merged layer"
    );
    assert_eq!(paths(&image.layers[1]), ["a", "b"]);
    assert_eq!(fs::read_to_string(ctx.path().join("tree/a")).unwrap(), "B");
    assert_eq!(
        fs::read_to_string(ctx.path().join("tree/base.txt")).unwrap(),
        "base"
    );
    let history = &image.config.history;
    assert_eq!(history.iter().filter(|h| !h.empty_layer).count(), 2);
    assert!(history
        .last()
        .unwrap()
        .created_by
        .as_deref()
        .unwrap()
        .contains("3 layers merged"));
    assert_eq!(image.config.rootfs.diff_ids.len(), 2);
}

/// Serves `body` on 127.0.0.1 for at most `requests` connections, then stops; returns the port
/// and a handle that yields how many requests were served.
fn serve(body: &'static [u8], requests: usize) -> (u16, std::thread::JoinHandle<usize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut served = 0;
        while served < requests && std::time::Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    let mut buffer = [0u8; 4096];
                    let _ = stream.read(&mut buffer);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body);
                    served += 1;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        served
    });
    (port, handle)
}

#[test]
fn add_fetches_urls_and_a_checksum_makes_the_rebuild_offline() {
    const BODY: &[u8] = b"downloaded content\n";
    let checksum = kiln_oci::sha256_digest(BODY).to_string();
    let (port, server) = serve(BODY, 1);
    let recipe = format!(
        "FROM scratch\nADD --checksum={checksum} http://127.0.0.1:{port}/files/tool.txt /opt/\n"
    );
    let ctx = context(&[("Dockerfile", &recipe)]);
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &["-o", "type=local,dest=out"], &[]);
    assert_eq!(fs::read(ctx.path().join("out/opt/tool.txt")).unwrap(), BODY);
    let meta = fs::metadata(ctx.path().join("out/opt/tool.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        meta.mode() & 0o777,
        0o600,
        "downloaded files are 0600 unless --chmod"
    );
    assert_eq!(
        meta.mtime(),
        1_700_000_000,
        "mtime comes from Last-Modified"
    );
    assert_eq!(server.join().unwrap(), 1);
    // The server is gone: a cached rebuild must not need it.
    let again = build(ctx.path(), root.path(), &[], &[]);
    assert!(again.stderr.contains("#1 CACHED"), "{}", again.stderr);
    // A wrong checksum fails the build and names both digests.
    let (port, server) = serve(BODY, 1);
    let wrong = format!("sha256:{}", "0".repeat(64));
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nADD --checksum={wrong} http://127.0.0.1:{port}/x /x\n"),
    )
    .unwrap();
    let r = root.path().to_string_lossy().into_owned();
    let failed = kiln(&["--root", &r, "build", "."], ctx.path(), &[]);
    assert_eq!(failed.status, 1);
    assert!(
        failed.stderr.contains(&checksum[7..]) && failed.stderr.contains(&wrong[7..]),
        "{}",
        failed.stderr
    );
    server.join().unwrap();
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_store_stays_usable() {
    let disk = common::small_disk::SmallDisk::mount("2m");
    // Incompressible content, bigger than the whole filesystem.
    let data = noise(0x9E37_79B9_7F4A_7C15, 4 << 20);
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY big.bin /big.bin\n")]);
    fs::write(ctx.path().join("big.bin"), &data).unwrap();
    let root = disk.path().join("store");
    let r = root.to_string_lossy().into_owned();
    let run = kiln(
        &["--root", &r, "build", "-t", "big:1", "."],
        ctx.path(),
        &[],
    );
    let verify = kiln(&["--root", &r, "verify"], ctx.path(), &[]);
    let images = kiln(&["--root", &r, "images"], ctx.path(), &[]);
    drop(disk);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(verify.status, 0, "{}", verify.stderr);
    assert!(!images.stdout.contains("big"), "{}", images.stdout);
}

#[test]
fn link_layers_are_independent_but_what_follows_is_not() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch AS s\nCOPY etc/ /etc/\nCOPY a.txt /a\nCOPY --link --chown=app b.txt /b\nFROM scratch\nCOPY --from=s / /out/\n"),
        ("etc/passwd", "app:x:1000:1000::/:/bin/sh\n"),
        ("etc/group", "app:x:1000:\n"),
        ("a.txt", "v1"),
        ("b.txt", "B"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &["-o", "type=local,dest=one"], &[]);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(ctx.path().join("one/out/b")).unwrap().uid(),
        1000,
        "--link --chown by name resolves"
    );
    fs::write(ctx.path().join("a.txt"), "v2").unwrap();
    let rebuilt = build(ctx.path(), root.path(), &["-o", "type=local,dest=two"], &[]);
    assert!(
        rebuilt.stderr.contains("#3 CACHED"),
        "the linked layer does not depend on a.txt:\n{}",
        rebuilt.stderr
    );
    assert!(
        rebuilt.stderr.contains("#4 running"),
        "the stage copying all of s must rerun:\n{}",
        rebuilt.stderr
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("two/out/a")).unwrap(),
        "v2"
    );
}

#[test]
fn dot_destination_and_default_tags_and_quiet_stdout() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nWORKDIR /app\nCOPY a.txt .\n"),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_string_lossy().into_owned();
    build(
        ctx.path(),
        root.path(),
        &["-t", "plain", "-o", "type=local,dest=out"],
        &[],
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("out/app/a.txt")).unwrap(),
        "A",
        "`.` is the WORKDIR, a directory"
    );
    // A name without a tag is name:latest, however it is written later.
    let inspect = kiln(&["--root", &r, "inspect", "plain:latest"], ctx.path(), &[]);
    assert_eq!(inspect.status, 0, "{}", inspect.stderr);
    assert_eq!(
        kiln(
            &["--root", &r, "inspect", "docker.io/library/plain"],
            ctx.path(),
            &[]
        )
        .status,
        0
    );
    // With the archive on standard output, -q keeps the image ID out of it.
    let quiet = kiln(
        &["--root", &r, "build", "-q", "-o", "type=oci,dest=-", "."],
        ctx.path(),
        &[],
    );
    assert_eq!(quiet.status, 0, "{}", quiet.stderr);
    assert!(
        quiet.stderr.trim().starts_with("sha256:"),
        "{}",
        quiet.stderr
    );
    let raw = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--root", &r, "build", "-q", "-o", "type=oci,dest=-", "."])
        .current_dir(ctx.path())
        .output()
        .unwrap();
    fs::write(ctx.path().join("stdout.tar"), &raw.stdout).unwrap();
    assert!(
        read_oci_archive(ctx.path().join("stdout.tar"), &ReadOptions::default()).is_ok(),
        "stdout is a clean archive"
    );
}

#[test]
fn zstd_and_uncompressed_layers_on_request() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a\n"),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        root.path(),
        &[
            "-o",
            "type=oci,dest=z.tar,compression=zstd,compression-level=5",
        ],
        &[],
    );
    let image = read_oci_archive(ctx.path().join("z.tar"), &ReadOptions::default()).unwrap();
    assert_eq!(
        image.layers()[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        paths(&read_image(&ctx.path().join("z.tar")).layers[0]),
        ["a"]
    );
    build(
        ctx.path(),
        root.path(),
        &["-o", "type=oci,dest=u.tar,compression=uncompressed"],
        &[],
    );
    let plain = read_oci_archive(ctx.path().join("u.tar"), &ReadOptions::default()).unwrap();
    assert_eq!(
        plain.layers()[0].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
    let r = root.path().to_string_lossy().into_owned();
    let conflict = kiln(
        &[
            "--root",
            &r,
            "build",
            "-o",
            "type=oci,dest=a.tar,compression=zstd",
            "-o",
            "type=oci,dest=b.tar",
            "-o",
            "type=docker,dest=c.tar,compression=gzip",
            ".",
        ],
        ctx.path(),
        &[],
    );
    assert_eq!(conflict.status, 2, "{}", conflict.stderr);
}

#[test]
fn images_loaded_from_archives_are_unpacked_and_serve_as_bases() {
    let ctx = context(&[
        (
            "base.Dockerfile",
            "FROM scratch\nCOPY tree/ /\nCOPY --chmod=0700 secret /root/secret\n",
        ),
        (
            "Dockerfile",
            "FROM moved-base:1\nCOPY extra.txt /usr/share/extra.txt\n",
        ),
        ("tree/usr/bin/tool", "T"),
        ("tree/etc/conf", "C"),
        ("secret", "S"),
        ("extra.txt", "E"),
    ]);
    let first = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        first.path(),
        &[
            "-f",
            "base.Dockerfile",
            "-t",
            "moved-base:1",
            "-o",
            "type=docker,dest=base.tar",
        ],
        &[],
    );
    // A store that never built the base: it only has the archive.
    let second = tempfile::tempdir().unwrap();
    let r = second.path().to_string_lossy().into_owned();
    let load = kiln(&["--root", &r, "load", "-i", "base.tar"], ctx.path(), &[]);
    assert_eq!(load.status, 0, "{}", load.stderr);
    build(
        ctx.path(),
        second.path(),
        &["-o", "type=local,dest=child"],
        &[],
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("child/usr/bin/tool")).unwrap(),
        "T"
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("child/usr/share/extra.txt")).unwrap(),
        "E"
    );
    let secret = fs::metadata(ctx.path().join("child/root/secret")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&secret.permissions()) & 0o777,
        0o700
    );
}

#[test]
fn from_archive_transports_as_buildah_takes_them() {
    let ctx = context(&[
        (
            "base.Dockerfile",
            "FROM scratch\nENV FROM_ARCHIVE=1\nCOPY a.txt /a.txt\n",
        ),
        (
            "oci.Dockerfile",
            "FROM oci-archive:base-oci.tar\nCOPY b.txt /b-$FROM_ARCHIVE\n",
        ),
        (
            "docker.Dockerfile",
            "FROM docker-archive:base-docker.tar:archived:1\nCOPY b.txt /b\n",
        ),
        ("a.txt", "A"),
        ("b.txt", "B"),
    ]);
    let first = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        first.path(),
        &[
            "-f",
            "base.Dockerfile",
            "-t",
            "archived:1",
            "-o",
            "type=oci,dest=base-oci.tar",
            "-o",
            "type=docker,dest=base-docker.tar",
        ],
        &[],
    );
    let fresh = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        fresh.path(),
        &["-f", "oci.Dockerfile", "-o", "type=local,dest=from-oci"],
        &[],
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("from-oci/a.txt")).unwrap(),
        "A"
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("from-oci/b-1")).unwrap(),
        "B",
        "the archive's ENV reached expansion"
    );
    let fresh = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        fresh.path(),
        &[
            "-f",
            "docker.Dockerfile",
            "-o",
            "type=local,dest=from-docker",
        ],
        &[],
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("from-docker/b")).unwrap(),
        "B"
    );
    let r = fresh.path().to_string_lossy().into_owned();
    fs::write(
        ctx.path().join("bad.Dockerfile"),
        "FROM docker://somewhere\nCOPY b.txt /b\n",
    )
    .unwrap();
    let unsupported = kiln(
        &["--root", &r, "build", "-f", "bad.Dockerfile", "."],
        ctx.path(),
        &[],
    );
    assert_eq!(unsupported.status, 1);
    assert!(
        unsupported.stderr.contains("use oci-archive:"),
        "{}",
        unsupported.stderr
    );
}

#[test]
fn json_progress_is_one_event_per_line() {
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a\nENV X=1\n"),
        ("a.txt", "A"),
    ]);
    let root = tempfile::tempdir().unwrap();
    let first = build(ctx.path(), root.path(), &["--progress", "json"], &[]);
    let events: Vec<serde_json::Value> = first
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["step", "running", "done", "step", "done", "built"]);
    assert_eq!(events[0]["instruction"].as_str(), Some("COPY a.txt /a"));
    assert_eq!(events[1]["reason"].as_str(), Some("not built before"));
    assert_eq!(events[5]["cached"].as_u64(), Some(0));
    let second = build(ctx.path(), root.path(), &["--progress", "json"], &[]);
    assert!(
        second
            .stderr
            .lines()
            .any(|l| l.contains("\"event\":\"cached\"")),
        "{}",
        second.stderr
    );
}

/// (number, started, finished) of each layer step, from --progress=json's own timestamps.
fn step_intervals(stderr: &str) -> Vec<(u64, f64, f64)> {
    let mut started = std::collections::BTreeMap::new();
    let mut intervals = Vec::new();
    for line in stderr.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let number = event["number"].as_u64().unwrap_or(0);
        match event["event"].as_str() {
            Some("step") => {
                started.insert(number, event["at"].as_f64().unwrap());
            }
            Some("done") => {
                intervals.push((number, started[&number], event["at"].as_f64().unwrap()))
            }
            _ => {}
        }
    }
    intervals
}

#[test]
fn independent_stages_run_at_the_same_time() {
    // Two stages that each compress 8 MB of noise, and a last stage that needs both.
    let ctx = context(&[("Dockerfile", "FROM scratch AS one\nCOPY one.bin /\nFROM scratch AS two\nCOPY two.bin /\nFROM scratch\nCOPY --from=one /one.bin /\nCOPY --from=two /two.bin /\n")]);
    fs::write(ctx.path().join("one.bin"), noise(1, 8 << 20)).unwrap();
    fs::write(ctx.path().join("two.bin"), noise(2, 8 << 20)).unwrap();
    let parallel_root = tempfile::tempdir().unwrap();
    let parallel = build(
        ctx.path(),
        parallel_root.path(),
        &["--progress", "json", "--jobs", "2"],
        &[],
    );
    let steps = step_intervals(&parallel.stderr);
    let (one, two) = (
        steps.iter().find(|s| s.0 == 1).unwrap(),
        steps.iter().find(|s| s.0 == 2).unwrap(),
    );
    assert!(
        two.1 < one.2 && one.1 < two.2,
        "stages one and two overlap with --jobs 2: {steps:?}"
    );
    let serial_root = tempfile::tempdir().unwrap();
    let serial = build(
        ctx.path(),
        serial_root.path(),
        &["--progress", "json", "--jobs", "1"],
        &[],
    );
    let steps = step_intervals(&serial.stderr);
    let (one, two) = (
        steps.iter().find(|s| s.0 == 1).unwrap(),
        steps.iter().find(|s| s.0 == 2).unwrap(),
    );
    // Either may go first (both are ready at the start); they never overlap.
    assert!(
        one.2 <= two.1 || two.2 <= one.1,
        "--jobs 1 runs them one after the other: {steps:?}"
    );
}

#[test]
fn a_scratch_image_without_workdir_says_slash_as_buildkit_writes() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY a /a\n"), ("a", "a")]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("a.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    build(ctx.path(), root.path(), &["-o", &dest], &[]);
    assert_eq!(read_image(&archive).config.config.working_dir, "/");
}

#[test]
fn hard_links_of_the_context_are_hard_links_in_the_layer() {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY app/ /app/\nCOPY --link app/one other/two /more/\n",
        ),
        ("app/one", "shared"),
        ("other/x", "x"),
    ]);
    fs::hard_link(ctx.path().join("app/one"), ctx.path().join("app/two")).unwrap();
    fs::hard_link(ctx.path().join("app/one"), ctx.path().join("other/two")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("links.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    build(ctx.path(), root.path(), &["-o", &dest], &[]);
    let image = read_image(&archive);
    let link = |layer: &[kiln_layer::EntrySummary], name: &str| {
        let entry = layer
            .iter()
            .find(|e| e.path == name.as_bytes())
            .unwrap_or_else(|| panic!("{name} in {:?}", paths(layer)));
        (entry.kind, entry.link_target.clone())
    };
    assert_eq!(
        link(&image.layers[0], "app/two"),
        (
            kiln_layer::EntryTypeSummary::Hardlink,
            Some(b"app/one".to_vec())
        )
    );
    assert_eq!(
        link(&image.layers[1], "more/two"),
        (
            kiln_layer::EntryTypeSummary::Hardlink,
            Some(b"more/one".to_vec())
        )
    );
}
