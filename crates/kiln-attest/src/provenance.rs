//! SLSA provenance v1 (slsa.dev/spec/v1.1/provenance), shaped like BuildKit's so tools that
//! read `docker buildx` provenance find the same fields. What kiln writes:
//!
//! | field | min | max |
//! |---|---|---|
//! | `buildDefinition.buildType` | [`KILN_BUILD_TYPE`] | same |
//! | `…externalParameters.configSource` | recipe `path`, `digest`, `uri` if remote | same |
//! | `…request.frontend`, `target`, `platforms`, `locals` (context names) | yes | yes |
//! | `…request.args` (`build-arg:NAME` → value) | no | yes |
//! | `…request.argNames` (names only) | yes | no |
//! | `…request.secrets`, `ssh` (ids, `optional`; never values) | yes | yes |
//! | `…internalParameters.builderPlatform`, `sourceDateEpoch` | yes | yes |
//! | `…internalParameters.buildConfig.steps` (id, stage, instruction, `cacheKey`, `cached`, `inputs`) | no | yes |
//! | `buildDefinition.resolvedDependencies`: images as `pkg:docker/…` purls, `ADD` URLs, git URLs `#ref` with the commit (`sha1`/`sha256`), local contexts by `name`; all with digests, sorted | yes | yes |
//! | `runDetails.builder.id`, `.version` | yes | yes |
//! | `runDetails.metadata.invocationId`, `startedOn`, `finishedOn` (both `SOURCE_DATE_EPOCH` when set) | yes | yes |
//! | `runDetails.metadata.kiln_completeness` (`request`, `resolvedDependencies`), `kiln_hermetic`, `kiln_reproducible` | yes | yes |
//!
//! The predicate is written with its object keys sorted (it passes through a JSON value for
//! redaction), so its bytes depend only on the content.

use std::collections::{BTreeMap, BTreeSet};

use kiln_oci::{Digest, Platform};
use kiln_sbom::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::redact::{leaked_secret, redact, strip_userinfo};
use crate::{digest_set, docker_purl, platform_string, Error, Result, Statement, Subject};

/// kiln's `buildType`: the structure described here.
pub const KILN_BUILD_TYPE: &str = "https://example.invalid/kiln/docs/attestations.md#provenance-v1";

/// How much the provenance tells (`--provenance=mode=min|max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenanceMode {
    /// Build arg names without values; no steps.
    Min,
    /// Build arg values, and every step with its cache key and whether it was cached.
    Max,
}

/// The recipe file the build started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Its path as given (`Dockerfile`, `docker/app.Dockerfile`).
    pub path: String,
    /// The digest of its bytes.
    pub digest: Digest,
    /// Where it came from when the context is remote (a git or HTTP URL); userinfo is
    /// stripped when written.
    pub source_uri: Option<String>,
}

/// A secret a step mounted: its id only, never its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretUse {
    pub id: String,
    pub optional: bool,
}

/// An SSH agent socket a step mounted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SshUse {
    pub id: String,
    pub optional: bool,
}

/// Something outside the recipe the build used, with the digest it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    /// A base or `COPY --from` image: the reference as written, the manifest digest it
    /// resolved to, and the platform selected.
    Image {
        reference: String,
        digest: Digest,
        platform: Option<Platform>,
    },
    /// An `ADD` URL and the digest of what was downloaded.
    Http { url: String, digest: Digest },
    /// A git source: its URL, the ref asked for (`refs/tags/v1`, a branch) and the commit.
    Git {
        url: String,
        reference: Option<String>,
        commit: String,
    },
    /// A local build context (`context`, or a named context from `--build-context`) and the
    /// digest of its content as the build saw it.
    Context { name: String, digest: Digest },
}

/// One step of the build (`mode=max` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// A stable id for the step within the build (`step3`).
    pub id: String,
    /// The stage it belongs to (its name or index).
    pub stage: String,
    /// The instruction as written, arguments expanded as the build saw them.
    pub instruction: String,
    /// The step's cache key.
    pub cache_key: String,
    /// Whether the step's result came from the cache.
    pub cached: bool,
    /// Ids of the steps whose results it used.
    pub inputs: Vec<String>,
}

/// Everything the builder knows about one build, for its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    /// `runDetails.builder.id`: who built it (a CI run URL, or kiln's default).
    pub builder_id: String,
    /// `runDetails.builder.version`: component → version (`{"kiln": "0.1.0"}`).
    pub builder_version: BTreeMap<String, String>,
    /// The frontend name written in `request.frontend` (`dockerfile.v0`).
    pub frontend: String,
    pub recipe: Recipe,
    /// `--build-arg` values by name (values only in `mode=max`).
    pub build_args: BTreeMap<String, String>,
    pub secrets: Vec<SecretUse>,
    pub ssh: Vec<SshUse>,
    /// `--target`, if given.
    pub target: Option<String>,
    /// The platforms built.
    pub platforms: Vec<Platform>,
    /// The platform kiln ran on.
    pub builder_platform: Platform,
    pub materials: Vec<Material>,
    pub invocation_id: Option<String>,
    pub started: Timestamp,
    pub finished: Timestamp,
    /// `SOURCE_DATE_EPOCH`: when set, it stands for both start and finish so a reproducible
    /// build gives the same provenance.
    pub source_date_epoch: Option<Timestamp>,
    /// Whether no step had network access.
    pub hermetic: bool,
    pub steps: Vec<StepRecord>,
    /// Secret values (and credentials) by id: never written; any occurrence in any string of
    /// the predicate is replaced by `***`. Pass every secret the build was given.
    pub redact: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Predicate {
    #[serde(rename = "buildDefinition")]
    build_definition: BuildDefinition,
    #[serde(rename = "runDetails")]
    run_details: RunDetails,
}

#[derive(Serialize)]
struct BuildDefinition {
    #[serde(rename = "buildType")]
    build_type: String,
    #[serde(rename = "externalParameters")]
    external_parameters: ExternalParameters,
    #[serde(rename = "internalParameters")]
    internal_parameters: InternalParameters,
    #[serde(rename = "resolvedDependencies")]
    resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Serialize)]
struct ExternalParameters {
    #[serde(rename = "configSource")]
    config_source: ConfigSource,
    request: Request,
}

#[derive(Serialize)]
struct ConfigSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
    digest: BTreeMap<String, String>,
    path: String,
}

#[derive(Serialize)]
struct Request {
    frontend: String,
    /// `build-arg:NAME` → value (max only), as BuildKit keys them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    args: BTreeMap<String, String>,
    /// The build arg names, without values (min only).
    #[serde(rename = "argNames", skip_serializing_if = "Vec::is_empty")]
    arg_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    platforms: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<IdEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ssh: Vec<IdEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    locals: Vec<NameEntry>,
}

#[derive(Serialize)]
struct IdEntry {
    id: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    optional: bool,
}

#[derive(Serialize)]
struct NameEntry {
    name: String,
}

#[derive(Serialize)]
struct InternalParameters {
    #[serde(rename = "builderPlatform")]
    builder_platform: String,
    #[serde(rename = "sourceDateEpoch", skip_serializing_if = "Option::is_none")]
    source_date_epoch: Option<String>,
    #[serde(rename = "buildConfig", skip_serializing_if = "Option::is_none")]
    build_config: Option<BuildConfig>,
}

#[derive(Serialize)]
struct BuildConfig {
    steps: Vec<Step>,
}

#[derive(Serialize)]
struct Step {
    id: String,
    stage: String,
    instruction: String,
    #[serde(rename = "cacheKey")]
    cache_key: String,
    cached: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<String>,
}

/// SLSA's ResourceDescriptor (the fields kiln fills).
#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct ResourceDescriptor {
    #[serde(skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    digest: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RunDetails {
    builder: Builder,
    metadata: Metadata,
}

#[derive(Serialize)]
struct Builder {
    id: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    version: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Metadata {
    #[serde(rename = "invocationId", skip_serializing_if = "Option::is_none")]
    invocation_id: Option<String>,
    #[serde(rename = "startedOn")]
    started_on: Timestamp,
    #[serde(rename = "finishedOn")]
    finished_on: Timestamp,
    kiln_completeness: Completeness,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    kiln_hermetic: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    kiln_reproducible: bool,
}

#[derive(Serialize)]
struct Completeness {
    /// Whether `request` holds every parameter (false in min: arg values are left out).
    request: bool,
    /// Whether `resolvedDependencies` lists everything the build read (false when a local
    /// context was used: its files are not tracked one by one).
    #[serde(rename = "resolvedDependencies")]
    resolved_dependencies: bool,
}

fn git_digest(url: &str, commit: &str) -> Result<BTreeMap<String, String>> {
    let commit = commit.trim();
    let algorithm = match commit.len() {
        40 => "sha1",
        64 => "sha256",
        _ => "",
    };
    if algorithm.is_empty() || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidCommit {
            url: strip_userinfo(url),
            commit: commit.chars().take(80).collect(),
        });
    }
    Ok(BTreeMap::from([(
        algorithm.to_string(),
        commit.to_ascii_lowercase(),
    )]))
}

fn resource(material: &Material) -> Result<ResourceDescriptor> {
    Ok(match material {
        Material::Image {
            reference,
            digest,
            platform,
        } => ResourceDescriptor {
            uri: Some(
                docker_purl(reference, platform.as_ref())
                    .unwrap_or_else(|| strip_userinfo(reference)),
            ),
            name: None,
            digest: digest_set(digest),
        },
        Material::Http { url, digest } => ResourceDescriptor {
            uri: Some(strip_userinfo(url)),
            name: None,
            digest: digest_set(digest),
        },
        Material::Git {
            url,
            reference,
            commit,
        } => {
            let mut uri = strip_userinfo(url);
            if let Some(reference) = reference.as_deref().filter(|r| !r.is_empty()) {
                uri = format!("{uri}#{reference}");
            }
            ResourceDescriptor {
                uri: Some(uri),
                name: None,
                digest: git_digest(url, commit)?,
            }
        }
        Material::Context { name, digest } => ResourceDescriptor {
            uri: None,
            name: Some(name.clone()),
            digest: digest_set(digest),
        },
    })
}

/// The SLSA provenance v1 predicate of `record` in `mode`, as JSON with every secret value
/// redacted.
pub fn provenance_predicate(record: &BuildRecord, mode: ProvenanceMode) -> Result<Value> {
    let max = mode == ProvenanceMode::Max;
    let mut resolved = record
        .materials
        .iter()
        .map(resource)
        .collect::<Result<Vec<_>>>()?;
    resolved.sort();
    resolved.dedup();
    let locals: BTreeSet<&str> = record
        .materials
        .iter()
        .filter_map(|m| match m {
            Material::Context { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let secrets: BTreeSet<&SecretUse> = record.secrets.iter().collect();
    let ssh: BTreeSet<&SshUse> = record.ssh.iter().collect();
    let (started, finished) = match record.source_date_epoch {
        Some(epoch) => (epoch, epoch),
        None => (record.started, record.finished),
    };
    let predicate = Predicate {
        build_definition: BuildDefinition {
            build_type: KILN_BUILD_TYPE.into(),
            external_parameters: ExternalParameters {
                config_source: ConfigSource {
                    uri: record.recipe.source_uri.as_deref().map(strip_userinfo),
                    digest: digest_set(&record.recipe.digest),
                    path: record.recipe.path.clone(),
                },
                request: Request {
                    frontend: record.frontend.clone(),
                    args: if max {
                        record
                            .build_args
                            .iter()
                            .map(|(k, v)| (format!("build-arg:{k}"), v.clone()))
                            .collect()
                    } else {
                        BTreeMap::new()
                    },
                    arg_names: if max {
                        Vec::new()
                    } else {
                        record.build_args.keys().cloned().collect()
                    },
                    target: record.target.clone(),
                    platforms: record.platforms.iter().map(platform_string).collect(),
                    secrets: secrets
                        .into_iter()
                        .map(|s| IdEntry {
                            id: s.id.clone(),
                            optional: s.optional,
                        })
                        .collect(),
                    ssh: ssh
                        .into_iter()
                        .map(|s| IdEntry {
                            id: s.id.clone(),
                            optional: s.optional,
                        })
                        .collect(),
                    locals: locals
                        .iter()
                        .map(|name| NameEntry {
                            name: name.to_string(),
                        })
                        .collect(),
                },
            },
            internal_parameters: InternalParameters {
                builder_platform: platform_string(&record.builder_platform),
                source_date_epoch: record.source_date_epoch.map(|t| t.0.to_string()),
                build_config: max.then(|| BuildConfig {
                    steps: record
                        .steps
                        .iter()
                        .map(|step| Step {
                            id: step.id.clone(),
                            stage: step.stage.clone(),
                            instruction: step.instruction.clone(),
                            cache_key: step.cache_key.clone(),
                            cached: step.cached,
                            inputs: step.inputs.clone(),
                        })
                        .collect(),
                }),
            },
            resolved_dependencies: resolved,
        },
        run_details: RunDetails {
            builder: Builder {
                id: strip_userinfo(&record.builder_id),
                version: record.builder_version.clone(),
            },
            metadata: Metadata {
                invocation_id: record.invocation_id.clone(),
                started_on: started,
                finished_on: finished,
                kiln_completeness: Completeness {
                    request: max,
                    resolved_dependencies: locals.is_empty(),
                },
                kiln_hermetic: record.hermetic,
                kiln_reproducible: record.source_date_epoch.is_some(),
            },
        },
    };
    let mut value = serde_json::to_value(&predicate)?;
    redact(&mut value, &record.redact);
    Ok(value)
}

/// The in-toto statement of `record`'s provenance about `subjects`. Its bytes
/// ([`Statement::to_json`]) are checked once more for every secret value.
pub fn provenance_statement(
    subjects: Vec<Subject>,
    record: &BuildRecord,
    mode: ProvenanceMode,
) -> Result<Statement<Value>> {
    let statement = Statement::new(
        subjects,
        crate::SLSA_PROVENANCE_V1,
        provenance_predicate(record, mode)?,
    );
    let bytes = statement.to_json()?;
    if let Some(id) = leaked_secret(&bytes, &record.redact) {
        return Err(Error::SecretInOutput { id: id.to_string() });
    }
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::sha256_digest;

    const SECRET: &str = "hunter2-VERY-secret";

    fn record() -> BuildRecord {
        BuildRecord {
            builder_id: "https://ci.example.com/runs/42".into(),
            builder_version: BTreeMap::from([("kiln".into(), "0.1.0".into())]),
            frontend: "dockerfile.v0".into(),
            recipe: Recipe {
                path: "Dockerfile".into(),
                digest: sha256_digest(b"FROM alpine\n"),
                source_uri: Some("https://bob:pw@git.example.com/app.git#main".into()),
            },
            build_args: BTreeMap::from([
                ("VERSION".into(), "1.2.3".into()),
                // A secret passed by mistake as a build arg value too.
                ("LEAKY".into(), format!("prefix-{SECRET}")),
            ]),
            secrets: vec![SecretUse {
                id: "npmrc".into(),
                optional: false,
            }],
            ssh: vec![SshUse {
                id: "default".into(),
                optional: true,
            }],
            target: Some("release".into()),
            platforms: vec![
                Platform::new("linux", "amd64"),
                Platform::new("linux", "arm64"),
            ],
            builder_platform: Platform::new("linux", "amd64"),
            materials: vec![
                Material::Image {
                    reference: "alpine:3.19".into(),
                    digest: sha256_digest(b"alpine manifest"),
                    platform: Some(Platform::new("linux", "amd64")),
                },
                Material::Http {
                    url: format!("https://user:{SECRET}@downloads.example.com/tool.tar.gz"),
                    digest: sha256_digest(b"tool"),
                },
                Material::Git {
                    url: "https://oauth2:ghp_token@github.com/o/lib.git".into(),
                    reference: Some("refs/tags/v1".into()),
                    commit: "4b220de5058abfd01ff619c9d2ff6b09a049bea0".into(),
                },
                Material::Git {
                    url: "glpat_token@gitlab.example.com:o/other.git".into(),
                    reference: None,
                    commit: "0000000000000000000000000000000000000000000000000000000000000001"
                        .into(),
                },
                Material::Context {
                    name: "context".into(),
                    digest: sha256_digest(b"context"),
                },
                Material::Context {
                    name: "shared".into(),
                    digest: sha256_digest(b"shared"),
                },
            ],
            invocation_id: Some("inv-1".into()),
            started: Timestamp(1_700_000_000),
            finished: Timestamp(1_700_000_100),
            source_date_epoch: None,
            hermetic: false,
            steps: vec![
                StepRecord {
                    id: "step0".into(),
                    stage: "build".into(),
                    instruction: "FROM alpine:3.19".into(),
                    cache_key: "sha256:aaaa".into(),
                    cached: true,
                    inputs: vec![],
                },
                StepRecord {
                    id: "step1".into(),
                    stage: "build".into(),
                    instruction: format!("RUN echo {SECRET} > /dev/null"),
                    cache_key: "sha256:bbbb".into(),
                    cached: false,
                    inputs: vec!["step0".into()],
                },
            ],
            redact: vec![("npmrc".into(), SECRET.into())],
        }
    }

    fn statement_bytes(record: &BuildRecord, mode: ProvenanceMode) -> Vec<u8> {
        let subjects = Subject::for_image(
            &["example.com/app:1"],
            &Platform::new("linux", "amd64"),
            &sha256_digest(b"image manifest"),
        );
        provenance_statement(subjects, record, mode)
            .unwrap()
            .to_json()
            .unwrap()
    }

    #[test]
    fn max_shape() {
        let bytes = statement_bytes(&record(), ProvenanceMode::Max);
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(json["predicateType"], "https://slsa.dev/provenance/v1");
        let definition = &json["predicate"]["buildDefinition"];
        assert_eq!(definition["buildType"], KILN_BUILD_TYPE);
        let source = &definition["externalParameters"]["configSource"];
        assert_eq!(source["path"], "Dockerfile");
        assert_eq!(source["uri"], "https://git.example.com/app.git#main");
        assert_eq!(
            source["digest"]["sha256"],
            sha256_digest(b"FROM alpine\n").hex()
        );
        let request = &definition["externalParameters"]["request"];
        assert_eq!(request["frontend"], "dockerfile.v0");
        assert_eq!(request["args"]["build-arg:VERSION"], "1.2.3");
        assert_eq!(request["args"]["build-arg:LEAKY"], "prefix-***");
        assert!(request.get("argNames").is_none());
        assert_eq!(request["target"], "release");
        assert_eq!(
            request["platforms"],
            serde_json::json!(["linux/amd64", "linux/arm64"])
        );
        assert_eq!(request["secrets"], serde_json::json!([{"id": "npmrc"}]));
        assert_eq!(
            request["ssh"],
            serde_json::json!([{"id": "default", "optional": true}])
        );
        assert_eq!(
            request["locals"],
            serde_json::json!([{"name": "context"}, {"name": "shared"}])
        );
        let internal = &definition["internalParameters"];
        assert_eq!(internal["builderPlatform"], "linux/amd64");
        let steps = internal["buildConfig"]["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0]["cacheKey"], "sha256:aaaa");
        assert_eq!(steps[0]["cached"], true);
        assert_eq!(steps[1]["cached"], false);
        assert_eq!(steps[1]["instruction"], "RUN echo *** > /dev/null");
        assert_eq!(steps[1]["inputs"], serde_json::json!(["step0"]));

        let deps = definition["resolvedDependencies"].as_array().unwrap();
        let uris: Vec<String> = deps
            .iter()
            .map(|d| {
                d.get("uri")
                    .or(d.get("name"))
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            uris,
            [
                "context",
                "shared",
                "gitlab.example.com:o/other.git",
                "https://downloads.example.com/tool.tar.gz",
                "https://github.com/o/lib.git#refs/tags/v1",
                "pkg:docker/alpine@3.19?platform=linux%2Famd64",
            ]
        );
        assert_eq!(
            deps[4]["digest"],
            serde_json::json!({"sha1": "4b220de5058abfd01ff619c9d2ff6b09a049bea0"})
        );
        assert_eq!(
            deps[5]["digest"]["sha256"],
            sha256_digest(b"alpine manifest").hex()
        );

        let run = &json["predicate"]["runDetails"];
        assert_eq!(run["builder"]["id"], "https://ci.example.com/runs/42");
        assert_eq!(run["builder"]["version"]["kiln"], "0.1.0");
        assert_eq!(run["metadata"]["startedOn"], "2023-11-14T22:13:20Z");
        assert_eq!(run["metadata"]["finishedOn"], "2023-11-14T22:15:00Z");
        assert_eq!(run["metadata"]["invocationId"], "inv-1");
        assert_eq!(
            run["metadata"]["kiln_completeness"],
            serde_json::json!({"request": true, "resolvedDependencies": false})
        );
    }

    #[test]
    fn min_has_arg_names_only_and_no_steps() {
        let bytes = statement_bytes(&record(), ProvenanceMode::Min);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("1.2.3"), "{text}");
        assert!(!text.contains("prefix-"), "{text}");
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        let request = &json["predicate"]["buildDefinition"]["externalParameters"]["request"];
        assert!(request.get("args").is_none());
        assert_eq!(request["argNames"], serde_json::json!(["LEAKY", "VERSION"]));
        assert!(json["predicate"]["buildDefinition"]["internalParameters"]
            .get("buildConfig")
            .is_none());
        assert_eq!(
            json["predicate"]["runDetails"]["metadata"]["kiln_completeness"]["request"],
            false
        );
    }

    #[test]
    fn secrets_and_userinfo_never_reach_the_bytes() {
        for mode in [ProvenanceMode::Min, ProvenanceMode::Max] {
            let bytes = statement_bytes(&record(), mode);
            let text = String::from_utf8(bytes).unwrap();
            for forbidden in [
                SECRET,
                "ghp_token",
                "glpat_token",
                "oauth2",
                "bob:pw",
                "user:",
            ] {
                assert!(!text.contains(forbidden), "{mode:?}: {forbidden} in {text}");
            }
        }
    }

    #[test]
    fn source_date_epoch_makes_the_bytes_reproducible() {
        let mut first = record();
        first.source_date_epoch = Some(Timestamp(1_600_000_000));
        let mut second = first.clone();
        second.started = Timestamp(1_800_000_000);
        second.finished = Timestamp(1_800_000_500);
        // Materials and secrets listed in another order give the same document.
        second.materials.reverse();
        second.secrets.reverse();
        let a = statement_bytes(&first, ProvenanceMode::Max);
        let b = statement_bytes(&second, ProvenanceMode::Max);
        assert_eq!(a, b);
        let json: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(
            json["predicate"]["runDetails"]["metadata"]["startedOn"],
            "2020-09-13T12:26:40Z"
        );
        assert_eq!(
            json["predicate"]["runDetails"]["metadata"]["finishedOn"],
            "2020-09-13T12:26:40Z"
        );
    }

    #[test]
    fn bad_git_commit_is_an_error() {
        let mut bad = record();
        bad.materials = vec![Material::Git {
            url: "https://u:p@h/r.git".into(),
            reference: None,
            commit: "main".into(),
        }];
        let err = provenance_predicate(&bad, ProvenanceMode::Min).unwrap_err();
        assert_eq!(
            err.to_string(),
            "git source https://h/r.git: \"main\" is not a commit id"
        );
    }
}
