//! Issue 17: supply-chain attestations. Provenance lists exactly what a build used, with the
//! right digests; `min` hides build arg values; no secret reaches anything written; the same
//! SOURCE_DATE_EPOCH gives the same bytes; the SBOM of a Debian image equals what dpkg says
//! inside it; pushed indexes carry BuildKit's attestation manifests, which skopeo shows and
//! `kiln inspect` reads back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::git::{git_at, git_daemon, Server};
use common::registry::{RegistryAuth, TestRegistry};
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SECRET: &str = "attest-secret-7f3a9c21e4b05d68";
const ARG_VALUE: &str = "arg-value-b81d4e2f";
const URL_BODY: &[u8] = b"fetched for the provenance\n";

/// Fails the test (never skips) when a tool it needs is missing.
fn tool(name: &str) {
    assert!(
        have(name),
        "{name} is needed for the attestation tests (see scripts/test.sh)"
    );
}

fn kiln_ok(root: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let root = root.to_string_lossy().into_owned();
    let mut all = vec!["--root", root.as_str()];
    all.extend_from_slice(args);
    let run = kiln(&all, cwd, env);
    assert_eq!(
        run.status, 0,
        "kiln {args:?} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

/// Serves `body` on 127.0.0.1 to any number of requests until the test ends (a thread that
/// stops after 120 s at most).
fn serve(body: &'static [u8]) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    let mut buffer = [0u8; 4096];
                    let _ = stream.read(&mut buffer);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    port
}

/// `git` at a fixed date, so commits (and the provenance naming them) are the same each run.
fn git(dir: &Path, args: &[&str]) -> String {
    git_at(dir, args, Some("@1600000000 +0000"))
}

/// A bare repository `repos/app.git` with one commit on `main`, served by `git daemon`;
/// returns the server, the URL and the commit.
fn git_source(dir: &Path) -> (Server, String, String) {
    tool("git");
    let repos = dir.join("repos");
    fs::create_dir_all(&repos).unwrap();
    git(&repos, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let work = dir.join("work");
    fs::create_dir(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    fs::write(work.join("README"), "from git\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let commit = git(&work, &["rev-parse", "HEAD"]);
    git(
        &work,
        &[
            "push",
            "-q",
            &repos.join("app.git").to_string_lossy(),
            "main",
        ],
    );
    let (server, port) = git_daemon(&repos);
    (server, format!("git://127.0.0.1:{port}/app.git"), commit)
}

/// The OCI archive's top index, the image index it names, and every blob by digest.
struct Archive {
    index: Value,
    blobs: BTreeMap<String, Vec<u8>>,
}

fn read_archive(path: &Path) -> Archive {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(path)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let top: Value =
        serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let mut blobs = BTreeMap::new();
    for entry in fs::read_dir(dir.path().join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        blobs.insert(
            format!("sha256:{}", entry.file_name().to_string_lossy()),
            fs::read(entry.path()).unwrap(),
        );
    }
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{top}");
    assert_eq!(
        entries[0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index: Value =
        serde_json::from_slice(&blobs[entries[0]["digest"].as_str().unwrap()]).unwrap();
    Archive { index, blobs }
}

impl Archive {
    fn json(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.blobs[digest]).unwrap()
    }

    /// The image manifest entry and the attestation manifest entry of the index.
    fn entries(&self) -> (Value, Value) {
        let manifests = self.index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2, "{}", self.index);
        (manifests[0].clone(), manifests[1].clone())
    }

    /// The statement bytes with `predicate_type`.
    fn statement(&self, predicate_type: &str) -> Option<Vec<u8>> {
        let (_, attestation) = self.entries();
        let manifest = self.json(attestation["digest"].as_str().unwrap());
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["annotations"]["in-toto.io/predicate-type"] == predicate_type)
            .map(|l| self.blobs[l["digest"].as_str().unwrap()].clone())
    }
}

const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
const SPDX: &str = "https://spdx.dev/Document";

/// The registry's manifest digest of `reference` (as skopeo computes it).
fn skopeo_raw(reference: &str) -> (Vec<u8>, String) {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect --raw {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = kiln_oci::sha256_digest(&out.stdout).to_string();
    (out.stdout, digest)
}

/// A registry holding busybox:test as `HOST/kiln/base:1`; the registry, the base reference and
/// its manifest digest.
fn registry_with_base() -> (TestRegistry, String, String) {
    tool("skopeo");
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let store = busybox_store("auto");
    let base = format!("{}/kiln/base:1", registry.host());
    kiln_ok(
        store.path(),
        store.path(),
        &["push", "busybox:test", &base],
        &[],
    );
    let (_, digest) = skopeo_raw(&base);
    (registry, base, digest)
}

/// The materials recipe: a registry base, a build arg, a secret, an ADD URL with --checksum,
/// a git source, a named context, two stages.
fn materials_recipe(base: &str, url: &str, git_url: &str) -> String {
    let checksum = kiln_oci::sha256_digest(URL_BODY);
    // The recipe holds the secret's digest only: the secret itself must reach nothing.
    let secret_sum = kiln_oci::sha256_digest(SECRET.as_bytes()).hex().to_string();
    format!(
        "ARG GREETING=hello\n\
         FROM {base} AS build\n\
         ARG GREETING\n\
         ADD --checksum={checksum} {url} /fetched.txt\n\
         ADD {git_url}#main /src/\n\
         COPY --from=extra extra.txt /extra.txt\n\
         RUN --mount=type=secret,id=token test \"$(sha256sum < /run/secrets/token | cut -d' ' -f1)\" = {secret_sum} && echo \"$GREETING\" > /greeting\n\
         FROM {base}\n\
         COPY --from=build /greeting /fetched.txt /src/README /extra.txt /out/\n"
    )
}

struct MaterialsBuild {
    root: tempfile::TempDir,
    out: tempfile::TempDir,
    archive: Archive,
    run: Run,
}

fn build_materials(
    recipe: &str,
    extra_dir: &Path,
    secret_file: &Path,
    provenance: &str,
) -> MaterialsBuild {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ctx = context(&[("Dockerfile", recipe)]);
    let dest = format!("type=oci,dest={}", out.path().join("image.tar").display());
    let secret = format!("id=token,src={}", secret_file.display());
    let extra = format!("extra={}", extra_dir.display());
    let build_arg = format!("GREETING={ARG_VALUE}");
    let run = kiln_ok(
        root.path(),
        ctx.path(),
        &[
            "build",
            "--progress=plain",
            "-t",
            "attested:1",
            "--build-arg",
            &build_arg,
            "--secret",
            &secret,
            "--build-context",
            &extra,
            &format!("--provenance={provenance}"),
            "-o",
            &dest,
            ".",
        ],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    let archive = read_archive(&out.path().join("image.tar"));
    MaterialsBuild {
        root,
        out,
        archive,
        run,
    }
}

#[test]
fn provenance_lists_exactly_the_materials_and_no_secret() {
    tool("git");
    let (registry, base, base_digest) = registry_with_base();
    let work = tempfile::tempdir().unwrap();
    let port = serve(URL_BODY);
    let url = format!("http://127.0.0.1:{port}/files/tool.txt");
    let (_daemon, git_url, commit) = git_source(work.path());
    let extra_dir = work.path().join("extra");
    fs::create_dir(&extra_dir).unwrap();
    fs::write(extra_dir.join("extra.txt"), "named context\n").unwrap();
    let secret_file = work.path().join("token");
    fs::write(&secret_file, SECRET).unwrap();
    let recipe = materials_recipe(&base, &url, &git_url);

    let max = build_materials(&recipe, &extra_dir, &secret_file, "mode=max");
    let (image, attestation) = max.archive.entries();
    assert_eq!(image["platform"]["os"], "linux");
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.digest"],
        image["digest"]
    );
    assert_eq!(attestation["platform"]["os"], "unknown");
    assert_eq!(attestation["platform"]["architecture"], "unknown");
    let bytes = max.archive.statement(PROVENANCE).unwrap();
    let statement: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        image["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    let definition = &statement["predicate"]["buildDefinition"];

    // Exactly these materials: the registry base (both stages, listed once), the URL with its
    // checksum, the git source with its commit, the named context.
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let resolved = definition["resolvedDependencies"].as_array().unwrap();
    let mut found: BTreeSet<(String, String, String)> = BTreeSet::new();
    for dependency in resolved {
        let (algorithm, value) = dependency["digest"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        found.insert((
            dependency["uri"]
                .as_str()
                .or(dependency["name"].as_str())
                .unwrap()
                .to_string(),
            algorithm.clone(),
            value.as_str().unwrap().to_string(),
        ));
    }
    let context_digest = resolved
        .iter()
        .find(|d| d["name"] == "extra")
        .map(|d| d["digest"]["sha256"].as_str().unwrap().to_string())
        .unwrap_or_default();
    let expected: BTreeSet<(String, String, String)> = [
        (
            format!(
                "pkg:docker/{}/kiln/base@1?platform=linux%2Famd64",
                registry.host()
            ),
            "sha256".to_string(),
            hex(&base_digest),
        ),
        (
            url.clone(),
            "sha256".into(),
            kiln_oci::sha256_digest(URL_BODY).hex().to_string(),
        ),
        (format!("{git_url}#main"), "sha1".into(), commit.clone()),
        ("extra".into(), "sha256".into(), context_digest.clone()),
    ]
    .into_iter()
    .collect();
    assert_eq!(found, expected, "{definition:#}");
    assert_eq!(context_digest.len(), 64, "{definition:#}");

    // The recipe by name and digest, the arg's value (max), the secret by id, the steps.
    let request = &definition["externalParameters"]["request"];
    assert_eq!(
        definition["externalParameters"]["configSource"]["path"],
        "Dockerfile"
    );
    assert_eq!(
        definition["externalParameters"]["configSource"]["digest"]["sha256"],
        kiln_oci::sha256_digest(recipe.as_bytes()).hex()
    );
    assert_eq!(request["args"]["build-arg:GREETING"], ARG_VALUE);
    assert_eq!(request["secrets"][0]["id"], "token");
    assert_eq!(request["locals"][0]["name"], "extra");
    assert_eq!(request["platforms"][0], "linux/amd64");
    let steps = definition["internalParameters"]["buildConfig"]["steps"]
        .as_array()
        .unwrap();
    assert_eq!(steps.len(), 5, "{steps:#?}");
    assert!(steps
        .iter()
        .all(|s| s["cacheKey"].as_str().unwrap().starts_with("sha256:") && s["cached"] == false));
    let metadata = &statement["predicate"]["runDetails"]["metadata"];
    assert_eq!(metadata["startedOn"], "2023-11-14T22:13:20Z");
    assert_eq!(metadata["finishedOn"], "2023-11-14T22:13:20Z");

    // No secret byte anywhere: store, output, progress.
    assert_eq!(find_bytes(max.root.path(), SECRET.as_bytes()), None);
    assert_eq!(find_bytes(max.out.path(), SECRET.as_bytes()), None);
    assert!(!max.run.stderr.contains(SECRET) && !max.run.stdout.contains(SECRET));

    // min: the arg's name, never its value; no steps.
    let min = build_materials(&recipe, &extra_dir, &secret_file, "mode=min");
    let min_bytes = min.archive.statement(PROVENANCE).unwrap();
    let min_statement: Value = serde_json::from_slice(&min_bytes).unwrap();
    let min_request =
        &min_statement["predicate"]["buildDefinition"]["externalParameters"]["request"];
    assert_eq!(min_request["argNames"][0], "GREETING");
    assert!(min_request.get("args").is_none());
    assert!(!String::from_utf8_lossy(&min_bytes).contains(ARG_VALUE));
    assert!(
        min_statement["predicate"]["buildDefinition"]["internalParameters"]
            .get("buildConfig")
            .is_none()
    );
    assert_eq!(
        min_statement["predicate"]["buildDefinition"]["resolvedDependencies"],
        definition["resolvedDependencies"]
    );
    assert_eq!(find_bytes(min.root.path(), SECRET.as_bytes()), None);
    assert_eq!(find_bytes(min.out.path(), SECRET.as_bytes()), None);

    // The same SOURCE_DATE_EPOCH in a fresh store: the same attestation bytes (and image).
    let again = build_materials(&recipe, &extra_dir, &secret_file, "mode=max");
    assert_eq!(again.archive.statement(PROVENANCE).unwrap(), bytes);
    assert_eq!(again.archive.index, max.archive.index);
}

/// `dpkg-query -W` inside an image: package → version.
fn dpkg_inside(root: &Path, image: &str) -> BTreeMap<String, String> {
    let run = kiln_ok(
        root,
        root,
        &[
            "run",
            image,
            "dpkg-query",
            "-W",
            "-f=${Package} ${Version}\\n",
        ],
        &[],
    );
    run.stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, version)| (name.to_string(), version.to_string()))
        .collect()
}

#[test]
fn sbom_of_a_debian_image_matches_dpkg_query() {
    let base = common::debian::debian_base();
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::hard_link(&base, ctx.path().join("debian.tar"))
        .or_else(|_| fs::copy(&base, ctx.path().join("debian.tar")).map(|_| ()))
        .unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nADD debian.tar /\nRUN apt-get update && apt-get install -y --no-install-recommends hello libgdbm6 && rm -rf /var/lib/apt/lists/*\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=oci,dest={}", out.path().join("image.tar").display());
    kiln_ok(
        root.path(),
        ctx.path(),
        &[
            "build",
            "-q",
            "-t",
            "debian-sbom:1",
            "--sbom=true",
            "-o",
            &dest,
            ".",
        ],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    let archive = read_archive(&out.path().join("image.tar"));
    let statement: Value =
        serde_json::from_slice(&archive.statement(SPDX).expect("an SBOM layer")).unwrap();
    // The default provenance (an OCI archive) is there too.
    assert!(archive.statement(PROVENANCE).is_some());
    let document = &statement["predicate"];
    assert_eq!(document["spdxVersion"], "SPDX-2.3");
    let mut listed = BTreeMap::new();
    for package in document["packages"].as_array().unwrap() {
        let purl = package["externalRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["referenceType"] == "purl")
            .and_then(|r| r["referenceLocator"].as_str())
            .unwrap_or_default();
        if purl.starts_with("pkg:deb/") {
            listed.insert(
                package["name"].as_str().unwrap().to_string(),
                package["versionInfo"].as_str().unwrap().to_string(),
            );
        }
    }
    let inside = dpkg_inside(root.path(), "debian-sbom:1");
    assert!(
        inside.contains_key("hello") && inside.len() > 80,
        "{inside:?}"
    );
    assert_eq!(listed, inside);

    // `kiln inspect --sbom` reads the same statement back from the store.
    let inspected = kiln_ok(
        root.path(),
        root.path(),
        &["inspect", "--sbom", "debian-sbom:1"],
        &[],
    );
    let read_back: Value = serde_json::from_str(&inspected.stdout).unwrap();
    assert_eq!(read_back, statement);
}

#[test]
fn pushed_index_carries_attestations_that_skopeo_shows_and_kiln_reads() {
    tool("skopeo");
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let root = busybox_store("auto");
    let ctx = context(&[("Dockerfile", "FROM busybox:test\nRUN echo made > /made\n")]);
    let target = format!("{}/kiln/attested:1", registry.host());
    kiln_ok(
        root.path(),
        ctx.path(),
        &[
            "build",
            "-q",
            "-t",
            &target,
            "--attest",
            "type=provenance,mode=max",
            "--attest",
            "type=sbom",
            "--push",
            ".",
        ],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    let (raw, _) = skopeo_raw(&target);
    let index: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index:#}");
    let image = &manifests[0];
    let attestation = &manifests[1];
    assert_eq!(image["platform"]["os"], "linux");
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.digest"],
        image["digest"]
    );
    assert_eq!(attestation["platform"]["architecture"], "unknown");
    let by_digest =
        |d: &Value| format!("{}/kiln/attested@{}", registry.host(), d.as_str().unwrap());
    let (raw, _) = skopeo_raw(&by_digest(&attestation["digest"]));
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    let kinds: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
            l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(kinds, [PROVENANCE, SPDX]);

    // Another store reads them from the registry.
    let empty = tempfile::tempdir().unwrap();
    let sbom = kiln_ok(
        empty.path(),
        empty.path(),
        &["inspect", "--sbom", &target],
        &[],
    );
    let statement: Value = serde_json::from_str(&sbom.stdout).unwrap();
    assert_eq!(statement["predicateType"], SPDX);
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        image["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    let provenance = kiln_ok(
        empty.path(),
        empty.path(),
        &["inspect", "--provenance", &target],
        &[],
    );
    let statement: Value = serde_json::from_str(&provenance.stdout).unwrap();
    assert_eq!(statement["predicateType"], PROVENANCE);
    // And from the store that built it, the same.
    let local = kiln_ok(
        root.path(),
        root.path(),
        &["inspect", "--provenance", &target],
        &[],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&local.stdout).unwrap(),
        statement
    );

    // `kiln push` of the built image sends the same index, attestations included.
    let (_, index_digest) = skopeo_raw(&target);
    let again = format!("{}/kiln/again:1", registry.host());
    let pushed = kiln_ok(root.path(), root.path(), &["push", &target, &again], &[]);
    assert_eq!(pushed.stdout.trim(), index_digest, "{}", pushed.stderr);
    assert_eq!(skopeo_raw(&again).1, index_digest);

    // Pulling the index keeps working: the attestation manifest is never chosen.
    let pulled = kiln_ok(empty.path(), empty.path(), &["pull", &target], &[]);
    assert_eq!(
        pulled.stdout.trim(),
        image["digest"].as_str().unwrap(),
        "{}",
        pulled.stderr
    );
    let run = kiln_ok(
        empty.path(),
        empty.path(),
        &["run", &target, "cat", "/made"],
        &[],
    );
    assert_eq!(run.stdout.trim(), "made");
}

#[test]
fn defaults_follow_buildx() {
    tool("skopeo");
    let registry = TestRegistry::start(RegistryAuth::Anonymous);
    let root = busybox_store("auto");
    let ctx = context(&[("Dockerfile", "FROM busybox:test\nENV A=1\n")]);
    // A push gets a min provenance, no SBOM.
    let pushed = format!("{}/kiln/default:1", registry.host());
    kiln_ok(
        root.path(),
        ctx.path(),
        &["build", "-q", "-t", &pushed, "--push", "."],
        &[],
    );
    let (raw, _) = skopeo_raw(&pushed);
    let index: Value = serde_json::from_slice(&raw).unwrap();
    let attestation = &index["manifests"][1];
    let manifest: Value = serde_json::from_slice(
        &skopeo_raw(&format!(
            "{}/kiln/default@{}",
            registry.host(),
            attestation["digest"].as_str().unwrap()
        ))
        .0,
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["annotations"]["in-toto.io/predicate-type"],
        PROVENANCE
    );
    // BUILDX_NO_DEFAULT_ATTESTATIONS: a plain image manifest.
    let plain = format!("{}/kiln/plain:1", registry.host());
    kiln_ok(
        root.path(),
        ctx.path(),
        &["build", "-q", "-t", &plain, "--push", "."],
        &[("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")],
    );
    let (raw, _) = skopeo_raw(&plain);
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    // --provenance=false on an OCI archive: one image manifest, as before.
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=oci,dest={}", out.path().join("plain.tar").display());
    kiln_ok(
        root.path(),
        ctx.path(),
        &["build", "-q", "--provenance=false", "-o", &dest, "."],
        &[],
    );
    let image = read_image(&out.path().join("plain.tar"));
    assert!(image.config.config.env.iter().any(|e| e == "A=1"));
    let top: Value = serde_json::from_slice(
        &Command::new("tar")
            .arg("-xOf")
            .arg(out.path().join("plain.tar"))
            .arg("index.json")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    // type=docker (docker load) stays plain even when asked; buildx refuses, kiln leaves the
    // attestations out of that archive only.
    let dest = format!(
        "type=docker,dest={}",
        out.path().join("docker.tar").display()
    );
    kiln_ok(
        root.path(),
        ctx.path(),
        &["build", "-q", "-o", &dest, "."],
        &[],
    );
    let listed = Command::new("tar")
        .arg("-tf")
        .arg(out.path().join("docker.tar"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("manifest.json"));
    // The default provenance goes into the OCI archive, never into a local tree beside it.
    let tree = out.path().join("tree");
    let oci = format!("type=oci,dest={}", out.path().join("both.tar").display());
    let local = format!("type=local,dest={}", tree.display());
    kiln_ok(
        root.path(),
        ctx.path(),
        &["build", "-q", "-o", &oci, "-o", &local, "."],
        &[],
    );
    assert!(read_archive(&out.path().join("both.tar"))
        .statement(PROVENANCE)
        .is_some());
    assert!(tree.join("bin/busybox").is_file());
    assert!(!tree.join("provenance.json").exists());
    // A bad value is a usage error naming the flag.
    let run = kiln(
        &[
            "--root",
            &root.path().to_string_lossy(),
            "build",
            "--provenance=mode=medium",
            ".",
        ],
        ctx.path(),
        &[],
    );
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--provenance"), "{}", run.stderr);
}

#[test]
fn local_output_writes_the_statements_beside_the_tree() {
    let root = busybox_store("auto");
    let ctx = context(&[("Dockerfile", "FROM busybox:test\nRUN echo local > /local\n")]);
    let out = tempfile::tempdir().unwrap();
    let tree = out.path().join("tree");
    let dest = format!("type=local,dest={}", tree.display());
    kiln_ok(
        root.path(),
        ctx.path(),
        &[
            "build",
            "-q",
            "--provenance=mode=max",
            "--sbom=true",
            "-o",
            &dest,
            ".",
        ],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    assert_eq!(fs::read_to_string(tree.join("local")).unwrap(), "local\n");
    let provenance: Value =
        serde_json::from_slice(&fs::read(tree.join("provenance.json")).unwrap()).unwrap();
    let sbom: Value =
        serde_json::from_slice(&fs::read(tree.join("sbom.spdx.json")).unwrap()).unwrap();
    assert_eq!(provenance["predicateType"], PROVENANCE);
    assert_eq!(sbom["predicateType"], SPDX);
    // Subjects: the tree's files, by path and content digest.
    let subjects = provenance["subject"].as_array().unwrap();
    let local = subjects.iter().find(|s| s["name"] == "local").unwrap();
    assert_eq!(
        local["digest"]["sha256"],
        kiln_oci::sha256_digest(b"local\n").hex()
    );
    assert!(subjects.iter().any(|s| s["name"] == "bin/busybox"));
    assert_eq!(provenance["subject"], sbom["subject"]);
}

/// An Alpine-style image in two layers: the SBOM read through the layers finds both apk
/// packages, and names the layer each one's files came from.
#[test]
fn sbom_of_an_apk_image_names_each_package_layer() {
    let musl = "P:musl\nV:1.2.4-r4\nA:x86_64\nL:MIT\no:musl\nF:lib\nR:ld-musl-x86_64.so.1\n\n";
    let binsh =
        "P:busybox-binsh\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\no:busybox\nF:bin\nR:sh\n\n";
    let both = format!("{musl}{binsh}");
    let ctx = context(&[
        ("one/etc/os-release", "ID=alpine\nVERSION_ID=3.19.1\n"),
        ("one/lib/apk/db/installed", musl),
        ("one/lib/ld-musl-x86_64.so.1", ""),
        ("two/lib/apk/db/installed", &both),
        ("two/bin/sh", ""),
        ("Dockerfile", "FROM scratch\nCOPY one/ /\nCOPY two/ /\n"),
    ]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=oci,dest={}", out.path().join("apk.tar").display());
    kiln_ok(
        root.path(),
        ctx.path(),
        &["build", "-q", "--sbom=true", "-o", &dest, "."],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    let archive = read_archive(&out.path().join("apk.tar"));
    let (image, _) = archive.entries();
    // skopeo reads the archive's index and picks the image, not the attestations.
    tool("skopeo");
    let inspected = Command::new("skopeo")
        .arg("inspect")
        .arg(format!(
            "oci-archive:{}",
            out.path().join("apk.tar").display()
        ))
        .output()
        .unwrap();
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let inspected: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(inspected["Architecture"], image["platform"]["architecture"]);
    let manifest = archive.json(image["digest"].as_str().unwrap());
    let config = archive.json(manifest["config"]["digest"].as_str().unwrap());
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let statement: Value = serde_json::from_slice(&archive.statement(SPDX).unwrap()).unwrap();
    let packages = statement["predicate"]["packages"].as_array().unwrap();
    let find = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {packages:#?}"))
    };
    let musl = find("musl");
    assert_eq!(musl["versionInfo"], "1.2.4-r4");
    assert_eq!(
        musl["externalRefs"][0]["referenceLocator"],
        "pkg:apk/alpine/musl@1.2.4-r4?arch=x86_64&distro=alpine-3.19.1"
    );
    let info = musl["sourceInfo"].as_str().unwrap();
    assert!(
        info.contains(&format!("layer 0 ({})", diff_ids[0].as_str().unwrap())),
        "{info}"
    );
    let binsh = find("busybox-binsh");
    let info = binsh["sourceInfo"].as_str().unwrap();
    assert!(
        info.contains(&format!("layer 1 ({})", diff_ids[1].as_str().unwrap())),
        "{info}"
    );
}

/// A URL's user:password never reaches the provenance, nor anything in the archive.
#[test]
fn url_credentials_stay_out_of_the_provenance() {
    const PASSWORD: &str = "url-password-3c9e71d0";
    let port = serve(URL_BODY);
    let checksum = kiln_oci::sha256_digest(URL_BODY);
    let url = format!("http://builder:{PASSWORD}@127.0.0.1:{port}/files/tool.txt");
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM scratch\nADD --checksum={checksum} {url} /tool.txt\n"),
    )]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=oci,dest={}", out.path().join("image.tar").display());
    kiln_ok(
        root.path(),
        ctx.path(),
        &["build", "-q", "--provenance=mode=max", "-o", &dest, "."],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    let archive = read_archive(&out.path().join("image.tar"));
    let statement: Value = serde_json::from_slice(&archive.statement(PROVENANCE).unwrap()).unwrap();
    let dependencies = &statement["predicate"]["buildDefinition"]["resolvedDependencies"];
    assert_eq!(
        dependencies[0]["uri"],
        format!("http://127.0.0.1:{port}/files/tool.txt"),
        "{dependencies:#}"
    );
    assert_eq!(find_bytes(out.path(), PASSWORD.as_bytes()), None);
}
