//! The in-toto attestation framework's own bindings (PyPI `in-toto-attestation`) read kiln's
//! statements: the Statement v1 and the SLSA provenance v1 predicate parse strictly.
//!
//! Needs a python3 that can `import in_toto_attestation` (`pip install in-toto-attestation`),
//! found as `KILN_TEST_PYTHON` or `python3` on PATH; fails when there is none.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;

use kiln_attest::{
    provenance_statement, BuildRecord, Material, ProvenanceMode, Recipe, SecretUse, StepRecord,
    Subject,
};
use kiln_oci::{sha256_digest, Platform};
use kiln_sbom::Timestamp;

fn python() -> String {
    let python = std::env::var("KILN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import in_toto_attestation"])
        .output()
        .unwrap_or_else(|err| panic!("{python} could not run: {err}"));
    assert!(
        probe.status.success(),
        "{python} cannot import in_toto_attestation (pip install in-toto-attestation, or set \
         KILN_TEST_PYTHON): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}

fn record() -> BuildRecord {
    BuildRecord {
        builder_id: "https://kiln.invalid/builder".into(),
        builder_version: BTreeMap::from([("kiln".into(), "0.1.0".into())]),
        frontend: "dockerfile.v0".into(),
        recipe: Recipe {
            path: "Dockerfile".into(),
            digest: sha256_digest(b"FROM base\n"),
            source_uri: Some("https://github.com/o/r.git#main".into()),
        },
        build_args: BTreeMap::from([("A".into(), "1".into())]),
        secrets: vec![SecretUse {
            id: "s".into(),
            optional: true,
        }],
        ssh: vec![],
        target: Some("final".into()),
        platforms: vec![Platform::new("linux", "amd64")],
        builder_platform: Platform::new("linux", "amd64"),
        materials: vec![
            Material::Image {
                reference: "alpine:3.19".into(),
                digest: sha256_digest(b"alpine"),
                platform: Some(Platform::new("linux", "amd64")),
            },
            Material::Git {
                url: "https://github.com/o/lib.git".into(),
                reference: None,
                commit: "4b220de5058abfd01ff619c9d2ff6b09a049bea0".into(),
            },
            Material::Context {
                name: "context".into(),
                digest: sha256_digest(b"ctx"),
            },
        ],
        invocation_id: Some("build-1".into()),
        started: Timestamp(1_700_000_000),
        finished: Timestamp(1_700_000_042),
        source_date_epoch: None,
        hermetic: false,
        steps: vec![StepRecord {
            id: "step0".into(),
            stage: "final".into(),
            instruction: "RUN true".into(),
            cache_key: "sha256:00".into(),
            cached: true,
            inputs: vec![],
        }],
        redact: vec![("s".into(), "value".into())],
    }
}

#[test]
fn in_toto_bindings_read_the_provenance() {
    let python = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/in_toto_check.py");
    let dir = tempfile::tempdir().unwrap();
    for mode in [ProvenanceMode::Min, ProvenanceMode::Max] {
        let subjects = Subject::for_image(
            &["example.com/app:1"],
            &Platform::new("linux", "amd64"),
            &sha256_digest(b"image"),
        );
        let statement = provenance_statement(subjects, &record(), mode).unwrap();
        let file = dir.path().join("provenance.json");
        std::fs::write(&file, statement.to_json().unwrap()).unwrap();
        let output = Command::new(&python)
            .arg(script)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{mode:?}: the in-toto bindings refused the statement:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
