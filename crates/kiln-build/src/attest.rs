//! Supply-chain attestations of a build (`--provenance`, `--sbom`): what the build used is
//! recorded while it runs ([`Recorder`], filled from a few hooks in `build.rs`), then turned
//! into in-toto statements (kiln-attest, kiln-sbom) and attached the way BuildKit attaches them:
//! an attestation manifest beside each image manifest of an image index, or, for
//! `-o type=local`, `provenance.json` and `sbom.spdx.json` beside the tree.
//!
//! [`attach`] works on one image manifest and its platform, so a multi-platform build applies
//! it once per platform and puts every returned entry into its index.

use crate::build::Built;
use crate::recorder::{oci_platform, Recorded};
use crate::rootfs::Rootfs;
use crate::BuildError;
use kiln_attest::{
    attestation_layer, attestation_manifest, provenance_statement, sbom_statement, AttestationForm,
    AttestationLayer, BuildRecord, Material, ProvenanceMode, ProvenanceRequest, Recipe, SecretUse,
    SshUse, StepRecord, Subject,
};
use kiln_oci::{media_types, Descriptor, Platform};
use kiln_plan::{Action, Plan};
use kiln_sbom::{ImageFiles, SbomOptions, Timestamp};
use kiln_store::Store;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The most bytes of one secret read back to keep it out of the attestations.
const SECRET_READ_MAX: u64 = 1 << 20;

/// What to attest and the build facts only the command line knows.
#[derive(Debug, Clone, Default)]
pub struct AttestOptions {
    /// `--provenance` (`None`: off).
    pub provenance: Option<ProvenanceRequest>,
    /// `--sbom=true`.
    pub sbom: bool,
    /// The recipe file: its name as given and the digest of its bytes.
    pub recipe: Option<Recipe>,
    /// `--build-arg` values by name (values written in `mode=max` only).
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// Image reference → `--build-context` name, for named contexts that are local
    /// directories (kiln builds those into images of the store, referenced by digest).
    pub context_names: BTreeMap<String, String>,
    /// When the build started (ignored when `SOURCE_DATE_EPOCH` is set).
    pub started: Option<Timestamp>,
    /// Whether the flags asked for attestations. Only then do filesystem outputs
    /// (`type=local`) get statement files: the default provenance goes into image indexes
    /// alone, so a build that was not asked keeps its local tree as it was.
    pub asked: bool,
}

impl AttestOptions {
    /// Whether anything is to be attested.
    pub fn wanted(&self) -> bool {
        self.provenance.is_some() || self.sbom
    }
}

/// `--attest type=provenance,mode=max` / `--attest type=sbom`: buildx's long form. Returns
/// which attestation it names and the rest of its attributes in the short flag's syntax.
pub fn split_attest_flag(value: &str) -> Result<(&'static str, String), String> {
    let mut kind = None;
    let mut rest = Vec::new();
    for field in value.split(',') {
        match field.trim().split_once('=') {
            Some(("type", "provenance")) => kind = Some("provenance"),
            Some(("type", "sbom")) => kind = Some("sbom"),
            Some(("type", other)) => {
                return Err(format!(
                    "--attest {value}: unknown type {other:?} (provenance or sbom)"
                ))
            }
            _ => rest.push(field.trim()),
        }
    }
    let kind =
        kind.ok_or_else(|| format!("--attest {value}: needs type=provenance or type=sbom"))?;
    let rest = if rest.is_empty() {
        "true".to_string()
    } else {
        rest.join(",")
    };
    Ok((kind, rest))
}

/// The statements of one build, made once and attached to each of its outputs.
pub struct Statements {
    /// `--sbom`: the SPDX document (the statement is made per subject).
    pub sbom: Option<kiln_sbom::SpdxDocument>,
    record: Option<(BuildRecord, ProvenanceMode)>,
}

fn attest_error(
    what: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> BuildError {
    BuildError::Attestation {
        what,
        source: Box::new(e),
    }
}

/// The secrets' values (read back from their sources), to keep them out of every document.
fn secret_values(secrets: &BTreeMap<String, crate::run::SecretSource>) -> Vec<(String, String)> {
    use std::io::Read;
    let mut values = Vec::new();
    for (id, source) in secrets {
        let value = match source {
            crate::run::SecretSource::Env(var) => std::env::var(var).ok(),
            crate::run::SecretSource::File(path) => {
                let mut bytes = Vec::new();
                std::fs::File::open(path)
                    .and_then(|f| f.take(SECRET_READ_MAX).read_to_end(&mut bytes))
                    .ok()
                    .map(|_| String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            // A value with a trailing newline may be written without it too.
            let trimmed = value.trim_end_matches(['\n', '\r']).to_string();
            if !trimmed.is_empty() && trimmed != value {
                values.push((id.clone(), trimmed));
            }
            values.push((id.clone(), value));
        }
    }
    values
}

/// The secrets and SSH agents the plan's RUN steps mount (ids only).
fn mounted_ids(plan: &Plan) -> (Vec<SecretUse>, Vec<SshUse>) {
    let mut secrets = Vec::new();
    let mut ssh = Vec::new();
    for stage in plan.order.iter().filter_map(|i| plan.stages.get(*i)) {
        for step in &stage.steps {
            let Action::Run(run) = &step.action else {
                continue;
            };
            for mount in &run.mounts {
                match mount.kind {
                    kiln_recipe::mount::MountType::Secret => {
                        let id = mount.id.clone().or_else(|| {
                            mount.target.as_deref().and_then(|t| {
                                Path::new(t)
                                    .file_name()
                                    .map(|n| n.to_string_lossy().into_owned())
                            })
                        });
                        if let Some(id) = id {
                            secrets.push(SecretUse {
                                id,
                                optional: !mount.required,
                            });
                        }
                    }
                    kiln_recipe::mount::MountType::Ssh => ssh.push(SshUse {
                        id: mount.id.clone().unwrap_or_else(|| "default".into()),
                        optional: !mount.required,
                    }),
                    _ => {}
                }
            }
        }
    }
    (secrets, ssh)
}

/// Whether no RUN step had the network (the build's default `none`, and no RUN asking for
/// another).
fn hermetic(plan: &Plan, build_options: &crate::build::BuildOptions) -> bool {
    use kiln_recipe::instruction::Network;
    let default_none = build_options.run.network == kiln_sandbox::Network::None;
    plan.order
        .iter()
        .filter_map(|i| plan.stages.get(*i))
        .flat_map(|stage| &stage.steps)
        .all(|step| match &step.action {
            Action::Run(run) => match run.network {
                Network::None => true,
                Network::Host => false,
                Network::Default => default_none,
            },
            _ => true,
        })
}

/// The keyed steps in the plan's order, numbered as the build numbers them.
fn step_records(plan: &Plan, recorded: &Recorded) -> Vec<StepRecord> {
    let mut records = Vec::new();
    let mut number = 1usize;
    for stage in plan.order.iter().filter_map(|i| plan.stages.get(*i)) {
        for step in &stage.steps {
            if let Some((key, cached)) = recorded.steps.get(&number) {
                records.push(StepRecord {
                    id: format!("step{number}"),
                    stage: stage.label(),
                    instruction: crate::image::redact_credentials(&step.instruction.original),
                    cache_key: key.clone(),
                    cached: *cached,
                    inputs: Vec::new(),
                });
            }
            number = number.saturating_add(1);
        }
    }
    records
}

/// Makes the build's statements: the provenance record from what the build recorded, and the
/// SBOM from the final image's package databases.
pub fn statements(
    options: &AttestOptions,
    plan: &Plan,
    built: &Built,
    build_options: &crate::build::BuildOptions,
    store: &Store,
    name: &str,
) -> Result<Statements, BuildError> {
    let epoch = built.source_date_epoch.map(Timestamp);
    let finished = epoch.unwrap_or_else(Timestamp::now);
    let started = epoch.or(options.started).unwrap_or(finished);
    let record = match &options.provenance {
        None => None,
        Some(request) => {
            let (secrets, ssh) = mounted_ids(plan);
            // Local named contexts were built into store images: named as contexts here.
            let materials = built
                .recorded
                .materials
                .iter()
                .map(|material| match material {
                    Material::Image {
                        reference, digest, ..
                    } => match options.context_names.get(reference) {
                        Some(name) => Material::Context {
                            name: name.clone(),
                            digest: digest.clone(),
                        },
                        None => material.clone(),
                    },
                    other => other.clone(),
                })
                .collect();
            let record = BuildRecord {
                builder_id: request
                    .builder_id
                    .clone()
                    .unwrap_or_else(|| "https://example.invalid/kiln".into()),
                builder_version: BTreeMap::from([(
                    "kiln".to_string(),
                    env!("CARGO_PKG_VERSION").to_string(),
                )]),
                frontend: "dockerfile.v0".into(),
                recipe: options.recipe.clone().unwrap_or(Recipe {
                    path: "Dockerfile".into(),
                    digest: kiln_oci::sha256_digest(b""),
                    source_uri: None,
                }),
                build_args: options.build_args.clone(),
                secrets,
                ssh,
                target: options.target.clone(),
                platforms: vec![built.config.platform()],
                builder_platform: oci_platform(&kiln_plan::Platform::host()),
                materials,
                invocation_id: None,
                started,
                finished,
                source_date_epoch: epoch,
                hermetic: hermetic(plan, build_options),
                steps: step_records(plan, &built.recorded),
                redact: secret_values(&build_options.secrets),
            };
            Some((record, request.mode))
        }
    };
    let sbom = if options.sbom {
        crate::lookup::ensure_unpacked(store, &built.layers, &built.config.rootfs.diff_ids)?;
        let image = RootfsImage(Rootfs::new(built.snapshots.clone()));
        let inventory = kiln_sbom::scan(&image).map_err(|e| attest_error("SBOM", e))?;
        let mut sbom_options = SbomOptions::new(
            name,
            format!("kiln-{}", env!("CARGO_PKG_VERSION")),
            finished,
        );
        sbom_options.layer_diff_ids = built
            .config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| d.to_string())
            .collect();
        Some(
            kiln_sbom::spdx_document(&inventory, &sbom_options)
                .map_err(|e| attest_error("SBOM", e))?,
        )
    } else {
        None
    };
    Ok(Statements { sbom, record })
}

impl Statements {
    /// The statements about `subjects`, as attestation layers (provenance first).
    pub fn layers(&self, subjects: &[Subject]) -> Result<Vec<AttestationLayer>, BuildError> {
        let mut layers = Vec::new();
        if let Some((record, mode)) = &self.record {
            let statement = provenance_statement(subjects.to_vec(), record, *mode)
                .map_err(|e| attest_error("provenance", e))?;
            layers.push(attestation_layer(&statement).map_err(|e| attest_error("provenance", e))?);
        }
        if let Some(document) = &self.sbom {
            let statement = sbom_statement(subjects.to_vec(), document);
            layers.push(attestation_layer(&statement).map_err(|e| attest_error("SBOM", e))?);
        }
        Ok(layers)
    }

    /// Whether there is anything to attach.
    pub fn is_empty(&self) -> bool {
        self.record.is_none() && self.sbom.is_none()
    }
}

/// Attaches the statements to one image manifest (`image`, for `platform`): the attestation
/// manifest and its blobs go into the store, and the index entries to add beside the image's
/// own come back (one, platform `unknown/unknown`).
pub fn attach(
    store: &Store,
    statements: &Statements,
    image: &Descriptor,
    platform: &Platform,
    names: &[&str],
) -> Result<Vec<Descriptor>, BuildError> {
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    let subjects = Subject::for_image(names, platform, &image.digest);
    let layers = statements.layers(&subjects)?;
    let attestation = attestation_manifest(image, layers, AttestationForm::OciImage)
        .map_err(|e| attest_error("attestation manifest", e))?;
    for (_, bytes) in attestation.blobs() {
        store.put_blob(bytes).map_err(BuildError::Store)?;
    }
    Ok(vec![attestation.index_entry])
}

/// An image index in the store holding `image` (given its platform) and the attestation
/// entries beside it; returns the index's descriptor.
pub fn image_index(
    store: &Store,
    image: &Descriptor,
    platform: &Platform,
    attestations: Vec<Descriptor>,
    annotations: &crate::annotations::Annotations,
) -> Result<Descriptor, BuildError> {
    let mut entry = image.clone();
    entry.platform = Some(platform.clone());
    crate::index::put_index(store, &[entry], &attestations, annotations)
}

/// The attested form of a build: the index to write or push instead of the bare manifest.
pub struct Attested {
    /// The image index (every platform's image manifest, each with its attestation manifest),
    /// in the store. For one platform it holds the one image; for several it is the build's
    /// index.
    pub index: Descriptor,
    /// The attestation manifests' index entries (recorded in the store beside their images).
    pub entries: Vec<Descriptor>,
    /// The statements of each platform's image, in the order of the build's platforms, for
    /// outputs that write them as files.
    pub statements: Vec<Statements>,
    /// Whether the flags asked for them (see [`AttestOptions::asked`]).
    pub asked: bool,
}

/// Makes and attaches the attestations of a build's images, when any are asked for: one
/// attestation manifest per image (each statement's subject that image), in the order of
/// `plans` (one per platform, `images` built from them). The index is made by `index_of`
/// from the attestation entries: one image's own index, or the build's index of several.
pub fn attest_images(
    options: &AttestOptions,
    plans: &[(kiln_plan::Platform, Plan)],
    images: &[Built],
    build_options: &crate::build::BuildOptions,
    store: &Store,
    names: &[kiln_oci::ImageName],
    index_of: impl FnOnce(&[Descriptor]) -> Result<Descriptor, BuildError>,
) -> Result<Option<Attested>, BuildError> {
    if !options.wanted() {
        return Ok(None);
    }
    let name_strings: Vec<String> = names.iter().map(ToString::to_string).collect();
    let refs: Vec<&str> = name_strings.iter().map(String::as_str).collect();
    let mut entries = Vec::new();
    let mut all_statements = Vec::with_capacity(images.len());
    for ((_, plan), image) in plans.iter().zip(images) {
        let name = name_strings
            .first()
            .cloned()
            .unwrap_or_else(|| format!("kiln-build@{}", image.manifest.digest));
        let statements = statements(options, plan, image, build_options, store, &name)?;
        let platform = image.config.platform();
        entries.extend(attach(
            store,
            &statements,
            &image.manifest,
            &platform,
            &refs,
        )?);
        all_statements.push(statements);
    }
    Ok(Some(Attested {
        index: index_of(&entries)?,
        entries,
        statements: all_statements,
        asked: options.asked,
    }))
}

/// Records the attestations in the store beside the image they are about (for
/// `kiln inspect --provenance/--sbom`).
pub fn record_in_store(store: &Store, attested: &Attested) -> Result<(), BuildError> {
    for entry in &attested.entries {
        store.put_attestations(entry).map_err(BuildError::Store)?;
    }
    Ok(())
}

/// `-o type=local`: `provenance.json` and `sbom.spdx.json` beside the tree in `dir`, their
/// subjects the tree's regular files (path relative to `dir`, sha256 of the content), as
/// BuildKit's local exporter writes them.
pub fn write_local_files(dir: &Path, statements: &Statements) -> Result<(), BuildError> {
    let subjects = tree_subjects(dir)?;
    let mut files = Vec::new();
    if let Some((record, mode)) = &statements.record {
        let statement = provenance_statement(subjects.clone(), record, *mode)
            .map_err(|e| attest_error("provenance", e))?;
        let bytes = statement
            .to_json()
            .map_err(|e| attest_error("provenance", e))?;
        files.push((kiln_attest::PROVENANCE_FILE, bytes));
    }
    if let Some(document) = &statements.sbom {
        let bytes = sbom_statement(subjects, document)
            .to_json()
            .map_err(|e| attest_error("SBOM", e))?;
        files.push((kiln_attest::SBOM_FILE, bytes));
    }
    for (file, bytes) in files {
        let path = dir.join(file);
        if path.symlink_metadata().is_ok() {
            return Err(BuildError::AttestationClash { file });
        }
        std::fs::write(&path, bytes).map_err(|source| BuildError::Io { path, source })?;
    }
    Ok(())
}

/// Every regular file under `dir` (symlinks not followed) as a subject.
fn tree_subjects(dir: &Path) -> Result<Vec<Subject>, BuildError> {
    let mut subjects = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| BuildError::Io {
            path: e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.to_path_buf()),
            source: e.into(),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let mut file = std::fs::File::open(path).map_err(|source| BuildError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut hasher = kiln_oci::DigestHasher::new(kiln_oci::Algorithm::Sha256);
        std::io::copy(&mut file, &mut hasher).map_err(|source| BuildError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let relative = path.strip_prefix(dir).unwrap_or(path);
        subjects.push(Subject::new(
            relative.to_string_lossy().into_owned(),
            &hasher.finish(),
        ));
    }
    Ok(subjects)
}

/// The built image's union view, as the SBOM scanner reads it.
struct RootfsImage(Rootfs);

impl RootfsImage {
    fn found(&self, path: &Path) -> Option<crate::rootfs::Found> {
        self.0.resolve(path, true).ok()?.1
    }
}

impl ImageFiles for RootfsImage {
    fn read(&self, path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let Some(found) = self.found(path) else {
            return Ok(None);
        };
        if !found.meta.is_file() {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&found.path)?
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    fn list(&self, path: &Path) -> std::io::Result<Option<Vec<OsString>>> {
        let Ok((relative, Some(found))) = self.0.resolve(path, true) else {
            return Ok(None);
        };
        if !found.meta.is_dir() {
            return Ok(None);
        }
        Ok(Some(self.0.list(&relative)))
    }

    fn layer_of(&self, path: &Path) -> Option<usize> {
        let found = self.found(path)?;
        let layers: &[PathBuf] = self.0.layers();
        layers
            .iter()
            .rposition(|layer| found.path.starts_with(layer))
    }
}

/// Whether `--provenance` is on when not given: as buildx, a minimal provenance is attached
/// when the result is an image index that keeps it — an OCI archive or a push. The store's
/// own image, `type=docker` (what `docker load` takes), and the filesystem outputs stay plain
/// unless asked. `BUILDX_NO_DEFAULT_ATTESTATIONS` (or `KILN_NO_DEFAULT_ATTESTATIONS`) set to a
/// non-empty value turns the default off, as in buildx.
pub fn provenance_by_default(outputs: &[crate::output::OutputSpec], pushing: bool) -> bool {
    let disabled = [
        "BUILDX_NO_DEFAULT_ATTESTATIONS",
        "KILN_NO_DEFAULT_ATTESTATIONS",
    ]
    .iter()
    .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0" && v != "false"));
    !disabled
        && (pushing
            || outputs
                .iter()
                .any(|o| o.kind == crate::output::OutputKind::Oci))
}

/// The image an output writes: an OCI archive gets the attested index; every other output
/// the plain image (`type=docker` is what `docker load` reads, one manifest).
pub fn image_for_output<'a>(
    spec: &crate::output::OutputSpec,
    built: &'a Built,
    attested: Option<&Attested>,
) -> std::borrow::Cow<'a, Built> {
    match attested {
        Some(attested) if spec.kind == crate::output::OutputKind::Oci => {
            let mut indexed = built.clone();
            indexed.manifest = attested.index.clone();
            std::borrow::Cow::Owned(indexed)
        }
        _ => std::borrow::Cow::Borrowed(built),
    }
}

/// After an output of one platform's image is written: `type=local` gets the statement files
/// beside the tree when attestations were asked for.
pub fn after_output(
    spec: &crate::output::OutputSpec,
    attested: Option<&Attested>,
) -> Result<(), BuildError> {
    match (attested, spec.kind, &spec.destination) {
        (
            Some(attested),
            crate::output::OutputKind::Local,
            crate::output::Destination::File(dir),
        ) if attested.asked => attested
            .statements
            .iter()
            .try_for_each(|statements| write_local_files(dir, statements)),
        _ => Ok(()),
    }
}

/// `--provenance`, `--sbom` and `--attest` read into what to attest; `pushing` and `outputs`
/// decide the default (see [`provenance_by_default`]). A later flag wins over an earlier one.
pub fn read_flags(
    provenance: Option<&str>,
    sbom: Option<&str>,
    attest: &[String],
    outputs: &[crate::output::OutputSpec],
    pushing: bool,
) -> Result<(Option<ProvenanceRequest>, bool), String> {
    let mut provenance_value = provenance.map(str::to_string);
    let mut sbom_value = sbom.map(str::to_string);
    for value in attest {
        match split_attest_flag(value)? {
            ("provenance", rest) => provenance_value = Some(rest),
            (_, rest) => sbom_value = Some(rest),
        }
    }
    let provenance = match provenance_value {
        Some(value) => kiln_attest::parse_provenance_flag(&value).map_err(|e| e.to_string())?,
        None if provenance_by_default(outputs, pushing) => Some(ProvenanceRequest {
            mode: ProvenanceMode::Min,
            builder_id: None,
        }),
        None => None,
    };
    let sbom = match sbom_value {
        Some(value) => kiln_attest::parse_sbom_flag(&value).map_err(|e| e.to_string())?,
        None => false,
    };
    Ok((provenance, sbom))
}

/// Local-directory named contexts as kiln rewrites them (`NAME=docker-image://REF`, REF an
/// image of the store by digest): REF → NAME, so the provenance names them as contexts.
pub fn context_names(
    build_contexts: &[String],
    local_repository: &str,
) -> BTreeMap<String, String> {
    build_contexts
        .iter()
        .filter_map(|item| {
            let (name, value) = item.split_once('=')?;
            let reference = value.strip_prefix("docker-image://")?;
            reference
                .starts_with(&format!("{local_repository}@"))
                .then(|| (reference.to_string(), name.to_string()))
        })
        .collect()
}

/// What `kiln push` sends for an image of the store: the image index with the attestations
/// `kiln build` recorded beside it, or the image manifest itself when there are none.
pub fn pushed_form(store: &Store, manifest: &Descriptor) -> Result<Descriptor, BuildError> {
    if !media_types::is_manifest(&manifest.media_type) {
        return Ok(manifest.clone());
    }
    let Some(entry) = store
        .attestations_for(&manifest.digest)
        .map_err(BuildError::Store)?
    else {
        return Ok(manifest.clone());
    };
    let platform = store
        .image(manifest)
        .map_err(BuildError::Store)?
        .config
        .platform();
    let mut image = manifest.clone();
    image.annotations.clear();
    image_index(
        store,
        &image,
        &platform,
        vec![entry],
        &crate::annotations::Annotations::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::OutputSpec;

    #[test]
    fn attest_flags_in_buildx_long_form() {
        assert_eq!(
            split_attest_flag("type=provenance,mode=max").unwrap(),
            ("provenance", "mode=max".to_string())
        );
        assert_eq!(
            split_attest_flag("type=sbom").unwrap(),
            ("sbom", "true".to_string())
        );
        assert!(split_attest_flag("type=vex").is_err());
        assert!(split_attest_flag("mode=max").is_err());
        let (provenance, sbom) = read_flags(
            Some("false"),
            None,
            &["type=provenance,mode=max".into(), "type=sbom".into()],
            &[],
            false,
        )
        .unwrap();
        assert_eq!(provenance.unwrap().mode, ProvenanceMode::Max);
        assert!(sbom);
        assert!(read_flags(Some("mode=medium"), None, &[], &[], false)
            .unwrap_err()
            .contains("--provenance"));
    }

    #[test]
    fn provenance_defaults_follow_the_output() {
        let oci = [OutputSpec::parse("type=oci,dest=x.tar").unwrap()];
        let docker = [OutputSpec::parse("type=docker,dest=x.tar").unwrap()];
        let local = [OutputSpec::parse("type=local,dest=x").unwrap()];
        let min = |outputs: &[OutputSpec], push| {
            read_flags(None, None, &[], outputs, push)
                .unwrap()
                .0
                .map(|r| r.mode)
        };
        assert_eq!(min(&oci, false), Some(ProvenanceMode::Min));
        assert_eq!(min(&[], true), Some(ProvenanceMode::Min));
        assert_eq!(min(&docker, false), None);
        assert_eq!(min(&local, false), None);
        assert_eq!(min(&[], false), None);
        assert!(!read_flags(None, None, &[], &oci, true).unwrap().1);
    }

    #[test]
    fn local_named_contexts_map_back_to_their_names() {
        let contexts = [
            "assets=docker-image://localhost/kiln-build-context@sha256:abc".to_string(),
            "base=docker-image://alpine:3".to_string(),
            "odd".to_string(),
        ];
        let names = context_names(&contexts, "localhost/kiln-build-context");
        assert_eq!(
            names,
            BTreeMap::from([(
                "localhost/kiln-build-context@sha256:abc".to_string(),
                "assets".to_string()
            )])
        );
    }
}
