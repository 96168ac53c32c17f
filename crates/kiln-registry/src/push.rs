//! Pushing an image from the store: blobs (skipped when present, mounted when another
//! repository of the registry has them, else uploaded whole or in chunks), then manifests.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};

use kiln_oci::{from_json_slice, media_types, Descriptor, Digest, ImageName, Index, Manifest};
use kiln_store::Store;
use ureq::http::Method;

use crate::error::{RegistryError, Result};
use crate::http::{self, Call, Client, Repo, Target};
use crate::pull::{classify, MANIFEST_ACCEPT};
use crate::transfer::{for_each_parallel, Meter};
use crate::{normalize_server, Action, Outcome, Progress, TransferEvent};

/// Blobs up to this size go in one PUT; larger ones in PATCHes of this size.
const CHUNK: u64 = 16 << 20;
/// Mount sources tried per blob: the first one the registry answers settles it.
const MOUNT_TRIES: usize = 3;
/// An index of indexes of indexes is as deep as kiln goes.
const MAX_DEPTH: u32 = 3;

struct Push<'a> {
    store: &'a Store,
    repo: Repo,
    progress: Progress<'a>,
    /// Blob → other repositories on the same registry that the store says hold it.
    sources: HashMap<Digest, Vec<String>>,
}

/// How a blob upload attempt failed.
enum Failed {
    /// The upload session may be gone or broken: a new one might work.
    Restart(RegistryError),
    Fatal(RegistryError),
}

impl From<RegistryError> for Failed {
    fn from(e: RegistryError) -> Failed {
        if restartable(&e) {
            Failed::Restart(e)
        } else {
            Failed::Fatal(e)
        }
    }
}

/// Errors after which the same blob, started over, may go through.
fn restartable(e: &RegistryError) -> bool {
    match e {
        RegistryError::NotFound { .. } => true,
        RegistryError::Status { status, body, .. } => {
            http::retryable_status(*status)
                || *status == 416
                || (*status == 400 && body.contains("BLOB_UPLOAD_INVALID"))
        }
        other => other.is_transient(),
    }
}

impl Client {
    pub(crate) fn push(
        &self,
        store: &Store,
        manifest: &Descriptor,
        dest: &ImageName,
        progress: Progress,
    ) -> Result<Descriptor> {
        let repo = Repo::of(dest);
        let reference = match (dest.tag(), dest.digest()) {
            (Some(tag), _) => tag.to_string(),
            (None, Some(digest)) if digest == &manifest.digest => digest.to_string(),
            (None, Some(digest)) => {
                return Err(RegistryError::Invalid(format!(
                    "cannot push {} as {dest}: the destination names another digest ({digest})",
                    manifest.digest
                )))
            }
            (None, None) => "latest".to_string(),
        };
        let push = Push {
            sources: mount_sources(store, &repo),
            store,
            repo,
            progress,
        };
        let media_type = self.push_document(&push, manifest, &reference, 0)?;
        Ok(Descriptor::new(
            media_type,
            manifest.digest.clone(),
            manifest.size,
        ))
    }

    /// Pushes what a manifest or index needs, then the document itself under `reference`;
    /// returns its media type.
    fn push_document(
        &self,
        push: &Push,
        desc: &Descriptor,
        reference: &str,
        depth: u32,
    ) -> Result<String> {
        let repo = &push.repo;
        let bytes = push
            .store
            .read_blob(&desc.digest)
            .map_err(|source| RegistryError::Store {
                context: format!(
                    "{repo}: pushing manifest {}: reading it from the store",
                    desc.digest
                ),
                source: Box::new(source),
            })?;
        if bytes.len() as u64 != desc.size {
            return Err(RegistryError::Invalid(format!(
                "{repo}: pushing manifest {}: the store has {} bytes, the descriptor says {}",
                desc.digest,
                bytes.len(),
                desc.size
            )));
        }
        let invalid = |reason: String| {
            RegistryError::Invalid(format!(
                "{repo}: pushing manifest {}: {reason}",
                desc.digest
            ))
        };
        let media_type = if desc.media_type.is_empty() {
            classify(&bytes, None)
                .map(|(mt, _)| mt)
                .map_err(|_| invalid("the store's blob is not a manifest".into()))?
        } else {
            desc.media_type.clone()
        };
        if media_types::is_index(&media_type) {
            if depth >= MAX_DEPTH {
                return Err(invalid("indexes nested too deep".into()));
            }
            let index: Index = from_json_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
            for child in &index.manifests {
                if push.store.has_blob(&child.digest) {
                    self.push_document(
                        push,
                        child,
                        child.digest.as_str(),
                        depth.saturating_add(1),
                    )?;
                } else if !self.manifest_exists(repo, &child.digest)? {
                    let platform = child
                        .platform
                        .as_ref()
                        .map(|p| format!(" ({})", crate::pull::platform_text(p)))
                        .unwrap_or_default();
                    return Err(invalid(format!(
                        "its entry {}{platform} is neither in the store nor on the registry",
                        child.digest
                    )));
                }
            }
        } else if media_types::is_manifest(&media_type) {
            let manifest: Manifest = from_json_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
            let mut seen = HashSet::new();
            let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
                .chain(&manifest.layers)
                .filter(|blob| seen.insert(&blob.digest))
                .collect();
            for_each_parallel(&blobs, self.options.parallel, |blob| {
                self.push_blob(push, blob)
            })?;
        } else {
            return Err(invalid(format!("unsupported media type {media_type:?}")));
        }
        self.put_manifest(repo, reference, &media_type, &bytes, &desc.digest)?;
        Ok(media_type)
    }

    fn manifest_exists(&self, repo: &Repo, digest: &Digest) -> Result<bool> {
        let what = format!("checking for manifest {digest}");
        let call = Call::new(
            Method::HEAD,
            Target::Path(format!("/v2/{}/manifests/{digest}", repo.path)),
        )
        .header("accept", MANIFEST_ACCEPT)
        .push();
        let response = self.call(repo, &what, &call)?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(http::unexpected(repo, &what, response)),
        }
    }

    fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<()> {
        let what = format!("pushing manifest {reference}");
        let call = Call::new(
            Method::PUT,
            Target::Path(format!("/v2/{}/manifests/{reference}", repo.path)),
        )
        .header("content-type", media_type)
        .body(bytes)
        .push();
        // A registry restarting right now gets one more round of attempts.
        let response = match self.call(repo, &what, &call) {
            Err(e) if e.is_transient() => self.call(repo, &what, &call)?,
            other => other?,
        };
        if !matches!(response.status().as_u16(), 200..=202) {
            return Err(http::unexpected(repo, &what, response));
        }
        if let Some(said) = http::header(&response, "docker-content-digest")
            .and_then(|d| Digest::parse(d.trim()).ok())
        {
            if said.algorithm() == digest.algorithm() && &said != digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {digest} as pushed"),
                    repo: repo.to_string(),
                    actual: said.to_string(),
                });
            }
        }
        Ok(())
    }

    /// One blob: skipped, mounted or uploaded, started over when a session breaks.
    fn push_blob(&self, push: &Push, blob: &Descriptor) -> Result<()> {
        let meter = Meter::new(blob.digest.to_string(), blob.size, push.progress);
        meter.event(TransferEvent::Start {
            id: meter.id.clone(),
            action: Action::Push,
            total: blob.size,
        });
        if !push.store.has_blob(&blob.digest) {
            return Err(RegistryError::Invalid(format!(
                "{}: pushing blob {}: it is not in the store",
                push.repo, blob.digest
            )));
        }
        let mut restarts = 0u32;
        // Chunk recoveries for this blob, over all its sessions: a registry that keeps
        // losing what it took cannot keep us sending it forever.
        let mut recoveries = 0u32;
        loop {
            match self.push_blob_once(push, blob, &meter, &mut recoveries) {
                Ok(outcome) => {
                    if outcome == Outcome::Uploaded {
                        meter.complete();
                    }
                    meter.event(TransferEvent::Done {
                        id: meter.id.clone(),
                        outcome,
                    });
                    return Ok(());
                }
                Err(Failed::Restart(e)) if restarts < self.options.retries => {
                    restarts = restarts.saturating_add(1);
                    meter.retry(restarts, &format!("starting the blob over: {e}"));
                    std::thread::sleep(http::backoff(restarts));
                }
                Err(Failed::Restart(e) | Failed::Fatal(e)) => return Err(e),
            }
        }
    }

    fn push_blob_once(
        &self,
        push: &Push,
        blob: &Descriptor,
        meter: &Meter,
        recoveries: &mut u32,
    ) -> std::result::Result<Outcome, Failed> {
        let repo = &push.repo;
        let on_retry = |n: u32, why: &str| meter.retry(n, why);
        if self.blob_exists(repo, blob, &on_retry)? {
            return Ok(Outcome::Existed);
        }
        let mut location = None;
        let sources = push
            .sources
            .get(&blob.digest)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for from in sources.iter().take(MOUNT_TRIES) {
            let what = format!("mounting blob {} from {from}", blob.digest);
            let mut call = Call::new(
                Method::POST,
                Target::Path(format!(
                    "/v2/{}/blobs/uploads/?mount={}&from={}",
                    repo.path,
                    http::query_escape(blob.digest.as_str()),
                    http::query_escape(from)
                )),
            )
            .body(&[])
            .push()
            .on_retry(Some(&on_retry));
            call.mount_from = Some(from.clone());
            let response = match self.call(repo, &what, &call) {
                Ok(response) => response,
                Err(e) if restartable(&e) => return Err(e.into()),
                // Mounting only saves an upload; the upload reports what is really wrong.
                Err(_) => continue,
            };
            match response.status().as_u16() {
                201 => return Ok(Outcome::Mounted),
                // Not mounted, but an upload was started for us.
                202 => {
                    let base = self.base_for_location(repo, &what)?;
                    let current = format!("{base}/v2/{}/blobs/uploads/", repo.path);
                    location = Some(self.location(repo, &what, &current, &response)?);
                    break;
                }
                _ => continue,
            }
        }
        let location = match location {
            Some(l) => l,
            None => self.start_upload(repo, blob, &on_retry)?,
        };
        if blob.size <= CHUNK {
            self.upload_whole(push, blob, &location, meter)?;
        } else {
            self.upload_chunks(push, blob, location, meter, recoveries)?;
        }
        Ok(Outcome::Uploaded)
    }

    /// Whether the registry has the blob, at its size: one it says is another length is
    /// taken as not there, and uploaded.
    fn blob_exists(
        &self,
        repo: &Repo,
        blob: &Descriptor,
        on_retry: http::OnRetry<'_>,
    ) -> Result<bool> {
        let digest = &blob.digest;
        let what = format!("checking for blob {digest}");
        let call = Call::new(
            Method::HEAD,
            Target::Path(format!("/v2/{}/blobs/{digest}", repo.path)),
        )
        .push()
        .on_retry(Some(on_retry));
        let response = self.call(repo, &what, &call)?;
        match response.status().as_u16() {
            200 => Ok(http::header(&response, "content-length")
                .and_then(|l| l.trim().parse::<u64>().ok())
                .is_none_or(|len| len == blob.size)),
            404 => Ok(false),
            _ => Err(http::unexpected(repo, &what, response)),
        }
    }

    /// A blob PUT's answer: 201 (or 204), with the registry's `Docker-Content-Digest`, when
    /// it sends one, the blob's.
    fn check_put(
        &self,
        repo: &Repo,
        what: &str,
        blob: &Descriptor,
        response: ureq::http::Response<ureq::Body>,
    ) -> Result<()> {
        if !matches!(response.status().as_u16(), 201 | 204) {
            return Err(http::unexpected(repo, what, response));
        }
        // As for manifests: a digest of another kind, or one kiln cannot read, says nothing.
        if let Some(said) = http::header(&response, "docker-content-digest")
            .and_then(|d| Digest::parse(d.trim()).ok())
        {
            if said.algorithm() == blob.digest.algorithm() && said != blob.digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("blob {} as pushed", blob.digest),
                    repo: repo.to_string(),
                    actual: said.to_string(),
                });
            }
        }
        Ok(())
    }

    /// POST …/blobs/uploads/: the new session's URL.
    fn start_upload(
        &self,
        repo: &Repo,
        blob: &Descriptor,
        on_retry: http::OnRetry<'_>,
    ) -> Result<String> {
        let what = format!("starting the upload of blob {}", blob.digest);
        let path = format!("/v2/{}/blobs/uploads/", repo.path);
        let call = Call::new(Method::POST, Target::Path(path.clone()))
            .body(&[])
            .push()
            .on_retry(Some(on_retry));
        let response = self.call(repo, &what, &call)?;
        if response.status().as_u16() != 202 {
            return Err(http::unexpected(repo, &what, response));
        }
        let base = self.base_for_location(repo, &what)?;
        self.location(repo, &what, &format!("{base}{path}"), &response)
    }

    /// The response's `Location`, resolved against the URL it answered.
    fn location(
        &self,
        repo: &Repo,
        what: &str,
        current: &str,
        response: &ureq::http::Response<ureq::Body>,
    ) -> Result<String> {
        let protocol = |message: String| RegistryError::Protocol {
            repo: repo.to_string(),
            what: what.to_string(),
            message,
        };
        let location = http::header(response, "location")
            .ok_or_else(|| protocol("the registry's answer has no Location".into()))?;
        http::resolve_location(current, location, |h| self.is_insecure(h)).map_err(protocol)
    }

    /// POST then one PUT with the whole blob.
    fn upload_whole(
        &self,
        push: &Push,
        blob: &Descriptor,
        location: &str,
        meter: &Meter,
    ) -> std::result::Result<(), Failed> {
        let repo = &push.repo;
        let what = format!("uploading blob {}", blob.digest);
        let data = read_range(push, blob, 0, blob.size).map_err(Failed::Fatal)?;
        let on_sent = |n: u64| meter.update(n);
        let url = http::with_query(location, "digest", blob.digest.as_str());
        let mut call = Call::new(Method::PUT, Target::Url(url))
            .header("content-type", "application/octet-stream")
            .body(&data)
            .push()
            // Sent again, a half-taken body would be appended twice: start over instead.
            .no_retry();
        call.on_sent = Some(&on_sent);
        let response = self.call(repo, &what, &call)?;
        Ok(self.check_put(repo, &what, blob, response)?)
    }

    /// PATCHes of [`CHUNK`] bytes with `Content-Range`, then PUT `?digest=`. A chunk that
    /// fails is followed by asking the session how much it has, and going on from there, at
    /// most `2 × retries` times for the blob (`recoveries` counts them, over its sessions).
    fn upload_chunks(
        &self,
        push: &Push,
        blob: &Descriptor,
        mut location: String,
        meter: &Meter,
        recoveries: &mut u32,
    ) -> std::result::Result<(), Failed> {
        let repo = &push.repo;
        let what = format!("uploading blob {}", blob.digest);
        let protocol = |what: &str, message: String| RegistryError::Protocol {
            repo: repo.to_string(),
            what: what.to_string(),
            message,
        };
        let on_retry = |n: u32, why: &str| meter.retry(n, why);
        let max_recoveries = self.options.retries.saturating_mul(2);
        let mut offset = 0u64;
        while offset < blob.size {
            let end = blob.size.min(offset.saturating_add(CHUNK));
            let data = read_range(push, blob, offset, end).map_err(Failed::Fatal)?;
            let start = offset;
            let on_sent = |n: u64| meter.update(start.saturating_add(n));
            let mut call = Call::new(Method::PATCH, Target::Url(location.clone()))
                .header("content-type", "application/octet-stream")
                .header(
                    "content-range",
                    format!("{offset}-{}", end.saturating_sub(1)),
                )
                .body(&data)
                .push()
                .no_retry();
            call.on_sent = Some(&on_sent);
            let failure = match self.call(repo, &what, &call) {
                Ok(response) if response.status().as_u16() == 202 => {
                    if let Ok(next) = self.location(repo, &what, &location, &response) {
                        location = next;
                    }
                    offset = next_offset(http::header(&response, "range"), start, end)
                        .map_err(|message| Failed::Fatal(protocol(&what, message)))?;
                    continue;
                }
                Ok(response) => http::unexpected(repo, &what, response),
                Err(e) => e,
            };
            if !restartable(&failure) {
                return Err(Failed::Fatal(failure));
            }
            if *recoveries >= max_recoveries {
                return Err(Failed::Restart(failure));
            }
            *recoveries = recoveries.saturating_add(1);
            meter.retry(*recoveries, &failure.to_string());
            std::thread::sleep(http::backoff(*recoveries));
            // Ask the session where it is; one that cannot say means starting over.
            let status_what = format!("asking how much of blob {} arrived", blob.digest);
            let call = Call::new(Method::GET, Target::Url(location.clone()))
                .push()
                .on_retry(Some(&on_retry));
            let response = self.call(repo, &status_what, &call)?;
            if !matches!(response.status().as_u16(), 202 | 204) {
                return Err(Failed::Restart(http::unexpected(
                    repo,
                    &status_what,
                    response,
                )));
            }
            offset = match http::header(&response, "range").map(received) {
                None => 0,
                Some(Ok(n)) => n,
                Some(Err(message)) => return Err(Failed::Fatal(protocol(&status_what, message))),
            };
            if offset > blob.size {
                return Err(Failed::Restart(protocol(
                    &status_what,
                    format!("the registry says it has {offset} of {} bytes", blob.size),
                )));
            }
            if let Ok(next) = self.location(repo, &what, &location, &response) {
                location = next;
            }
        }
        let url = http::with_query(&location, "digest", blob.digest.as_str());
        let call = Call::new(Method::PUT, Target::Url(url))
            .header("content-type", "application/octet-stream")
            .body(&[])
            .push()
            .no_retry();
        let failure = match self
            .call(repo, &what, &call)
            .and_then(|response| self.check_put(repo, &what, blob, response))
        {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // The PUT may have been taken before its answer was lost.
        if restartable(&failure) && self.blob_exists(repo, blob, &on_retry)? {
            return Ok(());
        }
        Err(failure.into())
    }
}

/// Bytes `start..end` of a blob in the store.
fn read_range(push: &Push, blob: &Descriptor, start: u64, end: u64) -> Result<Vec<u8>> {
    let context = || {
        format!(
            "{}: pushing blob {}: reading the store",
            push.repo, blob.digest
        )
    };
    let io = |source| RegistryError::Io {
        context: context(),
        source,
    };
    let mut file = push
        .store
        .open_blob(&blob.digest)
        .map_err(|source| RegistryError::Store {
            context: context(),
            source: Box::new(source),
        })?;
    let len = file.metadata().map_err(io)?.len();
    if len != blob.size {
        return Err(RegistryError::Invalid(format!(
            "{}: the store's blob is {len} bytes, the manifest says {}",
            context(),
            blob.size
        )));
    }
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut data = vec![0u8; usize::try_from(end.saturating_sub(start)).unwrap_or(0)];
    file.read_exact(&mut data).map_err(io)?;
    Ok(data)
}

/// How many bytes an upload session holds, from its `Range: 0-N`. docker-registry says
/// `0-0` for an empty session as well as for one byte: taken as empty, since sending one byte
/// again is refused (416) and leads to a fresh start, while skipping one would corrupt the blob.
/// An unreadable range is empty too; one past any count is an error.
fn received(range: &str) -> std::result::Result<u64, String> {
    match range_end(range) {
        Some(0) | None => Ok(0),
        Some(end) => end
            .checked_add(1)
            .ok_or_else(|| format!("the registry says its upload holds bytes {range:?}")),
    }
}

/// Where the next chunk starts after a PATCH of `start..end` was taken: the registry's own
/// count (`Range: 0-N`) if it says one within the chunk, else `end`.
fn next_offset(range: Option<&str>, start: u64, end: u64) -> std::result::Result<u64, String> {
    let Some(last) = range.and_then(range_end) else {
        return Ok(end);
    };
    let next = last
        .checked_add(1)
        .ok_or_else(|| format!("the registry says its upload holds bytes 0-{last}"))?;
    Ok(if next > start && next <= end {
        next
    } else {
        end
    })
}

/// The last byte of `Range: 0-N` (also `bytes=0-N`).
fn range_end(value: &str) -> Option<u64> {
    let value = value.trim();
    let value = value
        .strip_prefix("bytes=")
        .or_else(|| value.strip_prefix("bytes "))
        .unwrap_or(value);
    let (_, end) = value.split_once('-')?;
    end.trim().parse().ok()
}

/// For each blob, the other repositories of `repo`'s registry whose images in the store list
/// it: a registry may let us mount it from there instead of uploading it.
fn mount_sources(store: &Store, repo: &Repo) -> HashMap<Digest, Vec<String>> {
    let mut sources: HashMap<Digest, Vec<String>> = HashMap::new();
    let Ok(images) = store.images() else {
        return sources;
    };
    for image in images {
        let Ok(name) = ImageName::parse(&image.name) else {
            continue;
        };
        if normalize_server(name.domain()) != repo.host || name.path() == repo.path {
            continue;
        }
        let mut manifests = vec![image.manifest.clone()];
        if media_types::is_index(&image.manifest.media_type) {
            manifests = store
                .read_blob(&image.manifest.digest)
                .ok()
                .and_then(|b| from_json_slice::<Index>(&b).ok())
                .map(|i| i.manifests)
                .unwrap_or_default();
        }
        for desc in manifests {
            let Some(manifest) = store
                .read_blob(&desc.digest)
                .ok()
                .and_then(|b| from_json_slice::<Manifest>(&b).ok())
            else {
                continue;
            };
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                let list = sources.entry(blob.digest.clone()).or_default();
                if !list.iter().any(|p| p == name.path()) {
                    list.push(name.path().to_string());
                }
            }
        }
    }
    sources
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn upload_ranges() {
        assert_eq!(range_end("0-16777215"), Some(16777215));
        assert_eq!(range_end("bytes=0-99"), Some(99));
        assert_eq!(range_end("bytes 0-5"), Some(5));
        assert_eq!(range_end("0-"), None);
        assert_eq!(range_end("junk"), None);
        assert_eq!(received("0-0"), Ok(0));
        assert_eq!(received("0-99"), Ok(100));
        assert_eq!(received("bogus"), Ok(0));
    }

    #[test]
    fn upload_ranges_past_any_count_are_errors() {
        let max = "0-18446744073709551615";
        assert_eq!(range_end(max), Some(u64::MAX));
        assert!(received(max).is_err());
        assert!(next_offset(Some(max), 0, 10).is_err());
        assert!(next_offset(Some("bytes=0-18446744073709551615"), 0, 10).is_err());
        // Within the chunk the registry's count wins; outside it, or unreadable, ours.
        assert_eq!(next_offset(Some("0-4"), 0, 10), Ok(5));
        assert_eq!(next_offset(Some("0-9"), 0, 10), Ok(10));
        assert_eq!(next_offset(Some("0-20"), 0, 10), Ok(10));
        assert_eq!(next_offset(Some("0-2"), 5, 10), Ok(10));
        assert_eq!(next_offset(Some("junk"), 0, 10), Ok(10));
        assert_eq!(next_offset(None, 0, 10), Ok(10));
        // A number too big for u64 does not parse: no count given.
        assert_eq!(next_offset(Some("0-99999999999999999999"), 0, 10), Ok(10));
    }

    #[test]
    fn restartable_errors() {
        let status = |status, body: &str| RegistryError::Status {
            repo: "h/r".into(),
            what: "x".into(),
            status,
            body: body.into(),
        };
        assert!(restartable(&status(503, "")));
        assert!(restartable(&status(416, "")));
        assert!(restartable(&status(
            400,
            "BLOB_UPLOAD_INVALID: blob upload invalid"
        )));
        assert!(!restartable(&status(
            400,
            "DIGEST_INVALID: provided digest did not match"
        )));
        assert!(!restartable(&status(403, "DENIED")));
        assert!(restartable(&RegistryError::NotFound {
            repo: "h/r".into(),
            what: "x".into(),
            body: String::new()
        }));
        assert!(restartable(&RegistryError::Connection {
            repo: "h/r".into(),
            what: "x".into(),
            url: "u".into(),
            message: "connection refused".into()
        }));
        assert!(!restartable(&RegistryError::Unauthorized {
            host: "h".into(),
            repo: "h/r".into(),
            what: "x".into(),
            reason: "no".into()
        }));
    }

    fn tagged_store() -> (tempfile::TempDir, Store, Descriptor, Digest) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let layer = store.put_blob(b"layer").unwrap();
        let config = store.put_blob(b"{}").unwrap();
        let manifest = Manifest::new(
            Descriptor::new(media_types::OCI_CONFIG, config, 2),
            vec![Descriptor::new(
                media_types::OCI_LAYER_TAR_GZIP,
                layer.clone(),
                5,
            )],
        );
        let bytes = kiln_oci::to_canonical_json(&manifest).unwrap();
        let digest = store.put_blob(&bytes).unwrap();
        let desc = Descriptor::new(media_types::OCI_MANIFEST, digest, bytes.len() as u64);
        (tmp, store, desc, layer)
    }

    #[test]
    fn mount_sources_from_the_same_registry() {
        let (_tmp, store, desc, layer) = tagged_store();
        store.tag("reg.example:5000/base:1", "1", &desc).unwrap();
        store.tag("reg.example:5000/app:1", "1", &desc).unwrap();
        store.tag("other.example/base:1", "1", &desc).unwrap();
        store.tag("docker.io/library/alpine:1", "1", &desc).unwrap();
        let repo = Repo {
            host: "reg.example:5000".into(),
            path: "app".into(),
        };
        let sources = mount_sources(&store, &repo);
        assert_eq!(sources.get(&layer), Some(&vec!["base".to_string()]));
        let hub = Repo {
            host: "docker.io".into(),
            path: "me/app".into(),
        };
        assert_eq!(
            mount_sources(&store, &hub).get(&layer),
            Some(&vec!["library/alpine".to_string()])
        );
        let elsewhere = Repo {
            host: "third.example".into(),
            path: "x".into(),
        };
        assert!(mount_sources(&store, &elsewhere).is_empty());
    }
}
