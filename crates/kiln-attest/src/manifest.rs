//! The attestation manifest BuildKit attaches beside each image manifest of an index
//! (BuildKit's `docs/attestations/attestation-storage.md`).

use std::collections::BTreeMap;

use kiln_oci::{
    json_blob, media_types, to_canonical_json, Descriptor, ImageConfig, Index, Manifest, Platform,
    RootFs,
};
use serde::Serialize;

use crate::{
    Result, Statement, ATTESTATION_ARTIFACT_TYPE, ATTESTATION_MANIFEST, IN_TOTO_MEDIA_TYPE,
    PREDICATE_TYPE_ANNOTATION, REFERENCE_DIGEST_ANNOTATION, REFERENCE_TYPE_ANNOTATION,
};

/// One statement as a blob and its layer descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationLayer {
    pub bytes: Vec<u8>,
    /// `application/vnd.in-toto+json`, annotated `in-toto.io/predicate-type`.
    pub descriptor: Descriptor,
}

/// The statement's canonical bytes as an attestation layer.
pub fn attestation_layer<P: Serialize>(statement: &Statement<P>) -> Result<AttestationLayer> {
    let (bytes, mut descriptor) = json_blob(IN_TOTO_MEDIA_TYPE, statement)?;
    descriptor.annotations.insert(
        PREDICATE_TYPE_ANNOTATION.into(),
        statement.predicate_type.clone(),
    );
    Ok(AttestationLayer { bytes, descriptor })
}

/// How the attestation manifest is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestationForm {
    /// An OCI image manifest whose config is a placeholder image config for `unknown/unknown`
    /// (BuildKit's default; every registry accepts it).
    OciImage,
    /// The same with Docker schema 2 media types, for Docker manifest lists.
    DockerImage,
    /// An OCI 1.1 artifact: `artifactType`
    /// `application/vnd.docker.attestation.manifest.v1+json`, the empty config, and a
    /// `subject` pointing at the image manifest (BuildKit's `oci-artifact=true`).
    OciArtifact,
}

/// An attestation manifest and every blob it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationManifest {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<AttestationLayer>,
    /// The descriptor to add to the image index, after the image manifests: platform
    /// `unknown/unknown`, `vnd.docker.reference.type: attestation-manifest` and
    /// `vnd.docker.reference.digest` = the image manifest's digest.
    pub index_entry: Descriptor,
}

impl AttestationManifest {
    /// Every blob to store or push, dependencies first: layers, config, then the manifest.
    pub fn blobs(&self) -> Vec<(&Descriptor, &[u8])> {
        let mut blobs: Vec<(&Descriptor, &[u8])> = self
            .layers
            .iter()
            .map(|layer| (&layer.descriptor, layer.bytes.as_slice()))
            .collect();
        blobs.push((&self.config, &self.config_bytes));
        blobs.push((&self.index_entry, &self.manifest_bytes));
        blobs
    }
}

/// The platform BuildKit gives attestation manifests so runtimes never pick them.
pub fn unknown_platform() -> Platform {
    Platform::new("unknown", "unknown")
}

/// The attestation manifest for `image` (the image manifest's descriptor in the index)
/// holding `layers`.
pub fn attestation_manifest(
    image: &Descriptor,
    layers: Vec<AttestationLayer>,
    form: AttestationForm,
) -> Result<AttestationManifest> {
    let layer_descriptors: Vec<Descriptor> = layers.iter().map(|l| l.descriptor.clone()).collect();
    let (config_bytes, config) = match form {
        AttestationForm::OciArtifact => {
            let bytes = b"{}".to_vec();
            let descriptor = Descriptor::new(
                media_types::OCI_EMPTY,
                kiln_oci::sha256_digest(&bytes),
                bytes.len() as u64,
            );
            (bytes, descriptor)
        }
        AttestationForm::OciImage | AttestationForm::DockerImage => {
            let mut placeholder = ImageConfig::new("unknown", "unknown");
            // The in-toto blobs are stored uncompressed: their diff ids are their digests.
            placeholder.rootfs =
                RootFs::layers(layer_descriptors.iter().map(|d| d.digest.clone()).collect());
            let media_type = if form == AttestationForm::DockerImage {
                media_types::DOCKER_CONFIG
            } else {
                media_types::OCI_CONFIG
            };
            json_blob(media_type, &placeholder)?
        }
    };
    let mut manifest = match form {
        AttestationForm::DockerImage => Manifest::new_docker(config.clone(), layer_descriptors),
        _ => Manifest::new(config.clone(), layer_descriptors),
    };
    if form == AttestationForm::OciArtifact {
        manifest.artifact_type = Some(ATTESTATION_ARTIFACT_TYPE.into());
        manifest.subject = Some(Descriptor::new(
            image.media_type.clone(),
            image.digest.clone(),
            image.size,
        ));
    }
    let manifest_bytes = to_canonical_json(&manifest)?;
    let mut index_entry = Descriptor::new(
        manifest
            .media_type
            .clone()
            .unwrap_or_else(|| media_types::OCI_MANIFEST.into()),
        kiln_oci::sha256_digest(&manifest_bytes),
        manifest_bytes.len() as u64,
    );
    index_entry.annotations = BTreeMap::from([
        (
            REFERENCE_TYPE_ANNOTATION.into(),
            ATTESTATION_MANIFEST.into(),
        ),
        (
            REFERENCE_DIGEST_ANNOTATION.into(),
            image.digest.as_str().into(),
        ),
    ]);
    index_entry.platform = Some(unknown_platform());
    Ok(AttestationManifest {
        manifest,
        manifest_bytes,
        config,
        config_bytes,
        layers,
        index_entry,
    })
}

/// Whether an index entry is an attestation manifest (and so not a runnable image).
pub fn is_attestation_manifest(entry: &Descriptor) -> bool {
    entry
        .annotations
        .get(REFERENCE_TYPE_ANNOTATION)
        .is_some_and(|kind| kind == ATTESTATION_MANIFEST)
}

/// The attestation manifest entry of `index` for the image manifest `image_digest`.
pub fn attestations_for<'a>(index: &'a Index, image_digest: &str) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|entry| {
        is_attestation_manifest(entry)
            && entry
                .annotations
                .get(REFERENCE_DIGEST_ANNOTATION)
                .is_some_and(|digest| digest == image_digest)
    })
}

/// The layers of an attestation manifest whose predicate type is `predicate_type`.
pub fn layers_with_predicate<'a>(
    manifest: &'a Manifest,
    predicate_type: &'a str,
) -> impl Iterator<Item = &'a Descriptor> + 'a {
    manifest.layers.iter().filter(move |layer| {
        layer.media_type == IN_TOTO_MEDIA_TYPE
            && layer
                .annotations
                .get(PREDICATE_TYPE_ANNOTATION)
                .is_some_and(|kind| kind == predicate_type)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Subject, SLSA_PROVENANCE_V1, SPDX_DOCUMENT};
    use kiln_oci::sha256_digest;

    fn image() -> Descriptor {
        Descriptor::new(
            media_types::OCI_MANIFEST,
            sha256_digest(b"image manifest"),
            1234,
        )
    }

    fn layers() -> Vec<AttestationLayer> {
        let subjects = vec![Subject::new("_", &image().digest)];
        vec![
            attestation_layer(&Statement::new(
                subjects.clone(),
                SLSA_PROVENANCE_V1,
                serde_json::json!({"p": 1}),
            ))
            .unwrap(),
            attestation_layer(&Statement::new(
                subjects,
                SPDX_DOCUMENT,
                serde_json::json!({"s": 2}),
            ))
            .unwrap(),
        ]
    }

    #[test]
    fn image_form_matches_buildkit() {
        let attestation =
            attestation_manifest(&image(), layers(), AttestationForm::OciImage).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&attestation.manifest_bytes).unwrap();
        assert_eq!(json["mediaType"], media_types::OCI_MANIFEST);
        assert_eq!(json["schemaVersion"], 2);
        assert!(json.get("subject").is_none() && json.get("artifactType").is_none());
        assert_eq!(json["config"]["mediaType"], media_types::OCI_CONFIG);
        let written = json["layers"].as_array().unwrap();
        assert_eq!(written[0]["mediaType"], "application/vnd.in-toto+json");
        assert_eq!(
            written[0]["annotations"]["in-toto.io/predicate-type"],
            "https://slsa.dev/provenance/v1"
        );
        assert_eq!(
            written[1]["annotations"]["in-toto.io/predicate-type"],
            "https://spdx.dev/Document"
        );
        let config: serde_json::Value = serde_json::from_slice(&attestation.config_bytes).unwrap();
        assert_eq!(config["architecture"], "unknown");
        assert_eq!(config["os"], "unknown");
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(config["rootfs"]["diff_ids"][1], written[1]["digest"]);

        let entry = serde_json::to_value(&attestation.index_entry).unwrap();
        assert_eq!(
            entry,
            serde_json::json!({
                "mediaType": media_types::OCI_MANIFEST,
                "digest": sha256_digest(&attestation.manifest_bytes).as_str(),
                "size": attestation.manifest_bytes.len(),
                "annotations": {
                    "vnd.docker.reference.digest": image().digest.as_str(),
                    "vnd.docker.reference.type": "attestation-manifest",
                },
                "platform": {"architecture": "unknown", "os": "unknown"},
            })
        );
        // Every blob's descriptor matches its bytes.
        for (descriptor, bytes) in attestation.blobs() {
            assert_eq!(descriptor.digest, sha256_digest(bytes));
            assert_eq!(descriptor.size, bytes.len() as u64);
        }
        // The bytes are stable.
        let again = attestation_manifest(&image(), layers(), AttestationForm::OciImage).unwrap();
        assert_eq!(again.manifest_bytes, attestation.manifest_bytes);
    }

    #[test]
    fn artifact_and_docker_forms() {
        let artifact =
            attestation_manifest(&image(), layers(), AttestationForm::OciArtifact).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&artifact.manifest_bytes).unwrap();
        assert_eq!(
            json["artifactType"],
            "application/vnd.docker.attestation.manifest.v1+json"
        );
        assert_eq!(
            json["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        assert_eq!(
            json["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(json["subject"]["digest"], image().digest.as_str());
        assert_eq!(json["subject"]["size"], 1234);
        assert_eq!(artifact.config_bytes, b"{}");

        let docker =
            attestation_manifest(&image(), layers(), AttestationForm::DockerImage).unwrap();
        assert_eq!(docker.index_entry.media_type, media_types::DOCKER_MANIFEST);
        assert_eq!(docker.config.media_type, media_types::DOCKER_CONFIG);
    }

    #[test]
    fn finding_attestations_in_an_index() {
        let attestation =
            attestation_manifest(&image(), layers(), AttestationForm::OciImage).unwrap();
        let mut runnable = image();
        runnable.platform = Some(Platform::new("linux", "amd64"));
        let index = Index::new(vec![runnable.clone(), attestation.index_entry.clone()]);
        assert!(!is_attestation_manifest(&index.manifests[0]));
        assert!(is_attestation_manifest(&index.manifests[1]));
        assert_eq!(
            attestations_for(&index, image().digest.as_str()),
            Some(&attestation.index_entry)
        );
        assert_eq!(attestations_for(&index, "sha256:00"), None);
        let sboms: Vec<_> = layers_with_predicate(&attestation.manifest, SPDX_DOCUMENT).collect();
        assert_eq!(sboms.len(), 1);
        assert_eq!(sboms[0], &attestation.layers[1].descriptor);
    }
}
