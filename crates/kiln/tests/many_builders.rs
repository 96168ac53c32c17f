//! Many builders, one cache (issue 15): four kiln processes in four podman containers build
//! variants of one recipe at the same time against one registry on 127.0.0.1, all exporting to
//! the same `--cache-to type=registry,ref=...` and pushing to the same repository. Afterwards:
//!
//! - every manifest in the registry (every tag of every repository) resolves all its blobs,
//!   and so does every record of the cache manifest;
//! - the cache is one builder's export, whole: its records are exactly that builder's layers
//!   (each builder's shared RUN writes a random token, so two builders never share a layer of
//!   it), never a mix;
//! - the last writer wins: the tag points at the manifest the registry was given last;
//! - a fifth builder, in an empty container, with `--cache-from` runs no step and builds the
//!   very image the winner pushed.
//!
//! Needs podman, docker-registry (and what the registry harness needs) and busybox-static.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::containers::Podman;
use common::registry::{http, run_bounded, Bounded, RegistryAuth, TestRegistry};
use common::{busybox_store, kiln, EPOCH};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BUILDERS: usize = 4;
const CACHE_REPO: &str = "cache/many";
const CACHE_TAG: &str = "buildcache";
const APP_REPO: &str = "app/many";
/// One container's build; far more than it takes (about 10 s each on two loaded cores).
const LIMIT: Duration = Duration::from_secs(240);

/// The recipe: a shared COPY, a shared RUN whose layer differs per builder (a random token),
/// and a RUN per variant that copies that token and adds 1 MiB of noise (so the uploads of the
/// four builders overlap).
fn recipe(host: &str) -> String {
    format!(
        "FROM {host}/base/busybox:1\n\
         COPY shared.txt /shared.txt\n\
         RUN head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /token\n\
         ARG VARIANT\n\
         RUN echo \"$VARIANT $(cat /token)\" > /variant && head -c 1048576 /dev/urandom > /noise\n"
    )
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn get_json(host: &str, path: &str) -> Value {
    let answer = http("GET", host, path, &[("Accept", MANIFEST_TYPES)], &[]).unwrap();
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
    serde_json::from_slice(&answer.body).unwrap()
}

/// HEAD of a blob: present, with the descriptor's size.
fn assert_blob(host: &str, repo: &str, descriptor: &Value, whose: &str) {
    let digest = descriptor["digest"].as_str().unwrap();
    let answer = http(
        "HEAD",
        host,
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(
        answer.status, 200,
        "{whose} references {digest}, which {repo} does not have"
    );
    let length: u64 = answer.header("content-length").unwrap().parse().unwrap();
    assert_eq!(
        Some(length),
        descriptor["size"].as_u64(),
        "{whose}: {digest} has another size in {repo}"
    );
}

/// GET of a blob, its bytes checked against the digest.
fn blob(host: &str, repo: &str, digest: &str) -> Vec<u8> {
    let answer = http("GET", host, &format!("/v2/{repo}/blobs/{digest}"), &[], &[]).unwrap();
    assert_eq!(answer.status, 200, "GET blob {digest} of {repo}");
    assert_eq!(
        kiln_oci::sha256_digest(&answer.body).to_string(),
        digest,
        "{repo}: blob {digest} is not what its digest says"
    );
    answer.body
}

/// Every tag of every repository: its manifest (and an index's manifests) resolve all their
/// blobs. Returns tag → manifest digest, per repository.
fn walk_registry(host: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let catalog = get_json(host, "/v2/_catalog?n=1000");
    let mut all = BTreeMap::new();
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags = get_json(host, &format!("/v2/{repo}/tags/list"));
        let mut digests = BTreeMap::new();
        for tag in tags["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            let answer = http(
                "GET",
                host,
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("Accept", MANIFEST_TYPES)],
                &[],
            )
            .unwrap();
            assert_eq!(answer.status, 200, "{repo}:{tag}");
            let digest = answer.header("docker-content-digest").unwrap().to_string();
            assert_eq!(kiln_oci::sha256_digest(&answer.body).to_string(), digest);
            let manifest: Value = serde_json::from_slice(&answer.body).unwrap();
            assert_manifest_whole(host, repo, &format!("{repo}:{tag}"), &manifest);
            digests.insert(tag.to_string(), digest);
        }
        all.insert(repo.to_string(), digests);
    }
    all
}

fn assert_manifest_whole(host: &str, repo: &str, whose: &str, manifest: &Value) {
    if let Some(children) = manifest["manifests"].as_array() {
        for child in children {
            let digest = child["digest"].as_str().unwrap();
            let inner = get_json(host, &format!("/v2/{repo}/manifests/{digest}"));
            assert_manifest_whole(host, repo, &format!("{whose} > {digest}"), &inner);
        }
        return;
    }
    assert_blob(host, repo, &manifest["config"], whose);
    for layer in manifest["layers"].as_array().unwrap() {
        assert_blob(host, repo, layer, whose);
    }
}

/// Every manifest digest the registry's storage says `tag` of `repo` was ever set to. Which of
/// them was set last cannot be read from it: the registry adds a digest to the tag's index
/// before it moves the tag, so two pushes at once can move the tag in the other order (and
/// file times are coarser than two requests apart).
fn written(storage: &Path, repo: &str, tag: &str) -> BTreeSet<String> {
    let index = storage.join(format!(
        "docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/index/sha256"
    ));
    fs::read_dir(&index)
        .unwrap()
        .map(|entry| format!("sha256:{}", entry.unwrap().file_name().to_string_lossy()))
        .collect()
}

fn events<'a>(log: &'a str, kind: &'a str) -> impl Iterator<Item = Value> + 'a {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(move |v| v["event"] == kind)
}

/// One builder's container: its own empty store and docker config, the shared context
/// read-only, kiln as uid 0 of podman's default container (the `userns` rung).
fn builder(podman: &Podman, work: &Path, name: &str, args: &[String]) -> Command {
    let own = work.join(name);
    fs::create_dir_all(own.join("store")).unwrap();
    fs::create_dir_all(own.join("docker")).unwrap();
    let mut command = podman.run();
    command
        .args([
            "-e",
            &format!("SOURCE_DATE_EPOCH={EPOCH}"),
            "-e",
            "DOCKER_CONFIG=/w/docker",
            "-v",
            &format!("{}:/w", own.display()),
            "-v",
            &format!("{}:/ctx:ro", work.join("ctx").display()),
            "--rootfs",
        ])
        .arg(podman.rootfs(name))
        .args([
            "/usr/local/bin/kiln",
            "--root",
            "/w/store",
            "build",
            "--progress=json",
        ])
        .args(args)
        .arg("/ctx");
    command
}

fn finished(name: &str, run: &Bounded) -> String {
    assert!(
        !run.timed_out,
        "{name} took more than {LIMIT:?}:\n{}",
        run.stderr
    );
    assert_eq!(run.status, 0, "{name} failed:\n{}", run.stderr);
    events(&run.stderr, "built")
        .next()
        .and_then(|built| built["manifest"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("{name}: no built event:\n{}", run.stderr))
}

#[test]
fn four_builders_share_one_registry_cache_and_a_fifth_runs_nothing() {
    let Some(podman) = Podman::new() else {
        return;
    };
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let host = registry.host();
    // The base, pushed from the host.
    let base = busybox_store("auto");
    let config = tempfile::tempdir().unwrap();
    let root = base.path().display().to_string();
    let pushed = kiln(
        &[
            "--root",
            &root,
            "push",
            "busybox:test",
            &format!("{host}/base/busybox:1"),
        ],
        config.path(),
        &[("DOCKER_CONFIG", config.path().to_str().unwrap())],
    );
    assert_eq!(pushed.status, 0, "push base: {}", pushed.stderr);

    let work = tempfile::Builder::new()
        .prefix("kiln-many")
        .tempdir_in("/var/tmp")
        .unwrap();
    let w = work.path();
    fs::set_permissions(w, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(w.join("ctx")).unwrap();
    fs::write(w.join("ctx/Dockerfile"), recipe(&host)).unwrap();
    fs::write(w.join("ctx/shared.txt"), "one recipe, four variants\n").unwrap();
    let cache = format!("type=registry,ref={host}/{CACHE_REPO}:{CACHE_TAG}");

    // Four at once.
    let runs: Vec<Bounded> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..BUILDERS)
            .map(|n| {
                let args = vec![
                    "--build-arg".to_string(),
                    format!("VARIANT={n}"),
                    "--cache-from".to_string(),
                    cache.clone(),
                    "--cache-to".to_string(),
                    format!("{cache},mode=max"),
                    "-t".to_string(),
                    format!("{host}/{APP_REPO}:v{n}"),
                    "-t".to_string(),
                    format!("{host}/{APP_REPO}:latest"),
                    "--push".to_string(),
                    // The tags are compared with the manifest each builder reports built; the
                    // default provenance would push an index (with its build times) instead.
                    "--provenance=false".to_string(),
                ];
                let mut command = builder(&podman, w, &format!("builder-{n}"), &args);
                scope.spawn(move || run_bounded(&mut command, LIMIT))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let built: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(n, run)| finished(&format!("builder-{n}"), run))
        .collect();

    // Every manifest of every repository is whole.
    let tags = walk_registry(&host);
    let app = &tags[APP_REPO];
    for (n, digest) in built.iter().enumerate() {
        assert_eq!(
            app.get(&format!("v{n}")),
            Some(digest),
            "builder-{n} pushed v{n}"
        );
    }
    let distinct: BTreeSet<&String> = built.iter().collect();
    assert_eq!(distinct.len(), BUILDERS, "four different images: {built:?}");
    // The shared tag: each builder set it once, and it names one builder's whole image.
    let latest = &app["latest"];
    assert!(built.contains(latest), "latest is nobody's image: {latest}");
    let set_to = written(&registry.storage(), APP_REPO, "latest");
    assert_eq!(
        set_to,
        built.iter().cloned().collect::<BTreeSet<_>>(),
        "each builder set latest once, to its image"
    );

    // The cache: each builder exported it once, and it is whole and one builder's.
    let cache_digest = &tags[CACHE_REPO][CACHE_TAG];
    let exported = written(&registry.storage(), CACHE_REPO, CACHE_TAG);
    assert_eq!(
        exported.len(),
        BUILDERS,
        "each builder exported its cache once"
    );
    assert!(
        exported.contains(cache_digest),
        "the cache tag names one of the caches exported"
    );
    let manifest = get_json(&host, &format!("/v2/{CACHE_REPO}/manifests/{cache_digest}"));
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let document: Value = serde_json::from_slice(&blob(&host, CACHE_REPO, config_digest)).unwrap();
    let records = document["records"].as_array().unwrap();
    let manifest_layers: BTreeSet<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let record_layers: BTreeSet<&str> = records
        .iter()
        .map(|r| r["layer"]["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        record_layers, manifest_layers,
        "every record's layer is a layer of the cache manifest (and so kept alive)"
    );
    // Which builder's: the one whose image ends with the cache's layers.
    let owners: Vec<usize> = (0..BUILDERS)
        .filter(|n| {
            let image = get_json(&host, &format!("/v2/{APP_REPO}/manifests/{}", built[*n]));
            let layers: Vec<&str> = image["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap())
                .collect();
            let own: BTreeSet<&str> = layers[layers.len() - 3..].iter().copied().collect();
            own == record_layers
        })
        .collect();
    assert_eq!(
        owners.len(),
        1,
        "the cache holds exactly one builder's three layers, not a mix: {records:?}"
    );
    let winner = owners[0];
    eprintln!(
        "cache and latest: builder-{winner} of {BUILDERS} ({} records); latest is builder-{}",
        records.len(),
        built.iter().position(|d| d == latest).unwrap()
    );

    // A fifth builder, empty store, empty container: every step from the cache.
    let fifth = builder(
        &podman,
        w,
        "builder-fresh",
        &[
            "--build-arg".to_string(),
            format!("VARIANT={winner}"),
            "--cache-from".to_string(),
            cache.clone(),
        ],
    );
    let run = run_bounded(&mut { fifth }, LIMIT);
    let image = finished("the fifth builder", &run);
    let ran: Vec<Value> = events(&run.stderr, "running").collect();
    assert!(ran.is_empty(), "steps ran: {ran:?}\n{}", run.stderr);
    assert_eq!(events(&run.stderr, "cached").count(), 3, "{}", run.stderr);
    assert_eq!(
        image, built[winner],
        "the fifth builder builds builder-{winner}'s image, running nothing"
    );
}
