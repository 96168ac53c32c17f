//! Same recipe, same image as BuildKit: builds a context with kiln and with docker's BuildKit
//! (`DOCKER_BUILDKIT=1 docker build --network none`, against the dockerd `DOCKER_HOST` names;
//! scripts/test.sh starts one), then flattens each image's layers into a tree description and
//! compares the trees and the config fields users rely on.
//!
//! Both builds start from the same base: kiln's own busybox image ([`super::busybox_store`]),
//! saved with `kiln save --format docker` and `docker load`ed, so `FROM busybox:test` is the
//! same bytes on both sides. Layers are read with the `tar` crate, not kiln's reader.
//!
//! What is compared, per path of the flattened tree: type, mode (with setuid/setgid/sticky),
//! owner uid:gid, size and sha256 of a file's content, a symlink's target, device numbers; the
//! hard-link groups (names that are one file); and the config's Env, Cmd, Entrypoint,
//! WorkingDir, User, Labels, ExposedPorts, Volumes and StopSignal. Not compared: times (docker
//! 20.10's BuildKit has no SOURCE_DATE_EPOCH), the layer split, history, and the root directory
//! itself (`/` is not an entry in BuildKit's layers).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use super::{busybox_store, kiln, skip_or_fail};

/// The config fields compared (under the config's `config` object).
pub const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
];

/// A difference a case expects, with why: a path of the tree (`/etc/x`), `hard links ...`, or
/// `config.FIELD`; a key ending in `*` matches every key it starts. With `owner_only`, only the
/// owner may differ there (type, mode, size and content must still match). A listed difference
/// that does not happen fails the case too, so the list stays true.
#[derive(Clone, Copy, Debug)]
pub struct Known {
    pub key: &'static str,
    pub reason: &'static str,
    pub owner_only: bool,
}

impl Known {
    /// Anything may differ at `key`.
    pub const fn at(key: &'static str, reason: &'static str) -> Known {
        Known {
            key,
            reason,
            owner_only: false,
        }
    }

    /// Only the owner may differ at `key`.
    pub const fn owner(key: &'static str, reason: &'static str) -> Known {
        Known {
            key,
            reason,
            owner_only: true,
        }
    }

    fn matches(&self, key: &str, kiln: Option<&String>, buildkit: Option<&String>) -> bool {
        let key_matches = match self.key.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == self.key,
        };
        if !key_matches {
            return false;
        }
        if !self.owner_only {
            return true;
        }
        // "KIND MODE UID:GID ...": the same once the owner is left out.
        let without_owner = |d: &String| {
            d.split(' ')
                .enumerate()
                .filter(|(i, _)| *i != 2)
                .map(|(_, w)| w)
                .collect::<Vec<_>>()
                .join(" ")
        };
        matches!((kiln, buildkit), (Some(a), Some(b)) if without_owner(a) == without_owner(b))
    }
}

/// The docker client: Debian's docker.io client (`/usr/bin/docker`, the same release as its
/// dockerd, whose `DOCKER_BUILDKIT=1` needs no buildx plugin) when it is there, else `docker`
/// from PATH; `KILN_TEST_DOCKER` overrides both.
pub fn docker_client() -> String {
    if let Ok(client) = std::env::var("KILN_TEST_DOCKER") {
        return client;
    }
    if Path::new("/usr/bin/docker").is_file() {
        return "/usr/bin/docker".to_string();
    }
    "docker".to_string()
}

pub struct Docker {
    client: String,
    pub server_version: String,
}

impl Docker {
    /// The daemon `DOCKER_HOST` names, if it answers; else [`skip_or_fail`].
    pub fn attach() -> Option<Docker> {
        let client = docker_client();
        let info = Command::new(&client)
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match info {
            Ok(out) if out.status.success() => Some(Docker {
                client,
                server_version: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            }),
            Ok(out) => {
                skip_or_fail(&format!(
                    "no docker daemon answers (DOCKER_HOST={}): {}",
                    std::env::var("DOCKER_HOST").unwrap_or_default(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                None
            }
            Err(e) => {
                skip_or_fail(&format!("no docker client ({client}): {e}"));
                None
            }
        }
    }

    pub fn command(&self) -> Command {
        Command::new(&self.client)
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        checked(&out, &format!("docker {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker load -i ARCHIVE`.
    pub fn load(&self, archive: &Path) {
        self.run(&["load", "-q", "-i", &archive.display().to_string()]);
    }

    /// `DOCKER_BUILDKIT=1 docker build --network none -t TAG CTX`; its output on failure.
    pub fn build(&self, ctx: &Path, tag: &str) -> Result<(), String> {
        let out = self
            .command()
            .env("DOCKER_BUILDKIT", "1")
            .args([
                "build",
                "--network",
                "none",
                "--progress",
                "plain",
                "-t",
                tag,
            ])
            .arg(ctx)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `docker save -o DEST TAG`, then the tag is removed.
    pub fn save_and_remove(&self, tag: &str, dest: &Path) {
        self.run(&["save", "-o", &dest.display().to_string(), tag]);
        self.run(&["rmi", tag]);
    }
}

fn checked(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A flattened image: every path's description, the hard-link groups and the config fields.
#[derive(Debug, Default)]
pub struct Flat {
    pub tree: BTreeMap<String, String>,
    pub hard_links: BTreeSet<String>,
    pub config: BTreeMap<String, String>,
}

impl Flat {
    /// Everything as `key → description`, as [`compare`] sees it.
    fn entries(&self) -> BTreeMap<String, String> {
        let mut all = self.tree.clone();
        for group in &self.hard_links {
            all.insert(format!("hard links {group}"), "one file".to_string());
        }
        for (field, value) in &self.config {
            all.insert(format!("config.{field}"), value.clone());
        }
        all
    }
}

#[derive(Clone, Debug)]
struct Node {
    description: String,
    is_dir: bool,
    /// The first name of the file this one is a hard link of (itself for the first name).
    link_group: Option<String>,
}

/// One tar entry, read whole.
struct Entry {
    path: String,
    node: Option<Node>,
    /// A hard link's target (normalised); `node` is filled in from it.
    hard_link_to: Option<String>,
}

/// `./a/b/`, `a/b` → `/a/b`; the root is `/`.
fn normalise(path: &Path) -> String {
    let mut out = String::new();
    for part in path.components() {
        match part {
            std::path::Component::Normal(name) => {
                out.push('/');
                out.push_str(&name.to_string_lossy());
            }
            std::path::Component::ParentDir => panic!("`..` in a layer path: {}", path.display()),
            _ => {}
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Removes `path` and everything under it.
fn remove_tree(tree: &mut BTreeMap<String, Node>, path: &str) {
    tree.remove(path);
    remove_children(tree, path);
}

fn remove_children(tree: &mut BTreeMap<String, Node>, dir: &str) {
    let prefix = if dir == "/" {
        "/".to_string()
    } else {
        format!("{dir}/")
    };
    let doomed: Vec<String> = tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for path in doomed {
        tree.remove(&path);
    }
}

/// A layer blob as stored (plain or gzip tar) → its entries, in order.
/// Layer blobs (plain or gzip tars), first to last → the flattened tree and hard-link groups.
pub fn flatten_blobs(blobs: &[Vec<u8>]) -> (BTreeMap<String, String>, BTreeSet<String>) {
    flatten(blobs.iter().map(|b| read_layer(b.as_slice())).collect())
}

fn read_layer(blob: impl Read) -> Vec<Entry> {
    let mut blob = BufReader::new(blob);
    let head = blob.fill_buf().unwrap();
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(blob))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        panic!("a zstd layer: the parity tests read plain and gzip layers");
    } else {
        Box::new(blob)
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = normalise(&entry.path().unwrap());
        let header = entry.header();
        let mode = header.mode().unwrap() & 0o7777;
        let owner = format!("{}:{}", header.uid().unwrap(), header.gid().unwrap());
        let kind = header.entry_type();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let (description, is_dir, hard_link_to) = match kind {
            tar::EntryType::Directory => (format!("dir {mode:04o} {owner}"), true, None),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut hasher = Sha256::new();
                let size = io::copy(&mut entry, &mut hasher).unwrap();
                let digest = hasher.finalize();
                let hex: String = digest.iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                });
                (
                    format!("file {mode:04o} {owner} size={size} sha256:{hex}"),
                    false,
                    None,
                )
            }
            tar::EntryType::Symlink => (
                format!(
                    "symlink {mode:04o} {owner} -> {}",
                    link.expect("a symlink has a target")
                ),
                false,
                None,
            ),
            tar::EntryType::Link => (
                String::new(),
                false,
                Some(normalise(Path::new(
                    &link.expect("a hard link has a target"),
                ))),
            ),
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().unwrap().unwrap_or(0);
                let minor = header.device_minor().unwrap().unwrap_or(0);
                let kind = if kind == tar::EntryType::Char {
                    "char"
                } else {
                    "block"
                };
                (
                    format!("{kind} {mode:04o} {owner} {major}:{minor}"),
                    false,
                    None,
                )
            }
            tar::EntryType::Fifo => (format!("fifo {mode:04o} {owner}"), false, None),
            other => panic!("unexpected tar entry type {other:?} at {path}"),
        };
        let node = hard_link_to.is_none().then_some(Node {
            description,
            is_dir,
            link_group: None,
        });
        entries.push(Entry {
            path,
            node,
            hard_link_to,
        });
    }
    entries
}

/// Applies layers, first to last, as an overlay would: whiteouts (`.wh.NAME`, and
/// `.wh..wh..opq` for a directory's lower content) first, then the layer's entries.
fn flatten(layers: Vec<Vec<Entry>>) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut tree: BTreeMap<String, Node> = BTreeMap::new();
    for entries in layers {
        for entry in &entries {
            let name = entry.path.rsplit('/').next().unwrap_or("");
            if name == ".wh..wh..opq" {
                remove_children(&mut tree, parent(&entry.path));
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let dir = parent(&entry.path);
                let target = if dir == "/" {
                    format!("/{hidden}")
                } else {
                    format!("{dir}/{hidden}")
                };
                remove_tree(&mut tree, &target);
            }
        }
        for entry in entries {
            let name = entry.path.rsplit('/').next().unwrap_or("");
            if name.starts_with(".wh.") || entry.path == "/" {
                continue;
            }
            let node = match (&entry.node, &entry.hard_link_to) {
                (Some(node), _) => node.clone(),
                (None, Some(target)) => {
                    let first = tree
                        .get_mut(target)
                        .unwrap_or_else(|| panic!("hard link {} to missing {target}", entry.path));
                    let group = first.link_group.clone().unwrap_or_else(|| target.clone());
                    first.link_group = Some(group.clone());
                    Node {
                        description: first.description.clone(),
                        is_dir: false,
                        link_group: Some(group),
                    }
                }
                (None, None) => unreachable!(),
            };
            let keeps_children = node.is_dir && tree.get(&entry.path).is_some_and(|n| n.is_dir);
            if !keeps_children {
                remove_children(&mut tree, &entry.path);
            }
            tree.insert(entry.path, node);
        }
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, node) in &tree {
        if let Some(group) = &node.link_group {
            groups.entry(group.clone()).or_default().push(path.clone());
        }
    }
    let hard_links = groups
        .into_values()
        .filter(|names| names.len() > 1)
        .map(|names| names.join(" = "))
        .collect();
    let tree = tree
        .into_iter()
        .map(|(path, node)| (path, node.description))
        .collect();
    (tree, hard_links)
}

/// The config fields, each as compact JSON; absent, null, "", [] and {} all count as unset.
fn config_fields(config_bytes: &[u8]) -> BTreeMap<String, String> {
    let config: serde_json::Value = serde_json::from_slice(config_bytes).unwrap();
    let mut fields = BTreeMap::new();
    for field in CONFIG_FIELDS {
        let value = &config["config"][field];
        let unset = match value {
            serde_json::Value::Null => true,
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !unset {
            fields.insert((*field).to_string(), value.to_string());
        }
    }
    fields
}

pub fn flatten_image(image: &kiln_oci::ArchiveImage) -> Flat {
    let mut layers = Vec::new();
    for i in 0..image.layers().len() {
        let mut blob = image.open_layer(i).unwrap();
        let entries = read_layer(&mut blob);
        // Read to the end: the reader checks the digest there.
        io::copy(&mut blob, &mut io::sink()).unwrap();
        layers.push(entries);
    }
    let (tree, hard_links) = flatten(layers);
    Flat {
        tree,
        hard_links,
        config: config_fields(&image.config_bytes),
    }
}

/// The two builders' images of one context.
pub struct Pair {
    pub kiln: Flat,
    pub buildkit: Flat,
    pub docker_version: String,
}

/// Builds `ctx` (whose recipe may say `FROM busybox:test`) with kiln and with BuildKit and
/// flattens both; None when there is no docker daemon and skipping is allowed.
pub fn build_both(case: &str, ctx: &Path) -> Option<Pair> {
    let docker = Docker::attach()?;
    let root = busybox_store("auto");
    let out = tempfile::tempdir().unwrap();
    let root_arg = root.path().display().to_string();

    // The same base on both sides.
    let base = out.path().join("base.tar");
    let saved = kiln(
        &[
            "--root",
            &root_arg,
            "save",
            "--format",
            "docker",
            "-o",
            &base.display().to_string(),
            "busybox:test",
        ],
        out.path(),
        &[],
    );
    assert_eq!(saved.status, 0, "kiln save: {}", saved.stderr);
    docker.load(&base);

    let kiln_archive = out.path().join("kiln.tar");
    let built = kiln(
        &[
            "--root",
            &root_arg,
            "build",
            "--progress",
            "plain",
            "-o",
            &format!("type=oci,dest={}", kiln_archive.display()),
            &ctx.display().to_string(),
        ],
        ctx,
        &[],
    );
    assert_eq!(built.status, 0, "kiln build of {case}:\n{}", built.stderr);

    let tag = format!("kiln-parity/{case}:{}", std::process::id());
    if let Err(log) = docker.build(ctx, &tag) {
        panic!("BuildKit build of {case} failed:\n{log}");
    }
    let buildkit_archive = out.path().join("buildkit.tar");
    docker.save_and_remove(&tag, &buildkit_archive);

    let options = kiln_oci::ReadOptions::default();
    let kiln_image = kiln_oci::read_oci_archive(&kiln_archive, &options).unwrap();
    let buildkit_image = kiln_oci::read_docker_archive(&buildkit_archive, &options).unwrap();
    Some(Pair {
        kiln: flatten_image(&kiln_image),
        buildkit: flatten_image(&buildkit_image),
        docker_version: docker.server_version,
    })
}

/// Every difference between the two, as `key: kiln … / buildkit …` lines, minus the known
/// ones; fails on what is left and on known differences that did not happen.
pub fn compare(case: &str, pair: &Pair, known: &[Known]) {
    let kiln = pair.kiln.entries();
    let buildkit = pair.buildkit.entries();
    let keys: BTreeSet<&String> = kiln.keys().chain(buildkit.keys()).collect();
    let mut unexpected = String::new();
    let mut seen = vec![false; known.len()];
    for key in keys {
        let (a, b) = (kiln.get(key), buildkit.get(key));
        if a == b {
            continue;
        }
        if let Some(i) = known.iter().position(|k| k.matches(key, a, b)) {
            seen[i] = true;
            continue;
        }
        let show = |v: Option<&String>| v.map_or("(absent)".to_string(), Clone::clone);
        let _ = writeln!(
            unexpected,
            "  {key}\n    kiln:     {}\n    buildkit: {}",
            show(a),
            show(b)
        );
    }
    let stale: Vec<String> = known
        .iter()
        .zip(&seen)
        .filter(|(_, seen)| !**seen)
        .map(|(k, _)| format!("  {} ({})", k.key, k.reason))
        .collect();
    assert!(
        unexpected.is_empty() && stale.is_empty(),
        "{case}: kiln's image differs from BuildKit's (docker {}):\n{unexpected}{}",
        pair.docker_version,
        if stale.is_empty() {
            String::new()
        } else {
            format!(
                "known differences that did not happen (remove them from the list):\n{}\n",
                stale.join("\n")
            )
        }
    );
}

/// [`build_both`] then [`compare`].
pub fn assert_same_image(case: &str, ctx: &Path, known: &[Known]) {
    if let Some(pair) = build_both(case, ctx) {
        compare(case, &pair, known);
    }
}

/// Writes `files` (path, bytes, mode) under `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &[u8], u32)]) {
    use std::os::unix::fs::PermissionsExt;
    for (path, content, mode) in files {
        let full: PathBuf = dir.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(&full, content).unwrap();
        fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
    }
}
