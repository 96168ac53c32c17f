//! The image config blob (`application/vnd.oci.image.config.v1+json`, or Docker's
//! `application/vnd.docker.container.image.v1+json`, which has the same shape).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::json::{null_default, opt_str_or_seq, str_or_seq};
use crate::{sha256_digest, Digest, Platform};

/// The image config. Serialises in this field order; optional fields are left out when unset,
/// while `config` and `rootfs` are always written (as Docker and BuildKit do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who made the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    /// Operating system version (Windows images).
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    /// Required operating system features (Windows images).
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Execution defaults; `null` in a parsed document reads as the empty config.
    #[serde(default, deserialize_with = "null_default")]
    pub config: ContainerConfig,
    /// The layers' diff_ids, bottom first.
    pub rootfs: RootFs,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    /// How each layer (and each empty step) was made, bottom first.
    pub history: Vec<History>,
    /// kiln's inline build cache (`--cache-to type=inline`): the cache records of this image's
    /// layers, so a later build can use the image as its cache. Other tools ignore the field.
    #[serde(
        rename = "dev.kiln.cache.v1",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inline_cache: Option<serde_json::Value>,
}

impl ImageConfig {
    /// An empty config for `os`/`architecture` with no layers.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> ImageConfig {
        ImageConfig {
            os: os.into(),
            architecture: architecture.into(),
            ..ImageConfig::default()
        }
    }

    /// The platform this config is for.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            variant: self.variant.clone(),
        }
    }

    /// The chain IDs of this image's layers (see [`chain_ids`]).
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.rootfs.diff_ids)
    }
}

/// Execution defaults, with Docker's capitalised keys. Strings and lists that are empty are
/// left out (Go's `omitempty`), except `Entrypoint` and `Cmd`: `None` (not set) is left out,
/// while `Some(vec![])` — Dockerfile `CMD []` — is written as `[]`, because Docker tells the
/// two apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(
        rename = "User",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    /// User (and group) the container runs as: `name`, `uid`, `uid:gid`.
    pub user: String,
    /// `"80/tcp"` → `{}`.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    /// `NAME=value` entries, in order.
    #[serde(
        rename = "Env",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_str_or_seq"
    )]
    /// Executable and arguments the container starts with.
    pub entrypoint: Option<Vec<String>>,
    #[serde(
        rename = "Cmd",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_str_or_seq"
    )]
    /// Default arguments (of the entrypoint, or the command when there is none).
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Volumes",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    /// Mount points for volumes (the values are empty objects).
    pub volumes: BTreeMap<String, EmptyObject>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    /// Working directory of the container's process.
    pub working_dir: String,
    #[serde(
        rename = "Labels",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    /// Image labels.
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    /// Signal that stops the container.
    pub stop_signal: String,
    /// Windows-only in practice; written only when true.
    #[serde(
        rename = "ArgsEscaped",
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "null_default"
    )]
    pub args_escaped: bool,
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    /// How the container's health is checked.
    pub healthcheck: Option<Healthcheck>,
    /// ONBUILD triggers, as their instruction text.
    #[serde(
        rename = "OnBuild",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub on_build: Vec<String>,
    /// SHELL; empty means the platform default.
    #[serde(
        rename = "Shell",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "str_or_seq"
    )]
    pub shell: Vec<String>,
}

/// Docker's HEALTHCHECK. Durations are integer nanoseconds (Go's `time.Duration`); zero means
/// "inherit / default" and is left out, as Docker leaves it out. `Test` is `["NONE"]` to
/// disable a base image's check, or `["CMD", …]` / `["CMD-SHELL", "…"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    #[serde(
        rename = "Test",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "str_or_seq"
    )]
    /// The check: `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    /// Time between checks, in nanoseconds.
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Time a check may take, in nanoseconds.
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// Time the container has to start before failures count, in nanoseconds.
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Time between checks while starting, in nanoseconds.
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Consecutive failures that make the container unhealthy.
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

/// The JSON `{}` that Go writes for `struct{}` map values (ExposedPorts, Volumes). Parsing
/// accepts any object.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EmptyObject {}

/// `rootfs`: the layers' diff IDs, first to last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `"layers"`.
    #[serde(rename = "type")]
    pub fs_type: String,
    /// The diff_ids (digests of the uncompressed layers), bottom first.
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<Digest>,
}

impl RootFs {
    /// A `layers` root filesystem of these diff_ids.
    pub fn layers(diff_ids: Vec<Digest>) -> RootFs {
        RootFs {
            fs_type: "layers".into(),
            diff_ids,
        }
    }
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs::layers(Vec::new())
    }
}

/// One history entry. `empty_layer` entries have no layer in `rootfs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who made the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The instruction that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// A comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "null_default"
    )]
    /// Whether the step made no layer.
    pub empty_layer: bool,
}

/// Chain IDs of a stack of layers: the first is its diff ID, each next one is
/// `sha256(chain_id(n-1) + " " + diff_id(n))`. A chain ID names a layer *with* everything
/// under it, which is what a layer store keys unpacked layers by.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{from_json_slice, to_canonical_json};

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn json(v: &impl Serialize) -> String {
        String::from_utf8(to_canonical_json(v).unwrap()).unwrap()
    }

    #[test]
    fn minimal_config_bytes() {
        let c = ImageConfig::new("linux", "amd64");
        assert_eq!(
            json(&c),
            r#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#
        );
    }

    #[test]
    fn full_config_key_order() {
        let mut c = ImageConfig::new("linux", "arm64");
        c.created = Some("2024-01-02T03:04:05Z".into());
        c.author = Some("kiln".into());
        c.variant = Some("v8".into());
        c.config = ContainerConfig {
            user: "app".into(),
            exposed_ports: [
                ("8080/tcp".to_string(), EmptyObject {}),
                ("53/udp".into(), EmptyObject {}),
            ]
            .into_iter()
            .collect(),
            env: vec!["PATH=/usr/bin".into(), "A=b".into()],
            entrypoint: Some(vec!["/app".into()]),
            cmd: Some(vec!["--serve".into()]),
            volumes: [("/data".to_string(), EmptyObject {})]
                .into_iter()
                .collect(),
            working_dir: "/srv".into(),
            labels: [("z".to_string(), "1".to_string()), ("a".into(), "2".into())]
                .into_iter()
                .collect(),
            stop_signal: "SIGTERM".into(),
            args_escaped: true,
            healthcheck: Some(Healthcheck {
                test: vec!["CMD-SHELL".into(), "curl -f http://localhost/".into()],
                interval: 30_000_000_000,
                timeout: 5_000_000_000,
                start_period: 1_000_000_000,
                start_interval: 2_000_000_000,
                retries: 3,
            }),
            on_build: vec!["RUN echo hi".into()],
            shell: vec!["/bin/bash".into(), "-c".into()],
        };
        c.rootfs = RootFs::layers(vec![d('a'), d('b')]);
        c.history = vec![
            History {
                created: Some("2024-01-02T03:04:05Z".into()),
                created_by: Some("COPY . /srv".into()),
                ..History::default()
            },
            History {
                created_by: Some("ENV A=b".into()),
                author: Some("me".into()),
                comment: Some("buildkit.dockerfile.v0".into()),
                empty_layer: true,
                ..History::default()
            },
        ];
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let expected = format!(
            concat!(
                r#"{{"created":"2024-01-02T03:04:05Z","author":"kiln","architecture":"arm64","os":"linux","variant":"v8","#,
                r#""config":{{"User":"app","ExposedPorts":{{"53/udp":{{}},"8080/tcp":{{}}}},"Env":["PATH=/usr/bin","A=b"],"#,
                r#""Entrypoint":["/app"],"Cmd":["--serve"],"Volumes":{{"/data":{{}}}},"WorkingDir":"/srv","#,
                r#""Labels":{{"a":"2","z":"1"}},"StopSignal":"SIGTERM","ArgsEscaped":true,"#,
                r#""Healthcheck":{{"Test":["CMD-SHELL","curl -f http://localhost/"],"Interval":30000000000,"Timeout":5000000000,"StartPeriod":1000000000,"StartInterval":2000000000,"Retries":3}},"#,
                r#""OnBuild":["RUN echo hi"],"Shell":["/bin/bash","-c"]}},"#,
                r#""rootfs":{{"type":"layers","diff_ids":["sha256:{a}","sha256:{b}"]}},"#,
                r#""history":[{{"created":"2024-01-02T03:04:05Z","created_by":"COPY . /srv"}},"#,
                r#"{{"author":"me","created_by":"ENV A=b","comment":"buildkit.dockerfile.v0","empty_layer":true}}]}}"#
            ),
            a = a,
            b = b
        );
        assert_eq!(json(&c), expected);
        let back: ImageConfig = from_json_slice(expected.as_bytes()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn cmd_unset_versus_empty() {
        let mut c = ContainerConfig::default();
        assert_eq!(json(&c), "{}");
        c.cmd = Some(vec![]);
        c.entrypoint = Some(vec![]);
        assert_eq!(json(&c), r#"{"Entrypoint":[],"Cmd":[]}"#);

        let parsed: ContainerConfig =
            serde_json::from_str(r#"{"Cmd":null,"Entrypoint":[]}"#).unwrap();
        assert_eq!(parsed.cmd, None);
        assert_eq!(parsed.entrypoint, Some(vec![]));
        // moby's StrSlice also accepts a bare string.
        let parsed: ContainerConfig =
            serde_json::from_str(r#"{"Cmd":"bash","Shell":"sh"}"#).unwrap();
        assert_eq!(parsed.cmd, Some(vec!["bash".to_string()]));
        assert_eq!(parsed.shell, vec!["sh".to_string()]);
    }

    #[test]
    fn nulls_read_as_empty() {
        let c: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":null,"rootfs":{"type":"layers","diff_ids":null},"history":null}"#,
        )
        .unwrap();
        assert_eq!(c, ImageConfig::new("linux", "amd64"));
        let c: ContainerConfig = serde_json::from_str(
            r#"{"User":null,"Env":null,"ExposedPorts":null,"Volumes":null,"Labels":null,"OnBuild":null,"Shell":null,"ArgsEscaped":null}"#,
        )
        .unwrap();
        assert_eq!(c, ContainerConfig::default());
    }

    #[test]
    fn required_fields_and_bad_digests_are_errors() {
        assert!(serde_json::from_str::<ImageConfig>(
            r#"{"os":"linux","rootfs":{"type":"layers"}}"#
        )
        .is_err());
        assert!(
            serde_json::from_str::<ImageConfig>(r#"{"architecture":"amd64","os":"linux"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<ImageConfig>(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:1234"]}}"#
        )
        .is_err());
    }

    /// A config as Docker 24 (classic builder) writes it, with fields kiln does not model.
    const DOCKER_CONFIG: &str = r##"{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"nobody","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"ExposedPorts":{"8080/tcp":{}},"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","APP_ENV=prod"],"Cmd":["serve","--port","8080"],"Healthcheck":{"Test":["CMD-SHELL","wget -qO- http://127.0.0.1:8080/health || exit 1"],"Interval":15000000000,"Timeout":3000000000,"StartPeriod":5000000000,"Retries":4},"ArgsEscaped":true,"Image":"sha256:4b8d55f6a3bbd2b4d2b0b4e6c7c1fc1e8c3e0c7c7d1a6b5f3e3c2b1a09f8e7d6","Volumes":{"/var/lib/app":{}},"WorkingDir":"/srv/app","Entrypoint":["/usr/bin/tini","--"],"OnBuild":["COPY . /srv/app/src","RUN make -C /srv/app/src"],"Labels":{"org.opencontainers.image.source":"https://example.com/app","maintainer":"ops@example.com"},"StopSignal":"SIGQUIT","Shell":["/bin/ash","-eo","pipefail","-c"]},"container":"3f4e2a1b9c8d","container_config":{"Hostname":"3f4e2a1b9c8d","Cmd":["/bin/sh","-c","#(nop) ","SHELL [/bin/ash -eo pipefail -c]"],"Image":"sha256:0"},"created":"2023-11-20T10:15:30.123456789Z","docker_version":"24.0.7","history":[{"created":"2023-11-01T00:00:00Z","created_by":"/bin/sh -c #(nop) ADD file:abc in / "},{"created":"2023-11-01T00:00:01Z","created_by":"/bin/sh -c #(nop)  CMD [\"/bin/sh\"]","empty_layer":true},{"created":"2023-11-20T10:15:29Z","created_by":"/bin/sh -c apk add --no-cache tini","comment":"kept"}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]}}"##;

    #[test]
    fn docker_config_round_trip_in_our_key_order() {
        let c: ImageConfig = from_json_slice(DOCKER_CONFIG.as_bytes()).unwrap();
        assert_eq!(c.config.user, "nobody");
        assert_eq!(
            c.config.cmd.as_deref(),
            Some(&["serve".to_string(), "--port".into(), "8080".into()][..])
        );
        let hc = c.config.healthcheck.as_ref().unwrap();
        assert_eq!(
            (
                hc.interval,
                hc.timeout,
                hc.start_period,
                hc.start_interval,
                hc.retries
            ),
            (15_000_000_000, 3_000_000_000, 5_000_000_000, 0, 4)
        );
        assert_eq!(c.config.on_build.len(), 2);
        assert_eq!(c.history.len(), 3);
        assert!(c.history[1].empty_layer);

        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let expected = format!(
            concat!(
                r#"{{"created":"2023-11-20T10:15:30.123456789Z","architecture":"amd64","os":"linux","#,
                r#""config":{{"User":"nobody","ExposedPorts":{{"8080/tcp":{{}}}},"#,
                r#""Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","APP_ENV=prod"],"#,
                r#""Entrypoint":["/usr/bin/tini","--"],"Cmd":["serve","--port","8080"],"Volumes":{{"/var/lib/app":{{}}}},"#,
                r#""WorkingDir":"/srv/app","Labels":{{"maintainer":"ops@example.com","org.opencontainers.image.source":"https://example.com/app"}},"#,
                r#""StopSignal":"SIGQUIT","ArgsEscaped":true,"#,
                r#""Healthcheck":{{"Test":["CMD-SHELL","wget -qO- http://127.0.0.1:8080/health || exit 1"],"Interval":15000000000,"Timeout":3000000000,"StartPeriod":5000000000,"Retries":4}},"#,
                r#""OnBuild":["COPY . /srv/app/src","RUN make -C /srv/app/src"],"Shell":["/bin/ash","-eo","pipefail","-c"]}},"#,
                r#""rootfs":{{"type":"layers","diff_ids":["sha256:{a}","sha256:{b}"]}},"#,
                r#""history":[{{"created":"2023-11-01T00:00:00Z","created_by":"/bin/sh -c #(nop) ADD file:abc in / "}},"#,
                r#"{{"created":"2023-11-01T00:00:01Z","created_by":"/bin/sh -c #(nop)  CMD [\"/bin/sh\"]","empty_layer":true}},"#,
                r#"{{"created":"2023-11-20T10:15:29Z","created_by":"/bin/sh -c apk add --no-cache tini","comment":"kept"}}]}}"#
            ),
            a = a,
            b = b
        );
        let ours = json(&c);
        assert_eq!(ours, expected);
        // Our bytes are a fixed point.
        let again: ImageConfig = from_json_slice(ours.as_bytes()).unwrap();
        assert_eq!(again, c);
        assert_eq!(json(&again), ours);
    }

    #[test]
    fn chain_ids_follow_the_spec_formula() {
        let ids = chain_ids(&[d('a'), d('b'), d('c')]);
        assert_eq!(ids[0], d('a'));
        let second = sha256_digest(format!("{} {}", d('a'), d('b')).as_bytes());
        assert_eq!(ids[1], second);
        assert_eq!(
            ids[2],
            sha256_digest(format!("{second} {}", d('c')).as_bytes())
        );
        assert!(chain_ids(&[]).is_empty());
    }
}
