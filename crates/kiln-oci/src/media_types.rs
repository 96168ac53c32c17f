//! Media types of the OCI image spec and of Docker's image manifest schema 2.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI content descriptor (as a standalone document).
pub const OCI_DESCRIPTOR: &str = "application/vnd.oci.descriptor.v1+json";
/// The `oci-layout` file of an image layout.
pub const OCI_LAYOUT_HEADER: &str = "application/vnd.oci.layout.header.v1+json";
/// The empty descriptor's blob, `{}`.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// gzip-compressed OCI layer.
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd-compressed OCI layer.
pub const OCI_LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Non-distributable layers (deprecated by the spec, still met in the wild).
pub const OCI_LAYER_NONDISTRIBUTABLE_TAR: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// Non-distributable gzip layer (deprecated by OCI, still read).
pub const OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// Non-distributable zstd layer (deprecated by OCI, still read).
pub const OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (Docker's image index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Uncompressed Docker layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// gzip-compressed Docker layer.
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// zstd-compressed layer under a Docker manifest (written by Docker ≥ 23 / BuildKit).
pub const DOCKER_LAYER_TAR_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// A layer that registries may refuse to distribute (Windows base layers).
pub const DOCKER_LAYER_FOREIGN_TAR_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// An image manifest, OCI or Docker schema 2.
pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

/// An image index, OCI or Docker manifest list.
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// An image config, OCI or Docker.
pub fn is_config(media_type: &str) -> bool {
    matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
}

/// How a layer's blob is compressed, judged by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// Not compressed.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The compression of a known layer media type, or `None` for a media type that is not a layer.
pub fn layer_compression(media_type: &str) -> Option<LayerCompression> {
    match media_type {
        OCI_LAYER_TAR | OCI_LAYER_NONDISTRIBUTABLE_TAR | DOCKER_LAYER_TAR => {
            Some(LayerCompression::None)
        }
        OCI_LAYER_TAR_GZIP
        | OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP
        | DOCKER_LAYER_TAR_GZIP
        | DOCKER_LAYER_FOREIGN_TAR_GZIP => Some(LayerCompression::Gzip),
        OCI_LAYER_TAR_ZSTD | OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD | DOCKER_LAYER_TAR_ZSTD => {
            Some(LayerCompression::Zstd)
        }
        _ => None,
    }
}

/// The compression a blob's first bytes announce (gzip `1f 8b`, zstd `28 b5 2f fd`).
pub fn sniff_compression(head: &[u8]) -> LayerCompression {
    if head.starts_with(&[0x1f, 0x8b]) {
        LayerCompression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        LayerCompression::Zstd
    } else {
        LayerCompression::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert!(is_manifest(OCI_MANIFEST) && is_manifest(DOCKER_MANIFEST));
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_MANIFEST_LIST));
        assert!(is_config(OCI_CONFIG) && is_config(DOCKER_CONFIG));
        assert!(!is_manifest(OCI_INDEX) && !is_index(OCI_MANIFEST));
        assert_eq!(
            layer_compression(DOCKER_LAYER_TAR_GZIP),
            Some(LayerCompression::Gzip)
        );
        assert_eq!(
            layer_compression(OCI_LAYER_TAR),
            Some(LayerCompression::None)
        );
        assert_eq!(
            layer_compression(OCI_LAYER_TAR_ZSTD),
            Some(LayerCompression::Zstd)
        );
        assert_eq!(layer_compression(OCI_CONFIG), None);
        assert_eq!(sniff_compression(&[0x1f, 0x8b, 8]), LayerCompression::Gzip);
        assert_eq!(
            sniff_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
            LayerCompression::Zstd
        );
        assert_eq!(sniff_compression(b"ustar"), LayerCompression::None);
    }

    #[test]
    fn exact_strings() {
        assert_eq!(
            OCI_LAYER_TAR_GZIP,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            DOCKER_LAYER_TAR_GZIP,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(
            DOCKER_CONFIG,
            "application/vnd.docker.container.image.v1+json"
        );
    }
}
