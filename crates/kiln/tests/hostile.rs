//! Hostile input from outside: a zip-bomb base layer (a few KB of gzip that expand to a GiB)
//! from an OCI archive and from a registry, and a disk that fills during a pull and during
//! archive output. Each must end in a clear error, with the disk use bounded and the store
//! consistent (`kiln verify` clean).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::registry::{RegistryAuth, TestRegistry};
use common::small_disk::SmallDisk;
use common::{context, kiln, Run};
use kiln_layer::{HashingWriter, ParallelGzip, MEDIA_TYPE_TAR_GZIP};
use kiln_oci::{media_types, ImageName, ImageRef, Manifest, MemoryBlobs, WriteOptions};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1 << 20;
/// The per-layer cap the tests set: a bomb must not put more than this on disk.
const CAP: u64 = 64 * MIB;
/// The bomb: 64 files of 16 MiB of zeros, 1 GiB in all (each file under the cap, so the
/// bytes, not a header, are what stop it).
const BOMB_FILES: u64 = 64;
const BOMB_FILE_SIZE: u64 = 16 * MIB;

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = ParallelGzip::new(Vec::new(), 9, 1).unwrap();
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// An image of one layer, gzip, whose tar is `files` files of `size` zero bytes; returns the
/// blobs, the image and the layer's digest. The blob is a multi-member gzip (as `cat a.gz
/// b.gz` makes, and every gzip reader takes): each header its own member, and one member of
/// `size` zeros compressed once and repeated, so making a GiB bomb costs little.
fn bomb_image(files: u64, size: u64) -> (MemoryBlobs, ImageRef, String) {
    let zeros = vec![0u8; size as usize];
    let zeros_member = gzip(&zeros);
    let mut blob = Vec::new();
    let mut diff_id = HashingWriter::new(std::io::sink());
    for i in 0..files {
        let mut header = tar::Header::new_ustar();
        header.set_path(format!("bomb/{i:03}")).unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        blob.extend_from_slice(&gzip(header.as_bytes()));
        blob.extend_from_slice(&zeros_member);
        diff_id.write_all(header.as_bytes()).unwrap();
        diff_id.write_all(&zeros).unwrap();
    }
    blob.extend_from_slice(&gzip(&[0; 1024]));
    diff_id.write_all(&[0; 1024]).unwrap();
    let (_, diff_id, _) = diff_id.finish().unwrap();
    let mut blobs = MemoryBlobs::new();
    let layer = blobs.add(MEDIA_TYPE_TAR_GZIP, blob);
    let config = serde_json::json!({
        "architecture": arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", diff_id.hex())]},
    });
    let config = blobs.add(
        media_types::OCI_CONFIG,
        serde_json::to_vec(&config).unwrap(),
    );
    let digest = layer.digest.to_string();
    let manifest = Manifest::new(config, vec![layer]);
    let manifest = blobs.add(
        media_types::OCI_MANIFEST,
        kiln_oci::to_canonical_json(&manifest).unwrap(),
    );
    let image = ImageRef::new(manifest).with_name(ImageName::parse("bomb:1").unwrap());
    (blobs, image, digest)
}

fn write_archive(path: &Path, blobs: &MemoryBlobs, image: &ImageRef) {
    let file = fs::File::create(path).unwrap();
    kiln_oci::write_oci_archive(file, image, blobs, &WriteOptions::default()).unwrap();
}

/// Bytes of the files under `dir` (as `du --apparent-size` would count them, plus a block
/// per directory).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                total += 4096;
                stack.push(entry.path());
            } else {
                use std::os::unix::fs::MetadataExt;
                // Blocks really used: a sparse file counts what it holds.
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// Runs `run` while sampling the disk use under `dir` every 20 ms; returns its result and the
/// largest use seen.
fn peak_disk_use<T>(dir: &Path, run: impl FnOnce() -> T) -> (T, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, dir) = (stop.clone(), dir.to_path_buf());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(tree_bytes(&dir));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(tree_bytes(&dir))
        })
    };
    let result = run();
    stop.store(true, Ordering::Relaxed);
    (result, sampler.join().unwrap())
}

fn in_store(root: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let root = root.display().to_string();
    let mut all = vec!["--root", root.as_str()];
    all.extend_from_slice(args);
    kiln(&all, cwd, env)
}

const CAPS: [(&str, &str); 2] = [
    ("KILN_MAX_LAYER_SIZE", "64M"),
    ("KILN_MAX_IMAGE_SIZE", "64M"),
];

/// What every refused bomb must show: exit 1, no panic, the layer named, the bound and how
/// to raise it said, a clean `kiln verify`, no snapshot of the layer, and the disk use during
/// the build bounded by the cap plus the blobs.
fn assert_refused(run: &Run, root: &Path, layer: &str, peak: u64, blobs: u64, what: &str) {
    eprintln!(
        "{what}: peak store disk use {:.1} MiB (cap {} MiB, compressed blobs {:.2} MiB, \
         the bomb expands to {} MiB)",
        peak as f64 / MIB as f64,
        CAP / MIB,
        blobs as f64 / MIB as f64,
        BOMB_FILES * BOMB_FILE_SIZE / MIB
    );
    assert_eq!(run.status, 1, "{what}: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{what}: {}", run.stderr);
    assert!(
        run.stderr.contains(layer),
        "{what}: the error names the layer {layer}:\n{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("uncompressed size is over the limit of 67108864 bytes")
            && run.stderr.contains("KILN_MAX_LAYER_SIZE"),
        "{what}: {}",
        run.stderr
    );
    // The cap, what the store holds besides (blobs, index, cache), and filesystem slack.
    assert!(
        peak <= CAP + blobs + 8 * MIB,
        "{what}: {peak} bytes on disk at the peak"
    );
    let verify = in_store(root, root, &["verify"], &[]);
    assert_eq!(verify.status, 0, "{what}: verify: {}", verify.stderr);
    let snapshots = root.join("snapshots");
    let left: Vec<_> = fs::read_dir(&snapshots)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{what}: snapshots left: {left:?}");
}

#[test]
fn a_zip_bomb_layer_in_an_oci_archive_is_refused_within_the_cap() {
    let (blobs, image, layer) = bomb_image(BOMB_FILES, BOMB_FILE_SIZE);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("bomb.tar");
    write_archive(&archive, &blobs, &image);
    let compressed = fs::metadata(&archive).unwrap().len();
    assert!(compressed < 4 * MIB, "the bomb is {compressed} bytes");

    // FROM oci-archive: read straight from the archive.
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM oci-archive:{}\nCOPY f /f\n", archive.display()),
    )]);
    fs::write(ctx.path().join("f"), "x").unwrap();
    let root = work.path().join("store");
    let (run, peak) = peak_disk_use(work.path(), || {
        in_store(&root, ctx.path(), &["build", "."], &CAPS)
    });
    let on_disk = compressed * 2; // the archive itself, and the blob imported into the store
    assert_refused(&run, &root, &layer, peak, on_disk, "FROM oci-archive:");

    // kiln load, then FROM the loaded name.
    let root = work.path().join("store2");
    let load = in_store(
        &root,
        work.path(),
        &["load", "-i", archive.to_str().unwrap()],
        &[],
    );
    assert_eq!(load.status, 0, "load: {}", load.stderr);
    let ctx = context(&[("Dockerfile", "FROM bomb:1\nCOPY f /f\n"), ("f", "x")]);
    let (run, peak) = peak_disk_use(&root, || {
        in_store(&root, ctx.path(), &["build", "."], &CAPS)
    });
    assert_refused(&run, &root, &layer, peak, compressed, "kiln load + FROM");
}

#[test]
fn a_zip_bomb_layer_from_a_registry_is_refused_within_the_cap() {
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let (blobs, image, layer) = bomb_image(BOMB_FILES, BOMB_FILE_SIZE);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("bomb.tar");
    write_archive(&archive, &blobs, &image);
    let compressed = fs::metadata(&archive).unwrap().len();
    let config = work.path().join("docker");
    fs::create_dir_all(&config).unwrap();
    let env = [("DOCKER_CONFIG", config.to_str().unwrap())];

    // Into the registry: loaded into a store of its own, pushed from there.
    let pusher = work.path().join("pusher");
    let load = in_store(
        &pusher,
        work.path(),
        &["load", "-i", archive.to_str().unwrap()],
        &env,
    );
    assert_eq!(load.status, 0, "load: {}", load.stderr);
    let remote = format!("{}/hostile/bomb:1", registry.host());
    let push = in_store(&pusher, work.path(), &["push", "bomb:1", &remote], &env);
    assert_eq!(push.status, 0, "push: {}", push.stderr);

    let root = work.path().join("store");
    let ctx = context(&[
        ("Dockerfile", &format!("FROM {remote}\nCOPY f /f\n")),
        ("f", "x"),
    ]);
    let env = [
        env[0],
        ("KILN_MAX_LAYER_SIZE", "64M"),
        ("KILN_MAX_IMAGE_SIZE", "64M"),
    ];
    let (run, peak) = peak_disk_use(&root, || in_store(&root, ctx.path(), &["build", "."], &env));
    assert_refused(&run, &root, &layer, peak, compressed, "FROM a registry");
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

/// A store (on the normal disk) holding `big:1`, one layer of 4 MiB of noise.
fn store_with_big_image(work: &Path) -> PathBuf {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY big.bin /big.bin\n")]);
    fs::write(ctx.path().join("big.bin"), noise(4 << 20)).unwrap();
    let root = work.join("source-store");
    let run = in_store(&root, ctx.path(), &["build", "-t", "big:1", "."], &[]);
    assert_eq!(run.status, 0, "build: {}", run.stderr);
    root
}

fn assert_disk_full(run: &Run, what: &str) {
    assert_eq!(run.status, 1, "{what}: {}", run.stderr);
    assert!(
        run.stderr.contains("No space left on device"),
        "{what}: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{what}: {}", run.stderr);
}

#[test]
fn a_disk_that_fills_during_a_pull_is_a_clear_error_and_the_store_stays_consistent() {
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let work = tempfile::tempdir().unwrap();
    let source = store_with_big_image(work.path());
    let config = work.path().join("docker");
    fs::create_dir_all(&config).unwrap();
    let env = [("DOCKER_CONFIG", config.to_str().unwrap())];
    let remote = format!("{}/hostile/big:1", registry.host());
    let push = in_store(&source, work.path(), &["push", "big:1", &remote], &env);
    assert_eq!(push.status, 0, "push: {}", push.stderr);

    let disk = SmallDisk::mount("2m");
    let root = disk.path().join("store");
    let pull = in_store(&root, work.path(), &["pull", &remote], &env);
    assert_disk_full(&pull, "pull");
    let verify = in_store(&root, work.path(), &["verify"], &env);
    assert_eq!(verify.status, 0, "verify: {}", verify.stderr);
    let images = in_store(&root, work.path(), &["images"], &env);
    assert_eq!(images.status, 0, "images: {}", images.stderr);
    assert!(!images.stdout.contains("big"), "{}", images.stdout);
    // Nothing half-written stays behind: what the pull completed (its small config blob)
    // verified above and is garbage `kiln prune` removes; after it the store is empty.
    let prune = in_store(&root, work.path(), &["prune"], &env);
    assert_eq!(prune.status, 0, "prune: {}", prune.stderr);
    let blobs = fs::read_dir(root.join("blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "blobs left by the failed pull");
}

#[test]
fn a_disk_that_fills_during_archive_output_is_a_clear_error_and_leaves_no_partial_archive() {
    let work = tempfile::tempdir().unwrap();
    let source = store_with_big_image(work.path());
    let disk = SmallDisk::mount("2m");
    let out = disk.path().join("big.tar");
    let out_arg = out.display().to_string();

    let save = in_store(
        &source,
        work.path(),
        &["save", "big:1", "-o", &out_arg],
        &[],
    );
    assert_disk_full(&save, "save");
    assert!(!out.exists(), "a partial archive is left at {out_arg}");

    let ctx = context(&[("Dockerfile", "FROM big:1\nENV A=1\n")]);
    let build = in_store(
        &source,
        ctx.path(),
        &["build", "-o", &format!("type=oci,dest={out_arg}"), "."],
        &[],
    );
    assert_disk_full(&build, "build -o type=oci");
    assert!(!out.exists(), "a partial archive is left at {out_arg}");

    let verify = in_store(&source, work.path(), &["verify"], &[]);
    assert_eq!(verify.status, 0, "verify: {}", verify.stderr);
}

/// Bytes free on the filesystem holding `path`.
fn available(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

#[test]
fn a_disk_that_fills_during_a_run_steps_diff_is_a_clear_error_and_leaves_nothing() {
    let disk = SmallDisk::mount("48m");
    let root = disk.path().join("store");
    common::busybox_store_at(&root, "auto");
    let before = available(&root);
    // The RUN writes 60% of what is free: its own write fits, the layer made from it does
    // not (noise does not compress), so the disk fills while the step's diff is written.
    let size = before / 10 * 6;
    let recipe =
        format!("FROM busybox:test\nRUN head -c {size} /dev/urandom > /big && echo written\n");
    let ctx = context(&[("Dockerfile", &recipe)]);
    let run = in_store(
        &root,
        ctx.path(),
        &["build", "--progress", "plain", "-t", "big:1", "."],
        &[],
    );
    eprintln!("RUN on a full disk:\n{}", run.stderr);
    assert_disk_full(&run, "RUN");
    assert!(
        run.stderr.contains("written"),
        "the command itself completed: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("the command ended with"),
        "the step failed after its command, not in it: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: the disk is full"),
        "the error says the disk is full: {}",
        run.stderr
    );
    let verify = in_store(&root, ctx.path(), &["verify"], &[]);
    assert_eq!(verify.status, 0, "verify: {}", verify.stderr);
    let images = in_store(&root, ctx.path(), &["images"], &[]);
    assert!(!images.stdout.contains("big"), "{}", images.stdout);
    // Nothing stays behind but the step's own result: its work area and half-written blob
    // are gone. The RUN's snapshot stays as a cache record (a lazy layer, still a hit once
    // there is room for its blob), so only dropping the build cache gives the disk (within a
    // MiB of bookkeeping) what it had before the build.
    let prune = in_store(&root, ctx.path(), &["prune", "--all"], &[]);
    assert_eq!(prune.status, 0, "prune: {}", prune.stderr);
    let after = available(&root);
    assert!(
        after + MIB >= before,
        "{} MiB free before the build, {} MiB after it and a prune",
        before / MIB,
        after / MIB
    );
    // The store still builds on the same base.
    let small = context(&[("Dockerfile", "FROM busybox:test\nRUN echo ok > /ok\n")]);
    let again = in_store(&root, small.path(), &["build", "-t", "small:1", "."], &[]);
    assert_eq!(
        again.status, 0,
        "a build after the failed one: {}",
        again.stderr
    );
}

#[test]
fn a_context_file_written_while_it_is_copied_is_refused_or_copied_whole() {
    const BASE: usize = 32 << 20;
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY moving.bin /moving.bin\n")]);
    let file = ctx.path().join("moving.bin");
    fs::write(&file, vec![1u8; BASE]).unwrap();
    // A writer that rewrites the file in place, in 1 MiB blocks, for as long as the build
    // runs (two minutes at most): each version is one byte value throughout, its length
    // 32 to 35 MiB, so any copy that mixes two versions shows.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let file = file.clone();
        std::thread::spawn(move || {
            use std::io::{Seek, SeekFrom};
            let mut out = fs::OpenOptions::new().write(true).open(&file).unwrap();
            let started = std::time::Instant::now();
            let mut rounds = 0u32;
            let mut version = 1u8;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                version = version % 250 + 1;
                let length = BASE + usize::from(version % 4) * (1 << 20);
                let block = vec![version; 1 << 20];
                out.seek(SeekFrom::Start(0)).unwrap();
                for _ in 0..length >> 20 {
                    out.write_all(&block).unwrap();
                }
                out.set_len(length as u64).unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    // Let the writer get going before the build reads the file.
    std::thread::sleep(Duration::from_millis(200));
    let root = tempfile::tempdir().unwrap();
    let archive = root.path().join("image.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let run = in_store(root.path(), ctx.path(), &["build", "-o", &dest, "."], &[]);
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(
        rounds >= 2,
        "the file was rewritten {rounds} times during the build"
    );
    eprintln!(
        "exit {} after {rounds} rewrites:\n{}",
        run.status, run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    if run.status != 0 {
        // Refused: the error names the file and says what happened.
        assert_eq!(run.status, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("moving.bin") && run.stderr.contains("changed while"),
            "{}",
            run.stderr
        );
        assert!(!archive.exists(), "no archive is written by a failed build");
        let verify = in_store(root.path(), ctx.path(), &["verify"], &[]);
        assert_eq!(verify.status, 0, "verify: {}", verify.stderr);
        return;
    }
    // Built: the layer is a well-formed tar (each entry's data as long as its header says,
    // read to the end by a reader that is not kiln's) and holds one whole version.
    let image = kiln_oci::read_oci_archive(&archive, &kiln_oci::ReadOptions::default()).unwrap();
    let layer = image.open_layer(0).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let mut found = false;
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let declared = entry.header().size().unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        assert_eq!(data.len() as u64, declared, "{:?}", entry.path());
        if entry.path().unwrap().ends_with("moving.bin") {
            found = true;
            let first = data[0];
            assert!(
                data.iter().all(|&b| b == first),
                "the layer holds a copy mixing versions"
            );
            assert_eq!(
                data.len(),
                BASE + usize::from(first % 4) * (1 << 20),
                "the layer holds version {first} at another version's length"
            );
        }
    }
    assert!(found, "moving.bin is in the layer");
}
