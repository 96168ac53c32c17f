//! What the integration tests share: running kiln, making contexts, reading images back.

// Tests fail by panicking; not every test file uses every helper.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

pub mod arm64;
pub mod containers;
pub mod debian;
pub mod git;
pub mod parity;
pub mod registry;
pub mod small_disk;

use kiln_oci::{read_oci_archive, ImageConfig, ReadOptions};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn kiln(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        command.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run kiln");
    Run {
        status: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A build context in a temp dir.
pub fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let full = dir.path().join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    dir
}

pub fn build(ctx: &Path, root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let root = root.to_string_lossy().into_owned();
    let mut args = vec!["--root", root.as_str(), "build"];
    args.extend_from_slice(extra);
    args.push(".");
    let run = kiln(&args, ctx, env);
    assert_eq!(run.status, 0, "build failed:\n{}", run.stderr);
    run
}

/// Manifest, config and each layer's entries (path → content for files).
pub struct Image {
    pub config: ImageConfig,
    pub layers: Vec<Vec<kiln_layer::EntrySummary>>,
    pub manifest_digest: String,
}

pub fn read_image(archive: &Path) -> Image {
    let image = read_oci_archive(archive, &ReadOptions::default()).unwrap();
    let mut layers = Vec::new();
    for (i, descriptor) in image.layers().iter().enumerate() {
        let reader = image.open_layer(i).unwrap();
        layers.push(kiln_layer::read_layer_entries(reader, &descriptor.media_type).unwrap());
    }
    Image {
        config: image.config.clone(),
        layers,
        manifest_digest: image.image_ref().manifest.digest.to_string(),
    }
}

pub fn paths(layer: &[kiln_layer::EntrySummary]) -> Vec<String> {
    layer
        .iter()
        .map(|e| e.path_str().trim_end_matches('/').to_string())
        .collect()
}

pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `KILN_REQUIRE_ALL=1` is set (`.ci/run` sets it): then nothing may be skipped.
pub fn require_all() -> bool {
    std::env::var("KILN_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The one way a test here gives up for want of something the machine lacks: it prints
/// "skipped: WHY" and the test returns, or, under `KILN_REQUIRE_ALL=1`, the test fails with WHY
/// and how to get it (`scripts/test.sh` installs and starts everything).
pub fn skip_or_fail(why: &str) {
    if require_all() {
        panic!("KILN_REQUIRE_ALL=1 and this test cannot run: {why} (scripts/test.sh installs and starts what the tests need)");
    }
    eprintln!("skipped: {why}");
}

/// `have(tool)`, or [`skip_or_fail`] saying it is not installed: `if !require_tool("skopeo") { return; }`.
pub fn require_tool(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    skip_or_fail(&format!("{tool} not installed"));
    false
}

/// `umoci unpack` of the store's image tagged `tag` into a bundle under `dir`; its rootfs path.
pub fn umoci_unpack(store: &Path, tag: &str, dir: &Path) -> std::path::PathBuf {
    let bundle = dir.join("bundle");
    let layout = format!("{}:{tag}", store.display());
    let unpack = Command::new("umoci")
        .args(["unpack", "--image", &layout, &bundle.display().to_string()])
        .output()
        .unwrap();
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    bundle
}

/// Every entry under `base` as "path mode uid:gid content", sorted: two trees that print the
/// same hold the same files with the same metadata.
pub fn describe_tree(base: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.path().symlink_metadata().unwrap();
            let relative = entry
                .path()
                .strip_prefix(base)
                .unwrap()
                .display()
                .to_string();
            let content = if meta.is_file() {
                String::from_utf8_lossy(&fs::read(entry.path()).unwrap()).into_owned()
            } else {
                String::new()
            };
            found.push(format!(
                "{relative} {:o} {}:{} {content}",
                meta.mode(),
                meta.uid(),
                meta.gid()
            ));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// Every regular file under `dir`, symlinks not followed; unreadable directories are passed.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                if let Ok(entries) = fs::read_dir(&path) {
                    stack.extend(entries.flatten().map(|e| e.path()));
                }
            }
            Ok(meta) if meta.is_file() => files.push(path),
            _ => {}
        }
    }
    files
}

/// The first file under `dir` holding `needle`, as it is or, for a gzip or zstd stream (a
/// layer blob), decompressed: how the tests show a secret reached no byte kiln wrote.
pub fn find_bytes(dir: &Path, needle: &[u8]) -> Option<String> {
    let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for path in files_under(dir) {
        let bytes = fs::read(&path).unwrap_or_default();
        if contains(&bytes) {
            return Some(path.display().to_string());
        }
        let media_type = if bytes.starts_with(&[0x1f, 0x8b]) {
            kiln_layer::MEDIA_TYPE_TAR_GZIP
        } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            kiln_layer::MEDIA_TYPE_TAR_ZSTD
        } else {
            continue;
        };
        let mut plain = Vec::new();
        if let Ok(mut reader) = kiln_layer::decompress(&bytes[..], media_type) {
            let _ = std::io::Read::read_to_end(&mut reader, &mut plain);
        }
        if contains(&plain) {
            return Some(format!("{} (decompressed)", path.display()));
        }
    }
    None
}

/// The epoch the RUN tests build with, so images can be compared by digest.
pub const EPOCH: &str = "1700000000";

pub fn busybox_binary() -> &'static Path {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(candidate).is_file() {
            return Path::new(candidate);
        }
    }
    panic!("these tests need a static busybox: apt-get install busybox-static");
}

/// A store holding `busybox:test`: FROM scratch, COPY of the static busybox, passwd and group,
/// and a RUN that installs the applets. kiln makes its own base, so no test needs a registry.
pub fn busybox_store(snapshotter: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    busybox_store_at(root.path(), snapshotter);
    root
}

/// [`busybox_store`] in the store at `root` (a small disk, say).
pub fn busybox_store_at(root: &Path, snapshotter: &str) {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY passwd group /etc/\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n",
        ),
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        ),
        ("group", "root:x:0:\nbob:x:1000:\nwheel:x:10:bob\n"),
    ]);
    fs::copy(busybox_binary(), ctx.path().join("busybox")).unwrap();
    build(
        ctx.path(),
        root,
        &["-t", "busybox:test"],
        &[
            ("KILN_SNAPSHOTTER", snapshotter),
            ("SOURCE_DATE_EPOCH", EPOCH),
        ],
    );
}
