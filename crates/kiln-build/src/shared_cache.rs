//! The build cache, shared between machines. `--cache-to` writes a build's cache records with
//! their layers as a plain OCI image manifest — to a registry, or to an OCI layout directory —
//! and `--cache-from` reads one back, so a build on an empty store finds its steps there and
//! runs none of them. It works because cache keys hold only content (base manifest digests,
//! file hashes, instructions, arguments), never a path or a time of this machine.
//!
//! The manifest's config blob ([`CACHE_CONFIG_MEDIA_TYPE`]) lists the records: key → layer
//! (digest, diff_id, size, media type), instruction and creation time; its layers are those
//! layers, so every registry keeps the blobs alive. With `cache-mounts=true`, the contents of
//! the build's `RUN --mount=type=cache` directories travel too, one gzip tar each (annotated
//! with the mount's id), up to a size cap. `type=inline` puts the records of an image's own
//! layers into its config instead (field `dev.kiln.cache.v1`).

pub use crate::cache::{CacheError, ExportInput, ExportReport};
use crate::{BuildError, ExecError};
use kiln_oci::{
    media_types, Descriptor, Digest, ImageConfig, ImageName, Index, Manifest, VerifyingReader,
};
use kiln_plan::Platform;
use kiln_registry::Progress as TransferSink;
use kiln_registry::Registry;
use kiln_store::{CacheRecord, LayerRecord, Store};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The media type of a cache manifest's config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
/// Names the cache mount a layer of a cache manifest holds.
pub const MOUNT_ID_ANNOTATION: &str = "dev.kiln.cache-mount.id";
/// The name of the cache manifest in a `type=local` layout directory.
const LAYOUT_REF: &str = "kiln-cache";
/// The default cap on the cache mounts an export carries.
const DEFAULT_MOUNTS_MAX: u64 = 1 << 30;

/// Which records an export carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Only the layers of the image built.
    Min,
    /// Every layer of every stage the build ran, so multi-stage builds hit too.
    #[default]
    Max,
}

/// Where a shared cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// A registry reference (`type=registry,ref=`, or a bare name).
    Registry(ImageName),
    /// An OCI image layout directory.
    Local(PathBuf),
    /// In the built image's own config.
    Inline,
}

/// `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    /// Where it is written.
    pub location: CacheLocation,
    /// `mode=min|max`.
    pub mode: CacheMode,
    /// Carry the contents of the build's cache mounts, up to `mounts_max` bytes in all.
    pub mounts: bool,
    /// `cache-mounts-max=`: the most bytes of cache mounts carried.
    pub mounts_max: u64,
    /// A failed export only warns.
    pub ignore_error: bool,
}

/// `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImport {
    /// Where it is read from.
    pub location: CacheLocation,
}

/// Splits buildx's `key=value,key=value` form.
fn fields(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|f| !f.trim().is_empty())
        .map(|field| {
            field
                .split_once('=')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .ok_or_else(|| format!("expected key=value, got {field:?}"))
        })
        .collect()
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("{key}={other:?}: expected true or false")),
    }
}

/// `512m`, `2g`, `1048576`, `1GiB`.
pub fn parse_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let digits: String = lower.chars().take_while(char::is_ascii_digit).collect();
    let number: u64 = digits.parse().ok()?;
    let unit = match lower[digits.len()..]
        .trim_end_matches("ib")
        .trim_end_matches('b')
    {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(unit)
}

fn registry_ref(value: &str) -> Result<CacheLocation, String> {
    ImageName::parse(value)
        .map(CacheLocation::Registry)
        .map_err(|e| format!("ref={value}: {e}"))
}

impl CacheExport {
    /// `type=registry,ref=NAME[,mode=min|max][,cache-mounts=true][,cache-mounts-max=SIZE]`,
    /// `type=local,dest=DIR[,...]`, `type=inline`.
    pub fn parse(text: &str) -> Result<CacheExport, String> {
        let mut kind = None;
        let mut reference = None;
        let mut dest = None;
        let mut export = CacheExport {
            location: CacheLocation::Inline,
            mode: CacheMode::Max,
            mounts: false,
            mounts_max: DEFAULT_MOUNTS_MAX,
            ignore_error: false,
        };
        for (key, value) in fields(text)? {
            match key.as_str() {
                "type" => kind = Some(value),
                "ref" => reference = Some(value),
                "dest" => dest = Some(value),
                "mode" => {
                    export.mode = match value.as_str() {
                        "min" => CacheMode::Min,
                        "max" => CacheMode::Max,
                        other => return Err(format!("mode={other:?}: expected min or max")),
                    }
                }
                "cache-mounts" => export.mounts = parse_bool(&key, &value)?,
                "cache-mounts-max" => {
                    export.mounts_max = parse_size(&value)
                        .ok_or_else(|| format!("cache-mounts-max={value:?}: not a size"))?
                }
                "ignore-error" => export.ignore_error = parse_bool(&key, &value)?,
                // What kiln always does: OCI media types in a plain image manifest.
                "oci-mediatypes" | "image-manifest" | "compression" => {}
                other => return Err(format!("unknown cache option {other:?}")),
            }
        }
        export.location = match kind.as_deref() {
            Some("registry") => registry_ref(
                &reference.ok_or("type=registry needs ref=NAME (a registry reference)")?,
            )?,
            Some("local") => {
                CacheLocation::Local(PathBuf::from(dest.ok_or("type=local needs dest=DIR")?))
            }
            Some("inline") => CacheLocation::Inline,
            Some(other) => {
                return Err(format!(
                    "cache type {other:?} is not known (use registry, local or inline)"
                ))
            }
            None => return Err("needs type=registry, local or inline".into()),
        };
        if export.location == CacheLocation::Inline && export.mounts {
            return Err("cache-mounts=true needs type=registry or type=local".into());
        }
        Ok(export)
    }
}

impl CacheImport {
    /// `type=registry,ref=NAME`, `type=local,src=DIR`, or a bare image name (docker's
    /// `--cache-from IMAGE`, for an image with an inline cache or a cache manifest).
    pub fn parse(text: &str) -> Result<CacheImport, String> {
        if !text.contains('=') {
            return Ok(CacheImport {
                location: registry_ref(text)?,
            });
        }
        let mut kind = None;
        let mut reference = None;
        let mut src = None;
        for (key, value) in fields(text)? {
            match key.as_str() {
                "type" => kind = Some(value),
                "ref" => reference = Some(value),
                "src" => src = Some(value),
                "digest" | "tag" => {}
                other => return Err(format!("unknown cache option {other:?}")),
            }
        }
        let location = match kind.as_deref() {
            Some("registry") | None if reference.is_some() => {
                registry_ref(reference.as_deref().unwrap_or_default())?
            }
            Some("registry") => return Err("type=registry needs ref=NAME".into()),
            Some("local") => {
                CacheLocation::Local(PathBuf::from(src.ok_or("type=local needs src=DIR")?))
            }
            Some(other) => {
                return Err(format!(
                    "cache type {other:?} is not known (use registry or local)"
                ))
            }
            None => return Err("needs type=registry,ref=NAME or type=local,src=DIR".into()),
        };
        Ok(CacheImport { location })
    }
}

/// A cache record as it travels: no machine's paths, no explanation parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRecord {
    /// The step's key.
    pub key: String,
    /// The layer it produced.
    pub layer: LayerRecord,
    /// The instruction, for the image history.
    pub created_by: String,
    /// When the layer was made (Unix seconds).
    pub created: i64,
}

/// A cache mount's contents as they travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedMount {
    /// The cache mount's id.
    pub id: String,
    /// The directory's contents as one layer.
    pub layer: LayerRecord,
}

/// The cache manifest's config blob (and the inline cache's value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheDocument {
    /// The step records.
    #[serde(default)]
    pub records: Vec<SharedRecord>,
    /// The cache mounts (with `cache-mounts=true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<SharedMount>,
}

impl CacheDocument {
    /// The records of a build to carry: every one (`max`), or only those of the image's layers
    /// (`min`); each key once.
    pub fn select(records: &[CacheRecord], image_layers: &[Descriptor], mode: CacheMode) -> Self {
        let in_image: BTreeSet<&str> = image_layers.iter().map(|l| l.digest.as_str()).collect();
        let mut seen = BTreeSet::new();
        let records = records
            .iter()
            .filter_map(|r| Some((r, r.layer.as_ref()?)))
            .filter(|(_, layer)| mode == CacheMode::Max || in_image.contains(layer.digest.as_str()))
            .filter(|(r, _)| seen.insert(r.key.clone()))
            .map(|(r, layer)| SharedRecord {
                key: r.key.clone(),
                layer: layer.clone(),
                created_by: r.created_by.clone(),
                created: r.created,
            })
            .collect();
        CacheDocument {
            records,
            mounts: Vec::new(),
        }
    }
}

fn layer_descriptor(layer: &LayerRecord) -> Result<Descriptor, ExecError> {
    let digest = Digest::parse(&layer.digest).map_err(ExecError::oci(&layer.digest))?;
    Ok(Descriptor::new(
        layer.media_type.clone(),
        digest,
        layer.size,
    ))
}

/// Writes `export` (registry or local; inline is the build's job) from a finished build.
pub fn export(
    export: &CacheExport,
    input: &ExportInput,
    registry: Option<&Registry>,
    progress: TransferSink,
) -> Result<ExportReport, BuildError> {
    let store = input.store;
    let mut document = CacheDocument::select(input.records, input.image_layers, export.mode);
    let mut report = ExportReport {
        records: document.records.len(),
        ..ExportReport::default()
    };
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    for record in &document.records {
        if seen.insert(record.layer.digest.clone()) {
            layers.push(layer_descriptor(&record.layer)?);
        }
    }
    report.layers = layers.len();
    if export.mounts {
        let mut budget = export.mounts_max;
        for id in input.mount_ids {
            match pack_mount(store, id, budget)? {
                Packed::Layer(layer) => {
                    budget = budget.saturating_sub(layer.size);
                    let mut descriptor = layer_descriptor(&layer)?;
                    descriptor
                        .annotations
                        .insert(MOUNT_ID_ANNOTATION.to_string(), id.clone());
                    layers.push(descriptor);
                    document.mounts.push(SharedMount {
                        id: id.clone(),
                        layer,
                    });
                    report.mounts += 1;
                }
                Packed::Empty => {}
                Packed::TooBig => report.mounts_skipped.push(id.clone()),
            }
        }
    }
    let config_bytes = serde_json::to_vec(&document).map_err(|e| {
        ExecError::oci("cache document")(kiln_oci::Error::Json {
            what: "cache document".into(),
            source: e,
        })
    })?;
    let config_digest = store.put_blob(&config_bytes)?;
    let config = Descriptor::new(
        CACHE_CONFIG_MEDIA_TYPE,
        config_digest,
        config_bytes.len() as u64,
    );
    let manifest = Manifest::new(config, layers);
    let manifest_bytes =
        kiln_oci::to_canonical_json(&manifest).map_err(ExecError::oci("cache manifest"))?;
    let manifest_digest = store.put_blob(&manifest_bytes)?;
    let descriptor = Descriptor::new(
        media_types::OCI_MANIFEST,
        manifest_digest,
        manifest_bytes.len() as u64,
    );
    match &export.location {
        CacheLocation::Registry(name) => {
            let registry = registry.ok_or(BuildError::Internal(
                "--cache-to type=registry: no registry client",
            ))?;
            registry
                .push(store, &descriptor, name, progress)
                .map_err(|source| BuildError::CachePush {
                    reference: name.to_string(),
                    source: Box::new(source),
                })?;
        }
        CacheLocation::Local(dir) => write_layout(store, dir, &descriptor, &manifest)?,
        CacheLocation::Inline => {}
    }
    Ok(report)
}

enum Packed {
    Layer(LayerRecord),
    Empty,
    TooBig,
}

/// A cache mount's directory as one gzip tar in the store, unless it is empty or its files
/// pass `budget` bytes (compressed, it would still be too big to be worth the transfer).
fn pack_mount(store: &Store, id: &str, budget: u64) -> Result<Packed, BuildError> {
    let cache = store.cache_mount(id)?;
    let dir = cache.dir().to_path_buf();
    if !dir.is_dir() {
        return Ok(Packed::Empty);
    }
    let mut total = 0u64;
    let mut entries = 0usize;
    for entry in walkdir::WalkDir::new(&dir).min_depth(1) {
        let entry = entry.map_err(|e| BuildError::Io {
            path: e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.clone()),
            source: e.into(),
        })?;
        entries += 1;
        if let Ok(meta) = entry.metadata() {
            total = total.saturating_add(meta.len());
        }
    }
    if entries == 0 {
        return Ok(Packed::Empty);
    }
    if total > budget {
        return Ok(Packed::TooBig);
    }
    // Shared, as RUN steps that share the cache take it: a `locked` user is not mid-write.
    cache.lock_shared()?;
    let file = store.blob_writer()?;
    let options = kiln_layer::LayerOptions {
        source_date_epoch: Some(0),
        ..kiln_layer::LayerOptions::default()
    };
    let (layer, file) = kiln_layer::write_layer(&dir, &options, file)
        .map_err(ExecError::layer(format!("cache mount {id}")))?;
    let digest = Digest::parse(&layer.digest).map_err(ExecError::oci(&layer.digest))?;
    store.commit_blob(file, &digest)?;
    Ok(Packed::Layer(LayerRecord {
        digest: layer.digest,
        diff_id: layer.diff_id,
        size: layer.size,
        media_type: layer.media_type.to_string(),
    }))
}

fn io_at(path: &Path, source: std::io::Error) -> BuildError {
    BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the cache manifest and its blobs as an OCI layout in `dir`: blobs already there
/// (with the right size) are kept; `index.json` is replaced last, atomically, keeping the
/// layout's other images. Files are 0644: a cache directory is for other users and machines.
fn write_layout(
    store: &Store,
    dir: &Path,
    descriptor: &Descriptor,
    manifest: &Manifest,
) -> Result<(), BuildError> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| io_at(&blobs, e))?;
    let publish = |temp: tempfile::NamedTempFile, path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file().sync_all().map_err(|e| io_at(path, e))?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| io_at(path, e))?;
        temp.persist(path).map_err(|e| io_at(path, e.error))?;
        Ok::<(), BuildError>(())
    };
    let sizes: BTreeMap<&Digest, u64> = [
        (&descriptor.digest, descriptor.size),
        (&manifest.config.digest, manifest.config.size),
    ]
    .into_iter()
    .chain(manifest.layers.iter().map(|l| (&l.digest, l.size)))
    .collect();
    for (digest, size) in sizes {
        let path = dir.join(digest.blob_path());
        // Its digest is checked when it is read back.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size) {
            continue;
        }
        let mut temp = tempfile::NamedTempFile::new_in(&blobs).map_err(|e| io_at(&blobs, e))?;
        let mut source = store.open_blob(digest)?;
        std::io::copy(&mut source, &mut temp).map_err(|e| io_at(&path, e))?;
        publish(temp, &path)?;
    }
    let mut entry = descriptor.clone();
    entry.annotations.insert(
        kiln_oci::annotations::REF_NAME.to_string(),
        LAYOUT_REF.to_string(),
    );
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Descriptor> = read_bounded(&index_path)
        .ok()
        .and_then(|bytes| kiln_oci::from_json_slice::<Index>(&bytes).ok())
        .map(|index| index.manifests)
        .unwrap_or_default();
    manifests.retain(|m| m.ref_name() != Some(LAYOUT_REF));
    manifests.push(entry);
    let index_bytes = kiln_oci::to_canonical_json(&Index::new(manifests))
        .map_err(ExecError::oci("cache index"))?;
    let layout = dir.join("oci-layout");
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_at(dir, e))?;
    std::io::Write::write_all(&mut temp, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| io_at(&layout, e))?;
    publish(temp, &layout)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_at(dir, e))?;
    std::io::Write::write_all(&mut temp, &index_bytes).map_err(|e| io_at(dir, e))?;
    publish(temp, &index_path)
}

/// Where an imported cache's blobs come from.
enum Origin {
    Registry {
        registry: Arc<Registry>,
        repository: ImageName,
    },
    Layout(PathBuf),
}

/// A cache read with `--cache-from`: its records by key; a layer's blob is fetched only when
/// its record is hit.
pub struct ImportedCache {
    name: String,
    records: BTreeMap<String, SharedRecord>,
    mounts: Vec<SharedMount>,
    origin: Origin,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn registry_error(error: kiln_registry::RegistryError) -> CacheError {
    CacheError::Registry(Box::new(error))
}

/// JSON documents read from an untrusted source are at most this big.
const MAX_DOCUMENT: u64 = kiln_oci::MAX_JSON_SIZE;

impl ImportedCache {
    /// Reads the cache a `--cache-from` names: a cache manifest, or an image (its config's
    /// inline cache). An image index (a multi-platform image with inline caches) gives the
    /// records of each of `platforms` it holds (each config carries its own platform's); a
    /// platform it lacks only misses. The registry's manifests and configs are checked against
    /// their digests.
    pub fn load(
        import: &CacheImport,
        registry: Option<&Arc<Registry>>,
        platforms: &[Platform],
        store: &Store,
        progress: TransferSink,
    ) -> Result<ImportedCache, CacheError> {
        let document_error = |what: String| move |source| CacheError::Document { what, source };
        match &import.location {
            CacheLocation::Registry(name) => {
                let registry =
                    registry.ok_or(CacheError::Unusable("no registry client".to_string()))?;
                let (_, bytes) = registry.fetch_manifest(name).map_err(registry_error)?;
                let manifests = if is_index(&bytes) {
                    platform_manifests(registry, name, platforms)?
                } else {
                    vec![bytes]
                };
                let mut document = CacheDocument::default();
                for manifest_bytes in manifests {
                    let manifest: Manifest = kiln_oci::from_json_slice(&manifest_bytes)
                        .map_err(document_error(format!("{name}: manifest")))?;
                    if manifest.config.size > MAX_DOCUMENT {
                        return Err(CacheError::Unusable(format!(
                            "the manifest gives its config {} bytes, more than a cache document may have",
                            manifest.config.size
                        )));
                    }
                    registry
                        .fetch_blob(name, &manifest.config, store, progress)
                        .map_err(registry_error)?;
                    let config = store.read_blob(&manifest.config.digest)?;
                    let one = document_of(&manifest, &config)?;
                    document.records.extend(one.records);
                    document.mounts.extend(one.mounts);
                }
                Ok(ImportedCache::new(
                    name.to_string(),
                    document,
                    Origin::Registry {
                        registry: Arc::clone(registry),
                        repository: name.clone(),
                    },
                ))
            }
            CacheLocation::Local(dir) => {
                let index_bytes = read_bounded(&dir.join("index.json"))?;
                let index: Index = kiln_oci::from_json_slice(&index_bytes).map_err(
                    document_error(format!("{}", dir.join("index.json").display())),
                )?;
                let entry = index
                    .manifests
                    .iter()
                    .find(|m| m.ref_name() == Some(LAYOUT_REF))
                    .or(index.manifests.first())
                    .ok_or(CacheError::Unusable(
                        "index.json names no manifest".to_string(),
                    ))?;
                let manifest_bytes = read_layout_blob(dir, entry)?;
                let manifest: Manifest = kiln_oci::from_json_slice(&manifest_bytes)
                    .map_err(document_error(format!("{}: manifest", dir.display())))?;
                let config = read_layout_blob(dir, &manifest.config)?;
                let document = document_of(&manifest, &config)?;
                Ok(ImportedCache::new(
                    dir.display().to_string(),
                    document,
                    Origin::Layout(dir.clone()),
                ))
            }
            CacheLocation::Inline => Err(CacheError::Unusable(
                "a cache is imported from a registry or a directory".to_string(),
            )),
        }
    }

    fn new(name: String, document: CacheDocument, origin: Origin) -> ImportedCache {
        ImportedCache {
            name,
            records: document
                .records
                .into_iter()
                .map(|r| (r.key.clone(), r))
                .collect(),
            mounts: document.mounts,
            origin,
        }
    }

    /// How the cache is named in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The record of `key`, its layer fetched into the store and checked — the blob against
    /// its digest, the tar inside against the diff_id the record claims (the cache is
    /// untrusted: a record must not pair a layer with another layer's files) — as a store
    /// record.
    pub fn hit(
        &self,
        key: &str,
        store: &Store,
        now_nanos: u128,
        progress: TransferSink,
    ) -> Option<Result<CacheRecord, CacheError>> {
        let shared = self.records.get(key)?;
        if !(0..=MAX_CREATED).contains(&shared.created) {
            return Some(Err(CacheError::Unusable(format!(
                "record {key}: creation time {} is out of range",
                shared.created
            ))));
        }
        let checked = self
            .fetch(&shared.layer, store, progress)
            .and_then(|()| check_diff_id(store, &shared.layer));
        Some(checked.map(|()| CacheRecord {
            key: shared.key.clone(),
            layer: Some(shared.layer.clone()),
            snapshot: None,
            created_by: shared.created_by.clone(),
            parts: Vec::new(),
            created: shared.created,
            recorded: now_nanos,
        }))
    }

    fn fetch(
        &self,
        layer: &LayerRecord,
        store: &Store,
        progress: TransferSink,
    ) -> Result<(), CacheError> {
        let descriptor =
            layer_descriptor(layer).map_err(|e| CacheError::Unusable(e.to_string()))?;
        if store.has_blob(&descriptor.digest) {
            return Ok(());
        }
        match &self.origin {
            Origin::Registry {
                registry,
                repository,
            } => registry
                .fetch_blob(repository, &descriptor, store, progress)
                .map_err(registry_error),
            Origin::Layout(dir) => {
                let path = dir.join(descriptor.digest.blob_path());
                let file = std::fs::File::open(&path).map_err(io_error(&path))?;
                let mut reader = VerifyingReader::new(
                    BufReader::new(file),
                    descriptor.digest.clone(),
                    descriptor.size,
                    path.display().to_string(),
                );
                let mut temp = store.blob_writer()?;
                std::io::copy(&mut reader, &mut temp).map_err(io_error(&path))?;
                Ok(store.commit_blob(temp, &descriptor.digest)?)
            }
        }
    }

    /// Puts the cache mounts this cache carries where RUN finds them — only those of `wanted`
    /// (the ids the build's RUN steps name), `max` bytes of blobs at most — unless the store has
    /// a non-empty one of the same id already (local contents are newer). The ids restored,
    /// and those left out for the cap.
    pub fn restore_mounts(
        &self,
        store: &Store,
        wanted: &BTreeSet<String>,
        max: u64,
        progress: TransferSink,
    ) -> Result<(Vec<String>, Vec<String>), CacheError> {
        let occupied = |dir: &Path| std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
        let mut restored = Vec::new();
        let mut skipped = Vec::new();
        let mut budget = max;
        for mount in self.mounts.iter().filter(|m| wanted.contains(&m.id)) {
            let cache = store.cache_mount(&mount.id)?;
            let dir = cache.dir().to_path_buf();
            if occupied(&dir) {
                continue;
            }
            if mount.layer.size > budget {
                skipped.push(mount.id.clone());
                continue;
            }
            budget -= mount.layer.size;
            self.fetch(&mount.layer, store, progress)?;
            cache.lock_exclusive()?;
            // Another build may have filled it while this one waited for the lock.
            if occupied(&dir) {
                continue;
            }
            let work = store.work_dir()?;
            let fresh = work.path().join("mount");
            std::fs::create_dir(&fresh).map_err(io_error(&fresh))?;
            let digest = layer_descriptor(&mount.layer)
                .map_err(|e| CacheError::Unusable(e.to_string()))?
                .digest;
            let blob = store.open_blob(&digest)?;
            crate::unpack::unpack_cache_mount(
                BufReader::new(blob),
                &mount.layer.media_type,
                &fresh,
                &mount.layer.diff_id,
            )
            .map_err(|source| CacheError::Mount {
                id: mount.id.clone(),
                source: Box::new(source),
            })?;
            // An empty directory left by an earlier build gives way.
            let _ = std::fs::remove_dir(&dir);
            std::fs::rename(&fresh, &dir).map_err(io_error(&dir))?;
            restored.push(mount.id.clone());
        }
        Ok((restored, skipped))
    }
}

/// The latest creation time a record may carry: the end of year 9999, as RFC 3339 allows.
const MAX_CREATED: i64 = 253_402_300_799;

/// Checks that a layer blob of the store holds a tar whose digest is `layer.diff_id`.
fn check_diff_id(store: &Store, layer: &LayerRecord) -> Result<(), CacheError> {
    let digest = layer_descriptor(layer)
        .map_err(|e| CacheError::Unusable(e.to_string()))?
        .digest;
    let blob = store.open_blob(&digest)?;
    let actual = kiln_layer::visit_layer(BufReader::new(blob), &layer.media_type, |_, _| Ok(()))
        .map_err(|source| CacheError::Layer {
            layer: layer.digest.clone(),
            source: Box::new(source),
        })?;
    if actual != layer.diff_id {
        return Err(CacheError::WrongLayer {
            layer: layer.digest.clone(),
            actual,
            claimed: layer.diff_id.clone(),
        });
    }
    Ok(())
}

/// The manifests of an index for each of `platforms` it holds, each platform once; the first
/// platform's error when it holds none of them.
fn platform_manifests(
    registry: &Registry,
    name: &ImageName,
    platforms: &[Platform],
) -> Result<Vec<Vec<u8>>, CacheError> {
    let mut manifests: Vec<Vec<u8>> = Vec::new();
    let mut first_error = None;
    for platform in platforms {
        match registry.resolve(name, &platform.to_oci()) {
            Ok(resolved) if !manifests.contains(&resolved.manifest_bytes) => {
                manifests.push(resolved.manifest_bytes);
            }
            Ok(_) => {}
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) if manifests.is_empty() => Err(registry_error(error)),
        _ => Ok(manifests),
    }
}

fn is_index(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .is_some_and(|v| v.get("manifests").is_some())
}

/// The cache document of a manifest: its config if it is a cache manifest, else an image's
/// inline cache.
fn document_of(manifest: &Manifest, config: &[u8]) -> Result<CacheDocument, CacheError> {
    if manifest.config.media_type == CACHE_CONFIG_MEDIA_TYPE {
        return serde_json::from_slice(config).map_err(|source| CacheError::Json {
            what: "cache document",
            source,
        });
    }
    let image: ImageConfig =
        kiln_oci::from_json_slice(config).map_err(|source| CacheError::Document {
            what: "image config".to_string(),
            source,
        })?;
    let inline = image.inline_cache.ok_or(CacheError::Unusable(
        "neither a cache manifest nor an image with an inline cache (--cache-to type=inline)"
            .to_string(),
    ))?;
    serde_json::from_value(inline).map_err(|source| CacheError::Json {
        what: "inline cache",
        source,
    })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, CacheError> {
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(CacheError::Unusable(format!(
            "{}: larger than {MAX_DOCUMENT} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A small blob of a layout directory, checked against its descriptor.
fn read_layout_blob(dir: &Path, descriptor: &Descriptor) -> Result<Vec<u8>, CacheError> {
    let path = dir.join(descriptor.digest.blob_path());
    let bytes = read_bounded(&path)?;
    if descriptor.digest.of_same_kind(&bytes) != descriptor.digest {
        return Err(CacheError::Corrupt {
            path,
            digest: descriptor.digest.to_string(),
        });
    }
    Ok(bytes)
}

/// The inline cache value for an image's config: the records of its layers.
pub fn inline_value(records: &[CacheRecord], image_layers: &[Descriptor]) -> serde_json::Value {
    serde_json::to_value(CacheDocument::select(records, image_layers, CacheMode::Min))
        .unwrap_or(serde_json::Value::Null)
}

impl crate::cache::CacheSource for ImportedCache {
    fn name(&self) -> &str {
        ImportedCache::name(self)
    }

    fn hit(
        &self,
        key: &str,
        store: &Store,
        now_nanos: u128,
        progress: TransferSink,
    ) -> Option<Result<CacheRecord, CacheError>> {
        ImportedCache::hit(self, key, store, now_nanos, progress)
    }
}

/// A `--cache-to` (registry or local), with the client a registry one is written with.
pub struct CacheExporter {
    /// What `--cache-to` asked for.
    pub spec: CacheExport,
    /// The client for a registry cache.
    pub registry: Option<Arc<Registry>>,
}

impl crate::cache::CacheSink for CacheExporter {
    fn name(&self) -> String {
        describe_location(&self.spec.location)
    }

    fn ignore_error(&self) -> bool {
        self.spec.ignore_error
    }

    fn export(
        &self,
        input: &ExportInput,
        progress: TransferSink,
    ) -> Result<ExportReport, BuildError> {
        export(&self.spec, input, self.registry.as_deref(), progress)
    }
}

/// A cache's location as messages name it: the reference, the directory, or `inline`.
pub fn describe_location(location: &CacheLocation) -> String {
    match location {
        CacheLocation::Registry(name) => name.to_string(),
        CacheLocation::Local(dir) => dir.display().to_string(),
        CacheLocation::Inline => "inline".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cache_to_like_buildx() {
        let export = CacheExport::parse("type=registry,ref=127.0.0.1:5000/app:cache,mode=min")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(export.mode, CacheMode::Min);
        assert_eq!(
            export.location,
            CacheLocation::Registry(
                ImageName::parse("127.0.0.1:5000/app:cache").unwrap_or_else(|e| panic!("{e}"))
            )
        );
        let local =
            CacheExport::parse("type=local,dest=/tmp/c,cache-mounts=true,cache-mounts-max=64m")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local.mode, CacheMode::Max, "max is the default");
        assert!(local.mounts);
        assert_eq!(local.mounts_max, 64 << 20);
        assert!(CacheExport::parse("type=inline").is_ok());
        assert!(CacheExport::parse("type=registry").is_err());
        assert!(CacheExport::parse("type=s3,ref=x").is_err());
        assert!(CacheExport::parse("type=local,dest=d,mode=all").is_err());
        assert!(CacheExport::parse("type=inline,cache-mounts=true").is_err());
    }

    #[test]
    fn parses_cache_from_forms() {
        let bare = CacheImport::parse("app:cache").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(bare.location, CacheLocation::Registry(n) if n.to_string() == "docker.io/library/app:cache")
        );
        let local = CacheImport::parse("type=local,src=dir").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local.location, CacheLocation::Local("dir".into()));
        assert!(CacheImport::parse("type=local").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("ten"), None);
    }

    fn record(key: &str, digest: char) -> CacheRecord {
        CacheRecord {
            key: key.into(),
            layer: Some(LayerRecord {
                digest: format!("sha256:{}", digest.to_string().repeat(64)),
                diff_id: format!("sha256:{}", digest.to_string().repeat(64)),
                size: 1,
                media_type: media_types::OCI_LAYER_TAR_GZIP.into(),
            }),
            snapshot: None,
            created_by: "RUN x".into(),
            parts: vec![("slot".into(), "/home/me/Dockerfile#0".into())],
            created: 7,
            recorded: 9,
        }
    }

    #[test]
    fn min_keeps_the_image_layers_and_nothing_of_this_machine() {
        let records = [record("k1", 'a'), record("k2", 'b'), record("k1", 'a')];
        let image = [Descriptor::new(
            media_types::OCI_LAYER_TAR_GZIP,
            Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap_or_else(|e| panic!("{e}")),
            1,
        )];
        let max = CacheDocument::select(&records, &image, CacheMode::Max);
        assert_eq!(max.records.len(), 2, "each key once");
        let min = CacheDocument::select(&records, &image, CacheMode::Min);
        assert_eq!(
            min.records
                .iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>(),
            ["k2"]
        );
        let text = serde_json::to_string(&max).unwrap_or_default();
        assert!(
            !text.contains("/home/me"),
            "no paths of this machine: {text}"
        );
    }

    /// A store holding one real layer, and its record.
    fn store_with_layer(root: &Path) -> (Store, CacheRecord) {
        let store = Store::open(root).unwrap_or_else(|e| panic!("{e}"));
        let tree = root.join("tree");
        std::fs::create_dir(&tree).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(tree.join("f"), "content").unwrap_or_else(|e| panic!("{e}"));
        let file = store.blob_writer().unwrap_or_else(|e| panic!("{e}"));
        let options = kiln_layer::LayerOptions {
            source_date_epoch: Some(0),
            ..kiln_layer::LayerOptions::default()
        };
        let (layer, file) =
            kiln_layer::write_layer(&tree, &options, file).unwrap_or_else(|e| panic!("{e}"));
        let digest = Digest::parse(&layer.digest).unwrap_or_else(|e| panic!("{e}"));
        store
            .commit_blob(file, &digest)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut record = record("k", 'a');
        record.layer = Some(LayerRecord {
            digest: layer.digest,
            diff_id: layer.diff_id,
            size: layer.size,
            media_type: layer.media_type.to_string(),
        });
        (store, record)
    }

    fn exported_cache(dir: &Path) -> (tempfile::TempDir, LayerRecord) {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (store, record) = store_with_layer(root.path());
        let spec = CacheExport::parse(&format!("type=local,dest={}", dir.display()))
            .unwrap_or_else(|e| panic!("{e}"));
        let input = ExportInput {
            store: &store,
            records: std::slice::from_ref(&record),
            image_layers: &[],
            mount_ids: &BTreeSet::new(),
        };
        export(&spec, &input, None, &|_| {}).unwrap_or_else(|e| panic!("{e}"));
        let layer = record.layer.unwrap_or_else(|| panic!("a layer"));
        (root, layer)
    }

    fn import(dir: &Path, store: &Store) -> Result<ImportedCache, CacheError> {
        let spec = CacheImport::parse(&format!("type=local,src={}", dir.display()))
            .unwrap_or_else(|e| panic!("{e}"));
        ImportedCache::load(&spec, None, &[Platform::host()], store, &|_| {})
    }

    #[test]
    fn a_missing_blob_and_a_corrupt_blob_are_different_errors() {
        let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (_source, layer) = exported_cache(cache.path());
        let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(other.path()).unwrap_or_else(|e| panic!("{e}"));
        let imported = import(cache.path(), &store).unwrap_or_else(|e| panic!("{e}"));
        // The layer's blob is gone from the cache: a missing file, named.
        let blob = cache.path().join(
            Digest::parse(&layer.digest)
                .unwrap_or_else(|e| panic!("{e}"))
                .blob_path(),
        );
        std::fs::remove_file(&blob).unwrap_or_else(|e| panic!("{e}"));
        match imported.hit("k", &store, 0, &|_| {}) {
            Some(Err(CacheError::Io { path, source })) => {
                assert_eq!(path, blob);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected a missing file, got {other:?}"),
        }
        // The cache's document no longer matches its digest: a corrupt blob, named.
        let index: Index = kiln_oci::from_json_slice(
            &std::fs::read(cache.path().join("index.json")).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let manifest_path = cache.path().join(index.manifests[0].digest.blob_path());
        let mut bytes = std::fs::read(&manifest_path).unwrap_or_else(|e| panic!("{e}"));
        bytes.push(b' ');
        std::fs::write(&manifest_path, bytes).unwrap_or_else(|e| panic!("{e}"));
        match import(cache.path(), &store) {
            Err(CacheError::Corrupt { path, .. }) => assert_eq!(path, manifest_path),
            Err(other) => panic!("expected a corrupt blob, got {other:?}"),
            Ok(_) => panic!("a corrupt manifest was read"),
        }
    }

    #[test]
    fn a_record_pairing_a_layer_with_another_tar_is_refused_by_name() {
        let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (store, mut record) = store_with_layer(root.path());
        if let Some(layer) = record.layer.as_mut() {
            layer.diff_id = format!("sha256:{}", "f".repeat(64));
        }
        let spec = CacheExport::parse(&format!("type=local,dest={}", cache.path().display()))
            .unwrap_or_else(|e| panic!("{e}"));
        let input = ExportInput {
            store: &store,
            records: std::slice::from_ref(&record),
            image_layers: &[],
            mount_ids: &BTreeSet::new(),
        };
        export(&spec, &input, None, &|_| {}).unwrap_or_else(|e| panic!("{e}"));
        let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fresh = Store::open(other.path()).unwrap_or_else(|e| panic!("{e}"));
        let imported = import(cache.path(), &fresh).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(
                imported.hit("k", &fresh, 0, &|_| {}),
                Some(Err(CacheError::WrongLayer { .. }))
            ),
            "a layer whose tar is not the record's diff_id is refused"
        );
    }
}
