//! kiln inside podman containers, as a CI runner starts it: a busybox root that can run kiln's
//! binary (busybox, its applets, kiln's shared libraries), the binary bind-mounted read-only at
//! /usr/local/bin/kiln, and a podman of the test's own (storage, run root and containers.conf
//! in a temp dir: runc, cgroupfs, vfs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes `dir` a root that can run kiln: /bin/busybox and its applets, kiln's shared libraries
/// where the loader looks for them, /tmp, /etc (root and uid 1000 named), /proc, /sys, /dev.
pub fn kiln_rootfs(dir: &Path) {
    busybox_root(
        dir,
        "root:x:0:0:root:/root:/bin/sh\nkiln:x:1000:1000::/tmp:/bin/sh\n",
        "root:x:0:\nkiln:x:1000:\n",
    );
    fs::create_dir_all(dir.join("w")).unwrap();
    fs::create_dir_all(dir.join("usr/local/bin")).unwrap();
}

/// A busybox root with kiln's shared libraries and these /etc/passwd and /etc/group: what a
/// dynamically linked kiln needs of a base image.
pub fn busybox_root(dir: &Path, passwd: &str, group: &str) {
    for sub in ["bin", "tmp", "proc", "sys", "dev", "etc", "root"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(super::busybox_binary(), dir.join("bin/busybox")).unwrap();
    // Relative links (`busybox --install -s` would point them at this host's path). The list
    // comes from the host's busybox: running the copy just written can fail with ETXTBSY
    // while another thread of the test forks (the copy's write descriptor lives on in the
    // child until it execs).
    let list = Command::new(super::busybox_binary())
        .arg("--list")
        .output()
        .unwrap();
    assert!(list.status.success());
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
    fs::write(dir.join("etc/passwd"), passwd).unwrap();
    fs::write(dir.join("etc/group"), group).unwrap();
    for library in kiln_libraries() {
        let target = dir.join(library.trim_start_matches('/'));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(&library, &target).unwrap();
    }
}

/// The shared libraries kiln's binary loads (absolute paths, from `ldd`).
pub fn kiln_libraries() -> Vec<String> {
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// The `-v` argument that puts kiln's binary at /usr/local/bin/kiln, read-only.
pub fn kiln_volume() -> String {
    format!("{}:/usr/local/bin/kiln:ro", env!("CARGO_BIN_EXE_kiln"))
}

/// A podman with storage of its own; removed with the value.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// `None` (after [`super::skip_or_fail`]) when podman is not installed.
    pub fn new() -> Option<Podman> {
        if !super::require_tool("podman") {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-podman")
            .tempdir_in("/var/tmp")
            .unwrap();
        fs::write(
            dir.path().join("containers.conf"),
            "[containers]\nnetns = \"none\"\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=20000:20000\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n",
        )
        .unwrap();
        Some(Podman { dir })
    }

    /// `podman` with this storage and configuration; add the subcommand.
    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--runtime",
                "runc",
            ]);
        command
    }

    /// `podman run --rm --network host` (the test registry listens on the host's 127.0.0.1)
    /// with kiln bind-mounted; add options, then the image or `--rootfs DIR`, then the command.
    pub fn run(&self) -> Command {
        let mut command = self.command();
        command.args(["run", "--rm", "--network", "host", "-v", &kiln_volume()]);
        command
    }

    /// A fresh kiln root for one container, under the podman's own directory.
    pub fn rootfs(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join("rootfs").join(name);
        kiln_rootfs(&dir);
        dir
    }
}
