//! A build stopped in the middle of a RUN (SIGINT or SIGTERM) leaves nothing running and a
//! store the next build uses: every step that finished is reused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn interrupted_then_rebuilt(signal: &str) {
    let root = busybox_store("auto");
    let recipe =
        format!("FROM busybox:test\nRUN echo one > /one\nRUN echo started; sleep 600 # {signal}\n");
    let ctx = context(&[("Dockerfile", &recipe)]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root.path())
        .args(["build", "--progress", "json", "."])
        .current_dir(ctx.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the second RUN to print, then interrupt kiln alone; its output is read to the
    // end, so kiln never writes into a closed pipe.
    let stderr = child.stderr.take().unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("\"line\":\"started\"") {
                let _ = started_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    started_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the second RUN never started");
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "kiln did not stop on SIG{signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = reader.join().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("interrupted")),
        "kiln should say it was interrupted: {lines:?}"
    );
    // The sandbox went with it: no `sleep 600` of this build is left.
    std::thread::sleep(Duration::from_millis(300));
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains(&format!("sleep 600 # {signal}")),
        "the RUN's process outlived the build"
    );
    let r = root.path().to_string_lossy().into_owned();
    let verify = kiln(&["--root", &r, "verify"], ctx.path(), &[]);
    assert_eq!(verify.status, 0, "{}", verify.stderr);
    // The rebuild reuses the step that finished and runs the interrupted one again.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM busybox:test\nRUN echo one > /one\nRUN echo again # {signal}\n"),
    )
    .unwrap();
    let again = kiln(&["--root", &r, "build", "."], ctx.path(), &[]);
    assert_eq!(again.status, 0, "{}", again.stderr);
    assert!(again.stderr.contains("#1 CACHED"), "{}", again.stderr);
    assert!(again.stderr.contains("#2 | again"), "{}", again.stderr);
}

#[test]
fn sigint_in_the_middle_of_a_run() {
    interrupted_then_rebuilt("INT");
}

#[test]
fn sigterm_in_the_middle_of_a_run() {
    interrupted_then_rebuilt("TERM");
}

/// A failing stage stops the others: the long RUN of a stage beside it is killed at once, the
/// error is the failing stage's own, and the stage that stopped is rebuilt next time.
#[test]
fn a_failing_stage_stops_the_ones_beside_it() {
    let root = busybox_store("auto");
    let recipe = "FROM busybox:test AS slow\nRUN echo slow-started; sleep 600 # beside\n\
                  FROM busybox:test AS bad\nRUN sleep 1; echo bad-failed; exit 3\n\
                  FROM busybox:test\nCOPY --from=slow /etc/passwd /a\nCOPY --from=bad /etc/passwd /b\n";
    let ctx = context(&[("Dockerfile", recipe)]);
    let r = root.path().to_string_lossy().into_owned();
    let started = Instant::now();
    let run = kiln(
        &["--root", &r, "build", "--jobs", "2", "."],
        ctx.path(),
        &[],
    );
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the slow stage was not stopped"
    );
    assert!(run.stderr.contains("exit code 3"), "{}", run.stderr);
    assert!(run.stderr.contains("bad-failed"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("another stage of the build failed\n"),
        "{}",
        run.stderr
    );
    std::thread::sleep(Duration::from_millis(300));
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("sleep 600 # beside"),
        "the slow stage's RUN outlived the build"
    );
    let verify = kiln(&["--root", &r, "verify"], ctx.path(), &[]);
    assert_eq!(verify.status, 0, "{}", verify.stderr);
}

/// The temp files of blobs being written: in the store's work areas.
fn blob_in_the_making(root: &std::path::Path) -> bool {
    let Ok(areas) = std::fs::read_dir(root.join("tmp")) else {
        return false;
    };
    areas.flatten().any(|area| {
        std::fs::read_dir(area.path()).is_ok_and(|files| {
            files.flatten().any(|f| {
                f.file_name().to_string_lossy().starts_with(".tmp")
                    && f.metadata()
                        .is_ok_and(|m| m.is_file() && m.len() > (1 << 20))
            })
        })
    })
}

#[test]
fn sigkill_while_a_lazy_blob_is_made_leaves_a_clean_store() {
    let root = busybox_store("auto");
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\nRUN head -c 120000000 /dev/urandom > /big\nRUN echo after > /after\n",
    )]);
    let r = root.path().to_string_lossy().into_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--root", &r, "build", "-t", "big:1", "."])
        .current_dir(ctx.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_when_seen(&mut child, "a blob being made", || {
        blob_in_the_making(root.path())
    });
    verify_clean(root.path(), ctx.path());
    // The step that committed is reused; its blob is made again, whole, and the image is good.
    let again = kiln(
        &[
            "--root",
            &r,
            "build",
            "-t",
            "big:1",
            "-o",
            "type=oci,dest=big.tar",
            ".",
        ],
        ctx.path(),
        &[],
    );
    assert_eq!(again.status, 0, "{}", again.stderr);
    assert!(again.stderr.contains("#1 CACHED"), "{}", again.stderr);
    verify_clean(root.path(), ctx.path());
    let image = kiln_oci::read_oci_archive(
        ctx.path().join("big.tar"),
        &kiln_oci::ReadOptions::default(),
    )
    .unwrap();
    for i in 0..image.layers().len() {
        let mut reader = image.open_layer(i).unwrap();
        std::io::copy(&mut reader, &mut std::io::sink()).expect("every layer matches its digest");
    }
}

/// Waits (five minutes at most) until `seen()` holds while `child` still runs, then kills it
/// with SIGKILL: the moment each crash test wants to interrupt.
fn kill_when_seen(child: &mut std::process::Child, what: &str, seen: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !seen() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before {what} was seen"
        );
        assert!(Instant::now() < deadline, "{what} was never seen");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn verify_clean(root: &std::path::Path, cwd: &std::path::Path) {
    let r = root.to_string_lossy().into_owned();
    let verify = kiln(&["--root", &r, "verify"], cwd, &[]);
    assert_eq!(verify.status, 0, "{}{}", verify.stdout, verify.stderr);
}

/// The first file of `app/` in a snapshot being built in a work area, if it is there already
/// as a link to the previous snapshot's file.
fn snapshot_linking(root: &std::path::Path) -> bool {
    let Ok(areas) = std::fs::read_dir(root.join("tmp")) else {
        return false;
    };
    areas.flatten().any(|area| {
        std::fs::read_dir(area.path()).is_ok_and(|works| {
            works.flatten().any(|work| {
                use std::os::unix::fs::MetadataExt;
                std::fs::symlink_metadata(work.path().join("snapshot/app/d00/f000.txt"))
                    .is_ok_and(|m| m.nlink() > 1)
            })
        })
    })
}

/// Layer digests of the image built from `ctx` into `root` (SOURCE_DATE_EPOCH far ahead, so
/// two stores agree on the directories' times and files keep theirs).
fn built_layers(ctx: &std::path::Path, root: &std::path::Path) -> Vec<String> {
    let r = root.to_string_lossy().into_owned();
    let run = kiln(
        &["--root", &r, "build", "-o", "type=oci,dest=out.tar", "."],
        ctx,
        &[("SOURCE_DATE_EPOCH", "4000000000")],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    let image =
        kiln_oci::read_oci_archive(ctx.join("out.tar"), &kiln_oci::ReadOptions::default()).unwrap();
    image
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.to_string())
        .collect()
}

#[test]
fn sigkill_while_a_snapshot_is_linked_from_the_previous_one_leaves_a_clean_store() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY src/ /app/\n")]);
    for dir in 0..10 {
        let path = ctx.path().join(format!("src/d{dir:02}"));
        std::fs::create_dir_all(&path).unwrap();
        for file in 0..1000 {
            std::fs::write(
                path.join(format!("f{file:03}.txt")),
                format!("{dir} {file}\n"),
            )
            .unwrap();
        }
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_string_lossy().into_owned();
    built_layers(ctx.path(), root.path());
    std::fs::write(ctx.path().join("src/d05/f500.txt"), "edited\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--root", &r, "build", "."])
        .current_dir(ctx.path())
        .env("SOURCE_DATE_EPOCH", "4000000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_when_seen(&mut child, "a snapshot being linked", || {
        snapshot_linking(root.path())
    });
    verify_clean(root.path(), ctx.path());
    // The next build links from the same previous snapshot and makes what a cold build makes.
    let again = built_layers(ctx.path(), root.path());
    verify_clean(root.path(), ctx.path());
    let cold = tempfile::tempdir().unwrap();
    assert_eq!(again, built_layers(ctx.path(), cold.path()));
}

/// Files in a work area's directory whose names start with `prefix` and hold more than `min`
/// bytes: a blob (`.tmp`) or a chunk pack (`chunks-`) being written.
fn in_the_making(root: &std::path::Path, prefix: &str, min: u64) -> bool {
    let Ok(areas) = std::fs::read_dir(root.join("tmp")) else {
        return false;
    };
    areas.flatten().any(|area| {
        std::fs::read_dir(area.path()).is_ok_and(|files| {
            files.flatten().any(|f| {
                f.file_name().to_string_lossy().starts_with(prefix)
                    && f.metadata().is_ok_and(|m| m.is_file() && m.len() > min)
            })
        })
    })
}

/// A context of `count` incompressible files of `size` bytes under src/ (files of 100 kB make
/// a layer of many chunks; files larger than a chunk, runs of pieces), file `edited` different
/// when `version` is.
fn chunky_context(dir: &std::path::Path, count: u64, size: usize, edited: u64, version: u64) {
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY src/ /src/\n").unwrap();
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..count {
        let mut state =
            (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ if i == edited { version } else { 0 };
        let mut bytes = Vec::with_capacity(size);
        while bytes.len() < size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.extend_from_slice(&state.to_le_bytes());
        }
        let path = src.join(format!("f{i:05}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        // One mtime for every version: only the content of the edited file differs.
        let time = std::fs::FileTimes::new()
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(time)
            .unwrap();
    }
}

/// Issue 14: a SIGKILL while a rebuild writes its layer from the chunks of the last one (read
/// from the last blob, which the chunk index points into) leaves `kiln verify` clean, and the
/// next build gives the image a cold build of the same context gives, byte for byte.
#[test]
fn sigkill_while_chunks_are_reused_leaves_a_clean_store_and_a_correct_next_build() {
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    // Killed as soon as the blob is being written: 300 files of 100 kB, the middle one
    // edited; and 4 files of 12 MB, the first edited, once the reused pieces of the others
    // are being written.
    for (files, size, edited, min) in [
        (300u64, 100_000usize, 150u64, 1u64 << 20),
        (4, 12 << 20, 0, 16 << 20),
    ] {
        let kill_at = ".tmp";
        let root = tempfile::tempdir().unwrap();
        let r = root.path().to_string_lossy().into_owned();
        let ctx = tempfile::tempdir().unwrap();
        chunky_context(ctx.path(), files, size, edited, 0);
        let first = kiln(
            &[
                "--root",
                &r,
                "build",
                "-t",
                "chunky:1",
                "-o",
                "type=oci,dest=v1.tar",
                ".",
            ],
            ctx.path(),
            &epoch,
        );
        assert_eq!(first.status, 0, "{}", first.stderr);
        assert!(
            root.path().join("chunks/index").is_file(),
            "the first build kept no chunks"
        );
        chunky_context(ctx.path(), files, size, edited, 1);

        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "--root",
                &r,
                "build",
                "-t",
                "chunky:1",
                "-o",
                "type=oci,dest=killed.tar",
                ".",
            ])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .current_dir(ctx.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kill_when_seen(&mut child, &format!("{kill_at}* being written"), || {
            in_the_making(root.path(), kill_at, min)
        });
        verify_clean(root.path(), ctx.path());

        let again = kiln(
            &[
                "--root",
                &r,
                "build",
                "-t",
                "chunky:1",
                "-o",
                "type=oci,dest=again.tar",
                ".",
            ],
            ctx.path(),
            &epoch,
        );
        assert_eq!(again.status, 0, "{}", again.stderr);
        verify_clean(root.path(), ctx.path());
        let cold_root = tempfile::tempdir().unwrap();
        let cold = kiln(
            &[
                "--root",
                &cold_root.path().to_string_lossy(),
                "build",
                "-t",
                "chunky:1",
                "-o",
                "type=oci,dest=cold.tar",
                ".",
            ],
            ctx.path(),
            &epoch,
        );
        assert_eq!(cold.status, 0, "{}", cold.stderr);
        let again = std::fs::read(ctx.path().join("again.tar")).unwrap();
        let cold = std::fs::read(ctx.path().join("cold.tar")).unwrap();
        assert!(
            again == cold,
            "killed past {min} bytes: the next build's archive differs from a cold build's"
        );
        assert!(
            !ctx.path().join("killed.tar").exists(),
            "a killed build left its archive"
        );
    }
}
