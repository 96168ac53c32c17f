//! kiln-registry: a synchronous client for the OCI distribution spec (Docker registry v2).
//!
//! * [`Registry::resolve`], [`Registry::pull`], [`Registry::fetch_blob`]: manifests for a
//!   platform and blobs into a [`kiln_store::Store`], every byte checked against its digest
//!   before it is committed.
//! * [`Registry::push`]: an image or index from the store, skipping blobs the registry has,
//!   mounting ones another repository of it has, uploading the rest whole or in chunks.
//! * [`Registry::login`], [`Registry::logout`]: credentials checked against the registry and
//!   kept where docker keeps them (`config.json` or a credential helper).
//!
//! Authentication follows the registry's `WWW-Authenticate` challenge (Basic, or Bearer
//! tokens from its token service, cached per host and scope). Connection errors, 5xx and 429
//! are retried with backoff, and so is a blob download that stalls or breaks off (resumed
//! with `Range` where the registry allows). Plain http is only ever used for loopback
//! registries, or for all when `tls_verify` is off.
//!
//! TLS trust is the system's store plus per-host `certs.d` directories, as docker and podman
//! have it: see [`tls`], which `ADD` of URLs uses too.

#![deny(missing_docs)]
// Sizes, ranges, counts and times come from the network: no arithmetic that can wrap or panic.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

mod auth;
mod config;
pub mod env_credentials;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod pull;
mod push;
#[cfg(test)]
mod tests;
pub use kiln_tls as tls;
mod transfer;

use std::path::PathBuf;
use std::time::Duration;

use kiln_oci::{Descriptor, ImageName, Platform};
use kiln_store::Store;
use ureq::http::Method;

pub use error::{RegistryError, Result};

use crate::auth::Credentials;
use crate::http::{AuthMode, Call, Client, Repo, Target};

/// How the client talks to registries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// `false`: TLS without certificate checks, and plain http allowed, for every host.
    /// Loopback registries (`localhost`, `127.0.0.0/8`, `::1`) are treated so too unless
    /// [`tls_verify_loopback`](Self::tls_verify_loopback) is set. Plain http is used for such
    /// a host only when it answers https without speaking TLS.
    pub tls_verify: bool,
    /// Verify loopback registries' certificates too, and use https only for them (what an
    /// explicit `--tls-verify=true` asks for, as podman's overrides `insecure` in
    /// registries.conf). Off by default: docker treats `127.0.0.0/8` as insecure.
    pub tls_verify_loopback: bool,
    /// The `certs.d` directories looked in for per-host CAs and client certificates; `None`
    /// means [`tls::certs_d_roots`] (`$KILN_CERTS_D`, else the user's, podman's and docker's).
    pub certs_d: Option<Vec<PathBuf>>,
    /// The longest wait for any one step of a request: connecting, the answer's headers, each
    /// read or write of a body. Never a bound on a whole transfer: a blob that keeps moving is
    /// not cut off. A stalled download is retried from where it stopped. Default 60 s; an
    /// upload's answer is waited for at least 300 s (the registry hashes the blob first).
    pub timeout: Duration,
    /// Where `config.json` is; `None` means `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Blobs moved at once (default 6, as containers/image: fewer leave an image's last
    /// layers moving alone, at one stream's speed).
    pub parallel: usize,
    /// Attempts after the first on connection errors, 5xx and 429, waiting 250 ms, then
    /// twice as long each time up to 4 s.
    pub retries: u32,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            tls_verify: true,
            tls_verify_loopback: false,
            certs_d: None,
            timeout: Duration::from_secs(60),
            docker_config_dir: None,
            parallel: 6,
            retries: 5,
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// A registry client. Share one (it is `Send + Sync`): it caches bearer tokens per host and
/// scope, each host's scheme, and credentials.
pub struct Registry {
    client: Client,
}

/// A name resolved for a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The platform's image manifest; `platform` is set when it was chosen from an index.
    pub manifest: Descriptor,
    /// The manifest as the registry sent it (its digest is `manifest.digest`).
    pub manifest_bytes: Vec<u8>,
    /// The index (or Docker manifest list) the name pointed at, if it did.
    pub index: Option<(Descriptor, Vec<u8>)>,
}

/// What a pull put in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The platform's image manifest, now in the store.
    pub manifest: Descriptor,
    /// The index the name pointed at, now in the store, if it did.
    pub index: Option<Descriptor>,
}

/// Which way a blob moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// From the registry into the store.
    Pull,
    /// From the store to the registry.
    Push,
}

/// How a blob's transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Downloaded into the store.
    Fetched,
    /// Sent to the registry.
    Uploaded,
    /// Already there (in the store for a pull, on the registry for a push).
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
}

/// What happens to one blob. `id` is the blob's full digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEvent {
    /// The blob's transfer begins (or is found unneeded, a `Done` follows at once).
    Start {
        /// The blob's digest.
        id: String,
        /// Pull or push.
        action: Action,
        /// The blob's size in bytes.
        total: u64,
    },
    /// At most about ten a second per blob.
    Progress {
        /// The blob's digest.
        id: String,
        /// Bytes moved so far.
        done: u64,
        /// The blob's size in bytes.
        total: u64,
    },
    /// The blob is where it should be.
    Done {
        /// The blob's digest.
        id: String,
        /// How it got there.
        outcome: Outcome,
    },
    /// An attempt failed and another follows.
    Retry {
        /// The blob's digest.
        id: String,
        /// The attempt that follows, from 1.
        attempt: u32,
        /// Why the previous one failed.
        error: String,
    },
}

/// Receives [`TransferEvent`]s, from several threads at once.
pub type Progress<'a> = &'a (dyn Fn(TransferEvent) + Sync);

impl Registry {
    /// A client with these options; nothing is asked of any registry yet.
    pub fn new(options: RegistryOptions) -> Registry {
        let dir = options
            .docker_config_dir
            .clone()
            .unwrap_or_else(config::default_dir);
        Registry {
            client: Client::new(options, config::DockerConfig::new(dir)),
        }
    }

    /// The manifest for `platform`: by digest if the name has one (verified), else by tag.
    /// An index or Docker manifest list gives the entry whose platform satisfies `platform`
    /// (an error lists the platforms there are). Docker schema 1 is refused.
    pub fn resolve(&self, name: &ImageName, platform: &Platform) -> Result<Resolved> {
        self.client.resolve(name, platform)
    }

    /// The manifest or index the name points at, as it is (no platform choice).
    pub fn fetch_manifest(&self, name: &ImageName) -> Result<(Descriptor, Vec<u8>)> {
        self.client.fetch_manifest(name)
    }

    /// Downloads a blob of `repo` into the store, committed only once its digest and size
    /// are checked; nothing happens if the store has it. An interrupted download goes on
    /// from where it stopped when the server honours `Range`.
    pub fn fetch_blob(
        &self,
        repo: &ImageName,
        blob: &Descriptor,
        store: &Store,
        progress: Progress,
    ) -> Result<()> {
        self.client
            .fetch_blob(&Repo::of(repo), blob, store, progress)
    }

    /// Stores what `resolve` found for `name` (a resolution made earlier, so the image is the
    /// one planned with even if the tag moved since): the config, the layers (`parallel` at a
    /// time), then the manifest and the index. Does not tag.
    pub fn pull_resolved(
        &self,
        name: &ImageName,
        resolved: &Resolved,
        store: &Store,
        progress: Progress,
    ) -> Result<Pulled> {
        self.client.pull_resolved(name, resolved, store, progress)
    }

    /// Resolves `name` and stores the config, the layers (`parallel` at a time), then the
    /// manifest and the index. Does not tag.
    pub fn pull(
        &self,
        name: &ImageName,
        platform: &Platform,
        store: &Store,
        progress: Progress,
    ) -> Result<Pulled> {
        self.client.pull(name, platform, store, progress)
    }

    /// Pushes the manifest or index `manifest` (whose blob is in the store) with everything
    /// it names, then puts it under `dest`'s tag (or digest, when `dest` has only a digest).
    /// Returns the pushed manifest's descriptor.
    pub fn push(
        &self,
        store: &Store,
        manifest: &Descriptor,
        dest: &ImageName,
        progress: Progress,
    ) -> Result<Descriptor> {
        self.client.push(store, manifest, dest, progress)
    }

    /// Checks the credentials with the registry (`GET /v2/`, answering its challenge, so a
    /// token service is asked too), then saves them in config.json or its credential helper.
    pub fn login(&self, server: &str, username: &str, password: &str) -> Result<()> {
        let host = normalize_server(server);
        if host.is_empty() {
            return Err(RegistryError::Invalid(format!(
                "{server:?} is not a registry server"
            )));
        }
        let creds = Credentials {
            username: username.to_string(),
            secret: password.to_string(),
        };
        self.client.check_login(&host, &creds)?;
        self.client.docker_config.store(&host, &creds)?;
        self.client.forget_credentials(&host);
        Ok(())
    }

    /// Removes saved credentials for `server`; `Ok(false)` if there were none.
    pub fn logout(&self, server: &str) -> Result<bool> {
        let host = normalize_server(server);
        let removed = self.client.docker_config.erase(&host)?;
        self.client.forget_credentials(&host);
        Ok(removed)
    }
}

impl Client {
    fn check_login(&self, host: &str, creds: &Credentials) -> Result<()> {
        let repo = Repo {
            host: host.to_string(),
            path: String::new(),
        };
        let what = "logging in";
        let mut ping = Call::new(Method::GET, Target::Path("/v2/".into()));
        ping.auth = AuthMode::Anonymous;
        let response = self.call(&repo, what, &ping)?;
        let challenges = match response.status().as_u16() {
            // A registry that asks for nothing takes anyone.
            200 => return Ok(()),
            401 => http::challenges_of(&response),
            _ => return Err(http::unexpected(&repo, what, response)),
        };
        let header = if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(&repo, what, bearer, &[], Some(creds))?;
            format!("Bearer {}", token.value)
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            creds.basic()
        } else {
            return Err(RegistryError::Protocol {
                repo: host.to_string(),
                what: what.to_string(),
                message: "the registry asks for an authentication scheme kiln does not know".into(),
            });
        };
        let mut check = Call::new(Method::GET, Target::Path("/v2/".into()));
        check.auth = AuthMode::Header(header);
        let response = self.call(&repo, what, &check)?;
        match response.status().as_u16() {
            200 => Ok(()),
            401 | 403 => Err(self.unauthorized(&repo, what, response, true)),
            _ => Err(http::unexpected(&repo, what, response)),
        }
    }
}

/// The registry host of a server argument as `docker login` takes it: `docker.io`,
/// `https://index.docker.io/v1/` and `registry-1.docker.io` all give `docker.io`;
/// `https://127.0.0.1:5000/v2/` gives `127.0.0.1:5000`. Lowercased, without scheme or path.
pub fn normalize_server(server: &str) -> String {
    let s = server.trim();
    let lower = s.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        s.get(8..).unwrap_or_default()
    } else if lower.starts_with("http://") {
        s.get(7..).unwrap_or_default()
    } else {
        s
    };
    let host = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "docker.io" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn servers() {
        for hub in [
            "docker.io",
            "https://index.docker.io/v1/",
            "index.docker.io",
            "registry-1.docker.io",
            "HTTPS://Index.Docker.IO/v1/",
            " docker.io ",
        ] {
            assert_eq!(normalize_server(hub), "docker.io", "{hub}");
        }
        assert_eq!(normalize_server("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            normalize_server("https://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
        assert_eq!(normalize_server("http://localhost:5000"), "localhost:5000");
        assert_eq!(normalize_server("ghcr.io"), "ghcr.io");
        assert_eq!(normalize_server("Registry.Example"), "registry.example");
        assert_eq!(normalize_server("[::1]:5000"), "[::1]:5000");
        assert_eq!(normalize_server(""), "");
    }

    #[test]
    fn defaults() {
        let o = RegistryOptions::default();
        assert!(o.tls_verify);
        assert_eq!((o.parallel, o.retries), (6, 5));
        assert_eq!(o.docker_config_dir, None);
        assert!(o.user_agent.starts_with("kiln/"));
    }

    #[test]
    fn registry_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Registry>();
        check::<RegistryError>();
    }
}
