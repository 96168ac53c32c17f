//! TLS trust: a registry (docker-registry) and an https file server on 127.0.0.1, both with
//! certificates from a CA this test makes with openssl. Without trust, push, pull and `ADD
//! https://` fail with an error that names the CA problem and both ways to trust it; with the
//! CA in the system store (`SSL_CERT_FILE`) or in a `certs.d` directory they work; with client
//! certificates required, they work from `certs.d` and fail clearly without.
//!
//! `certs.d` is a temp dir named by `KILN_CERTS_D`, so nothing is written to /etc. The tests
//! need docker-registry, openssl and python3, and fail (never skip) when one is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::registry::{free_port, spawn_registry, tail, watchdog};
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a server started here lives, whatever happens to the test.
const LIFETIME_SECONDS: u64 = 600;
const READY_TIMEOUT: Duration = Duration::from_secs(15);

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the TLS tests need openssl: apt-get install openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by it.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=kiln TLS test CA",
        ]);
        openssl(d, &ca);
        for (name, cn, ext) in [
            (
                "server",
                "127.0.0.1",
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "kiln test client",
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
            ),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let cert = format!("{name}.cert");
            let ext_file = format!("{name}.ext");
            let subject = format!("/CN={cn}");
            fs::write(d.join(&ext_file), ext).unwrap();
            let mut req = vec!["req", "-nodes"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
            openssl(d, &req);
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext_file,
                    "-out",
                    &cert,
                ],
            );
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A child process that is killed when dropped, and kills itself when this process is gone
/// (it, or its watchdog, reads a pipe only this process writes to) or after
/// [`LIFETIME_SECONDS`].
struct Server {
    child: Child,
    _lifeline: ChildStdin,
    watchdog: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The watchdog first: once the server is reaped its pid may be reused.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// docker-registry on 127.0.0.1 with TLS from `pki`; `client_cas` makes it require a client
/// certificate signed by the CA (`http.tls.clientcas`).
struct TlsRegistry {
    dir: tempfile::TempDir,
    port: u16,
    _server: Server,
}

impl TlsRegistry {
    fn start(pki: &Pki, client_cas: bool) -> TlsRegistry {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).unwrap();
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let client_section = if client_cas {
                format!("    clientcas:\n      - {}\n", pki.path("ca.crt").display())
            } else {
                String::new()
            };
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {storage}\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: kiln-tls-test\n  \
                 tls:\n    certificate: {cert}\n    key: {key}\n{client_section}",
                storage = storage.display(),
                cert = pki.path("server.cert").display(),
                key = pki.path("server.key").display(),
            );
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).unwrap();
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path).unwrap();
            let child = spawn_registry(&config_path, log);
            let mut watchdog = watchdog(child.id());
            let lifeline = watchdog.stdin.take().unwrap();
            let server = Server {
                child,
                _lifeline: lifeline,
                watchdog: Some(watchdog),
            };
            let deadline = Instant::now() + READY_TIMEOUT;
            let mut server = Some(server);
            loop {
                let running = server.as_mut().unwrap();
                if let Ok(Some(status)) = running.child.try_wait() {
                    failures.push(format!(
                        "exited at start ({status}):\n{}",
                        tail(&fs::read_to_string(&log_path).unwrap_or_default())
                    ));
                    break;
                }
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("listening on") && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return TlsRegistry {
                        dir,
                        port,
                        _server: server.take().unwrap(),
                    };
                }
                if Instant::now() > deadline {
                    failures.push(format!("not listening within 15 s:\n{}", tail(&log)));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "docker-registry with TLS did not come up (3 tries):\n{}",
            failures.join("\n")
        );
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        tail(&fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default())
    }
}

/// python3's http.server behind TLS on 127.0.0.1 (a port it picks and prints), serving a
/// directory; with `client_cas` it requires a client certificate signed by the CA.
const HTTPS_SERVER: &str = r#"
import functools, http.server, os, ssl, sys, threading
directory, cert, key, client_ca, lifetime = sys.argv[1:6]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
handler.func.log_message = lambda *args: None
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
if client_ca != "-":
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_ca)
httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
print(httpd.server_address[1], flush=True)
def watch():
    sys.stdin.read()
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
threading.Timer(float(lifetime), lambda: os._exit(0)).start()
httpd.serve_forever()
"#;

struct FileServer {
    port: u16,
    _files: tempfile::TempDir,
    _server: Server,
}

impl FileServer {
    fn start(pki: &Pki, client_cas: bool, files: &[(&str, &str)]) -> FileServer {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            fs::write(dir.path().join(name), content).unwrap();
        }
        let client_ca = if client_cas {
            pki.path("ca.crt").display().to_string()
        } else {
            "-".to_string()
        };
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(HTTPS_SERVER)
            .arg(dir.path())
            .arg(pki.path("server.cert"))
            .arg(pki.path("server.key"))
            .arg(client_ca)
            .arg(LIFETIME_SECONDS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the TLS tests need python3: apt-get install python3");
        let lifeline = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let server = Server {
            child,
            _lifeline: lifeline,
            watchdog: None,
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the https server did not start: {line:?}"));
        FileServer {
            port,
            _files: dir,
            _server: server,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

struct Outcome {
    status: i32,
    stdout: String,
    stderr: String,
}

/// kiln with the test's own store, docker config and certs.d, and no trust store settings of
/// the caller's; `env` adds to that.
fn kiln(root: &Path, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .arg("--root")
        .arg(root)
        .args(args)
        .current_dir(home)
        .env("NO_COLOR", "1")
        .env("DOCKER_CONFIG", home.join("docker"))
        .env("KILN_CERTS_D", home.join("certs.d"))
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run kiln");
    Outcome {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What the tests share: the PKI, the servers, a home with an empty certs.d.
struct Setup {
    pki: Pki,
    registry: TlsRegistry,
    files: FileServer,
    home: tempfile::TempDir,
}

impl Setup {
    fn new(client_cas: bool) -> Setup {
        let pki = Pki::new();
        let registry = TlsRegistry::start(&pki, client_cas);
        let files = FileServer::start(&pki, client_cas, &[("hello.txt", "hello over TLS\n")]);
        let home = tempfile::tempdir().unwrap();
        fs::create_dir_all(home.path().join("certs.d")).unwrap();
        fs::create_dir_all(home.path().join("docker")).unwrap();
        Setup {
            pki,
            registry,
            files,
            home,
        }
    }

    /// Puts the files named (from the PKI) into certs.d for both servers.
    fn certs_d(&self, names: &[&str]) {
        for host in [self.registry.host(), self.files.host()] {
            let dir = self.home.path().join("certs.d").join(host);
            fs::create_dir_all(&dir).unwrap();
            for name in names {
                fs::copy(self.pki.path(name), dir.join(name)).unwrap();
            }
        }
    }

    /// A context whose recipe ADDs the file from the https server.
    fn context(&self) -> tempfile::TempDir {
        let ctx = tempfile::tempdir().unwrap();
        fs::write(
            ctx.path().join("Dockerfile"),
            format!(
                "FROM scratch\nADD https://{}/hello.txt /hello.txt\n",
                self.files.host()
            ),
        )
        .unwrap();
        ctx
    }

    fn kiln(&self, root: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        kiln(root, self.home.path(), args, env)
    }

    /// ADD from the https server, push to the registry, pull into another store: each must
    /// work. Returns nothing; panics with kiln's words.
    fn add_push_pull(&self, env: &[(&str, &str)]) {
        let ctx = self.context();
        let store = tempfile::tempdir().unwrap();
        let ctx_arg = ctx.path().display().to_string();
        let built = self.kiln(store.path(), &["build", "-t", "tls:1", &ctx_arg], env);
        assert_eq!(built.status, 0, "ADD https:// failed:\n{}", built.stderr);
        let target = format!("{}/tls/image:1", self.registry.host());
        let pushed = self.kiln(
            store.path(),
            &["push", "--tls-verify=true", "tls:1", &target],
            env,
        );
        assert_eq!(
            pushed.status,
            0,
            "push failed:\n{}\nregistry log:\n{}",
            pushed.stderr,
            self.registry.log()
        );
        let digest = pushed.stdout.trim().to_string();
        assert!(digest.starts_with("sha256:"), "{}", pushed.stdout);
        let other = tempfile::tempdir().unwrap();
        let pulled = self.kiln(other.path(), &["pull", "--tls-verify=true", &target], env);
        assert_eq!(
            pulled.status,
            0,
            "pull failed:\n{}\nregistry log:\n{}",
            pulled.stderr,
            self.registry.log()
        );
        assert!(
            pulled.stdout.contains(&digest) || pulled.stderr.contains(&digest),
            "the pull does not show the pushed digest {digest}:\n{}\n{}",
            pulled.stdout,
            pulled.stderr
        );
    }
}

/// The error of an untrusted CA: names the problem and both ways to trust the CA, and does
/// not send the user to turn verification off.
fn assert_names_the_ca_problem(stderr: &str, host: &str) {
    assert!(stderr.contains("certificate authority"), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(stderr.contains("SSL_CERT_FILE"), "{stderr}");
    assert!(stderr.contains(&format!("certs.d/{host}/")), "{stderr}");
    assert!(!stderr.contains("tls-verify=false"), "{stderr}");
}

#[test]
fn without_trust_pull_push_and_add_name_the_ca_problem() {
    let setup = Setup::new(false);
    let store = tempfile::tempdir().unwrap();
    let ctx = setup.context();
    let ctx_arg = ctx.path().display().to_string();
    let built = setup.kiln(store.path(), &["build", "-t", "tls:1", &ctx_arg], &[]);
    assert_ne!(built.status, 0, "ADD of an untrusted server worked");
    assert_names_the_ca_problem(&built.stderr, &setup.files.host());

    // Something to push: the same image with a local file.
    fs::write(ctx.path().join("hello.txt"), "local\n").unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /\n",
    )
    .unwrap();
    let built = setup.kiln(store.path(), &["build", "-t", "tls:1", &ctx_arg], &[]);
    assert_eq!(built.status, 0, "{}", built.stderr);
    let target = format!("{}/tls/image:1", setup.registry.host());
    let pushed = setup.kiln(
        store.path(),
        &["push", "--tls-verify=true", "tls:1", &target],
        &[],
    );
    assert_ne!(pushed.status, 0, "push to an untrusted registry worked");
    assert_names_the_ca_problem(&pushed.stderr, &setup.registry.host());
    // Trying again cannot help: nothing is retried.
    assert!(!pushed.stderr.contains("retry"), "{}", pushed.stderr);
    let pulled = setup.kiln(store.path(), &["pull", "--tls-verify=true", &target], &[]);
    assert_ne!(pulled.status, 0, "pull from an untrusted registry worked");
    assert_names_the_ca_problem(&pulled.stderr, &setup.registry.host());
    let cache = format!("type=registry,ref={}/tls/cache:1", setup.registry.host());
    let exported = setup.kiln(
        store.path(),
        &["build", "--tls-verify=true", "--cache-to", &cache, &ctx_arg],
        &[],
    );
    assert_ne!(
        exported.status, 0,
        "--cache-to an untrusted registry worked"
    );
    assert_names_the_ca_problem(&exported.stderr, &setup.registry.host());
    // A trust store named but empty is an error of its own, not a silent fallback.
    let named = setup.kiln(
        store.path(),
        &["pull", "--tls-verify=true", &target],
        &[("SSL_CERT_FILE", "/nonexistent/kiln-test-ca.pem")],
    );
    assert_ne!(named.status, 0);
    assert!(
        named.stderr.contains("SSL_CERT_FILE") && named.stderr.contains("no usable certificate"),
        "{}",
        named.stderr
    );
    let login = setup.kiln(
        store.path(),
        &[
            "login",
            "--tls-verify=true",
            "-u",
            "u",
            "-p",
            "p",
            &setup.registry.host(),
        ],
        &[],
    );
    assert_ne!(login.status, 0, "login to an untrusted registry worked");
    assert_names_the_ca_problem(&login.stderr, &setup.registry.host());
}

#[test]
fn the_ca_in_the_system_store_via_ssl_cert_file_is_trusted() {
    let setup = Setup::new(false);
    let ca = setup.pki.path("ca.crt").display().to_string();
    setup.add_push_pull(&[("SSL_CERT_FILE", &ca)]);
    // SSL_CERT_DIR too (a directory of PEM files, as c_rehash leaves it or not).
    let dir = tempfile::tempdir().unwrap();
    fs::copy(setup.pki.path("ca.crt"), dir.path().join("test-ca.pem")).unwrap();
    setup.add_push_pull(&[("SSL_CERT_DIR", dir.path().to_str().unwrap())]);
}

#[test]
fn the_ca_in_certs_d_is_trusted_for_its_host() {
    let setup = Setup::new(false);
    setup.certs_d(&["ca.crt"]);
    setup.add_push_pull(&[]);
    // The build cache goes through the same trust: exported from one store, imported into
    // an empty one, whose build then takes the step from it.
    let cache = format!("type=registry,ref={}/tls/cache:1", setup.registry.host());
    let ctx = setup.context();
    let ctx_arg = ctx.path().display().to_string();
    let store_a = tempfile::tempdir().unwrap();
    let exported = setup.kiln(
        store_a.path(),
        &["build", "--tls-verify=true", "--cache-to", &cache, &ctx_arg],
        &[],
    );
    assert_eq!(
        exported.status, 0,
        "--cache-to failed:\n{}",
        exported.stderr
    );
    let store_b = tempfile::tempdir().unwrap();
    let imported = setup.kiln(
        store_b.path(),
        &[
            "build",
            "--progress=json",
            "--tls-verify=true",
            "--cache-from",
            &cache,
            &ctx_arg,
        ],
        &[],
    );
    assert_eq!(
        imported.status, 0,
        "--cache-from failed:\n{}",
        imported.stderr
    );
    assert!(
        imported.stderr.contains("\"event\":\"cached\"")
            && !imported.stderr.contains("\"event\":\"warning\""),
        "{}",
        imported.stderr
    );
    // Login goes through the same trust (the registry takes anyone).
    let store = tempfile::tempdir().unwrap();
    let login = setup.kiln(
        store.path(),
        &[
            "login",
            "--tls-verify=true",
            "-u",
            "u",
            "-p",
            "p",
            &setup.registry.host(),
        ],
        &[],
    );
    assert_eq!(login.status, 0, "login failed:\n{}", login.stderr);
}

#[test]
fn client_certificates_from_certs_d_are_presented_and_their_absence_is_named() {
    let setup = Setup::new(true);
    // The CA, but no client certificate: the servers refuse the connection.
    setup.certs_d(&["ca.crt"]);
    let store = tempfile::tempdir().unwrap();
    let ctx = setup.context();
    let ctx_arg = ctx.path().display().to_string();
    let built = setup.kiln(store.path(), &["build", "-t", "tls:1", &ctx_arg], &[]);
    assert_ne!(built.status, 0, "ADD without a client certificate worked");
    assert!(
        built.stderr.contains("client certificate") && built.stderr.contains("client.cert"),
        "{}",
        built.stderr
    );
    let target = format!("{}/tls/image:1", setup.registry.host());
    let pulled = setup.kiln(store.path(), &["pull", "--tls-verify=true", &target], &[]);
    assert_ne!(pulled.status, 0, "pull without a client certificate worked");
    assert!(
        pulled.stderr.contains("client certificate") && pulled.stderr.contains("client.cert"),
        "{}",
        pulled.stderr
    );

    // With client.cert and client.key beside ca.crt, everything works.
    setup.certs_d(&["client.cert", "client.key"]);
    setup.add_push_pull(&[]);

    // Even where the server's certificate is not checked (a loopback registry by default),
    // the client certificate is presented.
    let other = tempfile::tempdir().unwrap();
    let pulled = setup.kiln(other.path(), &["pull", &target], &[]);
    assert_eq!(pulled.status, 0, "{}", pulled.stderr);
}

#[test]
fn a_broken_client_key_in_certs_d_is_named() {
    let setup = Setup::new(false);
    setup.certs_d(&["ca.crt", "client.cert"]);
    let store = tempfile::tempdir().unwrap();
    let target = format!("{}/tls/image:1", setup.registry.host());
    let pulled = setup.kiln(store.path(), &["pull", "--tls-verify=true", &target], &[]);
    assert_ne!(pulled.status, 0);
    assert!(
        pulled.stderr.contains("client.key is missing"),
        "{}",
        pulled.stderr
    );
    let dir = setup
        .home
        .path()
        .join("certs.d")
        .join(setup.registry.host());
    fs::copy(setup.pki.path("ca.key"), dir.join("client.key")).unwrap();
    let pulled = setup.kiln(store.path(), &["pull", "--tls-verify=true", &target], &[]);
    assert_ne!(pulled.status, 0);
    assert!(
        pulled.stderr.contains("client.key") && !pulled.stderr.contains("panicked"),
        "{}",
        pulled.stderr
    );
}
