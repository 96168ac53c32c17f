//! `--secret` values as buildx and docker write them, read into where each secret comes from.
//! (Flag text, but parsed here beside the other build specs — `-o`, `--cache-to` — so every
//! front end reads them alike.)

use crate::run::SecretSource;
use std::collections::BTreeMap;

/// `--secret id=ID,src=PATH` / `--secret id=ID,env=VAR` (buildx's `source=` and `type=file|env`
/// too).
pub fn parse_secrets(values: &[String]) -> Result<BTreeMap<String, SecretSource>, String> {
    let mut secrets = BTreeMap::new();
    for value in values {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut kind = None;
        for field in value.split(',').filter(|f| !f.is_empty()) {
            let Some((key, v)) = field.split_once('=') else {
                return Err(format!(
                    "--secret {value}: expected key=value fields, got {field:?}"
                ));
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => kind = Some(v.to_string()),
                other => return Err(format!("--secret {value}: unknown key {other:?}")),
            }
        }
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            return Err(format!("--secret {value}: id=ID is required"));
        };
        let source = match (kind.as_deref(), src, env) {
            (_, Some(_), Some(_)) => {
                return Err(format!("--secret {value}: give src= or env=, not both"))
            }
            (Some("env"), Some(name), None) | (_, None, Some(name)) => SecretSource::Env(name),
            (None | Some("file"), Some(path), None) => SecretSource::File(path.into()),
            (Some("env"), None, None) => SecretSource::Env(id.clone()),
            (Some(other), _, _) if other != "file" && other != "env" => {
                return Err(format!(
                    "--secret {value}: type is file or env, not {other:?}"
                ))
            }
            _ => return Err(format!("--secret {value}: give src=PATH or env=VAR")),
        };
        if secrets.insert(id.clone(), source).is_some() {
            return Err(format!("--secret id={id} given twice"));
        }
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secret_flags_read_as_buildx_writes_them() {
        let parsed = parse_secrets(&[
            "id=a,src=/a".to_string(),
            "id=b,env=B".to_string(),
            "id=C,type=env".to_string(),
        ])
        .unwrap();
        assert_eq!(parsed["a"], SecretSource::File("/a".into()));
        assert_eq!(parsed["b"], SecretSource::Env("B".into()));
        assert_eq!(parsed["C"], SecretSource::Env("C".into()));
        for bad in [
            "src=/a",
            "id=a,src=/a,env=B",
            "id=a,type=ssh,src=x",
            "id=a,bogus=1",
        ] {
            assert!(parse_secrets(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(parse_secrets(&["id=a,src=/a".to_string(), "id=a,env=A".to_string()]).is_err());
    }
}
