//! An image read from an archive: its documents in memory, its layers streamed from the file.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::files::{Extent, Files};
use super::{BlobSource, ImageRef};
use crate::error::io_ctx;
use crate::{Descriptor, Digest, Error, ImageConfig, ImageName, Manifest, Result, VerifyingReader};

/// Which kind of archive an image came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/`).
    Oci,
    /// `docker save`'s format (`manifest.json`, config and layer tars).
    Docker,
}

/// One image from an archive. The manifest and config have been verified against their
/// digests; layers are verified as they are streamed by [`ArchiveImage::open_layer`] (their
/// sizes were checked when the archive was read).
#[derive(Debug)]
pub struct ArchiveImage {
    /// Which archive format it came from.
    pub format: ArchiveFormat,
    /// For a docker archive, the descriptor of a Docker schema 2 manifest made from
    /// `manifest.json` (in `manifest_bytes`).
    pub manifest_descriptor: Descriptor,
    /// The image manifest, parsed.
    pub manifest: Manifest,
    /// The manifest's bytes as read (what its digest is of).
    pub manifest_bytes: Vec<u8>,
    /// The image config, parsed.
    pub config: ImageConfig,
    /// The config's bytes as read.
    pub config_bytes: Vec<u8>,
    /// The names the archive gives the image, as written there (untrusted): `RepoTags`,
    /// `io.containerd.image.name`, or a bare `org.opencontainers.image.ref.name`.
    pub names: Vec<String>,
    /// The archive or layout directory the layers are read from.
    pub(crate) files: Files,
    /// Where each of `manifest.layers` lies there.
    pub(crate) layer_extents: Vec<Extent>,
}

impl ArchiveImage {
    /// The archive file, or the layout directory.
    pub fn path(&self) -> &Path {
        self.files.path()
    }

    /// The layer descriptors, first to last.
    pub fn layers(&self) -> &[Descriptor] {
        &self.manifest.layers
    }

    /// Streams layer `i` as stored (compressed or not). The reader fails at its end, instead of
    /// ending, if the content does not match the layer's digest: read it to the end before
    /// trusting it.
    pub fn open_layer(&self, i: usize) -> Result<VerifyingReader<io::Take<BufReader<File>>>> {
        let (desc, extent) = self
            .manifest
            .layers
            .get(i)
            .zip(self.layer_extents.get(i))
            .ok_or_else(|| Error::InvalidImage(format!("no layer {i}")))?;
        let range = self.files.open(extent)?;
        Ok(VerifyingReader::new(
            range,
            desc.digest.clone(),
            desc.size,
            format!("layer {}", desc.digest),
        ))
    }

    /// Reads every layer through, checking its digest.
    pub fn verify_layers(&self) -> Result<()> {
        for i in 0..self.manifest.layers.len() {
            let mut r = self.open_layer(i)?;
            io::copy(&mut r, &mut io::sink()).map_err(io_ctx(format!("verifying layer {i}")))?;
        }
        Ok(())
    }

    /// An [`ImageRef`] for writing this image elsewhere (with this as its [`BlobSource`]),
    /// named by those of its names that are full image references.
    pub fn image_ref(&self) -> ImageRef {
        let mut r = ImageRef::new(self.manifest_descriptor.clone());
        r.manifest.annotations.clear();
        r.names = self
            .names
            .iter()
            .filter_map(|n| ImageName::parse(n).ok())
            .collect();
        r
    }

    fn layer_extent(&self, digest: &Digest) -> Option<&Extent> {
        self.manifest
            .layers
            .iter()
            .zip(&self.layer_extents)
            .find(|(d, _)| &d.digest == digest)
            .map(|(_, e)| e)
    }
}

/// The archive's blobs: manifest, config, layers (unverified here; writers verify).
impl BlobSource for ArchiveImage {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        if digest == &self.manifest_descriptor.digest {
            return Ok(Box::new(&self.manifest_bytes[..]));
        }
        if digest == &self.manifest.config.digest {
            return Ok(Box::new(&self.config_bytes[..]));
        }
        match self.layer_extent(digest) {
            Some(extent) => {
                let r = self
                    .files
                    .open(extent)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                Ok(Box::new(r))
            }
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {digest} not in this image"),
            )),
        }
    }
}
