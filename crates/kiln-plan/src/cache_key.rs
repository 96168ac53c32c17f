//! Cache keys: what a step's result depends on, hashed so that two different inputs can never
//! share a key.
//!
//! Every field goes in with a tag and a length prefix, in a fixed order, so `("ab", "c")` and
//! `("a", "bc")` hash differently and an optional field that is absent differs from one that
//! is empty. The builder chains keys: a step's key covers its parent's key, the step itself
//! (through [`CacheKey`]) and the digests of what it reads, each as a typed [`KeyPart`] with one
//! spelled-out encoding (never a `Debug` format, which may change with a compiler or a
//! dependency).
//!
//! Every key starts with [`KEY_SCHEME`]: keys travel between machines through `--cache-from`,
//! so a change to how any key is derived must bump it, and records written before are then
//! plain misses (explained as `kiln was upgraded`) instead of hits whose meaning has moved.

use crate::step::{Action, ConfigChange, CopySource, CopyStep, RunStep, Source, Step};
use kiln_recipe::instruction::{Command, Network, Security};
use kiln_recipe::mount::{Mount, MountType, Sharing};
use sha2::{Digest, Sha256};

/// The version of the key scheme, hashed into every key and kept in every step record. Bump it
/// whenever what a key covers or how a part is encoded changes; the golden tests below pin the
/// keys so such a change cannot go unnoticed. 3: layers are written as content-defined chunks
/// (other bytes for the same tree).
pub const KEY_SCHEME: &str = "3";

/// The name of the record part that carries [`KEY_SCHEME`].
pub const SCHEME_PART: &str = "kiln key scheme";

/// The reason a step runs when its newest record was written under another key scheme.
pub const UPGRADED_REASON: &str = "kiln was upgraded";

/// A SHA-256 over tagged, length-prefixed fields: two different field lists never hash alike.
pub struct KeyHasher {
    hasher: Sha256,
}

impl KeyHasher {
    /// A hasher for one kind of key; `domain` keeps keys of different kinds apart, and the
    /// key scheme keeps keys of different kiln versions apart.
    pub fn new(domain: &str) -> Self {
        Self::with_scheme(domain, KEY_SCHEME)
    }

    fn with_scheme(domain: &str, scheme: &str) -> Self {
        let mut key = KeyHasher {
            hasher: Sha256::new(),
        };
        key.str("scheme", scheme).str("domain", domain);
        key
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// Adds a field of raw bytes.
    pub fn bytes(&mut self, tag: &str, value: &[u8]) -> &mut Self {
        self.raw(tag.as_bytes());
        self.raw(value);
        self
    }

    /// Adds a text field.
    pub fn str(&mut self, tag: &str, value: &str) -> &mut Self {
        self.bytes(tag, value.as_bytes())
    }

    /// Adds a number, little-endian.
    pub fn u64(&mut self, tag: &str, value: u64) -> &mut Self {
        self.bytes(tag, &value.to_le_bytes())
    }

    /// Adds a flag, one byte.
    pub fn bool(&mut self, tag: &str, value: bool) -> &mut Self {
        self.bytes(tag, &[u8::from(value)])
    }

    /// Adds an optional text: absent and empty differ.
    pub fn opt_str(&mut self, tag: &str, value: Option<&str>) -> &mut Self {
        match value {
            None => self.bytes(tag, b"\x00none"),
            Some(v) => self.str(tag, &format!("\x01{v}")),
        }
    }

    /// Adds a list of texts, its length first.
    pub fn list<S: AsRef<str>>(&mut self, tag: &str, values: &[S]) -> &mut Self {
        self.u64(tag, values.len() as u64);
        for value in values {
            self.raw(value.as_ref().as_bytes());
        }
        self
    }

    /// Adds a list of name/value pairs, its length first.
    pub fn pairs(&mut self, tag: &str, pairs: &[(String, String)]) -> &mut Self {
        self.u64(tag, pairs.len() as u64);
        for (k, v) in pairs {
            self.raw(k.as_bytes());
            self.raw(v.as_bytes());
        }
        self
    }

    /// `sha256:<hex>`.
    pub fn finish(self) -> String {
        let digest = self.hasher.finalize();
        let mut out = String::from("sha256:");
        for byte in digest {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

/// Adds what a value contributes to a cache key.
pub trait CacheKey {
    /// Feeds the value's fields to `key`, each with its tag, in a fixed order.
    fn cache_key(&self, key: &mut KeyHasher);
}

impl CacheKey for Step {
    fn cache_key(&self, key: &mut KeyHasher) {
        key.str("workdir", &self.workdir);
        match &self.action {
            Action::Run(run) => {
                key.str("action", "run");
                run.cache_key(key);
            }
            Action::Copy(copy) => {
                key.str("action", "copy");
                copy.cache_key(key);
            }
            // Config changes make no layer; their encoding is spelled out so keys never depend on
            // a Debug format.
            Action::Config(change) => {
                key.str("action", "config");
                change.cache_key(key);
            }
            Action::Arg(args) => {
                key.str("action", "arg").u64("count", args.len() as u64);
                for (name, value) in args {
                    key.str("name", name).opt_str("value", value.as_deref());
                }
            }
        }
    }
}

impl CacheKey for ConfigChange {
    fn cache_key(&self, key: &mut KeyHasher) {
        match self {
            ConfigChange::Env(pairs) => key.str("change", "env").pairs("pairs", pairs),
            ConfigChange::Label(pairs) => key.str("change", "label").pairs("pairs", pairs),
            ConfigChange::Expose(ports) => key.str("change", "expose").list("ports", ports),
            ConfigChange::Volume(volumes) => key.str("change", "volume").list("volumes", volumes),
            ConfigChange::User(user) => key.str("change", "user").str("user", user),
            ConfigChange::Workdir(dir) => key.str("change", "workdir").str("dir", dir),
            ConfigChange::Cmd(args) => key.str("change", "cmd").list("args", args),
            ConfigChange::Entrypoint(args) => key.str("change", "entrypoint").list("args", args),
            ConfigChange::Shell(args) => key.str("change", "shell").list("args", args),
            ConfigChange::StopSignal(signal) => {
                key.str("change", "stopsignal").str("signal", signal)
            }
            ConfigChange::OnBuild(trigger) => key.str("change", "onbuild").str("trigger", trigger),
            ConfigChange::Maintainer(name) => key.str("change", "maintainer").str("name", name),
            ConfigChange::Healthcheck(None) => key.str("change", "healthcheck-none"),
            ConfigChange::Healthcheck(Some(check)) => {
                let nanos = |d: Option<std::time::Duration>| {
                    d.map_or(u64::MAX, |d| {
                        d.as_nanos().min(u128::from(u64::MAX - 1)) as u64
                    })
                };
                key.str("change", "healthcheck")
                    .list("test", &check.test)
                    .u64("interval", nanos(check.interval))
                    .u64("timeout", nanos(check.timeout))
                    .u64("start_period", nanos(check.start_period))
                    .u64("start_interval", nanos(check.start_interval))
                    .u64("retries", check.retries.map_or(u64::MAX, u64::from))
            }
        };
    }
}

impl CacheKey for RunStep {
    fn cache_key(&self, key: &mut KeyHasher) {
        key.list("argv", &self.argv)
            .opt_str("script", self.script.as_deref());
        match &self.command {
            Command::Exec(args) => key.str("form", "exec").list("args", args),
            Command::Shell(text) => key.str("form", "shell").str("text", &text.text),
        };
        key.u64("heredocs", self.heredocs.len() as u64);
        for heredoc in &self.heredocs {
            key.str("name", &heredoc.name)
                .str("content", &heredoc.content)
                .bool("strip_tabs", heredoc.strip_tabs)
                .bool("expand", heredoc.expand)
                .u64("fd", heredoc.fd.map_or(u64::MAX, u64::from));
        }
        key.u64("mounts", self.mounts.len() as u64);
        for (mount, source) in self.mounts.iter().zip(&self.mount_sources) {
            mount.cache_key(key);
            match source {
                None => {
                    key.str("source", "none");
                }
                Some(source) => source_key(source, key),
            }
        }
        key.str(
            "network",
            match self.network {
                Network::Default => "default",
                Network::None => "none",
                Network::Host => "host",
            },
        );
        key.str(
            "security",
            match self.security {
                Security::Sandbox => "sandbox",
                Security::Insecure => "insecure",
            },
        );
        // Build args are in the command's environment, so they are part of what it does.
        key.pairs("build_args", &self.build_args);
    }
}

/// A mount's shape, never its content: a secret's bytes must not reach a key, and cache
/// mounts are meant to change without busting anything.
impl CacheKey for Mount {
    fn cache_key(&self, key: &mut KeyHasher) {
        let kind = match self.kind {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        };
        key.str("mount", kind)
            .opt_str("target", self.target.as_deref())
            .opt_str("source", self.source.as_deref())
            .opt_str("from", self.from.as_deref())
            .bool("readonly", self.readonly)
            .opt_str("id", self.id.as_deref())
            .str(
                "sharing",
                match self.sharing {
                    Sharing::Shared => "shared",
                    Sharing::Private => "private",
                    Sharing::Locked => "locked",
                },
            )
            .u64("mode", self.mode.map_or(u64::MAX, u64::from))
            .u64("uid", self.uid.map_or(u64::MAX, u64::from))
            .u64("gid", self.gid.map_or(u64::MAX, u64::from))
            .u64("size", self.size.unwrap_or(u64::MAX))
            .bool("required", self.required)
            .opt_str("env", self.env.as_deref());
    }
}

fn source_key(source: &Source, key: &mut KeyHasher) {
    match source {
        Source::Context => key.str("source", "context"),
        Source::Stage(index) => key.str("source", "stage").u64("stage", *index as u64),
        Source::Image(reference) => key.str("source", "image").str("image", reference),
    };
}

impl CacheKey for CopyStep {
    fn cache_key(&self, key: &mut KeyHasher) {
        key.bool("add", self.is_add)
            .u64("sources", self.sources.len() as u64);
        for source in &self.sources {
            match source {
                CopySource::Path(path) => key.str("path", path),
                CopySource::Heredoc { name, content } => {
                    key.str("heredoc", name).str("content", content)
                }
                CopySource::Url(url) => key.str("url", url),
                CopySource::Git(url) => key.str("git", url),
            };
        }
        key.str("destination", &self.destination);
        source_key(&self.from, key);
        key.opt_str("chown", self.chown.as_deref())
            .opt_str("chmod", self.chmod.as_deref())
            .bool("link", self.link)
            .bool("parents", self.parents)
            .list("excludes", &self.excludes)
            .opt_str("checksum", self.checksum.as_deref())
            .bool("keep_git_dir", self.keep_git_dir)
            .opt_str(
                "unpack",
                self.unpack.map(|u| if u { "true" } else { "false" }),
            );
    }
}

/// How a step's layer is compressed, as its key sees it: another compression is another blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// gzip at a zlib level.
    Gzip(u32),
    /// zstd at a zstd level.
    Zstd(i32),
    /// An uncompressed tar.
    None,
}

/// One named input of a layer step's key. The name is what a miss explanation shows; the value
/// has one explicit encoding per kind (see [`KeyPart::value`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The chain key of the filesystem below the step.
    Parent(String),
    /// A `--link` step: independent of what is below it.
    LinkedParent,
    /// The digest of the step itself after expansion ([`instruction_digest`]).
    Instruction(String),
    /// The ids a `--chown` resolved to in the image it runs on.
    Chown {
        /// Numeric user id.
        uid: u32,
        /// Numeric group id.
        gid: u32,
    },
    /// The digest of the environment a RUN sees ([`env_digest`]).
    Env(String),
    /// The user a RUN runs as.
    User(String),
    /// The working directory a RUN runs in.
    Workdir(String),
    /// A build argument the step reads: only a hash of its value ([`build_arg_digest`]).
    BuildArg {
        /// The argument's name.
        name: String,
        /// The hash of its value.
        value_digest: String,
    },
    /// The layer's compression.
    Compression(LayerCompression),
    /// `SOURCE_DATE_EPOCH`, when given.
    Epoch(Option<i64>),
    /// An ADD URL with `--checksum`: the checksum stands for the content.
    UrlChecksum {
        /// The URL.
        url: String,
        /// The checksum given.
        checksum: String,
    },
    /// An ADD URL without `--checksum`, as downloaded.
    UrlContent {
        /// The URL.
        url: String,
        /// `sha256:<hex>` of the content.
        digest: String,
        /// The file name it gets in the image.
        file_name: String,
        /// `Last-Modified`, seconds since the epoch.
        mtime: Option<i64>,
    },
    /// The content digest of all a context source matched.
    ContextSource {
        /// The source as written.
        pattern: String,
        /// Its content digest.
        digest: String,
    },
    /// One file of a context source, so a miss can name it.
    ContextFile {
        /// The file's path, under its source.
        path: String,
        /// Its content hash.
        digest: String,
    },
    /// A `--from` stage's chain key.
    Stage(String),
    /// A `--from` image's chain key.
    Image(String),
    /// A RUN bind mount of the build context.
    MountContext {
        /// The mount's position among the RUN's mounts.
        index: usize,
        /// The mounted path in the context (`.` for all of it).
        path: String,
        /// Its content digest.
        digest: String,
    },
    /// An ADD git source: the commit its ref named when the key was made.
    GitCommit {
        /// The repository without credentials, with its ref and subdir (`url#ref:subdir`).
        source: String,
        /// The full object name of the commit.
        commit: String,
        /// Whether `.git` is kept.
        keep_git_dir: bool,
    },
    /// A RUN bind mount of a stage.
    MountStage {
        /// The mount's position among the RUN's mounts.
        index: usize,
        /// The stage's chain key.
        chain_key: String,
    },
    /// A RUN bind mount of an image.
    MountImage {
        /// The mount's position among the RUN's mounts.
        index: usize,
        /// The image's chain key.
        chain_key: String,
    },
}

impl KeyPart {
    /// The part's name, as a miss explanation shows it.
    pub fn name(&self) -> String {
        match self {
            KeyPart::Parent(_) | KeyPart::LinkedParent => "parent".to_string(),
            KeyPart::Instruction(_) => "instruction".to_string(),
            KeyPart::Chown { .. } => "chown".to_string(),
            KeyPart::Env(_) => "env".to_string(),
            KeyPart::User(_) => "user".to_string(),
            KeyPart::Workdir(_) => "workdir".to_string(),
            KeyPart::BuildArg { name, .. } => format!("arg {name}"),
            KeyPart::Compression(_) => "compression".to_string(),
            KeyPart::Epoch(_) => "epoch".to_string(),
            KeyPart::UrlChecksum { url, .. } | KeyPart::UrlContent { url, .. } => {
                format!("url {url}")
            }
            KeyPart::ContextSource { pattern, .. } => format!("source {pattern}"),
            KeyPart::ContextFile { path, .. } => format!("file {path}"),
            KeyPart::Stage(_) => "stage".to_string(),
            KeyPart::Image(_) => "image".to_string(),
            KeyPart::MountContext { index, path, .. } => format!("mount {index} source {path}"),
            KeyPart::GitCommit { source, .. } => format!("git {source}"),
            KeyPart::MountStage { index, .. } => format!("mount {index} stage"),
            KeyPart::MountImage { index, .. } => format!("mount {index} image"),
        }
    }

    /// The part's value, in its one encoding.
    pub fn value(&self) -> String {
        match self {
            KeyPart::Parent(key)
            | KeyPart::Instruction(key)
            | KeyPart::Env(key)
            | KeyPart::Stage(key)
            | KeyPart::Image(key)
            | KeyPart::MountStage { chain_key: key, .. }
            | KeyPart::MountImage { chain_key: key, .. } => key.clone(),
            KeyPart::LinkedParent => "linked".to_string(),
            KeyPart::Chown { uid, gid } => format!("{uid}:{gid}"),
            KeyPart::User(text) | KeyPart::Workdir(text) => text.clone(),
            KeyPart::BuildArg { value_digest, .. } => value_digest.clone(),
            KeyPart::Compression(LayerCompression::Gzip(level)) => format!("gzip level {level}"),
            KeyPart::Compression(LayerCompression::Zstd(level)) => format!("zstd level {level}"),
            KeyPart::Compression(LayerCompression::None) => "none".to_string(),
            KeyPart::Epoch(epoch) => epoch.map(|e| e.to_string()).unwrap_or_default(),
            KeyPart::UrlChecksum { checksum, .. } => checksum.clone(),
            KeyPart::UrlContent {
                digest,
                file_name,
                mtime,
                ..
            } => {
                let mtime = mtime.map_or_else(|| "none".to_string(), |m| m.to_string());
                format!("{digest} {file_name} mtime {mtime}")
            }
            KeyPart::ContextSource { digest, .. }
            | KeyPart::ContextFile { digest, .. }
            | KeyPart::MountContext { digest, .. } => digest.clone(),
            KeyPart::GitCommit {
                commit,
                keep_git_dir,
                ..
            } => format!("commit {commit} keep-git-dir {keep_git_dir}"),
        }
    }
}

/// What kind of layer step a key is for: a COPY/ADD and a RUN with equal parts differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// COPY or ADD.
    Layer,
    /// RUN.
    Run,
}

/// A layer step's key: its parts in order, hashed under the key scheme.
#[derive(Debug, Clone)]
pub struct StepKey {
    kind: StepKind,
    parts: Vec<KeyPart>,
}

impl StepKey {
    /// An empty key of one kind.
    pub fn new(kind: StepKind) -> Self {
        StepKey {
            kind,
            parts: Vec::new(),
        }
    }

    /// Adds a part.
    pub fn push(&mut self, part: KeyPart) -> &mut Self {
        self.parts.push(part);
        self
    }

    /// The parts so far.
    pub fn parts(&self) -> &[KeyPart] {
        &self.parts
    }

    /// The key (`sha256:<hex>`) and the named parts a record keeps (the scheme first), so a
    /// later miss can say what changed.
    pub fn finish(&self) -> (String, Vec<(String, String)>) {
        self.finish_with_scheme(KEY_SCHEME)
    }

    fn finish_with_scheme(&self, scheme: &str) -> (String, Vec<(String, String)>) {
        let mut named = Vec::with_capacity(self.parts.len().saturating_add(1));
        named.push((SCHEME_PART.to_string(), scheme.to_string()));
        named.extend(self.parts.iter().map(|p| (p.name(), p.value())));
        let domain = match self.kind {
            StepKind::Layer => "layer-step",
            StepKind::Run => "run-step",
        };
        let mut key = KeyHasher::with_scheme(domain, scheme);
        key.pairs("parts", &named);
        (key.finish(), named)
    }
}

/// The digest of a step after expansion: its text, flags, values, heredocs, working directory.
pub fn instruction_digest(step: &Step) -> String {
    let mut key = KeyHasher::new("instruction");
    step.cache_key(&mut key);
    key.finish()
}

/// The digest of the environment a RUN sees (`NAME=value` lines, in order).
pub fn env_digest(env: &[String]) -> String {
    let mut key = KeyHasher::new("env");
    key.list("env", env);
    key.finish()
}

/// A hash of a build argument's value: a build arg may hold something private, and cache
/// records are plain files.
pub fn build_arg_digest(value: Option<&str>) -> String {
    let mut key = KeyHasher::new("build-arg");
    key.opt_str("value", value);
    key.finish()
}

/// When the newest record of a step was written under another key scheme (or before there was
/// one), its parts say nothing about this key: the step runs because kiln was upgraded.
pub fn written_by_other_scheme(previous_parts: &[(String, String)]) -> bool {
    !previous_parts
        .iter()
        .any(|(name, value)| name == SCHEME_PART && value == KEY_SCHEME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(build: impl FnOnce(&mut KeyHasher)) -> String {
        let mut hasher = KeyHasher::new("test");
        build(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        assert_ne!(
            key(|k| {
                k.str("a", "ab").str("b", "c");
            }),
            key(|k| {
                k.str("a", "a").str("b", "bc");
            })
        );
        assert_ne!(
            key(|k| {
                k.list("l", &["a b"]);
            }),
            key(|k| {
                k.list("l", &["a", "b"]);
            })
        );
        assert_ne!(
            key(|k| {
                k.opt_str("o", None);
            }),
            key(|k| {
                k.opt_str("o", Some(""));
            })
        );
    }

    #[test]
    fn domains_separate_keys() {
        assert_ne!(KeyHasher::new("a").finish(), KeyHasher::new("b").finish());
    }

    /// Replaces `same_input_same_key`, which compared a key with itself: this pins what a key
    /// is, byte for byte (the scheme, the domain, then each field as an 8-byte little-endian
    /// length and its bytes), worked out here without the hasher, so a change to the encoding
    /// (or anything else that gets into a key, a time or an address) fails it.
    #[test]
    fn a_key_is_sha256_of_its_length_prefixed_fields() {
        fn field(out: &mut Vec<u8>, tag: &str, value: &[u8]) {
            for part in [tag.as_bytes(), value] {
                out.extend_from_slice(&(part.len() as u64).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        let mut encoded = Vec::new();
        field(&mut encoded, "scheme", KEY_SCHEME.as_bytes());
        field(&mut encoded, "domain", b"test");
        field(&mut encoded, "x", b"1");
        field(&mut encoded, "n", &7u64.to_le_bytes());
        let expected: String = Sha256::digest(&encoded)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            key(|k| {
                k.str("x", "1").u64("n", 7);
            }),
            format!("sha256:{expected}")
        );
    }
}
