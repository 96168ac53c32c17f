//! Credentials from environment variables, for CI runners that hand secrets to a job as
//! variables rather than files (GitLab's `CI_REGISTRY_USER`/`CI_REGISTRY_PASSWORD`, a
//! Kubernetes `secretKeyRef`, GitHub's `secrets.*`):
//!
//! - `KILN_REGISTRY_HOST`: the one registry they are for (`ghcr.io`, `registry.example.com:5000`);
//! - `KILN_REGISTRY_USERNAME` and `KILN_REGISTRY_PASSWORD`.
//!
//! They are sent to that host only, never to the registry of a base image elsewhere, and they
//! win over `config.json` for it. All three or none: a partial set is an error naming what is
//! missing, rather than a silent anonymous push that fails later with a 401.

use crate::auth::Credentials;
use crate::error::{RegistryError, Result};
use crate::normalize_server;

/// The registry host the variables are for.
pub const HOST_VAR: &str = "KILN_REGISTRY_HOST";
/// The user name.
pub const USERNAME_VAR: &str = "KILN_REGISTRY_USERNAME";
/// The password or token.
pub const PASSWORD_VAR: &str = "KILN_REGISTRY_PASSWORD";

/// The credentials the environment gives for `host` (a [`normalize_server`] result).
pub(crate) fn lookup(host: &str) -> Result<Option<Credentials>> {
    let read = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    from_values(host, read(HOST_VAR), read(USERNAME_VAR), read(PASSWORD_VAR))
}

fn from_values(
    host: &str,
    for_host: Option<String>,
    username: Option<String>,
    password: Option<String>,
) -> Result<Option<Credentials>> {
    let (for_host, username, secret) = match (for_host, username, password) {
        (None, None, None) => return Ok(None),
        (Some(h), Some(u), Some(p)) => (h, u, p),
        (h, u, p) => {
            let missing: Vec<&str> = [
                (HOST_VAR, h.is_none()),
                (USERNAME_VAR, u.is_none()),
                (PASSWORD_VAR, p.is_none()),
            ]
            .into_iter()
            .filter(|(_, absent)| *absent)
            .map(|(name, _)| name)
            .collect();
            return Err(RegistryError::Credentials {
                server: host.to_string(),
                message: format!(
                    "{} not set: registry credentials from the environment need {HOST_VAR}, {USERNAME_VAR} and {PASSWORD_VAR} together",
                    missing.join(" and ")
                ),
            });
        }
    };
    if normalize_server(&for_host) != host {
        return Ok(None);
    }
    Ok(Some(Credentials { username, secret }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn some(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    #[test]
    fn only_the_named_host_gets_them() {
        let found = from_values(
            "127.0.0.1:5000",
            some("127.0.0.1:5000"),
            some("ci"),
            some("pw"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(found.username, "ci");
        assert_eq!(found.secret, "pw");
        let spelled = from_values("ghcr.io", some("https://GHCR.io/"), some("ci"), some("pw"));
        assert!(spelled.unwrap().is_some());
        let other = from_values("docker.io", some("ghcr.io"), some("ci"), some("pw"));
        assert!(other.unwrap().is_none());
        assert!(from_values("ghcr.io", None, None, None).unwrap().is_none());
    }

    #[test]
    fn a_partial_set_names_what_is_missing_and_never_the_secret() {
        let error = from_values("ghcr.io", None, some("ci"), some("hunter2"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("KILN_REGISTRY_HOST not set"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let error = from_values("ghcr.io", some("ghcr.io"), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("KILN_REGISTRY_USERNAME and KILN_REGISTRY_PASSWORD not set"),
            "{error}"
        );
    }
}
