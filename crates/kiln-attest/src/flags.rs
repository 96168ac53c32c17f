//! The values of `--provenance` and `--sbom`, in buildx's syntax: a boolean, or
//! comma-separated `key=value` attributes (`mode=max,builder-id=https://ci/run/1`).

use crate::ProvenanceMode;

/// A `--provenance` or `--sbom` value kiln cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("--{flag}: {value:?} is not true, false or key=value attributes")]
    Malformed { flag: &'static str, value: String },
    #[error("--{flag}: unknown attribute {key:?} (kiln understands {known})")]
    UnknownKey {
        flag: &'static str,
        key: String,
        known: &'static str,
    },
    #[error("--{flag}: {key}={value:?} is not supported: {why}")]
    Unsupported {
        flag: &'static str,
        key: String,
        value: String,
        why: &'static str,
    },
}

/// What `--provenance` asks for when it is not `false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceRequest {
    pub mode: ProvenanceMode,
    /// `builder-id=`: the `runDetails.builder.id` to write (a CI run URL).
    pub builder_id: Option<String>,
}

/// Go's `strconv.ParseBool`, which buildx uses for these flags.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn attributes<'a>(
    flag: &'static str,
    value: &'a str,
) -> Result<Vec<(&'a str, &'a str)>, FlagError> {
    value
        .split(',')
        .map(|field| {
            field
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| FlagError::Malformed {
                    flag,
                    value: value.to_string(),
                })
        })
        .collect()
}

/// `--provenance=VALUE`: `None` when it is off (`false`, `disabled=true`), else the mode
/// (`true` and an attribute list without `mode` mean `min`, as in buildx).
pub fn parse_provenance_flag(value: &str) -> Result<Option<ProvenanceRequest>, FlagError> {
    const FLAG: &str = "provenance";
    if let Some(on) = parse_bool(value.trim()) {
        return Ok(on.then_some(ProvenanceRequest {
            mode: ProvenanceMode::Min,
            builder_id: None,
        }));
    }
    let mut request = ProvenanceRequest {
        mode: ProvenanceMode::Min,
        builder_id: None,
    };
    for (key, attribute) in attributes(FLAG, value)? {
        let unsupported = |why| FlagError::Unsupported {
            flag: FLAG,
            key: key.to_string(),
            value: attribute.to_string(),
            why,
        };
        match key {
            "mode" => {
                request.mode = match attribute {
                    "min" => ProvenanceMode::Min,
                    "max" => ProvenanceMode::Max,
                    _ => return Err(unsupported("mode is min or max")),
                }
            }
            "builder-id" => request.builder_id = Some(attribute.to_string()),
            "version" => {
                if attribute != "v1" {
                    return Err(unsupported("kiln writes SLSA provenance v1 only"));
                }
            }
            "disabled" => match parse_bool(attribute) {
                Some(true) => return Ok(None),
                Some(false) => {}
                None => return Err(unsupported("disabled is true or false")),
            },
            _ => {
                return Err(FlagError::UnknownKey {
                    flag: FLAG,
                    key: key.to_string(),
                    known: "mode, builder-id, version, disabled",
                })
            }
        }
    }
    Ok(Some(request))
}

/// `--sbom=VALUE`: whether to attach an SBOM. kiln reads the image's package databases
/// itself, so buildx's `generator=IMAGE` (a scanner image to run) is refused, not ignored.
pub fn parse_sbom_flag(value: &str) -> Result<bool, FlagError> {
    const FLAG: &str = "sbom";
    if let Some(on) = parse_bool(value.trim()) {
        return Ok(on);
    }
    let mut on = true;
    for (key, attribute) in attributes(FLAG, value)? {
        match key {
            "disabled" => match parse_bool(attribute) {
                Some(disabled) => on = !disabled,
                None => {
                    return Err(FlagError::Unsupported {
                        flag: FLAG,
                        key: key.to_string(),
                        value: attribute.to_string(),
                        why: "disabled is true or false",
                    })
                }
            },
            "generator" => {
                return Err(FlagError::Unsupported {
                    flag: FLAG,
                    key: key.to_string(),
                    value: attribute.to_string(),
                    why: "kiln generates the SBOM itself from the image's package databases",
                })
            }
            _ => {
                return Err(FlagError::UnknownKey {
                    flag: FLAG,
                    key: key.to_string(),
                    known: "disabled",
                })
            }
        }
    }
    Ok(on)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mode: ProvenanceMode, builder_id: Option<&str>) -> Option<ProvenanceRequest> {
        Some(ProvenanceRequest {
            mode,
            builder_id: builder_id.map(str::to_string),
        })
    }

    #[test]
    fn provenance_values() {
        use ProvenanceMode::{Max, Min};
        assert_eq!(parse_provenance_flag("false").unwrap(), None);
        assert_eq!(parse_provenance_flag("0").unwrap(), None);
        assert_eq!(parse_provenance_flag("true").unwrap(), request(Min, None));
        assert_eq!(
            parse_provenance_flag("mode=min").unwrap(),
            request(Min, None)
        );
        assert_eq!(
            parse_provenance_flag("mode=max").unwrap(),
            request(Max, None)
        );
        assert_eq!(
            parse_provenance_flag("mode=max,builder-id=https://ci.example/run/7,version=v1")
                .unwrap(),
            request(Max, Some("https://ci.example/run/7"))
        );
        assert_eq!(
            parse_provenance_flag("mode=max,disabled=true").unwrap(),
            None
        );
        assert_eq!(
            parse_provenance_flag("mode=medium")
                .unwrap_err()
                .to_string(),
            "--provenance: mode=\"medium\" is not supported: mode is min or max"
        );
        assert!(matches!(
            parse_provenance_flag("version=v0.2"),
            Err(FlagError::Unsupported { .. })
        ));
        assert!(matches!(
            parse_provenance_flag("colour=blue"),
            Err(FlagError::UnknownKey { .. })
        ));
        assert!(matches!(
            parse_provenance_flag("maybe"),
            Err(FlagError::Malformed { .. })
        ));
    }

    #[test]
    fn sbom_values() {
        assert!(parse_sbom_flag("true").unwrap());
        assert!(!parse_sbom_flag("false").unwrap());
        assert!(!parse_sbom_flag("disabled=true").unwrap());
        assert!(parse_sbom_flag("disabled=false").unwrap());
        assert!(matches!(
            parse_sbom_flag("generator=docker/buildkit-syft-scanner"),
            Err(FlagError::Unsupported { .. })
        ));
        assert!(matches!(
            parse_sbom_flag("yes"),
            Err(FlagError::Malformed { .. })
        ));
    }
}
