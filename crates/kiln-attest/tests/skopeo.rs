//! skopeo copies an index carrying an attestation manifest, as it does BuildKit's: every
//! blob is found and verified, and the attestation entry keeps its platform and annotations.
//!
//! Needs skopeo (apt-get install skopeo); fails when it is missing.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use kiln_attest::{
    attestation_layer, attestation_manifest, sbom_statement, AttestationForm, Statement, Subject,
    SLSA_PROVENANCE_V1,
};
use kiln_oci::{
    json_blob, media_types, to_canonical_json, Descriptor, ImageConfig, Index, Manifest, Platform,
};
use kiln_sbom::{spdx_document, Inventory, SbomOptions, Timestamp};

fn put(layout: &Path, bytes: &[u8]) {
    let digest = kiln_oci::sha256_digest(bytes);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(digest.hex()), bytes).unwrap();
}

fn skopeo(args: &[&str]) -> String {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("skopeo could not run ({err}): apt-get install skopeo"));
    assert!(
        output.status.success(),
        "skopeo {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn layout_with_attestations(layout: &Path, form: AttestationForm) -> Descriptor {
    // A runnable (empty) linux/amd64 image.
    let platform = Platform::new("linux", "amd64");
    let (config_bytes, config) =
        json_blob(media_types::OCI_CONFIG, &ImageConfig::new("linux", "amd64")).unwrap();
    put(layout, &config_bytes);
    let manifest = Manifest::new(config, vec![]);
    let (manifest_bytes, mut image) = json_blob(media_types::OCI_MANIFEST, &manifest).unwrap();
    put(layout, &manifest_bytes);
    image.platform = Some(platform.clone());

    let subjects = Subject::for_image(&["example.com/app:1"], &platform, &image.digest);
    let provenance = Statement::new(
        subjects.clone(),
        SLSA_PROVENANCE_V1,
        serde_json::json!({"buildDefinition": {}}),
    );
    let document = spdx_document(
        &Inventory::default(),
        &SbomOptions::new("example.com/app:1", "kiln-test", Timestamp(0)),
    )
    .unwrap();
    let layers = vec![
        attestation_layer(&provenance).unwrap(),
        attestation_layer(&sbom_statement(subjects, &document)).unwrap(),
    ];
    let attestation = attestation_manifest(&image, layers, form).unwrap();
    for (_, bytes) in attestation.blobs() {
        put(layout, bytes);
    }
    let index = Index::new(vec![image, attestation.index_entry.clone()]);
    let index_bytes = to_canonical_json(&index).unwrap();
    put(layout, &index_bytes);
    let mut top = Descriptor::new(
        media_types::OCI_INDEX,
        kiln_oci::sha256_digest(&index_bytes),
        index_bytes.len() as u64,
    );
    top.annotations
        .insert(kiln_oci::annotations::REF_NAME.into(), "latest".into());
    let layout_index = Index::new(vec![top]);
    std::fs::write(
        layout.join("index.json"),
        to_canonical_json(&layout_index).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    attestation.index_entry
}

#[test]
fn skopeo_copies_attestation_manifests() {
    for form in [AttestationForm::OciImage, AttestationForm::OciArtifact] {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let entry = layout_with_attestations(&source, form);
        let copy = dir.path().join("copy");
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            &format!("oci:{}:latest", source.display()),
            &format!("oci:{}:latest", copy.display()),
        ]);
        let raw = skopeo(&[
            "inspect",
            "--raw",
            &format!("oci:{}:latest", copy.display()),
        ]);
        let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
        let copied = &index["manifests"][1];
        assert_eq!(copied["digest"], entry.digest.as_str(), "{form:?}: {raw}");
        assert_eq!(copied["platform"]["os"], "unknown");
        assert_eq!(
            copied["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        // The attestation manifest and both in-toto layers arrived, byte for byte.
        let manifest_path = copy.join("blobs/sha256").join(entry.digest.hex());
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            let digest = layer["digest"].as_str().unwrap();
            let hex = digest.strip_prefix("sha256:").unwrap();
            assert!(
                copy.join("blobs/sha256").join(hex).is_file(),
                "{form:?}: {digest}"
            );
        }
    }
}
