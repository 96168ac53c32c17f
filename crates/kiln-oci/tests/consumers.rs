//! Real consumers of what kiln writes: skopeo (containers/image, as podman uses it) and umoci.
//! Each test prints "skipped: <tool> not installed" and passes when its tool is missing, except
//! under `KILN_REQUIRE_ALL=1` (as `.ci/run` sets), where a missing tool or daemon fails it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use kiln_oci::{
    read_docker_archive, read_oci_archive, write_docker_archive, write_oci_archive,
    write_oci_layout_dir, ReadOptions, WriteOptions,
};

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip_or_fail(&format!("{tool} not installed"));
    }
    found
}

/// The one way a test here gives up: "skipped: WHY", or a failure under `KILN_REQUIRE_ALL=1`.
fn skip_or_fail(why: &str) {
    if std::env::var("KILN_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("KILN_REQUIRE_ALL=1 and this test cannot run: {why} (scripts/test.sh installs and starts what the tests need)");
    }
    println!("skipped: {why}");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo(args: &[&str]) -> String {
    // No registry or policy lookups: everything here is local.
    run(Command::new("skopeo")
        .args([
            "--insecure-policy",
            "--override-os",
            "linux",
            "--override-arch",
            "amd64",
        ])
        .args(args))
}

fn write_archive(t: &TestImage, dir: &Path, name: &str, docker: bool) -> String {
    let mut out = Vec::new();
    if docker {
        write_docker_archive(&mut out, &t.image, &t.blobs, &WriteOptions::default()).unwrap();
    } else {
        write_oci_archive(&mut out, &t.image, &t.blobs, &WriteOptions::default()).unwrap();
    }
    write_file(dir, name, &out).to_string_lossy().into_owned()
}

#[test]
fn skopeo_inspects_our_oci_archive() {
    if !have("skopeo") {
        return;
    }
    let t = hello_image();
    let dir = tempfile::tempdir().unwrap();
    let path = write_archive(&t, dir.path(), "img.tar", false);

    let info: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", &format!("oci-archive:{path}")])).unwrap();
    assert_eq!(info["Digest"], t.image.manifest.digest.to_string());
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    assert_eq!(
        info["Layers"],
        serde_json::json!([t.manifest.layers[0].digest.to_string()])
    );
    // By ref name too, and the raw documents are our bytes.
    let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{path}:1.0")]);
    assert_eq!(raw.as_bytes(), t.manifest_bytes);
    let cfg = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        &format!("oci-archive:{path}:1.0"),
    ]);
    assert_eq!(cfg.as_bytes(), t.config_bytes);
}

#[test]
fn skopeo_inspects_our_docker_archive_and_layout_dir() {
    if !have("skopeo") {
        return;
    }
    let t = hello_image();
    let dir = tempfile::tempdir().unwrap();
    let path = write_archive(&t, dir.path(), "d.tar", true);
    let info: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", &format!("docker-archive:{path}")])).unwrap();
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["RepoTags"], serde_json::json!([]), "{info}");
    let cfg = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        &format!("docker-archive:{path}"),
    ]);
    assert_eq!(cfg.as_bytes(), t.config_bytes);
    let named = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        &format!("docker-archive:{path}:kiln-test/hello:1.0"),
    ]);
    assert_eq!(named.as_bytes(), t.config_bytes);

    // The OCI archive's manifest.json makes it a docker archive as well.
    let oci = write_archive(&t, dir.path(), "o.tar", false);
    let cfg = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        &format!("docker-archive:{oci}"),
    ]);
    assert_eq!(cfg.as_bytes(), t.config_bytes);

    let layout = dir.path().join("layout");
    write_oci_layout_dir(&layout, &t.image, &t.blobs).unwrap();
    let info: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("oci:{}:1.0", layout.display()),
    ]))
    .unwrap();
    assert_eq!(info["Digest"], t.image.manifest.digest.to_string());
}

#[test]
fn we_read_what_skopeo_writes() {
    if !have("skopeo") {
        return;
    }
    let t = image_with(&[HELLO, b"second\n"], &["kiln-test/hello:1.0"]);
    let dir = tempfile::tempdir().unwrap();
    let ours = write_archive(&t, dir.path(), "ours.tar", false);

    // skopeo's docker-archive writer stores layers uncompressed: our reader checks them
    // against the diff IDs.
    let theirs = dir.path().join("theirs-docker.tar");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci-archive:{ours}"),
        &format!("docker-archive:{}:kiln-test/hello:1.0", theirs.display()),
    ]);
    let img = read_docker_archive(&theirs, &ReadOptions::default()).unwrap();
    assert_eq!(img.config.rootfs, t.config.rootfs);
    // skopeo writes RepoTags in the full form.
    assert_eq!(img.names, vec!["docker.io/kiln-test/hello:1.0".to_string()]);
    img.verify_layers().unwrap();

    let theirs = dir.path().join("theirs-oci.tar");
    skopeo(&[
        "copy",
        "-q",
        &format!(
            "docker-archive:{}",
            write_archive(&t, dir.path(), "d.tar", true)
        ),
        &format!("oci-archive:{}:v9", theirs.display()),
    ]);
    let opts = ReadOptions {
        name: Some("v9".into()),
        ..ReadOptions::default()
    };
    let img = read_oci_archive(&theirs, &opts).unwrap();
    assert_eq!(img.config.rootfs, t.config.rootfs);
    assert_eq!(img.config.config, t.config.config);
    img.verify_layers().unwrap();
}

#[test]
fn umoci_unpacks_our_layout() {
    if !have("umoci") {
        return;
    }
    let t = image_with(&[HELLO, b"second layer wins\n"], &["kiln-test/hello:1.0"]);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_oci_layout_dir(&layout, &t.image, &t.blobs).unwrap();
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1.0", layout.display()))
        .arg(&bundle));
    let got = std::fs::read(bundle.join("rootfs/etc/hello.txt")).unwrap();
    assert_eq!(got, b"second layer wins\n");
    // umoci converts our config into a runtime config.
    let runtime: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["args"], serde_json::json!(["/bin/sh"]));

    // umoci's own view of the layout.
    let stat = run(Command::new("umoci")
        .args(["stat", "--json", "--image"])
        .arg(format!("{}:1.0", layout.display())));
    assert!(stat.contains("COPY hello.txt /etc/"), "{stat}");
}

/// `docker load` of both formats, then the layer content read back through a created
/// container, against the daemon `DOCKER_HOST` names (scripts/test.sh starts one).
#[test]
fn docker_loads_our_archives() {
    let daemon = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    let Some(out) = daemon.ok().filter(|o| o.status.success()) else {
        skip_or_fail("no docker daemon answers (DOCKER_HOST)");
        return;
    };
    println!(
        "docker daemon {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let dir = tempfile::tempdir().unwrap();
    for (docker_format, tag) in [(true, "docker-format"), (false, "oci-format")] {
        let name = format!("kiln-test/load:{tag}");
        let t = image_with(&[HELLO, tag.as_bytes()], &[&name]);
        let path = write_archive(&t, dir.path(), &format!("{tag}.tar"), docker_format);
        let loaded = run(Command::new("docker").args(["load", "-i", &path]));
        assert!(
            loaded.contains(&format!("Loaded image: {name}")),
            "{loaded}"
        );
        // Docker's image ID is the config digest.
        let id =
            run(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", &name]));
        assert_eq!(id.trim(), t.manifest.config.digest.to_string());
        let container = run(Command::new("docker").args(["create", &name]))
            .trim()
            .to_owned();
        let copied =
            run(Command::new("docker").args(["cp", &format!("{container}:/etc/hello.txt"), "-"]));
        run(Command::new("docker").args(["rm", &container]));
        run(Command::new("docker").args(["rmi", &name]));
        assert!(copied.contains(tag), "{copied:?}");
    }
}

/// `podman load` of both formats into a throwaway store, then the layer content read back
/// through a created container.
#[test]
fn podman_loads_our_archives() {
    if !have("podman") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args);
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = podman(&["info"]);
    if !ok {
        skip_or_fail(&format!("podman cannot run here: {err}"));
        return;
    }
    for (docker_format, tag) in [(true, "docker-format"), (false, "oci-format")] {
        let name = format!("kiln-test/load:{tag}");
        let t = image_with(&[HELLO, tag.as_bytes()], &[&name]);
        let path = write_archive(&t, dir.path(), &format!("{tag}.tar"), docker_format);
        let (ok, out, err) = podman(&["load", "-q", "-i", &path]);
        assert!(ok, "podman load {tag}: {out}{err}");
        let full = format!("docker.io/{name}");
        let (ok, id, err) = podman(&["image", "inspect", "--format", "{{.Id}}", &full]);
        assert!(ok, "{err}");
        assert_eq!(
            format!("sha256:{}", id.trim()),
            t.manifest.config.digest.to_string()
        );
        let (ok, container, err) = podman(&["create", &full]);
        assert!(ok, "{err}");
        let container = container.trim().to_owned();
        let copy = dir.path().join(format!("{tag}.txt"));
        let (ok, _, err) = podman(&[
            "cp",
            &format!("{container}:/etc/hello.txt"),
            &copy.to_string_lossy(),
        ]);
        assert!(ok, "{err}");
        podman(&["rm", &container]);
        assert_eq!(std::fs::read(&copy).unwrap(), tag.as_bytes());
    }
}
