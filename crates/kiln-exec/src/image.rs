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
        created_by: Some(step.instruction.original.clone()),
        comment: step
            .from_onbuild
            .then(|| "ONBUILD trigger of the base image".to_string()),
        empty_layer,
        ..History::default()
    }
}

/// Seconds since the epoch as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Reads the date part of an RFC 3339 time back into Unix seconds (fractions and offsets are
/// ignored beyond `Z`/`+00:00`); `None` when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>());
    let (year, month, day) = (
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
    );
    let time = time.get(..8)?;
    let mut time_parts = time.split(':').map(|p| p.parse::<i64>());
    let (hour, minute, second) = (
        time_parts.next()?.ok()?,
        time_parts.next()?.ok()?,
        time_parts.next()?.ok()?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (the inverse of `rfc3339`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        for t in [0, 1_700_000_000, 951_782_400, -1, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2024-01-02T03:04:05.123456789Z"),
            Some(1_704_164_645)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
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
}
