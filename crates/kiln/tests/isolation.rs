//! The isolation ladder on this machine: every rung kiln can take here gives the same image,
//! the chosen rung is reported first, and a RUN reaches no system call that Docker's default
//! seccomp profile refuses (checked by a static probe compiled here), unless
//! `--security=insecure`. Needs root, gcc with a static libc and busybox-static.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::Command;

/// A static probe: each refused system call prints `name refused errno`, each allowed one
/// `name ALLOWED`; with the argument `strict` it exits 1 when any was allowed.
const PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int allowed = 0;

static void check(const char *name, long result) {
    if (result == -1 && (errno == EPERM || errno == ENOSYS)) {
        printf("%s refused %s\n", name, errno == EPERM ? "EPERM" : "ENOSYS");
    } else {
        printf("%s ALLOWED (%ld, %s)\n", name, result, strerror(errno));
        allowed = 1;
    }
}

int main(int argc, char **argv) {
    errno = 0;
    check("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 1));
    errno = 0;
    check("add_key", syscall(SYS_add_key, "user", "kiln-probe", "x", 1, -3));
    errno = 0;
    check("unshare-user", unshare(CLONE_NEWUSER));
    errno = 0;
    check("bpf", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, NULL, 0));
    errno = 0;
    check("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    errno = 0;
    check("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    errno = 0;
    check("personality", personality(0x0400000 /* READ_IMPLIES_EXEC */));
    printf("no_new_privs=%d\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    fflush(stdout);
    return argc > 1 && strcmp(argv[1], "strict") == 0 ? allowed : 0;
}
"#;

fn compile_probe(dir: &Path) {
    let source = dir.join("probe.c");
    fs::write(&source, PROBE).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(dir.join("probe"))
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("these tests need gcc (apt-get install gcc libc6-dev): {e}"));
    assert!(
        out.status.success(),
        "gcc -static: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::remove_file(source).unwrap();
}

/// The rungs to force on this machine (root with CAP_SYS_ADMIN, user namespaces):
/// `chroot-on-host`, as the CI machine may or may not be a container itself (the rung is named
/// `chroot` either way).
const RUNGS: &[&str] = &["sandbox", "userns", "chroot-on-host"];

#[test]
fn run_steps_are_refused_what_dockers_default_profile_refuses() {
    for rung in RUNGS {
        let root = busybox_store("auto");
        let ctx = context(&[(
            "Dockerfile",
            "FROM busybox:test\nCOPY probe /probe\nRUN /probe strict\nRUN --security=insecure /probe report > /insecure.txt\n",
        )]);
        compile_probe(ctx.path());
        let isolation = format!("--isolation={rung}");
        let root_arg = root.path().display().to_string();
        let run = kiln(
            &[
                &isolation,
                "--root",
                &root_arg,
                "build",
                "--progress=plain",
                "--allow",
                "security.insecure",
                "-t",
                "probe:1",
                ".",
            ],
            ctx.path(),
            &[],
        );
        assert_eq!(run.status, 0, "{rung}: {}", run.stderr);
        for name in [
            "keyctl",
            "add_key",
            "unshare-user",
            "bpf",
            "mount",
            "kexec_load",
            "personality",
        ] {
            assert!(
                run.stderr.contains(&format!("{name} refused")),
                "{rung}: {name} not refused:\n{}",
                run.stderr
            );
        }
        assert!(run.stderr.contains("no_new_privs=1"), "{}", run.stderr);
        // --security=insecure lifts the filter and no_new_privs.
        let out = tempfile::tempdir().unwrap();
        let dest = format!("type=local,dest={}", out.path().display());
        let run = kiln(
            &[&isolation, "--root", &root_arg, "build", "-o", &dest, "."],
            ctx.path(),
            &[],
        );
        assert_eq!(run.status, 0, "{}", run.stderr);
        let insecure = fs::read_to_string(out.path().join("insecure.txt")).unwrap();
        assert!(insecure.contains("keyctl ALLOWED"), "{rung}: {insecure}");
        assert!(
            insecure.contains("personality ALLOWED"),
            "{rung}: {insecure}"
        );
        assert!(insecure.contains("no_new_privs=0"), "{rung}: {insecure}");
    }
}

/// The recipe every rung and every cell of the container matrix builds: whiteouts, an opaque
/// directory, a cache mount and a secret.
const LADDER_RECIPE: &str = include_str!("../../../testdata/isolation/ladder.Dockerfile");

fn ladder_context() -> tempfile::TempDir {
    let ctx = context(&[
        ("Dockerfile", LADDER_RECIPE),
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        ),
        ("group", "root:x:0:\nbob:x:1000:\n"),
    ]);
    fs::copy(busybox_binary(), ctx.path().join("busybox")).unwrap();
    ctx
}

#[test]
fn every_rung_builds_the_same_image_and_says_which_it_took() {
    let ctx = ladder_context();
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("tok");
    fs::write(&secret_file, "s3cret-ladder").unwrap();
    let mut digests = Vec::new();
    for (rung, snapshotter) in [
        ("sandbox", "auto"),
        ("userns", "auto"),
        ("userns", "copy"),
        ("chroot-on-host", "auto"),
    ] {
        let store = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let archive = out.path().join("image.tar");
        let root_arg = store.path().display().to_string();
        let run = kiln(
            &[
                "--root",
                &root_arg,
                "build",
                &format!("--isolation={rung}"),
                "--secret",
                &format!("id=tok,src={}", secret_file.display()),
                "-o",
                &format!("type=oci,dest={}", archive.display()),
                ".",
            ],
            ctx.path(),
            &[
                ("SOURCE_DATE_EPOCH", EPOCH),
                ("KILN_SNAPSHOTTER", snapshotter),
            ],
        );
        assert_eq!(run.status, 0, "{rung}/{snapshotter}: {}", run.stderr);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!(
                "isolation: {} (root with CAP_SYS_ADMIN",
                rung.trim_end_matches("-on-host")
            )),
            "{rung}: first line {first:?}"
        );
        let image = read_image(&archive);
        let last = paths(image.layers.last().unwrap());
        assert!(last.contains(&"secret-ok".to_string()), "{last:?}");
        let changes = paths(&image.layers[image.layers.len() - 2]);
        for expected in [
            "data/.wh.gone",
            "data/.wh.del",
            "data/keep/.wh..wh..opq",
            "data/keep/n",
        ] {
            assert!(
                changes.contains(&expected.to_string()),
                "{rung}: {expected} in {changes:?}"
            );
        }
        for layer in &image.layers {
            for entry in layer {
                let path = entry.path_str();
                assert!(
                    !path.starts_with("cache") && !path.starts_with("run/secrets"),
                    "{path}"
                );
            }
        }
        digests.push((rung, snapshotter, image.manifest_digest));
    }
    assert!(
        digests.iter().all(|d| d.2 == digests[0].2),
        "the rungs disagree: {digests:?}"
    );
}

/// The rung named by KILN_ISOLATION when no flag is given, and an unknown value refused by
/// the argument parser.
#[test]
fn the_environment_chooses_and_bad_values_are_refused() {
    let root = busybox_store("auto");
    let ctx = context(&[("Dockerfile", "FROM busybox:test\nRUN true\n")]);
    let root_arg = root.path().display().to_string();
    let run = kiln(
        &["--root", &root_arg, "build", "."],
        ctx.path(),
        &[("KILN_ISOLATION", "userns")],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("isolation: userns"),
        "{}",
        run.stderr
    );
    let run = kiln(
        &[
            "--root",
            &root_arg,
            "build",
            "--isolation=chroot-please",
            ".",
        ],
        ctx.path(),
        &[],
    );
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--isolation"), "{}", run.stderr);
}

/// An ordinary user (KILN_TEST_USER) gets `userns`, and forcing `sandbox` is refused with the
/// capability it lacks and the flag that gives it.
#[test]
fn an_ordinary_user_is_refused_the_sandbox_rung_with_the_fix() {
    let user = std::env::var("KILN_TEST_USER")
        .expect("KILN_TEST_USER must name a user with subordinate ids (.ci/run makes kilnci)");
    let dir = tempfile::Builder::new()
        .prefix("kiln-isolation")
        .tempdir_in("/tmp")
        .unwrap();
    fs::copy(env!("CARGO_BIN_EXE_kiln"), dir.path().join("kiln")).unwrap();
    let chown = Command::new("chown")
        .args(["-R", &format!("{user}:")])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let out = Command::new("runuser")
        .args(["-u", &user, "--"])
        .arg(dir.path().join("kiln"))
        .args(["--isolation=sandbox", "--root"])
        .arg(dir.path().join("store"))
        .arg("images")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("--isolation=sandbox needs root with CAP_SYS_ADMIN"),
        "{stderr}"
    );
    assert!(stderr.contains("--cap-add SYS_ADMIN"), "{stderr}");
}

/// The chroot rung runs RUN steps with no namespace, so kiln takes it only inside a container:
/// on a machine with none of a container's marks (made here: a pid and mount namespace with
/// a fresh /proc, chrooted into a busybox root without /.dockerenv, and an empty environment —
/// kiln's own CI machine is itself a container) `--isolation=chroot` is refused, and
/// `--isolation=chroot-on-host`, which names the risk, is taken.
#[test]
fn the_chroot_rung_is_refused_on_a_host_without_the_flag_that_names_the_risk() {
    let dir = tempfile::Builder::new()
        .prefix("kiln-host")
        .tempdir_in("/tmp")
        .unwrap();
    let rootfs = dir.path();
    for sub in ["bin", "proc", "tmp", "dev", "etc", "store"] {
        fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    fs::copy(busybox_binary(), rootfs.join("bin/busybox")).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_kiln"), rootfs.join("kiln")).unwrap();
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .output()
        .unwrap();
    for library in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
    {
        let target = rootfs.join(library.trim_start_matches('/'));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(library, &target).unwrap();
    }
    assert!(!rootfs.join(".dockerenv").exists());
    let on_host = |isolation: &str| {
        let script = format!(
            "mount -t proc proc {root}/proc && exec chroot {root} /kiln --isolation={isolation} --root /store images",
            root = rootfs.display()
        );
        let out = Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--propagation",
                "private",
                "sh",
                "-c",
            ])
            .arg(script)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = on_host("chroot");
    assert_eq!(code, Some(125), "{stderr}");
    assert!(
        stderr.contains("this does not look like one") && stderr.contains("chroot-on-host"),
        "{stderr}"
    );
    let (code, stderr) = on_host("chroot-on-host");
    assert_eq!(code, Some(0), "{stderr}");
}
