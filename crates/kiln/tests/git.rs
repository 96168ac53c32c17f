//! `ADD` of git repositories, against `git daemon` and `git http-backend` servers the tests
//! start on 127.0.0.1 (git is installed by `.ci/run`; python3 serves http-backend as CGI).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::git::{git_at, git_daemon, wait_for_port, Server};
use common::registry::free_port;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn git(dir: &Path, args: &[&str]) -> String {
    git_at(dir, args, None)
}

/// A bare repository `app.git` under `repos/`: `main` with two commits (the first tagged v1,
/// annotated), and a `dev` branch with a `sub/` directory. Returns the commits.
struct Repo {
    root: tempfile::TempDir,
    work: PathBuf,
    v1: String,
    main: String,
    dev: String,
}

fn repository() -> Repo {
    let root = tempfile::tempdir().unwrap();
    let repos = root.path().join("repos");
    fs::create_dir_all(&repos).unwrap();
    git(&repos, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let work = root.path().join("work");
    fs::create_dir(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    fs::write(work.join("README"), "version one\n").unwrap();
    fs::write(work.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["update-index", "--chmod=+x", "run.sh"]);
    git_at(
        &work,
        &["commit", "-q", "-m", "one"],
        Some("@1600000000 +0000"),
    );
    git(&work, &["tag", "-a", "v1", "-m", "v1"]);
    let v1 = git(&work, &["rev-parse", "HEAD"]);
    fs::write(work.join("README"), "version two\n").unwrap();
    std::os::unix::fs::symlink("README", work.join("LINK")).unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "two"]);
    let main = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "-q", "-b", "dev"]);
    fs::create_dir(work.join("sub")).unwrap();
    fs::write(work.join("sub/only-in-sub"), "sub\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "dev"]);
    let dev = git(&work, &["rev-parse", "HEAD"]);
    let remote = repos.join("app.git");
    git(
        &work,
        &["push", "-q", &remote.to_string_lossy(), "main", "dev", "v1"],
    );
    Repo {
        root,
        work,
        v1,
        main,
        dev,
    }
}

fn layer_files(image: &Image, layer: usize) -> Vec<(String, u32, i64)> {
    image.layers[layer]
        .iter()
        .map(|e| {
            (
                String::from_utf8_lossy(&e.path).into_owned(),
                e.mode & 0o7777,
                e.mtime,
            )
        })
        .collect()
}

#[test]
fn add_of_a_git_repository_checks_out_the_ref() {
    let repo = repository();
    let (_daemon, port) = git_daemon(&repo.root.path().join("repos"));
    let url = format!("git://127.0.0.1:{port}/app.git");
    let recipe = format!(
        "FROM scratch\n\
         ADD {url}#v1 /v1/\n\
         ADD {url}#dev:sub /sub\n\
         ADD --keep-git-dir=true {url} /kept/\n\
         ADD {url}#{main} /by-commit/\n",
        main = repo.main
    );
    let ctx = context(&[("Dockerfile", &recipe)]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("git.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let run = build(ctx.path(), root.path(), &["-o", &dest], &[]);
    let image = read_image(&archive);
    // The tag's files, modes from git, every time the commit's.
    let v1 = layer_files(&image, 0);
    assert!(
        v1.contains(&("v1/README".to_string(), 0o644, 1_600_000_000)),
        "{v1:?}"
    );
    assert!(
        v1.contains(&("v1/run.sh".to_string(), 0o755, 1_600_000_000)),
        "{v1:?}"
    );
    assert!(v1.iter().all(|(p, _, _)| !p.contains(".git")), "{v1:?}");
    // A subdirectory of a branch, copied into the destination.
    let sub: Vec<String> = layer_files(&image, 1).into_iter().map(|f| f.0).collect();
    assert!(sub.contains(&"sub/only-in-sub".to_string()), "{sub:?}");
    assert!(!sub.iter().any(|p| p.contains("README")), "{sub:?}");
    // The default branch with its .git kept, naming the remote; the commit it had.
    let kept: Vec<String> = layer_files(&image, 2).into_iter().map(|f| f.0).collect();
    assert!(kept.contains(&"kept/.git/HEAD".to_string()), "{kept:?}");
    assert!(kept.contains(&"kept/LINK".to_string()), "{kept:?}");
    let by_commit: Vec<String> = layer_files(&image, 3).into_iter().map(|f| f.0).collect();
    assert!(
        by_commit.contains(&"by-commit/LINK".to_string()),
        "{by_commit:?}"
    );
    assert!(run.stderr.contains("ADD"), "{}", run.stderr);

    // Unchanged refs: everything cached. A ref that moves: that step runs again.
    let again = build(ctx.path(), root.path(), &["-o", &dest], &[]);
    assert!(!again.stderr.contains("running"), "{}", again.stderr);
    fs::write(repo.work.join("sub/only-in-sub"), "changed\n").unwrap();
    git(&repo.work, &["commit", "-q", "-am", "dev moves"]);
    let remote = repo.root.path().join("repos/app.git");
    git(
        &repo.work,
        &["push", "-q", &remote.to_string_lossy(), "dev"],
    );
    let moved = build(ctx.path(), root.path(), &["-o", &dest], &[]);
    assert!(moved.stderr.contains("#1 CACHED"), "{}", moved.stderr);
    assert!(
        moved
            .stderr
            .contains(&format!("#2 running: git {url}#dev:sub changed")),
        "the moved branch reruns its step, saying why:\n{}",
        moved.stderr
    );
    let _ = (&repo.v1, &repo.dev);
}

#[test]
fn a_git_checksum_must_match_the_commit() {
    let repo = repository();
    let (_daemon, port) = git_daemon(&repo.root.path().join("repos"));
    let url = format!("git://127.0.0.1:{port}/app.git");
    let root = tempfile::tempdir().unwrap();
    let good = format!(
        "FROM scratch\nADD --checksum={} {url}#v1 /v1/\n",
        &repo.v1[..12]
    );
    let ctx = context(&[("Dockerfile", &good)]);
    build(ctx.path(), root.path(), &[], &[]);
    let bad = format!("FROM scratch\nADD --checksum={} {url}#v1 /v1/\n", repo.dev);
    let ctx = context(&[("Dockerfile", &bad)]);
    let r = root.path().to_string_lossy().into_owned();
    let run = kiln(&["--root", &r, "build", "."], ctx.path(), &[]);
    assert_ne!(run.status, 0);
    assert!(
        run.stderr.contains("expected checksum to match"),
        "{}",
        run.stderr
    );
    // A ref the repository lacks says so.
    let missing = format!("FROM scratch\nADD {url}#nope /x/\n");
    let ctx = context(&[("Dockerfile", &missing)]);
    let run = kiln(&["--root", &r, "build", "."], ctx.path(), &[]);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("has no ref \"nope\""), "{}", run.stderr);
}

/// `git http-backend` behind python3's CGI server, with a user and password in the URL that
/// the server ignores: they must reach git and nothing else.
#[test]
fn credentials_in_a_git_url_never_reach_the_image_or_the_store() {
    let repo = repository();
    let repos = repo.root.path().join("repos");
    let cgi = repo.root.path().join("www/cgi-bin");
    fs::create_dir_all(&cgi).unwrap();
    let script = cgi.join("git");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport GIT_PROJECT_ROOT={} GIT_HTTP_EXPORT_ALL=1\n\
             export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'\n\
             exec git http-backend\n",
            repos.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    // As root, python runs CGI scripts as nobody: the repositories must be readable to it.
    for dir in walk_dirs(repo.root.path()) {
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o755)).unwrap();
    }
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--cgi", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .current_dir(repo.root.path().join("www"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed for this test");
    let _server = Server(child);
    wait_for_port(port);
    let secret = "s3cret-token-4242";
    let url = format!("http://kiln-user:{secret}@127.0.0.1:{port}/cgi-bin/git/app.git");
    let recipe = format!("FROM scratch\nADD --keep-git-dir {url}#main /src/\n");
    let ctx = context(&[("Dockerfile", &recipe)]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("git.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let run = build(ctx.path(), root.path(), &["-o", &dest], &[]);
    assert!(!run.stderr.contains(secret), "{}", run.stderr);
    let image = read_image(&archive);
    let files: Vec<String> = layer_files(&image, 0).into_iter().map(|f| f.0).collect();
    assert!(files.contains(&"src/README".to_string()), "{files:?}");
    // The files themselves (a kept .git included), written out by a cached rebuild.
    let tree = out.path().join("tree");
    let local = format!("type=local,dest={}", tree.display());
    build(ctx.path(), root.path(), &["-o", &local], &[]);
    assert!(tree.join("src/.git/config").is_file());
    // No byte of the store, the archive or the tree holds the secret: blobs, cache records,
    // logs, configs, the checked-out files.
    let mut holders = Vec::new();
    for dir in [root.path(), out.path()] {
        for entry in files_under(dir) {
            if fs::read(&entry)
                .map(|bytes| bytes.windows(secret.len()).any(|w| w == secret.as_bytes()))
                .unwrap_or(false)
            {
                holders.push(entry);
            }
        }
    }
    assert!(holders.is_empty(), "the secret is in {holders:?}");
    let config = fs::read_to_string(tree.join("src/.git/config")).unwrap();
    assert!(
        config.contains(&format!("http://127.0.0.1:{port}/cgi-bin/git/app.git")),
        "{config}"
    );
}

fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut index = 0;
    while let Some(path) = out.get(index).cloned() {
        index += 1;
        if let Ok(entries) = fs::read_dir(&path) {
            for entry in entries.filter_map(|e| e.ok()) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(entry.path());
                }
            }
        }
    }
    out
}
