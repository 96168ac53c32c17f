//! Outputs in buildx's `-o` syntax: `type=oci,dest=out.tar`, `type=docker,dest=-`.

use crate::build::Built;
use crate::BuildError;
use kiln_oci::{
    write_docker_archive, write_oci_archive, ImageName, ImageRef, LayoutBlobs, WriteOptions,
};
use kiln_store::Store;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// An OCI image layout as a tar, with a docker-compatible manifest.json.
    Oci,
    /// A `docker save` archive.
    Docker,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub destination: Destination,
    /// `name=` names for the image inside the archive (besides the `-t` tags).
    pub names: Vec<String>,
}

impl OutputSpec {
    /// Parses `type=oci,dest=FILE[,name=NAME]`. (buildx reads a bare path as a local
    /// directory output, which this version does not write, so a bare path is refused.)
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut kind = None;
        let mut destination = None;
        let mut names = Vec::new();
        for field in text.split(',') {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("invalid output {text:?}: expected type=TYPE,dest=PATH"))?;
            match key.trim() {
                "type" => {
                    kind = Some(match value {
                        "oci" => OutputKind::Oci,
                        "docker" => OutputKind::Docker,
                        "tar" | "local" | "layers" | "registry" | "image" => {
                            return Err(format!("output type {value:?} is not available in this version; use type=oci or type=docker"))
                        }
                        other => return Err(format!("unknown output type {other:?} (use oci or docker)")),
                    })
                }
                "dest" => {
                    destination = Some(if value == "-" {
                        Destination::Stdout
                    } else {
                        Destination::File(PathBuf::from(value))
                    })
                }
                "name" => names.extend(value.split(';').map(str::to_string)),
                other => return Err(format!("unknown output option {other:?} in {text:?}")),
            }
        }
        let kind = kind.ok_or_else(|| format!("output {text:?} needs type=oci or type=docker"))?;
        let destination = destination.ok_or_else(|| {
            format!("output {text:?} needs dest=FILE (or dest=- for standard output)")
        })?;
        Ok(OutputSpec {
            kind,
            destination,
            names,
        })
    }
}

/// Writes the built image to `spec`'s destination, named by `names` (full image names) and
/// the spec's own `name=`s.
pub fn export(
    spec: &OutputSpec,
    built: &Built,
    store: &Store,
    names: &[ImageName],
) -> Result<(), BuildError> {
    let mut all = names.to_vec();
    for name in &spec.names {
        all.push(
            ImageName::parse_normalized(name)
                .map_err(|e| BuildError::Image(format!("output name {name:?}: {e}")))?,
        );
    }
    export_image(spec.kind, &spec.destination, &built.manifest, store, &all)
}

/// Writes an image of the store (by its manifest descriptor) as an archive.
pub fn export_image(
    kind: OutputKind,
    destination: &Destination,
    manifest: &kiln_oci::Descriptor,
    store: &Store,
    names: &[ImageName],
) -> Result<(), BuildError> {
    let mut image = ImageRef::new(manifest.clone());
    for name in names {
        image = image.with_name(name.clone());
    }
    let blobs = LayoutBlobs::new(store.root());
    let options = WriteOptions::from_env().map_err(|e| BuildError::Image(e.to_string()))?;
    let write = |out: &mut dyn Write| -> Result<(), BuildError> {
        let result = match kind {
            OutputKind::Oci => write_oci_archive(out, &image, &blobs, &options),
            OutputKind::Docker => write_docker_archive(out, &image, &blobs, &options),
        };
        result.map_err(|e| BuildError::Image(format!("writing the archive: {e}")))
    };
    match destination {
        Destination::Stdout => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            write(&mut lock)?;
            lock.flush().map_err(|e| BuildError::Io {
                path: PathBuf::from("<stdout>"),
                source: e,
            })
        }
        Destination::File(path) => {
            // Written beside the target and renamed: a failed build never leaves half an archive.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let io_error = |source| BuildError::Io {
                path: path.clone(),
                source,
            };
            let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
            write(file.as_file_mut())?;
            file.as_file().sync_all().map_err(io_error)?;
            file.persist(path).map_err(|e| io_error(e.error))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_output_specs() {
        let spec = OutputSpec::parse("type=oci,dest=out.tar,name=app:1").unwrap();
        assert_eq!(spec.kind, OutputKind::Oci);
        assert_eq!(spec.destination, Destination::File("out.tar".into()));
        assert_eq!(spec.names, ["app:1"]);
        assert_eq!(
            OutputSpec::parse("type=docker,dest=-").unwrap().destination,
            Destination::Stdout
        );
        assert!(OutputSpec::parse("type=oci").unwrap_err().contains("dest="));
        assert!(OutputSpec::parse("type=zip,dest=x")
            .unwrap_err()
            .contains("unknown output type"));
        assert!(OutputSpec::parse("out.tar").is_err());
        assert!(OutputSpec::parse("type=local,dest=x")
            .unwrap_err()
            .contains("not available"));
    }
}
