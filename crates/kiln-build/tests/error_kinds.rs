//! A full disk, a refused permission, a corrupt blob and a missing file each come back as an
//! error of their own kind (`BuildError::cause`), with the source error and the file or blob
//! they concern kept, so the binary can tell the user which one it is.
//!
//! The full-disk and permission tests need root (a small tmpfs, `chattr +i`); they fail
//! without it, as the suite runs as root in CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../kiln/tests/common/small_disk.rs"]
mod small_disk;
use small_disk::SmallDisk;

use kiln_build::output::{export, Destination, OutputKind, OutputSpec};
use kiln_build::remote::RemoteOptions;
use kiln_build::{BuildError, BuildOptions, Built, Cause, Event, ExecError, Progress, StoreImages};
use kiln_context::Context;
use kiln_store::Store;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Quiet;

impl Progress for Quiet {
    fn event(&self, _: Event) {}
}

fn options() -> BuildOptions {
    BuildOptions {
        jobs: 1,
        no_cache: false,
        no_cache_filter: Vec::new(),
        source_date_epoch: Some(0),
        compression: Default::default(),
        platform: kiln_plan::Platform::host(),
        squash: false,
        recipe_id: "error-kinds".into(),
        snapshotter: Default::default(),
        secrets: Default::default(),
        remote: RemoteOptions::default(),
        run: Default::default(),
        labels: Default::default(),
        annotations: Default::default(),
    }
}

/// Plans `recipe` against the store's images and builds it with `ctx` as the context.
fn build(store: &Store, ctx: &Path, recipe: &str) -> Result<Built, BuildError> {
    let options = options();
    let images = StoreImages {
        store,
        remote: &options.remote,
        progress: &Quiet,
    };
    let plan_options = kiln_plan::PlanOptions {
        images: &images,
        ..kiln_plan::PlanOptions::default()
    };
    let plan = kiln_plan::plan(&kiln_recipe::parse_recipe(recipe), &plan_options);
    assert!(
        plan.diagnostics.iter().all(|d| !d.is_error()),
        "{:?}",
        plan.diagnostics
    );
    let context = Context::open(ctx, None).unwrap();
    kiln_build::build(&plan, store, &context, &options, &Quiet)
}

/// Bytes that do not compress (an xorshift stream), so a layer of them is as big as they are.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn a_full_disk_is_disk_full() {
    let disk = SmallDisk::mount("2m");
    let store = Store::open(&disk.path().join("store")).unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("big.bin"), noise(4 << 20)).unwrap();
    let error = build(&store, ctx.path(), "FROM scratch\nCOPY big.bin /big.bin\n").unwrap_err();
    assert_eq!(error.cause(), Cause::DiskFull, "{error:?}");
    // The system's own words stay in the message, with the file or layer concerned.
    let message = error.to_string();
    assert!(message.contains("No space left on device"), "{message}");
    assert!(
        matches!(
            &error,
            BuildError::Exec(ExecError::Layer { .. } | ExecError::Io { .. } | ExecError::Store(_))
                | BuildError::Store(_)
                | BuildError::Io { .. }
        ),
        "{error:?}"
    );
}

#[test]
fn a_refused_permission_is_permission_denied() {
    let disk = SmallDisk::mount("8m");
    let store = Store::open(&disk.path().join("store")).unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "x").unwrap();
    let built = build(&store, ctx.path(), "FROM scratch\nCOPY f /f\n").unwrap();
    // An immutable directory refuses even root (EPERM).
    let dest = disk.path().join("out");
    fs::create_dir(&dest).unwrap();
    let chattr = Command::new("chattr")
        .arg("+i")
        .arg(&dest)
        .status()
        .unwrap();
    assert!(chattr.success(), "chattr +i (needs root)");
    let spec = OutputSpec {
        kind: OutputKind::Local,
        destination: Destination::File(dest.clone()),
        names: Vec::new(),
        compression: None,
    };
    let result = export(&spec, &built, &store, &[]);
    let _ = Command::new("chattr").arg("-i").arg(&dest).status();
    let error = result.unwrap_err();
    assert_eq!(error.cause(), Cause::PermissionDenied, "{error:?}");
    match &error {
        BuildError::Io { path, .. } | BuildError::Exec(ExecError::Io { path, .. }) => {
            assert!(path.starts_with(&dest), "{path:?}")
        }
        other => panic!("expected an Io error naming the file, got {other:?}"),
    }
}

/// The blob file of `digest` in the store.
fn blob_path(store: &Store, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    store.root().join("blobs").join(algorithm).join(hex)
}

#[test]
fn a_corrupt_blob_is_corrupt() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), noise(64 << 10)).unwrap();
    fs::write(ctx.path().join("g"), "g").unwrap();
    let base = build(&store, ctx.path(), "FROM scratch\nCOPY f /f\n").unwrap();
    let name = kiln_oci::ImageName::parse("base:1").unwrap();
    store.tag(&name.to_string(), "1", &base.manifest).unwrap();
    // The layer's blob damaged in place (same length), and its snapshot gone, so the next
    // build has to read the blob again.
    let layer = base.layers.first().unwrap();
    let path = blob_path(&store, layer.digest.as_ref());
    let length = fs::metadata(&path).unwrap().len();
    fs::write(&path, vec![0x5a; length as usize]).unwrap();
    for snapshot in &base.snapshots {
        fs::remove_dir_all(snapshot).unwrap();
    }
    let error = build(&store, ctx.path(), "FROM base:1\nCOPY g /g\n")
        .and_then(|built| {
            let dest = ctx.path().join("out");
            let spec = OutputSpec {
                kind: OutputKind::Local,
                destination: Destination::File(dest),
                names: Vec::new(),
                compression: None,
            };
            export(&spec, &built, &store, &[])
        })
        .unwrap_err();
    assert_eq!(error.cause(), Cause::Corrupt, "{error:?}");
    assert!(
        error.to_string().contains(&layer.digest.to_string()),
        "the message names the blob: {error}"
    );
}

#[test]
fn a_missing_file_is_not_found() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let error = build(&store, ctx.path(), "FROM scratch\nCOPY missing.txt /m\n").unwrap_err();
    assert_eq!(error.cause(), Cause::NotFound, "{error:?}");
    assert!(
        matches!(
            &error,
            BuildError::Exec(ExecError::Context(
                kiln_context::ContextError::NotFound { path }
            )) if path == "missing.txt"
        ),
        "{error:?}"
    );
    // A base image that is not there is the same kind, naming the image.
    let error = build(&store, ctx.path(), "FROM nothere:1\n").unwrap_err();
    assert_eq!(error.cause(), Cause::NotFound, "{error:?}");
    assert!(error.to_string().contains("nothere:1"), "{error}");
}
