//! Lazy layers: a step's blob is made only when something ships it, and then it is the blob an
//! eager build makes (a kill while one is made: see interrupt.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::path::Path;

/// Incompressible but reproducible bytes (the same in every store), so a layer holding them
/// has one digest wherever it is made and its blob stands out by size.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

const BIG: usize = 6 << 20;

/// A build stage holding BIG bytes that never ship, and a final stage that copies a small file.
fn two_stage_context() -> tempfile::TempDir {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test AS build\nCOPY big.bin /out/big.bin\nRUN echo built > /out/small && chmod 600 /out/big.bin\n\nFROM busybox:test\nCOPY --from=build /out/small /small\n",
    )]);
    std::fs::write(ctx.path().join("big.bin"), noise(BIG)).unwrap();
    ctx
}

/// Sizes of the store's blobs.
fn blob_sizes(root: &Path) -> Vec<u64> {
    std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .collect()
}

fn layer_digests(archive: &Path) -> Vec<String> {
    let image = kiln_oci::read_oci_archive(archive, &kiln_oci::ReadOptions::default()).unwrap();
    image
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.to_string())
        .collect()
}

fn verify_clean(root: &Path, cwd: &Path) {
    let r = root.to_string_lossy().into_owned();
    let verify = kiln(&["--root", &r, "verify"], cwd, &[]);
    assert_eq!(verify.status, 0, "{}{}", verify.stdout, verify.stderr);
}

#[test]
fn a_stage_that_never_ships_makes_no_blob_and_its_later_blob_is_the_eager_one() {
    let env = [("SOURCE_DATE_EPOCH", EPOCH)];
    let ctx = two_stage_context();
    let lazy = busybox_store("auto");
    build(ctx.path(), lazy.path(), &["-t", "app:1"], &env);
    let big_blobs: Vec<u64> = blob_sizes(lazy.path())
        .into_iter()
        .filter(|&size| size >= BIG as u64)
        .collect();
    assert!(
        big_blobs.is_empty(),
        "the build stage never ships, yet blobs of {big_blobs:?} bytes were made"
    );
    verify_clean(lazy.path(), ctx.path());

    // Now the build stage ships: its steps are cache hits, their blobs made from the snapshots
    // the first build committed (and the final stage read through COPY --from meanwhile).
    let shipped = build(
        ctx.path(),
        lazy.path(),
        &["--target", "build", "-o", "type=oci,dest=late.tar"],
        &env,
    );
    assert!(shipped.stderr.contains("#1 CACHED"), "{}", shipped.stderr);
    assert!(shipped.stderr.contains("#2 CACHED"), "{}", shipped.stderr);
    assert!(
        blob_sizes(lazy.path()).iter().any(|&s| s >= BIG as u64),
        "the shipped stage's blob is in the store"
    );
    verify_clean(lazy.path(), ctx.path());

    // The same stage built straight away in a store of its own: the same layers, byte for byte.
    let eager = busybox_store("auto");
    build(
        ctx.path(),
        eager.path(),
        &["--target", "build", "-o", "type=oci,dest=early.tar"],
        &env,
    );
    let late = layer_digests(&ctx.path().join("late.tar"));
    let early = layer_digests(&ctx.path().join("early.tar"));
    assert_eq!(
        late.len(),
        5,
        "busybox's three layers and the two steps: {late:?}"
    );
    assert_eq!(late, early, "a blob made later is the eager one");
    let late_bytes = std::fs::read(ctx.path().join("late.tar")).unwrap();
    let early_bytes = std::fs::read(ctx.path().join("early.tar")).unwrap();
    assert!(late_bytes == early_bytes, "the archives differ");

    // A third build reuses the blobs the second made: nothing new is written.
    let before = blob_sizes(lazy.path()).len();
    build(
        ctx.path(),
        lazy.path(),
        &["--target", "build", "-t", "build:1"],
        &env,
    );
    assert_eq!(blob_sizes(lazy.path()).len(), before);
}

#[test]
fn cache_export_makes_the_blobs_of_every_step() {
    let env = [("SOURCE_DATE_EPOCH", EPOCH)];
    let ctx = two_stage_context();
    let root = busybox_store("auto");
    let cache = tempfile::tempdir().unwrap();
    let to = format!("type=local,dest={},mode=max", cache.path().display());
    build(ctx.path(), root.path(), &["--cache-to", &to], &env);
    // The exported cache holds the build stage's layer (BIG bytes), though it never shipped.
    let exported: Vec<u64> = walk_sizes(cache.path());
    assert!(
        exported.iter().any(|&s| s >= BIG as u64),
        "the build stage's layer is in the exported cache: {exported:?}"
    );
    // And another store builds from it with every step a hit.
    let other = busybox_store("auto");
    let from = format!("type=local,src={}", cache.path().display());
    let again = build(
        ctx.path(),
        other.path(),
        &["--cache-from", &from, "--target", "build"],
        &env,
    );
    assert!(again.stderr.contains("#2 CACHED"), "{}", again.stderr);
}

fn walk_sizes(dir: &Path) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                sizes.push(meta.len());
            }
        }
    }
    sizes
}
