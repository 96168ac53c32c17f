//! The official SPDX tools (`pyspdxtools`, PyPI `spdx-tools`) accept kiln's documents as
//! valid SPDX 2.3: field names, SPDX ids, license expressions, relationships.
//!
//! Needs `pyspdxtools` on PATH or in `KILN_PYSPDXTOOLS` (`pip install spdx-tools`); fails
//! when it is missing.

#![allow(clippy::panic, clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use kiln_sbom::{scan, spdx_document, DirImage, SbomOptions, Timestamp};

fn pyspdxtools() -> PathBuf {
    if let Some(path) = std::env::var_os("KILN_PYSPDXTOOLS") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("pyspdxtools"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!("pyspdxtools not found (PATH or KILN_PYSPDXTOOLS): pip install spdx-tools")
        })
}

fn assert_valid(root: &std::path::Path, name: &str) {
    let inventory = scan(&DirImage::new(root)).unwrap();
    let document = spdx_document(
        &inventory,
        &SbomOptions::new(name, "kiln-test", Timestamp(1_700_000_000)),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sbom.spdx.json");
    std::fs::write(&file, document.to_json().unwrap()).unwrap();
    let output = Command::new(pyspdxtools())
        .arg("-i")
        .arg(&file)
        .output()
        .unwrap_or_else(|err| panic!("pyspdxtools could not run: {err}"));
    assert!(
        output.status.success(),
        "pyspdxtools refused the SBOM of {name}:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn debian_sbom_is_valid_spdx() {
    let root = common::debian_root("debian-bookworm-minbase", &[]);
    assert_valid(&root, "debian:bookworm");
}

#[test]
fn apk_and_npm_sbom_with_odd_names_is_valid_spdx() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("lib/apk/db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(
        db.join("installed"),
        "P:musl\nV:1.2.4-r4\nA:x86_64\nL:MIT\nm:Someone <a@b.c>\n\n\
         P:odd name/with:chars\nV:1 2\nA:x86_64\nL:GPL2 or (weird\n",
    )
    .unwrap();
    let npm = root.path().join("app/node_modules/@scope/pkg");
    std::fs::create_dir_all(&npm).unwrap();
    std::fs::write(
        npm.join("package.json"),
        r#"{"name":"@scope/pkg","version":"1.0.0-beta+build","license":"(MIT OR Apache-2.0)"}"#,
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/os-release"),
        "ID=alpine\nVERSION_ID=3.19\n",
    )
    .unwrap();
    assert_valid(root.path(), "alpine:3.19 with \"odd\" <name>");
}
