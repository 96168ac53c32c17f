//! OCI image layouts: as a tar archive (with a Docker-compatible `manifest.json`) and as a
//! directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::files::{Files, LayoutDir};
use super::image::{ArchiveFormat, ArchiveImage};
use super::tar_in::TarIndex;
use super::{
    check_config, check_manifest, names_match, resolve_image, BlobSource, Content, ImageRef, Plan,
    ReadOptions, WriteOptions,
};
use crate::descriptor::annotations;
use crate::error::io_ctx;
use crate::json::{parse_json, read_bounded};
use crate::{
    is_valid_ref_name, media_types, to_canonical_json, Descriptor, DockerManifestEntry, Error,
    ImageConfig, Index, Manifest, OciLayout, Result, VerifyingReader, MAX_JSON_SIZE,
};

/// Writes `image` as an OCI image layout in a tar: `oci-layout`, `index.json` (one manifest
/// descriptor per name, annotated with `org.opencontainers.image.ref.name` = the tag and
/// `io.containerd.image.name` = the full name), `blobs/<alg>/<hex>` for the manifest, config
/// and every layer, and a `manifest.json` in `docker save`'s format pointing into `blobs/`, so
/// `docker load` (20.10 and later) and `podman load` take the same file as skopeo and umoci.
/// When the descriptor is an image index, the index is written instead (see `index_out`).
pub fn write_oci_archive<W: Write>(
    out: W,
    image: &ImageRef,
    blobs: &dyn BlobSource,
    opts: &WriteOptions,
) -> Result<()> {
    write_oci_archive_to(super::sink::Stream(out), image, blobs, opts)
}

/// [`write_oci_archive`] into a file: blobs the source vouches for ([`BlobSource::open_verified`])
/// are copied by the kernel, at the disk's speed, without passing through memory.
pub fn write_oci_archive_file(
    out: &std::fs::File,
    image: &ImageRef,
    blobs: &dyn BlobSource,
    opts: &WriteOptions,
) -> Result<()> {
    write_oci_archive_to(super::sink::FileSink(out), image, blobs, opts)
}

fn write_oci_archive_to<W: super::sink::Sink>(
    out: W,
    image: &ImageRef,
    blobs: &dyn BlobSource,
    opts: &WriteOptions,
) -> Result<()> {
    // An image index (platforms, attestations): the index is the one named entry.
    if media_types::is_index(&image.manifest.media_type) {
        return super::index_out::write_index_archive(out, image, blobs, opts);
    }
    let r = resolve_image(image, blobs)?;
    let index = layout_index(image, &r.config)?;
    let docker = [DockerManifestEntry {
        config: r.manifest.config.digest.blob_path(),
        repo_tags: image.repo_tags(),
        layers: r
            .manifest
            .layers
            .iter()
            .map(|l| l.digest.blob_path())
            .collect(),
        ..DockerManifestEntry::default()
    }];
    let mut plan = Plan::default();
    plan.put(
        "oci-layout",
        Content::Bytes(to_canonical_json(&OciLayout::default())?),
    )?;
    plan.put("index.json", Content::Bytes(to_canonical_json(&index)?))?;
    plan.put("manifest.json", Content::Bytes(to_canonical_json(&docker)?))?;
    plan.put(
        &image.manifest.digest.blob_path(),
        Content::Bytes(r.manifest_bytes),
    )?;
    plan.put(
        &r.manifest.config.digest.blob_path(),
        Content::Bytes(r.config_bytes),
    )?;
    for layer in &r.manifest.layers {
        plan.put(
            &layer.digest.blob_path(),
            Content::Blob(Box::new(layer.clone())),
        )?;
    }
    plan.write(out, blobs, opts.mtime)
}

/// `index.json` for `image`: one descriptor per name (or one without annotations).
fn layout_index(image: &ImageRef, config: &ImageConfig) -> Result<Index> {
    let mut base = image.manifest.clone();
    if base.platform.is_none() {
        base.platform = Some(config.platform());
    }
    let names = image.unique_names();
    if names.is_empty() {
        return Ok(Index::new(vec![base]));
    }
    let mut manifests = Vec::with_capacity(names.len());
    for name in names {
        let mut d = base.clone();
        d.annotations
            .insert(annotations::CONTAINERD_IMAGE_NAME.into(), name.to_string());
        if let Some(tag) = name.tag() {
            d.annotations
                .insert(annotations::REF_NAME.into(), ref_name_for_tag(tag)?);
        }
        manifests.push(d);
    }
    Ok(Index::new(manifests))
}

/// The `org.opencontainers.image.ref.name` for a tag. Docker tags allow a few forms the image
/// spec's ref grammar does not (`_x`, `x.`, `a__b`); those are refused rather than written as
/// refs that OCI tools would reject.
pub(super) fn ref_name_for_tag(tag: &str) -> Result<String> {
    if is_valid_ref_name(tag) {
        Ok(tag.to_owned())
    } else {
        Err(Error::InvalidReference {
            input: tag.into(),
            reason: "tag is not a valid org.opencontainers.image.ref.name \
                     (alphanumeric runs joined by one of -._:@+ or --)"
                .into(),
        })
    }
}

/// Writes `image` into the OCI image layout directory `dir` (created if needed): each blob is
/// written to a temporary file, checked against its digest, synced and renamed into place
/// (blobs already present with the right size are kept); `oci-layout` is added if missing;
/// `index.json` is written last, atomically, keeping the descriptors of other images already
/// there and replacing those with the same names.
pub fn write_oci_layout_dir(dir: &Path, image: &ImageRef, blobs: &dyn BlobSource) -> Result<()> {
    let r = resolve_image(image, blobs)?;
    let new_index = layout_index(image, &r.config)?;
    fs::create_dir_all(dir).map_err(io_ctx(format!("creating {}", dir.display())))?;

    put_blob_bytes(dir, &image.manifest, &r.manifest_bytes)?;
    put_blob_bytes(dir, &r.manifest.config, &r.config_bytes)?;
    for layer in &r.manifest.layers {
        let dest = blob_dest(dir, layer)?;
        if already_there(&dest, layer.size) {
            continue;
        }
        let what = format!("blob {}", layer.digest);
        let reader = blobs
            .open(&layer.digest)
            .map_err(io_ctx(format!("opening {what}")))?;
        let mut verified =
            VerifyingReader::new(reader, layer.digest.clone(), layer.size, what.clone());
        write_atomic(&dest, |f| {
            io::copy(&mut verified, f).map_err(io_ctx(format!("writing {what}")))?;
            Ok(())
        })?;
    }

    let layout_path = dir.join("oci-layout");
    if layout_path.exists() {
        let bytes = read_bounded(
            File::open(&layout_path)
                .map_err(io_ctx(format!("opening {}", layout_path.display())))?,
            MAX_JSON_SIZE,
            "oci-layout",
        )?;
        let layout: OciLayout = parse_json("oci-layout", &bytes)?;
        check_layout_version(&layout)?;
    } else {
        let bytes = to_canonical_json(&OciLayout::default())?;
        write_atomic(&layout_path, |f| {
            f.write_all(&bytes).map_err(io_ctx("writing oci-layout"))
        })?;
    }

    let index_path = dir.join("index.json");
    let mut index = if index_path.exists() {
        let bytes = read_bounded(
            File::open(&index_path).map_err(io_ctx(format!("opening {}", index_path.display())))?,
            MAX_JSON_SIZE,
            "index.json",
        )?;
        let mut old: Index = parse_json("index.json", &bytes)?;
        old.manifests
            .retain(|d| !superseded_by(d, &new_index.manifests));
        old
    } else {
        Index::new(Vec::new())
    };
    index.manifests.extend(new_index.manifests);
    let bytes = to_canonical_json(&index)?;
    write_atomic(&index_path, |f| {
        f.write_all(&bytes).map_err(io_ctx("writing index.json"))
    })?;
    sync_dir(dir)
}

/// Whether an existing `index.json` descriptor is replaced by one of the new ones: the same
/// full name, the same ref name (refs are unique in a layout), or — both unnamed — the same
/// manifest.
fn superseded_by(old: &Descriptor, new: &[Descriptor]) -> bool {
    let full = |d: &Descriptor| {
        d.annotations
            .get(annotations::CONTAINERD_IMAGE_NAME)
            .cloned()
    };
    let unnamed = |d: &Descriptor| full(d).is_none() && d.ref_name().is_none();
    new.iter().any(|n| {
        (full(n).is_some() && full(n) == full(old))
            || (n.ref_name().is_some() && n.ref_name() == old.ref_name())
            || (unnamed(n) && unnamed(old) && n.digest == old.digest)
    })
}

fn check_layout_version(layout: &OciLayout) -> Result<()> {
    if layout.image_layout_version == "1.0.0" {
        Ok(())
    } else {
        Err(Error::InvalidArchive(format!(
            "unsupported imageLayoutVersion {:?}",
            layout.image_layout_version
        )))
    }
}

fn blob_dest(dir: &Path, desc: &Descriptor) -> Result<PathBuf> {
    let dest = dir.join(desc.digest.blob_path());
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_ctx(format!("creating {}", parent.display())))?;
    }
    Ok(dest)
}

fn already_there(dest: &Path, size: u64) -> bool {
    fs::metadata(dest).is_ok_and(|m| m.is_file() && m.len() == size)
}

fn put_blob_bytes(dir: &Path, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
    let dest = blob_dest(dir, desc)?;
    if already_there(&dest, desc.size) {
        return Ok(());
    }
    write_atomic(&dest, |f| {
        f.write_all(bytes)
            .map_err(io_ctx(format!("writing blob {}", desc.digest)))
    })
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `dest` through a temporary file next to it: fill, fsync, rename, fsync the directory.
/// On failure the temporary file is removed and `dest` is untouched.
fn write_atomic(dest: &Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| Error::InvalidArchive(format!("{} has no parent", dest.display())))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_ctx(format!("creating {}", tmp.display())))?;
        fill(&mut f)?;
        f.sync_all()
            .map_err(io_ctx(format!("syncing {}", tmp.display())))?;
        fs::rename(&tmp, dest).map_err(io_ctx(format!("renaming to {}", dest.display())))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_ctx(format!("syncing {}", dir.display())))
}

/// Reads one image from an OCI archive (a tar of an OCI image layout). With several images in
/// `index.json`, [`ReadOptions::name`] picks one; a multi-platform index is followed to the
/// manifest for [`ReadOptions::platform`], or to its only image manifest (attestations
/// aside). The manifest and config are verified; each layer's size is checked now and its
/// digest as it is streamed.
pub fn read_oci_archive(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<ArchiveImage> {
    read_layout(Files::Tar(TarIndex::scan(path.as_ref())?), opts, "archive")
}

/// Reads one image from an OCI image layout directory (as `skopeo copy … oci:DIR:TAG` and
/// [`write_oci_layout_dir`] write), untrusted, exactly as [`read_oci_archive`] reads the same
/// layout in a tar. Files are looked up inside `dir` only: names with `..`, absolute names,
/// symlinks leading out of it and anything but regular files are refused.
pub fn read_oci_layout_dir(dir: impl AsRef<Path>, opts: &ReadOptions) -> Result<ArchiveImage> {
    read_layout(Files::Dir(LayoutDir::open(dir.as_ref())?), opts, "layout")
}

/// The `index.json` entry `opts` names (or the only one), and the names the layout gives it.
fn choose_top(index: &Files, opts: &ReadOptions, what: &str) -> Result<(Descriptor, Vec<String>)> {
    if !index.contains("oci-layout") {
        return Err(Error::InvalidArchive(format!(
            "no oci-layout file: not an OCI {what}"
        )));
    }
    let layout: OciLayout = index.read_json("oci-layout")?;
    check_layout_version(&layout)?;
    let top: Index = index.read_json("index.json")?;
    if top.schema_version != 2 {
        return Err(Error::InvalidArchive(format!(
            "index.json schemaVersion {}",
            top.schema_version
        )));
    }

    let candidates: Vec<&Descriptor> = match &opts.name {
        Some(wanted) => top
            .manifests
            .iter()
            .filter(|d| {
                d.ref_name().is_some_and(|r| names_match(r, wanted))
                    || d.annotations
                        .get(annotations::CONTAINERD_IMAGE_NAME)
                        .is_some_and(|n| names_match(n, wanted))
            })
            .collect(),
        None => top.manifests.iter().collect(),
    };
    let chosen = match distinct_by_digest(&candidates).as_slice() {
        [] => {
            return Err(Error::InvalidArchive(match &opts.name {
                Some(n) => format!("no image named {n:?} in index.json"),
                None => "index.json lists no images".into(),
            }))
        }
        [one] => (*one).clone(),
        many => {
            let mut refs: Vec<&str> = Vec::new();
            for r in candidates.iter().filter_map(|d| d.ref_name()) {
                if !refs.contains(&r) {
                    refs.push(r);
                }
            }
            let listed = if refs.is_empty() {
                String::new()
            } else {
                format!(" (refs: {})", refs.join(", "))
            };
            return Err(Error::InvalidArchive(format!(
                "the {what} holds {} images{listed}; choose one by name",
                many.len()
            )));
        }
    };
    let mut names: Vec<String> = Vec::new();
    for d in candidates.iter().filter(|d| d.digest == chosen.digest) {
        let name = d
            .annotations
            .get(annotations::CONTAINERD_IMAGE_NAME)
            .or_else(|| d.annotations.get(annotations::REF_NAME));
        if let Some(n) = name {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    Ok((chosen, names))
}

/// The OCI layout reader shared by archives and directories; `what` names the container in
/// messages.
fn read_layout(index: Files, opts: &ReadOptions, what: &str) -> Result<ArchiveImage> {
    let (chosen, names) = choose_top(&index, opts, what)?;

    let manifest_desc = descend_to_manifest(&index, chosen, opts)?;
    let manifest_bytes = read_blob(&index, &manifest_desc, "manifest")?;
    let manifest: Manifest = parse_json("manifest", &manifest_bytes)?;
    check_manifest(&manifest, &manifest_desc.media_type)?;
    let config_bytes = read_blob(&index, &manifest.config, "config")?;
    let config: ImageConfig = parse_json("config", &config_bytes)?;
    check_config(&manifest, &config)?;

    let mut layer_extents = Vec::with_capacity(manifest.layers.len());
    for layer in &manifest.layers {
        let extent = index.resolve(&layer.digest.blob_path())?;
        if extent.size() != layer.size {
            return Err(Error::SizeMismatch {
                what: format!("layer {}", layer.digest),
                expected: layer.size,
                actual: extent.size(),
            });
        }
        layer_extents.push(extent);
    }
    Ok(ArchiveImage {
        format: ArchiveFormat::Oci,
        manifest_descriptor: manifest_desc,
        manifest,
        manifest_bytes,
        config,
        config_bytes,
        names,
        files: index,
        layer_extents,
    })
}

fn distinct_by_digest<'a>(ds: &[&'a Descriptor]) -> Vec<&'a Descriptor> {
    let mut out: Vec<&Descriptor> = Vec::new();
    for d in ds {
        if !out.iter().any(|o| o.digest == d.digest) {
            out.push(d);
        }
    }
    out
}

/// Follows nested indexes (at most 4 deep) down to one image manifest.
fn descend_to_manifest(
    index: &Files,
    mut desc: Descriptor,
    opts: &ReadOptions,
) -> Result<Descriptor> {
    for _ in 0..4 {
        if media_types::is_manifest(&desc.media_type) {
            return Ok(desc);
        }
        if !media_types::is_index(&desc.media_type) {
            return Err(Error::UnsupportedMediaType(desc.media_type));
        }
        let bytes = read_blob(index, &desc, "index")?;
        let inner: Index = parse_json("index", &bytes)?;
        if let Some(wanted) = &opts.manifest {
            desc = inner
                .manifests
                .iter()
                .find(|d| &d.digest == wanted)
                .cloned()
                .ok_or_else(|| {
                    Error::InvalidArchive(format!("the image index lists no manifest {wanted}"))
                })?;
            continue;
        }
        let images: Vec<&Descriptor> = inner
            .manifests
            .iter()
            .filter(|d| {
                let attestation = d
                    .annotations
                    .get(annotations::DOCKER_REFERENCE_TYPE)
                    .is_some_and(|t| t == "attestation-manifest")
                    || d.platform.as_ref().is_some_and(|p| p.os == "unknown");
                let platform_ok = match (&opts.platform, &d.platform) {
                    (Some(want), Some(have)) => have.satisfies(want),
                    (Some(_), None) => false,
                    (None, _) => true,
                };
                !attestation && platform_ok
            })
            .collect();
        desc = match distinct_by_digest(&images).as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(Error::InvalidArchive(match &opts.platform {
                    Some(p) => {
                        let mut available: Vec<String> = inner
                            .manifests
                            .iter()
                            .filter_map(|d| d.platform.as_ref())
                            .filter(|p| p.os != "unknown")
                            .map(|p| match &p.variant {
                                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                                None => format!("{}/{}", p.os, p.architecture),
                            })
                            .collect();
                        available.dedup();
                        let wanted = match &p.variant {
                            Some(v) if !v.is_empty() => format!("{}/{}/{v}", p.os, p.architecture),
                            _ => format!("{}/{}", p.os, p.architecture),
                        };
                        format!(
                            "no manifest for platform {wanted}; the image has {}",
                            if available.is_empty() {
                                "no platforms".to_string()
                            } else {
                                available.join(", ")
                            }
                        )
                    }
                    None => "the image index lists no image manifests".into(),
                }))
            }
            many => {
                return Err(Error::InvalidArchive(format!(
                    "the image index has {} platforms; choose one",
                    many.len()
                )))
            }
        };
    }
    Err(Error::InvalidArchive(
        "image indexes nested too deeply".into(),
    ))
}

/// A small blob of the archive or directory, checked against its descriptor.
fn read_blob(index: &Files, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let what = format!("{what} {}", desc.digest);
    let extent = index.resolve(&desc.digest.blob_path())?;
    let size = extent.size();
    if size != desc.size {
        return Err(Error::SizeMismatch {
            what,
            expected: desc.size,
            actual: size,
        });
    }
    if size > MAX_JSON_SIZE {
        return Err(Error::TooLarge {
            what,
            size,
            limit: MAX_JSON_SIZE,
        });
    }
    let r = VerifyingReader::new(
        index.open(&extent)?,
        desc.digest.clone(),
        size,
        what.clone(),
    );
    read_bounded(r, MAX_JSON_SIZE, &what)
}

/// A multi-platform image read from an OCI archive: its image index (verified against its
/// descriptor) and the names the archive gives it. Each of its images is read with
/// [`read_oci_archive`] and [`ReadOptions::manifest`].
#[derive(Debug, Clone)]
pub struct ArchiveIndex {
    /// The index's descriptor (without the archive's name annotations).
    pub descriptor: Descriptor,
    /// The index's bytes as read (what its digest is of).
    pub bytes: Vec<u8>,
    /// The index, parsed.
    pub index: Index,
    /// The names the archive gives it (`io.containerd.image.name`, else the ref name).
    pub names: Vec<String>,
}

/// The image index of an OCI archive whose image (the one [`ReadOptions::name`] names, or the
/// only one) is multi-platform; `Ok(None)` when that image is a single manifest.
pub fn read_oci_archive_index(
    path: impl AsRef<Path>,
    opts: &ReadOptions,
) -> Result<Option<ArchiveIndex>> {
    let files = Files::Tar(TarIndex::scan(path.as_ref())?);
    let (chosen, names) = choose_top(&files, opts, "archive")?;
    if !media_types::is_index(&chosen.media_type) {
        return Ok(None);
    }
    let bytes = read_blob(&files, &chosen, "index")?;
    let index: Index = parse_json("index", &bytes)?;
    if let Some(media_type) = index.media_type.as_deref() {
        if media_type != chosen.media_type {
            return Err(Error::InvalidImage(format!(
                "index {} says mediaType {media_type:?}, its descriptor {:?}",
                chosen.digest, chosen.media_type
            )));
        }
    }
    let mut descriptor = chosen;
    descriptor.annotations.clear();
    Ok(Some(ArchiveIndex {
        descriptor,
        bytes,
        index,
        names,
    }))
}
