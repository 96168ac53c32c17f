//! The CI definitions of examples/ci/, run (issue 15): each file is parsed as YAML (PyYAML's
//! safe loader, the strict parser the runners' own tools resemble), its kiln invocations are
//! taken from where the runner takes them, and run as close to that runner as this machine
//! allows — the Kubernetes Job's and the Tekton Task's container, and GitLab's Kubernetes
//! executor, in podman with the security context the definition asks for (user, dropped
//! capabilities, no privilege escalation, seccomp) and the volumes it mounts; GitHub Actions'
//! `run:` steps with bash on the host (the runner VM, `sudo` being root already). The registry
//! (`registry.example.com`, `ghcr.io`) is a password-protected one on 127.0.0.1; everything else
//! is the definition's own text, so a flag typo, a wrong path or a wrong variable fails here.
//! Each run must push its image and its registry cache.
//!
//! Needs podman, python3 with PyYAML (python3-yaml), docker-registry and htpasswd.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::containers::{kiln_volume, Podman};
use common::registry::{base64, docker_config, http, run_bounded, RegistryAuth, TestRegistry};
use common::{busybox_store, kiln, skip_or_fail, EPOCH};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const USER: &str = "ci-user";
const PASSWORD: &str = "ci-definitions-pw-93b2";
const LIMIT: Duration = Duration::from_secs(300);

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ci")
}

/// Every YAML document of `file`, as JSON; None (after [`skip_or_fail`]) without PyYAML.
fn yaml_documents(file: &Path) -> Option<Vec<Value>> {
    let script = "import json, sys, yaml\nwith open(sys.argv[1]) as f:\n    print(json.dumps([d for d in yaml.safe_load_all(f) if d is not None]))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(file)
        .output();
    match out {
        Ok(out) if out.status.success() => Some(serde_json::from_slice(&out.stdout).unwrap()),
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named 'yaml'") => {
            skip_or_fail("python3's yaml module not installed (apt-get install python3-yaml)");
            None
        }
        Ok(out) => panic!(
            "{} is not valid YAML:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            skip_or_fail(&format!("python3 not runnable: {e}"));
            None
        }
    }
}

/// The registry, the base the application builds on, the application's context, and a
/// config.json with the credentials (what a docker-registry Secret holds).
struct Setup {
    podman: Podman,
    _registry: TestRegistry,
    host: String,
    work: tempfile::TempDir,
}

impl Setup {
    fn start() -> Option<Setup> {
        let podman = Podman::new()?;
        let registry = TestRegistry::start(RegistryAuth::basic(USER, PASSWORD));
        let host = registry.host();
        let work = tempfile::Builder::new()
            .prefix("kiln-ci-definitions")
            .tempdir_in("/var/tmp")
            .unwrap();
        let w = work.path();
        fs::set_permissions(w, fs::Permissions::from_mode(0o755)).unwrap();
        docker_config(&w.join("auth"), &host, USER, PASSWORD);
        let base = busybox_store("auto");
        let pushed = kiln(
            &[
                "--root",
                base.path().to_str().unwrap(),
                "push",
                "busybox:test",
                &format!("{host}/base/busybox:1"),
            ],
            w,
            &[("DOCKER_CONFIG", w.join("auth").to_str().unwrap())],
        );
        assert_eq!(pushed.status, 0, "{}", pushed.stderr);
        let setup = Setup {
            podman,
            _registry: registry,
            host,
            work,
        };
        Some(setup)
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    /// A fresh copy of the application's context at `dir`, readable by every user.
    fn app_context(&self, dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        fs::write(
            dir.join("Dockerfile"),
            format!(
                "FROM {}/base/busybox:1\nCOPY app.txt /app.txt\nRUN cat /app.txt > /built\n",
                self.host
            ),
        )
        .unwrap();
        fs::write(dir.join("app.txt"), "built by a CI definition\n").unwrap();
        open_to_all(dir);
    }

    /// The definition's registry names, pointed at the test registry.
    fn localize(&self, text: &str) -> String {
        text.replace("registry.example.com", &self.host)
            .replace("ghcr.io", &self.host)
    }

    /// The manifest `repo:tag` is in the registry (asked with the credentials).
    fn assert_pushed(&self, repo: &str, tag: &str, who: &str) {
        let auth = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
        let answer = http(
            "GET",
            &self.host,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[
                ("Authorization", &auth),
                (
                    "Accept",
                    // A push with the default provenance is an index; without, a manifest.
                    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
                ),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            answer.status,
            200,
            "{who}: {repo}:{tag} was not pushed: {}",
            answer.text()
        );
    }

    /// `podman run` of a busybox root with kiln at /usr/local/bin/kiln (the stand-in for
    /// kiln's image, which own_image.rs builds), on the host's network (the registry is on
    /// its 127.0.0.1).
    fn container(&self) -> Command {
        let mut command = self.podman.command();
        command.args([
            "run",
            "--rm",
            "--network",
            "host",
            "-e",
            &format!("SOURCE_DATE_EPOCH={EPOCH}"),
            "-v",
            &kiln_volume(),
        ]);
        command
    }
}

fn open_to_all(dir: &Path) {
    let status = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// podman options for a Kubernetes securityContext (pod level first, container level over it).
fn security_options(pod: &Value, container: &Value) -> Vec<String> {
    let field = |name: &str| {
        if container[name].is_null() {
            pod[name].clone()
        } else {
            container[name].clone()
        }
    };
    let mut options = Vec::new();
    if let Some(user) = field("runAsUser").as_u64() {
        let group = field("runAsGroup").as_u64().unwrap_or(user);
        options.extend(["--user".to_string(), format!("{user}:{group}")]);
    }
    if field("runAsNonRoot") == Value::Bool(true) {
        assert_ne!(
            field("runAsUser").as_u64(),
            Some(0),
            "runAsNonRoot with uid 0"
        );
    }
    if field("allowPrivilegeEscalation") == Value::Bool(false) {
        options.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    let capabilities = field("capabilities");
    for dropped in capabilities["drop"].as_array().into_iter().flatten() {
        options.extend(["--cap-drop".into(), dropped.as_str().unwrap().to_string()]);
    }
    for added in capabilities["add"].as_array().into_iter().flatten() {
        options.extend(["--cap-add".into(), added.as_str().unwrap().to_string()]);
    }
    match field("seccompProfile")["type"].as_str() {
        Some("Unconfined") => {
            options.extend(["--security-opt".into(), "seccomp=unconfined".into()])
        }
        // The runtime's default profile: podman's own.
        Some("RuntimeDefault") | None => {}
        Some(other) => panic!("a seccomp profile this test cannot give: {other}"),
    }
    options
}

/// `-e NAME=VALUE` for a Kubernetes `env` list (values only; no secretKeyRef here).
fn env_options(env: &Value, substitute: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut options = Vec::new();
    for variable in env.as_array().into_iter().flatten() {
        let value = variable["value"]
            .as_str()
            .unwrap_or_else(|| panic!("an env entry without a plain value: {variable}"));
        options.extend([
            "-e".to_string(),
            format!(
                "{}={}",
                variable["name"].as_str().unwrap(),
                substitute(value)
            ),
        ]);
    }
    options
}

fn strings(list: &Value, substitute: &dyn Fn(&str) -> String) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a list: {list}"))
        .iter()
        .map(|a| substitute(a.as_str().unwrap()))
        .collect()
}

fn run_ok(command: &mut Command, who: &str) -> String {
    let run = run_bounded(command, LIMIT);
    assert!(
        !run.timed_out,
        "{who} took more than {LIMIT:?}:\n{}",
        run.stderr
    );
    assert_eq!(
        run.status, 0,
        "{who} failed:\n{}\n{}\n(command: {command:?})",
        run.stdout, run.stderr
    );
    assert!(!run.stderr.contains(PASSWORD), "{who} printed the password");
    run.stderr
}

/// The build's isolation line names `rung` (the runner gets what docs/ci.md says).
fn assert_rung(stderr: &str, rung: &str, who: &str) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("isolation: "))
        .unwrap_or_else(|| panic!("{who}: no isolation line:\n{stderr}"));
    assert!(
        line.starts_with(&format!("isolation: {rung}")),
        "{who}: {line}"
    );
    eprintln!("{who}: {line}");
}

#[test]
fn every_definition_in_examples_ci_is_valid_yaml() {
    for name in [
        "kubernetes-job.yaml",
        "tekton-task.yaml",
        "gitlab-ci.yml",
        "github-actions.yml",
    ] {
        let Some(documents) = yaml_documents(&examples().join(name)) else {
            return;
        };
        assert!(!documents.is_empty(), "{name} holds no document");
    }
}

#[test]
fn the_kubernetes_job_builds_and_pushes_with_its_security_context() {
    let Some(documents) = yaml_documents(&examples().join("kubernetes-job.yaml")) else {
        return;
    };
    let Some(setup) = Setup::start() else {
        return;
    };
    let job = documents
        .iter()
        .find(|d| d["kind"] == "Job")
        .expect("a Job");
    let pod = &job["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let substitute = |text: &str| setup.localize(text);
    let w = setup.dir().join("k8s");
    // The volumes: the workspace the init container cloned into (`.../src`), the store (an
    // emptyDir, group-writable through fsGroup), the Secret's config.json.
    let mut volumes = Vec::new();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let name = mount["name"].as_str().unwrap();
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volumeMount {name} names no volume"));
        let host_dir = w.join(name);
        if let Some(secret) = volume.get("secret") {
            fs::create_dir_all(&host_dir).unwrap();
            for item in secret["items"].as_array().unwrap() {
                assert_eq!(item["key"], ".dockerconfigjson");
                fs::copy(
                    setup.dir().join("auth/config.json"),
                    host_dir.join(item["path"].as_str().unwrap()),
                )
                .unwrap();
            }
        } else if volume.get("emptyDir").is_some() {
            fs::create_dir_all(&host_dir).unwrap();
        } else {
            panic!("a volume this test cannot give: {volume}");
        }
        let read_only = if mount["readOnly"] == Value::Bool(true) {
            ":ro"
        } else {
            ""
        };
        volumes.extend([
            "-v".to_string(),
            format!(
                "{}:{}{read_only}",
                host_dir.display(),
                mount["mountPath"].as_str().unwrap()
            ),
        ]);
    }
    // What the init container does: the source in the workspace's src.
    let init_args = strings(&pod["initContainers"][0]["args"], &substitute);
    let clone_target = init_args.last().unwrap();
    let workspace_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| clone_target.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("the clone lands in a volume the kiln container mounts");
    let relative = clone_target
        .strip_prefix(workspace_mount["mountPath"].as_str().unwrap())
        .unwrap()
        .trim_start_matches('/');
    setup.app_context(
        &w.join(workspace_mount["name"].as_str().unwrap())
            .join(relative),
    );
    open_to_all(&w);
    let rootfs = setup.podman.rootfs("k8s");
    let mut command = setup.container();
    command
        .args(security_options(
            &pod["securityContext"],
            &container["securityContext"],
        ))
        .args(env_options(&container["env"], &substitute))
        .args(&volumes)
        .arg("--rootfs")
        .arg(&rootfs)
        // The image's ENTRYPOINT, then the container's args.
        .arg("/usr/local/bin/kiln")
        .args(strings(&container["args"], &substitute));
    let stderr = run_ok(&mut command, "the Kubernetes Job");
    assert_rung(&stderr, "userns (uid 1000", "the Kubernetes Job");
    setup.assert_pushed("team/app", "latest", "the Kubernetes Job");
    setup.assert_pushed("team/app", "buildcache", "the Kubernetes Job's cache");
}

#[test]
fn the_tekton_task_builds_and_pushes_with_its_step_template() {
    let Some(documents) = yaml_documents(&examples().join("tekton-task.yaml")) else {
        return;
    };
    let Some(setup) = Setup::start() else {
        return;
    };
    let task = &documents[0];
    assert_eq!(task["kind"], "Task");
    let spec = &task["spec"];
    let w = setup.dir().join("tekton");
    // Tekton's substitutions: the params (given, else their defaults) and workspace paths.
    let mut params: Vec<(String, String)> = Vec::new();
    for param in spec["params"].as_array().unwrap() {
        let name = param["name"].as_str().unwrap().to_string();
        let value = match name.as_str() {
            "IMAGE" => format!("{}/team/app:tekton", setup.host),
            "CACHE" => format!("{}/team/app:buildcache-tekton", setup.host),
            _ => param["default"]
                .as_str()
                .unwrap_or_else(|| panic!("param {name} has no default and no value here"))
                .to_string(),
        };
        params.push((name, value));
    }
    let mut volumes = Vec::new();
    let mut workspace_paths = Vec::new();
    for workspace in spec["workspaces"].as_array().unwrap() {
        let name = workspace["name"].as_str().unwrap();
        let path = format!("/workspace/{name}");
        let host_dir = w.join(name);
        match name {
            "source" => setup.app_context(&host_dir),
            "dockerconfig" => {
                fs::create_dir_all(&host_dir).unwrap();
                fs::copy(
                    setup.dir().join("auth/config.json"),
                    host_dir.join("config.json"),
                )
                .unwrap();
            }
            other => panic!("a workspace this test does not know: {other}"),
        }
        let read_only = if workspace["readOnly"] == Value::Bool(true) {
            ":ro"
        } else {
            ""
        };
        volumes.extend([
            "-v".to_string(),
            format!("{}:{path}{read_only}", host_dir.display()),
        ]);
        workspace_paths.push((name.to_string(), path));
    }
    open_to_all(&w);
    let substitute = |text: &str| {
        let mut out = setup.localize(text);
        for (name, value) in &params {
            out = out.replace(&format!("$(params.{name})"), value);
        }
        for (name, path) in &workspace_paths {
            out = out.replace(&format!("$(workspaces.{name}.path)"), path);
        }
        assert!(
            !out.contains("$("),
            "an unresolved Tekton variable in {text:?}"
        );
        out
    };
    let step = &spec["steps"][0];
    let rootfs = setup.podman.rootfs("tekton");
    let mut command = setup.container();
    command
        .args(security_options(
            &Value::Null,
            &spec["stepTemplate"]["securityContext"],
        ))
        .args(env_options(&step["env"], &substitute))
        .args(&volumes)
        .args(["-w", &substitute(step["workingDir"].as_str().unwrap())])
        .arg("--rootfs")
        .arg(&rootfs)
        .arg("/usr/local/bin/kiln")
        .args(strings(&step["args"], &substitute));
    let stderr = run_ok(&mut command, "the Tekton Task");
    assert_rung(&stderr, "userns (uid 1000", "the Tekton Task");
    setup.assert_pushed("team/app", "tekton", "the Tekton Task");
    setup.assert_pushed("team/app", "buildcache-tekton", "the Tekton Task's cache");
}

#[test]
fn the_gitlab_job_logs_in_builds_and_pushes_on_a_kubernetes_executor() {
    let Some(documents) = yaml_documents(&examples().join("gitlab-ci.yml")) else {
        return;
    };
    let Some(setup) = Setup::start() else {
        return;
    };
    let job = &documents[0]["build-image"];
    assert_eq!(job["image"]["entrypoint"], serde_json::json!([""]));
    let w = setup.dir().join("gitlab");
    let project = w.join("project");
    setup.app_context(&project);
    open_to_all(&w);
    // GitLab's predefined variables, then the job's (in order: later ones may use earlier).
    let mut script = String::from("set -e\n");
    let image = format!("{}/team/app", setup.host);
    for (name, value) in [
        ("CI_REGISTRY", setup.host.as_str()),
        ("CI_REGISTRY_USER", USER),
        ("CI_REGISTRY_PASSWORD", PASSWORD),
        ("CI_REGISTRY_IMAGE", image.as_str()),
        ("CI_COMMIT_SHORT_SHA", "0a1b2c3d"),
    ] {
        script.push_str(&format!("export {name}='{value}'\n"));
    }
    for (name, value) in job["variables"].as_object().unwrap() {
        script.push_str(&format!("export {name}=\"{}\"\n", value.as_str().unwrap()));
    }
    for line in strings(&job["script"], &|t| t.to_string()) {
        script.push_str(&line);
        script.push('\n');
    }
    // The Kubernetes executor's security context, from the file's own header.
    let header: String = fs::read_to_string(examples().join("gitlab-ci.yml")).unwrap();
    assert!(header.contains("run_as_user = 1000") && header.contains("drop = [\"ALL\"]"));
    let rootfs = setup.podman.rootfs("gitlab");
    let mut command = setup.container();
    command
        .args([
            "--user",
            "1000:1000",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--security-opt",
            "seccomp=unconfined",
            "-v",
            &format!("{}:/builds/team/app", project.display()),
            "-w",
            "/builds/team/app",
        ])
        .arg("--rootfs")
        .arg(&rootfs)
        .args(["/bin/sh", "-c", &script]);
    let stderr = run_ok(&mut command, "the GitLab job");
    assert_rung(&stderr, "userns (uid 1000", "the GitLab job");
    setup.assert_pushed("team/app", "0a1b2c3d", "the GitLab job");
    setup.assert_pushed("team/app/cache", "buildcache", "the GitLab job's cache");
}

#[test]
fn the_github_workflow_logs_in_builds_and_pushes_on_the_runner() {
    let Some(documents) = yaml_documents(&examples().join("github-actions.yml")) else {
        return;
    };
    let Some(setup) = Setup::start() else {
        return;
    };
    let job = &documents[0]["jobs"]["build"];
    let w = setup.dir().join("github");
    let checkout = w.join("checkout");
    setup.app_context(&checkout);
    // kiln "installed": on PATH, as the install step puts it in /usr/local/bin.
    let bin = w.join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiln"), bin.join("kiln")).unwrap();
    let sha = "4f0c8d2e9a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d";
    let expressions = |text: &str| {
        let out = setup
            .localize(text)
            .replace("${{ github.repository }}", "team/app")
            .replace("${{ github.sha }}", sha)
            .replace("${{ github.actor }}", USER)
            .replace("${{ secrets.GITHUB_TOKEN }}", PASSWORD);
        assert!(!out.contains("${{"), "an unresolved expression in {text:?}");
        out
    };
    let mut script =
        String::from("set -euo pipefail\n# The runner's sudo: already root.\nsudo() { \"$@\"; }\n");
    for (name, value) in job["env"].as_object().unwrap() {
        script.push_str(&format!(
            "export {name}=\"{}\"\n",
            expressions(value.as_str().unwrap())
        ));
    }
    let mut ran = Vec::new();
    for step in job["steps"].as_array().unwrap() {
        let Some(run) = step["run"].as_str() else {
            assert!(step["uses"]
                .as_str()
                .unwrap()
                .starts_with("actions/checkout@"));
            continue;
        };
        let name = step["name"].as_str().unwrap();
        if run.contains("curl") {
            // The download needs the internet; what it installs is what `bin` holds.
            assert!(run.contains("/usr/local/bin/kiln"), "{name}: {run}");
            continue;
        }
        for (variable, value) in step["env"].as_object().into_iter().flatten() {
            script.push_str(&format!(
                "export {variable}=\"{}\"\n",
                expressions(value.as_str().unwrap())
            ));
        }
        script.push_str(&expressions(run));
        script.push('\n');
        ran.push(name.to_string());
    }
    assert_eq!(ran, ["Log in to ghcr.io", "Build and push"]);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut command = Command::new("bash");
    command
        .args(["-c", &script])
        .current_dir(&checkout)
        .env("PATH", path)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        // The runner's home would be the machine's: the store and the login stay in the test.
        .env("KILN_ROOT", w.join("store"))
        .env("DOCKER_CONFIG", w.join("docker"));
    let stderr = run_ok(&mut command, "the GitHub workflow");
    assert_rung(
        &stderr,
        "sandbox (root with CAP_SYS_ADMIN",
        "the GitHub workflow",
    );
    setup.assert_pushed("team/app", sha, "the GitHub workflow");
    setup.assert_pushed("team/app", "latest", "the GitHub workflow");
    setup.assert_pushed("team/app", "buildcache", "the GitHub workflow's cache");
}
