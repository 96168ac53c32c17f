//! kiln as a CI build step: its binary mounted into busybox containers of podman and docker,
//! building the ladder recipe (RUN whiteouts, a cache mount, a secret). Each cell either
//! builds the very image the host builds (same manifest digest), or fails with the message
//! docs/ci.md documents. Needs root, podman, docker.io (the suite's dockerd when `DOCKER_HOST`
//! names one that answers, as scripts/test.sh exports it; else one started here, with its own
//! data root, socket, `--bridge=none --iptables=false`, and stopped at the end) and
//! busybox-static; a missing tool fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LADDER_RECIPE: &str = include_str!("../../../testdata/isolation/ladder.Dockerfile");
const SECRET: &str = "s3cret-ladder";
const ROOT_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
const ROOT_GROUP: &str = "root:x:0:\n";

/// What a cell must do.
enum Expect {
    /// Build the host's image, reporting this rung line first.
    SameImage { isolation: &'static str },
    /// Fail, saying all of these.
    Fails { saying: &'static [&'static str] },
}

/// The shared directory mounted at /w in every container: kiln, a busybox root with kiln's
/// shared libraries, the context, the secret, one store and one output per cell.
struct Workspace {
    dir: tempfile::TempDir,
    host_digest: String,
}

fn tool(name: &str) {
    let found = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the container matrix needs {name} (apt-get install podman docker.io)"
    );
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("kiln-matrix")
            .tempdir_in("/tmp")
            .unwrap();
        let w = dir.path();
        fs::set_permissions(w, fs::Permissions::from_mode(0o755)).unwrap();
        let kiln = w.join("kiln");
        fs::copy(env!("CARGO_BIN_EXE_kiln"), &kiln).unwrap();
        // A busybox root that can run kiln: busybox, its applets, kiln's shared libraries.
        let rootfs = w.join("rootfs");
        common::containers::busybox_root(&rootfs, ROOT_PASSWD, ROOT_GROUP);
        fs::create_dir_all(rootfs.join("w")).unwrap();
        let ctx = w.join("ctx");
        fs::create_dir(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), LADDER_RECIPE).unwrap();
        fs::write(
            ctx.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        fs::write(ctx.join("group"), "root:x:0:\nbob:x:1000:\n").unwrap();
        fs::copy(busybox_binary(), ctx.join("busybox")).unwrap();
        fs::write(w.join("secret"), SECRET).unwrap();
        fs::create_dir(w.join("out")).unwrap();
        let open = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(w)
            .status()
            .unwrap();
        assert!(open.success());
        fs::set_permissions(w.join("out"), fs::Permissions::from_mode(0o777)).unwrap();
        // The host build, on the host's own rung.
        let out = Command::new(&kiln)
            .arg("--root")
            .arg(w.join("host-store"))
            .args(["build", "--secret"])
            .arg(format!("id=tok,src={}", w.join("secret").display()))
            .arg("-o")
            .arg(format!(
                "type=oci,dest={}",
                w.join("out/host.tar").display()
            ))
            .arg(&ctx)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "host build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let host_digest = read_image(&w.join("out/host.tar")).manifest_digest;
        Workspace { dir, host_digest }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// kiln's arguments inside a container, for the cell `name`.
    fn kiln_args(&self, name: &str) -> Vec<String> {
        let store = self.path().join(format!("store-{name}"));
        fs::create_dir(&store).unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(0o777)).unwrap();
        vec![
            "/w/kiln".into(),
            "--root".into(),
            format!("/w/store-{name}"),
            "build".into(),
            "--progress=plain".into(),
            "--secret".into(),
            "id=tok,src=/w/secret".into(),
            "-o".into(),
            format!("type=oci,dest=/w/out/{name}.tar"),
            "/w/ctx".into(),
        ]
    }

    /// Checks a cell's outcome; returns its row of the table.
    fn check(&self, name: &str, status: i32, stderr: &str, expect: &Expect) -> String {
        match expect {
            Expect::SameImage { isolation } => {
                assert_eq!(status, 0, "{name}: {stderr}");
                let first = stderr.lines().next().unwrap_or_default();
                assert!(
                    first.starts_with(isolation),
                    "{name}: expected {isolation:?} first, got {first:?}"
                );
                let image = read_image(&self.path().join(format!("out/{name}.tar")));
                let last = paths(image.layers.last().unwrap());
                assert!(last.contains(&"secret-ok".to_string()), "{name}: {last:?}");
                let changes = paths(&image.layers[image.layers.len() - 2]);
                for entry in ["data/.wh.gone", "data/.wh.del", "data/keep/.wh..wh..opq"] {
                    assert!(
                        changes.contains(&entry.to_string()),
                        "{name}: {entry} missing in {changes:?}"
                    );
                }
                assert_eq!(
                    image.manifest_digest, self.host_digest,
                    "{name}: not the host's image"
                );
                format!("| {name} | builds, same digest as the host | `{first}` |")
            }
            Expect::Fails { saying } => {
                assert_ne!(status, 0, "{name} should fail: {stderr}");
                for words in *saying {
                    assert!(stderr.contains(words), "{name}: {words:?} not in {stderr}");
                }
                let line = stderr
                    .lines()
                    .find(|l| l.contains(saying[0]))
                    .unwrap_or_default();
                format!("| {name} | fails (exit {status}) | `{line}` |")
            }
        }
    }
}

fn output(mut command: Command) -> (i32, String) {
    let out = command.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    )
}

#[test]
fn podman_cells_build_the_host_image_or_say_what_to_change() {
    tool("podman");
    let work = Workspace::new();
    let Some(podman) = common::containers::Podman::new() else {
        return;
    };
    let cells: [(&str, &[&str], Expect); 3] = [
        (
            "podman-root",
            &[],
            Expect::SameImage {
                isolation: "isolation: userns (root without CAP_SYS_ADMIN",
            },
        ),
        (
            "podman-user-1000",
            &["--user", "1000"],
            Expect::SameImage {
                isolation: "isolation: userns (uid 1000",
            },
        ),
        (
            "podman-nnp-cap-drop-all",
            &["--security-opt", "no-new-privileges", "--cap-drop", "ALL"],
            Expect::Fails {
                saying: &[
                    "without CAP_SETFCAP, so Linux refuses to map root",
                    "--user 1000",
                    "RUN cannot be isolated here",
                ],
            },
        ),
    ];
    let mut table = Vec::new();
    for (name, options, expect) in &cells {
        let mut command = podman.command();
        command
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "-e",
                &format!("SOURCE_DATE_EPOCH={EPOCH}"),
                "-v",
                &format!("{}:/w", work.path().display()),
                "-w",
                "/w",
            ])
            .args(*options)
            .arg("--rootfs")
            .arg(work.path().join("rootfs"))
            .args(work.kiln_args(name));
        let (status, stderr) = output(command);
        table.push(work.check(name, status, &stderr, expect));
    }
    eprintln!("{}", table.join("\n"));
}

/// The dockerd the suite started (scripts/test.sh exports its `DOCKER_HOST`), else one of the
/// test's own, stopped (and its containers with it) when dropped.
struct Dockerd {
    /// None: the suite's daemon, left running.
    child: Option<Child>,
    socket: String,
    _dir: tempfile::TempDir,
}

impl Dockerd {
    fn start() -> Dockerd {
        tool("docker");
        if let Some(daemon) = Dockerd::the_suites() {
            return daemon;
        }
        tool("dockerd");
        let dir = tempfile::Builder::new()
            .prefix("kiln-dockerd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let socket = format!("unix://{}", d.join("docker.sock").display());
        let log = fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--host", &socket])
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver=vfs",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut daemon = Dockerd {
            child: Some(child),
            socket,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            let ready = Command::new("docker")
                .args(["-H", &daemon.socket, "version"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                break;
            }
            if let Some(Ok(Some(status))) = daemon.child.as_mut().map(Child::try_wait) {
                let log = fs::read_to_string(daemon._dir.path().join("dockerd.log"));
                panic!("dockerd ended ({status}): {log:?}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "dockerd did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    /// The suite's daemon, when `DOCKER_HOST` names one that answers.
    fn the_suites() -> Option<Dockerd> {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())?;
        let answers = Command::new("docker")
            .args(["-H", &socket, "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        answers.then(|| Dockerd {
            child: None,
            socket,
            _dir: tempfile::tempdir().unwrap(),
        })
    }

    fn docker(&self) -> Command {
        let mut command = Command::new("docker");
        command.args(["-H", &self.socket]);
        command
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        // A dockerd that did not clean up leaves its network namespace mounted there, which
        // would keep the temporary directory from being removed.
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self._dir.path().join("exec/netns/default"))
            .stderr(Stdio::null())
            .status();
    }
}

impl Dockerd {
    fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // SIGTERM first: dockerd stops its containers and its containerd.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn docker_cells_build_the_host_image_or_say_what_to_change() {
    let work = Workspace::new();
    let daemon = Dockerd::start();
    // Unique on a daemon the suite shares; removed at the end.
    let image = format!("kiln-matrix-{}:busybox", std::process::id());
    // The busybox root as an image of this daemon.
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(work.path().join("rootfs"))
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let import = daemon
        .docker()
        .args(["import", "-", &image])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(
        import.status.success(),
        "docker import: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    let cells: [(&str, &[&str], Expect); 3] = [
        // No namespace at all: the chroot rung.
        (
            "docker-root",
            &[],
            Expect::SameImage {
                isolation: "isolation: chroot (root without CAP_SYS_ADMIN, in a container, no user namespace",
            },
        ),
        (
            "docker-user-1000",
            &["--user", "1000"],
            Expect::Fails {
                saying: &[
                    "kiln is uid 1000 and creating a user namespace was refused",
                    "seccompProfile.type: Unconfined",
                ],
            },
        ),
        // The fix the message names, proven.
        (
            "docker-root-seccomp-unconfined",
            &["--security-opt", "seccomp=unconfined"],
            Expect::SameImage {
                isolation: "isolation: userns (root without CAP_SYS_ADMIN",
            },
        ),
    ];
    let mut table = Vec::new();
    for (name, options, expect) in &cells {
        let mut command = daemon.docker();
        command
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "-e",
                &format!("SOURCE_DATE_EPOCH={EPOCH}"),
                "-v",
                &format!("{}:/w", work.path().display()),
                "-w",
                "/w",
            ])
            .args(*options)
            .arg(&image)
            .args(work.kiln_args(name));
        let (status, stderr) = output(command);
        table.push(work.check(name, status, &stderr, expect));
    }
    eprintln!("{}", table.join("\n"));
    let _ = daemon.docker().args(["rmi", &image]).output();
}

/// Issue 15: `RUN apt-get install` of a small package on a debootstrapped Debian base, with
/// kiln in podman's default container (userns rung, seccomp filter on).
#[test]
fn podman_default_cell_installs_a_debian_package() {
    tool("podman");
    let base = common::debian::debian_base();
    let work = tempfile::Builder::new()
        .prefix("kiln-matrix-apt")
        .tempdir_in("/tmp")
        .unwrap();
    let w = work.path();
    let kiln = w.join("kiln");
    fs::copy(env!("CARGO_BIN_EXE_kiln"), &kiln).unwrap();
    let rootfs = w.join("rootfs");
    common::containers::busybox_root(&rootfs, ROOT_PASSWD, ROOT_GROUP);
    let ctx = w.join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::hard_link(&base, ctx.join("debian.tar"))
        .or_else(|_| fs::copy(&base, ctx.join("debian.tar")).map(|_| ()))
        .unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD debian.tar /\nRUN apt-get update && apt-get install -y --no-install-recommends hello && hello > /greeting\n",
    )
    .unwrap();
    let Some(podman) = common::containers::Podman::new() else {
        return;
    };
    // The host's network: apt needs the mirror.
    let mut command = podman.command();
    command
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            "-v",
            &format!("{}:/w", w.display()),
            "-w",
            "/w",
            "--rootfs",
        ])
        .arg(&rootfs)
        .args([
            "/w/kiln",
            "--root",
            "/w/store",
            "build",
            "--progress=plain",
            "-o",
            "type=oci,dest=/w/debian-hello.tar",
            "/w/ctx",
        ]);
    let (status, stderr) = output(command);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.starts_with("isolation: userns (root without CAP_SYS_ADMIN"),
        "{stderr}"
    );
    let image = read_image(&w.join("debian-hello.tar"));
    let last = paths(image.layers.last().unwrap());
    assert!(last.contains(&"usr/bin/hello".to_string()), "{last:?}");
    assert!(last.contains(&"greeting".to_string()), "{last:?}");
}
