//! kiln's own image (issue 15): examples/ci/Dockerfile built by kiln itself, then used as a CI
//! image. No image can be pulled here, so the recipe's two outside inputs are given the way
//! its header documents: the base with `--build-arg BASE=` (a busybox root with the shared
//! libraries this test's dynamically linked kiln needs, as a named context) and the binary with
//! `--build-context build=DIR` (this test's kiln, stripped, in place of the Rust stage; the
//! compile itself is `cargo build`'s business, not the recipe's). The image must be small (the
//! base, the binary and a user, nothing of the build) and run as a non-root user; podman then
//! runs it to `kiln build` a mounted context and push to a registry that wants a password,
//! given once as a mounted config.json and once as environment variables.
//!
//! Needs podman, strip (binutils), docker-registry and htpasswd.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::containers::{busybox_root, Podman};
use common::registry::{base64, docker_config, http, run_bounded, RegistryAuth, TestRegistry};
use common::{busybox_store, kiln, require_tool, EPOCH};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const USER: &str = "ci-robot";
const PASSWORD: &str = "own-image-pw-7d1f";
const LIMIT: Duration = Duration::from_secs(300);

fn open_to_all(dir: &Path) {
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// GET with the test's credentials; the JSON answer. A tag that names an image index (a push
/// with the default provenance attached) answers with the index's image manifest.
fn get(host: &str, path: &str) -> Value {
    let answer = get_raw(host, path);
    if answer["mediaType"] != "application/vnd.oci.image.index.v1+json" {
        return answer;
    }
    let image = answer["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["os"] != "unknown")
        .unwrap_or_else(|| panic!("no image in the index: {answer}"));
    let repository = path.rsplit_once("/manifests/").unwrap().0;
    get_raw(
        host,
        &format!(
            "{repository}/manifests/{}",
            image["digest"].as_str().unwrap()
        ),
    )
}

fn get_raw(host: &str, path: &str) -> Value {
    let auth = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
    let answer = http(
        "GET",
        host,
        path,
        &[
            ("Authorization", &auth),
            (
                "Accept",
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            ),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
    serde_json::from_slice(&answer.body).unwrap()
}

/// Total bytes of the files under `dir` (symbolic links not followed).
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.path().symlink_metadata().unwrap();
        if meta.is_dir() {
            total += tree_size(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

#[test]
fn kilns_own_image_is_small_non_root_and_builds_and_pushes_in_a_container() {
    let Some(podman) = Podman::new() else {
        return;
    };
    if !require_tool("strip") {
        return;
    }
    let registry = TestRegistry::start(RegistryAuth::basic(USER, PASSWORD));
    let host = registry.host();
    let work = tempfile::Builder::new()
        .prefix("kiln-own-image")
        .tempdir_in("/var/tmp")
        .unwrap();
    let w = work.path();
    let host_config = w.join("host-docker");
    docker_config(&host_config, &host, USER, PASSWORD);
    let config_env = [("DOCKER_CONFIG", host_config.to_str().unwrap())];

    // The recipe's inputs: a base (root only: the recipe adds its user) and the binary.
    let base = w.join("base");
    busybox_root(&base, "root:x:0:0:root:/root:/bin/sh\n", "root:x:0:\n");
    let binary = w.join("binary/out/usr/local/bin/kiln");
    fs::create_dir_all(binary.parent().unwrap()).unwrap();
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&binary)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .status()
        .unwrap();
    assert!(stripped.success());
    let empty_context = w.join("empty");
    fs::create_dir(&empty_context).unwrap();
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ci/Dockerfile");
    let image = format!("{host}/tools/kiln:test");
    let store = w.join("store");
    let built = kiln(
        &[
            "--root",
            store.to_str().unwrap(),
            "build",
            "--progress=plain",
            "-f",
            recipe.to_str().unwrap(),
            "--build-arg",
            "BASE=kiln-test-base",
            "--build-context",
            &format!("kiln-test-base={}", base.display()),
            "--build-context",
            &format!("build={}", w.join("binary").display()),
            "-t",
            &image,
            "--push",
            empty_context.to_str().unwrap(),
        ],
        w,
        &config_env,
    );
    assert_eq!(built.status, 0, "building kiln's image:\n{}", built.stderr);
    assert!(
        !built.stderr.contains("rust:"),
        "the Rust stage was not needed:\n{}",
        built.stderr
    );

    // Small: the base, the binary and the user, nothing else.
    let manifest = get(&host, "/v2/tools/kiln/manifests/test");
    let layers = manifest["layers"].as_array().unwrap();
    // The base, the binary, the user and WORKDIR's (empty) layer.
    assert!(layers.len() <= 4, "base, binary, user: {manifest}");
    let image_bytes: u64 = layers.iter().map(|l| l["size"].as_u64().unwrap()).sum();
    let inputs = tree_size(&base) + fs::metadata(&binary).unwrap().len();
    assert!(
        image_bytes <= inputs + (64 << 10),
        "{image_bytes} bytes of layers for {inputs} bytes of base and binary"
    );
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config = get(&host, &format!("/v2/tools/kiln/blobs/{config_digest}"));
    assert_eq!(config["config"]["User"], "1000", "{config}");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/kiln"])
    );
    eprintln!(
        "kiln's image: {image_bytes} bytes in {} layers (stripped debug binary {} bytes)",
        layers.len(),
        fs::metadata(&binary).unwrap().len()
    );

    // Into podman, from the registry, with the password.
    let pull = run_bounded(
        podman.command().args([
            "pull",
            "-q",
            "--tls-verify=false",
            "--creds",
            &format!("{USER}:{PASSWORD}"),
            &image,
        ]),
        LIMIT,
    );
    assert_eq!(pull.status, 0, "podman pull: {}", pull.stderr);
    let who = run_bounded(
        podman.command().args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            &image,
            "-c",
            "id -u; grep ^kiln: /etc/passwd; /usr/local/bin/kiln --version",
        ]),
        LIMIT,
    );
    assert_eq!(who.status, 0, "{}", who.stderr);
    let lines: Vec<&str> = who.stdout.lines().collect();
    assert_eq!(
        lines[0], "1000",
        "the image runs as uid 1000: {}",
        who.stdout
    );
    assert!(lines[1].starts_with("kiln:x:1000:1000:"), "{}", who.stdout);

    // An application to build in CI: its base in the same registry (a pull with credentials
    // too), one RUN.
    let app_base = busybox_store("auto");
    let pushed = kiln(
        &[
            "--root",
            app_base.path().to_str().unwrap(),
            "push",
            "busybox:test",
            &format!("{host}/base/busybox:1"),
        ],
        w,
        &config_env,
    );
    assert_eq!(pushed.status, 0, "{}", pushed.stderr);
    let app = w.join("app");
    fs::create_dir(&app).unwrap();
    fs::write(
        app.join("Dockerfile"),
        format!("FROM {host}/base/busybox:1\nCOPY greeting /greeting\nRUN cat /greeting > /built-in-ci\n"),
    )
    .unwrap();
    fs::write(app.join("greeting"), "hello from kiln's image\n").unwrap();
    let mounted_config = w.join("mounted-docker");
    docker_config(&mounted_config, &host, USER, PASSWORD);
    fs::set_permissions(w, fs::Permissions::from_mode(0o755)).unwrap();
    open_to_all(&app);
    open_to_all(&mounted_config);

    let ci_build = |tag: &str, options: &[String]| -> String {
        let mut command = podman.command();
        command
            .args([
                "run",
                "--rm",
                "--network",
                "host",
                "-e",
                &format!("SOURCE_DATE_EPOCH={EPOCH}"),
                "-v",
                &format!("{}:/workspace:ro", app.display()),
            ])
            .args(options)
            .args([
                &image,
                "build",
                "--progress=plain",
                "-t",
                &format!("{host}/team/app:{tag}"),
                "--push",
                "/workspace",
            ]);
        let run = run_bounded(&mut command, LIMIT);
        assert!(!run.timed_out, "{tag}: {}", run.stderr);
        assert_eq!(run.status, 0, "{tag}:\n{}", run.stderr);
        assert!(
            run.stderr.starts_with("isolation: userns (uid 1000"),
            "{tag}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains(PASSWORD), "{tag}: {}", run.stderr);
        let answer = get(&host, &format!("/v2/team/app/manifests/{tag}"));
        kiln_oci::sha256_digest(&serde_json::to_vec(&answer).unwrap()).to_string()
    };
    // Credentials from a mounted config.json (a Kubernetes docker-registry Secret).
    let from_file = ci_build(
        "from-config-json",
        &[
            "-v".to_string(),
            format!("{}:/home/kiln/.docker:ro", mounted_config.display()),
        ],
    );
    // Credentials from environment variables (a CI job's masked variables).
    let from_env = ci_build(
        "from-environment",
        &[
            "-e".to_string(),
            format!("KILN_REGISTRY_HOST={host}"),
            "-e".to_string(),
            format!("KILN_REGISTRY_USERNAME={USER}"),
            "-e".to_string(),
            format!("KILN_REGISTRY_PASSWORD={PASSWORD}"),
        ],
    );
    assert_eq!(from_file, from_env, "the same recipe, the same image");
}
