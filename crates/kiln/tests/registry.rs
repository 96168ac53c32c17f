//! kiln against a real registry (Debian's docker-registry, started on 127.0.0.1 by the
//! harness): push, pull, authentication, the registry cache, and faults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::registry::{docker_config, RegistryAuth, TestRegistry};
use common::{busybox_store, context, files_under, kiln, Run, EPOCH};
use std::path::Path;
use std::process::Command;

fn root_arg(root: &Path) -> String {
    root.display().to_string()
}

/// kiln with a store and a docker config dir of the test's own (no credentials of the machine).
fn kiln_in(root: &Path, config: &Path, args: &[&str]) -> Run {
    let root = root_arg(root);
    let mut all = vec!["--root", root.as_str()];
    all.extend_from_slice(args);
    kiln(
        &all,
        config,
        &[
            ("DOCKER_CONFIG", config.to_str().unwrap()),
            ("SOURCE_DATE_EPOCH", EPOCH),
        ],
    )
}

fn ok(run: Run, what: &str) -> Run {
    assert_eq!(
        run.status, 0,
        "{what} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo").args(args).output().unwrap()
}

/// The digest skopeo reads for an image in the registry.
fn skopeo_digest(host: &str, image: &str) -> String {
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{host}/{image}"),
    ]);
    assert!(
        out.status.success(),
        "skopeo inspect {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    value["Digest"].as_str().unwrap().to_string()
}

/// Builds `recipe` in `ctx` on store `root`; the build's stderr (json progress) and image ID.
fn build_json(root: &Path, config: &Path, ctx: &Path, extra: &[&str]) -> (String, String) {
    let ctx_arg = ctx.display().to_string();
    let mut args = vec!["build", "--progress=json"];
    args.extend_from_slice(extra);
    args.push(ctx_arg.as_str());
    let run = ok(kiln_in(root, config, &args), "build");
    let image = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "built")
        .map(|v| v["manifest"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no built event:\n{}", run.stderr));
    (run.stderr, image)
}

fn events<'a>(log: &'a str, kind: &'a str) -> impl Iterator<Item = serde_json::Value> + 'a {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(move |v| v["event"] == kind)
}

/// A store with `busybox:test` pushed to the registry as `base/busybox:1`.
fn pushed_base(registry: &TestRegistry, config: &Path) -> tempfile::TempDir {
    let store = busybox_store("auto");
    let target = format!("{}/base/busybox:1", registry.host());
    ok(
        kiln_in(store.path(), config, &["push", "busybox:test", &target]),
        "push base",
    );
    store
}

#[test]
fn push_prune_pull_keeps_the_digest_and_skopeo_reads_it() {
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let config = tempfile::tempdir().unwrap();
    let store = busybox_store("auto");
    let host = registry.host();
    let target = format!("{host}/kiln/round:1");
    let pushed = ok(
        kiln_in(
            store.path(),
            config.path(),
            &["push", "busybox:test", &target],
        ),
        "push",
    );
    let digest = pushed.stdout.trim().to_string();
    assert!(digest.starts_with("sha256:"), "{}", pushed.stdout);
    assert_eq!(skopeo_digest(&host, "kiln/round:1"), digest);

    // Pushed again: every blob is there already, nothing is uploaded.
    let again = ok(
        kiln_in(
            store.path(),
            config.path(),
            &["push", "--progress=json", "busybox:test", &target],
        ),
        "push again",
    );
    let outcomes: Vec<String> = events(&again.stderr, "transfer")
        .filter(|e| e["state"] == "done")
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect();
    assert!(!outcomes.is_empty(), "{}", again.stderr);
    assert!(outcomes.iter().all(|o| o == "existed"), "{outcomes:?}");

    ok(
        kiln_in(store.path(), config.path(), &["rmi", "busybox:test"]),
        "rmi",
    );
    ok(
        kiln_in(store.path(), config.path(), &["prune", "--all"]),
        "prune",
    );
    let pulled = ok(
        kiln_in(store.path(), config.path(), &["pull", &target]),
        "pull",
    );
    assert_eq!(pulled.stdout.trim(), digest);
    let images = ok(kiln_in(store.path(), config.path(), &["images"]), "images");
    assert!(images.stdout.contains("kiln/round"), "{}", images.stdout);
    ok(kiln_in(store.path(), config.path(), &["verify"]), "verify");
    // What was pulled runs.
    let run = ok(
        kiln_in(
            store.path(),
            config.path(),
            &["run", &target, "echo", "hello"],
        ),
        "run the pulled image",
    );
    assert_eq!(run.stdout.trim(), "hello");
}

#[test]
fn builds_from_what_skopeo_pushed_and_reuses_it_offline() {
    let mut registry = TestRegistry::start(RegistryAuth::Anonymous);
    let config = tempfile::tempdir().unwrap();
    let host = registry.host();
    let base = busybox_store("auto");
    let archive = base.path().join("busybox.tar");
    ok(
        kiln_in(
            base.path(),
            config.path(),
            &["save", "-o", archive.to_str().unwrap(), "busybox:test"],
        ),
        "save",
    );
    let copied = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{host}/skopeo/busybox:2"),
    ]);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM {host}/skopeo/busybox:2\nRUN echo built > /built\nCMD [\"cat\", \"/built\"]\n"
        ),
    )]);
    let store = tempfile::tempdir().unwrap();
    let (log, first) = build_json(store.path(), config.path(), ctx.path(), &[]);
    assert!(
        events(&log, "transfer").any(|e| e["state"] == "done"),
        "the base was pulled: {log}"
    );
    // The registry is gone: the store's copy serves the next build, unless --pull asks.
    registry.stop();
    let (_, second) = build_json(store.path(), config.path(), ctx.path(), &["--no-cache"]);
    assert_eq!(first, second);
    let refreshed = kiln_in(
        store.path(),
        config.path(),
        &["build", "--pull", ctx.path().to_str().unwrap()],
    );
    assert_ne!(refreshed.status, 0);
    assert!(
        refreshed.stderr.contains(&host),
        "the error names the registry: {}",
        refreshed.stderr
    );
}

#[test]
fn basic_auth_needs_login_and_logout_forgets() {
    let registry = TestRegistry::start(RegistryAuth::Basic {
        user: "ci".into(),
        password: "s3cret-pw".into(),
    });
    let config = tempfile::tempdir().unwrap();
    let store = busybox_store("auto");
    let host = registry.host();
    let target = format!("{host}/private/app:1");
    let refused = kiln_in(
        store.path(),
        config.path(),
        &["push", "busybox:test", &target],
    );
    assert_ne!(refused.status, 0);
    assert!(
        refused.stderr.contains("kiln login"),
        "the error says how to log in: {}",
        refused.stderr
    );

    let wrong = login(store.path(), config.path(), &host, "ci", "wrong");
    assert_ne!(wrong.status, 0, "a wrong password is refused");
    ok(
        login(store.path(), config.path(), &host, "ci", "s3cret-pw"),
        "login",
    );
    let saved = std::fs::read_to_string(config.path().join("config.json")).unwrap();
    assert!(saved.contains(&host), "{saved}");
    ok(
        kiln_in(
            store.path(),
            config.path(),
            &["push", "busybox:test", &target],
        ),
        "push after login",
    );
    ok(
        kiln_in(store.path(), config.path(), &["logout", &host]),
        "logout",
    );
    let saved = std::fs::read_to_string(config.path().join("config.json")).unwrap();
    assert!(!saved.contains(&host), "{saved}");
    let pull = kiln_in(
        tempfile::tempdir().unwrap().path(),
        config.path(),
        &["pull", &target],
    );
    assert_ne!(pull.status, 0, "logged out: no access");
}

fn login(root: &Path, config: &Path, host: &str, user: &str, password: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "--root",
            &root_arg(root),
            "login",
            host,
            "-u",
            user,
            "--password-stdin",
        ])
        .env("DOCKER_CONFIG", config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn token_auth_pulls_anonymously_pushes_with_credentials_and_mounts_across_repositories() {
    let registry = TestRegistry::start(RegistryAuth::Token {
        user: "ci".into(),
        password: "tok-pw".into(),
    });
    let host = registry.host();
    let anonymous = tempfile::tempdir().unwrap();
    let store = busybox_store("auto");
    let refused = kiln_in(
        store.path(),
        anonymous.path(),
        &["push", "busybox:test", &format!("{host}/team/base:1")],
    );
    assert_ne!(refused.status, 0, "anonymous push is refused");

    let config = tempfile::tempdir().unwrap();
    docker_config(config.path(), &host, "ci", "tok-pw");
    ok(
        kiln_in(
            store.path(),
            config.path(),
            &["push", "busybox:test", &format!("{host}/team/base:1")],
        ),
        "push with a token",
    );
    // The store now knows team/base holds these blobs: a push to another repository of the
    // same registry mounts them instead of uploading.
    let copy = ok(
        kiln_in(
            store.path(),
            config.path(),
            &[
                "push",
                "--progress=json",
                &format!("{host}/team/base:1"),
                &format!("{host}/team/other:1"),
            ],
        ),
        "push to a second repository",
    );
    let mounted = events(&copy.stderr, "transfer")
        .filter(|e| e["outcome"] == "mounted")
        .count();
    assert!(mounted >= 1, "{}", copy.stderr);

    let fresh = tempfile::tempdir().unwrap();
    ok(
        kiln_in(
            fresh.path(),
            anonymous.path(),
            &["pull", &format!("{host}/team/other:1")],
        ),
        "anonymous pull with a token",
    );
}

/// A recipe of two stages, each with RUN steps, FROM the pushed base.
fn cache_recipe(host: &str) -> tempfile::TempDir {
    context(&[
        (
            "Dockerfile",
            &format!(
                "FROM {host}/base/busybox:1 AS tools\nRUN echo tool > /tool && sleep 0\nRUN --mount=type=cache,target=/var/cache/pkg sh -c 'echo warm >> /var/cache/pkg/log; cat /var/cache/pkg/log | wc -l > /cache-lines'\n\nFROM {host}/base/busybox:1\nCOPY app.txt /app.txt\nCOPY --from=tools /tool /tool\nRUN cat /app.txt /tool > /both\n"
            ),
        ),
        ("app.txt", "app\n"),
    ])
}

fn assert_all_cached(log: &str) {
    let ran: Vec<_> = events(log, "running").collect();
    assert!(ran.is_empty(), "steps ran: {ran:?}\n{log}");
    assert!(events(log, "cached").count() >= 5, "{log}");
}

/// The CI round: the registry's base, the two-stage cache recipe, a build on store A with
/// `--cache-to to`, then one on an empty store B with `--cache-from from`.
struct CacheRound {
    _registry: TestRegistry,
    config: tempfile::TempDir,
    host: String,
    ctx: tempfile::TempDir,
    image_a: String,
    store_b: tempfile::TempDir,
    log_b: String,
    image_b: String,
}

fn cache_round(to: impl Fn(&str) -> String, from: impl Fn(&str) -> String) -> CacheRound {
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let config = tempfile::tempdir().unwrap();
    let host = registry.host();
    let _base = pushed_base(&registry, config.path());
    let ctx = cache_recipe(&host);
    let store_a = tempfile::tempdir().unwrap();
    let (_, image_a) = build_json(
        store_a.path(),
        config.path(),
        ctx.path(),
        &["--cache-to", &to(&host)],
    );
    let store_b = tempfile::tempdir().unwrap();
    let (log_b, image_b) = build_json(
        store_b.path(),
        config.path(),
        ctx.path(),
        &["--cache-from", &from(&host)],
    );
    CacheRound {
        _registry: registry,
        config,
        host,
        ctx,
        image_a,
        store_b,
        log_b,
        image_b,
    }
}

#[test]
fn a_registry_cache_lets_an_empty_store_skip_every_step() {
    let cache = |host: &str| format!("type=registry,ref={host}/cache/app:buildcache");
    let round = cache_round(cache, cache);
    assert_all_cached(&round.log_b);
    assert_eq!(
        round.image_a, round.image_b,
        "the same image, built nowhere"
    );
    // The image the cache gave is whole: it runs.
    let (store_b, config) = (round.store_b.path(), round.config.path());
    let name = image_b_name(store_b, config, round.ctx.path());
    let run = ok(
        kiln_in(store_b, config, &["run", &name, "cat", "/both"]),
        "run",
    );
    assert_eq!(run.stdout, "app\ntool\n");
}

/// Tags the last build of `ctx` in `root` and gives the name.
fn image_b_name(root: &Path, config: &Path, ctx: &Path) -> String {
    ok(
        kiln_in(
            root,
            config,
            &["build", "-q", "-t", "cached:1", ctx.to_str().unwrap()],
        ),
        "tag",
    );
    "cached:1".into()
}

#[test]
fn mode_min_carries_only_the_final_image() {
    let round = cache_round(
        |host| format!("type=registry,ref={host}/cache/min:1,mode=min"),
        |host| format!("type=registry,ref={host}/cache/min:1"),
    );
    let log = round.log_b;
    // The final stage's steps hit; the tools stage, whose layers are not in the image, runs.
    let ran: Vec<String> = events(&log, "running")
        .map(|e| e["number"].to_string())
        .collect();
    assert!(!ran.is_empty(), "{log}");
    let steps: Vec<serde_json::Value> = events(&log, "step").collect();
    for number in &ran {
        let step = steps
            .iter()
            .find(|s| &s["number"].to_string() == number)
            .unwrap();
        assert!(
            step["stage"].as_str().unwrap().starts_with("tools"),
            "only the tools stage runs: {step}"
        );
    }
}

#[test]
fn a_local_cache_carries_cache_mounts_to_another_store() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let round = cache_round(
        |_| format!("type=local,dest={},cache-mounts=true", cache_dir.display()),
        |_| format!("type=local,src={}", cache_dir.display()),
    );
    assert!(cache_dir.join("index.json").is_file());
    assert_all_cached(&round.log_b);
    let (host, ctx, config, store_b) = (&round.host, &round.ctx, &round.config, &round.store_b);
    // The cache mount came along: a step that reads it, run on store B, sees store A's line.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {host}/base/busybox:1\nRUN --mount=type=cache,target=/var/cache/pkg cat /var/cache/pkg/log\n"
        ),
    )
    .unwrap();
    let (log, _) = build_json(store_b.path(), config.path(), ctx.path(), &[]);
    let output: Vec<String> = events(&log, "output")
        .map(|e| e["line"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(output, ["warm"], "{log}");
}

#[test]
fn an_inline_cache_travels_in_the_pushed_image() {
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let config = tempfile::tempdir().unwrap();
    let host = registry.host();
    let _base = pushed_base(&registry, config.path());
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {host}/base/busybox:1\nRUN echo one > /one\nRUN echo two > /two\n"),
    )]);
    let name = format!("{host}/app/inline:1");
    let store_a = tempfile::tempdir().unwrap();
    let (_, image_a) = build_json(
        store_a.path(),
        config.path(),
        ctx.path(),
        &["--cache-to", "type=inline", "-t", &name, "--push"],
    );
    let store_b = tempfile::tempdir().unwrap();
    let (log, image_b) = build_json(
        store_b.path(),
        config.path(),
        ctx.path(),
        &["--cache-from", &name, "--cache-to", "type=inline"],
    );
    assert!(events(&log, "running").next().is_none(), "{log}");
    assert_eq!(image_a, image_b);
}

#[test]
fn a_push_survives_the_registry_restarting_midway() {
    let mut registry = TestRegistry::start(RegistryAuth::Anonymous);
    let config = tempfile::tempdir().unwrap();
    let host = registry.host();
    // A layer big enough to be caught mid-upload: 48 MiB that gzip cannot shrink.
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY big /big\n")]);
    let mut data = vec![0u8; 48 << 20];
    let mut state = 0x9e3779b97f4a7c15u64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(ctx.path().join("big"), &data).unwrap();
    let store = tempfile::tempdir().unwrap();
    ok(
        kiln_in(
            store.path(),
            config.path(),
            &["build", "-q", "-t", "big:1", ctx.path().to_str().unwrap()],
        ),
        "build",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "--root",
            &root_arg(store.path()),
            "push",
            "--progress=json",
            "big:1",
            &format!("{host}/fault/big:1"),
        ])
        .env("DOCKER_CONFIG", config.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the registry as soon as the big blob's upload is under way, start it again.
    let stderr = child.stderr.take().unwrap();
    let (moving, moved) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        let mut moving = Some(moving);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("\"progress\"") {
                if let Some(tx) = moving.take() {
                    let _ = tx.send(());
                }
            }
            lines.push(line);
        }
        lines
    });
    moved
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the upload starts");
    registry.stop();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    registry.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "push hangs");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let lines = reader.join().unwrap();
    let log = lines.join("\n");
    assert!(status.success(), "push failed:\n{log}\n{}", registry.log());
    assert!(log.contains("\"retry\""), "the push was retried:\n{log}");
    let pushed = child_stdout(child);
    assert_eq!(skopeo_digest(&host, "fault/big:1"), pushed.trim());
}

fn child_stdout(mut child: std::process::Child) -> String {
    use std::io::Read;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    out
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused_and_not_stored() {
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let config = tempfile::tempdir().unwrap();
    let host = registry.host();
    let store = busybox_store("auto");
    let target = format!("{host}/tamper/busybox:1");
    let pushed = ok(
        kiln_in(
            store.path(),
            config.path(),
            &["push", "busybox:test", &target],
        ),
        "push",
    );
    // Swap the content of the biggest layer in the registry's storage.
    let blobs = registry.storage().join("docker/registry/v2/blobs/sha256");
    let mut biggest: Option<(u64, std::path::PathBuf)> = None;
    for entry in files_under(&blobs) {
        if entry.file_name().is_some_and(|n| n == "data") {
            let size = std::fs::metadata(&entry).unwrap().len();
            if biggest.as_ref().is_none_or(|(s, _)| size > *s) {
                biggest = Some((size, entry));
            }
        }
    }
    let (size, path) = biggest.unwrap();
    let digest = format!(
        "sha256:{}",
        path.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
    );
    std::fs::write(&path, vec![b'x'; size as usize]).unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let pull = kiln_in(fresh.path(), config.path(), &["pull", &target]);
    assert_ne!(pull.status, 0);
    assert!(pull.stderr.contains("digest"), "{}", pull.stderr);
    let stored = fresh
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(!stored.exists(), "the bad blob is not in the store");
    // Nor is the manifest that names it: a manifest in the store always has its blobs.
    let manifest = fresh
        .path()
        .join("blobs/sha256")
        .join(pushed.stdout.trim().trim_start_matches("sha256:"));
    assert!(
        !manifest.exists(),
        "a manifest without its layers is not stored"
    );
    let images = ok(kiln_in(fresh.path(), config.path(), &["images"]), "images");
    assert!(!images.stdout.contains("tamper"), "{}", images.stdout);
}

#[test]
fn a_registry_answering_garbage_gives_a_clear_error() {
    // Not a registry: an HTTP server that answers every request with a web page.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = "<html><body>It works!</body></html>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let config = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let pull = kiln_in(
        store.path(),
        config.path(),
        &["pull", &format!("127.0.0.1:{port}/some/image:1")],
    );
    assert_ne!(pull.status, 0);
    assert!(
        pull.stderr.contains(&format!("127.0.0.1:{port}")) && pull.stderr.contains("manifest"),
        "{}",
        pull.stderr
    );
    assert!(!pull.stderr.contains("panicked"), "{}", pull.stderr);
}

/// Rewrites a `type=local` cache's document with `edit`, re-linking the manifest and index.
fn tamper_local_cache(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let blob = |digest: &str| {
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let put = |bytes: &[u8]| {
        let digest = kiln_oci::sha256_digest(bytes).to_string();
        std::fs::write(blob(&digest), bytes).unwrap();
        (digest, bytes.len())
    };
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&config_digest)).unwrap()).unwrap();
    edit(&mut document);
    let (digest, size) = put(&serde_json::to_vec(&document).unwrap());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_cache_record_that_lies_about_its_layer_is_not_used() {
    let config = tempfile::tempdir().unwrap();
    let ctx = context(&[
        ("Dockerfile", "FROM scratch\nCOPY a.txt /a\nCOPY b.txt /b\n"),
        ("a.txt", "A"),
        ("b.txt", "B"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let store_a = tempfile::tempdir().unwrap();
    let (_, image_a) = build_json(
        store_a.path(),
        config.path(),
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=local,dest={}", cache.display()),
        ],
    );
    // Every record now claims the first layer's diff_id for its own blob.
    tamper_local_cache(&cache, |document| {
        let records = document["records"].as_array_mut().unwrap();
        let first = records[0]["layer"]["diff_id"].clone();
        for record in records.iter_mut() {
            record["layer"]["diff_id"] = first.clone();
        }
    });
    let store_b = tempfile::tempdir().unwrap();
    let (log, image_b) = build_json(
        store_b.path(),
        config.path(),
        ctx.path(),
        &[
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ],
    );
    let warnings: Vec<String> = events(&log, "warning")
        .map(|w| w["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("diff_id")),
        "the lie is reported: {log}"
    );
    // The honest record still hits; the lying one runs, and the image is the right one.
    assert_eq!(events(&log, "running").count(), 1, "{log}");
    assert_eq!(image_a, image_b);
}
