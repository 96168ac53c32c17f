//! Outputs in buildx's `-o` syntax: `type=oci,dest=out.tar`, `type=docker,dest=-`.

use crate::build::Built;
use crate::flatten::{flatten, Materialize};
use crate::rootfs::Rootfs;
use crate::BuildError;
use kiln_oci::{
    write_docker_archive, write_docker_archive_file, write_oci_archive, write_oci_archive_file,
    ImageName, ImageRef, WriteOptions,
};
use kiln_store::Store;
use std::fs;
use std::io::Write;
use std::path::PathBuf;

/// What `-o type=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// An OCI image layout as a tar, with a docker-compatible manifest.json.
    Oci,
    /// A `docker save` archive.
    Docker,
    /// The image's filesystem, flattened, as one tar.
    Tar,
    /// The image's filesystem, flattened, into a directory.
    Local,
    /// Every layer as its own tarball, plus `layers.json` describing them.
    Layers,
    /// Pushed to a registry under `name=` (or the `-t` names).
    Registry,
}

/// Where an output goes (`dest=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard output (`dest=-`).
    Stdout,
    /// A file or directory.
    File(PathBuf),
    /// The registries the image's names point at.
    Registry,
}

/// One `-o` flag, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// `type=`.
    pub kind: OutputKind,
    /// `dest=`.
    pub destination: Destination,
    /// `name=` names for the image inside the archive (besides the `-t` tags).
    pub names: Vec<String>,
    /// `compression=gzip|zstd|uncompressed` and `compression-level=N`: how the layers are
    /// compressed (kiln compresses layers once, as it builds them).
    pub compression: Option<kiln_layer::Compression>,
}

impl OutputSpec {
    /// Parses `type=oci,dest=FILE[,name=NAME]`. (buildx reads a bare path as a local
    /// directory output; kiln asks for `type=local,dest=DIR` to be spelled out.)
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut kind = None;
        let mut destination = None;
        let mut names = Vec::new();
        let mut algorithm: Option<&str> = None;
        let mut level: Option<i32> = None;
        let mut push = None;
        for field in text.split(',') {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("invalid output {text:?}: expected type=TYPE,dest=PATH"))?;
            match key.trim() {
                "type" => {
                    kind = Some(match value {
                        "oci" => OutputKind::Oci,
                        "docker" => OutputKind::Docker,
                        "tar" => OutputKind::Tar,
                        "local" => OutputKind::Local,
                        "layers" => OutputKind::Layers,
                        "registry" => OutputKind::Registry,
                        // buildx's `type=image,push=true` is `type=registry`.
                        "image" => {
                            push.get_or_insert(false);
                            OutputKind::Registry
                        }
                        other => return Err(format!("unknown output type {other:?} (use oci, docker, tar, local, layers or registry)")),
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
                "push" => push = Some(matches!(value, "true" | "1")),
                "compression" => {
                    if !matches!(value, "gzip" | "zstd" | "uncompressed") {
                        return Err(format!(
                            "unknown compression {value:?} (use gzip, zstd or uncompressed)"
                        ));
                    }
                    algorithm = Some(value);
                }
                "compression-level" => {
                    level = Some(
                        value
                            .parse()
                            .map_err(|_| format!("compression-level={value:?} is not a number"))?,
                    );
                }
                other => return Err(format!("unknown output option {other:?} in {text:?}")),
            }
        }
        let kind = kind.ok_or_else(|| {
            format!("output {text:?} needs type=oci, docker, tar, local, layers or registry")
        })?;
        if kind == OutputKind::Registry {
            if push == Some(false) {
                return Err(format!(
                    "output {text:?}: type=image without push=true only names the image; use -t NAME for that"
                ));
            }
            if destination.is_some() {
                return Err(format!(
                    "output {text:?}: type=registry pushes to name=NAME, not to dest="
                ));
            }
            destination = Some(Destination::Registry);
        }
        let destination = destination.ok_or_else(|| {
            format!("output {text:?} needs dest=PATH (or dest=- for standard output)")
        })?;
        if matches!(kind, OutputKind::Local | OutputKind::Layers)
            && destination == Destination::Stdout
        {
            return Err(format!(
                "output {text:?} writes a directory: dest=- is not possible"
            ));
        }
        let compression = match (algorithm, level) {
            (None, None) => None,
            (Some("zstd"), level) => Some(kiln_layer::Compression::Zstd {
                level: level.unwrap_or(3),
            }),
            (Some("uncompressed"), _) => Some(kiln_layer::Compression::None),
            (_, level) => {
                let level = level.unwrap_or(6);
                if !(0..=9).contains(&level) {
                    return Err(format!("compression-level={level}: gzip levels are 0 to 9"));
                }
                Some(kiln_layer::Compression::Gzip {
                    level: level as u32,
                })
            }
        };
        if let Some(kiln_layer::Compression::Zstd { level }) = compression {
            if !(-7..=22).contains(&level) {
                return Err(format!(
                    "compression-level={level}: zstd levels are -7 to 22"
                ));
            }
        }
        Ok(OutputSpec {
            kind,
            destination,
            names,
            compression,
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
    match spec.kind {
        OutputKind::Local => {
            unpack_missing(store, built)?;
            return export_local(&spec.destination, built);
        }
        OutputKind::Tar => {
            unpack_missing(store, built)?;
            return export_tar(&spec.destination, built, store);
        }
        OutputKind::Layers => return export_layers(&spec.destination, built, store),
        OutputKind::Registry => {
            return Err(BuildError::Internal(
                "type=registry is pushed by the caller, with a registry client",
            ))
        }
        OutputKind::Oci | OutputKind::Docker => {}
    }
    let mut all = names.to_vec();
    for name in &spec.names {
        all.push(
            ImageName::parse(name)
                .map_err(crate::ExecError::oci(format!("output name {name:?}")))?,
        );
    }
    export_image(
        spec.kind,
        &spec.destination,
        &built.manifest,
        store,
        &all,
        built.source_date_epoch,
    )
}

/// Writes an image of the store (by its manifest descriptor) as an archive.
pub fn export_image(
    kind: OutputKind,
    destination: &Destination,
    manifest: &kiln_oci::Descriptor,
    store: &Store,
    names: &[ImageName],
    source_date_epoch: Option<i64>,
) -> Result<(), BuildError> {
    let mut image = ImageRef::new(manifest.clone());
    for name in names {
        image = image.with_name(name.clone());
    }
    // The store's blobs were checked when they were written: a file output takes them by
    // copy_file_range, unread.
    let blobs = store.blobs();
    // Archive entries carry the build's SOURCE_DATE_EPOCH (flag or environment), else 0.
    let options = WriteOptions {
        mtime: source_date_epoch
            .and_then(|e| u64::try_from(e).ok())
            .unwrap_or(0),
    };
    let write = |out: Out<'_>| -> Result<(), BuildError> {
        let result = match (kind, out) {
            (OutputKind::Docker, Out::File(file)) => {
                write_docker_archive_file(file, &image, &blobs, &options)
            }
            (OutputKind::Docker, Out::Stream(out)) => {
                write_docker_archive(out, &image, &blobs, &options)
            }
            (_, Out::File(file)) => write_oci_archive_file(file, &image, &blobs, &options),
            (_, Out::Stream(out)) => write_oci_archive(out, &image, &blobs, &options),
        };
        result.map_err(BuildError::Archive)
    };
    write_to(destination, write)
}

/// Where an output's bytes go: a file (which can take blobs by copy_file_range), or a stream.
enum Out<'a> {
    File(&'a fs::File),
    Stream(&'a mut dyn Write),
}

impl<'a> Out<'a> {
    /// The destination as a plain writer, for outputs that only stream.
    fn writer(self) -> Box<dyn Write + 'a> {
        match self {
            Out::File(file) => Box::new(file),
            Out::Stream(stream) => Box::new(stream),
        }
    }
}

/// Standard output as a file when it is one (`> image.tar`), so archives go to it by
/// copy_file_range too.
fn stdout_file() -> Option<fs::File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    let file = fs::File::from(fd);
    file.metadata().ok()?.is_file().then_some(file)
}

/// Runs `write` against the destination: standard output, or a temp file beside the target
/// renamed into place when complete, so a failed build never leaves half a file.
fn write_to(
    destination: &Destination,
    write: impl Fn(Out<'_>) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    match destination {
        Destination::Stdout => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            match stdout_file() {
                Some(file) => {
                    lock.flush().map_err(|e| BuildError::Io {
                        path: PathBuf::from("<stdout>"),
                        source: e,
                    })?;
                    write(Out::File(&file))?;
                }
                None => write(Out::Stream(&mut lock))?,
            }
            lock.flush().map_err(|e| BuildError::Io {
                path: PathBuf::from("<stdout>"),
                source: e,
            })
        }
        Destination::Registry => Err(BuildError::Output(
            "an archive output needs dest=FILE".into(),
        )),
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
            let file = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
            write(Out::File(file.as_file()))?;
            // Not fsynced: an output is the user's file, not the store's. The store (blobs,
            // snapshots, records) is what must survive a crash, and it does; an archive is
            // made again from it in the time a copy takes. `docker save -o` (temp file and
            // rename), buildx `-o type=oci,dest=` (written in place) and `cp` do not sync
            // either, and syncing a 1 GiB archive costs more than writing it. The rename still
            // means a failed build never leaves half an archive under the name.
            // Temp files are private (0600); an image archive is for other tools to read.
            use std::os::unix::fs::PermissionsExt;
            file.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(io_error)?;
            file.persist(path).map_err(|e| io_error(e.error))?;
            Ok(())
        }
    }
}

fn io_at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Unpacks the layers whose snapshot is not there (a shared cache's, say); a step's own
/// snapshot is used where it is.
fn unpack_missing(store: &Store, built: &Built) -> Result<(), BuildError> {
    let (layers, diff_ids): (Vec<_>, Vec<_>) = built
        .layers
        .iter()
        .zip(&built.config.rootfs.diff_ids)
        .zip(&built.snapshots)
        .filter(|(_, snapshot)| !snapshot.is_dir())
        .map(|((layer, diff_id), _)| (layer.clone(), diff_id.clone()))
        .unzip();
    Ok(crate::lookup::ensure_unpacked(store, &layers, &diff_ids)?)
}

fn rootfs_of(built: &Built) -> Rootfs {
    Rootfs::new(built.snapshots.clone())
}

/// `type=local`: the flattened filesystem in a directory, which must be new or empty (so a
/// typo never mixes an image into unrelated files).
fn export_local(destination: &Destination, built: &Built) -> Result<(), BuildError> {
    let Destination::File(dir) = destination else {
        return Err(BuildError::Output("type=local needs dest=DIR".into()));
    };
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    if fs::read_dir(dir).map_err(io_at(dir))?.next().is_some() {
        return Err(BuildError::Output(format!(
            "type=local: {} is not empty",
            dir.display()
        )));
    }
    flatten(&rootfs_of(built), dir, Materialize::Copy)?;
    Ok(())
}

/// `type=tar`: the flattened filesystem as one uncompressed tar, with the same deterministic
/// headers as layers. The tree is assembled from hardlinks in a private work area.
fn export_tar(destination: &Destination, built: &Built, store: &Store) -> Result<(), BuildError> {
    let work = store.work_dir().map_err(BuildError::Store)?;
    let tree = work.path().join("tree");
    fs::create_dir(&tree).map_err(io_at(&tree))?;
    flatten(&rootfs_of(built), &tree, Materialize::Hardlink)?;
    let epoch = built.source_date_epoch;
    write_to(destination, |out| {
        let entries =
            kiln_layer::list_entries(&tree).map_err(crate::ExecError::layer("type=tar"))?;
        kiln_layer::write_tar(entries.into_iter().map(Ok), epoch, out.writer())
            .map_err(|e| crate::ExecError::layer("type=tar")(e).into())
    })
}

/// `type=layers`: every layer blob as its own file plus `layers.json`, for tools that want
/// layers rather than images.
fn export_layers(
    destination: &Destination,
    built: &Built,
    store: &Store,
) -> Result<(), BuildError> {
    let Destination::File(dir) = destination else {
        return Err(BuildError::Output("type=layers needs dest=DIR".into()));
    };
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let made_by: Vec<String> = built
        .config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created_by.clone().unwrap_or_default())
        .collect();
    let mut listed = Vec::new();
    for (i, (layer, diff_id)) in built
        .layers
        .iter()
        .zip(&built.config.rootfs.diff_ids)
        .enumerate()
    {
        let extension = match layer.media_type.as_str() {
            t if t.ends_with("+gzip") || t.ends_with(".gzip") => "tar.gz",
            t if t.ends_with("+zstd") => "tar.zst",
            _ => "tar",
        };
        let file = format!("{:03}-{}.{extension}", i + 1, layer.digest.hex());
        let target = dir.join(&file);
        let mut input = store.open_blob(&layer.digest).map_err(BuildError::Store)?;
        let mut output = tempfile::NamedTempFile::new_in(dir).map_err(io_at(dir))?;
        std::io::copy(&mut input, output.as_file_mut()).map_err(io_at(&target))?;
        output
            .as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io_at(&target))?;
        output
            .persist(&target)
            .map_err(|e| io_at(&target)(e.error))?;
        listed.push(serde_json::json!({
            "file": file,
            "digest": layer.digest.to_string(),
            "diff_id": diff_id.to_string(),
            "media_type": layer.media_type,
            "size": layer.size,
            "created_by": made_by.get(i).cloned().unwrap_or_default(),
        }));
    }
    let index = serde_json::json!({
        "manifest": built.manifest.digest.to_string(),
        "config": built.config_descriptor.digest.to_string(),
        "layers": listed,
    });
    let path = dir.join("layers.json");
    let text = serde_json::to_string_pretty(&index).map_err(|e| io_at(&path)(e.into()))?;
    fs::write(&path, text + "\n").map_err(io_at(&path))
}

/// The one compression of a build's layers: layers are compressed once, as they are built, so
/// outputs that ask for one must agree.
pub fn layer_compression(outputs: &[OutputSpec]) -> Result<kiln_layer::Compression, String> {
    let asked: Vec<kiln_layer::Compression> =
        outputs.iter().filter_map(|o| o.compression).collect();
    match asked.first() {
        None => Ok(kiln_layer::Compression::default()),
        Some(first) if asked.iter().all(|c| c == first) => Ok(*first),
        Some(_) => Err(
            "outputs ask for different compressions; kiln compresses layers once per build".into(),
        ),
    }
}

/// Where the image is pushed: `-o type=registry,name=...` (its names, else the `-t` names), and
/// every `-t` name with `--push`; each once.
pub fn push_destinations(
    outputs: &[OutputSpec],
    names: &[ImageName],
    push: bool,
) -> Result<Vec<ImageName>, String> {
    let mut push_to = Vec::new();
    for spec in outputs.iter().filter(|o| o.kind == OutputKind::Registry) {
        let mut spec_names = Vec::new();
        for name in &spec.names {
            spec_names.push(ImageName::parse(name).map_err(|e| format!("-o name={name}: {e}"))?);
        }
        if spec_names.is_empty() {
            spec_names = names.to_vec();
        }
        if spec_names.is_empty() {
            return Err("-o type=registry needs name=NAME (or -t NAME)".into());
        }
        push_to.extend(spec_names);
    }
    if push {
        if names.is_empty() {
            return Err("--push needs -t NAME: the name says where to push".into());
        }
        push_to.extend(names.iter().cloned());
    }
    let mut seen = std::collections::BTreeSet::new();
    push_to.retain(|name| seen.insert(name.to_string()));
    Ok(push_to)
}

/// The most layers `docker load` accepts.
pub const DOCKER_MAX_LAYERS: usize = 125;

/// A warning for an image docker cannot load (more than [`DOCKER_MAX_LAYERS`] layers) written
/// for docker; `None` otherwise.
pub fn docker_layer_warning(outputs: &[OutputSpec], layers: usize) -> Option<String> {
    (outputs.iter().any(|o| o.kind == OutputKind::Docker) && layers > DOCKER_MAX_LAYERS).then(|| {
        format!("the image has {layers} layers; docker cannot load more than {DOCKER_MAX_LAYERS} (merge steps to have fewer)")
    })
}

/// Writes a multi-platform build (`built.platforms`, `built.manifest` its index) to `spec`'s
/// destination, as buildx does: `type=oci` is one layout holding the index, `type=local`,
/// `type=tar` and `type=layers` put each platform under a `linux_arm64/`-style directory, and
/// `type=docker` is refused (`docker load` takes images, not an index).
pub fn export_platforms(
    spec: &OutputSpec,
    built: &Built,
    store: &Store,
    names: &[ImageName],
) -> Result<(), BuildError> {
    let subdir = |image: &Built| {
        let platform = image.manifest.platform.clone().unwrap_or_default();
        crate::index::platform_dir_name(&platform)
    };
    match spec.kind {
        OutputKind::Docker => Err(BuildError::Output(format!(
            "-o type=docker holds one image and docker load cannot take an image index; this build has {} platforms: use type=oci (an index), build one --platform for docker, or push with --push",
            built.platforms.len()
        ))),
        OutputKind::Registry => Err(BuildError::Output(
            "type=registry is pushed by the caller, with a registry client".into(),
        )),
        // The archive writer takes the index as it takes one image (see kiln-oci's index_out).
        OutputKind::Oci => export(spec, built, store, names),
        OutputKind::Local | OutputKind::Layers => {
            let Destination::File(dir) = &spec.destination else {
                return Err(BuildError::Output("this output needs dest=DIR".into()));
            };
            fs::create_dir_all(dir).map_err(io_at(dir))?;
            if spec.kind == OutputKind::Local && fs::read_dir(dir).map_err(io_at(dir))?.next().is_some() {
                return Err(BuildError::Output(format!(
                    "type=local: {} is not empty",
                    dir.display()
                )));
            }
            for image in &built.platforms {
                let one = OutputSpec {
                    destination: Destination::File(dir.join(subdir(image))),
                    ..spec.clone()
                };
                export(&one, image, store, names)?;
            }
            Ok(())
        }
        OutputKind::Tar => {
            let work = store.work_dir().map_err(BuildError::Store)?;
            let tree = work.path().join("tree");
            for image in &built.platforms {
                crate::lookup::ensure_unpacked(store, &image.layers, &image.config.rootfs.diff_ids)?;
                let part = tree.join(subdir(image));
                fs::create_dir_all(&part).map_err(io_at(&part))?;
                flatten(&rootfs_of(image), &part, Materialize::Hardlink)?;
            }
            let epoch = built.source_date_epoch;
            write_to(&spec.destination, |out| {
                let entries =
                    kiln_layer::list_entries(&tree).map_err(crate::ExecError::layer("type=tar"))?;
                kiln_layer::write_tar(entries.into_iter().map(Ok), epoch, out.writer())
                    .map_err(|e| crate::ExecError::layer("type=tar")(e).into())
            })
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
        assert_eq!(
            OutputSpec::parse("type=local,dest=x").unwrap().kind,
            OutputKind::Local
        );
        assert!(OutputSpec::parse("type=layers,dest=-").is_err());
        assert_eq!(
            OutputSpec::parse("type=oci,dest=x,compression=zstd,compression-level=19")
                .unwrap()
                .compression,
            Some(kiln_layer::Compression::Zstd { level: 19 })
        );
        assert_eq!(
            OutputSpec::parse("type=oci,dest=x,compression-level=9")
                .unwrap()
                .compression,
            Some(kiln_layer::Compression::Gzip { level: 9 })
        );
        assert!(OutputSpec::parse("type=oci,dest=x,compression=lz4").is_err());
        assert!(
            OutputSpec::parse("type=oci,dest=x,compression=gzip,compression-level=12").is_err()
        );
        assert!(OutputSpec::parse("type=registry,dest=x")
            .unwrap_err()
            .contains("name=NAME"));
        let push = OutputSpec::parse("type=registry,name=127.0.0.1:5000/a:1").unwrap();
        assert_eq!(push.kind, OutputKind::Registry);
        assert_eq!(push.names, ["127.0.0.1:5000/a:1"]);
        assert_eq!(
            OutputSpec::parse("type=image,name=a,push=true")
                .unwrap()
                .kind,
            OutputKind::Registry
        );
        assert!(OutputSpec::parse("type=image,name=a").is_err());
    }
}
