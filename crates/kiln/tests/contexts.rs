//! Base images from OCI image layout directories: `FROM oci:DIR[:REF]` and
//! `--build-context NAME=oci-layout://DIR[:TAG]` / `docker-image://REF`.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use kiln_oci::{read_oci_archive, ReadOptions};
use std::fs;
use std::path::Path;
use std::process::Command;

/// The layer digests of the image in an OCI archive.
fn layer_digests(archive: &Path) -> Vec<String> {
    read_oci_archive(archive, &ReadOptions::default())
        .unwrap()
        .layers()
        .iter()
        .map(|l| l.digest.to_string())
        .collect()
}

/// Builds `base.Dockerfile` into `base.tar` (an OCI archive, tagged layout-base:v1) and
/// extracts it into the layout directory `layout/`.
fn base_layout(ctx: &Path) -> Vec<String> {
    let store = tempfile::tempdir().unwrap();
    build(
        ctx,
        store.path(),
        &[
            "-f",
            "base.Dockerfile",
            "-t",
            "layout-base:v1",
            "-o",
            "type=oci,dest=base.tar",
        ],
        &[],
    );
    fs::create_dir_all(ctx.join("layout")).unwrap();
    let tar = Command::new("tar")
        .args(["-xf", "base.tar", "-C", "layout"])
        .current_dir(ctx)
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let layers = layer_digests(&ctx.join("base.tar"));
    assert_eq!(layers.len(), 2);
    layers
}

fn files() -> tempfile::TempDir {
    context(&[
        (
            "base.Dockerfile",
            "FROM scratch\nENV FROM_LAYOUT=1\nCOPY a.txt /a.txt\nCOPY a2.txt /a2.txt\n",
        ),
        ("a.txt", "A"),
        ("a2.txt", "A2"),
        ("b.txt", "B"),
    ])
}

fn assert_on_base(archive: &Path, base: &[String], layers: usize) {
    let got = layer_digests(archive);
    assert_eq!(got.len(), layers, "{got:?}");
    assert_eq!(&got[..base.len()], base, "the base's layers come first");
}

#[test]
fn from_an_oci_layout_directory() {
    let ctx = files();
    let base = base_layout(ctx.path());
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM oci:layout:v1\nCOPY b.txt /b-$FROM_LAYOUT\n",
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        fresh.path(),
        &[
            "-o",
            "type=oci,dest=child.tar",
            "-o",
            "type=local,dest=child",
        ],
        &[],
    );
    assert_on_base(&ctx.path().join("child.tar"), &base, 3);
    assert_eq!(
        fs::read_to_string(ctx.path().join("child/a2.txt")).unwrap(),
        "A2"
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("child/b-1")).unwrap(),
        "B",
        "the layout image's ENV reached expansion"
    );

    // No ref: the only image of the layout.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM oci:layout\nCOPY b.txt /b\n",
    )
    .unwrap();
    build(
        ctx.path(),
        fresh.path(),
        &["-o", "type=oci,dest=no-ref.tar"],
        &[],
    );
    assert_on_base(&ctx.path().join("no-ref.tar"), &base, 3);

    // An absent ref is named in the error.
    fs::write(ctx.path().join("Dockerfile"), "FROM oci:layout:v9\n").unwrap();
    let r = fresh.path().to_string_lossy().into_owned();
    let missing = kiln(&["--root", &r, "build", "."], ctx.path(), &[]);
    assert_eq!(missing.status, 1, "{}", missing.stderr);
    assert!(missing.stderr.contains("\"v9\""), "{}", missing.stderr);
}

#[test]
fn from_a_layout_skopeo_wrote() {
    if !require_tool("skopeo") {
        return;
    }
    let ctx = files();
    let base = base_layout(ctx.path());
    let skopeo = |args: &[&str]| {
        let out = Command::new("skopeo")
            .args(args)
            .current_dir(ctx.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    skopeo(&["copy", "oci-archive:base.tar", "oci:skopeo-layout:v2"]);
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM oci:skopeo-layout:v2\nCOPY b.txt /b\n",
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        fresh.path(),
        &["-o", "type=oci,dest=child.tar"],
        &[],
    );
    assert_on_base(&ctx.path().join("child.tar"), &base, 3);

    // Two images and no ref: refused, listing the refs.
    skopeo(&["copy", "oci-archive:child.tar", "oci:skopeo-layout:other"]);
    fs::write(ctx.path().join("Dockerfile"), "FROM oci:skopeo-layout\n").unwrap();
    let r = fresh.path().to_string_lossy().into_owned();
    let ambiguous = kiln(&["--root", &r, "build", "."], ctx.path(), &[]);
    assert_eq!(ambiguous.status, 1, "{}", ambiguous.stderr);
    assert!(
        ambiguous.stderr.contains("v2") && ambiguous.stderr.contains("other"),
        "{}",
        ambiguous.stderr
    );

    // --build-context without a tag takes `latest` when the layout has it, as buildx does.
    skopeo(&["copy", "oci-archive:child.tar", "oci:skopeo-layout:latest"]);
    fs::write(ctx.path().join("Dockerfile"), "FROM b\nCOPY a.txt /again\n").unwrap();
    build(
        ctx.path(),
        fresh.path(),
        &[
            "--build-context",
            "b=oci-layout://skopeo-layout",
            "-o",
            "type=oci,dest=from-latest.tar",
        ],
        &[],
    );
    assert_on_base(&ctx.path().join("from-latest.tar"), &base, 4);
}

#[test]
fn build_context_oci_layout_overrides_a_stage() {
    let ctx = files();
    let base = base_layout(ctx.path());
    // The stage `base` would need an image the store does not have: the context replaces it.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM not-in-the-store:1 AS base\nRUN false\n\
         FROM base\nCOPY b.txt /b-$FROM_LAYOUT\nCOPY --from=base /a.txt /copied.txt\n",
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        fresh.path(),
        &[
            // Offline: the stage the context replaces names an image no registry here has.
            "--pull=never",
            "--build-context",
            "base=oci-layout://layout:v1",
            "-o",
            "type=oci,dest=child.tar",
            "-o",
            "type=local,dest=child",
        ],
        &[],
    );
    assert_on_base(&ctx.path().join("child.tar"), &base, 4);
    // No tag: the layout's only image.
    build(
        ctx.path(),
        fresh.path(),
        &[
            "--build-context",
            "base=oci-layout://layout",
            "-o",
            "type=oci,dest=untagged.tar",
        ],
        &[],
    );
    assert_on_base(&ctx.path().join("untagged.tar"), &base, 4);
    assert_eq!(
        fs::read_to_string(ctx.path().join("child/b-1")).unwrap(),
        "B"
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("child/copied.txt")).unwrap(),
        "A"
    );

    // docker-image:// names an image of the store.
    build(
        ctx.path(),
        fresh.path(),
        &["-f", "base.Dockerfile", "-t", "stored-base:3"],
        &[],
    );
    build(
        ctx.path(),
        fresh.path(),
        &[
            "--build-context",
            "base=docker-image://stored-base:3",
            "-o",
            "type=oci,dest=from-store.tar",
        ],
        &[],
    );
    assert_on_base(&ctx.path().join("from-store.tar"), &base, 4);

    // A value that is neither a directory nor a known kind is a usage error that says so.
    let r = fresh.path().to_string_lossy().into_owned();
    let missing = kiln(
        &[
            "--root",
            &r,
            "build",
            "--build-context",
            "base=./nowhere",
            ".",
        ],
        ctx.path(),
        &[],
    );
    assert_eq!(missing.status, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("is not a directory"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_layout_blob_that_does_not_match_its_digest_is_refused() {
    let ctx = files();
    let base = base_layout(ctx.path());
    // Same size, other bytes: only the digest can tell.
    let blob = ctx
        .path()
        .join("layout/blobs/sha256")
        .join(base[1].trim_start_matches("sha256:"));
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM oci:layout:v1\nCOPY b.txt /b\n",
    )
    .unwrap();
    for args in [
        vec!["build", "-t", "bad:1", "."],
        vec![
            "build",
            "--build-context",
            "x=oci-layout://layout:v1",
            "-f",
            "x.Dockerfile",
            "-t",
            "bad:1",
            ".",
        ],
    ] {
        fs::write(ctx.path().join("x.Dockerfile"), "FROM x\n").unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let r = fresh.path().to_string_lossy().into_owned();
        let mut all = vec!["--root", r.as_str()];
        all.extend(args);
        let refused = kiln(&all, ctx.path(), &[]);
        assert_eq!(refused.status, 1, "{}", refused.stderr);
        assert!(
            refused.stderr.contains(&base[1]) && refused.stderr.contains("digest"),
            "{}",
            refused.stderr
        );
        let images = kiln(&["--root", &r, "images"], ctx.path(), &[]);
        assert!(!images.stdout.contains("bad"), "{}", images.stdout);
    }

    // A config blob that is not its digest is refused too.
    let manifest = read_oci_archive(ctx.path().join("base.tar"), &ReadOptions::default())
        .unwrap()
        .manifest;
    let config = ctx
        .path()
        .join("layout")
        .join(manifest.config.digest.blob_path());
    let mut bytes = fs::read(&config).unwrap();
    bytes[0] = b' ';
    fs::write(&config, bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let r = fresh.path().to_string_lossy().into_owned();
    let refused = kiln(&["--root", &r, "build", "."], ctx.path(), &[]);
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(manifest.config.digest.as_str()),
        "{}",
        refused.stderr
    );
}

/// `--build-context NAME=DIR`: a local directory, with its own `.dockerignore`, stands for an
/// image in `FROM NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` (as buildx gives it), and
/// what it holds is in the keys of the steps that read it.
#[test]
fn a_local_directory_as_a_named_context() {
    let root = busybox_store("auto");
    let r = root.path().to_string_lossy().into_owned();
    let extra = tempfile::tempdir().unwrap();
    fs::create_dir_all(extra.path().join("conf")).unwrap();
    fs::write(extra.path().join("conf/app.ini"), "one\n").unwrap();
    fs::write(extra.path().join("secret.key"), "never\n").unwrap();
    fs::write(extra.path().join(".dockerignore"), "*.key\n").unwrap();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test AS app\n\
         COPY --from=extra /conf /etc/app\n\
         RUN --mount=from=extra,target=/x cat /x/conf/app.ini > /mounted && ls -A /x > /listed\n\
         FROM extra AS plain\n\
         FROM busybox:test\n\
         COPY --from=plain /conf/app.ini /plain.ini\n",
    )]);
    let flag = format!("extra={}", extra.path().display());
    let out = ctx.path().join("out.tar");
    let dest = format!("type=oci,dest={}", out.display());
    let args = [
        "--root",
        &r,
        "build",
        "--build-context",
        &flag,
        "--target",
        "app",
        "-t",
        "ctx:1",
        ".",
    ];
    let first = kiln(&args, ctx.path(), &[]);
    assert_eq!(first.status, 0, "{}", first.stderr);
    let cat = |path: &str| {
        let run = kiln(
            &["--root", &r, "run", "ctx:1", "cat", path],
            ctx.path(),
            &[],
        );
        assert_eq!(run.status, 0, "{}", run.stderr);
        run.stdout
    };
    assert_eq!(cat("/etc/app/app.ini"), "one\n");
    assert_eq!(cat("/mounted"), "one\n");
    // The directory's own .dockerignore applies (it is itself in the context, as in BuildKit).
    assert_eq!(cat("/listed"), ".dockerignore\nconf\n");
    // FROM NAME: the directory is the stage's filesystem.
    let plain = kiln(
        &[
            "--root",
            &r,
            "build",
            "--build-context",
            &flag,
            "-o",
            &dest,
            ".",
        ],
        ctx.path(),
        &[],
    );
    assert_eq!(plain.status, 0, "{}", plain.stderr);
    let image = read_image(&out);
    let last = image.layers.last().unwrap();
    assert_eq!(paths(last), ["plain.ini"]);
    // Unchanged: every step cached. Changed content: the steps that read it run again.
    let again = kiln(&args, ctx.path(), &[]);
    assert_eq!(again.status, 0, "{}", again.stderr);
    assert!(!again.stderr.contains("running"), "{}", again.stderr);
    fs::write(extra.path().join("conf/app.ini"), "two\n").unwrap();
    let changed = kiln(&args, ctx.path(), &[]);
    assert_eq!(changed.status, 0, "{}", changed.stderr);
    assert!(changed.stderr.contains("running"), "{}", changed.stderr);
    assert_eq!(cat("/etc/app/app.ini"), "two\n");
}
