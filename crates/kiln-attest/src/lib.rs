//! kiln-attest: what kiln attaches to an image about how it was built and what is in it.
//!
//! * [`Statement`] is an in-toto Statement v1 (`https://in-toto.io/Statement/v1`); its
//!   predicate is a SLSA provenance v1 ([`provenance_statement`], from a [`BuildRecord`] the
//!   builder fills) or an SPDX document ([`sbom_statement`], from kiln-sbom).
//! * [`attestation_manifest`] packs statements into the manifest BuildKit attaches to an
//!   image index: one `application/vnd.in-toto+json` layer per statement, annotated with its
//!   predicate type, and an index entry with platform `unknown/unknown` and the
//!   `vnd.docker.reference.*` annotations pointing at the image manifest.
//!
//! Every document here has stable bytes (kiln-oci's canonical JSON: fields in declaration
//! order, maps sorted), so two builds with the same inputs and `SOURCE_DATE_EPOCH` attach the
//! same attestations. Secret values, registry credentials and URL userinfo never reach the
//! bytes: URLs are stripped of userinfo, and every string of a provenance predicate is
//! redacted against the secret values the builder passes before it is written.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod flags;
mod manifest;
mod provenance;
mod redact;

use std::collections::BTreeMap;

use kiln_oci::{Digest, Platform};
use serde::Serialize;

pub use flags::{parse_provenance_flag, parse_sbom_flag, FlagError, ProvenanceRequest};
pub use manifest::{
    attestation_layer, attestation_manifest, attestations_for, is_attestation_manifest,
    layers_with_predicate, unknown_platform, AttestationForm, AttestationLayer,
    AttestationManifest,
};
pub use provenance::{
    provenance_predicate, provenance_statement, BuildRecord, Material, ProvenanceMode, Recipe,
    SecretUse, SshUse, StepRecord, KILN_BUILD_TYPE,
};
pub use redact::strip_userinfo;

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Predicate type of SLSA provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// Predicate type of an SPDX document (as BuildKit and syft write it).
pub const SPDX_DOCUMENT: &str = "https://spdx.dev/Document";
/// Media type of an attestation layer.
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// Layer annotation naming the statement's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// Index entry annotation: what the entry is (`attestation-manifest`).
pub const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";
/// Index entry annotation: the digest of the image manifest the attestations are about.
pub const REFERENCE_DIGEST_ANNOTATION: &str = "vnd.docker.reference.digest";
/// The value of [`REFERENCE_TYPE_ANNOTATION`] on attestation manifests.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// `artifactType` of an attestation manifest in the OCI-artifact form.
pub const ATTESTATION_ARTIFACT_TYPE: &str = "application/vnd.docker.attestation.manifest.v1+json";

/// File name of the provenance statement beside a `-o type=local` tree (as buildx writes it).
pub const PROVENANCE_FILE: &str = "provenance.json";
/// File name of the SBOM statement beside a `-o type=local` tree (as buildx writes it).
/// There, as BuildKit does, each statement's subjects are the exported regular files (path
/// relative to the tree, sha256 of the content).
pub const SBOM_FILE: &str = "sbom.spdx.json";

/// Errors making attestations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Oci(#[from] kiln_oci::Error),
    #[error("serialising an attestation: {0}")]
    Json(#[from] serde_json::Error),
    /// A git material's commit is not a 40- or 64-digit hex object name.
    #[error("git source {url}: {commit:?} is not a commit id")]
    InvalidCommit { url: String, commit: String },
    /// A digest was not `algorithm:hex`.
    #[error("{what}: {digest:?} is not an algorithm:hex digest")]
    InvalidDigest { what: String, digest: String },
    /// A secret value survived redaction (never expected: a guard, not a path).
    #[error("secret {id:?} would appear in the attestation; refusing to write it")]
    SecretInOutput { id: String },
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// An in-toto Statement v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement<P> {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: P,
}

impl<P: Serialize> Statement<P> {
    /// A statement about `subject` with `predicate` of `predicate_type`.
    pub fn new(subject: Vec<Subject>, predicate_type: &str, predicate: P) -> Statement<P> {
        Statement {
            statement_type: STATEMENT_TYPE.into(),
            subject,
            predicate_type: predicate_type.into(),
            predicate,
        }
    }

    /// The statement's bytes (canonical JSON).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        Ok(kiln_oci::to_canonical_json(self)?)
    }
}

/// What a statement is about: a name and the digest of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Subject {
    pub name: String,
    /// Algorithm → lowercase hex, as in-toto's DigestSet.
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    /// A subject named `name` with `digest`.
    pub fn new(name: impl Into<String>, digest: &Digest) -> Subject {
        Subject {
            name: name.into(),
            digest: digest_set(digest),
        }
    }

    /// The subjects BuildKit writes for an image manifest: one
    /// `pkg:docker/NAME@TAG?platform=OS%2FARCH` per image name the build is tagged with, or
    /// `_` when it has none.
    pub fn for_image(names: &[&str], platform: &Platform, manifest: &Digest) -> Vec<Subject> {
        let mut subjects: Vec<Subject> = names
            .iter()
            .filter_map(|name| docker_purl(name, Some(platform)))
            .map(|purl| Subject::new(purl, manifest))
            .collect();
        if subjects.is_empty() {
            subjects.push(Subject::new("_", manifest));
        }
        subjects.sort();
        subjects.dedup();
        subjects
    }
}

/// `sha256:abc…` → `{"sha256": "abc…"}`.
pub fn digest_set(digest: &Digest) -> BTreeMap<String, String> {
    BTreeMap::from([(
        digest.algorithm().name().to_string(),
        digest.hex().to_string(),
    )])
}

/// `OS/ARCH[/VARIANT]`, as platforms are written on the command line.
pub fn platform_string(platform: &Platform) -> String {
    match &platform.variant {
        Some(variant) if !variant.is_empty() => {
            format!("{}/{}/{variant}", platform.os, platform.architecture)
        }
        _ => format!("{}/{}", platform.os, platform.architecture),
    }
}

/// An image reference as a purl the way BuildKit writes it: the familiar name split into
/// namespace and name, the tag (default `latest`) as version, `digest` and `platform`
/// qualifiers. `None` when `reference` is not an image reference.
pub fn docker_purl(reference: &str, platform: Option<&Platform>) -> Option<String> {
    let name = kiln_oci::ImageName::parse_normalized(reference).ok()?;
    let familiar = name.familiar_repository();
    let (namespace, last) = match familiar.rsplit_once('/') {
        Some((namespace, last)) => (Some(namespace), last),
        None => (None, familiar.as_str()),
    };
    let mut purl = packageurl::PackageUrl::new("docker", last).ok()?;
    if let Some(namespace) = namespace {
        purl.with_namespace(namespace).ok()?;
    }
    let digest = name.digest().map(|d| d.as_str().to_string());
    match (name.tag(), &digest) {
        (Some(tag), _) => {
            purl.with_version(tag).ok()?;
        }
        (None, None) => {
            purl.with_version("latest").ok()?;
        }
        (None, Some(_)) => {}
    }
    if let Some(digest) = &digest {
        purl.add_qualifier("digest", digest.as_str()).ok()?;
    }
    if let Some(platform) = platform {
        purl.add_qualifier("platform", platform_string(platform))
            .ok()?;
    }
    Some(purl.to_string())
}

/// The in-toto statement carrying `document` as an SPDX predicate about `subjects`.
pub fn sbom_statement(
    subjects: Vec<Subject>,
    document: &kiln_sbom::SpdxDocument,
) -> Statement<&kiln_sbom::SpdxDocument> {
    Statement::new(subjects, SPDX_DOCUMENT, document)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        kiln_oci::sha256_digest(b"manifest")
    }

    #[test]
    fn image_purls_match_buildkit() {
        let amd64 = Platform::new("linux", "amd64");
        assert_eq!(
            docker_purl("alpine:3.17", Some(&amd64)).unwrap(),
            "pkg:docker/alpine@3.17?platform=linux%2Famd64"
        );
        assert_eq!(
            docker_purl("docker.io/user/app", None).unwrap(),
            "pkg:docker/user/app@latest"
        );
        let mut arm = Platform::new("linux", "arm");
        arm.variant = Some("v7".into());
        assert_eq!(
            docker_purl("ghcr.io/o/r:1", Some(&arm)).unwrap(),
            "pkg:docker/ghcr.io/o/r@1?platform=linux%2Farm%2Fv7"
        );
        // The purl spec leaves `:` unencoded in qualifier values (BuildKit's Go library writes
        // `%3A`; purl parsers read both).
        let pinned = format!("alpine@{}", digest());
        assert_eq!(
            docker_purl(&pinned, None).unwrap(),
            format!("pkg:docker/alpine?digest=sha256:{}", digest().hex())
        );
        assert_eq!(docker_purl("Not A Reference", None), None);
    }

    #[test]
    fn statement_shape() {
        let subjects = Subject::for_image(&[], &Platform::new("linux", "amd64"), &digest());
        let statement = Statement::new(subjects, SPDX_DOCUMENT, serde_json::json!({"a": 1}));
        let bytes = statement.to_json().unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                "{{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":[{{\"name\":\"_\",\
                 \"digest\":{{\"sha256\":\"{}\"}}}}],\"predicateType\":\"https://spdx.dev/Document\",\
                 \"predicate\":{{\"a\":1}}}}",
                digest().hex()
            )
        );
        let named = Subject::for_image(
            &["example.com/app:1", "example.com/app:1"],
            &Platform::new("linux", "amd64"),
            &digest(),
        );
        assert_eq!(named.len(), 1);
        assert_eq!(
            named[0].name,
            "pkg:docker/example.com/app@1?platform=linux%2Famd64"
        );
    }
}
