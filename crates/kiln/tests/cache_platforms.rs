//! The build cache of a multi-platform build travels whole: `--cache-to` carries the records
//! and cache mounts of every platform, and `--cache-from` reads them back for every platform
//! (a local cache directory, and the inline caches of a pushed multi-platform image).
//!
//! Needs (scripts/test.sh sets them up as root): qemu-aarch64 registered in binfmt_misc with
//! the F flag, Debian's arm64 architecture added, busybox-static, docker-registry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::arm64::{arm64_busybox, emulator_registered, multi_busybox_at};
use common::registry::{RegistryAuth, TestRegistry};
use common::*;

use std::fs;
use std::path::Path;

const PLATFORMS: &str = "linux/amd64,linux/arm64";

/// A build-platform stage shared by both platforms, and a final stage per platform whose RUN
/// (arm64's through qemu) appends to a cache mount of its own platform.
const APP: &str = "FROM --platform=$BUILDPLATFORM busybox:multi AS tools\n\
RUN echo \"made on $(uname -m)\" > /made\n\
\n\
FROM busybox:multi\n\
ARG TARGETARCH\n\
COPY --from=tools /made /made\n\
RUN --mount=type=cache,id=notes-$TARGETARCH,target=/notes echo \"$TARGETARCH on $(uname -m)\" >> /notes/log && cp /notes/log /log\n";

fn events(log: &str, kind: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .collect()
}

/// The image manifests (not attestations) of the multi-platform image in an OCI archive, as
/// (platform, digest).
fn platform_images(archive: &Path) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -xf {}", archive.display());
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let mut index = read(&dir.path().join("index.json"));
    // The layout's index names the image index (as buildx writes it), or is it.
    let first = index["manifests"][0].clone();
    if first["mediaType"] == "application/vnd.oci.image.index.v1+json" {
        let digest = first["digest"].as_str().unwrap();
        index = read(
            &dir.path()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        );
    }
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["platform"]["os"] != "unknown")
        .map(|m| {
            let platform = &m["platform"];
            let name = format!("{}/{}", platform["os"], platform["architecture"]);
            (name, m["digest"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn a_two_platform_cache_exported_locally_makes_an_empty_store_fully_cached_for_both() {
    if !emulator_registered("qemu-aarch64") {
        skip_or_fail("qemu-aarch64 is not registered in binfmt_misc with the F flag (apt-get install qemu-user-static; grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(arm64) = arm64_busybox(work.path()) else {
        return;
    };
    let ctx = context(&[("Dockerfile", APP)]);
    let out = tempfile::tempdir().unwrap();
    let cache = out.path().join("cache");
    let env = [("SOURCE_DATE_EPOCH", EPOCH)];

    let first_store = tempfile::tempdir().unwrap();
    multi_busybox_at(first_store.path(), &arm64);
    let first_archive = out.path().join("first.tar");
    let first = build(
        ctx.path(),
        first_store.path(),
        &[
            "--platform",
            PLATFORMS,
            "--progress",
            "json",
            "--cache-to",
            &format!(
                "type=local,dest={},mode=max,cache-mounts=true",
                cache.display()
            ),
            "-o",
            &format!("type=oci,dest={}", first_archive.display()),
        ],
        &env,
    );
    assert_eq!(
        events(&first.stderr, "running").len(),
        5,
        "{}",
        first.stderr
    );

    // A store that has the base image and nothing of this recipe: every step of both
    // platforms comes from the cache.
    let fresh = tempfile::tempdir().unwrap();
    multi_busybox_at(fresh.path(), &arm64);
    let again_archive = out.path().join("again.tar");
    let again = build(
        ctx.path(),
        fresh.path(),
        &[
            "--platform",
            PLATFORMS,
            "--progress",
            "json",
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
            "-o",
            &format!("type=oci,dest={}", again_archive.display()),
        ],
        &env,
    );
    assert!(
        events(&again.stderr, "running").is_empty(),
        "steps ran again:\n{}",
        again.stderr
    );
    assert_eq!(events(&again.stderr, "cached").len(), 5, "{}", again.stderr);
    let images = platform_images(&first_archive);
    assert_eq!(images.len(), 2, "{images:?}");
    assert_eq!(platform_images(&again_archive), images);

    // Each platform's cache mount came along: a step that reads it sees the first store's line.
    let reader = context(&[(
        "Dockerfile",
        "FROM busybox:multi\nARG TARGETARCH\nRUN --mount=type=cache,id=notes-$TARGETARCH,target=/notes cp /notes/log /seen\n",
    )]);
    let seen = out.path().join("seen");
    build(
        reader.path(),
        fresh.path(),
        &[
            "--platform",
            PLATFORMS,
            "-o",
            &format!("type=local,dest={}", seen.display()),
        ],
        &env,
    );
    let read = |platform: &str| fs::read_to_string(seen.join(platform).join("seen")).unwrap();
    assert_eq!(read("linux_amd64"), "amd64 on x86_64\n");
    assert_eq!(read("linux_arm64"), "arm64 on aarch64\n");
}

#[test]
fn the_inline_caches_of_a_pushed_multi_platform_image_serve_every_platform() {
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let config = tempfile::tempdir().unwrap();
    // No RUN: no emulator needed. Each platform's steps have keys of their own.
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nARG TARGETARCH\nCOPY note-$TARGETARCH /note\nCOPY shared /shared\n",
        ),
        ("note-amd64", "for amd64\n"),
        ("note-arm64", "for arm64\n"),
        ("shared", "for both\n"),
    ]);
    let name = format!("{}/app/multi-inline:1", registry.host());
    let env = [
        ("DOCKER_CONFIG", config.path().to_str().unwrap()),
        ("SOURCE_DATE_EPOCH", EPOCH),
    ];
    let first_store = tempfile::tempdir().unwrap();
    let first = build(
        ctx.path(),
        first_store.path(),
        &[
            "--platform",
            PLATFORMS,
            "--progress",
            "json",
            "--cache-to",
            "type=inline",
            "-t",
            &name,
            "--push",
        ],
        &env,
    );
    assert_eq!(
        events(&first.stderr, "running").len(),
        4,
        "{}",
        first.stderr
    );

    let fresh = tempfile::tempdir().unwrap();
    let again = build(
        ctx.path(),
        fresh.path(),
        &[
            "--platform",
            PLATFORMS,
            "--progress",
            "json",
            "--cache-from",
            &format!("type=registry,ref={name}"),
        ],
        &env,
    );
    assert!(
        events(&again.stderr, "running").is_empty(),
        "steps ran again:\n{}",
        again.stderr
    );
    assert_eq!(events(&again.stderr, "cached").len(), 4, "{}", again.stderr);
}
