//! What `kiln build` flags say about every RUN of a build, as `docker build` has them:
//! `--network`, `--add-host`, `--ssh`, `--allow security.insecure`, `--shm-size`, `--ulimit`.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The build-wide RUN settings. The default is what a build without those flags gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    /// The network of a RUN that does not name one (`--network=default|host` is the host's,
    /// `none` a namespace of its own); a RUN's own `--network` wins.
    pub network: kiln_sandbox::Network,
    /// `--add-host HOST:IP` lines added to each RUN's `/etc/hosts`, in order.
    pub extra_hosts: Vec<(String, String)>,
    /// `--ssh ID[=SOCKET]`: the agent sockets `RUN --mount=type=ssh,id=ID` may use. Without
    /// an entry, an ssh mount fails and names the flag.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--allow security.insecure`: `RUN --security=insecure` may run.
    pub allow_insecure: bool,
    /// `--shm-size`: bytes of each RUN's `/dev/shm`.
    pub shm_size: Option<u64>,
    /// `--ulimit`s of each RUN.
    pub ulimits: Vec<kiln_sandbox::Rlimit>,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            network: kiln_sandbox::Network::Host,
            extra_hosts: Vec::new(),
            ssh: BTreeMap::new(),
            allow_insecure: false,
            shm_size: None,
            ulimits: Vec::new(),
        }
    }
}

/// `--add-host HOST:IP` (or `HOST=IP`, as newer docker writes it).
pub fn parse_add_host(value: &str) -> Result<(String, String), String> {
    let (host, ip) = value
        .split_once('=')
        .or_else(|| value.split_once(':'))
        .ok_or_else(|| format!("{value:?}: expected HOST:IP"))?;
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid_host {
        return Err(format!("{value:?}: {host:?} is not a host name"));
    }
    // IPv6 may come in brackets, as in `host:[::1]`.
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip == "host-gateway" {
        return Err(format!(
            "{value:?}: host-gateway names the daemon's bridge, which kiln has not (RUN uses the host's network): give an address"
        ));
    }
    let address: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("{value:?}: {ip:?} is not an IP address"))?;
    Ok((host.to_string(), address.to_string()))
}

/// `--network default|none|host`.
pub fn parse_network(value: &str) -> Result<kiln_sandbox::Network, String> {
    match value {
        "default" | "host" => Ok(kiln_sandbox::Network::Host),
        "none" => Ok(kiln_sandbox::Network::None),
        other => Err(format!(
            "{other:?}: kiln has no {other} network; use default, host or none (a RUN gets the host's network, or none)"
        )),
    }
}

/// `--ulimit NAME=SOFT[:HARD]`, numbers or `-1` (unlimited).
pub fn parse_ulimit(value: &str) -> Result<kiln_sandbox::Rlimit, String> {
    let (name, limits) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?}: expected NAME=SOFT[:HARD], e.g. nofile=1024:2048"))?;
    let resource = kiln_sandbox::RlimitResource::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = kiln_sandbox::RlimitResource::NAMES
            .iter()
            .map(|(n, _)| *n)
            .collect();
        format!(
            "{value:?}: unknown limit {name:?} (one of {})",
            names.join(", ")
        )
    })?;
    let number = |text: &str| -> Result<Option<u64>, String> {
        if text == "-1" {
            return Ok(None);
        }
        text.parse::<u64>()
            .map(Some)
            .map_err(|_| format!("{value:?}: {text:?} is not a number (or -1 for unlimited)"))
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((soft, hard)) => (number(soft)?, number(hard)?),
        None => {
            let both = number(limits)?;
            (both, both)
        }
    };
    // None is unlimited: the largest of all.
    let over = match (soft, hard) {
        (None, Some(_)) => true,
        (Some(soft), Some(hard)) => soft > hard,
        _ => false,
    };
    if over {
        return Err(format!("{value:?}: the soft limit is above the hard one"));
    }
    Ok(kiln_sandbox::Rlimit {
        resource,
        soft,
        hard,
    })
}

/// `--ssh default` (the agent of `$SSH_AUTH_SOCK`) or `--ssh ID=SOCKET`. kiln forwards agent
/// sockets; a key file must be loaded into an agent first.
pub fn parse_ssh(value: &str) -> Result<(String, PathBuf), String> {
    let (id, paths) = match value.split_once('=') {
        Some((id, paths)) => (id, Some(paths)),
        None => (value, None),
    };
    if id.is_empty() {
        return Err(format!("{value:?}: expected ID or ID=SOCKET"));
    }
    let path = match paths {
        Some(paths) => {
            let list: Vec<&str> = paths.split(',').filter(|p| !p.is_empty()).collect();
            match list.as_slice() {
                [one] => PathBuf::from(one),
                [] => return Err(format!("{value:?}: no socket after {id}=")),
                _ => {
                    return Err(format!(
                        "{value:?}: kiln forwards one agent socket per id; load the keys into one agent (ssh-add) and give its socket"
                    ))
                }
            }
        }
        None => match std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
            Some(socket) => PathBuf::from(socket),
            None => {
                return Err(format!(
                    "{value:?}: SSH_AUTH_SOCK is not set; start an agent (eval $(ssh-agent); ssh-add) or give --ssh {id}=SOCKET"
                ))
            }
        },
    };
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => Ok((id.to_string(), path)),
        Ok(_) => Err(format!(
            "{value:?}: {} is not an agent socket; kiln forwards ssh agents, not key files (ssh-add the key to an agent and give its socket)",
            path.display()
        )),
        Err(e) => Err(format!("{value:?}: {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_docker_writes_them() {
        assert_eq!(
            parse_add_host("db:10.0.0.5"),
            Ok(("db".into(), "10.0.0.5".into()))
        );
        assert_eq!(parse_add_host("v6:::1"), Ok(("v6".into(), "::1".into())));
        assert_eq!(parse_add_host("v6=[::1]"), Ok(("v6".into(), "::1".into())));
        assert!(parse_add_host("nohost").is_err());
        assert!(parse_add_host("a b:1.2.3.4").is_err());
        assert!(parse_add_host("db:10.0.0").is_err());
        assert!(parse_add_host("db:host-gateway").is_err());
        assert_eq!(parse_network("none"), Ok(kiln_sandbox::Network::None));
        assert_eq!(parse_network("default"), Ok(kiln_sandbox::Network::Host));
        assert!(parse_network("bridge").is_err());
        let limit = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!(
            (limit.resource, limit.soft, limit.hard),
            (kiln_sandbox::RlimitResource::Nofile, Some(1024), Some(2048))
        );
        assert_eq!(parse_ulimit("core=-1").unwrap().hard, None);
        for bad in [
            "nofile=x",
            "nofile",
            "files=1",
            "nofile=10:5",
            "nofile=-1:5",
        ] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
        assert!(parse_ssh("=x").is_err());
        assert!(parse_ssh("default=/etc/passwd")
            .unwrap_err()
            .contains("not an agent socket"));
        assert!(parse_ssh("a=/x,/y")
            .unwrap_err()
            .contains("one agent socket"));
    }
}
