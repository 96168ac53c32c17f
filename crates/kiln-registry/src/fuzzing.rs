//! Entry points for the fuzz targets in `fuzz/` (not a stable API): the parsers of what a
//! registry or a user's `config.json` says, reachable without a network.

use std::path::PathBuf;
use std::time::Instant;

/// Parses a `WWW-Authenticate` value; returns how many challenges it holds.
pub fn www_authenticate(header: &str) -> usize {
    let challenges = crate::auth::parse_challenges(header);
    for challenge in &challenges {
        let _ = (challenge.param("realm"), challenge.param("service"));
    }
    challenges.len()
}

/// Parses a token service's answer; whether it holds a usable token.
pub fn token_response(bytes: &[u8]) -> bool {
    crate::auth::parse_token_response(bytes, Instant::now()).is_some()
}

/// Reads `dir/config.json` for `host` as a pull would; whether credentials were found.
pub fn docker_config(dir: PathBuf, host: &str) -> bool {
    matches!(
        crate::config::DockerConfig::new(dir).get(&crate::normalize_server(host)),
        Ok(Some(_))
    )
}
