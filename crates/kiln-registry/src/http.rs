//! The HTTP side: agents, the https/http choice per host, the retry loop, redirects, and
//! answering authentication challenges.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::http::{Method, Request, Response, Uri};
use ureq::{Body, SendBody};

use crate::auth::{self, Challenge, Credentials, Token, TokenCache};
use crate::config::DockerConfig;
pub(crate) use crate::error::retryable_status;
use crate::error::{summarize_body, RegistryError, Result};
use crate::RegistryOptions;

/// How much of an error body is read to describe it.
const ERROR_BODY_MAX: u64 = 64 << 10;
/// A token answer is a small JSON object.
const TOKEN_BODY_MAX: u64 = 1 << 20;
const MAX_REDIRECTS: usize = 10;
/// The first pause between attempts, doubled each time up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(4);
/// The longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(10);
/// How much of a plain-http probe's answer is read to tell a TLS port's complaint.
const PROBE_BODY_MAX: u64 = 4 << 10;

/// A repository on a registry: `host` is the image name's domain as [`crate::normalize_server`]
/// gives it (`docker.io`, `127.0.0.1:5000`), `path` the repository path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repo {
    pub host: String,
    pub path: String,
}

impl Repo {
    pub fn of(name: &kiln_oci::ImageName) -> Repo {
        Repo {
            host: crate::normalize_server(name.domain()),
            path: name.path().to_string(),
        }
    }
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.host)
        } else {
            write!(f, "{}/{}", self.host, self.path)
        }
    }
}

/// Where a request goes: a path under the registry's base URL, or a URL the registry gave
/// (an upload `Location`), already resolved and checked.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Path(String),
    Url(String),
}

/// What Authorization a request carries.
#[derive(Clone)]
pub(crate) enum AuthMode {
    /// The registry's: a cached token or credentials, and on 401 the challenge is answered.
    Registry,
    /// None; a 401 comes back to the caller.
    Anonymous,
    /// This header value; a 401 comes back to the caller.
    Header(String),
}

/// Told the attempt number and why the previous attempt failed.
pub(crate) type OnRetry<'a> = &'a (dyn Fn(u32, &str) + Sync);
/// Told how many bytes of the body have been sent.
pub(crate) type OnSent<'a> = &'a (dyn Fn(u64) + Sync);

/// One logical request, sent as many times as retries and authentication need.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub target: Target,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<&'a [u8]>,
    /// Push access to the repository, not only pull.
    pub push: bool,
    /// Another repository of the same registry to read from (a cross-repository mount).
    pub mount_from: Option<String>,
    pub auth: AuthMode,
    /// Send again on connection errors, 5xx and 429. Off for requests whose repetition
    /// could do harm (a PATCH the server may have half taken).
    pub retry: bool,
    /// Bytes of the body sent so far.
    pub on_sent: Option<OnSent<'a>>,
    /// Attempt number and why the previous one failed.
    pub on_retry: Option<OnRetry<'a>>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, target: Target) -> Call<'a> {
        Call {
            method,
            target,
            headers: Vec::new(),
            body: None,
            push: false,
            mount_from: None,
            auth: AuthMode::Registry,
            retry: true,
            on_sent: None,
            on_retry: None,
        }
    }

    pub fn get(path: impl Into<String>) -> Call<'a> {
        Call::new(Method::GET, Target::Path(path.into()))
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Call<'a> {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: &'a [u8]) -> Call<'a> {
        self.body = Some(body);
        self
    }

    pub fn push(mut self) -> Call<'a> {
        self.push = true;
        self
    }

    pub fn no_retry(mut self) -> Call<'a> {
        self.retry = false;
        self
    }

    pub fn on_retry(mut self, f: Option<OnRetry<'a>>) -> Call<'a> {
        self.on_retry = f;
        self
    }

    fn scopes(&self, repo: &Repo) -> Vec<String> {
        let mut scopes = vec![auth::repository_scope(&repo.path, self.push)];
        if let Some(from) = &self.mount_from {
            scopes.push(auth::repository_scope(from, false));
        }
        scopes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
}

/// Held while one (host, scopes) token is fetched.
type FetchLock = Arc<Mutex<()>>;

/// Why a send produced no response to act on.
enum Failure {
    Transport(ureq::Error),
    /// A redirect we will not follow.
    Refused(String),
    /// The TLS settings for the host could not be made (a broken `certs.d` file).
    Trust(RegistryError),
}

pub(crate) struct Client {
    pub options: RegistryOptions,
    pub docker_config: DockerConfig,
    /// The proxy from the environment (never used for loopback hosts).
    proxy: Option<ureq::Proxy>,
    /// The `certs.d` directories looked in.
    certs_d: Vec<PathBuf>,
    /// One agent per host, made on first use with the host's TLS settings.
    agents: Mutex<HashMap<String, ureq::Agent>>,
    schemes: Mutex<HashMap<String, Scheme>>,
    challenges: Mutex<HashMap<String, Vec<Challenge>>>,
    tokens: TokenCache,
    /// Per (host, scopes), held while that token is fetched, so parallel transfers starting
    /// together ask once, while a slow token service only holds up the requests needing it.
    token_fetch: Mutex<HashMap<(String, String), FetchLock>>,
    credentials: Mutex<HashMap<String, Option<Credentials>>>,
}

/// How long the answer to an upload may take at least: the registry answers the last PUT of a
/// large blob once it has hashed it.
const UPLOAD_ANSWER_MIN: Duration = Duration::from_secs(300);

fn agent(
    options: &RegistryOptions,
    tls: ureq::tls::TlsConfig,
    proxy: Option<ureq::Proxy>,
) -> ureq::Agent {
    // Every step is bounded by the same idle time; none bounds a whole transfer, so a large
    // blob that keeps moving is never cut off, while a stalled one is within `timeout`.
    let idle = Some(options.timeout);
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Redirects are followed here, to check each target and drop credentials.
        .max_redirects(0)
        .user_agent(options.user_agent.as_str())
        .tls_config(tls)
        .proxy(proxy)
        .timeout_resolve(idle)
        .timeout_connect(idle)
        .timeout_send_request(idle)
        .timeout_recv_response(idle)
        .timeout_per_read(idle)
        .timeout_per_write(idle)
        .build()
        .into()
}

impl Client {
    pub fn new(options: RegistryOptions, docker_config: DockerConfig) -> Client {
        let certs_d = options
            .certs_d
            .clone()
            .unwrap_or_else(crate::tls::certs_d_roots);
        Client {
            proxy: ureq::Proxy::try_from_env(),
            certs_d,
            agents: Mutex::new(HashMap::new()),
            options,
            docker_config,
            schemes: Mutex::new(HashMap::new()),
            challenges: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
            token_fetch: Mutex::new(HashMap::new()),
            credentials: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `host` gets TLS without verification and may fall back to plain http.
    pub fn is_insecure(&self, host: &str) -> bool {
        !self.options.tls_verify || (is_loopback(host) && !self.options.tls_verify_loopback)
    }

    /// The agent for `host` (`host[:port]` as in the URL): its trust (the system's store and
    /// its `certs.d` CAs, or none for an insecure host), its client certificate, and the
    /// environment's proxy unless it is a loopback host.
    pub fn agent_for(&self, host: &str) -> Result<ureq::Agent> {
        if let Some(agent) = self.agents.lock().ok().and_then(|a| a.get(host).cloned()) {
            return Ok(agent);
        }
        let tls = crate::tls::tls_config_in(&self.certs_d, host, !self.is_insecure(host)).map_err(
            |source| RegistryError::Tls {
                host: host.to_string(),
                source,
            },
        )?;
        let proxy = if is_loopback(host) {
            None
        } else {
            self.proxy.clone()
        };
        let made = agent(&self.options, tls, proxy);
        if let Ok(mut agents) = self.agents.lock() {
            return Ok(agents.entry(host.to_string()).or_insert(made).clone());
        }
        Ok(made)
    }

    /// `https://host` or, for an insecure host that does not speak TLS, `http://host`;
    /// found out once per host, by asking `/v2/` (which also learns its challenge).
    fn base_url(&self, host: &str) -> std::result::Result<String, ureq::Error> {
        let api = api_host(host);
        let known = self.schemes.lock().ok().and_then(|s| s.get(host).copied());
        match known {
            Some(Scheme::Https) => return Ok(format!("https://{api}")),
            Some(Scheme::Http) => return Ok(format!("http://{api}")),
            None => {}
        }
        if !self.is_insecure(host) {
            return Ok(format!("https://{api}"));
        }
        let https = format!("https://{api}");
        let first = match self.probe(host, &https) {
            Ok(_) => {
                self.remember_scheme(host, Scheme::Https);
                return Ok(https);
            }
            Err(e) => e,
        };
        // Only a server that is there but does not speak TLS is asked in plain http; a
        // timeout, an unknown host or a refusal on the port named is the error itself (which
        // the caller may retry). Without a port, https (443) refused may still mean a plain
        // http registry on 80.
        let refused =
            matches!(&first, ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused);
        if !(not_tls(&first) || (refused && !has_port(&api))) {
            return Err(first);
        }
        let http = format!("http://{api}");
        match self.probe(host, &http) {
            Ok(true) => {
                self.remember_scheme(host, Scheme::Http);
                Ok(http)
            }
            // A TLS port complaining about plain http, or nothing there either: the https
            // error says what is wrong as well as any.
            Ok(false) | Err(_) => Err(first),
        }
    }

    /// `GET /v2/` at `base`, learning the challenge; `false` when the answer is a TLS port's
    /// complaint about a plain http request (nginx's and Go's 400s).
    fn probe(&self, host: &str, base: &str) -> std::result::Result<bool, ureq::Error> {
        // `call` made the host's agent first, so this only fails if that did.
        let agent = self
            .agent_for(&api_host(host))
            .map_err(|e| ureq::Error::Io(io::Error::other(e.to_string())))?;
        let request = Request::get(format!("{base}/v2/"))
            .body(())
            .map_err(ureq::Error::Http)?;
        let response = agent.run(request)?;
        match response.status().as_u16() {
            401 => {
                let challenges = challenges_of(&response);
                if !challenges.is_empty() {
                    self.set_challenges(host, challenges);
                }
            }
            400 if base.starts_with("http://") => {
                let body = read_bounded(response, PROBE_BODY_MAX).unwrap_or_default();
                let text = String::from_utf8_lossy(&body).to_ascii_lowercase();
                return Ok(!text.contains("https"));
            }
            _ => {}
        }
        Ok(true)
    }

    fn remember_scheme(&self, host: &str, scheme: Scheme) {
        if let Ok(mut schemes) = self.schemes.lock() {
            schemes.insert(host.to_string(), scheme);
        }
    }

    /// The origin requests to `host` go to, once known (for resolving `Location`s).
    pub fn base_for_location(&self, repo: &Repo, what: &str) -> Result<String> {
        self.base_url(&repo.host).map_err(|e| {
            self.connection_error(repo, what, &format!("https://{}", api_host(&repo.host)), &e)
        })
    }

    fn set_challenges(&self, host: &str, challenges: Vec<Challenge>) {
        if let Ok(mut all) = self.challenges.lock() {
            all.insert(host.to_string(), challenges);
        }
    }

    /// Credentials for `host` from the environment, else config.json or its helper, looked up
    /// once.
    pub fn credentials(&self, host: &str) -> Result<Option<Credentials>> {
        if let Some(known) = self
            .credentials
            .lock()
            .ok()
            .and_then(|c| c.get(host).cloned())
        {
            return Ok(known);
        }
        // Variables set for this host win over config.json (see env_credentials).
        let found = match crate::env_credentials::lookup(host)? {
            Some(creds) => Some(creds),
            None => self.docker_config.get(host)?,
        };
        if let Ok(mut cache) = self.credentials.lock() {
            cache.insert(host.to_string(), found.clone());
        }
        Ok(found)
    }

    /// After login or logout: the next request reads the new credentials.
    pub fn forget_credentials(&self, host: &str) {
        if let Ok(mut cache) = self.credentials.lock() {
            cache.remove(host);
        }
        self.tokens.clear_host(host);
    }

    /// Sends `call`, retrying as it allows, and answering one authentication challenge. Any
    /// HTTP status comes back as a response, except a 401 the registry keeps giving after
    /// being answered, which is an [`RegistryError::Unauthorized`].
    pub fn call(&self, repo: &Repo, what: &str, call: &Call) -> Result<Response<Body>> {
        let scopes = call.scopes(repo);
        let scope_key = scopes.join(" ");
        let mut attempt = 0u32;
        let mut answered_challenge = false;
        // A broken certs.d file for the host is an error of its own, before any connection.
        if let Target::Path(_) = &call.target {
            self.agent_for(&api_host(&repo.host))?;
        }
        loop {
            let (url, to_registry) = match &call.target {
                Target::Path(path) => match self.base_url(&repo.host) {
                    Ok(base) => (format!("{base}{path}"), true),
                    Err(e) => {
                        let url = format!("https://{}{path}", api_host(&repo.host));
                        if call.retry && retryable_transport(&e) && attempt < self.options.retries {
                            attempt = attempt.saturating_add(1);
                            self.pause(attempt, &describe_transport(&e), call.on_retry);
                            continue;
                        }
                        return Err(self.connection_error(repo, what, &url, &e));
                    }
                },
                Target::Url(url) => {
                    // Only a URL on the registry's own host gets its credentials; one with
                    // user information is refused when sent.
                    let to_registry = url
                        .parse::<Uri>()
                        .ok()
                        .and_then(|u| url_host(&u).ok())
                        .is_some_and(|h| h.eq_ignore_ascii_case(&api_host(&repo.host)));
                    (url.clone(), to_registry)
                }
            };
            let mut headers = call.headers.clone();
            let mut with_credentials = false;
            match &call.auth {
                AuthMode::Registry if to_registry => {
                    if let Some((value, creds)) =
                        self.authorization(repo, what, &scopes, &scope_key)?
                    {
                        headers.push(("authorization", value));
                        with_credentials = creds;
                    }
                }
                AuthMode::Header(value) => headers.push(("authorization", value.clone())),
                AuthMode::Registry | AuthMode::Anonymous => {}
            }
            let sent = self.send(&call.method, &url, &headers, call.body, call.on_sent);
            let (response, redirected) = match sent {
                Ok(r) => r,
                Err(Failure::Refused(message)) => {
                    return Err(RegistryError::Protocol {
                        repo: repo.to_string(),
                        what: what.to_string(),
                        message,
                    })
                }
                Err(Failure::Trust(e)) => return Err(e),
                Err(Failure::Transport(e)) => {
                    if call.retry && retryable_transport(&e) && attempt < self.options.retries {
                        attempt = attempt.saturating_add(1);
                        self.pause(attempt, &describe_transport(&e), call.on_retry);
                        continue;
                    }
                    return Err(self.connection_error(repo, what, &url, &e));
                }
            };
            let status = response.status().as_u16();
            if status == 401
                && matches!(call.auth, AuthMode::Registry)
                && to_registry
                && !redirected
            {
                let challenges = challenges_of(&response);
                // Basic without saved credentials: asking again would change nothing.
                let answerable = challenges.iter().any(|c| c.scheme == "bearer")
                    || (challenges.iter().any(|c| c.scheme == "basic")
                        && self.credentials(&repo.host)?.is_some());
                if !answered_challenge && answerable {
                    // A cached token may have been revoked early; a fresh one is asked for.
                    self.set_challenges(&repo.host, challenges);
                    self.tokens.forget(&repo.host, &scope_key);
                    answered_challenge = true;
                    continue;
                }
                if !challenges.is_empty() {
                    self.set_challenges(&repo.host, challenges);
                }
                return Err(self.unauthorized(repo, what, response, with_credentials));
            }
            if call.retry && retryable_status(status) && attempt < self.options.retries {
                let asked = retry_after(&response);
                let said = error_summary(response);
                attempt = attempt.saturating_add(1);
                self.pause_at_least(
                    attempt,
                    &format!("the registry answered {status}{}", colon(&said)),
                    call.on_retry,
                    asked,
                );
                continue;
            }
            return Ok(response);
        }
    }

    fn pause(&self, attempt: u32, why: &str, on_retry: Option<OnRetry<'_>>) {
        self.pause_at_least(attempt, why, on_retry, None);
    }

    /// The backoff, or what the server asked for (`Retry-After`) when that is longer.
    fn pause_at_least(
        &self,
        attempt: u32,
        why: &str,
        on_retry: Option<OnRetry<'_>>,
        asked: Option<Duration>,
    ) {
        if let Some(f) = on_retry {
            f(attempt, why);
        }
        std::thread::sleep(backoff(attempt).max(asked.unwrap_or_default()));
    }

    /// The Authorization header for a registry request, as far as the known challenge
    /// allows; `None` before any challenge (the first request goes anonymously). The flag
    /// says whether credentials went into it.
    fn authorization(
        &self,
        repo: &Repo,
        what: &str,
        scopes: &[String],
        scope_key: &str,
    ) -> Result<Option<(String, bool)>> {
        let challenges = self
            .challenges
            .lock()
            .ok()
            .and_then(|c| c.get(&repo.host).cloned());
        let Some(challenges) = challenges else {
            return Ok(None);
        };
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let creds = self.credentials(&repo.host)?;
            if let Some(token) = self.tokens.get(&repo.host, scope_key) {
                return Ok(Some((format!("Bearer {token}"), creds.is_some())));
            }
            let key = (repo.host.clone(), scope_key.to_string());
            let lock = self
                .token_fetch
                .lock()
                .map(|mut locks| locks.entry(key.clone()).or_default().clone())
                .unwrap_or_default();
            let fetched = {
                let _fetching = lock.lock();
                match self.tokens.get(&repo.host, scope_key) {
                    Some(token) => Ok(format!("Bearer {token}")),
                    None => self
                        .fetch_token(repo, what, bearer, scopes, creds.as_ref())
                        .map(|token| {
                            let value = format!("Bearer {}", token.value);
                            self.tokens.put(&repo.host, scope_key, token);
                            value
                        }),
                }
            };
            // The last one out removes the lock: only the map and this thread hold it.
            if let Ok(mut locks) = self.token_fetch.lock() {
                if Arc::strong_count(&lock) <= 2 {
                    locks.remove(&key);
                }
            }
            return fetched.map(|value| Some((value, creds.is_some())));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return Ok(self.credentials(&repo.host)?.map(|c| (c.basic(), true)));
        }
        Ok(None)
    }

    /// Asks the challenge's token service for a token for `scopes` (the challenge's own
    /// scope when there are none), with `creds` if given, anonymously otherwise.
    pub fn fetch_token(
        &self,
        repo: &Repo,
        what: &str,
        challenge: &Challenge,
        scopes: &[String],
        creds: Option<&Credentials>,
    ) -> Result<Token> {
        let protocol = |message: String| RegistryError::Protocol {
            repo: repo.to_string(),
            what: what.to_string(),
            message,
        };
        let realm = challenge
            .param("realm")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                protocol("the registry's Bearer challenge names no token service (realm)".into())
            })?;
        let shown = strip_query(realm);
        let realm_uri: Uri = realm
            .parse()
            .map_err(|_| protocol(format!("the token service {shown:?} is not a URL")))?;
        let realm_host = url_host(&realm_uri)
            .map_err(|why| protocol(format!("refusing the token service {shown:?}: {why}")))?;
        // Credentials go to an http realm only when the realm itself is a host we talk to
        // without TLS checks: a loopback registry (say port-forwarded) does not make
        // `http://auth.corp` safe.
        match realm_uri
            .scheme_str()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("https") => {}
            Some("http") if self.is_insecure(&realm_host) => {}
            _ => {
                return Err(protocol(format!(
                    "refusing the token service {shown:?}: only https is used for it"
                )))
            }
        }
        let mut query = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(format!("service={}", query_escape(service)));
        }
        let asked: Vec<String> = if scopes.is_empty() {
            challenge
                .param("scope")
                .map(|s| {
                    s.split(' ')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        } else {
            scopes.to_vec()
        };
        for scope in &asked {
            query.push(format!("scope={}", query_escape(scope)));
        }
        let mut url = realm.to_string();
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query.join("&"));
        }
        let mut call = Call::new(Method::GET, Target::Url(url));
        call.auth = match creds {
            Some(c) => AuthMode::Header(c.basic()),
            None => AuthMode::Anonymous,
        };
        let what_token = format!("{what}: asking {realm_host} for a token");
        let response = self.call(repo, &what_token, &call)?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.unauthorized(repo, what, response, creds.is_some()));
        }
        if status != 200 {
            return Err(unexpected(repo, &what_token, response));
        }
        let body = read_bounded(response, TOKEN_BODY_MAX)
            .map_err(|e| protocol(format!("reading the token from {realm_host}: {e}")))?;
        auth::parse_token_response(&body, std::time::Instant::now()).ok_or_else(|| {
            protocol(format!(
                "the token service {realm_host} answered something that is not a token: {}",
                summarize_body(&body)
            ))
        })
    }

    pub(crate) fn unauthorized(
        &self,
        repo: &Repo,
        what: &str,
        response: Response<Body>,
        with_credentials: bool,
    ) -> RegistryError {
        let status = response.status().as_u16();
        let scope_refused = challenges_of(&response)
            .iter()
            .any(|c| c.param("error") == Some("insufficient_scope"));
        let said = error_summary(response);
        let reason = if with_credentials && scope_refused {
            format!(
                "does not give these credentials this access, or the repository does not exist ({status}{})",
                colon(&said)
            )
        } else if with_credentials {
            format!("refused the credentials ({status}{})", colon(&said))
        } else {
            format!(
                "requires authentication, or the repository does not exist ({status}{})",
                colon(&said)
            )
        };
        RegistryError::Unauthorized {
            host: repo.host.clone(),
            repo: repo.to_string(),
            what: what.to_string(),
            reason,
        }
    }

    pub fn connection_error(
        &self,
        repo: &Repo,
        what: &str,
        url: &str,
        e: &ureq::Error,
    ) -> RegistryError {
        if let Some(message) = crate::tls::explain(e, url) {
            return RegistryError::TlsHandshake {
                repo: repo.to_string(),
                what: what.to_string(),
                url: strip_query(url),
                message,
            };
        }
        RegistryError::Connection {
            repo: repo.to_string(),
            what: what.to_string(),
            url: strip_query(url),
            message: describe_transport(e),
        }
    }

    /// Sends once, following redirects of GET and HEAD; the response and whether it came
    /// from somewhere else than `url`.
    fn send(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&'static str, String)],
        body: Option<&[u8]>,
        on_sent: Option<OnSent<'_>>,
    ) -> std::result::Result<(Response<Body>, bool), Failure> {
        let follows = *method == Method::GET || *method == Method::HEAD;
        let mut url = url.to_string();
        let mut headers = headers.to_vec();
        for hop in 0..=MAX_REDIRECTS {
            let response = self.send_one(method, &url, &headers, body, on_sent)?;
            let status = response.status().as_u16();
            if !follows || !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok((response, hop > 0));
            }
            let Some(location) = header(&response, "location") else {
                return Ok((response, hop > 0));
            };
            let next = resolve_location(&url, location, |h| self.is_insecure(h))
                .map_err(Failure::Refused)?;
            // Storage behind a redirect gets a signed URL, never our credentials.
            if origin(&next) != origin(&url) {
                headers.retain(|(name, _)| *name != "authorization");
            }
            url = next;
        }
        Err(Failure::Refused(format!(
            "more than {MAX_REDIRECTS} redirects, the last to {}",
            strip_query(&url)
        )))
    }

    fn send_one(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&'static str, String)],
        body: Option<&[u8]>,
        on_sent: Option<OnSent<'_>>,
    ) -> std::result::Result<Response<Body>, Failure> {
        let uri: Uri = url
            .parse()
            .map_err(|_| Failure::Refused(format!("invalid URL {:?}", strip_query(url))))?;
        let host = url_host(&uri)
            .map_err(|why| Failure::Refused(format!("refusing {:?}: {why}", strip_query(url))))?;
        let agent = self.agent_for(&host).map_err(Failure::Trust)?;
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        let result = match body {
            Some(bytes) => {
                let mut reader = Counting {
                    bytes,
                    pos: 0,
                    on_sent,
                };
                let request = builder
                    .header("content-length", bytes.len().to_string())
                    .body(SendBody::from_reader(&mut reader))
                    .map_err(|e| Failure::Transport(ureq::Error::Http(e)))?;
                let request = agent
                    .configure_request(request)
                    .timeout_recv_response(Some(self.options.timeout.max(UPLOAD_ANSWER_MIN)))
                    .build();
                agent.run(request)
            }
            None => {
                let request = builder
                    .body(())
                    .map_err(|e| Failure::Transport(ureq::Error::Http(e)))?;
                if *method == Method::GET || *method == Method::HEAD {
                    agent.run(request)
                } else {
                    // The PUT that ends a chunked upload is answered once the registry has
                    // hashed the whole blob.
                    let request = agent
                        .configure_request(request)
                        .timeout_recv_response(Some(self.options.timeout.max(UPLOAD_ANSWER_MIN)))
                        .build();
                    agent.run(request)
                }
            }
        };
        result.map_err(Failure::Transport)
    }
}

/// A byte slice as a `Read` that reports how much has been taken.
struct Counting<'a> {
    bytes: &'a [u8],
    pos: usize,
    on_sent: Option<OnSent<'a>>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos = self.pos.saturating_add(n);
        if let (Some(f), true) = (self.on_sent, n > 0) {
            f(u64::try_from(self.pos).unwrap_or(u64::MAX));
        }
        Ok(n)
    }
}

/// Docker Hub's API lives on another host than its name.
pub(crate) fn api_host(host: &str) -> String {
    if host == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        host.to_string()
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`, with or without a port; nothing else (not
/// `localhost:1@evil.example`, whose host is `evil.example`).
pub(crate) fn is_loopback(host: &str) -> bool {
    let Some((bare, _)) = split_host_port(host) else {
        return false;
    };
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host[:port]`, `[v6][:port]` or a bare IPv6 address as host and port; `None` for
/// anything else (user information, a port that is not a number, text after `]`).
fn split_host_port(host: &str) -> Option<(&str, Option<u16>)> {
    let port = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse::<u16>().ok())
            .flatten()
    };
    let (bare, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (inside, None),
            _ => (inside, Some(port(after.strip_prefix(':')?)?)),
        }
    } else if host.matches(':').count() > 1 {
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host, None)
    } else {
        match host.split_once(':') {
            Some((h, p)) => (h, Some(port(p)?)),
            None => (host, None),
        }
    };
    let name_ok = bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    (!bare.is_empty() && name_ok).then_some((bare, port))
}

/// Whether `host` names its port (so https and http would go to the same one).
fn has_port(host: &str) -> bool {
    split_host_port(host).is_some_and(|(_, port)| port.is_some())
}

/// The `host[:port]` a URL goes to, for the loopback and insecure checks, the host
/// lowercased. A URL with user information is refused: `http://localhost:1@evil.example/`
/// goes to `evil.example`, and registries have no business sending one.
pub(crate) fn url_host(uri: &Uri) -> std::result::Result<String, String> {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if authority.contains('@') {
        return Err("it carries user information (user@host)".to_string());
    }
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err("it has no host".to_string());
    }
    let rest = authority.get(host.len()..).unwrap_or_default();
    let port = match rest.strip_prefix(':') {
        _ if rest.is_empty() => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("its port {p:?} is invalid"))?,
        ),
        _ => return Err("its host is invalid".to_string()),
    };
    let host = host.to_ascii_lowercase();
    Ok(match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// Failures to get an answer that a later attempt may not have.
pub(crate) fn retryable_transport(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(e) => retryable_io(e.kind()),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_) => true,
        _ => false,
    }
}

/// Whether an https attempt failed in a way that says something is there but does not
/// speak TLS: a handshake failure, a record that is not TLS (a plain http server's answer),
/// the connection reset or closed during the handshake. Not a timeout, an unknown host, or
/// a refused connection: those say nothing about http.
pub(crate) fn not_tls(e: &ureq::Error) -> bool {
    use io::ErrorKind::*;
    match e {
        ureq::Error::Io(e) => matches!(
            e.kind(),
            InvalidData | ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe
        ),
        ureq::Error::Rustls(_)
        | ureq::Error::Tls(_)
        | ureq::Error::Protocol(_)
        | ureq::Error::TlsRequired => true,
        _ => false,
    }
}

/// `Retry-After` in seconds on a 429 or 503, at most [`RETRY_AFTER_MAX`]. The date form is
/// not read (the backoff applies).
pub(crate) fn retry_after(response: &Response<Body>) -> Option<Duration> {
    parse_retry_after(response.status().as_u16(), header(response, "retry-after"))
}

fn parse_retry_after(status: u16, value: Option<&str>) -> Option<Duration> {
    if !matches!(status, 429 | 503) {
        return None;
    }
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_MAX))
}

pub(crate) fn retryable_io(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | TimedOut
            | UnexpectedEof
            | Interrupted
            | WouldBlock
    )
}

/// 250 ms, 500 ms, 1 s, 2 s, then 4 s for every later attempt.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    BACKOFF_START
        .checked_mul(1u32 << doublings)
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

pub(crate) fn describe_transport(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
            "connection refused".to_string()
        }
        ureq::Error::Io(io) => tls_hint(io.to_string()),
        ureq::Error::Timeout(t) => format!("no answer in time ({t})"),
        ureq::Error::HostNotFound => "the host name does not resolve".to_string(),
        ureq::Error::Rustls(e) => tls_hint(e.to_string()),
        ureq::Error::Tls(e) => tls_hint(e.to_string()),
        // The one ureq error that names a URL.
        ureq::Error::BadUri(uri) => format!("invalid URL {:?}", strip_query(uri)),
        other => other.to_string(),
    }
}

/// TLS failures come out of rustls as terse text; say what they mean and what to do.
fn tls_hint(text: String) -> String {
    if text.contains("certificate") {
        format!("TLS: {text}")
    } else if text.contains("corrupt message") {
        format!(
            "TLS: {text} (the registry may speak plain http, which kiln only uses for loopback registries without --tls-verify=true, or with --tls-verify=false)"
        )
    } else {
        text
    }
}

/// Every challenge of every `WWW-Authenticate` header.
pub(crate) fn challenges_of(response: &Response<Body>) -> Vec<Challenge> {
    response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(auth::parse_challenges)
        .collect()
}

pub(crate) fn header<'r>(response: &'r Response<Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn colon(said: &str) -> String {
    if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    }
}

/// Reads at most `limit` bytes of the body; more is an error, not a truncation.
pub(crate) fn read_bounded(response: Response<Body>, limit: u64) -> io::Result<Vec<u8>> {
    if let Some(len) = response.body().content_length() {
        if len > limit {
            return Err(io::Error::other(format!(
                "the answer is {len} bytes, over the limit of {limit}"
            )));
        }
    }
    let mut bytes = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::other(format!(
            "the answer is over the limit of {limit} bytes"
        )));
    }
    Ok(bytes)
}

/// The server's error body, short (see [`summarize_body`]).
pub(crate) fn error_summary(response: Response<Body>) -> String {
    let mut bytes = Vec::new();
    // An error body that cannot be read still leaves the status to report.
    let _ = response
        .into_body()
        .into_reader()
        .take(ERROR_BODY_MAX)
        .read_to_end(&mut bytes);
    summarize_body(&bytes)
}

/// The error for a status the operation did not expect: 404 is [`RegistryError::NotFound`].
pub(crate) fn unexpected(repo: &Repo, what: &str, response: Response<Body>) -> RegistryError {
    let status = response.status().as_u16();
    let body = error_summary(response);
    if status == 404 {
        RegistryError::NotFound {
            repo: repo.to_string(),
            what: what.to_string(),
            body,
        }
    } else {
        RegistryError::Status {
            repo: repo.to_string(),
            what: what.to_string(),
            status,
            body,
        }
    }
}

/// Resolves a `Location` (or redirect) against the URL it answered: absolute, scheme-relative
/// (`//host/p`), absolute-path (`/p`) or relative (`p`). Plain http after https is refused
/// unless `insecure` allows it for the new host; schemes other than http(s) always are, as
/// are URLs with user information and going from another host to a loopback one.
pub(crate) fn resolve_location(
    current: &str,
    location: &str,
    insecure: impl Fn(&str) -> bool,
) -> std::result::Result<String, String> {
    let location = location.trim();
    let shown = || strip_query(location);
    if location.is_empty() {
        return Err("the registry sent an empty Location".to_string());
    }
    let (scheme, _) = current
        .split_once("://")
        .ok_or_else(|| format!("invalid URL {:?}", strip_query(current)))?;
    let resolved = if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{location}", origin(current))
    } else if let Some((other, _)) = location.split_once(':').filter(|(s, _)| is_scheme(s)) {
        if !other.eq_ignore_ascii_case("http") && !other.eq_ignore_ascii_case("https") {
            return Err(format!(
                "refusing to follow {:?}: not http or https",
                shown()
            ));
        }
        location.to_string()
    } else {
        let path_end = current.find(['?', '#']).unwrap_or(current.len());
        let base = current.get(..path_end).unwrap_or(current);
        let origin_len = origin(current).len();
        let dir = match base.rfind('/') {
            Some(i) if i >= origin_len => base.get(..=i).unwrap_or(base).to_string(),
            _ => format!("{}/", origin(current)),
        };
        format!("{dir}{location}")
    };
    let uri: Uri = resolved
        .parse()
        .map_err(|_| format!("the registry sent an invalid Location {:?}", shown()))?;
    let host = url_host(&uri)
        .map_err(|why| format!("refusing to follow {:?}: {why}", strip_query(&resolved)))?;
    let current_host = current
        .parse::<Uri>()
        .ok()
        .and_then(|u| url_host(&u).ok())
        .unwrap_or_default();
    // A remote registry must not steer us to this machine's own services.
    if is_loopback(&host) && !is_loopback(&current_host) {
        return Err(format!(
            "refusing to follow {:?}: it goes from {current_host} to a loopback address",
            strip_query(&resolved)
        ));
    }
    let new_scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    if new_scheme == "http" && scheme.eq_ignore_ascii_case("https") && !insecure(&host) {
        return Err(format!(
            "refusing to follow {:?}: it goes from https to plain http",
            strip_query(&resolved)
        ));
    }
    // `http::Uri` keeps the text as given, so what was checked is what is sent.
    Ok(resolved)
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `scheme://authority` of a URL.
fn origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        rest.get(..end).unwrap_or(rest).to_ascii_lowercase()
    )
}

/// A URL for messages: signed storage URLs and upload states carry secrets in the query,
/// and user information may be a password; both are cut.
pub(crate) fn strip_query(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = url.get(..end).unwrap_or(url);
    if let Some((scheme, rest)) = url.split_once("://") {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        let authority = rest.get(..auth_end).unwrap_or(rest);
        if let Some((_, host)) = authority.rsplit_once('@') {
            let path = rest.get(auth_end..).unwrap_or_default();
            return format!("{scheme}://{host}{path}");
        }
    }
    url.to_string()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Appends `name=value` (value escaped) to a URL's query.
pub(crate) fn with_query(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={}", query_escape(value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn never(_: &str) -> bool {
        false
    }

    #[test]
    fn locations() {
        let cur = "https://reg.example:5000/v2/a/b/blobs/uploads/";
        assert_eq!(
            resolve_location(cur, "/v2/a/b/blobs/uploads/u1?_state=x", never).unwrap(),
            "https://reg.example:5000/v2/a/b/blobs/uploads/u1?_state=x"
        );
        assert_eq!(
            resolve_location(cur, "https://other.example/up?sig=1", never).unwrap(),
            "https://other.example/up?sig=1"
        );
        assert_eq!(
            resolve_location(cur, "//cdn.example/x", never).unwrap(),
            "https://cdn.example/x"
        );
        assert_eq!(
            resolve_location(cur, "u2?s=1", never).unwrap(),
            "https://reg.example:5000/v2/a/b/blobs/uploads/u2?s=1"
        );
        assert_eq!(
            resolve_location("https://h?q=/x", "u", never).unwrap(),
            "https://h/u"
        );
        assert_eq!(
            resolve_location(
                "http://127.0.0.1:5000/v2/x/blobs/uploads/",
                "  /v2/x/u  ",
                never
            )
            .unwrap(),
            "http://127.0.0.1:5000/v2/x/u"
        );
    }

    #[test]
    fn location_refusals() {
        let cur = "https://reg.example/v2/x/blobs/uploads/";
        let e = resolve_location(cur, "http://reg.example/v2/x?_state=secret", never).unwrap_err();
        assert!(e.contains("https to plain http"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        // Allowed for an insecure host.
        assert!(resolve_location(
            "https://localhost:5000/v2/",
            "http://localhost:5000/x",
            is_loopback
        )
        .is_ok());
        assert!(resolve_location(cur, "http://other.example/x", |_| true).is_ok());
        assert!(resolve_location(cur, "ftp://reg.example/x", never).is_err());
        assert!(resolve_location(cur, "file:///etc/passwd", never).is_err());
        assert!(resolve_location(cur, "", never).is_err());
        assert!(resolve_location(cur, "https:///nohost", never).is_err());
        assert!(resolve_location(cur, "https://bad host/", never).is_err());
        // http to http is no downgrade.
        assert!(resolve_location("http://h/x", "http://g/y", never).is_ok());
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.1.2.3:5000",
            "[::1]",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.example",
            "10.0.0.1:5000",
            "localhost.example",
            "[::2]:5000",
            "128.0.0.1",
            // User information: the host is what follows the @.
            "localhost:1@x",
            "localhost:1@evil.example",
            "[::1]@x",
            "[::1]:5000@x",
            "127.0.0.1@evil",
            "localhost@evil",
            // Not a host[:port] at all.
            "localhost:",
            "localhost:abc",
            "localhost:99999",
            "[::1]x",
            "[localhost]",
            "",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
        assert!(has_port("localhost:5000") && has_port("[::1]:1"));
        assert!(!has_port("localhost") && !has_port("[::1]") && !has_port("::1"));
    }

    #[test]
    fn url_hosts() {
        let host = |u: &str| url_host(&u.parse::<Uri>().unwrap());
        assert_eq!(
            host("https://Reg.Example:5000/v2/").unwrap(),
            "reg.example:5000"
        );
        assert_eq!(host("https://[::1]:5000/x").unwrap(), "[::1]:5000");
        assert_eq!(host("http://127.0.0.1/x?q").unwrap(), "127.0.0.1");
        for bad in [
            "http://localhost:1@x/t",
            "http://localhost:1@evil.example/token",
            "http://[::1]@x/t",
            "http://127.0.0.1@evil/t",
            "https://user:pw@reg.example/x",
            "http://h:99999/x",
        ] {
            let e = host(bad).unwrap_err();
            assert!(!e.contains("pw"), "{e}");
        }
        assert!(host("http://localhost:1@x/t")
            .unwrap_err()
            .contains("user information"));
    }

    #[test]
    fn locations_with_user_information_are_refused() {
        // Even where plain http would be allowed: the real host is not loopback.
        for cur in ["https://localhost:5000/v2/x/", "https://reg.example/v2/x/"] {
            for location in [
                "http://localhost:1@evil.example/x",
                "http://[::1]@x/y",
                "http://127.0.0.1@evil/y",
                "https://user:secret@reg.example/y?s=1",
                "//localhost:1@evil.example/x",
            ] {
                let e = resolve_location(cur, location, is_loopback).unwrap_err();
                assert!(e.contains("user information"), "{location}: {e}");
                assert!(!e.contains("secret") && !e.contains("s=1"), "{e}");
            }
        }
    }

    #[test]
    fn no_redirects_from_elsewhere_to_loopback() {
        let cur = "https://reg.example/v2/x/blobs/sha256:a";
        for location in [
            "https://127.0.0.1:5000/x",
            "https://localhost/x",
            "http://[::1]:80/x",
            "//127.1.2.3/x",
        ] {
            let e = resolve_location(cur, location, |_| true).unwrap_err();
            assert!(e.contains("loopback"), "{location}: {e}");
        }
        // Loopback to loopback, and loopback to elsewhere, are fine.
        let local = "http://127.0.0.1:5000/v2/x/";
        assert!(resolve_location(local, "http://localhost:5000/y", is_loopback).is_ok());
        assert!(resolve_location(local, "https://cdn.example/y", never).is_ok());
    }

    #[test]
    fn plain_http_only_after_a_tls_failure() {
        let io = |k| ureq::Error::Io(io::Error::from(k));
        // Something there that does not speak TLS.
        assert!(not_tls(&io(io::ErrorKind::InvalidData)));
        assert!(not_tls(&io(io::ErrorKind::ConnectionReset)));
        assert!(not_tls(&io(io::ErrorKind::UnexpectedEof)));
        assert!(not_tls(&ureq::Error::Tls("handshake failure")));
        // Nothing said about TLS: the error stands.
        assert!(!not_tls(&io(io::ErrorKind::ConnectionRefused)));
        assert!(!not_tls(&io(io::ErrorKind::TimedOut)));
        assert!(!not_tls(&io(io::ErrorKind::WouldBlock)));
        assert!(!not_tls(&ureq::Error::Timeout(ureq::Timeout::Connect)));
        assert!(!not_tls(&ureq::Error::HostNotFound));
        assert!(!not_tls(&ureq::Error::ConnectionFailed));
    }

    #[test]
    fn retry_after_seconds_capped() {
        let d = |s, v| parse_retry_after(s, v).map(|d: Duration| d.as_secs());
        assert_eq!(d(503, Some("3")), Some(3));
        assert_eq!(d(429, Some(" 0 ")), Some(0));
        assert_eq!(d(429, Some("3600")), Some(10));
        assert_eq!(d(503, Some("18446744073709551615")), Some(10));
        assert_eq!(d(503, Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(d(503, Some("-1")), None);
        assert_eq!(d(503, None), None);
        assert_eq!(d(500, Some("3")), None);
    }

    #[test]
    fn retry_classification() {
        for s in [500, 502, 503, 504, 429, 599] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 201, 400, 401, 403, 404, 416] {
            assert!(!retryable_status(s), "{s}");
        }
        let io = |k| ureq::Error::Io(io::Error::from(k));
        assert!(retryable_transport(&io(io::ErrorKind::ConnectionRefused)));
        assert!(retryable_transport(&io(io::ErrorKind::ConnectionReset)));
        assert!(retryable_transport(&io(io::ErrorKind::UnexpectedEof)));
        assert!(retryable_transport(&ureq::Error::ConnectionFailed));
        assert!(!retryable_transport(&io(io::ErrorKind::PermissionDenied)));
        assert!(!retryable_transport(&ureq::Error::HostNotFound));
        assert!(!retryable_transport(&ureq::Error::BadUri("x".into())));
        assert!(!retryable_transport(&ureq::Error::Tls("bad cert")));
    }

    #[test]
    fn backoff_doubles_up_to_four_seconds() {
        let ms = |n| backoff(n).as_millis();
        assert_eq!(
            (ms(1), ms(2), ms(3), ms(4), ms(5), ms(6), ms(100)),
            (250, 500, 1000, 2000, 4000, 4000, 4000)
        );
        assert_eq!(ms(0), 250);
    }

    #[test]
    fn hosts_and_queries() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("ghcr.io"), "ghcr.io");
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(
            with_query("https://h/u?_state=x", "digest", "sha256:ab"),
            "https://h/u?_state=x&digest=sha256%3Aab"
        );
        assert_eq!(with_query("https://h/u", "a", "b c"), "https://h/u?a=b%20c");
        assert_eq!(strip_query("https://h/p?secret#f"), "https://h/p");
        assert_eq!(strip_query("https://u:pw@h:1/p?s"), "https://h:1/p");
        assert_eq!(strip_query("https://a@b@h"), "https://h");
        assert_eq!(strip_query("/v2/x?s=1"), "/v2/x");
        assert_eq!(
            describe_transport(&ureq::Error::BadUri("https://h/p?sig=secret".into())),
            "invalid URL \"https://h/p\""
        );
        assert_eq!(origin("HTTPS://H:1/p?q"), "https://h:1");
    }

    #[test]
    fn repo_display() {
        let name = kiln_oci::ImageName::parse("127.0.0.1:5000/foo:1").unwrap();
        assert_eq!(Repo::of(&name).to_string(), "127.0.0.1:5000/foo");
        let hub = kiln_oci::ImageName::parse("alpine").unwrap();
        let repo = Repo::of(&hub);
        assert_eq!(
            (repo.host.as_str(), repo.path.as_str()),
            ("docker.io", "library/alpine")
        );
    }
}
