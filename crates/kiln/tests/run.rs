//! RUN in kiln's sandbox on a busybox base that kiln builds itself: what a step changes is
//! exactly what its layer holds, with overlay and with the copy fallback (same bytes), and
//! failures are clear and leave the store usable. Needs root (or user namespaces) and Debian's
//! busybox-static, which `.ci/run` installs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn root_arg(root: &Path) -> String {
    root.to_string_lossy().into_owned()
}

/// Builds `recipe` on the store and returns the run, expecting failure when `ok` is false.
fn build_recipe(
    root: &Path,
    recipe: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    ok: bool,
) -> (Run, tempfile::TempDir) {
    let ctx = context(&[("Dockerfile", recipe)]);
    let root = root_arg(root);
    let mut args = vec!["--root", root.as_str(), "build"];
    args.extend_from_slice(extra);
    args.push(".");
    let run = kiln(&args, ctx.path(), env);
    assert_eq!(run.status == 0, ok, "build:\n{}", run.stderr);
    (run, ctx)
}

const CHANGES: &str = r#"FROM busybox:test
RUN mkdir -p /data/keep /data/gone /data/redo /data/dir2file && echo a > /data/keep/a && echo b > /data/gone/b && echo c > /data/redo/c && echo f > /data/file2dir && echo x > /data/dir2file/x && echo same > /data/same && echo del > /data/del && echo old > /data/linked
RUN echo changed > /data/keep/a \
 && echo new > /data/new && chmod 600 /data/new && chown 1000:10 /data/new \
 && ln /data/new /data/hard && ln -s /data/new /data/sym && ln /data/linked /data/hard2 \
 && rm /data/del && rm -r /data/gone \
 && rm -rf /data/redo && mkdir /data/redo && echo c2 > /data/redo/c2 \
 && rm /data/file2dir && mkdir /data/file2dir && echo in > /data/file2dir/in \
 && rm -r /data/dir2file && echo now-file > /data/dir2file \
 && chmod 644 /data/same
"#;

/// The entries of the last layer, and the image's digest.
fn changes_image(snapshotter: &str) -> (Image, tempfile::TempDir, tempfile::TempDir) {
    let root = busybox_store(snapshotter);
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("image.tar");
    let local = out.path().join("local");
    build_recipe(
        root.path(),
        CHANGES,
        &[
            "-t",
            "changes:1",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
        ],
        &[
            ("KILN_SNAPSHOTTER", snapshotter),
            ("SOURCE_DATE_EPOCH", EPOCH),
        ],
        true,
    );
    (read_image(&archive), root, out)
}

fn check_changes(image: &Image, local: &Path) {
    let last = image.layers.last().unwrap();
    let found: BTreeSet<String> = paths(last).into_iter().collect();
    let expected: BTreeSet<String> = [
        "data",
        "data/.wh.del",
        "data/.wh.gone",
        "data/dir2file",
        "data/file2dir",
        "data/file2dir/in",
        "data/hard",
        "data/hard2",
        "data/keep",
        "data/keep/a",
        "data/linked",
        "data/new",
        "data/redo",
        "data/redo/.wh..wh..opq",
        "data/redo/c2",
        "data/sym",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(found, expected, "entries of the RUN layer");
    let new = last.iter().find(|e| e.path_str() == "data/new").unwrap();
    assert_eq!((new.mode & 0o7777, new.uid, new.gid), (0o600, 1000, 10));
    // One name of the pair is the file, the other a link to it.
    let hard = last.iter().find(|e| e.path_str() == "data/new").unwrap();
    let first = last.iter().find(|e| e.path_str() == "data/hard").unwrap();
    assert_eq!(
        hard.link_str()
            .or(first.link_str())
            .as_deref()
            .map(|l| l.trim_start_matches("./"))
            .map(|l| l == "data/new" || l == "data/hard"),
        Some(true)
    );
    let sym = last.iter().find(|e| e.path_str() == "data/sym").unwrap();
    assert_eq!(sym.link_str().as_deref(), Some("/data/new"));
    // A new name for a file from below keeps the link: both names are in the layer.
    let linked = last.iter().find(|e| e.path_str() == "data/linked").unwrap();
    assert_eq!(linked.link_str().as_deref(), Some("data/hard2"));
    // The flattened filesystem is what the commands left.
    let read = |p: &str| fs::read_to_string(local.join(p)).unwrap();
    assert_eq!(read("data/keep/a"), "changed\n");
    assert_eq!(read("data/redo/c2"), "c2\n");
    assert_eq!(read("data/file2dir/in"), "in\n");
    assert_eq!(read("data/dir2file"), "now-file\n");
    assert_eq!(read("data/same"), "same\n");
    for gone in ["data/del", "data/gone", "data/redo/c"] {
        assert!(!local.join(gone).exists(), "{gone} should be gone");
    }
    let meta = local.join("data/new").symlink_metadata().unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 10));
    // Mount points and the files kiln provides stay out of every layer.
    for layer in &image.layers {
        for entry in paths(layer) {
            assert!(
                !["etc/hosts", "etc/resolv.conf", "proc", "sys", "dev"].contains(&entry.as_str()),
                "{entry} leaked into a layer"
            );
        }
    }
}

#[test]
fn overlay_and_copy_give_the_expected_layer_and_the_same_bytes() {
    let (overlay, _r1, out1) = changes_image("overlay");
    check_changes(&overlay, &out1.path().join("local"));
    let (copy, _r2, out2) = changes_image("copy");
    check_changes(&copy, &out2.path().join("local"));
    assert_eq!(
        overlay.manifest_digest, copy.manifest_digest,
        "overlay and copy must give the same image"
    );
}

#[test]
fn run_sees_the_image_config_and_a_sandbox_of_its_own() {
    let root = busybox_store("auto");
    let recipe = r#"FROM busybox:test
ENV GREETING=hello
ARG LEVEL=3
WORKDIR /work/dir
RUN mkdir -m 1777 /tmp
USER bob
RUN echo "$GREETING $LEVEL $(id -u):$(id -g) $(id -G) $(pwd) $(hostname) pid=$$" > /tmp/facts; cat /tmp/facts; test -e /proc/1/status
USER root
RUN test -c /dev/null && grep -q localhost /etc/hosts && ! env | grep -q CARGO && echo sandboxed
RUN mkdir /mnt && ! mount -t tmpfs t /mnt 2>/dev/null && ! mknod /disk b 8 0 2>/dev/null && echo contained
RUN sleep 600 & echo "left a process behind"
"#;
    let (run, _ctx) = build_recipe(
        root.path(),
        recipe,
        &["-t", "facts:1"],
        &[("PARENT_SECRET", "x")],
        true,
    );
    assert!(
        run.stderr
            .contains("hello 3 1000:1000 1000 10 /work/dir kiln pid=1"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("| sandboxed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("| contained"),
        "root in RUN may not mount or make devices:\n{}",
        run.stderr
    );
    // The process left behind died with the step: nothing of the build is still running.
    let ps = Command::new("ps").args(["-eo", "args"]).output();
    if let Ok(ps) = ps {
        assert!(!String::from_utf8_lossy(&ps.stdout).contains("sleep 600"));
    }
    // A rebuild runs nothing.
    let (again, _ctx) = build_recipe(root.path(), recipe, &["-t", "facts:1"], &[], true);
    assert!(!again.stderr.contains("| sandboxed"), "{}", again.stderr);
    assert!(again.stderr.contains("CACHED"), "{}", again.stderr);
    // kiln run: the same sandbox, the exit code passes through.
    let r = root_arg(root.path());
    let facts = kiln(
        &["--root", &r, "run", "facts:1", "cat", "/tmp/facts"],
        root.path(),
        &[],
    );
    assert_eq!(facts.status, 0, "{}", facts.stderr);
    assert!(facts.stdout.contains("/work/dir kiln"), "{}", facts.stdout);
    let code = kiln(
        &["--root", &r, "run", "facts:1", "sh", "-c", "exit 7"],
        root.path(),
        &[],
    );
    assert_eq!(code.status, 7, "{}", code.stderr);
    // The command is pid 1, as under docker run (tini-style inits check it), and a signal
    // that ends it is reported as such.
    let pid = kiln(
        &["--root", &r, "run", "facts:1", "sh", "-c", "echo $$"],
        root.path(),
        &[],
    );
    assert_eq!(
        (pid.status, pid.stdout.as_str()),
        (0, "1\n"),
        "{}",
        pid.stderr
    );
    let none = kiln(
        &[
            "--root",
            &r,
            "run",
            "--network",
            "none",
            "busybox:test",
            "sh",
            "-c",
            "cat /proc/net/dev | wc -l",
        ],
        root.path(),
        &[],
    );
    assert_eq!(none.status, 0, "{}", none.stderr);
    assert_eq!(
        none.stdout.trim(),
        "3",
        "only lo in a network namespace of its own"
    );
}

#[test]
fn heredocs_run_as_scripts() {
    let root = busybox_store("auto");
    let recipe = "FROM busybox:test\nRUN <<EOF\necho one > /one\necho two >> /one\nEOF\nRUN <<EOT\n#!/bin/sh\necho script > /two\nEOT\nRUN cat <<EOF > /three\nthree\nEOF\n";
    let out = tempfile::tempdir().unwrap();
    build_recipe(
        root.path(),
        recipe,
        &["-o", &format!("type=local,dest={}", out.path().display())],
        &[],
        true,
    );
    assert_eq!(
        fs::read_to_string(out.path().join("one")).unwrap(),
        "one\ntwo\n"
    );
    assert_eq!(
        fs::read_to_string(out.path().join("two")).unwrap(),
        "script\n"
    );
    assert_eq!(
        fs::read_to_string(out.path().join("three")).unwrap(),
        "three\n"
    );
    assert!(!out.path().join("dev/pipes").exists());
}

#[test]
fn failures_are_clear_and_leave_the_store_consistent() {
    let root = busybox_store("auto");
    let r = root_arg(root.path());
    let cases: &[(&str, &[&str])] = &[
        (
            "FROM busybox:test\nRUN echo working; for i in 1 2 3 4 5; do echo line $i; done; exit 3\n",
            &["exit code 3", "line 5", "RUN line 2"],
        ),
        // The command is pid 1, which its own namespace cannot kill (as under docker): the
        // kernel's SIGKILL at the CPU limit can.
        (
            "FROM busybox:test\nRUN ulimit -t 1; while :; do :; done\n",
            &["killed by signal 9 (SIGKILL)"],
        ),
        (
            "FROM busybox:test\nUSER nobody\nRUN true\n",
            &["unable to find user nobody"],
        ),
        (
            "FROM busybox:test\nSHELL [\"/bin/bash\", \"-c\"]\nRUN true\n",
            &["/bin/bash: not found in the image"],
        ),
        (
            "FROM scratch\nRUN echo hi\n",
            &["/bin/sh: not found in the image"],
        ),
    ];
    for (recipe, wanted) in cases {
        let (run, _ctx) = build_recipe(root.path(), recipe, &[], &[], false);
        for text in *wanted {
            assert!(
                run.stderr.contains(text),
                "{recipe}: no {text:?} in\n{}",
                run.stderr
            );
        }
    }
    // Long output: the whole log stays and the error says where.
    let (run, _ctx) = build_recipe(
        root.path(),
        "FROM busybox:test\nRUN seq 1 500; false\n",
        &[],
        &[],
        false,
    );
    let log = run
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("full output: "))
        .unwrap_or_else(|| panic!("no log named in\n{}", run.stderr));
    assert_eq!(fs::read_to_string(log).unwrap().lines().count(), 500);
    let verify = kiln(&["--root", &r, "verify"], root.path(), &[]);
    assert_eq!(verify.status, 0, "{}", verify.stderr);
    // Nothing is left in the work areas.
    let tmp = root.path().join("tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "work areas left behind: {left:?}");
}

#[test]
fn a_hundred_and_fifty_run_steps_build_and_mount() {
    let root = busybox_store("auto");
    let mut recipe = String::from("FROM busybox:test\n");
    for i in 0..150 {
        recipe.push_str(&format!("RUN echo {i} > /f{i}\n"));
    }
    recipe.push_str("RUN cat /f0 /f75 /f149 > /sum\n");
    let out = tempfile::tempdir().unwrap();
    build_recipe(
        root.path(),
        &recipe,
        &["-o", &format!("type=local,dest={}", out.path().display())],
        &[],
        true,
    );
    assert_eq!(
        fs::read_to_string(out.path().join("sum")).unwrap(),
        "0\n75\n149\n"
    );
}

#[test]
fn podman_runs_what_kiln_built_and_umoci_unpacks_the_same_tree() {
    let (_image, root, out) = changes_image("auto");
    let archive = out.path().join("image.tar");
    if require_tool("umoci") {
        let bundle = umoci_unpack(root.path(), "1", out.path());
        assert_eq!(
            describe_tree(&out.path().join("local")),
            describe_tree(&bundle.join("rootfs"))
        );
    }
    if !require_tool("podman") {
        return;
    }
    let Some(containers) = common::containers::Podman::new() else {
        return;
    };
    let podman = |args: &[&str]| {
        let out = containers.command().args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "podman {args:?}: {text}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let loaded = podman(&["load", "-i", &archive.display().to_string()]);
    let image = loaded
        .lines()
        .find_map(|l| {
            l.strip_prefix("Loaded image: ")
                .or(l.strip_prefix("Loaded image(s): "))
        })
        .unwrap_or_else(|| panic!("podman load said: {loaded}"))
        .trim()
        .to_string();
    let output = podman(&[
        "run", "--rm", "--network", "none", &image, "sh", "-c",
        "cat /data/keep/a /data/redo/c2 /data/dir2file; ls /data/redo; test ! -e /data/del && echo ok",
    ]);
    assert_eq!(output, "changed\nc2\nnow-file\nc2\nok\n");
}

/// As an ordinary user (KILN_TEST_USER, which `.ci/run` creates with subordinate ids), kiln
/// builds in a user namespace of its own: RUN works, root-owned files stay uid 0 in the layer
/// and other ids exist too.
#[test]
fn rootless_builds_keep_image_owners() {
    let Ok(user) = std::env::var("KILN_TEST_USER") else {
        skip_or_fail("KILN_TEST_USER names no user to build as");
        return;
    };
    assert!(
        rustix_is_root(),
        "KILN_TEST_USER needs the tests to run as root"
    );
    let dir = tempfile::Builder::new()
        .prefix("kiln-rootless")
        .tempdir_in("/tmp")
        .unwrap();
    let base = dir.path();
    // A copy of kiln the user can reach, whatever the permissions of the checkout.
    fs::copy(env!("CARGO_BIN_EXE_kiln"), base.join("kiln")).unwrap();
    let ctx = base.join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::copy(busybox_binary(), ctx.join("busybox")).unwrap();
    fs::write(
        ctx.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
    )
    .unwrap();
    fs::write(ctx.join("group"), "root:x:0:\nbob:x:1000:\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY passwd group /etc/\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN mkdir -p /home/bob && chown 1000:1000 /home/bob && id -u > /whoami && echo x > /etc/motd && rm /etc/group\nUSER bob\nRUN touch /home/bob/by-bob\n",
    )
    .unwrap();
    let chown = Command::new("chown")
        .args(["-R", &format!("{user}:")])
        .arg(base)
        .status()
        .unwrap();
    assert!(chown.success());
    let out = Command::new("runuser")
        .args(["-u", &user, "--"])
        .arg(base.join("kiln"))
        .arg("--root")
        .arg(base.join("store"))
        .arg("build")
        .arg("-o")
        .arg(format!(
            "type=oci,dest={}",
            base.join("image.tar").display()
        ))
        .arg(&ctx)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rootless build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = read_image(&base.join("image.tar"));
    let owner = |layer: usize, path: &str| {
        let entry = image.layers[layer]
            .iter()
            .find(|e| e.path_str().trim_end_matches('/') == path)
            .unwrap_or_else(|| panic!("{path} not in layer {layer}"));
        (entry.uid, entry.gid)
    };
    assert_eq!(owner(0, "bin/busybox"), (0, 0));
    assert_eq!(owner(3, "home/bob"), (1000, 1000));
    assert_eq!(owner(3, "etc/motd"), (0, 0));
    assert!(paths(&image.layers[3]).contains(&"etc/.wh.group".to_string()));
    assert_eq!(owner(4, "home/bob/by-bob"), (1000, 1000));
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

/// A ustar member written by hand, so a test can make entries no well-behaved tool would.
fn tar_member(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, content: &[u8]) {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{:0width$o}\0", value, width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(&mut header[100..108], 0o644);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], content.len() as u64);
    octal(&mut header[136..148], 1_700_000_000);
    header[156] = kind;
    header[157..157 + link.len()].copy_from_slice(link.as_bytes());
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// An OCI archive of one image whose single layer holds `members`.
fn hostile_archive(members: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut layer = Vec::new();
    for (name, kind, link, content) in members {
        tar_member(&mut layer, name, *kind, link, content);
    }
    layer.extend_from_slice(&[0u8; 1024]);
    let layer_digest = kiln_oci::sha256_digest(&layer).to_string();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    );
    let config_digest = kiln_oci::sha256_digest(config.as_bytes()).to_string();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_digest = kiln_oci::sha256_digest(manifest.as_bytes()).to_string();
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"1"}}}}]}}"#,
        manifest.len()
    );
    let mut archive = Vec::new();
    tar_member(
        &mut archive,
        "oci-layout",
        b'0',
        "",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    tar_member(&mut archive, "index.json", b'0', "", index.as_bytes());
    for (digest, bytes) in [
        (&layer_digest, layer.as_slice()),
        (&config_digest, config.as_bytes()),
        (&manifest_digest, manifest.as_bytes()),
    ] {
        let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        tar_member(&mut archive, &name, b'0', "", bytes);
    }
    archive.extend_from_slice(&[0u8; 1024]);
    archive
}

#[test]
fn base_image_entries_that_leave_the_root_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let r = root_arg(root.path());
    let outside = tempfile::tempdir().unwrap();
    let planted = outside.path().join("planted");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            hostile_archive(&[("../../escape", b'0', "", b"X")]),
        ),
        (
            "symlink",
            hostile_archive(&[
                ("out", b'2', &outside.path().display().to_string(), b""),
                ("out/planted", b'0', "", b"X"),
            ]),
        ),
        (
            "hardlink",
            hostile_archive(&[("h", b'1', "../../../etc/passwd", b"")]),
        ),
    ];
    for (name, archive) in cases {
        let file = root.path().join(format!("{name}.tar"));
        fs::write(&file, archive).unwrap();
        let load = kiln(
            &[
                "--root",
                &r,
                "load",
                "-i",
                &file.display().to_string(),
                "-t",
                &format!("evil-{name}:1"),
            ],
            root.path(),
            &[],
        );
        assert_eq!(load.status, 0, "{name}: {}", load.stderr);
        let (run, _ctx) = build_recipe(
            root.path(),
            &format!("FROM evil-{name}:1\nRUN true\n"),
            &[],
            &[],
            false,
        );
        assert!(
            run.stderr.contains("base image layer entry"),
            "{name}: {}",
            run.stderr
        );
        assert!(!planted.exists(), "{name}: wrote outside the root");
    }
    let verify = kiln(&["--root", &r, "verify"], root.path(), &[]);
    assert_eq!(verify.status, 0, "{}", verify.stderr);
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A store on overlayfs cannot hold an overlay's upper dir: `auto` finds out at the first RUN,
/// says so, and the copy gives the image overlay gives elsewhere.
#[test]
fn auto_falls_back_to_a_copy_where_overlay_cannot_mount() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["l", "u", "w", "m"] {
        fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.path().join("l").display(),
        dir.path().join("u").display(),
        dir.path().join("w").display()
    );
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(dir.path().join("m"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "mounting an overlay for the test store (needs root)"
    );
    let mounted = Mounted(dir.path().join("m"));
    let on_overlay = mounted.0.join("store");
    let ctx = context(&[("Dockerfile", CHANGES)]);
    // The base, then the recipe, both on the store that sits on overlayfs.
    let reference = busybox_store("overlay");
    let base = tempfile::tempdir().unwrap();
    let archive = base.path().join("base.tar");
    let r = root_arg(reference.path());
    let save = kiln(
        &[
            "--root",
            &r,
            "save",
            "busybox:test",
            "-o",
            &archive.display().to_string(),
        ],
        base.path(),
        &[],
    );
    assert_eq!(save.status, 0, "{}", save.stderr);
    let o = root_arg(&on_overlay);
    let load = kiln(
        &["--root", &o, "load", "-i", &archive.display().to_string()],
        base.path(),
        &[],
    );
    assert_eq!(load.status, 0, "{}", load.stderr);
    let env = [("KILN_SNAPSHOTTER", "auto"), ("SOURCE_DATE_EPOCH", EPOCH)];
    let fallback = base.path().join("fallback.tar");
    let run = kiln(
        &[
            "--root",
            &o,
            "build",
            "-o",
            &format!("type=oci,dest={}", fallback.display()),
            ".",
        ],
        ctx.path(),
        &env,
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("overlay is not available here"),
        "{}",
        run.stderr
    );
    let (overlay, _r, _out) = changes_image("overlay");
    assert_eq!(
        read_image(&fallback).manifest_digest,
        overlay.manifest_digest
    );
}

#[test]
fn from_an_image_by_digest() {
    let root = busybox_store("auto");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(root.path().join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let recipe = format!("FROM busybox@{digest}\nRUN echo by-digest\n");
    let (run, _ctx) = build_recipe(root.path(), &recipe, &[], &[], true);
    assert!(run.stderr.contains("| by-digest"), "{}", run.stderr);
    // Offline (no test reaches the internet): a digest the store lacks is an error naming it.
    let unknown = format!("FROM busybox@sha256:{}\nRUN true\n", "0".repeat(64));
    let (run, _ctx) = build_recipe(root.path(), &unknown, &["--pull=never"], &[], false);
    assert!(run.stderr.contains("is not in the store"), "{}", run.stderr);
    assert!(run.stderr.contains("kiln pull"), "{}", run.stderr);
}

/// Builds `recipe` with a context holding `files` too; expects failure when `ok` is false.
fn build_with_files(
    root: &Path,
    recipe: &str,
    files: &[(&str, &str)],
    extra: &[&str],
    env: &[(&str, &str)],
    ok: bool,
) -> (Run, tempfile::TempDir) {
    let mut all = vec![("Dockerfile", recipe)];
    all.extend_from_slice(files);
    let ctx = context(&all);
    let root = root_arg(root);
    let mut args = vec!["--root", root.as_str(), "build"];
    args.extend_from_slice(extra);
    args.push(".");
    let run = kiln(&args, ctx.path(), env);
    assert_eq!(run.status == 0, ok, "build:\n{}", run.stderr);
    (run, ctx)
}

fn oci_out(dir: &Path, name: &str) -> String {
    format!("type=oci,dest={}", dir.join(name).display())
}

fn local_out(dir: &Path, name: &str) -> String {
    format!("type=local,dest={}", dir.join(name).display())
}

/// Every path of every layer of the image.
fn all_paths(image: &Image) -> Vec<String> {
    image.layers.iter().flat_map(|l| paths(l)).collect()
}

#[test]
fn cache_mounts_survive_between_builds_and_stay_out_of_layers() {
    let root = busybox_store("auto");
    for mode in ["auto", "copy"] {
        let out = tempfile::tempdir().unwrap();
        let env = [("KILN_SNAPSHOTTER", mode)];
        let first = format!(
            "FROM busybox:test\nRUN --mount=type=cache,id=c-{mode},target=/var/cache/thing echo first-{mode} > /var/cache/thing/seen && echo one > /one\n"
        );
        let a = oci_out(out.path(), "a.tar");
        build_recipe(root.path(), &first, &["-o", &a], &env, true);
        let second = format!(
            "FROM busybox:test\nRUN --mount=type=cache,id=c-{mode},target=/elsewhere,sharing=locked cat /elsewhere/seen > /copied\n"
        );
        let b = oci_out(out.path(), "b.tar");
        let l = local_out(out.path(), "local");
        build_recipe(root.path(), &second, &["-o", &b, "-o", &l], &env, true);
        assert_eq!(
            fs::read_to_string(out.path().join("local/copied")).unwrap(),
            format!("first-{mode}\n")
        );
        for archive in ["a.tar", "b.tar"] {
            let image = read_image(&out.path().join(archive));
            let last: Vec<String> = paths(image.layers.last().unwrap());
            assert!(
                !last
                    .iter()
                    .any(|p| p.starts_with("var") || p.starts_with("elsewhere")),
                "{mode} {archive}: {last:?}"
            );
            assert!(!all_paths(&image).iter().any(|p| p.ends_with("seen")));
        }
        assert!(!out.path().join("local/elsewhere").exists());
    }
    assert!(root.path().join("cache-mounts").is_dir());
    let r = root_arg(root.path());
    let prune = kiln(&["--root", &r, "prune", "--all"], root.path(), &[]);
    assert_eq!(prune.status, 0, "{}", prune.stderr);
    assert!(!root.path().join("cache-mounts").exists());
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn secrets_are_readable_and_reach_nothing_else() {
    let root = busybox_store("auto");
    let secrets = tempfile::tempdir().unwrap();
    let file_secret = "file-secret-5d1c8e77a0f34b29";
    let env_secret = "env-secret-91b2e04c7d6a3f58";
    fs::write(secrets.path().join("tok"), file_secret).unwrap();
    fs::write(secrets.path().join("envtok"), env_secret).unwrap();
    let file_sum = sha256_of(&secrets.path().join("tok"));
    let env_sum = sha256_of(&secrets.path().join("envtok"));
    let src = format!("id=tok,src={}", secrets.path().join("tok").display());
    let recipe_for = |mode: &str| {
        format!(
            "FROM busybox:test\n\
             RUN --mount=type=secret,id=tok test \"$(sha256sum < /run/secrets/tok | cut -d' ' -f1)\" = {file_sum} && echo file-secret-ok-{mode}\n\
             RUN --mount=type=secret,id=envtok,required=true,target=/etc/app/token test \"$(sha256sum < /etc/app/token | cut -d' ' -f1)\" = {env_sum} && ! sh -c 'echo x > /etc/app/token' 2>/dev/null && echo env-secret-ok\n\
             RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo absent-ok\n"
        )
    };
    for mode in ["auto", "copy"] {
        let out = tempfile::tempdir().unwrap();
        let recipe = recipe_for(mode);
        let o = oci_out(out.path(), "image.tar");
        let (run, _ctx) = build_recipe(
            root.path(),
            &recipe,
            &[
                "--secret",
                &src,
                "--secret",
                "id=envtok,env=KILN_TEST_TOKEN",
                "-o",
                &o,
            ],
            &[("KILN_TEST_TOKEN", env_secret), ("KILN_SNAPSHOTTER", mode)],
            true,
        );
        assert!(
            run.stderr.contains(&format!("file-secret-ok-{mode}")),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("env-secret-ok"), "{}", run.stderr);
        assert!(run.stderr.contains("absent-ok"), "{}", run.stderr);
        for secret in [file_secret, env_secret] {
            assert!(!run.stderr.contains(secret));
            assert!(!run.stdout.contains(secret));
            assert_eq!(find_bytes(root.path(), secret.as_bytes()), None);
            assert_eq!(find_bytes(out.path(), secret.as_bytes()), None);
        }
        let image = read_image(&out.path().join("image.tar"));
        let added: Vec<String> = image.layers[image.layers.len() - 3..]
            .iter()
            .flat_map(|l| paths(l))
            .collect();
        assert!(
            !added
                .iter()
                .any(|p| p.starts_with("run") || p.starts_with("etc/app")),
            "{added:?}"
        );
    }
    // A changed secret does not bust the cache: every step stays cached (had one run, the
    // checksum the recipe holds would no longer match and it would fail).
    fs::write(secrets.path().join("tok"), "another-value-of-the-secret").unwrap();
    let (run, _ctx) = build_recipe(
        root.path(),
        &recipe_for("auto"),
        &[
            "--progress=plain",
            "--secret",
            &src,
            "--secret",
            "id=envtok,env=KILN_TEST_TOKEN",
        ],
        &[("KILN_TEST_TOKEN", "another-env-value")],
        true,
    );
    assert_eq!(run.stderr.matches(" CACHED").count(), 3, "{}", run.stderr);
    assert!(!run.stderr.contains("running:"), "{}", run.stderr);
    // A required secret that was not given: an error naming it.
    let (run, _ctx) = build_recipe(
        root.path(),
        "FROM busybox:test\nRUN --mount=type=secret,id=missing,required=true true\n",
        &[],
        &[],
        false,
    );
    assert!(
        run.stderr.contains("secret missing is required"),
        "{}",
        run.stderr
    );
}

#[test]
fn tmpfs_mounts_are_empty_and_leave_nothing() {
    let root = busybox_store("auto");
    for mode in ["auto", "copy"] {
        let out = tempfile::tempdir().unwrap();
        let recipe = format!(
            "FROM busybox:test\nRUN --mount=type=tmpfs,target=/scratch,size=1m test -z \"$(ls -A /scratch)\" && echo {mode} > /scratch/x && grep -q ' /scratch tmpfs ' /proc/mounts && echo tmpfs-ok > /marker\n"
        );
        let o = oci_out(out.path(), "image.tar");
        build_recipe(
            root.path(),
            &recipe,
            &["-o", &o],
            &[("KILN_SNAPSHOTTER", mode)],
            true,
        );
        let image = read_image(&out.path().join("image.tar"));
        let last = paths(image.layers.last().unwrap());
        assert_eq!(last, ["marker"], "{mode}");
    }
}

#[test]
fn bind_mounts_from_the_context_and_from_stages() {
    let root = busybox_store("auto");
    for mode in ["auto", "copy"] {
        let out = tempfile::tempdir().unwrap();
        let recipe = "FROM scratch AS one\nCOPY data.txt /one.txt\n\
                      FROM busybox:test AS tools\nRUN echo tool > /tool.txt\n\
                      FROM busybox:test\n\
                      RUN --mount=type=bind,source=data.txt,target=/ctx/data.txt cat /ctx/data.txt > /seen-ctx && ! sh -c 'echo x > /ctx/data.txt' 2>/dev/null\n\
                      RUN --mount=type=bind,target=/c,rw echo changed > /c/data.txt && cat /c/data.txt > /seen-rw\n\
                      RUN --mount=type=bind,from=tools,source=/tool.txt,target=/t/tool.txt cat /t/tool.txt > /seen-tool\n\
                      RUN --mount=type=bind,from=one,target=/o cat /o/one.txt > /seen-one && ! touch /o/new 2>/dev/null\n";
        let o = oci_out(out.path(), "image.tar");
        let l = local_out(out.path(), "local");
        let (_run, ctx) = build_with_files(
            root.path(),
            recipe,
            &[("data.txt", "from-context\n")],
            &["-o", &o, "-o", &l],
            &[("KILN_SNAPSHOTTER", mode)],
            true,
        );
        let local = out.path().join("local");
        let read = |name: &str| fs::read_to_string(local.join(name)).unwrap();
        assert_eq!(read("seen-ctx"), "from-context\n");
        assert_eq!(read("seen-rw"), "changed\n");
        assert_eq!(read("seen-tool"), "tool\n");
        assert_eq!(read("seen-one"), "from-context\n");
        // rw writes went to a private copy.
        assert_eq!(
            fs::read_to_string(ctx.path().join("data.txt")).unwrap(),
            "from-context\n"
        );
        for gone in ["ctx", "c", "t", "o"] {
            assert!(!local.join(gone).exists(), "{mode}: /{gone}");
        }
        let image = read_image(&out.path().join("image.tar"));
        let added: Vec<String> = image.layers[image.layers.len() - 4..]
            .iter()
            .flat_map(|l| paths(l))
            .collect();
        let mut sorted = added.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["seen-ctx", "seen-one", "seen-rw", "seen-tool"],
            "{mode}"
        );
    }
    // A changed context file makes the bind step run again.
    let recipe = "FROM busybox:test\nRUN --mount=type=bind,source=data.txt,target=/d cat /d > /seen && echo ran-bind\n";
    let (first, _c) = build_with_files(root.path(), recipe, &[("data.txt", "a\n")], &[], &[], true);
    assert!(first.stderr.contains("| ran-bind"), "{}", first.stderr);
    let (same, _c) = build_with_files(root.path(), recipe, &[("data.txt", "a\n")], &[], &[], true);
    assert!(!same.stderr.contains("| ran-bind"), "{}", same.stderr);
    let (changed, _c) =
        build_with_files(root.path(), recipe, &[("data.txt", "b\n")], &[], &[], true);
    assert!(changed.stderr.contains("| ran-bind"), "{}", changed.stderr);
    // What .dockerignore leaves out is not seen through a context bind.
    let recipe = "FROM busybox:test\nRUN --mount=type=bind,target=/c test ! -e /c/hidden.txt && test -f /c/sub/kept.txt && cat /c/data.txt && echo ignored-ok\n";
    let (run, _c) = build_with_files(
        root.path(),
        recipe,
        &[
            ("data.txt", "visible\n"),
            ("hidden.txt", "nope\n"),
            ("sub/kept.txt", "k\n"),
            (".dockerignore", "hidden.txt\n"),
        ],
        &[],
        &[],
        true,
    );
    assert!(run.stderr.contains("| ignored-ok"), "{}", run.stderr);
    assert!(run.stderr.contains("| visible"), "{}", run.stderr);
}

#[test]
fn ssh_mounts_need_an_agent() {
    let root = busybox_store("auto");
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\nRUN --mount=type=ssh true\n",
    )]);
    let r = root_arg(root.path());
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(["--root", &r, "build", "."])
        .current_dir(ctx.path())
        .env_remove("SSH_AUTH_SOCK");
    let out = command.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("no ssh agent named \"default\" was given to the build; pass --ssh default"),
        "{stderr}"
    );
    // `--ssh default` with no agent in the environment is a usage error saying so.
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(["--root", &r, "build", "--ssh", "default", "."])
        .current_dir(ctx.path())
        .env_remove("SSH_AUTH_SOCK");
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SSH_AUTH_SOCK is not set"), "{stderr}");
}

/// `--target` builds what the target needs and nothing else: a failing stage it does not need
/// never runs, while one it needs (through COPY --from) does.
#[test]
fn target_pruning_skips_stages_the_target_does_not_need() {
    let root = busybox_store("auto");
    let recipe = "FROM busybox:test AS broken\nRUN echo broken-ran; exit 1\n\
                  FROM busybox:test AS helper\nRUN echo helper-ran > /h\n\
                  FROM busybox:test AS app\nCOPY --from=helper /h /h\nRUN cat /h\n";
    let (run, _ctx) = build_recipe(root.path(), recipe, &["--target", "app"], &[], true);
    assert!(!run.stderr.contains("| broken-ran"), "{}", run.stderr);
    assert!(run.stderr.contains("| helper-ran"), "{}", run.stderr);
    // Without --target the last stage is the target, and the broken one is still not needed.
    let (run, _ctx) = build_recipe(root.path(), recipe, &[], &[], true);
    assert!(!run.stderr.contains("broken-ran"), "{}", run.stderr);
    // Asked for, it runs and fails.
    let (run, _ctx) = build_recipe(root.path(), recipe, &["--target", "broken"], &[], false);
    assert!(run.stderr.contains("| broken-ran"), "{}", run.stderr);
}

/// `sharing=private` takes the cache alone when it can, and a fresh directory of its own when
/// someone else is using it; `locked` waits; `shared` runs beside other users.
#[test]
fn private_cache_mounts_never_share_with_a_user_that_holds_the_cache() {
    let root = busybox_store("auto");
    // A first build makes the cache directory and its lock file.
    let make = "FROM busybox:test\nRUN --mount=type=cache,id=pkgs,target=/c echo one > /c/one\n";
    build_recipe(root.path(), make, &[], &[], true);
    let caches = root.path().join("cache-mounts");
    let lock_file = fs::read_dir(&caches)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".lock"))
        .unwrap()
        .path();
    let dir = lock_file.with_extension("");
    assert!(dir.join("one").is_file());
    // Someone holds the cache: private gets an empty directory, and what it writes goes away.
    let holder = fs::File::open(&lock_file).unwrap();
    holder.lock_shared().unwrap();
    let private = "FROM busybox:test\nRUN --mount=type=cache,id=pkgs,target=/c,sharing=private ls /c | wc -l; echo two > /c/two\n";
    let (run, _ctx) = build_recipe(root.path(), private, &[], &[], true);
    assert!(
        run.stderr.contains("| 0"),
        "a private cache in use is fresh:\n{}",
        run.stderr
    );
    assert!(!dir.join("two").exists());
    // Shared runs beside the holder and sees the cache.
    let shared =
        "FROM busybox:test\nRUN --mount=type=cache,id=pkgs,target=/c,sharing=shared cat /c/one\n";
    let (run, _ctx) = build_recipe(root.path(), shared, &[], &[], true);
    assert!(run.stderr.contains("| one"), "{}", run.stderr);
    drop(holder);
    // Free again: private uses the cache itself.
    let private_free = "FROM busybox:test\nRUN --mount=type=cache,id=pkgs,target=/c,sharing=private cat /c/one # free\n";
    let (run, _ctx) = build_recipe(root.path(), private_free, &[], &[], true);
    assert!(run.stderr.contains("| one"), "{}", run.stderr);
}

#[test]
fn a_mount_without_target_is_at_the_working_directory() {
    // BuildKit mounts a bind, cache or tmpfs mount with no target at the working directory; public
    // recipes rely on it with `--mount=from=STAGE` to read a build stage's output in place.
    let root = busybox_store("auto");
    let recipe = "FROM busybox:test AS build\nWORKDIR /out\nRUN echo built > artifact\n\
                  FROM busybox:test\nWORKDIR /src\n\
                  RUN --mount=from=build,source=/out cat artifact > /seen && ls -A /src > /listing\n\
                  RUN --mount=type=tmpfs,target=scratch touch scratch/t && test -f /src/scratch/t\n\
                  RUN ls -A /src > /after\n";
    let (run, _ctx) = build_recipe(root.path(), recipe, &["-t", "mounted:1"], &[], true);
    let r = root_arg(root.path());
    let cat = |path: &str| {
        let out = kiln(
            &["--root", &r, "run", "mounted:1", "cat", path],
            root.path(),
            &[],
        );
        assert_eq!(out.status, 0, "{}\n{}", out.stderr, run.stderr);
        out.stdout
    };
    assert_eq!(cat("/seen"), "built\n");
    assert_eq!(cat("/listing"), "artifact\n");
    // The mounts left nothing behind in the working directory.
    assert_eq!(cat("/after"), "");
}

#[test]
fn run_has_home_and_only_the_listed_groups_as_runc_gives_buildkit() {
    let root = busybox_store("auto");
    let recipe = "FROM busybox:test\n\
        RUN mkdir -m 1777 /tmp && echo 'bench:x:1001:1001::/home/bench:/bin/sh' >> /etc/passwd && echo 'bench:x:1001:' >> /etc/group\n\
        USER bench\n\
        RUN id > /tmp/id-bench && echo \"$HOME\" > /tmp/home-bench\n\
        USER bob\n\
        RUN id -G > /tmp/groups-bob && echo \"$HOME\" > /tmp/home-bob\n\
        USER bob:bob\n\
        RUN id -G > /tmp/groups-bob-explicit\n\
        USER 4242\n\
        RUN echo \"$HOME\" > /tmp/home-4242\n\
        USER root\n\
        RUN [\"sh\", \"-c\", \"echo $HOME > /tmp/home-root-exec\"]\n\
        ENV HOME=/elsewhere\n\
        RUN echo \"$HOME\" > /tmp/home-env\n";
    let (run, _ctx) = build_recipe(root.path(), recipe, &["-t", "homes:1"], &[], true);
    let r = root_arg(root.path());
    let cat = |path: &str| {
        let out = kiln(
            &["--root", &r, "run", "homes:1", "cat", path],
            root.path(),
            &[],
        );
        assert_eq!(out.status, 0, "{}\n{}", out.stderr, run.stderr);
        out.stdout
    };
    // bench is in no group list: no supplementary groups, so `id` prints no groups= part.
    assert_eq!(cat("/tmp/id-bench"), "uid=1001(bench) gid=1001(bench)\n");
    assert_eq!(cat("/tmp/home-bench"), "/home/bench\n");
    // bob's primary group and wheel, which lists him by name.
    assert_eq!(cat("/tmp/groups-bob"), "1000 10\n");
    assert_eq!(cat("/tmp/home-bob"), "/home/bob\n");
    // An explicit group has no supplementary groups.
    assert_eq!(cat("/tmp/groups-bob-explicit"), "1000\n");
    assert_eq!(cat("/tmp/home-4242"), "/\n");
    assert_eq!(cat("/tmp/home-root-exec"), "/root\n");
    assert_eq!(cat("/tmp/home-env"), "/elsewhere\n");
    // kiln run gives HOME the same way.
    let home = kiln(
        &[
            "--root",
            &r,
            "run",
            "busybox:test",
            "sh",
            "-c",
            "echo $HOME; id -u",
        ],
        root.path(),
        &[],
    );
    assert_eq!(home.status, 0, "{}", home.stderr);
    assert_eq!(home.stdout, "/root\n0\n");
    let home = kiln(
        &[
            "--root",
            &r,
            "run",
            "--user",
            "bob",
            "busybox:test",
            "sh",
            "-c",
            "echo $HOME",
        ],
        root.path(),
        &[],
    );
    assert_eq!(home.status, 0, "{}", home.stderr);
    assert_eq!(home.stdout, "/home/bob\n");
    // -e KEY=VALUE wins over the image's ENV and HOME; -e KEY passes kiln's own value, and
    // is left out when kiln has none, as docker run -e reads them.
    let env = kiln(
        &[
            "--root",
            &r,
            "run",
            "-e",
            "HOME=/elsewhere",
            "-e",
            "PATH=/bin",
            "-e",
            "FROM_CALLER",
            "-e",
            "UNSET_IN_CALLER",
            "busybox:test",
            "sh",
            "-c",
            "echo \"$HOME $PATH $FROM_CALLER ${UNSET_IN_CALLER-unset}\"",
        ],
        root.path(),
        &[("FROM_CALLER", "passed")],
    );
    assert_eq!(env.status, 0, "{}", env.stderr);
    assert_eq!(env.stdout, "/elsewhere /bin passed unset\n");
    for (flag, value) in [("-e", "=x"), ("--network", "bridge")] {
        let bad = kiln(
            &["--root", &r, "run", flag, value, "busybox:test", "true"],
            root.path(),
            &[],
        );
        assert_eq!(bad.status, 2, "{flag} {value}: {}", bad.stderr);
        assert!(bad.stderr.contains(flag), "{}", bad.stderr);
    }
}

#[test]
fn a_cache_mount_from_a_stage_starts_with_its_directory() {
    let root = busybox_store("auto");
    let recipe = |seed: &str| {
        format!(
            "FROM busybox:test AS deps\nRUN mkdir -p /root/.cache/pkgs && echo {seed} > /root/.cache/pkgs/index\n\
             FROM busybox:test\n\
             RUN --mount=type=cache,from=deps,source=/root/.cache,target=/cache cat /cache/pkgs/index > /seen && echo local >> /cache/pkgs/index\n\
             RUN --mount=type=cache,from=deps,source=/root/.cache,target=/cache cat /cache/pkgs/index > /again\n"
        )
    };
    let (run, _ctx) = build_recipe(root.path(), &recipe("one"), &["-t", "seeded:1"], &[], true);
    let r = root_arg(root.path());
    let cat = |image: &str, path: &str| {
        let out = kiln(&["--root", &r, "run", image, "cat", path], root.path(), &[]);
        assert_eq!(out.status, 0, "{}\n{}", out.stderr, run.stderr);
        out.stdout
    };
    assert_eq!(cat("seeded:1", "/seen"), "one\n");
    // The cache is a cache: what one step wrote, the next one sees.
    assert_eq!(cat("seeded:1", "/again"), "one\nlocal\n");
    // The stage's own files were copied, not shared: the stage still has its content.
    let (_run, _ctx) = build_recipe(
        root.path(),
        "FROM busybox:test AS deps\nRUN mkdir -p /root/.cache/pkgs && echo one > /root/.cache/pkgs/index\nFROM deps\nRUN cat /root/.cache/pkgs/index > /stage\n",
        &["-t", "stage:1"],
        &[],
        true,
    );
    assert_eq!(cat("stage:1", "/stage"), "one\n");
    // Other content of the stage, another cache: it starts from the new content.
    let (_run, _ctx) = build_recipe(root.path(), &recipe("two"), &["-t", "seeded:2"], &[], true);
    assert_eq!(cat("seeded:2", "/seen"), "two\n");
    // A source that is not a directory is an error that says so.
    let (bad, _ctx) = build_recipe(
        root.path(),
        "FROM busybox:test AS deps\nRUN echo x > /file\nFROM busybox:test\nRUN --mount=type=cache,from=deps,source=/file,target=/c true\n",
        &[],
        &[],
        false,
    );
    assert!(bad.stderr.contains("is not a directory"), "{}", bad.stderr);
}

#[test]
fn workdir_makes_its_directory_owned_by_the_user_as_buildkit_does() {
    // The pattern of node, python and java images that drop root: USER, then WORKDIR in the
    // user's home, then a RUN that writes there (an npm-style install into $HOME).
    let root = busybox_store("auto");
    let recipe = "FROM busybox:test\n\
        RUN echo 'app:x:1001:1002::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1002:' >> /etc/group && mkdir -p /home/app && chown app /home/app\n\
        USER app\n\
        WORKDIR /home/app/src/deep\n\
        RUN touch x && mkdir -p \"$HOME/.npm\" && echo cached > \"$HOME/.npm/index\" && stat -c '%u:%g %a' /home/app/src /home/app/src/deep > owners\n\
        WORKDIR /home/app/src/deep\n\
        USER root\n\
        WORKDIR /opt/tool\n\
        WORKDIR /\n";
    let (run, _ctx) = build_recipe(
        root.path(),
        recipe,
        &["-t", "workdir:1"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
        true,
    );
    let r = root_arg(root.path());
    let cat = |path: &str| {
        let out = kiln(
            &["--root", &r, "run", "workdir:1", "cat", path],
            root.path(),
            &[],
        );
        assert_eq!(out.status, 0, "{}\n{}", out.stderr, run.stderr);
        out.stdout
    };
    // app's uid and its passwd entry's group, mode 0755.
    assert_eq!(
        cat("/home/app/src/deep/owners"),
        "1001:1002 755\n1001:1002 755\n"
    );
    assert_eq!(cat("/home/app/.npm/index"), "cached\n");
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("w.tar");
    let saved = kiln(
        &[
            "--root",
            &r,
            "save",
            "-o",
            &archive.to_string_lossy(),
            "workdir:1",
        ],
        root.path(),
        &[],
    );
    assert_eq!(saved.status, 0, "{}", saved.stderr);
    let image = read_image(&archive);
    // FROM's layers, the RUN, WORKDIR, the RUN, WORKDIR again (exists: an empty layer, as
    // BuildKit's exporter keeps it), WORKDIR /opt/tool (root's); `WORKDIR /` has no layer.
    let history: Vec<String> = image
        .config
        .history
        .iter()
        .map(|h| {
            let by = h.created_by.clone().unwrap_or_default();
            let short = if by.starts_with("RUN") {
                "RUN"
            } else {
                by.as_str()
            };
            format!("{short} {}", h.empty_layer)
        })
        .collect();
    assert_eq!(
        history[history.len() - 7..],
        [
            "USER app true",
            "WORKDIR /home/app/src/deep false",
            "RUN false",
            "WORKDIR /home/app/src/deep false",
            "USER root true",
            "WORKDIR /opt/tool false",
            "WORKDIR / true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()[..]
    );
    let layers = &image.layers;
    let count = layers.len();
    assert!(
        layers[count - 2].is_empty(),
        "{:?}",
        paths(&layers[count - 2])
    );
    let tool = &layers[count - 1];
    let opt = tool
        .iter()
        .find(|e| e.path == b"opt/tool/")
        .unwrap_or_else(|| panic!("{:?}", paths(tool)));
    assert_eq!(
        (opt.uid, opt.gid, opt.mode & 0o7777, opt.mtime),
        (0, 0, 0o755, 1_700_000_000)
    );
    // A rebuild is cached.
    let (again, _ctx) = build_recipe(
        root.path(),
        recipe,
        &["-t", "workdir:1"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
        true,
    );
    assert!(!again.stderr.contains("running"), "{}", again.stderr);
}

/// Issue 14: the overlay a RUN writes to is mounted `volatile`, so fsync inside the step (dpkg
/// syncs every file it unpacks) does not wait for the disk; the store syncs the snapshot once
/// when it commits it. The root's mount options say so.
#[test]
fn run_on_overlay_mounts_it_volatile() {
    let root = busybox_store("auto");
    let (run, _ctx) = build_recipe(
        root.path(),
        "FROM busybox:test\nRUN grep ' / / ' /proc/self/mountinfo && grep ' / / .* overlay .*volatile' /proc/self/mountinfo && sync /bin && echo volatile-root\n",
        &["--progress", "plain", "--snapshotter", "overlay"],
        &[],
        true,
    );
    assert!(run.stderr.contains("volatile-root"), "{}", run.stderr);
}
