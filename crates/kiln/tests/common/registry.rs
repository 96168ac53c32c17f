//! A real registry for the tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1,
//! with its storage, config and log in a temp dir, anonymous, behind htpasswd (Basic) or behind
//! a token server (testdata/registry/token_server.py, the Docker token protocol).
//!
//! ```ignore
//! registry::require_tools();
//! let registry = TestRegistry::start(RegistryAuth::Anonymous);
//! let reference = format!("{}/repo:1", registry.host());
//! ```
//!
//! Nothing leaves the machine: every server listens on 127.0.0.1 only. Each server also stops
//! by itself: the registry is shadowed by a watchdog (a shell blocked reading a pipe this
//! process holds) that kills it once this process is gone, however it went; the token server
//! watches its own standard input the same way. Both are also given at most
//! [`LIFETIME_SECONDS`]. Drop kills them.
//!
//! A missing tool fails the test, naming the package to install (`scripts/test.sh` installs
//! them); there is no switch to skip these tests. `KILN_TEST_REGISTRY_LOG_LEVEL` (default
//! `warn`; `debug` shows why a token was refused) and `KILN_TEST_DOCKER_REGISTRY` (the binary,
//! default `docker-registry`) are for debugging.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest any server started here lives, whatever the tests do.
pub const LIFETIME_SECONDS: u64 = 1800;
/// How long [`TestRegistry::start`] and [`TestRegistry::restart`] wait for `GET /v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The token service and issuer names the registry is configured with.
pub const TOKEN_SERVICE: &str = "kiln-test-registry";
pub const TOKEN_ISSUER: &str = "kiln-test-issuer";
/// The htpasswd realm of a Basic registry.
pub const BASIC_REALM: &str = "kiln-test";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryAuth {
    /// Anyone may pull and push.
    Anonymous,
    /// htpasswd: every request needs `Authorization: Basic` with this user and password.
    Basic { user: String, password: String },
    /// Bearer tokens from a token server: with this user and password every action is granted;
    /// anonymous requests get pull only.
    Token { user: String, password: String },
}

impl RegistryAuth {
    pub fn basic(user: &str, password: &str) -> RegistryAuth {
        RegistryAuth::Basic {
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    pub fn token(user: &str, password: &str) -> RegistryAuth {
        RegistryAuth::Token {
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// The user and password, for Basic and Token.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match self {
            RegistryAuth::Anonymous => None,
            RegistryAuth::Basic { user, password } | RegistryAuth::Token { user, password } => {
                Some((user, password))
            }
        }
    }
}

/// The tools the registry tests need, with the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("docker-registry", "docker-registry"),
    ("htpasswd", "apache2-utils"),
    ("openssl", "openssl"),
    ("python3", "python3"),
];

/// docker-registry serving with `config`, its output appended to `log`.
pub fn spawn_registry(config: &Path, log: fs::File) -> Child {
    Command::new(registry_binary())
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): apt-get install docker-registry",
                registry_binary()
            )
        })
}

/// A process that kills `pid` once this test process is gone or after [`LIFETIME_SECONDS`]:
/// it waits reading a pipe only this process writes to, so end of file means the test ended
/// without stopping the server. Kill it before the server, so a reused pid is never hit.
pub fn watchdog(pid: u32) -> Child {
    Command::new("bash")
        .args([
            "-c",
            "read -r -t \"$1\" _ || true; kill -9 \"$0\" 2>/dev/null",
            &pid.to_string(),
            &LIFETIME_SECONDS.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn registry_binary() -> String {
    std::env::var("KILN_TEST_DOCKER_REGISTRY").unwrap_or_else(|_| "docker-registry".to_string())
}

fn tool_works(tool: &str) -> bool {
    let (program, args): (String, &[&str]) = match tool {
        "docker-registry" => (registry_binary(), &["--version"]),
        // htpasswd has no --version; with no arguments it prints its usage and exits 1.
        "htpasswd" => ("htpasswd".to_string(), &["-Bbn", "probe", "probe"]),
        "openssl" => ("openssl".to_string(), &["version"]),
        other => (other.to_string(), &["--version"]),
    };
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

fn missing_tools() -> Vec<(&'static str, &'static str)> {
    TOOLS
        .iter()
        .copied()
        .filter(|(tool, _)| !tool_works(tool))
        .collect()
}

fn missing_message(missing: &[(&str, &str)]) -> String {
    let tools: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
    let packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    format!(
        "the registry tests need {}: apt-get install {} (scripts/test.sh installs them)",
        tools.join(", "),
        packages.join(" ")
    )
}

/// Fails the test, saying what to install, unless docker-registry, htpasswd, openssl and
/// python3 are all here ([`TestRegistry::start`] checks the same).
pub fn require_tools() {
    let missing = missing_tools();
    assert!(missing.is_empty(), "{}", missing_message(&missing));
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// `DIR/config.json` in the format of Docker's (and containers' auth.json): `auths[host].auth`
/// is base64 of `user:password`. Other hosts already in the file are kept.
pub fn docker_config(dir: &Path, host: &str, user: &str, password: &str) {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("config.json");
    let mut config: serde_json::Value = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(_) => serde_json::json!({}),
    };
    if !config["auths"].is_object() {
        config["auths"] = serde_json::json!({});
    }
    config["auths"][host] =
        serde_json::json!({ "auth": base64(format!("{user}:{password}").as_bytes()) });
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An HTTP answer from [`http`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One plain HTTP/1.1 request to `host` ("127.0.0.1:PORT"), `Connection: close`, 30 s limits
/// on connecting, reading and writing. Err when nothing answered.
pub fn http(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let address: SocketAddr = host
        .parse()
        .map_err(|e| std::io::Error::other(format!("{host}: {e}")))?;
    let limit = Duration::from_secs(30);
    let mut stream = TcpStream::connect_timeout(&address, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut response_headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            response_headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut raw = Vec::new();
    if method != "HEAD" {
        reader.read_to_end(&mut raw)?;
    }
    let chunked = response_headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(&raw) } else { raw };
    Ok(HttpResponse {
        status,
        headers: response_headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        raw = &raw[end + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// The token server: its process, the pipe whose closing stops it, and its port.
struct TokenServer {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
}

impl TokenServer {
    fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        // A fresh RSA key and a self-signed certificate for it, per registry: the certificate
        // is the registry's rootcertbundle and rides in each token's x5c header.
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256"])
            .args(["-days", "2", "-subj", "/CN=kiln-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            made.status.success(),
            "openssl req -x509 failed:\n{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/registry/token_server.py");
        let log = fs::File::create(dir.join("token-server.log")).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .args([
                "--user",
                user,
                "--password",
                password,
                "--issuer",
                TOKEN_ISSUER,
            ])
            .args(["--lifetime", &LIFETIME_SECONDS.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("run python3 testdata/registry/token_server.py (apt-get install python3)");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        // Its first line is the port it listens on; read it with a deadline.
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = send.send(line);
        });
        let line = receive.recv_timeout(READY_TIMEOUT).unwrap_or_default();
        let mut server = TokenServer {
            child,
            stdin,
            port: 0,
        };
        match line.trim().parse() {
            Ok(port) => server.port = port,
            Err(_) => {
                server.kill();
                panic!(
                    "the token server did not start (printed {line:?}); its log:\n{}",
                    tail(&fs::read_to_string(dir.join("token-server.log")).unwrap_or_default())
                );
            }
        }
        server
    }

    fn kill(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A docker-registry process and the watchdog that kills it if this process goes first.
struct Running {
    registry: Child,
    watchdog: Child,
}

impl Running {
    fn kill(mut self) {
        // The watchdog first: once the registry has been reaped its pid may be reused, and the
        // watchdog must not kill that.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = self.registry.kill();
        let _ = self.registry.wait();
    }
}

pub struct TestRegistry {
    dir: tempfile::TempDir,
    auth: RegistryAuth,
    port: u16,
    /// Sent in a header of every answer, so the readiness check knows it reached this
    /// registry and not some other server that took the port.
    instance: String,
    running: Option<Running>,
    token: Option<TokenServer>,
}

impl TestRegistry {
    /// Starts docker-registry on a free 127.0.0.1 port, storage in its own temp dir, a fixed
    /// `http.secret` (so a restart keeps upload sessions valid), delete enabled, log level warn
    /// to `registry.log` in the temp dir; waits (at most 10 s) until `GET /v2/` answers 200 or
    /// 401. Panics with the log's tail when it does not come up (or, naming the package, when
    /// docker-registry is not installed).
    pub fn start(auth: RegistryAuth) -> TestRegistry {
        let missing = missing_tools();
        assert!(missing.is_empty(), "{}", missing_message(&missing));
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-registry.")
            .tempdir()
            .unwrap();
        fs::create_dir_all(dir.path().join("storage")).unwrap();
        let instance = format!(
            "{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let mut registry = TestRegistry {
            dir,
            auth,
            port: 0,
            instance,
            running: None,
            token: None,
        };
        let auth_section = match registry.auth.clone() {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic { user, password } => {
                let made = Command::new("htpasswd")
                    .args(["-Bbn", &user, &password])
                    .stdin(Stdio::null())
                    .output()
                    .expect("run htpasswd (apt-get install apache2-utils)");
                assert!(
                    made.status.success(),
                    "htpasswd -Bbn failed:\n{}",
                    String::from_utf8_lossy(&made.stderr)
                );
                let file = registry.dir.path().join("htpasswd");
                fs::write(&file, &made.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: {BASIC_REALM}\n    path: {}\n",
                    file.display()
                )
            }
            RegistryAuth::Token { user, password } => {
                let server = TokenServer::start(registry.dir.path(), &user, &password);
                let section = format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    server.port,
                    registry.dir.path().join("token-cert.pem").display()
                );
                registry.token = Some(server);
                section
            }
        };
        // A port can be taken between finding it free and the registry binding it: try again
        // with another.
        let mut failures = Vec::new();
        for _ in 0..3 {
            registry.port = free_port();
            registry.write_config(&auth_section);
            match registry.launch() {
                Ok(()) => return registry,
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "docker-registry did not come up on 127.0.0.1 (3 tries):\n{}\nits log:\n{}",
            failures.join("\n"),
            tail(&registry.log())
        );
    }

    /// "127.0.0.1:PORT".
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    pub fn auth(&self) -> &RegistryAuth {
        &self.auth
    }

    /// The registry's storage root (filesystem driver): `docker/registry/v2/...` under it.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The temp dir that holds the config, storage, logs, htpasswd and token key.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The token server's "127.0.0.1:PORT", for a Token registry.
    pub fn token_host(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("127.0.0.1:{}", t.port))
    }

    /// How many times the token server was asked for a token (granted or not), for a Token
    /// registry.
    pub fn token_requests(&self) -> Option<u64> {
        let host = self.token_host()?;
        let answer = http("GET", &host, "/count", &[], &[]).unwrap();
        let counts: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        counts["requests"].as_u64()
    }

    /// One request to the registry with no credentials.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        http(method, &self.host(), path, headers, body)
    }

    /// Kills the registry (SIGKILL: no shutdown of its own) and waits for it. The token server,
    /// if any, stays.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.kill();
        }
    }

    /// Starts the registry again: same port, storage and config; waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.launch() {
            panic!(
                "docker-registry did not come back on {}: {why}\nits log:\n{}",
                self.host(),
                tail(&self.log())
            );
        }
    }

    /// Everything the registry has logged (every start of it), and the token server's log.
    pub fn log(&self) -> String {
        let mut log = fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        if self.token.is_some() {
            if let Ok(token_log) = fs::read_to_string(self.dir.path().join("token-server.log")) {
                if !token_log.is_empty() {
                    log.push_str("--- token server:\n");
                    log.push_str(&token_log);
                }
            }
        }
        log
    }

    fn write_config(&self, auth_section: &str) {
        let level =
            std::env::var("KILN_TEST_REGISTRY_LOG_LEVEL").unwrap_or_else(|_| "warn".to_string());
        let config = format!(
            "version: 0.1\n\
             log:\n  level: {level}\n  formatter: text\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test-secret\n  \
             headers:\n    X-Kiln-Test-Registry: [\"{instance}\"]\n\
             {auth_section}",
            storage = self.storage().display(),
            port = self.port,
            instance = self.instance,
        );
        fs::write(self.dir.path().join("config.yml"), config).unwrap();
    }

    /// Spawns the registry with the config as written and waits until it answers.
    fn launch(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("registry.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let registry = spawn_registry(&self.dir.path().join("config.yml"), log);
        let watchdog = watchdog(registry.id());
        let mut running = Running { registry, watchdog };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = running.registry.try_wait() {
                running.kill();
                return Err(format!("docker-registry exited at start ({status})"));
            }
            if let Ok(answer) = self.request("GET", "/v2/", &[], &[]) {
                let ours = answer.header("x-kiln-test-registry") == Some(self.instance.as_str());
                if ours && matches!(answer.status, 200 | 401) {
                    self.running = Some(running);
                    return Ok(());
                }
                if !ours {
                    running.kill();
                    return Err(format!(
                        "port {} answered, but not from this registry (the port was taken)",
                        self.port
                    ));
                }
            }
            if Instant::now() > deadline {
                running.kill();
                return Err(format!(
                    "GET /v2/ got no 200 or 401 within {} s",
                    READY_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut token) = self.token.take() {
            token.kill();
        }
    }
}

/// The last 40 lines of a log.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The outcome of [`run_bounded`].
pub struct Bounded {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Runs a command with a time limit: killed (SIGKILL) when it is not done by then, and
/// `timed_out` set. Standard input is empty.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Bounded {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Bounded {
        status: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        timed_out,
    }
}
