//! `RUN --mount=...` values: CSV fields of `key=value`, checked per mount type.

use crate::go_bool::parse_go_bool;

/// `type=` of a `--mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// A directory of the context, a stage or an image.
    Bind,
    /// A directory of the store kept between builds.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A `--secret`, as a file (or variable).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// `sharing=` of a cache mount: how concurrent users share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Every user at once.
    #[default]
    Shared,
    /// Alone, or a fresh directory when another user holds it.
    Private,
    /// Alone: others wait.
    Locked,
}

/// One parsed `--mount`. Fields a type does not use stay `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `type=`.
    pub kind: MountType,
    /// `target=`: where it is mounted.
    pub target: Option<String>,
    /// `source=`: the path in what is mounted.
    pub source: Option<String>,
    /// A stage, a build context or an image to take the source from (bind and cache).
    pub from: Option<String>,
    /// `ro`/`readonly`.
    pub readonly: bool,
    /// `id=`: the cache or secret id.
    pub id: Option<String>,
    /// `sharing=`.
    pub sharing: Sharing,
    /// `mode=`: permission bits of a new cache directory or secret file.
    pub mode: Option<u32>,
    /// `uid=`: its owner.
    pub uid: Option<u32>,
    /// `gid=`: its group.
    pub gid: Option<u32>,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// `required=true`: a secret or SSH agent that must be given.
    pub required: bool,
    /// secret: expose it as this environment variable instead of (or besides) a file.
    pub env: Option<String>,
}

impl Mount {
    fn new(kind: MountType) -> Self {
        Mount {
            kind,
            target: None,
            source: None,
            from: None,
            // Bind mounts are read-only unless asked otherwise; everything else is writable.
            readonly: kind == MountType::Bind,
            id: None,
            sharing: Sharing::Shared,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            required: false,
            env: None,
        }
    }

    /// Where the mount appears inside the RUN, with the defaults BuildKit applies.
    pub fn effective_target(&self) -> Option<String> {
        if let Some(target) = &self.target {
            return Some(target.clone());
        }
        match self.kind {
            MountType::Secret if self.env.is_none() => {
                self.id.as_ref().map(|id| format!("/run/secrets/{id}"))
            }
            MountType::Ssh => Some("/run/buildkit/ssh_agent.0".to_string()),
            _ => None,
        }
    }
}

/// Splits a CSV record as Go's encoding/csv does for one line: `,` separates fields, a field
/// that starts with `"` is quoted and `""` inside it is a literal quote.
fn csv_fields(text: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    Some(',') => break,
                    Some(c) => field.push(c),
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                }
            }
        }
        fields.push(field);
    }
}

/// Parses and checks one `--mount` value (already expanded).
pub fn parse_mount(text: &str) -> Result<Mount, String> {
    let fields = csv_fields(text)?;
    let pairs: Vec<(String, Option<String>)> = fields
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (f.trim().to_ascii_lowercase(), None),
        })
        .collect();
    let kind = match pairs.iter().find(|(k, _)| k == "type") {
        None => MountType::Bind,
        Some((_, value)) => match value.as_deref() {
            Some("bind") => MountType::Bind,
            Some("cache") => MountType::Cache,
            Some("tmpfs") => MountType::Tmpfs,
            Some("secret") => MountType::Secret,
            Some("ssh") => MountType::Ssh,
            Some(other) => {
                return Err(format!(
                    "unsupported mount type {other:?} (use bind, cache, tmpfs, secret or ssh)"
                ))
            }
            None => return Err("type needs a value".into()),
        },
    };
    let mut mount = Mount::new(kind);
    let type_name = format!("{kind:?}").to_ascii_lowercase();
    for (key, value) in pairs {
        let need = |value: &Option<String>| -> Result<String, String> {
            value
                .clone()
                .ok_or_else(|| format!("{key} needs a value ({key}=...)"))
        };
        let flag = |value: &Option<String>| -> Result<bool, String> {
            match value {
                None => Ok(true),
                Some(v) => parse_go_bool(v).ok_or_else(|| {
                    format!("invalid value {v:?} for {key}: expected true or false")
                }),
            }
        };
        let number = |value: &Option<String>| -> Result<u32, String> {
            let v = need(value)?;
            v.parse()
                .map_err(|_| format!("invalid {key} {v:?}: expected a non-negative number"))
        };
        let allowed: &[&str] = match kind {
            MountType::Bind => &[
                "source",
                "src",
                "from",
                "readonly",
                "ro",
                "readwrite",
                "rw",
                "bind-propagation",
            ],
            MountType::Cache => &[
                "id",
                "source",
                "src",
                "from",
                "readonly",
                "ro",
                "readwrite",
                "rw",
                "sharing",
                "mode",
                "uid",
                "gid",
            ],
            MountType::Tmpfs => &["size"],
            MountType::Secret => &["id", "required", "mode", "uid", "gid", "env"],
            MountType::Ssh => &["id", "required", "mode", "uid", "gid"],
        };
        let common = ["type", "target", "dst", "destination"];
        if !common.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
            return Err(format!("unexpected key {key:?} for a {type_name} mount"));
        }
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => mount.target = Some(need(&value)?),
            "source" | "src" => mount.source = Some(need(&value)?),
            "from" => mount.from = Some(need(&value)?),
            "readonly" | "ro" => mount.readonly = flag(&value)?,
            "readwrite" | "rw" => mount.readonly = !flag(&value)?,
            "bind-propagation" => {
                let v = need(&value)?;
                if !matches!(
                    v.as_str(),
                    "shared" | "slave" | "private" | "rshared" | "rslave" | "rprivate"
                ) {
                    return Err(format!("invalid bind-propagation {v:?}"));
                }
            }
            "id" => mount.id = Some(need(&value)?),
            "sharing" => {
                mount.sharing = match need(&value)?.as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    other => {
                        return Err(format!(
                            "unsupported sharing value {other:?} (use shared, private or locked)"
                        ))
                    }
                }
            }
            "mode" => {
                let v = need(&value)?;
                let mode = u32::from_str_radix(&v, 8)
                    .map_err(|_| format!("invalid mode {v:?}: expected octal such as 0755"))?;
                if mode > 0o7777 {
                    return Err(format!("invalid mode {v:?}: too large"));
                }
                mount.mode = Some(mode);
            }
            "uid" => mount.uid = Some(number(&value)?),
            "gid" => mount.gid = Some(number(&value)?),
            "size" => mount.size = Some(parse_size(&need(&value)?)?),
            "required" => mount.required = flag(&value)?,
            "env" => mount.env = Some(need(&value)?),
            _ => {}
        }
    }
    // A bind, cache or tmpfs mount with no target mounts at the working directory (the planner
    // resolves it there, as BuildKit does), so no target is required here.
    match kind {
        MountType::Secret
            if mount.id.is_none() && mount.target.is_none() && mount.env.is_none() =>
        {
            Err("a secret mount needs id=<id> (or target= or env=)".into())
        }
        _ => {
            if kind == MountType::Secret && mount.id.is_none() {
                // BuildKit derives the id from the target's file name.
                mount.id = mount
                    .target
                    .as_deref()
                    .and_then(|t| t.rsplit('/').find(|p| !p.is_empty()))
                    .or(mount.env.as_deref())
                    .map(str::to_string);
            }
            Ok(mount)
        }
    }
}

/// Sizes as Docker writes them: `64m`, `1g`, `512kb`, `1024` (bytes); binary multiples.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}"))?;
    let multiplier: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(format!("invalid size {text:?}: unknown unit {unit:?}")),
    };
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mount_with_every_key() {
        let m = parse_mount("type=cache,id=apt,target=/var/cache/apt,sharing=locked,mode=0700,uid=1,gid=2,from=base,source=/c,ro")
            .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.id.as_deref(), Some("apt"));
        assert_eq!(m.sharing, Sharing::Locked);
        assert_eq!(m.mode, Some(0o700));
        assert_eq!((m.uid, m.gid), (Some(1), Some(2)));
        assert!(m.readonly);
    }

    #[test]
    fn bind_is_read_only_by_default_and_rw_opts_out() {
        assert!(parse_mount("target=/src").unwrap().readonly);
        assert!(!parse_mount("type=bind,target=/src,rw").unwrap().readonly);
        assert!(
            !parse_mount("type=bind,target=/src,readwrite=true")
                .unwrap()
                .readonly
        );
        assert!(!parse_mount("type=cache,target=/c").unwrap().readonly);
    }

    #[test]
    fn secret_defaults() {
        let m = parse_mount("type=secret,id=npmrc").unwrap();
        assert_eq!(m.effective_target().as_deref(), Some("/run/secrets/npmrc"));
        let m = parse_mount("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
        assert!(m.required);
        assert_eq!(m.effective_target(), None);
        let m = parse_mount("type=secret,target=/root/.aws/credentials").unwrap();
        assert_eq!(m.id.as_deref(), Some("credentials"));
    }

    #[test]
    fn tmpfs_size_and_ssh() {
        assert_eq!(
            parse_mount("type=tmpfs,target=/t,size=64m").unwrap().size,
            Some(64 << 20)
        );
        let ssh = parse_mount("type=ssh,required=true").unwrap();
        assert_eq!(
            ssh.effective_target().as_deref(),
            Some("/run/buildkit/ssh_agent.0")
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(parse_mount("type=cache").unwrap().target, None);
        assert_eq!(parse_mount("from=build").unwrap().target, None);
        assert!(parse_mount("type=nfs,target=/x")
            .unwrap_err()
            .contains("unsupported mount type"));
        assert!(parse_mount("type=tmpfs,target=/t,id=x")
            .unwrap_err()
            .contains("unexpected key"));
        assert!(parse_mount("type=cache,target=/c,sharing=maybe")
            .unwrap_err()
            .contains("sharing"));
        assert!(parse_mount("type=cache,target=/c,mode=999").is_err());
        assert!(parse_mount("type=cache,target=/c,uid=-1").is_err());
        assert!(parse_mount("type=secret").is_err());
        assert!(parse_mount("type=bind,target=/x,ro=perhaps").is_err());
    }

    #[test]
    fn quoted_csv_fields() {
        let m = parse_mount("type=bind,\"source=a,b\",target=/x").unwrap();
        assert_eq!(m.source.as_deref(), Some("a,b"));
        assert!(parse_mount("type=bind,\"source=a").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1kb"), Ok(1024));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert!(parse_size("12q").is_err());
        assert!(parse_size("1e400").is_err());
    }
}
