//! The client against a scripted HTTP server on 127.0.0.1: challenges, tokens, retries,
//! resumed downloads, garbage answers. Real registries are tested in crates/kiln/tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use kiln_oci::{sha256_digest, Descriptor, ImageName, Platform};
use kiln_store::Store;

use crate::{Outcome, Registry, RegistryError, RegistryOptions, TransferEvent};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the script answers: status, headers, body, whether to cut the connection after
/// `Some(n)` body bytes, and a `Content-Length` to claim instead of the body's.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut_after: Option<usize>,
    length: Option<String>,
    /// Send this many body bytes, then nothing more: the connection stays open, silent, for
    /// [`STALL_FOR`] (a registry that stalls mid-blob), then closes.
    stall_after: Option<usize>,
    /// Say nothing at all (not even the status line) for [`STALL_FOR`], then close.
    silent: bool,
    /// Send the body this many bytes at a time, pausing this long between them.
    trickle: Option<(usize, std::time::Duration)>,
}

/// How long a stalling answer holds its connection open without sending anything.
const STALL_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The answer to a blob request from `Range: bytes=START-` on (`None`: the whole blob).
fn from_range(range: Option<&str>, body: &[u8]) -> Answer {
    let start: usize = range.map_or(0, |range| {
        range
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap()
    });
    if start == 0 {
        return answer(200, body);
    }
    answer(206, &body[start..]).with(
        "Content-Range",
        &format!("bytes {start}-{}/{}", body.len() - 1, body.len()),
    )
}

fn answer(status: u16, body: &[u8]) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: body.to_vec(),
        cut_after: None,
        length: None,
        stall_after: None,
        silent: false,
        trickle: None,
    }
}

impl Answer {
    fn with(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Script = dyn Fn(&Request, usize) -> Answer + Send + Sync;

/// Serves `script` (given each request and how many came before it) until dropped.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(script: impl Fn(&Request, usize) -> Answer + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (script, log) = (script.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &*script, &log));
            }
        });
        Server { port, seen }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    /// The `Range` headers of the requests so far, in order.
    fn ranges(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r.header("range").map(String::from))
            .collect()
    }
}

fn serve(stream: TcpStream, script: &Script, log: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
        else {
            // A TLS hello or other garbage: answer like a plain http server does.
            let _ = out.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
            return;
        };
        if !version.starts_with("HTTP/") {
            let _ = out.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
            return;
        }
        let mut request = Request {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
        };
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                request
                    .headers
                    .push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = request
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let index = {
            let mut log = log.lock().unwrap();
            log.push(request.clone());
            log.len() - 1
        };
        let a = script(&request, index);
        if a.silent {
            std::thread::sleep(STALL_FOR);
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            a.status,
            a.length.clone().unwrap_or_else(|| a.body.len().to_string())
        );
        for (k, v) in &a.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = out.write_all(head.as_bytes());
        if request.method != "HEAD" {
            if let Some((size, pause)) = a.trickle {
                for piece in a.body.chunks(size.max(1)) {
                    if out.write_all(piece).and_then(|()| out.flush()).is_err() {
                        return;
                    }
                    std::thread::sleep(pause);
                }
                continue;
            }
            if let Some(stall) = a.stall_after {
                let _ = out.write_all(&a.body[..stall.min(a.body.len())]);
                let _ = out.flush();
                std::thread::sleep(STALL_FOR);
                let _ = out.shutdown(std::net::Shutdown::Both);
                return;
            }
            let send = a.cut_after.unwrap_or(a.body.len()).min(a.body.len());
            let _ = out.write_all(&a.body[..send]);
            if a.cut_after.is_some() {
                let _ = out.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

fn registry(config_dir: &std::path::Path) -> Registry {
    registry_with_retries(config_dir, 3)
}

fn registry_with_retries(config_dir: &std::path::Path, retries: u32) -> Registry {
    Registry::new(RegistryOptions {
        docker_config_dir: Some(config_dir.to_path_buf()),
        retries,
        ..RegistryOptions::default()
    })
}

fn manifest_bytes() -> Vec<u8> {
    let config = sha256_digest(b"{}");
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[]}}"#
    )
    .into_bytes()
}

#[test]
fn bearer_challenge_token_and_cache() {
    let tokens = Server::start(|r, _| {
        if r.path.starts_with("/token?") {
            answer(200, br#"{"token":"T1","expires_in":300}"#)
        } else {
            answer(404, b"")
        }
    });
    let realm = format!("http://{}/token", tokens.host());
    let manifest = manifest_bytes();
    let registry_server = Server::start(move |r, _| {
        let challenge =
            format!("Bearer realm=\"{realm}\",service=\"svc\",scope=\"repository:x:pull\"");
        match r.header("authorization") {
            Some("Bearer T1") if r.path != "/v2/" => answer(200, &manifest)
                .with("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            _ => answer(
                401,
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
            .with("WWW-Authenticate", &challenge),
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    // "not:this", for the registry's host, not the token service's.
    std::fs::write(
        tmp.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"bm90OnRoaXM="}}}}}}"#,
            registry_server.host()
        ),
    )
    .unwrap();
    let reg = registry(tmp.path());
    let name = ImageName::parse(&format!("{}/x:1", registry_server.host())).unwrap();
    let (desc, bytes) = reg.fetch_manifest(&name).unwrap();
    assert_eq!(bytes, manifest_bytes());
    assert_eq!(desc.digest, sha256_digest(&bytes));
    assert_eq!(desc.media_type, kiln_oci::media_types::OCI_MANIFEST);
    // Again: the token is cached.
    reg.fetch_manifest(&name).unwrap();
    let token_requests = tokens.requests();
    assert_eq!(token_requests.len(), 1, "{token_requests:?}");
    let t = &token_requests[0];
    assert_eq!(t.path, "/token?service=svc&scope=repository%3Ax%3Apull");
    // The registry's credentials go to its token service, and never to the registry.
    assert_eq!(t.header("authorization"), Some("Basic bm90OnRoaXM="));
    assert!(registry_server
        .requests()
        .iter()
        .all(|r| r.header("authorization").is_none_or(|a| a == "Bearer T1")));
}

#[test]
fn basic_auth_and_refused_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = manifest_bytes();
    let server = Server::start(move |r, _| match r.header("authorization") {
        Some("Basic YWxpY2U6cHc=") => answer(200, &manifest), // alice:pw
        _ => answer(
            401,
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}"#,
        )
        .with("WWW-Authenticate", "Basic realm=\"r\""),
    });
    let reg = registry(tmp.path());
    let name = ImageName::parse(&format!("{}/x:1", server.host())).unwrap();
    let err = reg.fetch_manifest(&name).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{text}");
    assert!(
        text.contains("requires authentication")
            && text.contains(&format!("`kiln login {}`", server.host())),
        "{text}"
    );
    // Wrong password: login refuses and saves nothing.
    let err = reg
        .login(&server.host(), "alice", "wrong")
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("wrong"), "{err}");
    assert!(!tmp.path().join("config.json").exists());
    reg.login(&server.host(), "alice", "pw").unwrap();
    let (_, bytes) = reg.fetch_manifest(&name).unwrap();
    assert_eq!(bytes, manifest_bytes());
    assert!(reg.logout(&server.host()).unwrap());
    assert!(reg.fetch_manifest(&name).is_err());
}

#[test]
fn garbage_answers_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(|r, _| {
        if r.path.contains("/manifests/") {
            answer(200, b"<html><body>Sign in</body></html>").with("Content-Type", "text/html")
        } else {
            answer(200, b"{}")
        }
    });
    let reg = registry(tmp.path());
    let name = ImageName::parse(&format!("{}/foo:1", server.host())).unwrap();
    let err = reg
        .resolve(&name, &Platform::new("linux", "amd64"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "{}/foo:1: the registry's answer is not a manifest: text/html that is not JSON",
            server.host()
        )),
        "{err}"
    );
}

#[test]
fn manifest_by_digest_is_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(|_, _| answer(200, &manifest_bytes()));
    let reg = registry(tmp.path());
    let good = sha256_digest(&manifest_bytes());
    let name = ImageName::parse(&format!("{}/foo@{good}", server.host())).unwrap();
    assert_eq!(reg.fetch_manifest(&name).unwrap().0.digest, good);
    let other = sha256_digest(b"other");
    let name = ImageName::parse(&format!("{}/foo@{other}", server.host())).unwrap();
    let err = reg.fetch_manifest(&name).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "manifest {other} from {}/foo: digest mismatch (got {good})",
            server.host()
        )
    );
}

fn events() -> (
    Arc<Mutex<Vec<TransferEvent>>>,
    impl Fn(TransferEvent) + Sync,
) {
    let all = Arc::new(Mutex::new(Vec::new()));
    let sink = all.clone();
    (all, move |e| sink.lock().unwrap().push(e))
}

#[test]
fn blob_download_resumes_with_range_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let blob = Descriptor::new(
        "application/octet-stream",
        sha256_digest(&data),
        data.len() as u64,
    );
    let body = data.clone();
    let server = Server::start(move |r, _| {
        if !r.path.contains("/blobs/") {
            return answer(200, b"{}");
        }
        match r.header("range") {
            None => Answer {
                cut_after: Some(70_000),
                ..answer(200, &body)
            },
            range => from_range(range, &body),
        }
    });
    let reg = registry(tmp.path());
    let name = ImageName::parse(&format!("{}/foo:1", server.host())).unwrap();
    let (seen, progress) = events();
    reg.fetch_blob(&name, &blob, &store, &progress).unwrap();
    assert_eq!(std::fs::read(store.blob_path(&blob.digest)).unwrap(), data);
    let ranges = server.ranges();
    assert_eq!(ranges, vec!["bytes=70000-".to_string()]);
    let seen = seen.lock().unwrap();
    assert!(seen
        .iter()
        .any(|e| matches!(e, TransferEvent::Retry { attempt: 1, .. })));
    assert!(matches!(
        seen.last(),
        Some(TransferEvent::Done {
            outcome: Outcome::Fetched,
            ..
        })
    ));
    drop(seen);
    // Present now: nothing is asked.
    let before = server.requests().len();
    reg.fetch_blob(&name, &blob, &store, &progress).unwrap();
    assert_eq!(server.requests().len(), before);
}

#[test]
fn a_wrong_blob_is_not_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let server = Server::start(|_, _| answer(200, b"hello blog"));
    let reg = registry(tmp.path());
    let blob = Descriptor::new("x", sha256_digest(b"hello blob"), 10);
    let name = ImageName::parse(&format!("{}/foo:1", server.host())).unwrap();
    let (_, progress) = events();
    let err = reg
        .fetch_blob(&name, &blob, &store, &progress)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "blob {} from {}/foo: digest mismatch (got {})",
            blob.digest,
            server.host(),
            sha256_digest(b"hello blog")
        )
    );
    assert!(!store.has_blob(&blob.digest));
    assert!(!store.has_blob(&sha256_digest(b"hello blog")));
}

#[test]
fn server_errors_are_retried_then_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let data = b"retried blob".to_vec();
    let blob = Descriptor::new("x", sha256_digest(&data), data.len() as u64);
    let body = data.clone();
    let failures = Arc::new(Mutex::new(0));
    let count = failures.clone();
    let server = Server::start(move |r, _| {
        if !r.path.contains("/blobs/") {
            return answer(200, b"{}");
        }
        let mut n = count.lock().unwrap();
        *n += 1;
        if *n <= 2 {
            answer(
                503,
                br#"{"errors":[{"code":"UNAVAILABLE","message":"busy"}]}"#,
            )
        } else {
            answer(200, &body)
        }
    });
    let reg = registry(tmp.path());
    let name = ImageName::parse(&format!("{}/foo:1", server.host())).unwrap();
    let (seen, progress) = events();
    reg.fetch_blob(&name, &blob, &store, &progress).unwrap();
    let retries: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            TransferEvent::Retry { attempt, error, .. } => Some(format!("{attempt} {error}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        retries,
        vec![
            "1 the registry answered 503: UNAVAILABLE: busy".to_string(),
            "2 the registry answered 503: UNAVAILABLE: busy".to_string()
        ]
    );

    // Always failing: the status and the server's words, after `retries` more attempts.
    let always = Server::start(|r, _| {
        if r.path == "/v2/" {
            answer(200, b"{}")
        } else {
            answer(500, b"<h1>oops</h1>")
        }
    });
    let name = ImageName::parse(&format!("{}/foo:1", always.host())).unwrap();
    let err = reg.fetch_manifest(&name).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}/foo: fetching manifest 1: the registry answered 500: <h1>oops</h1>",
            always.host()
        )
    );
    let tries = always
        .requests()
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .count();
    assert_eq!(tries, 4);
}

/// A Bearer challenge naming `realm`, for everything.
fn challenging(realm: &str) -> Server {
    let challenge = format!("Bearer realm=\"{realm}\",service=\"svc\"");
    Server::start(move |_, _| answer(401, b"").with("WWW-Authenticate", &challenge))
}

fn with_credentials(dir: &std::path::Path, host: &str) {
    // "user:secret"
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"dXNlcjpzZWNyZXQ="}}}}}}"#),
    )
    .unwrap();
}

#[test]
fn a_realm_with_user_information_is_refused() {
    for realm in [
        "http://localhost:1@evil.example/token",
        "http://[::1]@evil.example/token",
        "http://127.0.0.1@evil/token",
        "https://user:pw@auth.example/token",
    ] {
        let server = challenging(realm);
        let tmp = tempfile::tempdir().unwrap();
        with_credentials(tmp.path(), &server.host());
        let reg = registry(tmp.path());
        let name = ImageName::parse(&format!("{}/x:1", server.host())).unwrap();
        let err = reg.fetch_manifest(&name).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RegistryError::Protocol { .. }), "{text}");
        assert!(text.contains("user information"), "{realm}: {text}");
        assert!(!text.contains("pw"), "{text}");
    }
}

#[test]
fn an_http_realm_elsewhere_gets_no_credentials_even_for_a_loopback_registry() {
    // A registry reached on 127.0.0.1 (a port forward, say) whose token service is plain
    // http on another host: the credentials would cross the network in clear.
    let server = challenging("http://auth.invalid/token");
    let tmp = tempfile::tempdir().unwrap();
    with_credentials(tmp.path(), &server.host());
    let reg = registry(tmp.path());
    let name = ImageName::parse(&format!("{}/x:1", server.host())).unwrap();
    let text = reg.fetch_manifest(&name).unwrap_err().to_string();
    assert!(
        text.contains("refusing the token service \"http://auth.invalid/token\": only https"),
        "{text}"
    );
    // With TLS checks off for every host, the user asked for it.
    let reg = Registry::new(RegistryOptions {
        docker_config_dir: Some(tmp.path().to_path_buf()),
        retries: 0,
        tls_verify: false,
        ..RegistryOptions::default()
    });
    let text = reg.fetch_manifest(&name).unwrap_err().to_string();
    assert!(!text.contains("only https"), "{text}");
}

#[test]
fn a_slow_token_service_holds_up_only_its_own_scope() {
    let tokens = Server::start(|r, _| {
        if r.path.contains("slow") {
            std::thread::sleep(std::time::Duration::from_millis(2000));
        }
        answer(200, br#"{"token":"T"}"#)
    });
    let realm = format!("http://{}/token", tokens.host());
    let manifest = manifest_bytes();
    let server = Server::start(move |r, _| match r.header("authorization") {
        Some("Bearer T") => answer(200, &manifest),
        _ => answer(401, b"").with(
            "WWW-Authenticate",
            &format!("Bearer realm=\"{realm}\",service=\"svc\""),
        ),
    });
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(tmp.path());
    let slow = ImageName::parse(&format!("{}/slow:1", server.host())).unwrap();
    let fast = ImageName::parse(&format!("{}/fast:1", server.host())).unwrap();
    // The host's challenge is known before either starts.
    let warm = ImageName::parse(&format!("{}/warm:1", server.host())).unwrap();
    reg.fetch_manifest(&warm).unwrap();
    std::thread::scope(|scope| {
        let slow_one = scope.spawn(|| reg.fetch_manifest(&slow));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let started = std::time::Instant::now();
        reg.fetch_manifest(&fast).unwrap();
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(1200),
            "the fast scope waited {took:?}"
        );
        slow_one.join().unwrap().unwrap();
    });
}

#[test]
fn retry_after_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = manifest_bytes();
    let server = Server::start(move |r, n| {
        if r.path == "/v2/" {
            answer(200, b"{}")
        } else if n <= 2 {
            answer(503, b"").with("Retry-After", "1")
        } else {
            answer(200, &manifest)
        }
    });
    let reg = registry(tmp.path());
    let name = ImageName::parse(&format!("{}/x:1", server.host())).unwrap();
    let started = std::time::Instant::now();
    reg.fetch_manifest(&name).unwrap();
    // The backoff alone would be 250 ms.
    assert!(started.elapsed() >= std::time::Duration::from_millis(950));
}

#[test]
fn a_tls_port_complaining_about_plain_http_is_not_taken_for_http() {
    // Answers TLS hellos like a plain http server (400, not TLS), and plain http requests
    // like Go's TLS server: the http answer must not make the host "plain http".
    let server =
        Server::start(|_, _| answer(400, b"Client sent an HTTP request to an HTTPS server.\n"));
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(tmp.path());
    let name = ImageName::parse(&format!("{}/x:1", server.host())).unwrap();
    let err = reg.fetch_manifest(&name).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Connection { .. }), "{text}");
    assert!(
        text.contains(&format!("https://{}", server.host())),
        "{text}"
    );
}

#[test]
fn a_closed_port_is_an_error_after_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry_with_retries(tmp.path(), 2);
    let name = ImageName::parse(&format!("127.0.0.1:{port}/x:1")).unwrap();
    let err = reg.fetch_manifest(&name).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Connection { .. }), "{text}");
    assert!(text.contains("connection refused"), "{text}");
}

#[test]
fn a_resumed_download_claiming_an_endless_body_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let data = b"0123456789".to_vec();
    let blob = Descriptor::new("x", sha256_digest(&data), data.len() as u64);
    let body = data.clone();
    let server = Server::start(move |r, _| {
        if !r.path.contains("/blobs/") {
            return answer(200, b"{}");
        }
        match r.header("range") {
            None => Answer {
                cut_after: Some(5),
                ..answer(200, &body)
            },
            Some(_) => Answer {
                cut_after: Some(0),
                length: Some(u64::MAX.to_string()),
                ..answer(206, b"").with("Content-Range", "bytes 5-9/10")
            },
        }
    });
    let reg = registry(tmp.path());
    let name = ImageName::parse(&format!("{}/foo:1", server.host())).unwrap();
    let (_, progress) = events();
    let err = reg.fetch_blob(&name, &blob, &store, &progress).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Protocol { .. }), "{text}");
    assert!(text.contains("18446744073709551615"), "{text}");
    assert!(!store.has_blob(&blob.digest));
}

/// A store holding a one-layer image; its manifest's descriptor.
fn image_store(layer: &[u8]) -> (tempfile::TempDir, Store, Descriptor) {
    use kiln_oci::{media_types, Manifest};
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let layer_digest = store.put_blob(layer).unwrap();
    let config = store.put_blob(b"{}").unwrap();
    let manifest = Manifest::new(
        Descriptor::new(media_types::OCI_CONFIG, config, 2),
        vec![Descriptor::new(
            media_types::OCI_LAYER_TAR_GZIP,
            layer_digest,
            layer.len() as u64,
        )],
    );
    let bytes = kiln_oci::to_canonical_json(&manifest).unwrap();
    let digest = store.put_blob(&bytes).unwrap();
    let desc = Descriptor::new(media_types::OCI_MANIFEST, digest, bytes.len() as u64);
    (tmp, store, desc)
}

/// A registry taking uploads: HEAD as `head` says, POST opens a session, PUT takes it with
/// `put`'s headers.
fn uploads(
    head: impl Fn(&Request) -> Answer + Send + Sync + 'static,
    put: Vec<(&'static str, String)>,
) -> Server {
    Server::start(move |r, _| match r.method.as_str() {
        "GET" if r.path == "/v2/" => answer(200, b"{}"),
        "HEAD" => head(r),
        "POST" => answer(202, b"").with("Location", "/v2/x/blobs/uploads/u1"),
        "PUT" => {
            let mut a = answer(201, b"");
            for (k, v) in &put {
                a = a.with(k, v);
            }
            a
        }
        _ => answer(400, b""),
    })
}

#[test]
fn a_blob_of_another_size_on_the_registry_is_uploaded() {
    let (_tmp, store, desc) = image_store(b"layer");
    let layer = sha256_digest(b"layer");
    // The registry says it has every blob, but the layer at 3 bytes, not 5.
    let server = uploads(
        move |r| {
            if r.path.ends_with(layer.as_str()) {
                answer(200, b"lay")
            } else {
                answer(200, b"{}")
            }
        },
        Vec::new(),
    );
    let reg = registry(tempfile::tempdir().unwrap().path());
    let dest = ImageName::parse(&format!("{}/x:1", server.host())).unwrap();
    let (seen, progress) = events();
    reg.push(&store, &desc, &dest, &progress).unwrap();
    let puts: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.path.clone())
        .collect();
    let layer = sha256_digest(b"layer");
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert!(
        puts[0].contains(&layer.as_str().replace(':', "%3A")),
        "{puts:?}"
    );
    assert!(puts[1].ends_with("/manifests/1"), "{puts:?}");
    let outcomes: Vec<Outcome> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            TransferEvent::Done { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect();
    assert!(outcomes.contains(&Outcome::Existed) && outcomes.contains(&Outcome::Uploaded));
}

#[test]
fn a_blob_put_answered_with_another_digest_fails() {
    let (_tmp, store, desc) = image_store(b"layer");
    let other = sha256_digest(b"something else");
    let server = uploads(
        |_| answer(404, b""),
        vec![("Docker-Content-Digest", other.to_string())],
    );
    let reg = registry(tempfile::tempdir().unwrap().path());
    let dest = ImageName::parse(&format!("{}/x:1", server.host())).unwrap();
    let (_, progress) = events();
    let err = reg.push(&store, &desc, &dest, &progress).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{text}"
    );
    assert!(text.contains(&format!("(got {other})")), "{text}");
    assert!(!server
        .requests()
        .iter()
        .any(|r| r.path.contains("/manifests/")));
}

#[test]
fn a_chunked_upload_that_keeps_losing_its_data_ends() {
    // One byte over a chunk: two PATCHes. The second always fails, and the session then says
    // it holds nothing, so every recovery starts from 0 again.
    let big: Vec<u8> = (0..(16u32 << 20) + 1).map(|i| (i % 253) as u8).collect();
    let (_tmp, store, desc) = image_store(&big);
    let server = Server::start(|r, n| {
        if n > 200 {
            // Only reached if the client never gives up.
            return answer(400, br#"{"errors":[{"code":"DENIED","message":"enough"}]}"#);
        }
        match r.method.as_str() {
            "GET" if r.path == "/v2/" => answer(200, b"{}"),
            "GET" => answer(204, b"").with("Range", "0-0"),
            "HEAD" => answer(404, b""),
            "POST" => answer(202, b"").with("Location", "/v2/x/blobs/uploads/u1"),
            "PATCH"
                if r.header("content-range")
                    .is_some_and(|c| c.starts_with("0-")) =>
            {
                answer(202, b"")
                    .with("Range", "0-16777215")
                    .with("Location", "/v2/x/blobs/uploads/u1")
            }
            "PATCH" => answer(500, b"lost it"),
            // The small config blob.
            "PUT" => answer(201, b""),
            _ => answer(400, b""),
        }
    });
    let reg = registry_with_retries(tempfile::tempdir().unwrap().path(), 1);
    let dest = ImageName::parse(&format!("{}/x:1", server.host())).unwrap();
    let (_, progress) = events();
    let err = reg.push(&store, &desc, &dest, &progress).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("500"), "{text}");
    let patches = server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    // 2 × retries recoveries in all, over the first session and the one restart.
    assert_eq!(patches, 8, "{text}");
}

fn stalling_registry(tmp: &std::path::Path, retries: u32) -> Registry {
    Registry::new(RegistryOptions {
        docker_config_dir: Some(tmp.to_path_buf()),
        retries,
        timeout: std::time::Duration::from_millis(500),
        ..RegistryOptions::default()
    })
}

/// A blob of 200 000 bytes and its descriptor.
fn big_blob() -> (Vec<u8>, Descriptor) {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let blob = Descriptor::new(
        "application/octet-stream",
        sha256_digest(&data),
        data.len() as u64,
    );
    (data, blob)
}

#[test]
fn a_blob_that_stalls_is_resumed_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (data, blob) = big_blob();
    let body = data.clone();
    // The first answer stalls after 80 000 bytes with the connection left open; the resumed
    // one sends the rest.
    let server = Server::start(move |r, _| match r.header("range") {
        None => Answer {
            stall_after: Some(80_000),
            ..answer(200, &body)
        },
        range => from_range(range, &body),
    });
    let reg = stalling_registry(tmp.path(), 3);
    let name = ImageName::parse(&format!("{}/foo:1", server.host())).unwrap();
    let (seen, progress) = events();
    let started = std::time::Instant::now();
    reg.fetch_blob(&name, &blob, &store, &progress).unwrap();
    // Well before the server would have closed the stalled connection by itself.
    assert!(started.elapsed() < STALL_FOR, "{:?}", started.elapsed());
    assert_eq!(std::fs::read(store.blob_path(&blob.digest)).unwrap(), data);
    let ranges = server.ranges();
    assert_eq!(ranges, vec!["bytes=80000-".to_string()]);
    let seen = seen.lock().unwrap();
    let retry = seen
        .iter()
        .find_map(|e| match e {
            TransferEvent::Retry { error, .. } => Some(error.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        retry.contains("no data for 0.5 s after 80000 of 200000 bytes"),
        "{retry}"
    );
}

#[test]
fn a_blob_that_keeps_stalling_is_given_up_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (data, blob) = big_blob();
    // Every answer, resumed or not, stalls after 1000 more bytes.
    let server = Server::start(move |r, _| Answer {
        stall_after: Some(1000),
        ..from_range(r.header("range"), &data)
    });
    let reg = stalling_registry(tmp.path(), 2);
    let name = ImageName::parse(&format!("{}/foo:1", server.host())).unwrap();
    let (_, progress) = events();
    let started = std::time::Instant::now();
    let err = reg.fetch_blob(&name, &blob, &store, &progress).unwrap_err();
    // Three stalls of 0.5 s and two pauses (0.25 s, 0.5 s): not a minute, nor the server's 5 s.
    assert!(started.elapsed() < STALL_FOR, "{:?}", started.elapsed());
    assert!(
        matches!(err, RegistryError::BlobInterrupted { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains(&blob.digest.to_string()), "{message}");
    assert!(message.contains("broke off 3 times"), "{message}");
    assert!(message.contains("after 3000 of 200000 bytes"), "{message}");
    assert!(message.contains("no data for 0.5 s"), "{message}");
    assert!(!store.has_blob(&blob.digest));
    // Each attempt went on from where the previous stopped.
    let ranges = server.ranges();
    assert_eq!(ranges, vec!["bytes=1000-", "bytes=2000-"]);
}

#[test]
fn a_registry_that_never_answers_a_blob_request_is_given_up_naming_the_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (_, blob) = big_blob();
    // `/v2/` answers (kiln finds the registry speaks plain http); blob requests get nothing.
    let server = Server::start(|r, _| {
        if !r.path.contains("/blobs/") {
            return answer(200, b"{}");
        }
        Answer {
            silent: true,
            ..answer(200, b"")
        }
    });
    let reg = stalling_registry(tmp.path(), 1);
    let name = ImageName::parse(&format!("{}/foo:1", server.host())).unwrap();
    let (_, progress) = events();
    let started = std::time::Instant::now();
    let err = reg.fetch_blob(&name, &blob, &store, &progress).unwrap_err();
    assert!(started.elapsed() < STALL_FOR, "{:?}", started.elapsed());
    let message = err.to_string();
    assert!(
        message.contains(&format!("fetching blob {}", blob.digest)),
        "{message}"
    );
    assert!(message.contains("no answer in time"), "{message}");
    // The first request and one retry.
    let blob_requests = server
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(blob_requests, 2);
}

#[test]
fn verifying_loopback_registries_means_https_only_for_them() {
    // A plain http registry on 127.0.0.1: found by default, refused when loopback
    // registries are verified (`--tls-verify=true`), without ever being asked in plain http.
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let server = Server::start(move |r, _| {
        if r.path.contains("/manifests/") {
            answer(200, manifest).with("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        } else {
            answer(200, b"{}")
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let name = ImageName::parse(&format!("{}/x:1", server.host())).unwrap();
    registry(tmp.path()).fetch_manifest(&name).unwrap();
    let before = server.requests().len();
    let strict = Registry::new(RegistryOptions {
        docker_config_dir: Some(tmp.path().to_path_buf()),
        retries: 0,
        tls_verify_loopback: true,
        ..RegistryOptions::default()
    });
    let err = strict.fetch_manifest(&name).unwrap_err();
    assert!(matches!(err, RegistryError::Connection { .. }), "{err}");
    assert!(err.to_string().contains("https://"), "{err}");
    assert_eq!(server.requests().len(), before, "asked in plain http");
}

#[test]
fn a_slow_blob_that_keeps_moving_is_not_cut_off() {
    // 200 000 bytes in 16 pieces, 100 ms apart: 1.6 s in all, over the 1 s timeout, but
    // never near 1 s without data. The timeout bounds idleness, not the transfer.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (data, blob) = big_blob();
    let body = data.clone();
    let server = Server::start(move |r, _| {
        if !r.path.contains("/blobs/") {
            return answer(200, b"{}");
        }
        Answer {
            trickle: Some((13_000, std::time::Duration::from_millis(100))),
            ..answer(200, &body)
        }
    });
    let reg = Registry::new(RegistryOptions {
        docker_config_dir: Some(tmp.path().to_path_buf()),
        retries: 0,
        timeout: std::time::Duration::from_secs(1),
        ..RegistryOptions::default()
    });
    let name = ImageName::parse(&format!("{}/foo:1", server.host())).unwrap();
    let (seen, progress) = events();
    let started = std::time::Instant::now();
    reg.fetch_blob(&name, &blob, &store, &progress).unwrap();
    assert!(started.elapsed() > std::time::Duration::from_secs(1));
    assert_eq!(std::fs::read(store.blob_path(&blob.digest)).unwrap(), data);
    assert!(!seen
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, TransferEvent::Retry { .. })));
}
