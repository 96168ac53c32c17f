//! Docker's `config.json` and credential helpers: where credentials are found and saved, in
//! the order docker itself uses (`credHelpers[host]`, then `credsStore`, then `auths`).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::auth::Credentials;
use crate::error::{RegistryError, Result};
use crate::normalize_server;

/// config.json is small; anything bigger is not one.
const CONFIG_MAX: u64 = 4 << 20;

/// The key docker uses for Docker Hub in `auths`, and the server it hands helpers.
const HUB_KEY: &str = "https://index.docker.io/v1/";

/// How long a credential helper may take before it is killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
/// A helper's answer is a small JSON object; more output than this is an error.
const HELPER_STDOUT_MAX: u64 = 1 << 20;
/// What is kept of a helper's stderr for its error message (the rest is read and dropped).
const HELPER_STDERR_MAX: u64 = 64 << 10;

/// The docker configuration directory and where to look for `docker-credential-*` programs.
#[derive(Debug, Clone)]
pub(crate) struct DockerConfig {
    dir: PathBuf,
    /// `None`: the helper is run by name, found through `$PATH`.
    helper_path: Option<OsString>,
    helper_timeout: Duration,
}

/// The directory docker reads: `$DOCKER_CONFIG`, else `~/.docker`.
pub(crate) fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".docker"),
        None => PathBuf::from("/root/.docker"),
    }
}

/// The `auths` key and helper server for a registry host: Docker Hub's legacy URL, or the host.
pub(crate) fn server_key(host: &str) -> String {
    if host == "docker.io" {
        HUB_KEY.to_string()
    } else {
        host.to_string()
    }
}

impl DockerConfig {
    pub fn new(dir: PathBuf) -> DockerConfig {
        DockerConfig {
            dir,
            helper_path: None,
            helper_timeout: HELPER_TIMEOUT,
        }
    }

    #[cfg(test)]
    pub fn with_helper_timeout(mut self, timeout: Duration) -> DockerConfig {
        self.helper_timeout = timeout;
        self
    }

    /// Looks helpers up in `path` (a `$PATH`-style list) instead of `$PATH`.
    #[cfg(test)]
    pub fn with_helper_path(mut self, path: impl Into<OsString>) -> DockerConfig {
        self.helper_path = Some(path.into());
        self
    }

    fn file(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    fn err(&self, host: &str, message: impl Into<String>) -> RegistryError {
        RegistryError::Credentials {
            server: host.to_string(),
            message: message.into(),
        }
    }

    /// The parsed file, or `None` when there is none.
    fn read(&self, host: &str) -> Result<Option<Map<String, Value>>> {
        let path = self.file();
        let bytes = match fs::File::open(&path) {
            Ok(file) => {
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut io::Read::take(file, CONFIG_MAX + 1), &mut bytes)
                    .map_err(|e| self.err(host, format!("{}: {e}", path.display())))?;
                bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(host, format!("{}: {e}", path.display()))),
        };
        if bytes.len() as u64 > CONFIG_MAX {
            return Err(self.err(host, format!("{}: file too large", path.display())));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(_) => Err(self.err(host, format!("{}: not a JSON object", path.display()))),
            Err(e) => Err(self.err(host, format!("{}: invalid JSON: {e}", path.display()))),
        }
    }

    /// The helper for `host`: its `credHelpers` entry, else `credsStore`. The flag says which.
    fn helper(&self, config: &Map<String, Value>, host: &str) -> Option<(String, bool)> {
        if let Some(Value::Object(helpers)) = config.get("credHelpers") {
            for (key, value) in helpers {
                if let Value::String(name) = value {
                    if !name.is_empty() && normalize_server(key) == host {
                        return Some((name.clone(), true));
                    }
                }
            }
        }
        match config.get("credsStore") {
            Some(Value::String(name)) if !name.is_empty() => Some((name.clone(), false)),
            _ => None,
        }
    }

    /// The credentials docker would use for `host` (a [`normalize_server`] result).
    pub fn get(&self, host: &str) -> Result<Option<Credentials>> {
        let Some(config) = self.read(host)? else {
            return Ok(None);
        };
        if let Some((helper, per_host)) = self.helper(&config, host) {
            match self.helper_get(&helper, host) {
                Ok(Some(creds)) => return Ok(Some(creds)),
                Ok(None) => {
                    if per_host {
                        return Ok(None);
                    }
                }
                // A default store that is not installed (a config copied from Docker
                // Desktop) must not stop anonymous pulls; a helper named for this host must.
                Err(HelperError::Missing) if !per_host => {}
                Err(e) => return Err(self.err(host, e.describe(&helper))),
            }
        }
        let Some(Value::Object(auths)) = config.get("auths") else {
            return Ok(None);
        };
        let exact = auths.get(&server_key(host));
        let entry = exact.or_else(|| {
            auths
                .iter()
                .find(|(key, _)| normalize_server(key) == host)
                .map(|(_, v)| v)
        });
        Ok(entry.and_then(entry_credentials))
    }

    /// Saves credentials for `host` where docker would: its helper, else `auths`.
    pub fn store(&self, host: &str, creds: &Credentials) -> Result<()> {
        let mut config = self.read(host)?.unwrap_or_default();
        if let Some((helper, _)) = self.helper(&config, host) {
            let input = serde_json::json!({
                "ServerURL": server_key(host),
                "Username": creds.username,
                "Secret": creds.secret,
            });
            let input = serde_json::to_vec(&input).map_err(|e| self.err(host, e.to_string()))?;
            return self
                .run_helper(&helper, "store", &input)
                .map(drop)
                .map_err(|e| self.err(host, e.describe(&helper)));
        }
        let auths = config
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(auths) = auths {
            // Other spellings of the same server would shadow or confuse the new entry.
            let key = server_key(host);
            auths.retain(|k, _| k == &key || normalize_server(k) != host);
            let entry = auths
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(entry) = entry {
                for stale in ["username", "password", "identitytoken"] {
                    entry.remove(stale);
                }
                entry.insert("auth".into(), Value::String(creds.encoded()));
            }
        }
        self.write(host, &config)
    }

    /// Removes saved credentials for `host`; `false` if there were none.
    pub fn erase(&self, host: &str) -> Result<bool> {
        let Some(mut config) = self.read(host)? else {
            return Ok(false);
        };
        let mut removed = false;
        if let Some((helper, per_host)) = self.helper(&config, host) {
            match self.run_helper(&helper, "erase", server_key(host).as_bytes()) {
                Ok(_) => removed = true,
                Err(HelperError::NotFound) => {}
                // As for get: a default store that is not installed holds nothing, and the
                // `auths` entry below is still removed.
                Err(HelperError::Missing) if !per_host => {}
                Err(e) => return Err(self.err(host, e.describe(&helper))),
            }
        }
        if let Some(Value::Object(auths)) = config.get_mut("auths") {
            let before = auths.len();
            auths.retain(|k, _| normalize_server(k) != host);
            if auths.len() != before {
                removed = true;
                self.write(host, &config)?;
            }
        }
        Ok(removed)
    }

    /// Replaces config.json atomically (temp file, fsync, rename), private to the user,
    /// writing through a symlink to the file it points at.
    fn write(&self, host: &str, config: &Map<String, Value>) -> Result<()> {
        let mut path = self.file();
        if let Ok(target) = fs::canonicalize(&path) {
            path = target;
        }
        let dir = path
            .parent()
            .map_or_else(|| self.dir.clone(), Path::to_path_buf);
        let fail = |e: io::Error| self.err(host, format!("writing {}: {e}", path.display()));
        if !dir.is_dir() {
            // Like docker: the directory holding secrets is the user's alone.
            std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
                .create(&dir)
                .map_err(fail)?;
        }
        let mut bytes = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut bytes, formatter);
        serde::Serialize::serialize(config, &mut ser).map_err(|e| self.err(host, e.to_string()))?;
        bytes.push(b'\n');
        let mut file = tempfile::Builder::new()
            .prefix(".config.json.")
            .tempfile_in(&dir)
            .map_err(fail)?;
        file.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(fail)?;
        file.write_all(&bytes).map_err(fail)?;
        file.as_file().sync_all().map_err(fail)?;
        file.persist(&path).map_err(|e| fail(e.error))?;
        Ok(())
    }

    fn helper_get(
        &self,
        helper: &str,
        host: &str,
    ) -> std::result::Result<Option<Credentials>, HelperError> {
        let out = match self.run_helper(helper, "get", server_key(host).as_bytes()) {
            Ok(out) => out,
            Err(HelperError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let answer: Answer = serde_json::from_slice(&out).map_err(|_| HelperError::BadAnswer)?;
        if answer.secret.is_empty() {
            return Ok(None);
        }
        // Username "<token>" marks the secret as an identity token; registries that take
        // one take it as the password.
        Ok(Some(Credentials {
            username: answer.username,
            secret: answer.secret,
        }))
    }

    /// Runs `docker-credential-<helper> <action>` with `input` on stdin; its stdout on success.
    /// A helper that runs longer than the timeout, or writes more than
    /// [`HELPER_STDOUT_MAX`] bytes, is killed.
    fn run_helper(
        &self,
        helper: &str,
        action: &str,
        input: &[u8],
    ) -> std::result::Result<Vec<u8>, HelperError> {
        if !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(HelperError::BadName);
        }
        let program = format!("docker-credential-{helper}");
        let program = match &self.helper_path {
            Some(path) => std::env::split_paths(path)
                .map(|dir| dir.join(&program))
                .find(|p| p.is_file())
                .ok_or(HelperError::Missing)?,
            None => PathBuf::from(program),
        };
        let mut child = Command::new(&program)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    HelperError::Missing
                } else {
                    HelperError::Run(e.to_string())
                }
            })?;
        let now = Instant::now();
        let deadline = now.checked_add(self.helper_timeout).unwrap_or(now);
        let kill = |child: &mut std::process::Child| {
            let _ = child.kill();
            let _ = child.wait();
        };
        // Threads feed and drain the pipes, so a helper that does neither cannot block us;
        // they end when the helper (or whatever inherited its pipes) closes them.
        let spawn = |f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name("credential-helper".into())
                .spawn(f)
                .map(drop)
        };
        // (stdout or stderr, what was read)
        let (tx, rx) = mpsc::channel::<(bool, io::Result<Option<Vec<u8>>>)>();
        let mut pending = 0u32;
        let mut started = Ok(());
        if let Some(mut stdin) = child.stdin.take() {
            let input = input.to_vec();
            // A helper that exits without reading its input is judged by its exit status.
            started = started.and(spawn(Box::new(move || {
                let _ = stdin.write_all(&input);
            })));
        }
        if let Some(stdout) = child.stdout.take() {
            let tx = tx.clone();
            pending = pending.saturating_add(1);
            started = started.and(spawn(Box::new(move || {
                let _ = tx.send((true, read_capped(stdout, HELPER_STDOUT_MAX, false)));
            })));
        }
        if let Some(stderr) = child.stderr.take() {
            let tx = tx.clone();
            pending = pending.saturating_add(1);
            started = started.and(spawn(Box::new(move || {
                let _ = tx.send((false, read_capped(stderr, HELPER_STDERR_MAX, true)));
            })));
        }
        drop(tx);
        if let Err(e) = started {
            kill(&mut child);
            return Err(HelperError::Run(e.to_string()));
        }
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((true, Ok(Some(bytes)))) => stdout = bytes,
                Ok((false, Ok(Some(bytes)))) => stderr = bytes,
                Ok((true, Ok(None))) => {
                    kill(&mut child);
                    return Err(HelperError::TooLarge);
                }
                Ok((true, Err(e))) => {
                    kill(&mut child);
                    return Err(HelperError::Run(format!("reading its output: {e}")));
                }
                // Stderr only words a failure; the exit status still says whether it was one.
                Ok((false, _)) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    kill(&mut child);
                    return Err(HelperError::Timeout(self.helper_timeout));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            pending = pending.saturating_sub(1);
        }
        // Its pipes are closed: it has exited or is about to.
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    kill(&mut child);
                    return Err(HelperError::Timeout(self.helper_timeout));
                }
                Err(e) => {
                    kill(&mut child);
                    return Err(HelperError::Run(e.to_string()));
                }
            }
        };
        if status.success() {
            return Ok(stdout);
        }
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Err(HelperError::NotFound);
        }
        // Helpers print their message, never the secret, on failure; still keep it short.
        Err(HelperError::Failed(crate::error::clean_text(&said, 200)))
    }
}

/// Reads at most `max` bytes: `None` when there is more, unless `drain`, which reads and
/// drops the rest.
fn read_capped(mut pipe: impl Read, max: u64, drain: bool) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    (&mut pipe)
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        if !drain {
            return Ok(None);
        }
        bytes.truncate(usize::try_from(max).unwrap_or(usize::MAX));
        io::copy(&mut pipe, &mut io::sink())?;
    }
    Ok(Some(bytes))
}

/// Credentials from an `auths` entry: `auth` (base64 `user:pass`), else `username` and
/// `password`, else an `identitytoken`.
fn entry_credentials(entry: &Value) -> Option<Credentials> {
    let text = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(auth) = text("auth") {
        if let Some(creds) = Credentials::decode(auth) {
            return Some(creds);
        }
    }
    if let (Some(user), Some(pass)) = (text("username"), text("password")) {
        return Some(Credentials {
            username: user.into(),
            secret: pass.into(),
        });
    }
    text("identitytoken").map(|token| Credentials {
        username: "<token>".into(),
        secret: token.into(),
    })
}

#[derive(Debug)]
enum HelperError {
    /// The helper says it has nothing for this server.
    NotFound,
    /// No such program.
    Missing,
    BadName,
    BadAnswer,
    /// It ran longer than this, and was killed.
    Timeout(Duration),
    /// It wrote more than [`HELPER_STDOUT_MAX`] bytes, and was killed.
    TooLarge,
    Run(String),
    Failed(String),
}

impl HelperError {
    fn describe(&self, helper: &str) -> String {
        let program = format!("docker-credential-{helper}");
        match self {
            HelperError::NotFound => format!("{program}: credentials not found"),
            HelperError::Missing => format!("{program} is not installed (or not on PATH)"),
            HelperError::BadName => format!("invalid credential helper name {helper:?}"),
            HelperError::BadAnswer => format!("{program} answered something that is not JSON"),
            HelperError::Timeout(t) => format!(
                "{program} did not finish within {} s, and was stopped",
                t.as_secs_f64()
            ),
            HelperError::TooLarge => format!(
                "{program} wrote more than {} KiB, and was stopped",
                HELPER_STDOUT_MAX >> 10
            ),
            HelperError::Run(e) => format!("cannot run {program}: {e}"),
            HelperError::Failed(said) => format!("{program} failed: {said}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &Path, text: &str) -> DockerConfig {
        fs::write(dir.join("config.json"), text).unwrap();
        DockerConfig::new(dir.to_path_buf())
    }

    fn read(dir: &Path) -> Value {
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap()
    }

    fn creds(u: &str, s: &str) -> Credentials {
        Credentials {
            username: u.into(),
            secret: s.into(),
        }
    }

    #[test]
    fn auths_lookup() {
        let tmp = tempfile::tempdir().unwrap();
        // user:pass, other:secret
        let c = config(
            tmp.path(),
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
                "https://reg.example:5000/v2/":{"auth":"b3RoZXI6c2VjcmV0"},
                "plain.example":{"username":"u","password":"p"},
                "tok.example":{"identitytoken":"it"},
                "empty.example":{}
            }}"#,
        );
        assert_eq!(c.get("docker.io").unwrap(), Some(creds("user", "pass")));
        assert_eq!(
            c.get("reg.example:5000").unwrap(),
            Some(creds("other", "secret"))
        );
        assert_eq!(c.get("plain.example").unwrap(), Some(creds("u", "p")));
        assert_eq!(c.get("tok.example").unwrap(), Some(creds("<token>", "it")));
        assert_eq!(c.get("empty.example").unwrap(), None);
        assert_eq!(c.get("nowhere.example").unwrap(), None);
    }

    #[test]
    fn hub_key_spellings() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(
            tmp.path(),
            r#"{"auths":{"index.docker.io":{"auth":"dXNlcjpwYXNz"}}}"#,
        );
        assert_eq!(c.get("docker.io").unwrap(), Some(creds("user", "pass")));
        let c = config(
            tmp.path(),
            r#"{"auths":{"docker.io":{"auth":"dXNlcjpwYXNz"}}}"#,
        );
        assert_eq!(c.get("docker.io").unwrap(), Some(creds("user", "pass")));
    }

    #[test]
    fn missing_empty_and_broken_files() {
        let tmp = tempfile::tempdir().unwrap();
        let c = DockerConfig::new(tmp.path().join("none"));
        assert_eq!(c.get("h").unwrap(), None);
        let c = config(tmp.path(), "  \n");
        assert_eq!(c.get("h").unwrap(), None);
        let c = config(tmp.path(), "{not json");
        let e = c.get("h").unwrap_err().to_string();
        assert!(e.contains("config.json: invalid JSON"), "{e}");
        let c = config(tmp.path(), "[]");
        assert!(c.get("h").is_err());
    }

    /// A `docker-credential-test` that answers from, and records into, files beside it.
    fn helper(dir: &Path) {
        let script = r#"#!/bin/sh
here=$(dirname "$0")
input=$(cat)
case "$1" in
get)
  if [ "$input" = "reg.example" ]; then
    echo '{"ServerURL":"reg.example","Username":"helperuser","Secret":"helpersecret"}'
  else
    echo "credentials not found in native keychain"; exit 1
  fi ;;
store) printf '%s' "$input" > "$here/stored" ;;
erase)
  if [ "$input" = "reg.example" ]; then printf '%s' "$input" > "$here/erased"
  else echo "credentials not found in native keychain"; exit 1; fi ;;
esac
"#;
        write_executable(&dir.join("docker-credential-test"), script);
    }

    /// Writes an executable file from a child process. Written here, its write descriptor
    /// would live on in any child another test thread forks meanwhile, until that child
    /// execs, and running the file then fails with ETXTBSY ("Text file busy"); a child's
    /// descriptor is gone once it has exited.
    fn write_executable(path: &Path, content: &str) {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(path)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "writing {}",
            path.display()
        );
    }

    #[test]
    fn credential_helpers() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fs::create_dir(&bin).unwrap();
        helper(&bin);
        let c = config(
            tmp.path(),
            r#"{"credHelpers":{"reg.example":"test","gone.example":"absent"},
                "auths":{"reg.example":{"auth":"dXNlcjpwYXNz"},"other.example":{"auth":"dXNlcjpwYXNz"}}}"#,
        )
        .with_helper_path(&bin);
        // The helper wins over auths for its host; other hosts read auths.
        assert_eq!(
            c.get("reg.example").unwrap(),
            Some(creds("helperuser", "helpersecret"))
        );
        assert_eq!(c.get("other.example").unwrap(), Some(creds("user", "pass")));
        // A helper named for a host but not installed is an error naming it.
        let e = c.get("gone.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-absent is not installed"),
            "{e}"
        );

        // credsStore: "not found" means anonymous, not an error.
        let c = config(tmp.path(), r#"{"credsStore":"test"}"#).with_helper_path(&bin);
        assert_eq!(c.get("elsewhere.example").unwrap(), None);
        assert_eq!(
            c.get("reg.example").unwrap(),
            Some(creds("helperuser", "helpersecret"))
        );
        // A credsStore that is not installed falls back to auths.
        let c = config(
            tmp.path(),
            r#"{"credsStore":"desktop","auths":{"x.example":{"auth":"dXNlcjpwYXNz"}}}"#,
        )
        .with_helper_path(&bin);
        assert_eq!(c.get("x.example").unwrap(), Some(creds("user", "pass")));
    }

    #[test]
    fn helper_store_and_erase() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fs::create_dir(&bin).unwrap();
        helper(&bin);
        let before = r#"{"credsStore":"test","auths":{}}"#;
        let c = config(tmp.path(), before).with_helper_path(&bin);
        c.store("docker.io", &creds("me", "pw")).unwrap();
        let stored: Value = serde_json::from_slice(&fs::read(bin.join("stored")).unwrap()).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"ServerURL":"https://index.docker.io/v1/","Username":"me","Secret":"pw"})
        );
        // The file is left alone when a helper holds the secret.
        assert_eq!(
            fs::read_to_string(tmp.path().join("config.json")).unwrap(),
            before
        );
        assert!(c.erase("reg.example").unwrap());
        assert_eq!(
            fs::read_to_string(bin.join("erased")).unwrap(),
            "reg.example"
        );
        assert!(!c.erase("other.example").unwrap());
    }

    fn script(dir: &Path, name: &str, body: &str) {
        write_executable(
            &dir.join(format!("docker-credential-{name}")),
            &format!("#!/bin/sh\n{body}\n"),
        );
    }

    #[test]
    fn a_hanging_helper_is_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fs::create_dir(&bin).unwrap();
        // Reads nothing, answers nothing.
        script(&bin, "hang", "exec sleep 30");
        let c = config(tmp.path(), r#"{"credsStore":"hang"}"#)
            .with_helper_path(&bin)
            .with_helper_timeout(Duration::from_millis(300));
        for run in [
            Box::new(|| c.get("reg.example").map(drop)) as Box<dyn Fn() -> Result<()>>,
            Box::new(|| c.store("reg.example", &creds("a", "b"))),
            Box::new(|| c.erase("reg.example").map(drop)),
        ] {
            let started = Instant::now();
            let e = run().unwrap_err().to_string();
            assert!(started.elapsed() < Duration::from_secs(10), "{e}");
            assert!(
                e.contains("docker-credential-hang did not finish within 0.3 s"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_helper_that_says_too_much_is_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fs::create_dir(&bin).unwrap();
        script(&bin, "loud", "exec cat /dev/zero");
        // Just over the limit, then exiting: still refused.
        script(
            &bin,
            "big",
            "head -c 1048577 /dev/zero; echo '{\"Username\":\"u\",\"Secret\":\"s\"}'",
        );
        for helper in ["loud", "big"] {
            let c = config(tmp.path(), &format!(r#"{{"credsStore":"{helper}"}}"#))
                .with_helper_path(&bin);
            let e = c.get("reg.example").unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "docker-credential-{helper} wrote more than 1024 KiB"
                )),
                "{e}"
            );
        }
        // Noise on stderr is read past, and cut in the message.
        script(
            &bin,
            "noisy",
            "head -c 3000000 /dev/zero | tr '\\0' x >&2; exit 1",
        );
        let c = config(tmp.path(), r#"{"credsStore":"noisy"}"#).with_helper_path(&bin);
        let e = c.get("reg.example").unwrap_err().to_string();
        assert!(e.contains("docker-credential-noisy failed: xxx"), "{e}");
        assert!(e.len() < 1000, "{e}");
    }

    #[test]
    fn erase_without_the_default_store_still_clears_auths() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let c = config(
            tmp.path(),
            r#"{"credsStore":"desktop","auths":{"x.example":{"auth":"dXNlcjpwYXNz"},"y.example":{}}}"#,
        )
        .with_helper_path(&bin);
        assert!(c.erase("x.example").unwrap());
        assert_eq!(
            read(tmp.path()),
            serde_json::json!({"credsStore":"desktop","auths":{"y.example":{}}})
        );
        assert!(!c.erase("x.example").unwrap());
        // A helper named for the host that is missing is still an error.
        let c = config(
            tmp.path(),
            r#"{"credHelpers":{"x.example":"absent"},"auths":{"x.example":{}}}"#,
        )
        .with_helper_path(&bin);
        let e = c.erase("x.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-absent is not installed"),
            "{e}"
        );
    }

    #[test]
    fn login_keeps_other_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(
            tmp.path(),
            r#"{"auths":{"other.example":{"auth":"eDp5"},"https://reg.example/v1/":{"auth":"old"}},
                "proxies":{"default":{"httpProxy":"http://p:3128"}},"detachKeys":"ctrl-x",
                "credHelpers":{"gcr.io":"gcloud"}}"#,
        );
        fs::set_permissions(
            tmp.path().join("config.json"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        c.store("reg.example", &creds("me", "pw")).unwrap();
        let v = read(tmp.path());
        assert_eq!(
            v,
            serde_json::json!({
                "auths":{"other.example":{"auth":"eDp5"},"reg.example":{"auth":"bWU6cHc="}},
                "proxies":{"default":{"httpProxy":"http://p:3128"}},"detachKeys":"ctrl-x",
                "credHelpers":{"gcr.io":"gcloud"}
            })
        );
        let mode = fs::metadata(tmp.path().join("config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(c.get("reg.example").unwrap(), Some(creds("me", "pw")));
        // No temp files left behind.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);

        assert!(c.erase("reg.example").unwrap());
        assert!(!c.erase("reg.example").unwrap());
        let v = read(tmp.path());
        assert_eq!(
            v["auths"],
            serde_json::json!({"other.example":{"auth":"eDp5"}})
        );
        assert_eq!(v["detachKeys"], "ctrl-x");
    }

    #[test]
    fn login_creates_the_file_and_hub_key() {
        let tmp = tempfile::tempdir().unwrap();
        let c = DockerConfig::new(tmp.path().join("new"));
        c.store("docker.io", &creds("me", "pw")).unwrap();
        let v = read(&tmp.path().join("new"));
        assert_eq!(
            v,
            serde_json::json!({"auths":{"https://index.docker.io/v1/":{"auth":"bWU6cHc="}}})
        );
        assert_eq!(c.get("docker.io").unwrap(), Some(creds("me", "pw")));
        assert!(!DockerConfig::new(tmp.path().join("none"))
            .erase("docker.io")
            .unwrap());
    }

    #[test]
    fn login_writes_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real.json");
        fs::write(&real, r#"{"x":1}"#).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("config.json")).unwrap();
        let c = DockerConfig::new(tmp.path().to_path_buf());
        c.store("h.example", &creds("a", "b")).unwrap();
        assert!(fs::symlink_metadata(tmp.path().join("config.json"))
            .unwrap()
            .file_type()
            .is_symlink());
        let v: Value = serde_json::from_slice(&fs::read(&real).unwrap()).unwrap();
        assert_eq!(v["x"], 1);
        assert_eq!(v["auths"]["h.example"]["auth"], "YTpi");
    }
}
