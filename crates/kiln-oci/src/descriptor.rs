//! Descriptors, manifests, indexes and the small files of image layouts and docker archives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::json::null_default;
use crate::{media_types, Digest};

/// Annotation keys kiln reads or writes.
pub mod annotations {
    /// The ref (tag) of a manifest in an image layout's `index.json`.
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
    /// containerd's full image name on an `index.json` descriptor (read by `docker load` ≥ 25,
    /// `ctr import`, nerdctl).
    pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
    /// Date and time the image was built (RFC 3339).
    pub const CREATED: &str = "org.opencontainers.image.created";
    /// Who maintains the image.
    pub const AUTHORS: &str = "org.opencontainers.image.authors";
    /// Where the image's source is.
    pub const SOURCE: &str = "org.opencontainers.image.source";
    /// Source control revision of the image.
    pub const REVISION: &str = "org.opencontainers.image.revision";
    /// Version of the packaged software.
    pub const VERSION: &str = "org.opencontainers.image.version";
    /// Human-readable title.
    pub const TITLE: &str = "org.opencontainers.image.title";
    /// Human-readable description.
    pub const DESCRIPTION: &str = "org.opencontainers.image.description";
    /// Name of the image the image was built on.
    pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
    /// Digest of the image the image was built on.
    pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
    /// BuildKit marks attestation manifests in an index with this key.
    pub const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
}

/// A content descriptor: what a blob is, its digest and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the content.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size of the content, in bytes.
    pub size: u64,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    /// Where else the content may be downloaded.
    pub urls: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Platform of an image manifest in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    /// Artifact type of an artifact manifest.
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor with no annotations, platform or URLs.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }

    /// The `org.opencontainers.image.ref.name` annotation, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(annotations::REF_NAME)
            .map(String::as_str)
    }
}

/// An OS/architecture pair, as in an index's descriptors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    /// Operating system version (Windows images).
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    /// Required operating system features (Windows images).
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// A platform of `os` and `architecture`, no variant.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            ..Platform::default()
        }
    }

    /// Whether `self` (an image's platform) satisfies `wanted`: os and architecture equal, and
    /// the variant equal when `wanted` names one.
    pub fn satisfies(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none() || self.variant == wanted.variant)
    }
}

/// An image manifest (OCI, or Docker schema 2: the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// Always set by kiln; optional in documents read (the OCI spec only says SHOULD).
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    /// Type of an artifact (when the manifest is one).
    pub artifact_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// Always written, even when empty.
    #[serde(default, deserialize_with = "null_default")]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (attestations, signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// The bytes of the config and the layers together, as the manifest states them (from a
    /// registry: untrusted); `None` when they add up to more than a `u64`.
    pub fn total_size(&self) -> Option<u64> {
        self.layers
            .iter()
            .try_fold(self.config.size, |sum, layer| sum.checked_add(layer.size))
    }

    /// An OCI manifest.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(media_types::OCI_MANIFEST.into()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// A Docker schema 2 manifest.
    pub fn new_docker(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            media_type: Some(media_types::DOCKER_MANIFEST.into()),
            ..Manifest::new(config, layers)
        }
    }
}

/// An image index (OCI), or Docker manifest list: the same shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The index's media type.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    /// Type of an artifact (when the index is one).
    pub artifact_type: Option<String>,
    /// Always written, even when empty.
    #[serde(default, deserialize_with = "null_default")]
    pub manifests: Vec<Descriptor>,
    /// The manifest this index refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// An OCI index.
    pub fn new(manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.into()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// The `oci-layout` file: `{"imageLayoutVersion":"1.0.0"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciLayout {
    /// Layout version: `1.0.0`.
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

impl Default for OciLayout {
    fn default() -> OciLayout {
        OciLayout {
            image_layout_version: "1.0.0".into(),
        }
    }
}

/// One entry of a docker archive's `manifest.json` (a JSON array of these).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerManifestEntry {
    /// Archive path of the config.
    #[serde(rename = "Config")]
    pub config: String,
    /// Familiar `name:tag` strings.
    #[serde(rename = "RepoTags", default, deserialize_with = "null_default")]
    pub repo_tags: Vec<String>,
    /// Archive paths of the layer tars, first to last.
    #[serde(rename = "Layers", default, deserialize_with = "null_default")]
    pub layers: Vec<String>,
    /// The image a docker archive entry was built on.
    #[serde(rename = "Parent", default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Foreign layers: diff ID → where to fetch the blob.
    #[serde(
        rename = "LayerSources",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub layer_sources: BTreeMap<Digest, Descriptor>,
}

/// A docker archive's legacy `repositories` file: familiar repository → tag → top layer ID.
pub type DockerRepositories = BTreeMap<String, BTreeMap<String, String>>;

/// Whether `s` is a valid `org.opencontainers.image.ref.name` value per the image spec:
/// `component ("/" component)*`, `component ::= alphanum (separator alphanum)*`,
/// `alphanum ::= [A-Za-z0-9]+`, `separator ::= [-._:@+] | "--"`.
pub fn is_valid_ref_name(s: &str) -> bool {
    !s.is_empty() && s.split('/').all(valid_ref_component)
}

fn valid_ref_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i = i.saturating_add(1);
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'-' if b.get(i.saturating_add(1)) == Some(&b'-') => i = i.saturating_add(2),
            b'-' | b'.' | b'_' | b':' | b'@' | b'+' => i = i.saturating_add(1),
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_size_is_checked() {
        let digest = crate::sha256_digest(b"x");
        let layer = |size| Descriptor::new(media_types::OCI_LAYER_TAR_GZIP, digest.clone(), size);
        let config = Descriptor::new(media_types::OCI_CONFIG, digest.clone(), 10);
        let manifest = Manifest::new(config.clone(), vec![layer(5), layer(7)]);
        assert_eq!(manifest.total_size(), Some(22));
        let manifest = Manifest::new(config, vec![layer(u64::MAX - 10), layer(1)]);
        assert_eq!(manifest.total_size(), None);
    }
    use crate::{from_json_slice, to_canonical_json};

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn json(v: &impl Serialize) -> String {
        String::from_utf8(to_canonical_json(v).unwrap()).unwrap()
    }

    #[test]
    fn descriptor_bytes() {
        let mut desc = Descriptor::new(media_types::OCI_MANIFEST, d('a'), 7682);
        let a = "a".repeat(64);
        assert_eq!(
            json(&desc),
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{a}","size":7682}}"#
            )
        );
        desc.annotations
            .insert(annotations::REF_NAME.into(), "v1".into());
        desc.annotations.insert(
            annotations::CONTAINERD_IMAGE_NAME.into(),
            "docker.io/library/x:v1".into(),
        );
        desc.platform = Some(Platform {
            variant: Some("v7".into()),
            ..Platform::new("linux", "arm")
        });
        assert_eq!(
            json(&desc),
            format!(
                concat!(
                    r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{a}","size":7682,"#,
                    r#""annotations":{{"io.containerd.image.name":"docker.io/library/x:v1","org.opencontainers.image.ref.name":"v1"}},"#,
                    r#""platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}"#
                ),
                a = a
            )
        );
        assert_eq!(desc.ref_name(), Some("v1"));
    }

    #[test]
    fn manifest_bytes() {
        let m = Manifest::new(
            Descriptor::new(media_types::OCI_CONFIG, d('c'), 10),
            vec![Descriptor::new(media_types::OCI_LAYER_TAR_GZIP, d('1'), 20)],
        );
        let (c, l) = ("c".repeat(64), "1".repeat(64));
        let expected = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
                r#""config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{c}","size":10}},"#,
                r#""layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{l}","size":20}}]}}"#
            ),
            c = c,
            l = l
        );
        assert_eq!(json(&m), expected);
        assert_eq!(from_json_slice::<Manifest>(expected.as_bytes()).unwrap(), m);

        let mut empty = Manifest::new_docker(
            Descriptor::new(media_types::DOCKER_CONFIG, d('c'), 1),
            vec![],
        );
        empty.annotations.insert("k".into(), "v".into());
        assert_eq!(
            json(&empty),
            format!(
                concat!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","#,
                    r#""config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{c}","size":1}},"#,
                    r#""layers":[],"annotations":{{"k":"v"}}}}"#
                ),
                c = c
            )
        );
    }

    #[test]
    fn index_and_layout_bytes() {
        let idx = Index::new(vec![Descriptor::new(media_types::OCI_MANIFEST, d('f'), 3)]);
        let f = "f".repeat(64);
        assert_eq!(
            json(&idx),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{f}","size":3}}]}}"#
            )
        );
        assert_eq!(
            json(&Index::new(vec![])),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
        );
        assert_eq!(
            json(&OciLayout::default()),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
    }

    #[test]
    fn docker_manifest_entry_bytes() {
        let e = DockerManifestEntry {
            config: "abc.json".into(),
            repo_tags: vec!["app:1".into()],
            layers: vec!["l1/layer.tar".into()],
            ..DockerManifestEntry::default()
        };
        assert_eq!(
            json(&vec![e]),
            r#"[{"Config":"abc.json","RepoTags":["app:1"],"Layers":["l1/layer.tar"]}]"#
        );
        let parsed: Vec<DockerManifestEntry> = serde_json::from_str(
            r#"[{"Config":"x.json","RepoTags":null,"Layers":["a/layer.tar"],"Extra":1}]"#,
        )
        .unwrap();
        assert!(parsed[0].repo_tags.is_empty());
    }

    #[test]
    fn parses_docker_schema2_and_unknown_fields() {
        let doc = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","#,
                r#""config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1469,"digest":"sha256:{c}"}},"#,
                r#""layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":2,"digest":"sha256:{c}","urls":["https://x"],"x-future":{{"a":1}}}}],"#,
                r#""somethingNew":true}}"#
            ),
            c = "c".repeat(64)
        );
        let m: Manifest = from_json_slice(doc.as_bytes()).unwrap();
        assert_eq!(m.media_type.as_deref(), Some(media_types::DOCKER_MANIFEST));
        assert_eq!(m.layers[0].urls, vec!["https://x".to_string()]);

        let list = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":["#,
                r#"{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:{c}","platform":{{"architecture":"arm64","os":"linux","variant":"v8","features":["x"]}}}}]}}"#
            ),
            c = "c".repeat(64)
        );
        let idx: Index = from_json_slice(list.as_bytes()).unwrap();
        let p = idx.manifests[0].platform.as_ref().unwrap();
        assert!(p.satisfies(&Platform::new("linux", "arm64")));
        assert!(!p.satisfies(&Platform {
            variant: Some("v9".into()),
            ..Platform::new("linux", "arm64")
        }));
        // A negative size, a bad digest: refused.
        assert!(serde_json::from_str::<Descriptor>(&format!(
            r#"{{"mediaType":"x","digest":"sha256:{}","size":-1}}"#,
            "c".repeat(64)
        ))
        .is_err());
        assert!(serde_json::from_str::<Descriptor>(
            r#"{"mediaType":"x","digest":"sha256:../../etc","size":1}"#
        )
        .is_err());
    }

    #[test]
    fn ref_name_grammar() {
        for ok in [
            "latest",
            "v1.0",
            "1.0.0-rc.1",
            "a--b",
            "foo/bar",
            "docker.io/library/alpine:3.19",
            "a_b",
            "A+b",
            "x@y",
        ] {
            assert!(is_valid_ref_name(ok), "{ok}");
        }
        for bad in [
            "", "-x", "x-", "a---b", "a..b", "_x", "x.", "a//b", "/a", "a/", "a b", "ä", "a#b",
            "a-.b",
        ] {
            assert!(!is_valid_ref_name(bad), "{bad}");
        }
    }
}
