//! `kiln save` and `kiln load`: images of the store to and from archives. A multi-platform
//! image travels as its image index, every platform (and attestation) with it, so what is
//! loaded is the very index that was saved, with the same digest.

use crate::output::{export_image, Destination, OutputKind};
use kiln_oci::{media_types, ArchiveImage, Descriptor, ImageName, Platform, ReadOptions};
use kiln_store::{platform_text, Store, StoreError, Tagged};
use std::path::{Path, PathBuf};

/// Why an image could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveIoError {
    /// The store refused.
    #[error("store: {0}")]
    Store(Box<StoreError>),
    /// The file is neither an OCI archive nor a docker archive.
    #[error("{}: neither an OCI archive ({oci}) nor a docker archive ({docker})", path.display())]
    NotAnArchive {
        /// The file.
        path: PathBuf,
        /// Why the OCI reader refused it.
        oci: Box<kiln_oci::Error>,
        /// Why the docker reader refused it.
        docker: Box<kiln_oci::Error>,
    },
    /// An image of the archive could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The archive.
        path: PathBuf,
        /// What the reader said.
        source: Box<kiln_oci::Error>,
    },
    /// What was read could not be copied into the store.
    #[error("{}: {source}", path.display())]
    Import {
        /// The archive.
        path: PathBuf,
        /// What the store said.
        source: Box<StoreError>,
    },
    /// The image has no manifest for the platform asked for.
    #[error("{image}: no image for {platform}; it has {} (choose one with --platform)", available.join(", "))]
    NoPlatform {
        /// The image.
        image: String,
        /// The platform asked for.
        platform: String,
        /// The platforms it has.
        available: Vec<String>,
    },
    /// The store holds the image's index but not all it lists (a base pulled for some
    /// platforms): the index cannot be written whole.
    #[error("{image}: the store does not hold all of its index ({}); save one platform with --platform{}", missing.join(", "), if held.is_empty() { String::new() } else { format!(" ({})", held.join(", ")) })]
    NotWhole {
        /// The image.
        image: String,
        /// The platforms the store holds.
        held: Vec<String>,
        /// What it lacks: platforms, or attestation manifests.
        missing: Vec<String>,
    },
    /// A docker archive holds one image; the image has several platforms.
    #[error("{image}: a docker archive holds one image, and this one has {}; save one with --platform, or --format oci for all of them", platforms.join(", "))]
    DockerOfIndex {
        /// The image.
        image: String,
        /// Its platforms.
        platforms: Vec<String>,
    },
    /// The archive could not be written.
    #[error(transparent)]
    Write(Box<crate::BuildError>),
}

impl From<StoreError> for ArchiveIoError {
    fn from(error: StoreError) -> Self {
        ArchiveIoError::Store(Box::new(error))
    }
}

/// `kiln save`: writes the image `tagged` names, by `names`, to `destination`. A
/// multi-platform image is written as its index (an OCI archive; a docker archive only when
/// one platform is chosen or there is one); `platform` chooses one platform's image.
pub fn save(
    store: &Store,
    tagged: &Tagged,
    names: &[ImageName],
    platform: Option<&Platform>,
    kind: OutputKind,
    destination: &Destination,
) -> Result<(), ArchiveIoError> {
    let image = saved_image(store, tagged, platform, kind == OutputKind::Docker)?;
    export_image(kind, destination, &image, store, names, None)
        .map_err(|e| ArchiveIoError::Write(Box::new(e)))
}

/// What `kiln save` writes of the image `tagged` names.
fn saved_image(
    store: &Store,
    tagged: &Tagged,
    platform: Option<&Platform>,
    docker: bool,
) -> Result<Descriptor, ArchiveIoError> {
    let listed = store.platforms_of(&tagged.manifest)?;
    let texts = |held_only: bool| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for entry in listed.iter().filter(|e| e.held || !held_only) {
            if !out.contains(&entry.text()) {
                out.push(entry.text());
            }
        }
        out
    };
    if let Some(wanted) = platform {
        return match listed.iter().find(|e| e.platform.satisfies(wanted)) {
            Some(entry) if entry.held => {
                let mut manifest = entry.manifest.clone();
                manifest.annotations.clear();
                Ok(manifest)
            }
            Some(_) => Err(ArchiveIoError::NotWhole {
                image: tagged.name.clone(),
                held: texts(true),
                missing: vec![format!("{} was never pulled", platform_text(wanted))],
            }),
            None => Err(ArchiveIoError::NoPlatform {
                image: tagged.name.clone(),
                platform: platform_text(wanted),
                available: texts(false),
            }),
        };
    }
    if !media_types::is_index(&tagged.manifest.media_type) {
        return Ok(tagged.manifest.clone());
    }
    let missing = store.missing_entries(&tagged.manifest)?;
    if !missing.is_empty() {
        let described = missing
            .iter()
            .map(|entry| match &entry.platform {
                Some(p) if !kiln_store::is_attestation_entry(entry) => {
                    format!("{} was never pulled", platform_text(p))
                }
                _ => format!("manifest {} was never pulled", entry.digest),
            })
            .collect();
        return Err(ArchiveIoError::NotWhole {
            image: tagged.name.clone(),
            held: texts(true),
            missing: described,
        });
    }
    if docker {
        return match listed.as_slice() {
            [one] => {
                let mut manifest = one.manifest.clone();
                manifest.annotations.clear();
                Ok(manifest)
            }
            _ => Err(ArchiveIoError::DockerOfIndex {
                image: tagged.name.clone(),
                platforms: texts(false),
            }),
        };
    }
    Ok(tagged.manifest.clone())
}

/// What `kiln load` put into the store.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The image's descriptor (an index for a multi-platform image); not named yet.
    pub descriptor: Descriptor,
    /// The names the archive gives it, as written there (untrusted).
    pub names: Vec<String>,
    /// `os/arch[/variant]` of each of its images.
    pub platforms: Vec<String>,
}

/// `kiln load`: copies the image of an OCI or docker archive into the store, every blob
/// checked. An OCI archive whose image is an index brings the index and every image it lists.
pub fn load(store: &Store, path: &Path) -> Result<Loaded, ArchiveIoError> {
    let options = ReadOptions::default();
    let read = |source| ArchiveIoError::Read {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let import = |source| ArchiveIoError::Import {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    // An OCI archive of an index; anything else (one image, a docker archive) is read below.
    if let Ok(Some(index)) = kiln_oci::read_oci_archive_index(path, &options) {
        let images = index
            .index
            .manifests
            .iter()
            .map(|entry| {
                let options = ReadOptions {
                    manifest: Some(entry.digest.clone()),
                    ..ReadOptions::default()
                };
                kiln_oci::read_oci_archive(path, &options)
            })
            .collect::<Result<Vec<ArchiveImage>, _>>()
            .map_err(read)?;
        let descriptor = store
            .import_index(&index.descriptor, &index.bytes, &images)
            .map_err(import)?;
        let platforms = store
            .platforms_of(&descriptor)?
            .iter()
            .map(kiln_store::PlatformEntry::text)
            .collect();
        return Ok(Loaded {
            descriptor,
            names: index.names,
            platforms,
        });
    }
    let image = match kiln_oci::read_oci_archive(path, &options) {
        Ok(image) => image,
        Err(oci) => kiln_oci::read_docker_archive(path, &options).map_err(|docker| {
            ArchiveIoError::NotAnArchive {
                path: path.to_path_buf(),
                oci: Box::new(oci),
                docker: Box::new(docker),
            }
        })?,
    };
    let descriptor = store.import(&image).map_err(import)?;
    Ok(Loaded {
        descriptor,
        names: image.names.clone(),
        platforms: vec![platform_text(&image.config.platform())],
    })
}
