//! Cache keys: what a step's result depends on, hashed so that two different inputs can never
//! share a key.
//!
//! Every field goes in with a tag and a length prefix, in a fixed order, so `("ab", "c")` and
//! `("a", "bc")` hash differently and an optional field that is absent differs from one that
//! is empty. The builder chains keys: a step's key covers its parent's key, the step itself
//! (through [`CacheKey`]) and the digests of what it reads.

use crate::step::{Action, ConfigChange, CopySource, CopyStep, RunStep, Source, Step};
use kiln_recipe::instruction::{Command, Network, Security};
use kiln_recipe::mount::{Mount, MountType, Sharing};
use sha2::{Digest, Sha256};

pub struct KeyHasher {
    hasher: Sha256,
}

impl KeyHasher {
    /// A hasher for one kind of key; `domain` keeps keys of different kinds apart.
    pub fn new(domain: &str) -> Self {
        let mut key = KeyHasher {
            hasher: Sha256::new(),
        };
        key.str("domain", domain);
        key
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    pub fn bytes(&mut self, tag: &str, value: &[u8]) -> &mut Self {
        self.raw(tag.as_bytes());
        self.raw(value);
        self
    }

    pub fn str(&mut self, tag: &str, value: &str) -> &mut Self {
        self.bytes(tag, value.as_bytes())
    }

    pub fn u64(&mut self, tag: &str, value: u64) -> &mut Self {
        self.bytes(tag, &value.to_le_bytes())
    }

    pub fn bool(&mut self, tag: &str, value: bool) -> &mut Self {
        self.bytes(tag, &[u8::from(value)])
    }

    pub fn opt_str(&mut self, tag: &str, value: Option<&str>) -> &mut Self {
        match value {
            None => self.bytes(tag, b"\x00none"),
            Some(v) => self.str(tag, &format!("\x01{v}")),
        }
    }

    pub fn list<S: AsRef<str>>(&mut self, tag: &str, values: &[S]) -> &mut Self {
        self.u64(tag, values.len() as u64);
        for value in values {
            self.raw(value.as_ref().as_bytes());
        }
        self
    }

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

    #[test]
    fn same_input_same_key() {
        assert_eq!(
            key(|k| {
                k.str("x", "1");
            }),
            key(|k| {
                k.str("x", "1");
            })
        );
    }
}
