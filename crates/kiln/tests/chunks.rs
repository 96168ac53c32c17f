//! Chunk reuse in real builds: a rebuild after an edit takes the unchanged chunks from the
//! blobs the store's `chunks/index` points into and still writes the layer a cold build
//! writes; damage to `chunks/` costs only time.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{build, kiln, read_image};
use kiln_oci::{read_oci_archive, ReadOptions};
use std::fs;
use std::path::Path;

/// Builds at different times make the same layer only with their times clamped (the
/// directories COPY creates take the build's time).
const EPOCH: &[(&str, &str)] = &[("SOURCE_DATE_EPOCH", "1700000000")];

/// About 6 MB of small text files in 40 directories: many chunks.
fn big_context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..3000 {
        let sub = dir.path().join(format!("src/d{:02}", i % 40));
        fs::create_dir_all(&sub).unwrap();
        let mut text = String::new();
        let len = 1000 + (i * 37) % 2000;
        while text.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push_str(["fn ", "let ", "layer ", "kiln ", "{}\n"][(x % 5) as usize]);
            text.push_str(&(x % 1000).to_string());
        }
        fs::write(sub.join(format!("f{i:04}.rs")), text).unwrap();
    }
    fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY src/ /app/\n",
    )
    .unwrap();
    dir
}

/// The layer digests and diff_ids of the image in an OCI archive.
fn layers(archive: &Path) -> Vec<(String, String)> {
    let image = read_oci_archive(archive, &ReadOptions::default()).unwrap();
    let digests = image.layers().iter().map(|d| d.digest.to_string());
    let diff_ids = image.config.rootfs.diff_ids.iter().map(|d| d.to_string());
    digests.zip(diff_ids).collect()
}

/// Bytes of chunks the index names in each blob (`b <digest> <bytes> <last used>` lines),
/// smallest first.
fn chunk_bytes_per_blob(root: &Path) -> Vec<u64> {
    let index = fs::read_to_string(root.join("chunks/index")).unwrap_or_default();
    let mut sizes: Vec<u64> = index
        .lines()
        .filter_map(|line| line.strip_prefix("b "))
        .map(|rest| rest.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    sizes.sort_unstable();
    sizes
}

fn edit_middle(ctx: &Path) {
    let file = ctx.join("src/d20/f1500.rs");
    let mut text = fs::read_to_string(&file).unwrap();
    text.push_str("// edited\n");
    fs::write(file, text).unwrap();
}

#[test]
fn an_edit_rebuild_reuses_chunks_and_writes_the_cold_build_layer() {
    let ctx = big_context();
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &[], EPOCH);
    let first = chunk_bytes_per_blob(root.path());
    assert_eq!(first.len(), 1, "chunks of the one layer written");
    // Nothing but the index: the chunks' bytes stay in the blob.
    let mut kept: Vec<_> = fs::read_dir(root.path().join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, ["index", "lock"]);

    edit_middle(ctx.path());
    let out = root.path().join("edited.tar");
    let dest = format!("type=oci,dest={}", out.display());
    build(ctx.path(), root.path(), &["-o", &dest], EPOCH);
    let blobs = chunk_bytes_per_blob(root.path());
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    // Only the chunk around the edit was compressed again.
    assert!(
        blobs[0] * 10 < blobs[1],
        "the rebuild added {} bytes of chunks, the cold build {}",
        blobs[0],
        blobs[1]
    );

    let cold_root = tempfile::tempdir().unwrap();
    let cold_out = cold_root.path().join("cold.tar");
    let dest = format!("type=oci,dest={}", cold_out.display());
    build(ctx.path(), cold_root.path(), &["-o", &dest], EPOCH);
    assert_eq!(layers(&out), layers(&cold_out));
    // And the layer reads back whole.
    let image = read_image(&out);
    assert_eq!(
        image.layers[0]
            .iter()
            .filter(|e| e.path_str().ends_with(".rs"))
            .count(),
        3000
    );
}

#[test]
fn damaged_chunks_cost_only_time() {
    let ctx = big_context();
    let root = tempfile::tempdir().unwrap();
    build(ctx.path(), root.path(), &[], EPOCH);
    // An index whose chunks point one byte off, or past the end of their blob: every read is
    // checked, so none of them is taken.
    let index_path = root.path().join("chunks/index");
    let index = fs::read_to_string(&index_path).unwrap();
    let damaged: Vec<String> = index
        .lines()
        .enumerate()
        .map(|(n, line)| match line.strip_prefix("c ") {
            Some(rest) => {
                let mut f: Vec<String> = rest.split(' ').map(str::to_owned).collect();
                let offset: u64 = f[2].parse().unwrap();
                f[2] = if n % 2 == 0 {
                    offset + 1
                } else {
                    offset + (1 << 40)
                }
                .to_string();
                format!("c {}", f.join(" "))
            }
            None => line.to_owned(),
        })
        .collect();
    assert!(damaged.iter().filter(|l| l.starts_with("c ")).count() > 10);
    fs::write(&index_path, damaged.join("\n") + "\n").unwrap();

    edit_middle(ctx.path());
    let out = root.path().join("edited.tar");
    let dest = format!("type=oci,dest={}", out.display());
    build(ctx.path(), root.path(), &["-o", &dest], EPOCH);

    let cold_root = tempfile::tempdir().unwrap();
    let cold_out = cold_root.path().join("cold.tar");
    let dest = format!("type=oci,dest={}", cold_out.display());
    build(ctx.path(), cold_root.path(), &["-o", &dest], EPOCH);
    assert_eq!(layers(&out), layers(&cold_out));

    let root_arg = root.path().to_string_lossy().into_owned();
    let verify = kiln(&["--root", &root_arg, "verify"], ctx.path(), &[]);
    assert_eq!(verify.status, 0, "kiln verify: {}", verify.stderr);

    // A garbage index too: the next rebuild is still right.
    fs::write(root.path().join("chunks/index"), "not an index").unwrap();
    fs::write(
        ctx.path().join("src/d00/f0000.rs"),
        "changed at the start\n",
    )
    .unwrap();
    let out = root.path().join("again.tar");
    let dest = format!("type=oci,dest={}", out.display());
    build(ctx.path(), root.path(), &["-o", &dest], EPOCH);
    let cold_root = tempfile::tempdir().unwrap();
    let cold_out = cold_root.path().join("cold.tar");
    let dest = format!("type=oci,dest={}", cold_out.display());
    build(ctx.path(), cold_root.path(), &["-o", &dest], EPOCH);
    assert_eq!(layers(&out), layers(&cold_out));
}
