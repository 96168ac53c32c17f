//! The image config: what each metadata instruction changes, exactly as Docker records it.

use kiln_oci::{ContainerConfig, EmptyObject, Healthcheck, History, ImageConfig};
use kiln_plan::{ConfigChange, Platform, Step};

/// The PATH every Linux image gets when its base sets none, as BuildKit does.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The config of `FROM scratch`.
pub fn base_config(platform: &Platform) -> ImageConfig {
    let mut config = ImageConfig::new(platform.os.clone(), platform.architecture.clone());
    config.variant = platform.variant.clone();
    config.config = ContainerConfig {
        env: if platform.os == "linux" {
            vec![DEFAULT_PATH.to_string()]
        } else {
            Vec::new()
        },
        // BuildKit's empty image starts at `/`, so a scratch image that sets no WORKDIR says so.
        working_dir: "/".to_string(),
        ..ContainerConfig::default()
    };
    config
}

/// Applies one metadata instruction. `cmd_set` tracks whether this stage set CMD: ENTRYPOINT
/// resets an inherited CMD but keeps one set earlier in the same stage.
pub fn apply_config(image: &mut ImageConfig, change: &ConfigChange, cmd_set: &mut bool) {
    let config = &mut image.config;
    match change {
        ConfigChange::Env(pairs) => {
            for (key, value) in pairs {
                let entry = format!("{key}={value}");
                match config
                    .env
                    .iter_mut()
                    .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
                {
                    Some(existing) => *existing = entry,
                    None => config.env.push(entry),
                }
            }
        }
        ConfigChange::Label(pairs) => {
            for (key, value) in pairs {
                config.labels.insert(key.clone(), value.clone());
            }
        }
        ConfigChange::Expose(ports) => {
            for port in ports {
                config.exposed_ports.insert(port.clone(), EmptyObject {});
            }
        }
        ConfigChange::Volume(volumes) => {
            for volume in volumes {
                config.volumes.insert(volume.clone(), EmptyObject {});
            }
        }
        ConfigChange::User(user) => config.user = user.clone(),
        ConfigChange::Workdir(dir) => config.working_dir = dir.clone(),
        ConfigChange::Cmd(args) => {
            config.cmd = Some(args.clone());
            *cmd_set = true;
        }
        ConfigChange::Entrypoint(args) => {
            config.entrypoint = Some(args.clone());
            if !*cmd_set {
                config.cmd = None;
            }
        }
        ConfigChange::Shell(args) => config.shell = args.clone(),
        ConfigChange::StopSignal(signal) => config.stop_signal = signal.clone(),
        ConfigChange::OnBuild(trigger) => config.on_build.push(trigger.clone()),
        ConfigChange::Maintainer(name) => image.author = Some(name.clone()),
        ConfigChange::Healthcheck(None) => {
            config.healthcheck = Some(Healthcheck {
                test: vec!["NONE".to_string()],
                ..Healthcheck::default()
            })
        }
        ConfigChange::Healthcheck(Some(check)) => {
            let nanos = |d: Option<std::time::Duration>| {
                d.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            };
            config.healthcheck = Some(Healthcheck {
                test: check.test.clone(),
                interval: nanos(check.interval),
                timeout: nanos(check.timeout),
                start_period: nanos(check.start_period),
                start_interval: nanos(check.start_interval),
                retries: i64::from(check.retries.unwrap_or(0)),
            });
        }
    }
}

/// A history entry for a step; metadata-only steps are `empty_layer`.
pub fn history_entry(step: &Step, created: String, empty_layer: bool) -> History {
    History {
        created: Some(created),
        created_by: Some(redact_credentials(&step.instruction.original)),
        comment: step
            .from_onbuild
            .then(|| "ONBUILD trigger of the base image".to_string()),
        empty_layer,
        ..History::default()
    }
}

/// An instruction's text as the history, the progress and cache records show it: the user and
/// password of every URL (`https://user:token@host/...`) left out, so credentials written
/// into a recipe never reach an image, a log or a shared cache.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c == '#' || c == '?' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

/// Seconds since the epoch as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(seconds: i64) -> String {
    kiln_oci::time::format_rfc3339(seconds)
}

/// Unix seconds of an RFC 3339 time (a base image's `created`: registry data, parsed with
/// bounds); `None` when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    kiln_oci::time::parse_rfc3339(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        // Registry data: a year far out of range is refused, not multiplied unchecked.
        assert_eq!(parse_rfc3339("9223372036854775807-01-01T00:00:00Z"), None);
    }

    #[test]
    fn entrypoint_resets_inherited_cmd_but_not_one_set_in_the_stage() {
        let platform = Platform::parse("linux/amd64").unwrap();
        let mut image = base_config(&platform);
        image.config.cmd = Some(vec!["inherited".into()]);
        let mut cmd_set = false;
        apply_config(
            &mut image,
            &ConfigChange::Entrypoint(vec!["/app".into()]),
            &mut cmd_set,
        );
        assert_eq!(image.config.cmd, None);
        apply_config(
            &mut image,
            &ConfigChange::Cmd(vec!["--flag".into()]),
            &mut cmd_set,
        );
        apply_config(
            &mut image,
            &ConfigChange::Entrypoint(vec!["/other".into()]),
            &mut cmd_set,
        );
        assert_eq!(image.config.cmd, Some(vec!["--flag".to_string()]));
    }

    #[test]
    fn env_replaces_in_place_and_scratch_has_a_path() {
        let platform = Platform::parse("linux/amd64").unwrap();
        let mut image = base_config(&platform);
        let mut cmd_set = false;
        apply_config(
            &mut image,
            &ConfigChange::Env(vec![
                ("A".into(), "1".into()),
                ("PATH".into(), "/bin".into()),
            ]),
            &mut cmd_set,
        );
        assert_eq!(image.config.env, ["PATH=/bin", "A=1"]);
    }

    #[test]
    fn credentials_in_urls_are_left_out() {
        assert_eq!(
            redact_credentials("ADD https://me:tok@host/r.git#main /src/"),
            "ADD https://host/r.git#main /src/"
        );
        assert_eq!(
            redact_credentials("RUN curl -u x http://a@b@h:80/p && echo ftp://h2"),
            "RUN curl -u x http://h:80/p && echo ftp://h2"
        );
        assert_eq!(redact_credentials("COPY a@b /c"), "COPY a@b /c");
    }
}
