//! Edit rebuilds of a COPY link the unchanged files from the step's previous snapshot: the
//! image must be the one a cold build of the same context makes, byte for byte, whatever the
//! change (kill in the middle: see interrupt.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const RECIPE: &str =
    "FROM scratch\nCOPY src/ /app/\nCOPY --chmod=640 --chown=1:2 src/d03 /other/\n";
const DIRS: usize = 6;
const PER_DIR: usize = 25;

fn file_path(dir: usize, file: usize) -> String {
    format!("src/d{dir:02}/f{file:02}.txt")
}

fn make_context() -> tempfile::TempDir {
    let ctx = context(&[("Dockerfile", RECIPE)]);
    for dir in 0..DIRS {
        for file in 0..PER_DIR {
            let path = ctx.path().join(file_path(dir, file));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, format!("file {dir} {file}\n").repeat(1 + file * 7)).unwrap();
        }
    }
    fs::set_permissions(
        ctx.path().join(file_path(1, 1)),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("f00.txt", ctx.path().join("src/d02/link")).unwrap();
    ctx
}

/// Far in the future: the directories a COPY makes get this time in every build, and no file's
/// own time is clamped, so a file linked with the wrong time would show in the layer.
const FUTURE_EPOCH: &str = "4000000000";

/// The layer digests and diff_ids of the image built from `ctx` in the store `root`.
fn layers(ctx: &Path, root: &Path) -> (Vec<String>, Vec<String>) {
    let archive = ctx.join("out.tar");
    let _ = fs::remove_file(&archive);
    build(
        ctx,
        root,
        &["-o", &format!("type=oci,dest={}", archive.display())],
        &[("SOURCE_DATE_EPOCH", FUTURE_EPOCH)],
    );
    let image = kiln_oci::read_oci_archive(&archive, &kiln_oci::ReadOptions::default()).unwrap();
    fs::remove_file(&archive).unwrap();
    let digests = image
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.to_string())
        .collect();
    let diff_ids = image
        .config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| d.to_string())
        .collect();
    (digests, diff_ids)
}

/// Regular files of the store's snapshots whose inode another name shares.
fn shared_files(root: &Path) -> usize {
    let mut shared = 0;
    let mut stack = vec![root.join("snapshots")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && meta.nlink() > 1 {
                shared += 1;
            }
        }
    }
    shared
}

/// Rebuilds in `warm` (which built every earlier state) and in a fresh store: the same layers.
fn same_as_cold(ctx: &Path, warm: &Path, what: &str) {
    let rebuilt = layers(ctx, warm);
    let cold_store = tempfile::tempdir().unwrap();
    let cold = layers(ctx, cold_store.path());
    assert_eq!(
        rebuilt, cold,
        "after {what}: the rebuilt image's layers differ from a cold build's"
    );
    let r = warm.to_string_lossy().into_owned();
    let verify = kiln(&["--root", &r, "verify"], ctx, &[]);
    assert_eq!(verify.status, 0, "{}{}", verify.stdout, verify.stderr);
}

/// Waits past the filesystem's timestamp granularity, so a rewrite gets a new mtime.
fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(20));
}

#[test]
fn every_change_shape_rebuilds_the_image_a_cold_build_makes() {
    let ctx = make_context();
    let c = ctx.path();
    let warm = tempfile::tempdir().unwrap();
    same_as_cold(c, warm.path(), "the first build");
    assert_eq!(shared_files(warm.path()), 0, "nothing to share yet");

    let append = |path: &str, text: &str| {
        tick();
        let full = c.join(path);
        let mut content = fs::read(&full).unwrap();
        content.extend_from_slice(text.as_bytes());
        fs::write(full, content).unwrap();
    };
    append(&file_path(3, 12), "edited in the middle\n");
    same_as_cold(c, warm.path(), "an edit in the middle");
    // The unchanged files of both COPY steps were linked, not copied.
    let files = DIRS * PER_DIR + PER_DIR;
    assert!(
        shared_files(warm.path()) >= 2 * (files - 2),
        "the unchanged files were copied again ({} shared names)",
        shared_files(warm.path())
    );

    append(&file_path(0, 0), "edited at the start\n");
    append(&file_path(DIRS - 1, PER_DIR - 1), "edited at the end\n");
    same_as_cold(c, warm.path(), "edits at the start and the end");

    tick();
    fs::write(c.join("src/d03/new.txt"), "added\n").unwrap();
    same_as_cold(c, warm.path(), "an added file");

    fs::remove_file(c.join(file_path(3, 5))).unwrap();
    same_as_cold(c, warm.path(), "a deleted file");

    fs::rename(c.join(file_path(3, 6)), c.join("src/d03/renamed.txt")).unwrap();
    same_as_cold(c, warm.path(), "a renamed file");

    fs::set_permissions(c.join(file_path(3, 7)), fs::Permissions::from_mode(0o700)).unwrap();
    same_as_cold(c, warm.path(), "a mode change");

    // The same bytes written again (a new mtime) beside an edit: the rewritten file must carry
    // its new time, not the linked one's.
    tick();
    let same = c.join(file_path(3, 8));
    fs::write(&same, fs::read(&same).unwrap()).unwrap();
    append(&file_path(3, 9), "another edit\n");
    same_as_cold(c, warm.path(), "a rewrite with the same content");

    // Two names of one file in the context are a hard link in the layer; then they part.
    tick();
    fs::remove_file(c.join(file_path(3, 10))).unwrap();
    fs::hard_link(c.join(file_path(3, 11)), c.join(file_path(3, 10))).unwrap();
    same_as_cold(c, warm.path(), "two names of one file");
    let content = fs::read(c.join(file_path(3, 10))).unwrap();
    fs::remove_file(c.join(file_path(3, 10))).unwrap();
    fs::write(c.join(file_path(3, 10)), content).unwrap();
    append(&file_path(4, 1), "and an edit\n");
    same_as_cold(c, warm.path(), "the two names parted, same content");

    // A file becomes a directory, a link changes target.
    fs::remove_file(c.join(file_path(3, 13))).unwrap();
    fs::create_dir(c.join(file_path(3, 13))).unwrap();
    fs::write(c.join(file_path(3, 13)).join("inside"), "now a directory\n").unwrap();
    fs::remove_file(c.join("src/d02/link")).unwrap();
    std::os::unix::fs::symlink("f01.txt", c.join("src/d02/link")).unwrap();
    same_as_cold(
        c,
        warm.path(),
        "a file turned directory and a new link target",
    );
}

/// A small deterministic generator, so a failure names a sequence that can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn seeded_random_changes_rebuild_the_image_a_cold_build_makes() {
    let ctx = make_context();
    let c = ctx.path();
    let warm = tempfile::tempdir().unwrap();
    layers(c, warm.path());
    let mut rng = Rng(0x6b69_6c6e_6564_6974);
    for round in 0..12 {
        let mut done = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let path = c.join(file_path(rng.below(DIRS), rng.below(PER_DIR)));
            if !path.is_file() {
                continue;
            }
            tick();
            match rng.below(5) {
                0 => {
                    let mut content = fs::read(&path).unwrap();
                    content.extend_from_slice(format!("round {round}\n").as_bytes());
                    fs::write(&path, content).unwrap();
                    done.push(format!("edit {}", path.display()));
                }
                1 => {
                    fs::remove_file(&path).unwrap();
                    done.push(format!("delete {}", path.display()));
                }
                2 => {
                    let to = path.with_extension(format!("r{round}"));
                    fs::rename(&path, &to).unwrap();
                    done.push(format!("rename {}", path.display()));
                }
                3 => {
                    let mode = [0o600, 0o644, 0o755, 0o4755][rng.below(4)];
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
                    done.push(format!("chmod {mode:o} {}", path.display()));
                }
                _ => {
                    fs::write(path.with_extension(format!("a{round}")), "added\n").unwrap();
                    done.push(format!("add beside {}", path.display()));
                }
            }
        }
        same_as_cold(c, warm.path(), &format!("round {round}: {done:?}"));
    }
    assert!(shared_files(warm.path()) > 0, "nothing was ever linked");
}
