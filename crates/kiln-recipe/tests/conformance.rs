//! BuildKit's own parser test files, run against kiln's syntax layer.
//!
//! The folder lives outside the repository and comes from `KILN_CONFORMANCE_DIR`
//! (`scripts/test.sh` points it at `../shared/conformance/buildkit-parser` when that exists).
//! Without it the tests print "not run: ..." and pass, except under `KILN_REQUIRE_ALL=1`
//! (`.ci/run`), where a missing folder fails them.

// Tests and benchmarks fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_recipe::dump::dump;
use kiln_recipe::parse;
use std::fs;
use std::path::{Path, PathBuf};

fn conformance_dir() -> Option<PathBuf> {
    let why = match std::env::var_os("KILN_CONFORMANCE_DIR") {
        Some(dir) if Path::new(&dir).is_dir() => return Some(PathBuf::from(dir)),
        Some(dir) => format!(
            "KILN_CONFORMANCE_DIR={} is not a directory",
            Path::new(&dir).display()
        ),
        None => "KILN_CONFORMANCE_DIR is not set".to_string(),
    };
    if std::env::var("KILN_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("KILN_REQUIRE_ALL=1 and the conformance data is missing: {why}");
    }
    eprintln!("not run: {why} (the conformance data lives outside the repository)");
    None
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    cases
}

fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn positive_cases_dump_exactly_as_buildkit() {
    let Some(dir) = conformance_dir() else { return };
    let cases = cases(&dir.join("testfiles"));
    assert!(
        cases.len() >= 33,
        "expected at least 33 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let document = parse(&read_text(&case.join("Dockerfile")));
        let expected = read_text(&case.join("result"));
        let errors: Vec<_> = document
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .collect();
        let actual = dump(&document);
        if !errors.is_empty() || actual != expected {
            failures.push(format!(
                "{}:\n  errors: {errors:?}\n  expected:\n{expected}\n  actual:\n{actual}",
                case.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} positive cases match", cases.len());
}

#[test]
fn negative_cases_are_rejected() {
    let Some(dir) = conformance_dir() else { return };
    let cases = cases(&dir.join("testfiles-negative"));
    assert!(
        cases.len() >= 4,
        "expected at least 4 cases, found {}",
        cases.len()
    );
    for case in &cases {
        let document = parse(&read_text(&case.join("Dockerfile")));
        assert!(
            document.has_errors(),
            "{} parsed without error",
            case.display()
        );
    }
}

#[test]
fn line_ranges_match_buildkit() {
    let Some(dir) = conformance_dir() else { return };
    let document = parse(&read_text(&dir.join("testfile-line/Dockerfile")));
    let ranges: Vec<(usize, usize)> = document
        .nodes
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    assert_eq!(ranges, [(5, 5), (11, 12), (17, 31)]);
}
