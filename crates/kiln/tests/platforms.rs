//! Multi-platform builds: one build for linux/amd64 and linux/arm64, a shared build-platform
//! stage built once, a foreign RUN through qemu-user (binfmt_misc), an OCI index that skopeo
//! and podman read, and a platform the machine cannot run refused before anything is stored.
//!
//! Needs (scripts/test.sh sets them up as root): qemu-user-static with qemu-aarch64 registered
//! in binfmt_misc (F flag), Debian's arm64 architecture added (for `apt-get download
//! busybox-static:arm64`), busybox-static, skopeo, podman and docker-registry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::arm64::{arm64_busybox, emulator_registered, multi_busybox_at, BINFMT};
use common::registry::{RegistryAuth, TestRegistry};
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A store holding `busybox:multi`: an index of linux/amd64 (this machine's busybox-static)
/// and linux/arm64 (Debian's arm64 busybox-static), built by kiln itself from one recipe.
fn multi_busybox_store(work: &Path) -> Option<tempfile::TempDir> {
    if !emulator_registered("qemu-aarch64") {
        skip_or_fail("qemu-aarch64 is not registered in binfmt_misc with the F flag (apt-get install qemu-user-static; grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register)");
        return None;
    }
    let arm64 = arm64_busybox(work)?;
    let root = tempfile::tempdir().unwrap();
    multi_busybox_at(root.path(), &arm64);
    Some(root)
}

/// The cross-compile recipe: a build-platform stage that makes one file per target arch, and
/// a final stage per platform that takes its own and records what `uname -m` says there.
const APP: &str = "FROM --platform=$BUILDPLATFORM busybox:multi AS cross\n\
RUN echo \"cross-compiling on $(uname -m)\" > /log\n\
ARG BUILDARCH\n\
RUN for arch in amd64 arm64; do echo \"binary for $arch, made on $BUILDARCH\" > /app-$arch; done\n\
\n\
FROM busybox:multi\n\
ARG TARGETARCH\n\
COPY --from=cross /app-$TARGETARCH /app\n\
RUN uname -m > /arch\n\
CMD [\"cat\", \"/arch\"]\n";

fn json_events(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

fn kiln_root(root: &Path, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    let root = root.display().to_string();
    let mut all = vec!["--root", root.as_str()];
    all.extend_from_slice(args);
    kiln(&all, cwd, env)
}

fn ok(run: Run, what: &str) -> Run {
    assert_eq!(
        run.status, 0,
        "{what} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

#[test]
fn two_platforms_share_the_build_stage_run_arm64_through_qemu_and_push_one_index() {
    for tool in ["skopeo", "podman", "docker-registry"] {
        if !require_tool(tool) {
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let Some(root) = multi_busybox_store(work.path()) else {
        return;
    };
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let docker_config = tempfile::tempdir().unwrap();
    let host = registry.host();
    let tag = format!("{host}/kiln/multi:1");
    let ctx = context(&[("Dockerfile", APP)]);
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("app.tar");
    let local = out.path().join("local");
    let metadata = out.path().join("metadata.json");
    let env = [
        ("SOURCE_DATE_EPOCH", EPOCH),
        ("DOCKER_CONFIG", docker_config.path().to_str().unwrap()),
    ];
    let args = [
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "--progress",
        "json",
        "-t",
        &tag,
        "--push",
        "-o",
        &format!("type=oci,dest={}", archive.display()),
        "-o",
        &format!("type=local,dest={}", local.display()),
        "--metadata-file",
        &metadata.display().to_string(),
        ".",
    ];
    let first = ok(
        kiln_root(root.path(), &args, ctx.path(), &env),
        "two-platform build",
    );
    let events = json_events(&first.stderr);

    // The build-platform stage ran once, for both platforms; the final stage once per platform.
    let runs_of = |text: &str| {
        events
            .iter()
            .filter(|e| {
                e["event"] == "step" && e["instruction"].as_str().is_some_and(|i| i.contains(text))
            })
            .count()
    };
    assert_eq!(runs_of("cross-compiling on"), 1, "{}", first.stderr);
    assert_eq!(runs_of("for arch in amd64 arm64"), 1, "{}", first.stderr);
    assert_eq!(runs_of("uname -m > /arch"), 2, "{}", first.stderr);

    // The archive's image is an index of two manifests with the right platforms.
    let index: serde_json::Value = serde_json::from_slice(
        &Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", archive.display()))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    // Each platform's image, and beside it (as buildx attaches it by default to an OCI
    // archive) one attestation manifest per image.
    assert_eq!(
        platforms,
        [
            "linux/amd64",
            "linux/arm64",
            "unknown/unknown",
            "unknown/unknown"
        ]
    );
    let manifests = index["manifests"].as_array().unwrap();
    for (image, attestation) in manifests[..2].iter().zip(&manifests[2..]) {
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.digest"], image["digest"],
            "{index}"
        );
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.type"], "attestation-manifest",
            "{index}"
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&fs::read(&metadata).unwrap()).unwrap();
    let index_digest = metadata["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        metadata["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );

    // type=local: one directory per platform, each with its own binary and uname.
    let read = |path: PathBuf| {
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    assert_eq!(read(local.join("linux_amd64/arch")), "x86_64\n");
    assert_eq!(read(local.join("linux_arm64/arch")), "aarch64\n");
    assert_eq!(
        read(local.join("linux_arm64/app")),
        "binary for arm64, made on amd64\n"
    );
    assert_eq!(
        read(local.join("linux_amd64/app")),
        "binary for amd64, made on amd64\n"
    );

    // The store names the index; kiln run picks a platform, the foreign one through qemu.
    let arm = ok(
        kiln_root(
            root.path(),
            &["run", "--platform", "linux/arm64", &tag],
            ctx.path(),
            &[],
        ),
        "kiln run arm64",
    );
    assert_eq!(arm.stdout, "aarch64\n");
    let images = ok(
        kiln_root(root.path(), &["images"], ctx.path(), &[]),
        "kiln images",
    );
    assert!(
        images.stdout.contains("linux/amd64,linux/arm64"),
        "{}",
        images.stdout
    );

    // The registry holds the index and both manifests.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{tag}"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "skopeo inspect --raw: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let pushed: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(pushed["manifests"], index["manifests"], "{pushed}");
    for manifest in pushed["manifests"].as_array().unwrap() {
        let digest = manifest["digest"].as_str().unwrap();
        let one = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{host}/kiln/multi@{digest}"))
            .output()
            .unwrap();
        assert!(
            one.status.success(),
            "manifest {digest} is not on the registry"
        );
    }
    let sha = format!("sha256:{}", sha256_hex(&raw.stdout));
    assert_eq!(sha, index_digest, "the pushed index is the built one");

    // skopeo takes the arm64 image out of the index; podman runs it through qemu.
    let storage = tempfile::tempdir().unwrap();
    let (store_root, run_root) = (storage.path().join("root"), storage.path().join("run"));
    let containers = format!(
        "containers-storage:[vfs@{}+{}]localhost/kiln-multi:arm64",
        store_root.display(),
        run_root.display()
    );
    let copied = Command::new("skopeo")
        .args(["copy", "--override-arch", "arm64", "--src-tls-verify=false"])
        .arg(format!("docker://{tag}"))
        .arg(&containers)
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "skopeo copy --override-arch arm64: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    // Limits podman's runc may set here (its default nproc is refused on this kernel setup).
    let conf = storage.path().join("containers.conf");
    fs::write(
        &conf,
        "[containers]\nnetns = \"none\"\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=20000:20000\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n",
    )
    .unwrap();
    let podman = Command::new("podman")
        .env("CONTAINERS_CONF", &conf)
        .arg("--root")
        .arg(&store_root)
        .arg("--runroot")
        .arg(&run_root)
        .args([
            "--storage-driver",
            "vfs",
            "run",
            "--rm",
            "--platform",
            "linux/arm64",
            "localhost/kiln-multi:arm64",
            "uname",
            "-m",
        ])
        .output()
        .unwrap();
    assert!(
        podman.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&podman.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&podman.stdout), "aarch64\n");

    // A rebuild is fully cached: no step runs, and its index holds the same images (its
    // attestations name no -t this time, so the index itself may differ).
    let again_archive = out.path().join("again.tar").display().to_string();
    let again = ok(
        kiln_root(
            root.path(),
            &[
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "--progress",
                "json",
                "-o",
                &format!("type=oci,dest={again_archive}"),
                "--metadata-file",
                &out.path().join("again.json").display().to_string(),
                ".",
            ],
            ctx.path(),
            &env,
        ),
        "rebuild",
    );
    let ran: Vec<serde_json::Value> = json_events(&again.stderr)
        .into_iter()
        .filter(|e| e["event"] == "running")
        .collect();
    assert!(ran.is_empty(), "steps ran again: {ran:?}");
    let again_metadata: serde_json::Value =
        serde_json::from_slice(&fs::read(out.path().join("again.json")).unwrap()).unwrap();
    let again_raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{again_archive}"))
        .output()
        .unwrap()
        .stdout;
    let again_index: serde_json::Value = serde_json::from_slice(&again_raw).unwrap();
    let images = |index: &serde_json::Value| -> Vec<String> {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["platform"]["os"] != "unknown")
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(images(&again_index), images(&index), "{again_index}");
    assert_eq!(
        again_metadata["containerimage.digest"].as_str(),
        Some(kiln_oci::sha256_digest(&again_raw).to_string()).as_deref()
    );

    // docker load takes images, not an index: type=docker says so.
    let docker = kiln_root(
        root.path(),
        &[
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            &format!("type=docker,dest={}", out.path().join("d.tar").display()),
            ".",
        ],
        ctx.path(),
        &env,
    );
    assert_ne!(docker.status, 0);
    assert!(
        docker.stderr.contains("type=docker holds one image"),
        "{}",
        docker.stderr
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    kiln_oci::sha256_digest(bytes).hex().to_string()
}

/// Everything a build may leave in a store: blobs, snapshots, cache records, names.
fn store_contents(root: &Path) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    for dir in ["blobs", "snapshots", "cache", "cache-mounts"] {
        let base = root.join(dir);
        if !base.exists() {
            continue;
        }
        for entry in walk(&base) {
            let size = fs::symlink_metadata(&entry).map(|m| m.len()).unwrap_or(0);
            found.insert(
                entry.strip_prefix(root).unwrap().display().to_string(),
                size,
            );
        }
    }
    found.insert(
        format!(
            "index.json:{}",
            fs::read_to_string(root.join("index.json")).unwrap_or_default()
        ),
        0,
    );
    found
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// Disables a binfmt_misc entry for as long as it lives (writes `0` to it), and enables it
/// again when dropped, however the test ends.
struct Disabled(Option<PathBuf>);

impl Drop for Disabled {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fs::write(path, "1");
        }
    }
}

#[test]
fn a_platform_without_an_emulator_fails_with_what_to_install_and_stores_nothing() {
    // linux/s390x: no qemu-s390x is registered here (scripts/test.sh registers aarch64 only);
    // if one is, it is turned off for the test and back on after.
    let entry = Path::new(BINFMT).join("qemu-s390x");
    let _restore = if emulator_registered("qemu-s390x") {
        if fs::write(&entry, "0").is_err() {
            skip_or_fail("qemu-s390x is registered and this test cannot turn it off (needs root)");
            return;
        }
        Disabled(Some(entry))
    } else {
        Disabled(None)
    };
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY hello /hello\nRUN [\"/hello\"]\n",
        ),
        ("hello", "not a program\n"),
    ]);
    ok(
        kiln_root(root.path(), &["images"], ctx.path(), &[]),
        "kiln images",
    );
    let before = store_contents(root.path());
    let run = kiln_root(
        root.path(),
        &[
            "build",
            "--platform",
            "linux/amd64,linux/s390x",
            "-t",
            "never:1",
            ".",
        ],
        ctx.path(),
        &[],
    );
    assert_ne!(run.status, 0, "the build should fail:\n{}", run.stderr);
    for needed in [
        "linux/s390x",
        "cannot run its programs",
        "apt-get install qemu-user-static",
        "/usr/lib/binfmt.d/qemu-s390x.conf",
        "/proc/sys/fs/binfmt_misc/register",
    ] {
        assert!(
            run.stderr.contains(needed),
            "no {needed:?} in:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        store_contents(root.path()),
        before,
        "the store changed:\n{}",
        run.stderr
    );
}

#[test]
fn a_base_without_the_platform_lists_the_platforms_it_has() {
    let work = tempfile::tempdir().unwrap();
    let Some(root) = multi_busybox_store(work.path()) else {
        return;
    };
    let ctx = context(&[("Dockerfile", "FROM busybox:multi\nCOPY Dockerfile /\n")]);
    let run = kiln_root(
        root.path(),
        &[
            "build",
            "--pull=never",
            "--platform",
            "linux/amd64,linux/ppc64le",
            ".",
        ],
        ctx.path(),
        &[],
    );
    assert_ne!(run.status, 0);
    assert!(
        run.stderr.contains("no manifest for linux/ppc64le")
            && run.stderr.contains("linux/amd64, linux/arm64"),
        "{}",
        run.stderr
    );
    // One platform of a multi-platform base: taken from the index.
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("arm.tar");
    ok(
        kiln_root(
            root.path(),
            &[
                "build",
                "--platform",
                "linux/arm64",
                "-o",
                &format!("type=oci,dest={}", archive.display()),
                ".",
            ],
            ctx.path(),
            &[],
        ),
        "arm64 build",
    );
    let image = read_image(&archive);
    assert_eq!(image.config.architecture, "arm64");
}

/// `kiln images` row of `name` (its familiar form).
fn images_row(root: &Path, cwd: &Path, name: &str) -> String {
    let images = ok(kiln_root(root, &["images"], cwd, &[]), "kiln images");
    images
        .stdout
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in:\n{}", images.stdout))
        .to_string()
}

#[test]
fn a_pulled_multi_platform_base_is_kept_as_its_index_and_completed_per_platform() {
    for tool in ["skopeo", "docker-registry"] {
        if !require_tool(tool) {
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let Some(built) = multi_busybox_store(work.path()) else {
        return;
    };
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let docker_config = tempfile::tempdir().unwrap();
    let env = [("DOCKER_CONFIG", docker_config.path().to_str().unwrap())];
    let remote = format!("{}/kiln/busybox:multi", registry.host());
    // kiln push of a multi-platform image of the store pushes its index.
    ok(
        kiln_root(
            built.path(),
            &["push", "busybox:multi", &remote],
            work.path(),
            &env,
        ),
        "kiln push",
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{remote}"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let pushed_index = format!("sha256:{}", sha256_hex(&raw.stdout));
    let pushed: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        pushed["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{pushed}"
    );

    // A fresh store pulls this machine's platform: the name is the registry's index, holding
    // the amd64 image and listing arm64 as not pulled.
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {remote}\nRUN uname -m > /arch\n"),
    )]);
    ok(
        kiln_root(
            root.path(),
            &["pull", "--platform", "linux/amd64", &remote],
            ctx.path(),
            &env,
        ),
        "kiln pull",
    );
    let row = images_row(root.path(), ctx.path(), &remote);
    assert!(row.contains("linux/amd64 (+1 not pulled)"), "{row}");
    // Its index cannot be saved whole; the platform the store holds can.
    let saved = work.path().join("partial.tar");
    let save = kiln_root(
        root.path(),
        &["save", &remote, "-o", saved.to_str().unwrap()],
        ctx.path(),
        &env,
    );
    assert_ne!(save.status, 0);
    assert!(
        save.stderr.contains("linux/arm64 was never pulled")
            && save.stderr.contains("save one platform with --platform"),
        "{}",
        save.stderr
    );
    ok(
        kiln_root(
            root.path(),
            &[
                "save",
                "--platform",
                "linux/amd64",
                &remote,
                "-o",
                saved.to_str().unwrap(),
            ],
            ctx.path(),
            &env,
        ),
        "kiln save --platform of a partly pulled index",
    );
    assert_eq!(read_image(&saved).config.architecture, "amd64");
    let host = ok(
        kiln_root(root.path(), &["inspect", &remote], ctx.path(), &env),
        "kiln inspect of a partly pulled index",
    );
    let host: serde_json::Value = serde_json::from_str(&host.stdout).unwrap();
    assert_eq!(host["IndexDigest"], pushed_index.as_str(), "{host}");
    assert_eq!(
        host["NotPulled"],
        serde_json::json!(["linux/arm64"]),
        "{host}"
    );
    let inspect = kiln_root(
        root.path(),
        &["inspect", "--platform", "linux/arm64", &remote],
        ctx.path(),
        &env,
    );
    assert_ne!(inspect.status, 0);
    assert!(
        inspect.stderr.contains("lists linux/arm64")
            && inspect.stderr.contains("kiln pull --platform linux/arm64"),
        "{}",
        inspect.stderr
    );
    // Offline, the missing platform is an error that says how to get it.
    let offline = kiln_root(
        root.path(),
        &["build", "--pull=never", "--platform", "linux/arm64", "."],
        ctx.path(),
        &env,
    );
    assert_ne!(offline.status, 0);
    assert!(
        offline.stderr.contains("kiln pull --platform linux/arm64")
            && offline.stderr.contains("pulled: linux/amd64"),
        "{}",
        offline.stderr
    );

    // A two-platform build fetches the arm64 image the index lists, by its digest.
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("local");
    ok(
        kiln_root(
            root.path(),
            &[
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "-o",
                &format!("type=local,dest={}", local.display()),
                ".",
            ],
            ctx.path(),
            &env,
        ),
        "two-platform build",
    );
    assert_eq!(
        fs::read_to_string(local.join("linux_arm64/arch")).unwrap(),
        "aarch64\n"
    );
    assert_eq!(
        fs::read_to_string(local.join("linux_amd64/arch")).unwrap(),
        "x86_64\n"
    );
    let row = images_row(root.path(), ctx.path(), &remote);
    assert!(row.contains("linux/amd64,linux/arm64"), "{row}");
    assert!(!row.contains("not pulled"), "{row}");
    let inspect = ok(
        kiln_root(
            root.path(),
            &["inspect", "--platform", "linux/arm64", &remote],
            ctx.path(),
            &env,
        ),
        "kiln inspect --platform linux/arm64",
    );
    let shown: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(shown["IndexDigest"], pushed_index.as_str(), "{shown}");
    assert_eq!(shown["Config"]["architecture"], "arm64");
    ok(
        kiln_root(root.path(), &["history", &remote], ctx.path(), &env),
        "kiln history of an index",
    );

    // Both platforms now come from the store, offline; another platform lists what it has.
    ok(
        kiln_root(
            root.path(),
            &[
                "build",
                "--pull=never",
                "--platform",
                "linux/amd64,linux/arm64",
                ".",
            ],
            ctx.path(),
            &env,
        ),
        "offline two-platform build",
    );
    // (No RUN: the platform's base is looked for, not an emulator.)
    let copy = context(&[("Dockerfile", &format!("FROM {remote}\nCOPY Dockerfile /\n"))]);
    let missing = kiln_root(
        root.path(),
        &["build", "--pull=never", "--platform", "linux/s390x", "."],
        copy.path(),
        &env,
    );
    assert_ne!(missing.status, 0);
    assert!(
        missing.stderr.contains("no manifest for linux/s390x")
            && missing.stderr.contains("linux/amd64, linux/arm64"),
        "{}",
        missing.stderr
    );
    // With a registry, a platform the index lacks is the registry's error, listing them too.
    let asked = kiln_root(
        root.path(),
        &["build", "--platform", "linux/s390x", "."],
        copy.path(),
        &env,
    );
    assert_ne!(asked.status, 0);
    assert!(
        asked.stderr.contains("linux/amd64, linux/arm64"),
        "{}",
        asked.stderr
    );
}

#[test]
fn save_and_load_carry_a_multi_platform_image_as_its_index() {
    for tool in ["skopeo", "umoci"] {
        if !require_tool(tool) {
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let Some(root) = multi_busybox_store(work.path()) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let saved = out.path().join("multi.tar");
    let shown = ok(
        kiln_root(root.path(), &["inspect", "busybox:multi"], work.path(), &[]),
        "kiln inspect",
    );
    let index_digest = serde_json::from_str::<serde_json::Value>(&shown.stdout).unwrap()
        ["IndexDigest"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        kiln_root(
            root.path(),
            &["save", "busybox:multi", "-o", saved.to_str().unwrap()],
            work.path(),
            &[],
        ),
        "kiln save",
    );

    // skopeo reads the index, both platforms, and copies it whole with the same digest.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", saved.display()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(format!("sha256:{}", sha256_hex(&raw.stdout)), index_digest);
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"], "{index}");
    let copied = out.path().join("copied");
    let copy = Command::new("skopeo")
        .args(["copy", "--all"])
        .arg(format!("oci-archive:{}", saved.display()))
        .arg(format!("oci:{}:copy", copied.display()))
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(copied.join("index.json")).unwrap()).unwrap();
    assert_eq!(layout["manifests"][0]["digest"], index_digest.as_str());
    // umoci lists the saved layout's image (it unpacks one platform, saved with --platform).
    let layout_dir = out.path().join("layout");
    fs::create_dir(&layout_dir).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&saved)
        .arg("-C")
        .arg(&layout_dir)
        .status()
        .unwrap();
    assert!(untar.success());
    let listed = Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(&layout_dir)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "multi");
    let arm_saved = out.path().join("arm64.tar");
    ok(
        kiln_root(
            root.path(),
            &[
                "save",
                "--platform",
                "linux/arm64",
                "busybox:multi",
                "-o",
                arm_saved.to_str().unwrap(),
            ],
            work.path(),
            &[],
        ),
        "kiln save --platform linux/arm64",
    );
    let arm_layout = out.path().join("arm-layout");
    fs::create_dir(&arm_layout).unwrap();
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(&arm_saved)
        .arg("-C")
        .arg(&arm_layout)
        .status()
        .unwrap()
        .success());
    let bundle = out.path().join("bundle");
    let unpack = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:multi", arm_layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    assert_eq!(
        fs::read(bundle.join("rootfs/bin/busybox")).unwrap()[18],
        0xb7,
        "the arm64 busybox (ELF machine 183)"
    );
    // A docker archive holds one image: several platforms are refused with what to do.
    let docker = kiln_root(
        root.path(),
        &[
            "save",
            "--format",
            "docker",
            "busybox:multi",
            "-o",
            out.path().join("d.tar").to_str().unwrap(),
        ],
        work.path(),
        &[],
    );
    assert_ne!(docker.status, 0);
    assert!(
        docker.stderr.contains("a docker archive holds one image")
            && docker.stderr.contains("--platform"),
        "{}",
        docker.stderr
    );

    // Loaded into another store: the same index, every platform, runnable.
    let other = tempfile::tempdir().unwrap();
    let loaded = ok(
        kiln_root(
            other.path(),
            &["load", "-i", saved.to_str().unwrap()],
            work.path(),
            &[],
        ),
        "kiln load",
    );
    assert!(
        loaded
            .stdout
            .contains("loaded busybox:multi (linux/amd64, linux/arm64)"),
        "{}",
        loaded.stdout
    );
    let row = images_row(other.path(), work.path(), "busybox:multi");
    assert!(row.contains("linux/amd64,linux/arm64"), "{row}");
    ok(
        kiln_root(other.path(), &["verify"], work.path(), &[]),
        "kiln verify of the loaded index",
    );
    let shown = ok(
        kiln_root(
            other.path(),
            &["inspect", "--platform", "linux/arm64", "busybox:multi"],
            work.path(),
            &[],
        ),
        "kiln inspect of the loaded image",
    );
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["IndexDigest"], index_digest.as_str());
    let arm = ok(
        kiln_root(
            other.path(),
            &[
                "run",
                "--platform",
                "linux/arm64",
                "busybox:multi",
                "uname",
                "-m",
            ],
            work.path(),
            &[],
        ),
        "kiln run of the loaded arm64 image",
    );
    assert_eq!(arm.stdout, "aarch64\n");
    let again = out.path().join("again.tar");
    ok(
        kiln_root(
            other.path(),
            &["save", "busybox:multi", "-o", again.to_str().unwrap()],
            work.path(),
            &[],
        ),
        "kiln save of the loaded image",
    );
    assert_eq!(fs::read(&again).unwrap(), fs::read(&saved).unwrap());

    // The archive as a base: each platform takes its manifest; another lists what there is.
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM oci-archive:{}\nCOPY Dockerfile /\n", saved.display()),
    )]);
    let local = out.path().join("local");
    ok(
        kiln_root(
            other.path(),
            &[
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "-o",
                &format!("type=local,dest={}", local.display()),
                ".",
            ],
            ctx.path(),
            &[],
        ),
        "build from the archive",
    );
    assert_eq!(
        fs::read(local.join("linux_arm64/bin/busybox")).unwrap()[18],
        0xb7
    );
    // An OCI layout directory (what skopeo copied) gives each platform's manifest the same way.
    let from_layout = context(&[(
        "Dockerfile",
        &format!("FROM oci:{}:copy\nCOPY Dockerfile /\n", copied.display()),
    )]);
    let arm_layout_out = out.path().join("from-layout.tar");
    ok(
        kiln_root(
            other.path(),
            &[
                "build",
                "--platform",
                "linux/arm64",
                "-o",
                &format!("type=oci,dest={}", arm_layout_out.display()),
                ".",
            ],
            from_layout.path(),
            &[],
        ),
        "build from the layout",
    );
    assert_eq!(read_image(&arm_layout_out).config.architecture, "arm64");
    let missing = kiln_root(
        other.path(),
        &["build", "--platform", "linux/s390x", "."],
        ctx.path(),
        &[],
    );
    assert_ne!(missing.status, 0);
    assert!(
        missing.stderr.contains("linux/s390x")
            && missing.stderr.contains("linux/amd64, linux/arm64"),
        "{}",
        missing.stderr
    );
}

/// A cross-compile recipe without RUN (nothing to emulate): a shared build-platform stage and
/// a final stage per platform.
const CROSS_COPY: &str = "FROM --platform=$BUILDPLATFORM scratch AS cross\n\
COPY a /a\n\
\n\
FROM scratch\n\
ARG TARGETARCH\n\
COPY --from=cross /a /a-$TARGETARCH\n";

#[test]
fn graph_and_check_cover_every_platform_of_the_list() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&[("Dockerfile", CROSS_COPY), ("a", "shared\n")]);
    let two = ["--platform", "linux/amd64,linux/arm64"];
    let count = |text: &str, needle: &str| text.lines().filter(|l| l.starts_with(needle)).count();

    // The graph: the shared stage once, the final stage once per platform.
    let graph = |root: &Path| {
        let mut args = vec!["graph"];
        args.extend_from_slice(&two);
        args.push(".");
        ok(kiln_root(root, &args, ctx.path(), &[]), "kiln graph").stdout
    };
    let before = graph(root.path());
    assert_eq!(
        count(
            &before,
            "stage cross (#0) [linux/amd64, linux/arm64] FROM scratch"
        ),
        1,
        "{before}"
    );
    assert_eq!(
        count(&before, "stage #1 [linux/amd64] FROM scratch"),
        1,
        "{before}"
    );
    assert_eq!(
        count(&before, "stage #1 [linux/arm64] FROM scratch"),
        1,
        "{before}"
    );
    assert_eq!(count(&before, "stage "), 3, "{before}");
    assert!(!before.contains("CACHED"), "{before}");
    // After a build of amd64 alone, the graph keys each platform's steps for that platform:
    // the shared stage and amd64's are cached, arm64's would run.
    ok(
        kiln_root(
            root.path(),
            &["build", "--platform", "linux/amd64", "."],
            ctx.path(),
            &[],
        ),
        "amd64 build",
    );
    let after = graph(root.path());
    let step_after = |stage: &str| {
        let lines: Vec<&str> = after.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with(stage))
            .unwrap_or_else(|| panic!("no {stage} in {after}"));
        lines[at + 2].to_string()
    };
    assert!(
        step_after("stage #1 [linux/amd64]").contains("CACHED"),
        "{after}"
    );
    assert!(
        step_after("stage #1 [linux/arm64]").contains(" RUN "),
        "{after}"
    );
    assert!(after.lines().nth(1).unwrap().contains("CACHED"), "{after}");
    let dot = ok(
        kiln_root(
            root.path(),
            &[
                "graph",
                "--platform",
                "linux/amd64,linux/arm64",
                "--format",
                "dot",
                ".",
            ],
            ctx.path(),
            &[],
        ),
        "kiln graph --format dot",
    );
    assert_eq!(
        dot.stdout.matches("subgraph cluster_").count(),
        3,
        "{}",
        dot.stdout
    );
    assert_eq!(
        dot.stdout.matches("label=\"COPY --from\"").count(),
        2,
        "{}",
        dot.stdout
    );

    // --check plans every platform and says which stages are shared.
    let check = ok(
        kiln_root(
            root.path(),
            &["build", "--check", two[0], two[1], "."],
            ctx.path(),
            &[],
        ),
        "kiln build --check",
    );
    assert!(
        check
            .stdout
            .starts_with("Dockerfile: valid for linux/amd64, linux/arm64, 2 stages"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("built once for linux/amd64, linux/arm64"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("built for each of linux/amd64; linux/arm64"),
        "{}",
        check.stdout
    );
    // An error of some platforms only is shown where it is, saying for which.
    let variant = context(&[(
        "Dockerfile",
        "FROM scratch\nARG TARGETVARIANT\nENV V=\"${TARGETVARIANT:?needs a variant}\"\n",
    )]);
    let failed = kiln_root(
        root.path(),
        &[
            "build",
            "--check",
            "--platform",
            "linux/arm/v7,linux/amd64,linux/s390x",
            ".",
        ],
        variant.path(),
        &[],
    );
    assert_eq!(failed.status, 1, "{}", failed.stderr);
    assert!(
        failed
            .stderr
            .contains("needs a variant (for linux/amd64, linux/s390x)"),
        "{}",
        failed.stderr
    );
    assert!(failed.stderr.contains("Dockerfile:3:"), "{}", failed.stderr);
    assert!(failed.stderr.contains("1 error(s)"), "{}", failed.stderr);
}

#[test]
fn index_annotations_go_on_the_index_its_entries_and_its_descriptor() {
    if !require_tool("skopeo") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&[("Dockerfile", CROSS_COPY), ("a", "shared\n")]);
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("two.tar");
    ok(
        kiln_root(
            root.path(),
            &[
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "--annotation",
                "index:org.opencontainers.image.title=app",
                "--annotation",
                "manifest-descriptor:com.example.entry=each",
                "--annotation",
                "index-descriptor:com.example.outer=listed",
                "--annotation",
                "index,manifest:com.example.both=yes",
                "--annotation",
                "com.example.plain=manifest",
                "-t",
                "two:1",
                "-o",
                &format!("type=oci,dest={}", archive.display()),
                ".",
            ],
            ctx.path(),
            &[],
        ),
        "annotated two-platform build",
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        index["annotations"],
        serde_json::json!({"org.opencontainers.image.title": "app", "com.example.both": "yes"}),
        "{index}"
    );
    for entry in index["manifests"].as_array().unwrap() {
        let is_image = entry["platform"]["os"] == "linux";
        assert_eq!(
            entry["annotations"]["com.example.entry"].as_str(),
            is_image.then_some("each"),
            "{entry}"
        );
        if is_image {
            // Each platform's manifest has the manifest annotations, not the index's.
            let digest = entry["digest"].as_str().unwrap();
            let manifest = Command::new("tar")
                .arg("-xOf")
                .arg(&archive)
                .arg(format!(
                    "blobs/sha256/{}",
                    digest.trim_start_matches("sha256:")
                ))
                .output()
                .unwrap();
            let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
            assert_eq!(
                manifest["annotations"],
                serde_json::json!({"com.example.plain": "manifest", "com.example.both": "yes"}),
                "{manifest}"
            );
        }
    }
    let layout = Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("index.json")
        .output()
        .unwrap();
    let layout: serde_json::Value = serde_json::from_slice(&layout.stdout).unwrap();
    assert_eq!(
        layout["manifests"][0]["annotations"]["com.example.outer"], "listed",
        "{layout}"
    );
    assert!(index.get("com.example.outer").is_none());

    // One platform without attestations has no index: the build says so, and names nothing.
    let single = kiln_root(
        root.path(),
        &[
            "build",
            "--annotation",
            "index:org.opencontainers.image.title=app",
            "-t",
            "one:1",
            ".",
        ],
        ctx.path(),
        &[],
    );
    assert_eq!(single.status, 1, "{}", single.stderr);
    assert!(
        single.stderr.contains("--annotation index")
            && single.stderr.contains("writes no image index"),
        "{}",
        single.stderr
    );
    // Refused before anything is built: no step is shown.
    assert!(!single.stderr.contains("#1 "), "{}", single.stderr);
    let images = ok(
        kiln_root(root.path(), &["images"], ctx.path(), &[]),
        "images",
    );
    assert!(!images.stdout.contains("one:1"), "{}", images.stdout);
    // One platform with its attestations (an OCI archive has them by default) has an index.
    let one = out.path().join("one.tar");
    ok(
        kiln_root(
            root.path(),
            &[
                "build",
                "--annotation",
                "index:org.opencontainers.image.title=one",
                "-o",
                &format!("type=oci,dest={}", one.display()),
                ".",
            ],
            ctx.path(),
            &[],
        ),
        "annotated one-platform build with attestations",
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", one.display()))
        .output()
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        index["annotations"]["org.opencontainers.image.title"], "one",
        "{index}"
    );
    // An unknown type is a usage error, as buildx's.
    let bogus = kiln_root(
        root.path(),
        &["build", "--annotation", "bogus:a=b", "."],
        ctx.path(),
        &[],
    );
    assert_eq!(bogus.status, 2, "{}", bogus.stderr);
    assert!(
        bogus.stderr.contains("unknown annotation type"),
        "{}",
        bogus.stderr
    );
}
