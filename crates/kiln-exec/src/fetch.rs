//! `ADD <http(s) URL>`: downloads one remote file for a COPY/ADD step, as Docker and BuildKit do.
//!
//! What this matches (BuildKit's Dockerfile frontend and its HTTP source):
//!
//! * **File name**: the last segment of the *original* URL's path, percent-decoded, never the
//!   redirect target's and never `Content-Disposition` (the frontend always passes an explicit
//!   name, so BuildKit does not look at that header for `ADD`). Trailing slashes are dropped
//!   first, as Go's `path.Base` does, so `https://h/dir/` names the file `dir`; a URL without a
//!   path (`https://h`, `https://h/`) gives `__unnamed__`. A name that is empty, `.`, `..` or
//!   holds a control character becomes `download`. The query and fragment never count.
//! * **mtime**: the `Last-Modified` header in any of the three HTTP date forms (IMF-fixdate,
//!   RFC 850, asctime), as Go's `http.ParseTime` reads them; `None` when absent or unreadable.
//!   BuildKit then uses the Unix epoch (0).
//! * **Content**: stored exactly as the server sent it: ureq is built without its gzip feature,
//!   so no `Accept-Encoding` is sent and nothing is decompressed. Remote archives are never
//!   unpacked by ADD; that is the caller's rule, not this module's.
//! * **Status**: anything but 2xx after redirects is an error naming the status.
//! * **Redirects**: followed up to [`FetchLimits::max_redirects`] (Go's client stops at 10).
//! * **`--checksum`**: `sha256:`, `sha384:` or `sha512:` followed by the hex digest, checked
//!   against the bytes as they stream to disk; a mismatch names both digests and leaves no file.
//! * **Proxies**: ureq reads `ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY` (first one set wins,
//!   whatever the URL's scheme) and honours `NO_PROXY`; as in Go, a URL whose host is
//!   `localhost` or a loopback address never goes through a proxy.
//!
//! The body is streamed to a temporary file in the work directory and hashed as it is written;
//! it is never held in memory. Every failure removes the partial file.

use sha2::{Digest as _, Sha256, Sha384, Sha512};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use ureq::http::Uri;
use ureq::ResponseExt as _;

/// A downloaded file, ready to be placed in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The downloaded file, inside the work directory given to [`fetch_url`]; mode 0600. The
    /// caller owns it from now on (moves or removes it).
    pub path: PathBuf,
    /// The name the file gets in the image when the destination is a directory.
    pub file_name: String,
    /// Seconds since the epoch, from `Last-Modified`; `None` when the server sent none.
    pub mtime: Option<i64>,
    /// `sha256:<hex>` of the content.
    pub digest: String,
}

/// Bounds on one download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchLimits {
    /// The largest body accepted, in bytes. A `Content-Length` above it is refused before any
    /// byte is read; a body without one is cut off as soon as it passes it.
    pub max_bytes: u64,
    /// The longest wait for any single step: resolving the host, connecting (TLS included), the
    /// response headers, and each read of the body. A slow download that keeps making progress
    /// is never cut off; `max_bytes` bounds how much it can send.
    pub timeout: Duration,
    /// How many redirects are followed; one more is an error. 0 follows none.
    pub max_redirects: u32,
}

impl Default for FetchLimits {
    /// 8 GiB, 60 s without progress, 10 redirects (Go's client's limit, which BuildKit uses).
    fn default() -> Self {
        FetchLimits {
            max_bytes: 8 << 30,
            timeout: Duration::from_secs(60),
            max_redirects: 10,
        }
    }
}

/// Why a download failed. URLs in messages have any password replaced by `xxxxx`.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL cannot be downloaded as written (not http or https, no host, bad syntax).
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `ADD --checksum` is not `sha256:` + 64 hex digits.
    #[error("invalid --checksum {checksum:?}: {reason}")]
    InvalidChecksum {
        /// The value given.
        checksum: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing listens at the server's (or the proxy's) port.
    #[error("cannot download {url}: connection refused by {peer}; check that the server is up and the port is right")]
    ConnectionRefused {
        /// The URL, password hidden.
        url: String,
        /// `host:port` of the server, or `the proxy host:port`.
        peer: String,
    },
    /// The host name does not resolve.
    #[error("cannot download {url}: cannot resolve host {host:?} ({detail}); check the spelling, the DNS settings and the network")]
    HostNotFound {
        /// The URL, password hidden.
        url: String,
        /// The host name.
        host: String,
        /// What the resolver said.
        detail: String,
    },
    /// The server did not answer in time.
    #[error("cannot download {url}: no answer within {}; check the network or the proxy settings", DurationText(*.timeout))]
    Timeout {
        /// The URL, password hidden.
        url: String,
        /// How long kiln waited.
        timeout: Duration,
    },
    /// The server answered with a status other than success.
    #[error("cannot download {url}: the server answered {status}{}{}", reason_text(.reason), status_hint(*.status))]
    Status {
        /// The URL, password hidden.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The reason phrase, when the server sent one.
        reason: Option<String>,
    },
    /// The server redirected more times than kiln follows.
    #[error("cannot download {url}: more than {max} redirects")]
    TooManyRedirects {
        /// The URL, password hidden.
        url: String,
        /// The most redirects followed.
        max: u32,
    },
    /// The download is larger than the limit.
    #[error("cannot download {url}: {} is larger than the limit of {limit} bytes", size_text(*.size))]
    TooLarge {
        /// The URL, password hidden.
        url: String,
        /// The limit in bytes.
        limit: u64,
        /// The announced `Content-Length`, when the server sent one.
        size: Option<u64>,
    },
    /// The downloaded bytes do not have the digest `ADD --checksum` names.
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}; the file on the server changed or the --checksum is wrong")]
    ChecksumMismatch {
        /// The URL, password hidden.
        url: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what came.
        actual: String,
    },
    /// The TLS handshake or certificate check failed.
    #[error("cannot download {url}: TLS: {message}")]
    Tls {
        /// The URL, password hidden.
        url: String,
        /// What the TLS library said.
        message: String,
    },
    /// The proxy refused or could not be reached.
    #[error("cannot download {url}: proxy: {message}; check HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY")]
    Proxy {
        /// The URL, password hidden.
        url: String,
        /// What the HTTP client said.
        message: String,
    },
    /// Another network failure (connection reset, a broken answer).
    #[error("cannot download {url}: {message}")]
    Network {
        /// The URL, password hidden.
        url: String,
        /// What the HTTP client said.
        message: String,
    },
    /// The download could not be written to disk.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

fn reason_text(reason: &Option<String>) -> String {
    reason.as_ref().map(|r| format!(" {r}")).unwrap_or_default()
}

fn status_hint(status: u16) -> &'static str {
    match status {
        300..=399 => " (a redirect that was not followed)",
        401 | 403 => {
            " (the server wants credentials: make the file public, or download it in a RUN step with a secret mount)"
        }
        404 | 410 => " (check the URL)",
        500..=599 => " (a server error; try again later)",
        _ => "",
    }
}

fn size_text(size: Option<u64>) -> String {
    match size {
        Some(size) => format!("the file ({size} bytes)"),
        None => "the file".to_string(),
    }
}

/// `500ms`, `60s`, `1.5s`.
struct DurationText(Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.as_secs() == 0 {
            write!(f, "{}ms", self.0.subsec_millis())
        } else if self.0.subsec_millis() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}s", self.0.as_secs_f64())
        }
    }
}

/// Downloads `url` (http or https) into a new file in `work_dir`.
///
/// `checksum` is the `--checksum` value (`sha256:<hex>`, `sha384:<hex>` or `sha512:<hex>`);
/// it is checked before any connection is made for its form and after the download for its
/// value. On every error, nothing is left in `work_dir`.
pub fn fetch_url(
    url: &str,
    checksum: Option<&str>,
    work_dir: &Path,
    limits: &FetchLimits,
) -> Result<Fetched, FetchError> {
    let uri = parse_url(url)?;
    let shown = redact(url);
    let expected = checksum.map(Checksum::parse).transpose()?;
    let file_name = url_file_name(url);
    let host = uri.host().unwrap_or_default().to_string();
    let proxy = proxy_for(&host);
    let peer = match &proxy {
        Some(proxy) if !proxy.is_no_proxy(&uri) => {
            format!("the proxy {}:{}", proxy.host(), proxy.port())
        }
        _ => {
            let https = uri
                .scheme_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"));
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            format!("{host}:{port}")
        }
    };

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(limits.max_redirects)
        .max_redirects_will_error(true)
        .proxy(proxy)
        .tls_config(trust(url)?)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .timeout_resolve(Some(limits.timeout))
        .timeout_connect(Some(limits.timeout))
        .timeout_send_request(Some(limits.timeout))
        .timeout_recv_response(Some(limits.timeout))
        .timeout_per_read(Some(limits.timeout))
        .timeout_per_write(Some(limits.timeout))
        .build()
        .into();
    let fail = |error: ureq::Error| classify(error, &shown, &host, &peer, limits);

    let response = agent.get(uri.clone()).call().map_err(fail)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: redact(&response.get_uri().to_string()),
            status: status.as_u16(),
            reason: status.canonical_reason().map(str::to_string),
        });
    }
    let mtime = response
        .headers()
        .get(ureq::http::header::LAST_MODIFIED)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_http_date);
    let body = response.into_body();
    if let Some(size) = body.content_length() {
        if size > limits.max_bytes {
            return Err(FetchError::TooLarge {
                url: shown,
                limit: limits.max_bytes,
                size: Some(size),
            });
        }
    }

    // The temporary file removes itself when dropped, so every early return below cleans up.
    let io_error = |source: io::Error| FetchError::Io {
        path: work_dir.to_path_buf(),
        source,
    };
    let mut file = tempfile::Builder::new()
        .prefix(".kiln-fetch-")
        .tempfile_in(work_dir)
        .map_err(io_error)?;
    let mut hashes = Hashes::new(expected.as_ref().map(|c| c.algorithm));
    let mut reader = body.into_reader();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(ureq::Error::from(e))),
        };
        let chunk = buffer.get(..read).unwrap_or_default();
        total = total.saturating_add(read as u64);
        if total > limits.max_bytes {
            return Err(FetchError::TooLarge {
                url: shown,
                limit: limits.max_bytes,
                size: None,
            });
        }
        hashes.update(chunk);
        file.write_all(chunk).map_err(|source| FetchError::Io {
            path: file.path().to_path_buf(),
            source,
        })?;
    }
    file.flush().map_err(|source| FetchError::Io {
        path: file.path().to_path_buf(),
        source,
    })?;

    let (digest, other) = hashes.finish();
    if let Some(expected) = expected {
        let actual = match expected.algorithm {
            Algorithm::Sha256 => digest.clone(),
            _ => other.unwrap_or_default(),
        };
        if actual != expected.text {
            return Err(FetchError::ChecksumMismatch {
                url: shown,
                expected: expected.text,
                actual,
            });
        }
    }
    let (_, path) = file.keep().map_err(|e| FetchError::Io {
        path: work_dir.to_path_buf(),
        source: e.error,
    })?;
    Ok(Fetched {
        path,
        file_name,
        mtime,
        digest,
    })
}

/// An http or https URL with a host.
fn parse_url(url: &str) -> Result<Uri, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidUrl {
        url: redact(url),
        reason: reason.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: ureq::http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some(scheme)
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {}
        _ => return Err(invalid("only http:// and https:// URLs can be downloaded")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    Ok(uri)
}

/// The proxy from the environment, except for loopback hosts (as Go's `ProxyFromEnvironment`).
fn proxy_for(host: &str) -> Option<ureq::Proxy> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        None
    } else {
        ureq::Proxy::try_from_env()
    }
}

/// The system's trust store plus the host's certs.d CAs and client certificate, as for
/// registries (kiln_tls).
fn trust(url: &str) -> Result<ureq::tls::TlsConfig, FetchError> {
    let host_port = kiln_tls::url_host_port(url);
    kiln_tls::tls_config(&host_port, true).map_err(|e| FetchError::Tls {
        url: redact(url),
        message: e.to_string(),
    })
}

/// Turns ureq's error into one a user can act on.
fn classify(
    error: ureq::Error,
    url: &str,
    host: &str,
    peer: &str,
    limits: &FetchLimits,
) -> FetchError {
    let url = url.to_string();
    if let Some(message) = kiln_tls::explain(&error, &url) {
        return FetchError::Tls { url, message };
    }
    match error {
        ureq::Error::Timeout(_) => FetchError::Timeout {
            url,
            timeout: limits.timeout,
        },
        ureq::Error::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused => FetchError::ConnectionRefused {
                url,
                peer: peer.to_string(),
            },
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => FetchError::Timeout {
                url,
                timeout: limits.timeout,
            },
            // std's resolver reports getaddrinfo failures with this text and no distinct kind.
            _ if e
                .to_string()
                .starts_with("failed to lookup address information") =>
            {
                let text = e.to_string();
                let detail = text
                    .split_once(": ")
                    .map_or(text.as_str(), |(_, detail)| detail);
                FetchError::HostNotFound {
                    url,
                    host: host.to_string(),
                    detail: detail.to_string(),
                }
            }
            io::ErrorKind::UnexpectedEof => FetchError::Network {
                url,
                message: "the connection closed before the whole file arrived".to_string(),
            },
            _ => FetchError::Network {
                url,
                message: e.to_string(),
            },
        },
        ureq::Error::HostNotFound => FetchError::HostNotFound {
            url,
            host: host.to_string(),
            detail: "it has no address".to_string(),
        },
        ureq::Error::TooManyRedirects => FetchError::TooManyRedirects {
            url,
            max: limits.max_redirects,
        },
        ureq::Error::StatusCode(status) => FetchError::Status {
            url,
            status,
            reason: None,
        },
        ureq::Error::BadUri(reason) => FetchError::InvalidUrl { url, reason },
        ureq::Error::Http(e) => FetchError::InvalidUrl {
            url,
            reason: e.to_string(),
        },
        ureq::Error::Tls(message) => FetchError::Tls {
            url,
            message: message.to_string(),
        },
        ureq::Error::Rustls(e) => FetchError::Tls {
            url,
            message: e.to_string(),
        },
        ureq::Error::Pem(e) => FetchError::Tls {
            url,
            message: e.to_string(),
        },
        ureq::Error::InvalidProxyUrl => FetchError::Proxy {
            url,
            message: "the proxy URL is invalid".to_string(),
        },
        ureq::Error::ConnectProxyFailed(message) => FetchError::Proxy { url, message },
        other => FetchError::Network {
            url,
            message: other.to_string(),
        },
    }
}

/// The URL with any password replaced, as BuildKit shows URLs (`user:xxxxx@host`).
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = url.get(rest_start..).unwrap_or_default();
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or_default();
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = authority.get(..at).unwrap_or_default();
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:xxxxx"),
        None => userinfo.to_string(),
    };
    format!(
        "{}{}{}",
        url.get(..rest_start).unwrap_or_default(),
        user,
        url.get(rest_start + at..).unwrap_or_default()
    )
}

/// The name BuildKit's Dockerfile frontend gives a downloaded file (see the module docs).
pub fn url_file_name(url: &str) -> String {
    let base = url_path(url)
        .and_then(percent_decode)
        .map(|path| go_path_base(&path));
    let name = match base {
        Some(base) if base != "." && base != "/" => base,
        _ => "__unnamed__".to_string(),
    };
    safe_file_name(&name)
}

/// The raw path of a URL: after the authority, before `?` and `#`.
fn url_path(url: &str) -> Option<&str> {
    let rest = url.get(url.find("://")? + 3..)?;
    let rest = rest.get(..rest.find(['?', '#']).unwrap_or(rest.len()))?;
    Some(rest.find('/').and_then(|i| rest.get(i..)).unwrap_or(""))
}

/// `%XX` decoding; a malformed escape fails, as Go's `url.Parse` does.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `path.Base`: the last element after trailing slashes are removed; `.` for an empty path
/// and `/` for a path of slashes.
fn go_path_base(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// BuildKit's `pathutil.SafeFileName`: the base name, trimmed; `download` for anything that is
/// not a plain name.
fn safe_file_name(name: &str) -> String {
    let trimmed = name.trim();
    let base = go_path_base(trimmed);
    if trimmed.is_empty()
        || base == "."
        || base == ".."
        || base == "/"
        || base.chars().any(char::is_control)
    {
        "download".to_string()
    } else {
        base
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

/// A parsed `--checksum`, normalised to lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checksum {
    algorithm: Algorithm,
    text: String,
}

impl Checksum {
    fn parse(text: &str) -> Result<Self, FetchError> {
        let invalid = |reason: String| FetchError::InvalidChecksum {
            checksum: text.to_string(),
            reason,
        };
        let Some((name, hex)) = text.split_once(':') else {
            return Err(invalid(
                "expected <algorithm>:<hex digest>, as in sha256:<64 hex digits>".to_string(),
            ));
        };
        let (algorithm, digits) = match name {
            "sha256" => (Algorithm::Sha256, 64),
            "sha384" => (Algorithm::Sha384, 96),
            "sha512" => (Algorithm::Sha512, 128),
            _ => {
                return Err(invalid(format!(
                    "unsupported algorithm {name:?}; use sha256, sha384 or sha512"
                )))
            }
        };
        if hex.len() != digits || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "a {name} digest is {digits} hex digits, got {:?}",
                hex
            )));
        }
        Ok(Checksum {
            algorithm,
            text: format!("{name}:{}", hex.to_ascii_lowercase()),
        })
    }
}

/// sha256 always (the content digest), plus the `--checksum` algorithm when it is another.
struct Hashes {
    sha256: Sha256,
    other: Option<OtherHash>,
}

enum OtherHash {
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hashes {
    fn new(algorithm: Option<Algorithm>) -> Self {
        Hashes {
            sha256: Sha256::new(),
            other: match algorithm {
                Some(Algorithm::Sha384) => Some(OtherHash::Sha384(Sha384::new())),
                Some(Algorithm::Sha512) => Some(OtherHash::Sha512(Sha512::new())),
                _ => None,
            },
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        match &mut self.other {
            Some(OtherHash::Sha384(h)) => h.update(bytes),
            Some(OtherHash::Sha512(h)) => h.update(bytes),
            None => {}
        }
    }

    /// (`sha256:<hex>`, the other digest in the same form).
    fn finish(self) -> (String, Option<String>) {
        let sha256 = format!("sha256:{}", hex(&self.sha256.finalize()));
        let other = self.other.map(|other| match other {
            OtherHash::Sha384(h) => format!("sha384:{}", hex(&h.finalize())),
            OtherHash::Sha512(h) => format!("sha512:{}", hex(&h.finalize())),
        });
        (sha256, other)
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// An HTTP date (`Last-Modified`) as seconds since the epoch; see
/// [`kiln_oci::time::parse_http_date`].
pub fn parse_http_date(text: &str) -> Option<i64> {
    kiln_oci::time::parse_http_date(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::thread::JoinHandle;
    use std::time::Instant;

    /// What the test server does with one connection.
    enum Reply {
        /// Writes these bytes, then closes.
        Send(Vec<u8>),
        /// Writes these bytes, then says nothing more until the client gives up.
        SendThenStall(Vec<u8>),
    }

    /// A server on 127.0.0.1 that answers one connection per reply, in order, then stops. It
    /// also stops when no client comes within a few seconds, so a failing test never leaves it
    /// behind. `join` gives the request lines it saw.
    struct Server {
        addr: SocketAddr,
        thread: JoinHandle<Vec<String>>,
    }

    impl Server {
        fn start(replies: Vec<Reply>) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            listener.set_nonblocking(true).unwrap();
            let thread = std::thread::spawn(move || {
                let mut seen = Vec::new();
                for reply in replies {
                    let Some(mut stream) = accept(&listener, Duration::from_secs(10)) else {
                        break;
                    };
                    seen.push(read_request_line(&mut stream));
                    let (bytes, stall) = match reply {
                        Reply::Send(bytes) => (bytes, false),
                        Reply::SendThenStall(bytes) => (bytes, true),
                    };
                    // The client may hang up early (a refused size): that is fine.
                    let _ = stream.write_all(&bytes);
                    let _ = stream.flush();
                    if stall {
                        // Wait for the client to close, at most a few seconds.
                        stream
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .unwrap();
                        let mut sink = [0u8; 1024];
                        while let Ok(n) = stream.read(&mut sink) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                }
                seen
            });
            Server { addr, thread }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn join(self) -> Vec<String> {
            self.thread.join().unwrap()
        }
    }

    fn accept(listener: &TcpListener, within: Duration) -> Option<TcpStream> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    return Some(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Reads the request head (to the blank line) and gives its first line.
    fn read_request_line(stream: &mut TcpStream) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        head.lines().next().unwrap_or_default().to_string()
    }

    fn response(status: &str, headers: &[&str], body: &[u8]) -> Reply {
        let mut text = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for header in headers {
            text.push_str(header);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(body);
        Reply::Send(bytes)
    }

    fn ok(body: &[u8], extra: &[&str]) -> Reply {
        let length = format!("Content-Length: {}", body.len());
        let mut headers = vec![length.as_str()];
        headers.extend_from_slice(extra);
        response("200 OK", &headers, body)
    }

    fn sha256(bytes: &[u8]) -> String {
        format!("sha256:{}", hex(&Sha256::digest(bytes)))
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    fn limits(timeout_ms: u64) -> FetchLimits {
        FetchLimits {
            timeout: Duration::from_millis(timeout_ms),
            ..FetchLimits::default()
        }
    }

    #[test]
    fn downloads_with_name_mtime_and_digest() {
        let body = b"hello, kiln\n";
        let server = Server::start(vec![ok(
            body,
            &["Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT"],
        )]);
        let work = tempfile::tempdir().unwrap();
        let fetched = fetch_url(
            &server.url("/files/tool.tar.gz?x=1"),
            None,
            work.path(),
            &limits(5000),
        )
        .unwrap();
        assert_eq!(server.join(), ["GET /files/tool.tar.gz?x=1 HTTP/1.1"]);
        assert_eq!(fetched.file_name, "tool.tar.gz");
        assert_eq!(fetched.mtime, Some(784_111_777));
        assert_eq!(fetched.digest, sha256(body));
        assert!(fetched.path.starts_with(work.path()));
        assert_eq!(std::fs::read(&fetched.path).unwrap(), body);
        assert_eq!(entries(work.path()), vec![fetched.path.clone()]);
    }

    #[test]
    fn no_last_modified_gives_no_mtime_and_a_bare_host_is_unnamed() {
        let server = Server::start(vec![ok(b"x", &[])]);
        let work = tempfile::tempdir().unwrap();
        let fetched = fetch_url(&server.url(""), None, work.path(), &limits(5000)).unwrap();
        server.join();
        assert_eq!(fetched.mtime, None);
        assert_eq!(fetched.file_name, "__unnamed__");
    }

    #[test]
    fn checksum_match_and_mismatch() {
        let body = b"pinned content";
        let sha512 = format!("sha512:{}", hex(&Sha512::digest(body)));
        let server = Server::start(vec![ok(body, &[]), ok(body, &[]), ok(body, &[])]);
        let work = tempfile::tempdir().unwrap();

        let good = sha256(body).to_uppercase().replace("SHA256", "sha256");
        let fetched =
            fetch_url(&server.url("/a"), Some(&good), work.path(), &limits(5000)).unwrap();
        assert_eq!(fetched.digest, sha256(body));
        std::fs::remove_file(&fetched.path).unwrap();

        let fetched =
            fetch_url(&server.url("/a"), Some(&sha512), work.path(), &limits(5000)).unwrap();
        assert_eq!(fetched.digest, sha256(body));
        std::fs::remove_file(&fetched.path).unwrap();

        let wrong = format!("sha256:{}", "0".repeat(64));
        let error =
            fetch_url(&server.url("/a"), Some(&wrong), work.path(), &limits(5000)).unwrap_err();
        server.join();
        match &error {
            FetchError::ChecksumMismatch {
                expected, actual, ..
            } => {
                assert_eq!(expected, &wrong);
                assert_eq!(actual, &sha256(body));
            }
            other => panic!("expected a checksum mismatch, got {other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&wrong) && message.contains(&sha256(body)),
            "{message}"
        );
        assert!(entries(work.path()).is_empty(), "a mismatch leaves no file");
    }

    #[test]
    fn malformed_checksums_are_refused_before_connecting() {
        let work = tempfile::tempdir().unwrap();
        // Port 9 on loopback is never contacted: the checksum is refused first.
        for bad in ["abc", "md5:0123", "sha256:xyz", "sha256:00"] {
            let error = fetch_url("http://127.0.0.1:9/f", Some(bad), work.path(), &limits(500))
                .unwrap_err();
            assert!(
                matches!(error, FetchError::InvalidChecksum { .. }),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn not_found_names_the_status() {
        let server = Server::start(vec![response("404 Not Found", &["Content-Length: 0"], b"")]);
        let work = tempfile::tempdir().unwrap();
        let error =
            fetch_url(&server.url("/missing"), None, work.path(), &limits(5000)).unwrap_err();
        server.join();
        assert!(
            matches!(error, FetchError::Status { status: 404, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("404 Not Found"), "{error}");
        assert!(entries(work.path()).is_empty());
    }

    #[test]
    fn redirects_are_followed_and_the_name_comes_from_the_original_url() {
        let body = b"moved";
        let server = Server::start(vec![
            response(
                "302 Found",
                &["Location: /storage/blob-1234", "Content-Length: 0"],
                b"",
            ),
            ok(body, &[]),
        ]);
        let work = tempfile::tempdir().unwrap();
        let fetched = fetch_url(
            &server.url("/release/app.bin"),
            None,
            work.path(),
            &limits(5000),
        )
        .unwrap();
        let seen = server.join();
        assert_eq!(
            seen,
            [
                "GET /release/app.bin HTTP/1.1",
                "GET /storage/blob-1234 HTTP/1.1"
            ]
        );
        assert_eq!(fetched.file_name, "app.bin");
        assert_eq!(std::fs::read(&fetched.path).unwrap(), body);
    }

    #[test]
    fn too_many_redirects_is_an_error() {
        let hop = || response("302 Found", &["Location: /again", "Content-Length: 0"], b"");
        let server = Server::start(vec![hop(), hop()]);
        let work = tempfile::tempdir().unwrap();
        let mut limits = limits(5000);
        limits.max_redirects = 1;
        let error = fetch_url(&server.url("/start"), None, work.path(), &limits).unwrap_err();
        server.join();
        assert!(
            matches!(error, FetchError::TooManyRedirects { max: 1, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn bodies_over_the_limit_are_refused() {
        let work = tempfile::tempdir().unwrap();
        let limits = FetchLimits {
            max_bytes: 10,
            ..limits(5000)
        };
        // Announced by Content-Length: refused before reading.
        let server = Server::start(vec![ok(&[b'a'; 100], &[])]);
        let error = fetch_url(&server.url("/big"), None, work.path(), &limits).unwrap_err();
        server.join();
        assert!(
            matches!(
                error,
                FetchError::TooLarge {
                    limit: 10,
                    size: Some(100),
                    ..
                }
            ),
            "{error:?}"
        );
        // Not announced (the body runs to the end of the connection): cut off while streaming.
        let server = Server::start(vec![response("200 OK", &[], &[b'a'; 100_000])]);
        let error = fetch_url(&server.url("/stream"), None, work.path(), &limits).unwrap_err();
        server.join();
        assert!(
            matches!(
                error,
                FetchError::TooLarge {
                    limit: 10,
                    size: None,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("limit of 10 bytes"), "{error}");
        assert!(entries(work.path()).is_empty());
    }

    #[test]
    fn a_silent_server_times_out() {
        let server = Server::start(vec![Reply::SendThenStall(Vec::new())]);
        let work = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let error = fetch_url(&server.url("/slow"), None, work.path(), &limits(500)).unwrap_err();
        let elapsed = started.elapsed();
        server.join();
        assert!(matches!(error, FetchError::Timeout { .. }), "{error:?}");
        assert!(error.to_string().contains("500ms"), "{error}");
        assert!(
            elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
        assert!(entries(work.path()).is_empty());
    }

    #[test]
    fn a_body_that_stalls_times_out() {
        // Headers promise 100 bytes, 5 arrive, then nothing until the client gives up.
        let server = Server::start(vec![Reply::SendThenStall(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello".to_vec(),
        )]);
        let work = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let error = fetch_url(&server.url("/stall"), None, work.path(), &limits(500)).unwrap_err();
        let elapsed = started.elapsed();
        server.join();
        assert!(matches!(error, FetchError::Timeout { .. }), "{error:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert!(entries(work.path()).is_empty(), "a partial file is removed");
    }

    #[test]
    fn a_body_cut_short_is_an_error() {
        // Headers promise 100 bytes, 5 arrive, then the server closes the connection.
        let server = Server::start(vec![Reply::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello".to_vec(),
        )]);
        let work = tempfile::tempdir().unwrap();
        let error = fetch_url(&server.url("/cut"), None, work.path(), &limits(5000)).unwrap_err();
        server.join();
        assert!(matches!(error, FetchError::Network { .. }), "{error:?}");
        assert!(entries(work.path()).is_empty(), "a partial file is removed");
    }

    #[test]
    fn connection_refused() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let work = tempfile::tempdir().unwrap();
        let error = fetch_url(
            &format!("http://127.0.0.1:{port}/x"),
            None,
            work.path(),
            &limits(2000),
        )
        .unwrap_err();
        assert!(
            matches!(error, FetchError::ConnectionRefused { .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains(&format!("connection refused by 127.0.0.1:{port}")),
            "{error}"
        );
    }

    #[test]
    fn invalid_urls() {
        let work = tempfile::tempdir().unwrap();
        for bad in [
            "ftp://example.com/f",
            "not a url",
            "http://",
            "/just/a/path",
        ] {
            let error = fetch_url(bad, None, work.path(), &limits(500)).unwrap_err();
            assert!(
                matches!(error, FetchError::InvalidUrl { .. }),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("https://user:secret@example.com/f?a=b"),
            "https://user:xxxxx@example.com/f?a=b"
        );
        assert_eq!(redact("https://example.com/a@b"), "https://example.com/a@b");
        assert_eq!(
            redact("https://tok@example.com/"),
            "https://tok@example.com/"
        );
    }

    #[test]
    fn file_names_follow_buildkit() {
        let cases = [
            ("https://example.com/a/b/tool.tar.gz", "tool.tar.gz"),
            (
                "https://example.com/a/b/tool.tar.gz?sig=1#frag",
                "tool.tar.gz",
            ),
            ("https://example.com/dir/", "dir"),
            ("https://example.com/", "__unnamed__"),
            ("https://example.com", "__unnamed__"),
            ("https://example.com?x=/y", "__unnamed__"),
            ("https://example.com/my%20file.txt", "my file.txt"),
            ("https://example.com/a%2Fb", "b"),
            ("https://example.com/%zz", "__unnamed__"),
            ("https://example.com/a/..", "download"),
            ("https://example.com/a%0Ab", "download"),
            ("https://example.com/%20", "download"),
        ];
        for (url, name) in cases {
            assert_eq!(url_file_name(url), name, "{url}");
        }
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        let want = Some(784_111_777);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), want);
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
