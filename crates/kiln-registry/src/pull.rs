//! Manifests and blobs from a registry: resolving a name for a platform, verified downloads
//! into the store, whole pulls.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};

use kiln_oci::{
    from_json_slice, media_types, Descriptor, Digest, DigestHasher, ImageName, Index, Manifest,
    Platform, MAX_JSON_SIZE,
};
use kiln_store::Store;

use crate::error::{clean_text, RegistryError, Result};
use crate::http::{self, Call, Client, Repo};
use crate::transfer::{for_each_parallel, Meter};
use crate::{Action, Outcome, Progress, Pulled, Resolved, TransferEvent};

/// What a manifest request accepts, newest kinds first. Schema 1 is left out, so a registry
/// that can convert gives schema 2.
pub(crate) const MANIFEST_ACCEPT: &str = concat!(
    "application/vnd.oci.image.index.v1+json, ",
    "application/vnd.oci.image.manifest.v1+json, ",
    "application/vnd.docker.distribution.manifest.list.v2+json, ",
    "application/vnd.docker.distribution.manifest.v2+json"
);

const SCHEMA1: [&str; 3] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
];

/// A manifest document as read.
pub(crate) enum Document {
    Manifest(Box<Manifest>),
    Index(Box<Index>),
}

/// Why bytes are not an image manifest or index.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    Schema1(String),
    NotManifest(String),
}

/// Works out what manifest `bytes` are, from the document's own `mediaType`, else the
/// response's `Content-Type`, else its shape, and checks that they parse as that.
pub(crate) fn classify(
    bytes: &[u8],
    content_type: Option<&str>,
) -> std::result::Result<(String, Document), Rejected> {
    let content_type = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty());
    let ct = content_type.as_deref();
    if let Some(ct) = ct.filter(|ct| SCHEMA1[..2].contains(ct)) {
        return Err(Rejected::Schema1(ct.to_string()));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        let start = clean_text(
            &String::from_utf8_lossy(bytes.get(..120).unwrap_or(bytes)),
            80,
        );
        Rejected::NotManifest(format!(
            "{} ({e}), starting {start:?}",
            ct.map_or("no content type".to_string(), |ct| format!(
                "{ct} that is not JSON"
            ))
        ))
    })?;
    let Some(object) = value.as_object() else {
        return Err(Rejected::NotManifest(
            "a JSON value that is not an object".into(),
        ));
    };
    if object
        .get("schemaVersion")
        .and_then(serde_json::Value::as_u64)
        == Some(1)
    {
        return Err(Rejected::Schema1(
            ct.unwrap_or("schemaVersion 1").to_string(),
        ));
    }
    let declared = object
        .get("mediaType")
        .and_then(serde_json::Value::as_str)
        .filter(|m| !m.is_empty());
    let media_type = match (declared, ct) {
        (Some(m), _) => m.to_string(),
        (None, Some(ct)) if media_types::is_manifest(ct) || media_types::is_index(ct) => {
            ct.to_string()
        }
        // Neither says: the OCI spec lets the field go, so tell by the shape.
        _ if object.contains_key("manifests") => media_types::OCI_INDEX.to_string(),
        _ if object.contains_key("config") => media_types::OCI_MANIFEST.to_string(),
        _ => {
            return Err(Rejected::NotManifest(
                "a JSON object with neither config nor manifests".into(),
            ))
        }
    };
    if media_types::is_manifest(&media_type) {
        from_json_slice::<Manifest>(bytes)
            .map(|m| (media_type, Document::Manifest(Box::new(m))))
            .map_err(|e| Rejected::NotManifest(e.to_string()))
    } else if media_types::is_index(&media_type) {
        from_json_slice::<Index>(bytes)
            .map(|i| (media_type, Document::Index(Box::new(i))))
            .map_err(|e| Rejected::NotManifest(e.to_string()))
    } else {
        Err(Rejected::NotManifest(format!(
            "unsupported media type {}",
            clean_text(&media_type, 100)
        )))
    }
}

/// `os/arch[/variant]`.
pub(crate) fn platform_text(p: &Platform) -> String {
    match &p.variant {
        Some(v) if !v.is_empty() => format!("{}/{}/{v}", p.os, p.architecture),
        _ => format!("{}/{}", p.os, p.architecture),
    }
}

/// The index entry for `wanted`: the first image manifest whose platform satisfies it.
/// Attestations (BuildKit's `unknown/unknown` entries) are never chosen nor listed.
pub(crate) fn choose_platform<'i>(
    index: &'i Index,
    wanted: &Platform,
) -> std::result::Result<&'i Descriptor, String> {
    let images = || {
        index.manifests.iter().filter(|d| {
            !d.annotations
                .contains_key(kiln_oci::annotations::DOCKER_REFERENCE_TYPE)
                && d.platform
                    .as_ref()
                    .is_none_or(|p| p.os != "unknown" || p.architecture != "unknown")
        })
    };
    if let Some(found) = images().find(|d| {
        d.platform.as_ref().is_some_and(|p| p.satisfies(wanted))
            && (media_types::is_manifest(&d.media_type) || media_types::is_index(&d.media_type))
    }) {
        return Ok(found);
    }
    let available: BTreeSet<String> = images()
        .filter_map(|d| d.platform.as_ref().map(platform_text))
        .collect();
    Err(if available.is_empty() {
        "no platforms".to_string()
    } else {
        available.into_iter().collect::<Vec<_>>().join(", ")
    })
}

impl Client {
    /// GETs `/v2/<path>/manifests/<reference>`, verified against `expected` when it is
    /// given, and against `Docker-Content-Digest` when the registry sends it.
    pub(crate) fn get_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        expected: Option<&Digest>,
        shown: &str,
    ) -> Result<(Descriptor, Vec<u8>, Document)> {
        let what = format!("fetching manifest {reference}");
        let call = Call::get(format!("/v2/{}/manifests/{reference}", repo.path))
            .header("accept", MANIFEST_ACCEPT);
        let response = self.call(repo, &what, &call)?;
        if response.status().as_u16() != 200 {
            return Err(http::unexpected(repo, &what, response));
        }
        let content_type = http::header(&response, "content-type").map(str::to_string);
        let said_digest = http::header(&response, "docker-content-digest").map(str::to_string);
        let not_manifest = |reason: String| RegistryError::NotAManifest {
            name: shown.to_string(),
            reason,
        };
        let bytes = http::read_bounded(response, MAX_JSON_SIZE).map_err(|e| match e.kind() {
            std::io::ErrorKind::Other => not_manifest(e.to_string()),
            _ => RegistryError::Connection {
                repo: repo.to_string(),
                what: what.clone(),
                url: format!("/v2/{}/manifests/{reference}", repo.path),
                message: e.to_string(),
            },
        })?;
        let digest = match expected {
            Some(expected) => {
                let actual = expected.of_same_kind(&bytes);
                if &actual != expected {
                    return Err(RegistryError::DigestMismatch {
                        what: format!("manifest {expected}"),
                        repo: repo.to_string(),
                        actual: actual.to_string(),
                    });
                }
                actual
            }
            None => kiln_oci::sha256_digest(&bytes),
        };
        if let Some(said) = said_digest
            .as_deref()
            .and_then(|d| Digest::parse(d.trim()).ok())
        {
            let actual = said.of_same_kind(&bytes);
            if actual != said {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {reference} (the registry says {said})"),
                    repo: repo.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let (media_type, document) =
            classify(&bytes, content_type.as_deref()).map_err(|rejected| match rejected {
                Rejected::Schema1(media_type) => RegistryError::Schema1 {
                    name: shown.to_string(),
                    media_type,
                },
                Rejected::NotManifest(reason) => not_manifest(reason),
            })?;
        let descriptor = Descriptor::new(media_type, digest, bytes.len() as u64);
        Ok((descriptor, bytes, document))
    }

    pub(crate) fn fetch_manifest(&self, name: &ImageName) -> Result<(Descriptor, Vec<u8>)> {
        let repo = Repo::of(name);
        let reference = reference_of(name);
        let (descriptor, bytes, _) =
            self.get_manifest(&repo, &reference, name.digest(), &name.to_string())?;
        Ok((descriptor, bytes))
    }

    pub(crate) fn resolve(&self, name: &ImageName, platform: &Platform) -> Result<Resolved> {
        self.resolve_parsed(name, platform)
            .map(|(resolved, _)| resolved)
    }

    /// [`Client::resolve`], with the chosen manifest parsed.
    fn resolve_parsed(
        &self,
        name: &ImageName,
        platform: &Platform,
    ) -> Result<(Resolved, Manifest)> {
        let repo = Repo::of(name);
        let shown = name.to_string();
        let reference = reference_of(name);
        let (descriptor, bytes, document) =
            self.get_manifest(&repo, &reference, name.digest(), &shown)?;
        let index = match document {
            Document::Manifest(manifest) => {
                let resolved = Resolved {
                    manifest: descriptor,
                    manifest_bytes: bytes,
                    index: None,
                };
                return Ok((resolved, *manifest));
            }
            Document::Index(index) => index,
        };
        let entry =
            choose_platform(&index, platform).map_err(|available| RegistryError::NoPlatform {
                name: shown.clone(),
                wanted: platform_text(platform),
                available,
            })?;
        let child_name = format!("{}@{}", name.repository(), entry.digest);
        let (mut child, child_bytes, child_doc) = self.get_manifest(
            &repo,
            entry.digest.as_str(),
            Some(&entry.digest),
            &child_name,
        )?;
        if child.size != entry.size {
            return Err(RegistryError::SizeMismatch {
                what: format!("manifest {}", entry.digest),
                repo: repo.to_string(),
                expected: entry.size,
                actual: child.size,
            });
        }
        let Document::Manifest(manifest) = child_doc else {
            return Err(RegistryError::NotAManifest {
                name: child_name,
                reason: "the index entry for the platform is itself an index".into(),
            });
        };
        child.platform = entry.platform.clone();
        let resolved = Resolved {
            manifest: child,
            manifest_bytes: child_bytes,
            index: Some((descriptor, bytes)),
        };
        Ok((resolved, *manifest))
    }

    /// Downloads a blob into the store; see [`crate::Registry::fetch_blob`].
    pub(crate) fn fetch_blob(
        &self,
        repo: &Repo,
        blob: &Descriptor,
        store: &Store,
        progress: Progress,
    ) -> Result<()> {
        let meter = Meter::new(blob.digest.to_string(), blob.size, progress);
        meter.event(TransferEvent::Start {
            id: meter.id.clone(),
            action: Action::Pull,
            total: blob.size,
        });
        if store.has_blob(&blob.digest) {
            meter.event(TransferEvent::Done {
                id: meter.id.clone(),
                outcome: Outcome::Existed,
            });
            return Ok(());
        }
        let what = format!("fetching blob {}", blob.digest);
        let store_err = |source| RegistryError::Store {
            context: format!("{repo}: storing blob {}", blob.digest),
            source: Box::new(source),
        };
        let io_err = |source| RegistryError::Io {
            context: format!("{repo}: storing blob {}", blob.digest),
            source,
        };
        let mut file = store.blob_writer().map_err(store_err)?;
        let mut hasher = DigestHasher::new(blob.digest.algorithm());
        let mut done: u64 = 0;
        let mut attempt = 0u32;
        // One count for both kinds of retry: the request's own and resuming the body.
        let retried = std::sync::atomic::AtomicU32::new(0);
        let on_retry = |_: u32, why: &str| {
            let n = retried
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .saturating_add(1);
            meter.retry(n, why);
        };
        let mut buffer = vec![0u8; 256 << 10];
        loop {
            let mut call = Call::get(format!("/v2/{}/blobs/{}", repo.path, blob.digest))
                .on_retry(Some(&on_retry));
            if done > 0 {
                call = call.header("range", format!("bytes={done}-"));
            }
            let response = self.call(repo, &what, &call)?;
            let status = response.status().as_u16();
            let resumed = status == 206
                && http::header(&response, "content-range")
                    .and_then(range_start)
                    .is_some_and(|start| start == done);
            match status {
                200 | 206 if done == 0 || resumed => {}
                // The range was ignored or answered for another offset: start again.
                200 | 206 => {
                    done = 0;
                    hasher = DigestHasher::new(blob.digest.algorithm());
                    file.as_file_mut().set_len(0).map_err(io_err)?;
                    file.as_file_mut()
                        .seek(SeekFrom::Start(0))
                        .map_err(io_err)?;
                    if status == 206 {
                        // Ask again without a range.
                        continue;
                    }
                }
                _ => return Err(http::unexpected(repo, &what, response)),
            }
            if let Some(len) = response.body().content_length() {
                let Some(total) = done.checked_add(len) else {
                    return Err(RegistryError::Protocol {
                        repo: repo.to_string(),
                        what,
                        message: format!("the registry announces a body of {len} bytes"),
                    });
                };
                if total > blob.size {
                    return Err(RegistryError::SizeMismatch {
                        what: format!("blob {}", blob.digest),
                        repo: repo.to_string(),
                        expected: blob.size,
                        actual: total,
                    });
                }
            }
            let mut reader = response.into_body().into_reader();
            let interrupted = loop {
                let n = match reader.read(&mut buffer) {
                    Ok(0) => break None,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if is_timeout(&e) => {
                        break Some(format!(
                            "no data for {} s after {done} of {} bytes",
                            self.options.timeout.as_secs_f64(),
                            blob.size
                        ))
                    }
                    Err(e) => break Some(format!("{e} after {done} of {} bytes", blob.size)),
                };
                let chunk = buffer.get(..n).unwrap_or_default();
                done = done.saturating_add(chunk.len() as u64);
                if done > blob.size {
                    return Err(RegistryError::SizeMismatch {
                        what: format!("blob {}", blob.digest),
                        repo: repo.to_string(),
                        expected: blob.size,
                        actual: done,
                    });
                }
                hasher.update(chunk);
                file.write_all(chunk).map_err(io_err)?;
                meter.update(done);
            };
            let why = match interrupted {
                None if done == blob.size => break,
                None => format!("the connection closed after {done} of {} bytes", blob.size),
                Some(why) => why,
            };
            if attempt >= self.options.retries {
                return Err(RegistryError::BlobInterrupted {
                    repo: repo.to_string(),
                    digest: blob.digest.to_string(),
                    attempts: attempt.saturating_add(1),
                    done,
                    size: blob.size,
                    why,
                });
            }
            attempt = attempt.saturating_add(1);
            on_retry(attempt, &why);
            std::thread::sleep(http::backoff(attempt));
        }
        file.flush().map_err(io_err)?;
        let actual = hasher.finish();
        if actual != blob.digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {}", blob.digest),
                repo: repo.to_string(),
                actual: actual.to_string(),
            });
        }
        store.commit_blob(file, &blob.digest).map_err(store_err)?;
        meter.complete();
        meter.event(TransferEvent::Done {
            id: meter.id.clone(),
            outcome: Outcome::Fetched,
        });
        Ok(())
    }

    pub(crate) fn pull(
        &self,
        name: &ImageName,
        platform: &Platform,
        store: &Store,
        progress: Progress,
    ) -> Result<Pulled> {
        let (resolved, manifest) = self.resolve_parsed(name, platform)?;
        self.fetch_image(name, resolved, &manifest, store, progress)
    }

    pub(crate) fn pull_resolved(
        &self,
        name: &ImageName,
        resolved: &Resolved,
        store: &Store,
        progress: Progress,
    ) -> Result<Pulled> {
        let manifest: Manifest =
            from_json_slice(&resolved.manifest_bytes).map_err(|e| RegistryError::NotAManifest {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        self.fetch_image(name, resolved.clone(), &manifest, store, progress)
    }

    /// Layers first, the config, then the documents that name them: a manifest in the store
    /// always has its blobs.
    fn fetch_image(
        &self,
        name: &ImageName,
        resolved: Resolved,
        manifest: &Manifest,
        store: &Store,
        progress: Progress,
    ) -> Result<Pulled> {
        let repo = Repo::of(name);
        let mut seen = HashSet::new();
        let blobs: Vec<&Descriptor> = manifest
            .layers
            .iter()
            .chain(std::iter::once(&manifest.config))
            .filter(|blob| seen.insert(&blob.digest))
            .collect();
        for_each_parallel(&blobs, self.options.parallel, |blob| {
            self.fetch_blob(&repo, blob, store, progress)
        })?;
        store_document(store, &repo, &resolved.manifest, &resolved.manifest_bytes)?;
        if let Some((index, bytes)) = &resolved.index {
            store_document(store, &repo, index, bytes)?;
        }
        Ok(Pulled {
            manifest: resolved.manifest,
            index: resolved.index.map(|(d, _)| d),
        })
    }
}

/// Puts already verified bytes into the store under their descriptor's digest.
fn store_document(store: &Store, repo: &Repo, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
    let context = || format!("{repo}: storing manifest {}", desc.digest);
    if store.has_blob(&desc.digest) {
        return Ok(());
    }
    let mut file = store.blob_writer().map_err(|source| RegistryError::Store {
        context: context(),
        source: Box::new(source),
    })?;
    file.write_all(bytes).map_err(|source| RegistryError::Io {
        context: context(),
        source,
    })?;
    store
        .commit_blob(file, &desc.digest)
        .map_err(|source| RegistryError::Store {
            context: context(),
            source: Box::new(source),
        })
}

/// The digest when the name has one (pulls go by it), else the tag.
fn reference_of(name: &ImageName) -> String {
    match (name.digest(), name.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    }
}

/// The first byte of `Content-Range: bytes START-END/TOTAL`.
/// Whether a body read failed for want of data within the timeout (ureq reports its per-read
/// timeout as `TimedOut`, the socket's as `WouldBlock`).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)))
}

fn range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn entry(c: char, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        let mut desc = Descriptor::new(media_types::OCI_MANIFEST, d(c), 10);
        desc.platform = Some(Platform {
            variant: variant.map(String::from),
            ..Platform::new(os, arch)
        });
        desc
    }

    #[test]
    fn platform_choice() {
        let mut attestation = entry('0', "unknown", "unknown", None);
        attestation.annotations.insert(
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        );
        let index = Index::new(vec![
            attestation,
            entry('1', "linux", "amd64", None),
            entry('2', "linux", "arm", Some("v6")),
            entry('3', "linux", "arm", Some("v7")),
            entry('4', "linux", "arm64", Some("v8")),
            entry('5', "windows", "amd64", None),
        ]);
        let pick = |os, arch, variant: Option<&str>| {
            let wanted = Platform {
                variant: variant.map(String::from),
                ..Platform::new(os, arch)
            };
            choose_platform(&index, &wanted).map(|d| d.digest.clone())
        };
        assert_eq!(pick("linux", "amd64", None), Ok(d('1')));
        assert_eq!(pick("linux", "arm", Some("v7")), Ok(d('3')));
        assert_eq!(pick("linux", "arm", None), Ok(d('2')));
        assert_eq!(pick("linux", "arm64", None), Ok(d('4')));
        assert_eq!(pick("windows", "amd64", None), Ok(d('5')));
        assert_eq!(
            pick("linux", "s390x", None),
            Err("linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8, windows/amd64".into())
        );
        assert_eq!(
            choose_platform(&Index::new(vec![]), &Platform::new("linux", "amd64")),
            Err("no platforms".into())
        );
    }

    #[test]
    fn platform_choice_skips_unknown_and_odd_entries() {
        let mut layer = entry('7', "linux", "amd64", None);
        layer.media_type = media_types::OCI_LAYER_TAR_GZIP.into();
        let index = Index::new(vec![
            entry('0', "unknown", "unknown", None),
            layer,
            entry('8', "linux", "amd64", None),
        ]);
        assert_eq!(
            choose_platform(&index, &Platform::new("linux", "amd64")).map(|d| d.digest.clone()),
            Ok(d('8'))
        );
    }

    const MANIFEST: &str = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":2},"layers":[]}"#;

    #[test]
    fn classify_manifests() {
        let (mt, doc) = classify(MANIFEST.as_bytes(), None).unwrap();
        assert_eq!(mt, media_types::OCI_MANIFEST);
        assert!(matches!(doc, Document::Manifest(_)));
        let (mt, _) = classify(
            MANIFEST.as_bytes(),
            Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(mt, media_types::DOCKER_MANIFEST);
        let docker_list = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        let (mt, doc) = classify(docker_list.as_bytes(), Some("application/json")).unwrap();
        assert_eq!(mt, media_types::DOCKER_MANIFEST_LIST);
        assert!(matches!(doc, Document::Index(_)));
        let (mt, _) = classify(br#"{"schemaVersion":2,"manifests":[]}"#, None).unwrap();
        assert_eq!(mt, media_types::OCI_INDEX);
    }

    #[test]
    fn classify_refusals() {
        let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[],"signatures":[]}"#;
        assert!(matches!(
            classify(schema1, Some("application/vnd.docker.distribution.manifest.v1+prettyjws")),
            Err(Rejected::Schema1(m)) if m == "application/vnd.docker.distribution.manifest.v1+prettyjws"
        ));
        assert!(matches!(classify(schema1, None), Err(Rejected::Schema1(_))));
        let html = classify(b"<html><body>Sign in</body></html>", Some("text/html"));
        let Err(Rejected::NotManifest(why)) = html else {
            panic!("accepted html")
        };
        assert!(why.starts_with("text/html that is not JSON"), "{why}");
        assert!(why.contains("<html><body>Sign in"), "{why}");
        assert!(matches!(
            classify(b"[1,2]", None),
            Err(Rejected::NotManifest(_))
        ));
        assert!(matches!(
            classify(b"{}", None),
            Err(Rejected::NotManifest(_))
        ));
        let Err(Rejected::NotManifest(why)) = classify(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.layer.v1.tar","config":{}}"#,
            None,
        ) else {
            panic!()
        };
        assert!(why.contains("unsupported media type"), "{why}");
        // Declared a manifest but shaped wrong.
        assert!(matches!(
            classify(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
                None
            ),
            Err(Rejected::NotManifest(_))
        ));
    }

    #[test]
    fn ranges_and_references() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes  0-1/2"), Some(0));
        assert_eq!(range_start("items 1-2"), None);
        assert_eq!(range_start("bytes x-1"), None);
        let n = ImageName::parse("h.example/a:1").unwrap();
        assert_eq!(reference_of(&n), "1");
        let n = n.with_digest(d('a'));
        assert_eq!(reference_of(&n), d('a').to_string());
        assert_eq!(
            platform_text(&Platform {
                variant: Some("v8".into()),
                ..Platform::new("linux", "arm64")
            }),
            "linux/arm64/v8"
        );
    }
}
