//! The whole path the builder will take: provenance and SBOM statements, packed into an
//! attestation manifest, added to an index. No byte of anything written holds a secret value,
//! a credential or URL userinfo, and the same inputs with SOURCE_DATE_EPOCH give the same bytes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_attest::{
    attestation_layer, attestation_manifest, provenance_statement, sbom_statement, AttestationForm,
    BuildRecord, Material, ProvenanceMode, Recipe, SecretUse, StepRecord, Subject,
};
use kiln_oci::{media_types, sha256_digest, to_canonical_json, Descriptor, Index, Platform};
use kiln_sbom::{spdx_document, Ecosystem, Inventory, OsRelease, Package, SbomOptions, Timestamp};

const SECRET: &str = "s3cr3t-value-never-written";
const PASSWORD: &str = "registry-password-123";

fn record(started: i64) -> BuildRecord {
    BuildRecord {
        builder_id: "https://kiln.invalid/builder".into(),
        builder_version: BTreeMap::from([("kiln".into(), "0.1.0".into())]),
        frontend: "dockerfile.v0".into(),
        recipe: Recipe {
            path: "Dockerfile".into(),
            digest: sha256_digest(b"FROM base\n"),
            source_uri: None,
        },
        build_args: BTreeMap::from([("TOKEN_COPY".into(), SECRET.into())]),
        secrets: vec![SecretUse {
            id: "token".into(),
            optional: false,
        }],
        ssh: vec![],
        target: None,
        platforms: vec![Platform::new("linux", "amd64")],
        builder_platform: Platform::new("linux", "amd64"),
        materials: vec![
            Material::Image {
                reference: "registry.example.com/base:1".into(),
                digest: sha256_digest(b"base"),
                platform: Some(Platform::new("linux", "amd64")),
            },
            Material::Http {
                url: format!("https://ci:{PASSWORD}@files.example.com/a.tgz"),
                digest: sha256_digest(b"a.tgz"),
            },
        ],
        invocation_id: None,
        started: Timestamp(started),
        finished: Timestamp(started + 60),
        source_date_epoch: Some(Timestamp(1_700_000_000)),
        hermetic: true,
        steps: vec![StepRecord {
            id: "step0".into(),
            stage: "0".into(),
            instruction: format!("RUN --mount=type=secret,id=token use {SECRET}"),
            cache_key: "sha256:1111".into(),
            cached: false,
            inputs: vec![],
        }],
        redact: vec![
            ("token".into(), SECRET.into()),
            ("registry".into(), PASSWORD.into()),
        ],
    }
}

fn everything(started: i64, mode: ProvenanceMode) -> Vec<Vec<u8>> {
    let image = Descriptor::new(media_types::OCI_MANIFEST, sha256_digest(b"image"), 500);
    let platform = Platform::new("linux", "amd64");
    let subjects = Subject::for_image(&["registry.example.com/app:1"], &platform, &image.digest);
    let provenance = provenance_statement(subjects.clone(), &record(started), mode).unwrap();
    let inventory = Inventory {
        os: Some(OsRelease::parse("ID=debian\nVERSION_ID=12\n")),
        os_layer: Some(0),
        packages: vec![Package {
            ecosystem: Ecosystem::Deb,
            name: "libc6".into(),
            version: "2.36-9".into(),
            architecture: Some("amd64".into()),
            license: None,
            source: Some("glibc".into()),
            supplier: None,
            purl: "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12".into(),
            layer: Some(0),
            found_in: PathBuf::from("/var/lib/dpkg/status"),
        }],
        warnings: vec![],
    };
    let document = spdx_document(
        &inventory,
        &SbomOptions::new(
            "registry.example.com/app:1",
            "kiln-0.1.0",
            Timestamp(1_700_000_000),
        ),
    )
    .unwrap();
    let sbom = sbom_statement(subjects, &document);
    let layers = vec![
        attestation_layer(&provenance).unwrap(),
        attestation_layer(&sbom).unwrap(),
    ];
    let attestation = attestation_manifest(&image, layers, AttestationForm::OciImage).unwrap();
    let mut runnable = image.clone();
    runnable.platform = Some(platform);
    let index = Index::new(vec![runnable, attestation.index_entry.clone()]);
    let mut written: Vec<Vec<u8>> = attestation
        .blobs()
        .into_iter()
        .map(|(_, bytes)| bytes.to_vec())
        .collect();
    written.push(to_canonical_json(&index).unwrap());
    written
}

#[test]
fn no_secret_credential_or_userinfo_in_any_byte() {
    for mode in [ProvenanceMode::Min, ProvenanceMode::Max] {
        for blob in everything(1_800_000_000, mode) {
            let text = String::from_utf8(blob).unwrap();
            for forbidden in [SECRET, PASSWORD, "ci:"] {
                assert!(
                    !text.contains(forbidden),
                    "{mode:?}: {forbidden:?} in {text}"
                );
            }
        }
    }
}

#[test]
fn same_inputs_and_epoch_give_the_same_bytes() {
    // Different wall-clock start times; SOURCE_DATE_EPOCH is set, so nothing differs.
    assert_eq!(
        everything(1_800_000_000, ProvenanceMode::Max),
        everything(1_900_000_000, ProvenanceMode::Max)
    );
}
