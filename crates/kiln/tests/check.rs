//! `kiln build --check` on the recipes in examples/ and testdata/, run as a user runs it.

// Tests and benchmarks fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kiln(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("run kiln")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

#[test]
fn every_valid_recipe_checks_clean() {
    let root = repo();
    let mut recipes = files(&root.join("testdata/valid"), ".Dockerfile");
    for example in std::fs::read_dir(root.join("examples"))
        .unwrap()
        .filter_map(|e| e.ok())
    {
        // An example is a build context (with a Dockerfile) or, like examples/ci, files to
        // copy into a CI system.
        let recipe = example.path().join("Dockerfile");
        if recipe.is_file() {
            recipes.push(recipe);
        }
    }
    assert!(
        recipes.len() >= 8,
        "expected the valid corpus, found {recipes:?}"
    );
    for recipe in recipes {
        let out = kiln(
            &["build", "--check", "-f", &recipe.to_string_lossy()],
            &root,
        );
        assert!(
            out.status.success(),
            "{} failed the check:\n{}",
            recipe.display(),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("valid"), "{}", text(&out.stdout));
    }
}

#[test]
fn every_invalid_recipe_fails_with_its_message() {
    let dir = repo().join("testdata/invalid");
    let recipes = files(&dir, ".Dockerfile");
    assert!(
        recipes.len() >= 25,
        "expected the invalid corpus, found {}",
        recipes.len()
    );
    for recipe in recipes {
        let name = recipe
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".Dockerfile")
            .to_string();
        let expected = std::fs::read_to_string(dir.join(format!("{name}.expected")))
            .unwrap_or_else(|e| panic!("{name}.expected: {e}"));
        let extra = std::fs::read_to_string(dir.join(format!("{name}.args"))).unwrap_or_default();
        let mut args = vec!["build", "--check", "-f"];
        let file = format!("{name}.Dockerfile");
        args.push(&file);
        args.extend(extra.split_whitespace());
        let out = kiln(&args, &dir);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: expected exit 1, stderr:\n{stderr}"
        );
        for line in expected.lines().filter(|l| !l.is_empty()) {
            assert!(
                stderr.contains(line),
                "{name}: missing {line:?} in:\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{name} panicked:\n{stderr}");
    }
}

#[test]
fn recipe_from_standard_input() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--check", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM scratch\nCOPY a /a\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("<stdin>: valid, 1 stage"));
}

#[test]
fn recipe_defaults_to_context_dockerfile() {
    let out = kiln(&["build", "--check", "examples/hello"], &repo());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("examples/hello/Dockerfile: valid"));
}

#[test]
fn missing_recipe_is_an_error_that_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln(&["build", "--check", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read recipe ./Dockerfile"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn wrong_usage_exits_2() {
    let root = repo();
    assert_eq!(
        kiln(&["build", "--check", "--no-such-flag"], &root)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(kiln(&["frobnicate"], &root).status.code(), Some(2));
    let bad_platform = kiln(
        &[
            "build",
            "--check",
            "--platform",
            "a/b/c/d",
            "examples/hello",
        ],
        &root,
    );
    assert_eq!(bad_platform.status.code(), Some(2));
}

#[test]
fn build_args_and_target_shape_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "ARG BASE=alpine\nFROM ${BASE} AS one\nFROM scratch AS two\nCOPY --from=one /x /x\nFROM scratch AS three\n",
    )
    .unwrap();
    let out = kiln(
        &[
            "build",
            "--check",
            "--build-arg",
            "BASE=debian",
            "--target",
            "two",
            ".",
        ],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("#0 one          FROM debian"), "{stdout}");
    assert!(stdout.contains("[target]"), "{stdout}");
    assert!(
        stdout.contains("#2 three        FROM scratch: 0 steps, 0 layers [skipped]"),
        "{stdout}"
    );
}

#[test]
fn unused_build_arg_warns_but_passes() {
    let out = kiln(
        &[
            "build",
            "--check",
            "--build-arg",
            "NOPE=1",
            "examples/hello",
        ],
        &repo(),
    );
    assert!(out.status.success());
    assert!(text(&out.stderr)
        .contains("warning[UnusedBuildArg]: build arguments were not consumed by any ARG: NOPE"));
}

#[test]
fn non_utf8_recipe_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        b"FROM scratch\nLABEL a=\xff\n",
    )
    .unwrap();
    let out = kiln(&["build", "--check", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not valid UTF-8 (line 2"),
        "{}",
        text(&out.stderr)
    );
}
