//! The registry harness (common/registry.rs) proved with a real client, skopeo, before kiln's
//! own registry client uses it: anonymous, Basic and token registries accept and refuse what
//! they should, and a restart keeps what was pushed and the upload sessions in flight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::registry::{self, run_bounded, Bounded, RegistryAuth, TestRegistry};
use common::{build, context, kiln, read_image, require_tool, EPOCH};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A small image kiln built, saved as an oci-archive: two layers, a label.
struct Archive {
    _dir: tempfile::TempDir,
    path: PathBuf,
    manifest_digest: String,
    layers: usize,
}

fn archive() -> Archive {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY hello.txt /hello.txt\nCOPY data/ /data/\nLABEL kiln.test=registry\n",
        ),
        ("hello.txt", "hello, registry\n"),
        ("data/a", "a\n"),
        ("data/b/c", "c\n"),
    ]);
    let root = tempfile::tempdir().unwrap();
    build(
        ctx.path(),
        root.path(),
        &["-t", "harness:1"],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar");
    let root_arg = root.path().display().to_string();
    let path_arg = path.display().to_string();
    let save = kiln(
        &[
            "--root",
            &root_arg,
            "save",
            "-o",
            &path_arg,
            "--format",
            "oci",
            "harness:1",
        ],
        ctx.path(),
        &[],
    );
    assert_eq!(save.status, 0, "kiln save failed:\n{}", save.stderr);
    let image = read_image(&path);
    Archive {
        _dir: dir,
        path,
        manifest_digest: image.manifest_digest,
        layers: image.layers.len(),
    }
}

/// Runs skopeo with no credentials of the machine's or the user's (its own HOME, runtime dir
/// and auth file), no trust policy, at most 120 s.
fn skopeo(home: &Path, args: &[&str]) -> Bounded {
    let started = Instant::now();
    let run = run_bounded(
        Command::new("skopeo")
            .args(["--insecure-policy", "--command-timeout", "100s"])
            .args(args)
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", home)
            .env("REGISTRY_AUTH_FILE", home.join("no-auth.json"))
            .env_remove("DOCKER_CONFIG"),
        Duration::from_secs(120),
    );
    assert!(
        !run.timed_out,
        "skopeo {args:?} did not finish in 120 s:\n{}",
        run.stderr
    );
    eprintln!(
        "skopeo {} -> exit {} in {:.2} s{}",
        args.join(" "),
        run.status,
        started.elapsed().as_secs_f64(),
        if run.status == 0 {
            String::new()
        } else {
            format!(": {}", run.stderr.trim())
        }
    );
    run
}

fn push(home: &Path, archive: &Archive, reference: &str, extra: &[&str]) -> Bounded {
    let src = format!("oci-archive:{}", archive.path.display());
    let dest = format!("docker://{reference}");
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    args.extend_from_slice(extra);
    args.push(&src);
    args.push(&dest);
    skopeo(home, &args)
}

fn inspect(home: &Path, reference: &str, extra: &[&str]) -> Bounded {
    let dest = format!("docker://{reference}");
    let mut args = vec!["inspect", "--tls-verify=false"];
    args.extend_from_slice(extra);
    args.push(&dest);
    skopeo(home, &args)
}

fn succeeded(run: &Bounded, what: &str, registry: &TestRegistry) {
    assert_eq!(
        run.status,
        0,
        "{what} failed:\n{}\nregistry log:\n{}",
        run.stderr,
        registry::tail(&registry.log())
    );
}

fn refused(run: &Bounded, what: &str) {
    assert_ne!(run.status, 0, "{what} should have been refused");
    let text = run.stderr.to_lowercase();
    assert!(
        text.contains("unauthorized")
            || text.contains("authentication required")
            || text.contains("denied")
            || text.contains("401"),
        "{what} failed, but not for want of authorization:\n{}",
        run.stderr
    );
}

/// `skopeo inspect`'s Digest and layer count.
fn inspected(run: &Bounded) -> (String, usize) {
    let json: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("skopeo inspect printed no JSON ({e}):\n{}", run.stdout));
    (
        json["Digest"].as_str().unwrap().to_string(),
        json["Layers"].as_array().unwrap().len(),
    )
}

/// The manifest the registry holds for `repo:tag`, fetched with no credentials: its digest
/// header and media type.
fn manifest(registry: &TestRegistry, repo: &str, tag: &str) -> (u16, Option<String>, String) {
    let answer = registry
        .request(
            "GET",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            )],
            &[],
        )
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    (
        answer.status,
        answer.header("docker-content-digest").map(str::to_string),
        json["mediaType"].as_str().unwrap_or("").to_string(),
    )
}

fn skip_without_tools() -> bool {
    registry::require_tools();
    !require_tool("skopeo")
}

#[test]
fn base64_matches_rfc4648() {
    for (input, expected) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
        ("alice:s3cr\u{e9}t", "YWxpY2U6czNjcsOpdA=="),
    ] {
        assert_eq!(registry::base64(input.as_bytes()), expected, "{input:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    registry::docker_config(dir.path(), "127.0.0.1:5000", "alice", "pw");
    registry::docker_config(dir.path(), "127.0.0.1:5001", "bob", "pw2");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["auths"]["127.0.0.1:5000"]["auth"], "YWxpY2U6cHc=");
    assert_eq!(config["auths"]["127.0.0.1:5001"]["auth"], "Ym9iOnB3Mg==");
}

#[test]
fn anonymous_registry_takes_a_push_and_serves_it_back() {
    if skip_without_tools() {
        return;
    }
    let image = archive();
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let home = tempfile::tempdir().unwrap();
    let answer = registry.request("GET", "/v2/", &[], &[]).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());

    let reference = format!("{}/kiln/harness:1", registry.host());
    succeeded(
        &push(home.path(), &image, &reference, &["--dest-no-creds"]),
        "anonymous push",
        &registry,
    );
    let (digest, layers) = inspected(&inspect(home.path(), &reference, &["--no-creds"]));
    // skopeo copies an OCI image to a registry as it is: the registry holds kiln's manifest.
    assert_eq!(digest, image.manifest_digest);
    assert_eq!(layers, image.layers);
    let (status, header, media_type) = manifest(&registry, "kiln/harness", "1");
    assert_eq!(status, 200);
    assert_eq!(header.as_deref(), Some(image.manifest_digest.as_str()));
    assert_eq!(media_type, "application/vnd.oci.image.manifest.v1+json");

    // And back out: a pull into an archive holds the same manifest.
    let pulled = home.path().join("pulled.tar");
    let dest = format!("oci-archive:{}", pulled.display());
    let pull = skopeo(
        home.path(),
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-no-creds",
            &format!("docker://{reference}"),
            &dest,
        ],
    );
    succeeded(&pull, "anonymous pull", &registry);
    let back = read_image(&pulled);
    assert_eq!(back.manifest_digest, image.manifest_digest);
    assert_eq!(
        back.config
            .config
            .labels
            .get("kiln.test")
            .map(String::as_str),
        Some("registry")
    );

    // Delete is enabled.
    let deleted = registry
        .request(
            "DELETE",
            &format!("/v2/kiln/harness/manifests/{}", image.manifest_digest),
            &[],
            &[],
        )
        .unwrap();
    assert_eq!(deleted.status, 202, "{}", deleted.text());
    assert_eq!(manifest(&registry, "kiln/harness", "1").0, 404);
}

#[test]
fn basic_registry_needs_the_password() {
    if skip_without_tools() {
        return;
    }
    let image = archive();
    let registry = TestRegistry::start(RegistryAuth::basic("alice", "s3cret"));
    let home = tempfile::tempdir().unwrap();
    let answer = registry.request("GET", "/v2/", &[], &[]).unwrap();
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("www-authenticate"),
        Some(format!("Basic realm=\"{}\"", registry::BASIC_REALM).as_str())
    );
    let basic = format!("Basic {}", registry::base64(b"alice:s3cret"));
    let answer = registry
        .request("GET", "/v2/", &[("Authorization", &basic)], &[])
        .unwrap();
    assert_eq!(answer.status, 200);

    let reference = format!("{}/basic/harness:1", registry.host());
    refused(
        &push(home.path(), &image, &reference, &["--dest-no-creds"]),
        "push with no credentials",
    );
    refused(
        &push(
            home.path(),
            &image,
            &reference,
            &["--dest-creds", "alice:wrong"],
        ),
        "push with a wrong password",
    );
    succeeded(
        &push(
            home.path(),
            &image,
            &reference,
            &["--dest-creds", "alice:s3cret"],
        ),
        "push with the password",
        &registry,
    );
    refused(
        &inspect(home.path(), &reference, &["--no-creds"]),
        "inspect with no credentials",
    );
    let (digest, _) = inspected(&inspect(
        home.path(),
        &reference,
        &["--creds", "alice:s3cret"],
    ));
    assert_eq!(digest, image.manifest_digest);

    // The credentials from a docker config.json written by docker_config.
    let config_dir = home.path().join("docker");
    registry::docker_config(&config_dir, &registry.host(), "alice", "s3cret");
    let authfile = config_dir.join("config.json").display().to_string();
    let (digest, _) = inspected(&inspect(
        home.path(),
        &reference,
        &["--authfile", &authfile],
    ));
    assert_eq!(digest, image.manifest_digest);
}

#[test]
fn token_registry_lets_anyone_pull_and_only_the_user_push() {
    if skip_without_tools() {
        return;
    }
    let image = archive();
    let registry = TestRegistry::start(RegistryAuth::token("alice", "s3cret"));
    let home = tempfile::tempdir().unwrap();
    let token_host = registry.token_host().unwrap();
    let answer = registry.request("GET", "/v2/", &[], &[]).unwrap();
    assert_eq!(answer.status, 401);
    let challenge = answer.header("www-authenticate").unwrap().to_string();
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"http://{token_host}/token\""))
            && challenge.contains(&format!("service=\"{}\"", registry::TOKEN_SERVICE)),
        "{challenge}"
    );

    let reference = format!("{}/token/harness:1", registry.host());
    let before = registry.token_requests().unwrap();
    refused(
        &push(home.path(), &image, &reference, &["--dest-no-creds"]),
        "anonymous push",
    );
    assert!(
        registry.token_requests().unwrap() > before,
        "skopeo asked the token server for nothing"
    );
    refused(
        &push(
            home.path(),
            &image,
            &reference,
            &["--dest-creds", "alice:wrong"],
        ),
        "push with a wrong password",
    );
    succeeded(
        &push(
            home.path(),
            &image,
            &reference,
            &["--dest-creds", "alice:s3cret"],
        ),
        "push with the password",
        &registry,
    );
    let (digest, layers) = inspected(&inspect(home.path(), &reference, &["--no-creds"]));
    assert_eq!(digest, image.manifest_digest, "anonymous pull");
    assert_eq!(layers, image.layers);
    let (digest, _) = inspected(&inspect(
        home.path(),
        &reference,
        &["--creds", "alice:s3cret"],
    ));
    assert_eq!(digest, image.manifest_digest);

    // The token protocol by hand: an anonymous token pulls, and is refused a push with
    // insufficient_scope; the user's token may push.
    let token = |authorization: Option<&str>| -> String {
        let path = format!(
            "/token?service={}&scope=repository:token/harness:pull,push",
            registry::TOKEN_SERVICE
        );
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let answer = registry::http("GET", &token_host, &path, &headers, &[]).unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(json["token"], json["access_token"]);
        json["token"].as_str().unwrap().to_string()
    };
    let anonymous = format!("Bearer {}", token(None));
    let answer = registry
        .request(
            "GET",
            "/v2/token/harness/tags/list",
            &[("Authorization", &anonymous)],
            &[],
        )
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.text().contains("\"1\""), "{}", answer.text());
    let answer = registry
        .request(
            "POST",
            "/v2/token/harness/blobs/uploads/",
            &[("Authorization", &anonymous)],
            &[],
        )
        .unwrap();
    assert_eq!(answer.status, 401);
    assert!(
        answer
            .header("www-authenticate")
            .is_some_and(|h| h.contains("error=\"insufficient_scope\"")),
        "{:?}",
        answer.headers
    );
    let basic = format!("Basic {}", registry::base64(b"alice:s3cret"));
    let user = format!("Bearer {}", token(Some(&basic)));
    let answer = registry
        .request(
            "POST",
            "/v2/token/harness/blobs/uploads/",
            &[("Authorization", &user)],
            &[],
        )
        .unwrap();
    assert_eq!(answer.status, 202, "{}", answer.text());
    let wrong = format!("Basic {}", registry::base64(b"alice:wrong"));
    let answer = registry::http(
        "GET",
        &token_host,
        "/token?service=kiln-test-registry&scope=repository:token/harness:pull",
        &[("Authorization", &wrong)],
        &[],
    )
    .unwrap();
    assert_eq!(answer.status, 401);
    // A token the registry did not sign-check: the signature changed.
    let forged = format!("{}x", user.trim_end_matches(|c: char| c != '.'));
    let answer = registry
        .request("GET", "/v2/", &[("Authorization", &forged)], &[])
        .unwrap();
    assert_eq!(answer.status, 401);
    assert!(
        answer
            .header("www-authenticate")
            .is_some_and(|h| h.contains("error=\"invalid_token\"")),
        "{:?}",
        answer.headers
    );
}

#[test]
fn restart_keeps_the_pushed_image_and_upload_sessions() {
    if skip_without_tools() {
        return;
    }
    let image = archive();
    let mut registry = TestRegistry::start(RegistryAuth::Anonymous);
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/kiln/restart:1", registry.host());
    succeeded(
        &push(home.path(), &image, &reference, &["--dest-no-creds"]),
        "push",
        &registry,
    );
    // An upload begun before the restart.
    let begun = registry
        .request("POST", "/v2/kiln/restart/blobs/uploads/", &[], &[])
        .unwrap();
    assert_eq!(begun.status, 202, "{}", begun.text());
    let location = begun.header("location").unwrap().to_string();
    let location = location
        .strip_prefix(&registry.url())
        .unwrap_or(&location)
        .to_string();

    let host = registry.host();
    registry.stop();
    assert!(
        registry.request("GET", "/v2/", &[], &[]).is_err(),
        "something still answers on {host} after stop"
    );
    registry.restart();
    assert_eq!(registry.host(), host);

    let (digest, layers) = inspected(&inspect(home.path(), &reference, &["--no-creds"]));
    assert_eq!(digest, image.manifest_digest);
    assert_eq!(layers, image.layers);
    // The upload goes on: its state is signed with http.secret, which stayed the same.
    let blob = b"one blob, uploaded across a restart\n";
    let blob_digest = kiln_oci::sha256_digest(blob).to_string();
    let separator = if location.contains('?') { '&' } else { '?' };
    let finished = registry
        .request(
            "PUT",
            &format!("{location}{separator}digest={blob_digest}"),
            &[("Content-Type", "application/octet-stream")],
            blob,
        )
        .unwrap();
    assert_eq!(finished.status, 201, "{}", finished.text());
    let got = registry
        .request(
            "GET",
            &format!("/v2/kiln/restart/blobs/{blob_digest}"),
            &[],
            &[],
        )
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, blob);
    // Logged at warn (nothing at info: no "listening on" of either start), to registry.log.
    if std::env::var_os("KILN_TEST_REGISTRY_LOG_LEVEL").is_none() {
        let log = registry.log();
        assert!(!log.contains("level=info"), "{log}");
    }
    assert!(registry.dir().join("registry.log").is_file());
}

#[test]
fn drop_stops_every_server() {
    registry::require_tools();
    let registry = TestRegistry::start(RegistryAuth::token("alice", "s3cret"));
    let host = registry.host();
    let token_host = registry.token_host().unwrap();
    assert!(registry::http("GET", &token_host, "/count", &[], &[]).is_ok());
    drop(registry);
    assert!(registry::http("GET", &host, "/v2/", &[], &[]).is_err());
    // The token server is killed and waited for: nothing listens there now.
    assert!(registry::http("GET", &token_host, "/count", &[], &[]).is_err());
}
