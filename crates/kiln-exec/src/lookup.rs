//! Finding images: by name or digest in the store, in archives and layout directories
//! (`oci-archive:`, `docker-archive:`, `oci:`), and their layers unpacked into snapshots. The
//! build, `kiln run` and the outputs all come here; nothing here builds.

use crate::ExecError;
use kiln_oci::{media_types, Descriptor, ImageConfig, ImageName, Index, Manifest};
use kiln_plan::Platform;
use kiln_store::Store;
use std::path::{Path, PathBuf};

/// The manifest an image name means in the store: by its name, or, for `name@sha256:...`, the
/// manifest with that digest (named in the store or only held as a blob of it); a digest of an
/// index gives its entry for `platform`.
pub fn find_in_store(store: &Store, name: &ImageName, platform: &Platform) -> Option<Descriptor> {
    if let Ok(tagged) = store.resolve(&name.to_string()) {
        return for_platform(store, tagged.manifest, platform);
    }
    let digest = name.digest()?;
    if let Some(tagged) = store
        .images()
        .ok()?
        .into_iter()
        .find(|t| &t.manifest.digest == digest)
    {
        return for_platform(store, tagged.manifest, platform);
    }
    let bytes = store.read_blob(digest).ok()?;
    let document: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if document.get("manifests").is_some() {
        let index: Index = kiln_oci::from_json_slice(&bytes).ok()?;
        let wanted = platform.to_oci();
        let entry = index
            .manifests
            .into_iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.satisfies(&wanted)))?;
        return store.has_blob(&entry.digest).then_some(entry);
    }
    let manifest: Manifest = kiln_oci::from_json_slice(&bytes).ok()?;
    let media_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| media_types::OCI_MANIFEST.to_string());
    Some(Descriptor::new(
        media_type,
        digest.clone(),
        bytes.len() as u64,
    ))
}

/// What a name of the store means for `platform`: a multi-platform image (an index) gives its
/// manifest for the platform, if the store holds it (a base pulled for other platforms keeps
/// the registry's index, without this platform's manifest: see [`listed_in_store`]); a
/// manifest that says it is for another platform gives nothing (it is asked of the registry,
/// or the build says which platforms there are); a manifest that does not say is taken as it
/// is.
fn for_platform(store: &Store, tagged: Descriptor, platform: &Platform) -> Option<Descriptor> {
    let wanted = platform.to_oci();
    if media_types::is_index(&tagged.media_type) {
        let entry = store.platform_entry(&tagged, &wanted).ok()??;
        return entry.held.then_some(entry.manifest);
    }
    match &tagged.platform {
        Some(have) if !have.satisfies(&wanted) => None,
        _ => Some(tagged),
    }
}

/// A platform a name of the store lists but does not hold: the name's index (as the store
/// names it) and the index entry of the platform's manifest, which the registry still has.
pub fn listed_in_store(
    store: &Store,
    name: &ImageName,
    platform: &Platform,
) -> Option<(Descriptor, Descriptor)> {
    let tagged = store.resolve(&name.to_string()).ok()?;
    if !media_types::is_index(&tagged.manifest.media_type) {
        return None;
    }
    let entry = store
        .platform_entry(&tagged.manifest, &platform.to_oci())
        .ok()??;
    (!entry.held).then_some((tagged.manifest, entry.manifest))
}

/// The platforms an image of the store has (`os/arch[/variant]`), when its name is in the
/// store: every platform its index lists, pulled or not (what a build that asks for another
/// platform lists).
pub fn platforms_in_store(store: &Store, name: &ImageName) -> Option<Vec<String>> {
    let tagged = store.resolve(&name.to_string()).ok()?;
    let mut all: Vec<String> = Vec::new();
    for entry in store.platforms_of(&tagged.manifest).ok()? {
        let text = entry.text();
        if !all.contains(&text) {
            all.push(text);
        }
    }
    Some(all)
}

/// The platforms of an image of the store whose manifests it holds.
pub fn platforms_held(store: &Store, name: &ImageName) -> Vec<String> {
    let Ok(tagged) = store.resolve(&name.to_string()) else {
        return Vec::new();
    };
    let mut held: Vec<String> = Vec::new();
    for entry in store.platforms_of(&tagged.manifest).unwrap_or_default() {
        let text = entry.text();
        if entry.held && !held.contains(&text) {
            held.push(text);
        }
    }
    held
}

/// Why the store has no image of `name` for `platform`: it lists the platform without holding
/// it, it has other platforms only, or it does not have the name at all.
pub fn not_in_store(
    store: &Store,
    name: &ImageName,
    reference: &str,
    platform: &Platform,
) -> ExecError {
    if listed_in_store(store, name, platform).is_some() {
        return ExecError::PlatformNotPulled {
            reference: reference.to_string(),
            platform: platform.to_string(),
            pulled: platforms_held(store, name),
        };
    }
    match platforms_in_store(store, name) {
        Some(available) => ExecError::PlatformNotInStore {
            reference: reference.to_string(),
            platform: platform.to_string(),
            available,
        },
        None => ExecError::ImageNotFound {
            reference: reference.to_string(),
        },
    }
}

/// The snapshot of a layer, unpacked from its blob in the store if it is not there yet.
pub fn ensure_snapshot(
    store: &Store,
    descriptor: &Descriptor,
    diff_id: &str,
    what: &str,
    budget: &mut crate::unpack::ImageBudget,
) -> Result<PathBuf, ExecError> {
    let snapshot = store.snapshot_path(diff_id);
    if snapshot.is_dir() {
        return Ok(snapshot);
    }
    let work = store.work_dir().map_err(ExecError::Store)?;
    let fresh = work.path().join("snapshot");
    std::fs::create_dir(&fresh).map_err(|e| ExecError::Io {
        path: fresh.clone(),
        source: e,
    })?;
    let blob = store
        .open_blob(&descriptor.digest)
        .map_err(ExecError::Store)?;
    // The blob's own length (it was checked against its digest), not what a manifest says.
    let compressed = blob.metadata().map_or(descriptor.size, |m| m.len());
    budget
        .unpack_layer(
            std::io::BufReader::new(blob),
            compressed,
            &descriptor.media_type,
            &fresh,
            diff_id,
        )
        .map_err(|source| ExecError::Unpack {
            what: what.to_string(),
            digest: descriptor.digest.to_string(),
            source: Box::new(source),
        })?;
    store
        .commit_snapshot(&fresh, diff_id)
        .map_err(ExecError::Store)
}

/// Unpacks what the flattened outputs read: every layer of a built image.
pub fn ensure_unpacked(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[kiln_oci::Digest],
) -> Result<(), ExecError> {
    let mut budget = crate::unpack::ImageBudget::new(layers.iter().map(|l| l.size))?;
    for (descriptor, diff_id) in layers.iter().zip(diff_ids) {
        ensure_snapshot(store, descriptor, diff_id.as_str(), "layer", &mut budget)?;
    }
    Ok(())
}

/// An image of the store by name: its config and its layers' snapshots, bottom first.
pub fn image_in_store(
    store: &Store,
    reference: &str,
) -> Result<(ImageConfig, Vec<PathBuf>), ExecError> {
    image_in_store_for(store, reference, &Platform::host())
}

/// [`image_in_store`] for `platform`: of a multi-platform image, that platform's manifest.
pub fn image_in_store_for(
    store: &Store,
    reference: &str,
    platform: &Platform,
) -> Result<(ImageConfig, Vec<PathBuf>), ExecError> {
    let name = ImageName::parse(reference).map_err(ExecError::oci(reference))?;
    let found = find_in_store(store, &name, platform)
        .ok_or_else(|| not_in_store(store, &name, reference, platform))?;
    let manifest: Manifest = kiln_oci::from_json_slice(&store.read_blob(&found.digest)?)
        .map_err(ExecError::oci(found.digest.to_string()))?;
    let config: ImageConfig = kiln_oci::from_json_slice(&store.read_blob(&manifest.config.digest)?)
        .map_err(ExecError::oci(manifest.config.digest.to_string()))?;
    let mut budget = crate::unpack::ImageBudget::new(manifest.layers.iter().map(|l| l.size))?;
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(descriptor, diff_id)| {
            ensure_snapshot(
                store,
                descriptor,
                diff_id.as_str(),
                &format!("base image {reference:?}"),
                &mut budget,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((config, layers))
}

/// Reads an archive file or layout directory into an image.
type ArchiveReader = fn(&Path, &kiln_oci::ReadOptions) -> kiln_oci::Result<kiln_oci::ArchiveImage>;

/// Reads `oci-archive:PATH[:REF]`, `docker-archive:PATH[:REF]` or `oci:DIR[:REF]` (an OCI image
/// layout directory), paths relative to the current directory, as buildah takes them; `None`
/// for a plain image name. What is read is untrusted: the manifest and config are verified
/// here, each layer as it is streamed (by `Store::import`).
pub fn read_transport(reference: &str) -> Result<Option<kiln_oci::ArchiveImage>, ExecError> {
    read_transport_for(reference, None)
}

/// [`read_transport`], taking the manifest for `platform` from an archive or layout whose
/// image is a multi-platform index.
pub fn read_transport_for(
    reference: &str,
    platform: Option<&Platform>,
) -> Result<Option<kiln_oci::ArchiveImage>, ExecError> {
    let (reader, rest, is_dir): (ArchiveReader, &str, bool) = if let Some(rest) =
        reference.strip_prefix("oci-archive:")
    {
        (|p, o| kiln_oci::read_oci_archive(p, o), rest, false)
    } else if let Some(rest) = reference.strip_prefix("docker-archive:") {
        (|p, o| kiln_oci::read_docker_archive(p, o), rest, false)
    } else if let Some(rest) = reference.strip_prefix("oci:") {
        (|p, o| kiln_oci::read_oci_layout_dir(p, o), rest, true)
    } else if reference.starts_with("docker://") {
        return Err(ExecError::Unsupported(format!(
                "{reference}: this transport is not available in this version; use oci-archive:, docker-archive:, oci: (a layout directory) or `kiln load`"
            )));
    } else {
        return Ok(None);
    };
    // `PATH:REF` names one image of the archive or layout; both may hold `:`, so the path is
    // the shortest prefix that is an existing file (a directory for `oci:`).
    let exists = |path: &str| {
        let path = Path::new(path);
        if is_dir {
            path.is_dir()
        } else {
            path.is_file()
        }
    };
    let (path, name) = rest
        .match_indices(':')
        .map(|(i, _)| (&rest[..i], &rest[i + 1..]))
        .find(|(path, name)| !name.is_empty() && exists(path))
        .map_or((rest, None), |(path, name)| (path, Some(name.to_string())));
    let options = kiln_oci::ReadOptions {
        name,
        platform: platform.map(Platform::to_oci),
        ..kiln_oci::ReadOptions::default()
    };
    reader(Path::new(path), &options)
        .map(Some)
        .map_err(ExecError::oci(reference))
}
