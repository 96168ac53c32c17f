//! RUN: the command in kiln's sandbox over the image's snapshots, and its diff as a snapshot.
//!
//! Overlay first: the snapshots are the lower dirs, a fresh upper dir takes every change and
//! *is* the diff. Where overlay cannot be mounted, the image is copied and the finished copy is
//! compared with the layers. Both end in [`crate::diff::canonicalize`], so both give the same
//! layer bytes.

use crate::fsmeta::{io_at, set_stamp, Stamp};
use crate::rootfs::Rootfs;
use crate::ExecError;
use kiln_oci::ImageConfig;
use kiln_plan::RunStep;
use kiln_recipe::mount::{MountType, Sharing};
use kiln_sandbox::{Identity, MountKind, MountSpec, Output, RootSpec, Sandbox, ScriptFile, Spec};
use kiln_store::{Store, WorkDir};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// How RUN gets a writable root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Snapshotter {
    /// Overlay, and a copy when overlay cannot be mounted.
    #[default]
    Auto,
    /// Always overlay (fails where it cannot be mounted).
    Overlay,
    /// Always a copy plus a walk (slower; for filesystems overlay cannot stack on).
    Copy,
}

impl Snapshotter {
    /// `auto`, `overlay`, or `copy` (`native` as buildah names it).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "auto" => Some(Snapshotter::Auto),
            "overlay" => Some(Snapshotter::Overlay),
            "copy" | "native" => Some(Snapshotter::Copy),
            _ => None,
        }
    }

    /// `--snapshotter`, else `$KILN_SNAPSHOTTER` when set and not empty, else auto. Err: the
    /// name given, which is none of them.
    pub fn chosen(flag: Option<&str>) -> Result<Self, String> {
        let env = std::env::var("KILN_SNAPSHOTTER").ok();
        let name = flag.or(env.as_deref().filter(|v| !v.is_empty()));
        match name {
            None => Ok(Snapshotter::Auto),
            Some(name) => Snapshotter::parse(name).ok_or_else(|| name.to_string()),
        }
    }
}

/// Lines of output a failed RUN shows.
const TAIL_LINES: usize = 20;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a `kiln build --secret` takes the secret's bytes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `src=PATH`: the file's bytes.
    File(PathBuf),
    /// `env=NAME`: the variable's value.
    Env(String),
}

/// A `RUN --mount` source the builder resolved, parallel to `RunStep.mounts`.
#[derive(Debug, Clone)]
pub enum MountInput {
    /// Nothing to resolve (cache, tmpfs, secret and ssh mounts).
    None,
    /// A bind from the build context: the source, resolved inside the context directory, and,
    /// when `.dockerignore` applies, the entries it leaves (a filtered copy is bound then).
    Context {
        /// The source inside the context directory.
        path: PathBuf,
        /// The entries `.dockerignore` leaves, when it leaves some out.
        filtered: Option<Vec<kiln_context::Entry>>,
    },
    /// A bind from a stage or an image: its filesystem.
    Image(Rootfs),
}

/// The `--mount`s of a RUN, made ready: what the sandbox mounts, the targets the image lacks
/// (made outside every layer), environment additions, and the locks held for the step.
#[derive(Default)]
struct PreparedMounts {
    mounts: Vec<MountSpec>,
    points: Vec<(String, bool)>,
    env: Vec<(String, String)>,
    _locks: Vec<std::fs::File>,
}

/// A cache mount's id: `id=`, else its target.
fn cache_id(mount: &kiln_recipe::mount::Mount, target: &str) -> String {
    mount.id.clone().unwrap_or_else(|| format!("/{target}"))
}

/// What a cache mount with `from=` starts from: the layers of the stage or image (their
/// snapshot directories are named by content) and the directory inside it.
fn seed_identity(rootfs: &Rootfs, relative: &Path) -> String {
    let mut text = String::new();
    for layer in rootfs.layers() {
        let name = layer.file_name().unwrap_or_default().to_string_lossy();
        text.push_str(&format!("{}:{name}\n", name.len()));
    }
    text.push_str(&relative.to_string_lossy());
    kiln_oci::sha256_digest(text.as_bytes()).hex().to_string()
}

/// The ids of the cache mounts the RUN steps of the stages a plan builds use: the ones a
/// `--cache-from` may restore and a `--cache-to ...,cache-mounts=true` carries.
pub fn planned_cache_mount_ids(plan: &kiln_plan::Plan) -> std::collections::BTreeSet<String> {
    plan.order
        .iter()
        .filter_map(|i| plan.stages.get(*i))
        .flat_map(|stage| &stage.steps)
        .filter_map(|step| match &step.action {
            kiln_plan::Action::Run(run) => Some(cache_mount_ids_in(run, &step.workdir)),
            _ => None,
        })
        .flatten()
        .collect()
}

fn cache_mount_ids_in(run: &kiln_plan::RunStep, workdir: &str) -> Vec<String> {
    let workdir = if workdir.is_empty() { "/" } else { workdir };
    run.mounts
        .iter()
        // A cache seeded with from= is one per content of its source: nothing to carry along.
        .filter(|m| m.kind == MountType::Cache && m.from.is_none())
        .filter_map(|m| {
            let target = clean_target(&m.effective_target()?, workdir).ok()?;
            Some(cache_id(m, &target))
        })
        .collect()
}

/// A target's path below `/`, `.` parts dropped; relative targets are relative to the working
/// directory. `..` is refused.
fn clean_target(target: &str, workdir: &str) -> Result<String, String> {
    let full = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{workdir}/{target}")
    };
    let mut parts = Vec::new();
    for part in full.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(format!("mount target {target}: \"..\" is not allowed"));
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(format!("mount target {target}: cannot mount over /"));
    }
    Ok(parts.join("/"))
}

/// A private copy of `source` (a file or a directory tree) at `dest`.
fn private_copy(source: &Path, dest: &Path) -> Result<(), ExecError> {
    let meta = source.metadata().map_err(|e| io_at(source, e))?;
    if meta.is_dir() {
        std::fs::create_dir(dest).map_err(|e| io_at(dest, e))?;
        let view = Rootfs::new(vec![source.to_path_buf()]);
        crate::flatten::flatten(&view, dest, crate::flatten::Materialize::Copy)?;
    } else {
        std::fs::copy(source, dest).map_err(|e| io_at(dest, e))?;
    }
    Ok(())
}

/// A copy of the context entries a walk kept (what `.dockerignore` leaves out is not there),
/// files opened beneath the context root.
fn filtered_copy(
    context: Option<&kiln_context::Context>,
    entries: &[kiln_context::Entry],
    dest: &Path,
) -> Result<(), ExecError> {
    use std::os::unix::fs::PermissionsExt;
    let Some(context) = context else {
        return Err(ExecError::Run(
            "RUN --mount from the build context: no context".to_string(),
        ));
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let target = if entry.relative.as_os_str().is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(&entry.relative)
        };
        match &entry.kind {
            kiln_context::EntryKind::Dir => {
                std::fs::create_dir_all(&target).map_err(|e| io_at(&target, e))?;
                dirs.push((target, entry.mode));
            }
            kiln_context::EntryKind::File => {
                let mut from = context
                    .open_file(&entry.absolute)
                    .map_err(|e| io_at(&entry.absolute, e))?;
                let mut to = std::fs::File::create(&target).map_err(|e| io_at(&target, e))?;
                std::io::copy(&mut from, &mut to).map_err(|e| io_at(&target, e))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(entry.mode))
                    .map_err(|e| io_at(&target, e))?;
            }
            kiln_context::EntryKind::Symlink(link) => {
                std::os::unix::fs::symlink(link, &target).map_err(|e| io_at(&target, e))?;
            }
        }
    }
    // Modes last, so a read-only directory does not stop its own entries.
    for (dir, mode) in dirs.into_iter().rev() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_at(&dir, e))?;
    }
    Ok(())
}

fn prepare_mounts(job: &RunJob<'_>, base: &Path) -> Result<PreparedMounts, ExecError> {
    let mut prepared = PreparedMounts::default();
    let fail = |message: String| ExecError::Run(format!("line {}: {message}", job.line));
    let workdir = if job.config.config.working_dir.is_empty() {
        "/"
    } else {
        job.config.config.working_dir.as_str()
    };
    let is_root = rustix::process::geteuid().is_root();
    for (index, mount) in job.run.mounts.iter().enumerate() {
        let input = job.mount_inputs.get(index).unwrap_or(&MountInput::None);
        let target = match mount.effective_target() {
            Some(target) => Some(clean_target(&target, workdir).map_err(&fail)?),
            None => None,
        };
        let need_target = || {
            target
                .clone()
                .ok_or_else(|| fail("RUN --mount needs target=<path>".to_string()))
        };
        match mount.kind {
            MountType::Cache => {
                let target = need_target()?;
                // With from=, the cache starts as a copy of that stage's or image's directory
                // `source`; as in BuildKit it is a cache of its own for each content of `from`.
                let seed = match (&mount.from, input) {
                    (None, _) => None,
                    (Some(_), MountInput::Image(rootfs)) => {
                        let source = mount.source.clone().unwrap_or_default();
                        let (relative, found) = rootfs
                            .resolve(Path::new(&source), true)
                            .map_err(|e| fail(format!("RUN --mount source {source}: {e}")))?;
                        match found {
                            Some(found) if found.meta.is_dir() => Some((rootfs, relative)),
                            _ => {
                                return Err(fail(format!(
                                    "RUN --mount=type=cache source {source:?} is not a directory in {}",
                                    mount.from.as_deref().unwrap_or("the image")
                                )))
                            }
                        }
                    }
                    (Some(from), _) => {
                        return Err(fail(format!(
                            "RUN --mount=type=cache,from={from}: the cache can start only from a stage or an image"
                        )))
                    }
                };
                let id = match &seed {
                    None => cache_id(mount, &target),
                    Some((rootfs, relative)) => {
                        format!(
                            "{}:{}",
                            cache_id(mount, &target),
                            seed_identity(rootfs, relative)
                        )
                    }
                };
                let cache = job.store.cache_mount(&id)?;
                let mut dir = cache.dir().to_path_buf();
                // Every user holds the cache's lock: shared ones together, `locked` alone
                // (waiting for the others), `private` alone or else with a fresh directory of
                // its own that is thrown away.
                match mount.sharing {
                    Sharing::Locked => cache.lock_exclusive()?,
                    Sharing::Shared => cache.lock_shared()?,
                    Sharing::Private => {
                        if !cache.try_lock_exclusive() {
                            dir = base.join(format!("private-cache-{index}"));
                        }
                    }
                }
                prepared._locks.push(cache.into_lock());
                match std::fs::create_dir(&dir) {
                    Ok(()) if seed.is_some() => {
                        if let Some((rootfs, relative)) = &seed {
                            // A copy, never hard links: the cache is written to, the store's
                            // snapshots must not be.
                            crate::flatten::flatten_from(
                                rootfs,
                                relative,
                                &dir,
                                crate::flatten::Materialize::Copy,
                            )?;
                        }
                    }
                    Ok(()) => {
                        use std::os::unix::fs::PermissionsExt;
                        let mode = mount.mode.unwrap_or(0o755);
                        if is_root || mount.uid.is_some() || mount.gid.is_some() {
                            std::os::unix::fs::chown(
                                &dir,
                                Some(mount.uid.unwrap_or(0)),
                                Some(mount.gid.unwrap_or(0)),
                            )
                            .map_err(|e| io_at(&dir, e))?;
                        }
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                            .map_err(|e| io_at(&dir, e))?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_at(&dir, e)),
                }
                prepared.points.push((target.clone(), true));
                prepared.mounts.push(MountSpec {
                    target: format!("/{target}"),
                    kind: MountKind::Bind {
                        source: dir,
                        read_only: mount.readonly,
                    },
                });
            }
            MountType::Tmpfs => {
                let target = need_target()?;
                prepared.points.push((target.clone(), true));
                prepared.mounts.push(MountSpec {
                    target: format!("/{target}"),
                    kind: MountKind::Tmpfs { size: mount.size },
                });
            }
            MountType::Bind => {
                let target = need_target()?;
                let source = mount.source.clone().unwrap_or_default();
                let path = match input {
                    MountInput::Context {
                        filtered: Some(entries),
                        ..
                    } => {
                        let copy = base.join(format!("mount-{index}"));
                        filtered_copy(job.context, entries, &copy)?;
                        copy
                    }
                    MountInput::Context {
                        path,
                        filtered: None,
                    } => {
                        if mount.readonly {
                            path.clone()
                        } else {
                            let copy = base.join(format!("mount-{index}"));
                            private_copy(path, &copy)?;
                            copy
                        }
                    }
                    MountInput::Image(rootfs) => {
                        let (relative, found) = rootfs
                            .resolve(Path::new(&source), true)
                            .map_err(|e| fail(format!("RUN --mount source {source}: {e}")))?;
                        let Some(found) = found else {
                            return Err(fail(format!(
                                "RUN --mount source {source:?} does not exist in {}",
                                mount.from.as_deref().unwrap_or("the image")
                            )));
                        };
                        if rootfs.layers().len() == 1 && mount.readonly {
                            found.path
                        } else {
                            let tree = base.join(format!("mount-{index}"));
                            std::fs::create_dir(&tree).map_err(|e| io_at(&tree, e))?;
                            let how = if mount.readonly {
                                crate::flatten::Materialize::Hardlink
                            } else {
                                crate::flatten::Materialize::Copy
                            };
                            crate::flatten::flatten(rootfs, &tree, how)?;
                            tree.join(relative)
                        }
                    }
                    MountInput::None => {
                        return Err(fail(format!(
                            "RUN --mount=type=bind at /{target}: its source was not resolved"
                        )))
                    }
                };
                prepared.points.push((target.clone(), path.is_dir()));
                prepared.mounts.push(MountSpec {
                    target: format!("/{target}"),
                    kind: MountKind::Bind {
                        source: path,
                        read_only: mount.readonly,
                    },
                });
            }
            MountType::Secret => {
                let id = mount.id.clone().or_else(|| {
                    target
                        .as_deref()
                        .and_then(|t| t.rsplit('/').next())
                        .map(str::to_string)
                });
                let Some(id) = id else {
                    return Err(fail("RUN --mount=type=secret needs id=<name>".to_string()));
                };
                let bytes = match job.secrets.get(&id) {
                    None => None,
                    Some(SecretSource::File(path)) => Some(std::fs::read(path).map_err(|e| {
                        fail(format!("secret {id}: reading {}: {e}", path.display()))
                    })?),
                    Some(SecretSource::Env(name)) => std::env::var_os(name).map(|v| {
                        use std::os::unix::ffi::OsStringExt;
                        v.into_vec()
                    }),
                };
                let Some(bytes) = bytes else {
                    if mount.required {
                        return Err(fail(format!(
                            "secret {id} is required but was not given (kiln build --secret id={id},src=PATH or id={id},env=VAR)"
                        )));
                    }
                    continue;
                };
                if let Some(name) = &mount.env {
                    prepared
                        .env
                        .push((name.clone(), String::from_utf8_lossy(&bytes).into_owned()));
                }
                if let Some(target) = target {
                    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                    let dir = base.join("secrets");
                    std::fs::create_dir_all(&dir).map_err(|e| io_at(&dir, e))?;
                    let file = dir.join(index.to_string());
                    let mut out = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&file)
                        .map_err(|e| io_at(&file, e))?;
                    out.write_all(&bytes).map_err(|e| io_at(&file, e))?;
                    drop(out);
                    if mount.uid.is_some() || mount.gid.is_some() {
                        std::os::unix::fs::chown(&file, mount.uid, mount.gid)
                            .map_err(|e| io_at(&file, e))?;
                    }
                    if let Some(mode) = mount.mode {
                        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                            .map_err(|e| io_at(&file, e))?;
                    }
                    prepared.points.push((target.clone(), false));
                    prepared.mounts.push(MountSpec {
                        target: format!("/{target}"),
                        kind: MountKind::Bind {
                            source: file,
                            read_only: true,
                        },
                    });
                }
            }
            MountType::Ssh => {
                let target = need_target()?;
                // Only what `--ssh` names is forwarded, never the caller's agent by default.
                let id = mount.id.as_deref().unwrap_or("default");
                let Some(socket) = job.settings.ssh.get(id).cloned() else {
                    return Err(fail(format!(
                        "RUN --mount=type=ssh{}: no ssh agent named {id:?} was given to the build; pass --ssh {id} (the agent of $SSH_AUTH_SOCK) or --ssh {id}=SOCKET",
                        mount.id.as_deref().map(|i| format!(",id={i}")).unwrap_or_default()
                    )));
                };
                prepared.points.push((target.clone(), false));
                prepared
                    .env
                    .push(("SSH_AUTH_SOCK".to_string(), format!("/{target}")));
                prepared.mounts.push(MountSpec {
                    target: format!("/{target}"),
                    kind: MountKind::Bind {
                        source: socket,
                        read_only: false,
                    },
                });
            }
        }
    }
    Ok(prepared)
}

/// One RUN to execute.
pub struct RunJob<'a> {
    /// The store the work area and the result go in.
    pub store: &'a Store,
    /// The filesystem before this step.
    pub image: &'a Rootfs,
    /// The stage's config (user, env, workdir, shell).
    pub config: &'a ImageConfig,
    /// The RUN as planned.
    pub run: &'a RunStep,
    /// The recipe line, for messages.
    pub line: usize,
    /// The instruction as written, for messages.
    pub text: &'a str,
    /// How the writable root is made.
    pub snapshotter: Snapshotter,
    /// Set once overlay failed in this process: later steps copy straight away.
    pub overlay_broken: &'a AtomicBool,
    /// Set when another stage failed: the command is killed.
    pub cancel: &'a AtomicBool,
    /// Called with each line of the command's output.
    pub on_line: &'a (dyn Fn(&str) + Sync),
    /// The sources of `run.mounts`, resolved (same order).
    pub mount_inputs: &'a [MountInput],
    /// What the build's flags say about every RUN.
    pub settings: &'a crate::run_settings::RunSettings,
    /// The build context, for binds of files `.dockerignore` filters.
    pub context: Option<&'a kiln_context::Context>,
    /// `--secret` sources by id, for `RUN --mount=type=secret`.
    pub secrets: &'a std::collections::BTreeMap<String, SecretSource>,
}

/// `user[:group]` of the image's USER, resolved in its /etc/passwd and /etc/group as runc does
/// for BuildKit: a name must exist; a number need not (then its group is 0). The supplementary
/// groups are exactly the groups whose member list names the user (the primary group is not
/// added); an explicit group, or a numeric `uid:gid`, has none.
pub fn resolve_user(spec: &str, image: &Rootfs) -> Result<Identity, String> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Ok(Identity::default());
    }
    let passwd = image.read_file("/etc/passwd").unwrap_or_default();
    let groups_file = image.read_file("/etc/group").unwrap_or_default();
    let records = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| line.split(':').map(str::to_string).collect())
            .collect()
    };
    let passwd = records(&passwd);
    let group_records = records(&groups_file);
    let entry = passwd.iter().find(|fields| {
        fields.first().map(String::as_str) == Some(user)
            || (user.parse::<u32>().is_ok() && fields.get(2).map(String::as_str) == Some(user))
    });
    let (uid, name, primary) = match (user.parse::<u32>(), entry) {
        (Ok(uid), entry) => (
            uid,
            entry.and_then(|f| f.first().cloned()),
            entry.and_then(|f| f.get(3)?.parse().ok()).unwrap_or(0),
        ),
        (Err(_), Some(fields)) => {
            let uid = fields
                .get(2)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("user {user:?}: its /etc/passwd line has no valid uid"))?;
            let gid = fields.get(3).and_then(|v| v.parse().ok()).unwrap_or(0);
            (uid, Some(user.to_string()), gid)
        }
        (Err(_), None) => {
            return Err(format!(
                "unable to find user {user}: no matching entries in the image's /etc/passwd"
            ))
        }
    };
    let gid = match group {
        None => primary,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_records
                .iter()
                .find(|fields| fields.first().map(String::as_str) == Some(group))
                .and_then(|fields| fields.get(2)?.parse().ok())
                .ok_or_else(|| {
                    format!(
                        "unable to find group {group}: no matching entries in the image's /etc/group"
                    )
                })?,
        },
    };
    // Only the implicit form has supplementary groups.
    let mut groups = Vec::new();
    if group.is_none() {
        if let Some(name) = &name {
            for fields in &group_records {
                let member = fields
                    .get(3)
                    .is_some_and(|members| members.split(',').any(|m| m == name));
                if let Some(id) = fields.get(2).and_then(|g| g.parse().ok()) {
                    if member && !groups.contains(&id) {
                        groups.push(id);
                    }
                }
            }
        }
    }
    Ok(Identity { uid, gid, groups })
}

/// The home directory runc gives a command whose environment has no `HOME`: the home field of
/// the first /etc/passwd entry with the user's uid, or `/` when there is none (or it is empty).
fn home_of(uid: u32, image: &Rootfs) -> String {
    let passwd = image.read_file("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2).and_then(|v| v.parse::<u32>().ok()) == Some(uid))
        .and_then(|fields| fields.get(5).map(|home| home.to_string()))
        .filter(|home| !home.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

/// Adds `HOME` from the user's passwd entry when the environment does not set it (an
/// `ENV HOME=...` or a build arg wins).
fn add_home(env: &mut Vec<String>, uid: u32, image: &Rootfs) {
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(uid, image)));
    }
}

/// The command's environment: the image's ENV, then build args that ENV does not set, and a
/// PATH when there is none.
fn environment(config: &ImageConfig, run: &RunStep) -> Vec<String> {
    let mut env: Vec<String> = config.config.env.clone();
    let has = |env: &[String], name: &str| {
        env.iter()
            .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == name)
    };
    for (name, value) in &run.build_args {
        if !has(&env, name) {
            env.push(format!("{name}={value}"));
        }
    }
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    env
}

/// The process to start and the files it needs: a `#!` heredoc runs as a script file; heredocs
/// of a shell command are given to the shell after the command, as a shell reads them.
fn command(run: &RunStep) -> (Vec<String>, Vec<ScriptFile>) {
    if let Some(script) = &run.script {
        let name = run
            .heredocs
            .first()
            .map(|h| h.name.clone())
            .unwrap_or_else(|| "script".into());
        let file = ScriptFile {
            name: name.clone(),
            content: script.as_bytes().to_vec(),
            mode: 0o755,
        };
        return (vec![format!("/dev/pipes/{name}")], vec![file]);
    }
    let mut argv = run.argv.clone();
    let sole_script = matches!(&run.command, kiln_recipe::instruction::Command::Shell(text)
        if argv.last() != Some(&text.text));
    if !run.heredocs.is_empty() && !sole_script {
        if let Some(last) = argv.last_mut() {
            for heredoc in &run.heredocs {
                last.push('\n');
                last.push_str(&heredoc.content);
                last.push_str(&heredoc.name);
            }
            last.push('\n');
        }
    }
    (argv, Vec::new())
}

/// The xattr that marks an opaque directory for the overlays this process mounts.
pub fn opaque_xattr() -> &'static str {
    if in_initial_user_namespace() {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    }
}

fn in_initial_user_namespace() -> bool {
    kiln_sandbox::userns::in_initial_user_namespace()
}

/// Refuses a `RUN --mount` target whose way crosses a symbolic link (or a non-directory) of
/// the image.
fn check_target(image: &Rootfs, relative: &str) -> Result<(), ExecError> {
    let mut path = PathBuf::new();
    let parts: Vec<&str> = relative.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let Some(found) = image.lstat(&path) else {
            return Ok(());
        };
        let kind = found.meta.file_type();
        if kind.is_symlink() {
            return Err(ExecError::Run(format!(
                "RUN --mount target /{relative}: /{} is a symbolic link in the image; kiln mounts over it and will not follow it",
                path.display()
            )));
        }
        if i + 1 < parts.len() && !kind.is_dir() {
            return Err(ExecError::Run(format!(
                "RUN --mount target /{relative}: /{} is not a directory in the image",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Creates in `dir` the mount points the image lacks (parents with the image's metadata, so
/// the merged view shows the image's own): the sandbox's own and `extra` (`RUN --mount`
/// targets, relative, with whether each is a directory). Returns the paths created, parents
/// first.
fn make_mount_points(
    image: &Rootfs,
    dir: &Path,
    extra: &[(String, bool)],
) -> Result<Vec<PathBuf>, ExecError> {
    let mut created = Vec::new();
    let mut stamps = Vec::new();
    for (relative, _) in extra {
        check_target(image, relative)?;
    }
    let points = kiln_sandbox::MOUNT_POINTS
        .iter()
        .map(|(p, d)| (*p, *d))
        .chain(extra.iter().map(|(p, d)| (p.as_str(), *d)));
    for (relative, is_dir) in points {
        let relative = Path::new(relative);
        if image.lstat(relative).is_some() {
            continue;
        }
        // Parents the image has, recreated with its metadata.
        let mut parent = PathBuf::new();
        for part in relative.parent().into_iter().flat_map(|p| p.components()) {
            parent.push(part);
            let target = dir.join(&parent);
            if target.symlink_metadata().is_ok() {
                continue;
            }
            std::fs::create_dir(&target).map_err(|e| io_at(&target, e))?;
            created.push(parent.clone());
            if let Some(found) = image.lstat(&parent) {
                stamps.push((target.clone(), Stamp::of(&found.meta)));
            }
        }
        let target = dir.join(relative);
        if target.symlink_metadata().is_ok() {
            continue;
        }
        if is_dir {
            std::fs::create_dir(&target).map_err(|e| io_at(&target, e))?;
        } else {
            std::fs::File::create(&target).map_err(|e| io_at(&target, e))?;
        }
        created.push(relative.to_path_buf());
    }
    let is_root = rustix::process::geteuid().is_root();
    for (path, stamp) in stamps.into_iter().rev() {
        set_stamp(&path, stamp, false, is_root)?;
    }
    Ok(created)
}

/// The overlay's lower dirs, top first: the mount points, then the layers. A layer that comes
/// again lower down (two steps with the same diff) is given once, at its highest place: what it
/// holds shows there already, and overlay refuses a directory twice.
fn overlay_lowers(mounts: PathBuf, image: &Rootfs) -> Vec<PathBuf> {
    let mut lowers = vec![mounts];
    for layer in image.layers().iter().rev() {
        if !lowers.contains(layer) {
            lowers.push(layer.clone());
        }
    }
    lowers
}

/// An overlay of the image in the work area `base`: a fresh upper dir (`base/upper`), its work
/// dir, the merged mount point and the layer of missing mount points.
fn overlay_root(
    base: &Path,
    image: &Rootfs,
    extra: &[(String, bool)],
) -> Result<RootSpec, ExecError> {
    for dir in ["upper", "work", "merged", "mounts"] {
        let dir = base.join(dir);
        std::fs::create_dir(&dir).map_err(|e| io_at(&dir, e))?;
    }
    make_mount_points(image, &base.join("mounts"), extra)?;
    Ok(RootSpec::Overlay {
        lowers: overlay_lowers(base.join("mounts"), image),
        upper: base.join("upper"),
        work: base.join("work"),
        merged: base.join("merged"),
        userxattr: !in_initial_user_namespace(),
    })
}

/// What every sandbox of a build or of `kiln run` gets: its /etc/hosts and /etc/resolv.conf
/// (files of the work area `base`, bound into the root), the image's working directory, the
/// hostname; the root is filled in by the caller.
fn base_spec(
    base: &Path,
    config: &ImageConfig,
    argv: Vec<String>,
    env: Vec<String>,
    identity: Identity,
    network: kiln_sandbox::Network,
    extra_hosts: &[(String, String)],
) -> Result<Spec, ExecError> {
    let hostname = "kiln".to_string();
    let hosts = base.join("hosts");
    let mut hosts_text = hosts_file(&hostname);
    for (host, ip) in extra_hosts {
        hosts_text.push_str(&format!("{ip}\t{host}\n"));
    }
    std::fs::write(&hosts, hosts_text).map_err(|e| io_at(&hosts, e))?;
    let resolv = base.join("resolv.conf");
    let host_resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(&resolv, host_resolv).map_err(|e| io_at(&resolv, e))?;
    Ok(Spec {
        root: RootSpec::Directory {
            path: PathBuf::new(),
        },
        argv,
        env,
        cwd: if config.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            config.config.working_dir.clone()
        },
        identity,
        hostname,
        network,
        hosts_file: hosts,
        resolv_file: resolv,
        files: Vec::new(),
        mounts: Vec::new(),
        privileged: false,
        shm_size: None,
        rlimits: Vec::new(),
        status_file: base.join("status"),
    })
}

fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// Output lines as they come, the last ones kept for an error, all of it in a log file.
struct OutputLog<'a> {
    pending: Vec<u8>,
    tail: VecDeque<String>,
    file: Option<std::fs::File>,
    on_line: &'a (dyn Fn(&str) + Sync),
    lines: u64,
}

impl OutputLog<'_> {
    fn take(&mut self, bytes: &[u8]) {
        if let Some(file) = &mut self.file {
            let _ = file.write_all(bytes);
        }
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.line(&line[..line.len() - 1]);
        }
    }

    fn line(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes)
            .trim_end_matches('\r')
            .to_string();
        (self.on_line)(&text);
        self.lines += 1;
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(text);
    }

    fn finish(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.line(&rest);
        }
    }
}

/// Runs the step; returns the work area and the snapshot of its diff, in canonical form.
pub fn execute(job: &RunJob<'_>) -> Result<(WorkDir, PathBuf), ExecError> {
    let work = job.store.work_dir()?;
    let base = work.path();
    let identity = resolve_user(&job.config.config.user, job.image).map_err(|message| {
        ExecError::Run(format!(
            "line {}: USER {}: {message}",
            job.line, job.config.config.user
        ))
    })?;
    let (argv, files) = command(job.run);
    let mut env = environment(job.config, job.run);
    add_home(&mut env, identity.uid, job.image);
    // A RUN's own --network wins over the build's.
    let network = match job.run.network {
        kiln_recipe::instruction::Network::None => kiln_sandbox::Network::None,
        kiln_recipe::instruction::Network::Host => kiln_sandbox::Network::Host,
        kiln_recipe::instruction::Network::Default => job.settings.network,
    };
    let insecure = job.run.security == kiln_recipe::instruction::Security::Insecure;
    if insecure && !job.settings.allow_insecure {
        return Err(ExecError::Run(format!(
            "line {}: RUN --security=insecure needs the security.insecure entitlement: build with --allow security.insecure",
            job.line
        )));
    }
    let mut spec = base_spec(
        base,
        job.config,
        argv,
        env,
        identity,
        network,
        &job.settings.extra_hosts,
    )?;
    spec.files = files;
    spec.privileged = insecure;
    spec.shm_size = job.settings.shm_size;
    spec.rlimits = job.settings.ulimits.clone();
    let prepared = prepare_mounts(job, base)?;
    for (name, value) in &prepared.env {
        let prefix = format!("{name}=");
        spec.env.retain(|e| !e.starts_with(&prefix));
        spec.env.push(format!("{name}={value}"));
    }
    spec.mounts = prepared.mounts.clone();
    let points = prepared.points.clone();
    let sandbox = Sandbox::current()?;
    let use_overlay = match job.snapshotter {
        Snapshotter::Overlay => true,
        Snapshotter::Copy => false,
        Snapshotter::Auto => !job.overlay_broken.load(Ordering::Relaxed),
    };
    if use_overlay {
        spec.root = overlay_root(base, job.image, &points)?;
        let upper = base.join("upper");
        match run_in(&sandbox, &spec, job, base) {
            Ok(()) => {
                crate::diff::canonicalize(job.image, &upper, opaque_xattr())?;
                return Ok((work, upper));
            }
            Err(RunFailure::Overlay(message)) if job.snapshotter == Snapshotter::Auto => {
                job.overlay_broken.store(true, Ordering::Relaxed);
                (job.on_line)(&format!(
                    "kiln: overlay is not available here ({message}); copying the image instead"
                ));
            }
            Err(RunFailure::Overlay(message)) => {
                return Err(ExecError::Run(format!("line {}: {message}", job.line)))
            }
            Err(RunFailure::Build(error)) => return Err(error),
        }
    }
    // The copy: the image flattened into a private tree, the command run there, the finished
    // tree compared with the layers.
    let tree = base.join("tree");
    std::fs::create_dir(&tree).map_err(|e| io_at(&tree, e))?;
    crate::flatten::flatten(job.image, &tree, crate::flatten::Materialize::Copy)?;
    // Parents of the mount points as they were, to give them back their times.
    let mut parents: Vec<(PathBuf, Stamp, Vec<std::ffi::OsString>)> = Vec::new();
    let all_points = kiln_sandbox::MOUNT_POINTS
        .iter()
        .map(|(p, _)| *p)
        .chain(points.iter().map(|(p, _)| p.as_str()));
    for relative in all_points {
        for parent in tree.join(relative).ancestors().skip(1) {
            if !parent.starts_with(&tree) {
                break;
            }
            let parent = parent.to_path_buf();
            if parents.iter().any(|(p, _, _)| *p == parent) {
                continue;
            }
            if let Ok(meta) = parent.symlink_metadata() {
                if meta.is_dir() {
                    parents.push((parent.clone(), Stamp::of(&meta), listing(&parent)));
                }
            }
        }
    }
    let created = make_mount_points(job.image, &tree, &points)?;
    spec.root = RootSpec::Directory { path: tree.clone() };
    match run_in(&sandbox, &spec, job, base) {
        Ok(()) => {}
        Err(RunFailure::Overlay(message)) => {
            return Err(ExecError::Run(format!("line {}: {message}", job.line)))
        }
        Err(RunFailure::Build(error)) => return Err(error),
    }
    // What was made only to mount over goes; a parent whose entries are as before gets its
    // time back, as if nothing had been created in it.
    for relative in created.iter().rev() {
        let path = tree.join(relative);
        let _ = std::fs::remove_dir(&path).or_else(|_| {
            if path
                .symlink_metadata()
                .is_ok_and(|m| m.is_file() && m.len() == 0)
            {
                std::fs::remove_file(&path)
            } else {
                Ok(())
            }
        });
    }
    let is_root = rustix::process::geteuid().is_root();
    for (path, stamp, before) in parents {
        if listing(&path) == before {
            set_stamp(&path, stamp, false, is_root)?;
        }
    }
    let diff = base.join("diff");
    std::fs::create_dir(&diff).map_err(|e| io_at(&diff, e))?;
    crate::diff::walk_diff(job.image, &tree, &diff)?;
    crate::diff::canonicalize(job.image, &diff, opaque_xattr())?;
    Ok((work, diff))
}

fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// How often a running step's writes are pushed to the disk.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs `run` while a thread writes the file system of `dir` out every [`FLUSH_INTERVAL`].
/// The store syncs a step's snapshot once before naming it; with memory to spare the kernel
/// would hold all of a long RUN's writes (apt's 600 MB) until then, so that sync sat on the
/// critical path (0.57 s here). Flushing on the way uses the disk while the step computes.
///
/// Returns what `run` returned and the first error any flush of this process met. A write
/// error is reported once, to whichever sync sees it first: one a flush saw would not reach the
/// sync before the snapshot is named, so the step must fail on it instead. It stays the
/// process's (which step's files were lost is not known), so every step after it fails too.
fn flushing_while<T>(dir: &Path, run: impl FnOnce() -> T) -> (T, Option<rustix::io::Errno>) {
    flushing_with(
        &SHARED_FLUSH,
        FLUSH_INTERVAL,
        |fd| rustix::fs::syncfs(fd),
        dir,
        run,
    )
}

fn flushing_with<T>(
    shared: &std::sync::Mutex<SharedFlush>,
    interval: std::time::Duration,
    sync: impl Fn(std::os::fd::BorrowedFd<'_>) -> rustix::io::Result<()> + Sync,
    dir: &Path,
    run: impl FnOnce() -> T,
) -> (T, Option<rustix::io::Errno>) {
    use std::os::fd::AsFd;
    let result = match std::fs::File::open(dir) {
        Ok(handle) => kiln_store::repeating_while(
            interval,
            || {
                // Steps running side by side write to the same store: one flush serves them all.
                if flush_due(shared, interval / 2) {
                    if let Err(errno) = sync(handle.as_fd()) {
                        note_failure(shared, errno);
                    }
                }
            },
            run,
        ),
        Err(_) => run(),
    };
    let failed = shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .failed;
    (result, failed)
}

/// What the RUN steps of this process share about flushing.
struct SharedFlush {
    /// When one last flushed.
    last: Option<std::time::Instant>,
    /// The first error a flush met.
    failed: Option<rustix::io::Errno>,
}

static SHARED_FLUSH: std::sync::Mutex<SharedFlush> = std::sync::Mutex::new(SharedFlush {
    last: None,
    failed: None,
});

/// Whether no flush was made within `gap` (and, if so, notes one now).
fn flush_due(shared: &std::sync::Mutex<SharedFlush>, gap: std::time::Duration) -> bool {
    let now = std::time::Instant::now();
    let mut shared = shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if shared.last.is_some_and(|at| now.duration_since(at) < gap) {
        return false;
    }
    shared.last = Some(now);
    true
}

fn note_failure(shared: &std::sync::Mutex<SharedFlush>, errno: rustix::io::Errno) {
    let mut shared = shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    shared.failed.get_or_insert(errno);
}

enum RunFailure {
    Overlay(String),
    Build(ExecError),
}

fn run_in(sandbox: &Sandbox, spec: &Spec, job: &RunJob<'_>, base: &Path) -> Result<(), RunFailure> {
    let log_path = base.join("output.log");
    let mut log = OutputLog {
        pending: Vec::new(),
        tail: VecDeque::new(),
        file: std::fs::File::create(&log_path).ok(),
        on_line: job.on_line,
        lines: 0,
    };
    let (result, flush_failed) = flushing_while(base, || {
        sandbox.run_until(
            spec,
            Output::Stream(&mut |bytes| log.take(bytes)),
            job.cancel,
        )
    });
    log.finish();
    if let Some(errno) = flush_failed {
        let error = std::io::Error::new(
            std::io::Error::from(errno).kind(),
            format!("writing the step's files to the disk: {errno}"),
        );
        return Err(RunFailure::Build(io_at(base, error)));
    }
    let exit = match result {
        Ok(exit) => exit,
        Err(kiln_sandbox::SandboxError::Cancelled) => {
            return Err(RunFailure::Build(ExecError::Cancelled))
        }
        Err(error) if error.is_overlay_failure() => {
            return Err(RunFailure::Overlay(error.to_string()))
        }
        Err(kiln_sandbox::SandboxError::NotStarted { program, message }) => {
            return Err(RunFailure::Build(ExecError::Run(format!(
                "line {}: {}\n  {program}: {message}{}",
                job.line,
                job.text,
                if spec.argv.len() > 1 && job.run.script.is_none() {
                    " (the shell comes from SHELL, default /bin/sh -c: the image must have it)"
                } else {
                    ""
                }
            ))))
        }
        Err(error) => {
            return Err(RunFailure::Build(ExecError::Run(format!(
                "line {}: {}\n  {error}",
                job.line, job.text
            ))))
        }
    };
    if exit.success() {
        return Ok(());
    }
    let mut message = format!(
        "line {}: {}\n  the command ended with {exit}",
        job.line, job.text
    );
    if !log.tail.is_empty() {
        message.push_str(&format!(
            "; its last {} of {} lines of output:\n",
            log.tail.len(),
            log.lines
        ));
        for line in &log.tail {
            message.push_str("  │ ");
            message.push_str(line);
            message.push('\n');
        }
    }
    if log.lines as usize > TAIL_LINES {
        // The whole output stays, outside the work area that is about to go.
        let logs = job.store.root().join("logs");
        let kept = logs.join(format!(
            "run-line{}-{}.log",
            job.line,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ));
        if std::fs::create_dir_all(&logs).is_ok() && std::fs::copy(&log_path, &kept).is_ok() {
            message.push_str(&format!("  full output: {}\n", kept.display()));
        }
    }
    Err(RunFailure::Build(ExecError::Run(
        message.trim_end().to_string(),
    )))
}

/// What `kiln run` asks for.
pub struct RunImage {
    /// The image, as the store names it.
    pub reference: String,
    /// Replaces ENTRYPOINT + CMD when not empty.
    pub command: Vec<String>,
    /// `--user`, replacing the image's USER.
    pub user: Option<String>,
    /// `-e KEY=VALUE`, replacing the image's variable of the same name.
    pub env: Vec<String>,
    /// `--network`.
    pub network: kiln_sandbox::Network,
    /// How the writable root is made.
    pub snapshotter: Snapshotter,
    /// Of a multi-platform image, the platform to run (default: this machine's); a foreign
    /// one runs through its binfmt_misc emulator, checked first.
    pub platform: Option<kiln_plan::Platform>,
}

/// Runs a command in an image of the store with the caller's terminal, changes thrown away;
/// returns how it ended.
pub fn run_image(store: &Store, request: &RunImage) -> Result<kiln_sandbox::Exit, ExecError> {
    let platform = request
        .platform
        .clone()
        .unwrap_or_else(kiln_plan::Platform::host);
    let (config, layers) = crate::lookup::image_in_store_for(store, &request.reference, &platform)?;
    // The image's own platform decides what executes: checked before anything runs.
    kiln_sandbox::emulation::check(&config.os, &config.architecture, config.variant.as_deref())
        .map_err(|e| ExecError::Run(format!("{}: {e}", request.reference)))?;
    let image = Rootfs::new(layers);
    let entrypoint = config.config.entrypoint.clone().unwrap_or_default();
    // As `docker run IMAGE ARGS`: the arguments replace CMD, the ENTRYPOINT stays.
    let mut argv = entrypoint;
    if request.command.is_empty() {
        argv.extend(config.config.cmd.clone().unwrap_or_default());
    } else {
        argv.extend(request.command.iter().cloned());
    }
    if argv.is_empty() {
        return Err(ExecError::Run(format!(
            "{}: the image has no ENTRYPOINT or CMD; give a command",
            request.reference
        )));
    }
    let user = request.user.clone().unwrap_or(config.config.user.clone());
    let identity = resolve_user(&user, &image).map_err(ExecError::Run)?;
    let mut env = config.config.env.clone();
    // `-e KEY=VALUE` replaces the image's KEY, as docker run does.
    for entry in &request.env {
        let key = entry.split_once('=').map_or(entry.as_str(), |(key, _)| key);
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(entry.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    add_home(&mut env, identity.uid, &image);
    let work = store.work_dir()?;
    let base = work.path();
    let mut spec = base_spec(base, &config, argv, env, identity, request.network, &[])?;
    let sandbox = Sandbox::current()?;
    if request.snapshotter != Snapshotter::Copy {
        spec.root = overlay_root(base, &image, &[])?;
        match sandbox.run(&spec, Output::Inherit) {
            Ok(exit) => return Ok(exit),
            Err(e) if e.is_overlay_failure() && request.snapshotter == Snapshotter::Auto => {}
            Err(e) => return Err(ExecError::Sandbox(e)),
        }
    }
    let tree = base.join("tree");
    std::fs::create_dir(&tree).map_err(|e| io_at(&tree, e))?;
    crate::flatten::flatten(&image, &tree, crate::flatten::Materialize::Copy)?;
    make_mount_points(&image, &tree, &[])?;
    spec.root = RootSpec::Directory { path: tree };
    sandbox
        .run(&spec, Output::Inherit)
        .map_err(ExecError::Sandbox)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_step_whose_directory_cannot_be_opened_still_runs() {
        // The repeating itself is tested with kiln_store::repeating_while.
        let shared = std::sync::Mutex::new(SharedFlush {
            last: None,
            failed: None,
        });
        let (answer, failed) = flushing_with(
            &shared,
            std::time::Duration::from_millis(1),
            |_| Ok(()),
            Path::new("/nonexistent/kiln"),
            || 7,
        );
        assert_eq!((answer, failed), (7, None));
    }

    #[test]
    fn steps_side_by_side_share_one_flush() {
        use std::time::Duration;
        let shared = std::sync::Mutex::new(SharedFlush {
            last: None,
            failed: None,
        });
        let gap = Duration::from_millis(20);
        assert!(flush_due(&shared, gap), "the first flush is due");
        assert!(
            !flush_due(&shared, gap),
            "a second step right after flushes nothing"
        );
        std::thread::sleep(gap + Duration::from_millis(5));
        assert!(
            flush_due(&shared, gap),
            "after the gap a flush is due again"
        );
    }

    #[test]
    fn an_error_a_flush_meets_fails_this_step_and_the_next() {
        use std::sync::atomic::AtomicUsize;
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let shared = std::sync::Mutex::new(SharedFlush {
            last: None,
            failed: None,
        });
        let interval = Duration::from_millis(2);
        let flushes = AtomicUsize::new(0);
        let (answer, failed) = flushing_with(
            &shared,
            interval,
            |_| {
                flushes.fetch_add(1, Ordering::SeqCst);
                Err(rustix::io::Errno::IO)
            },
            dir.path(),
            || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while flushes.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                42
            },
        );
        assert_eq!(answer, 42, "the step itself runs to its end");
        assert_eq!(failed, Some(rustix::io::Errno::IO));
        // A later step whose own flushes succeed: the files lost are nobody's in particular.
        let (_, failed) = flushing_with(&shared, interval, |_| Ok(()), dir.path(), || ());
        assert_eq!(failed, Some(rustix::io::Errno::IO));
    }

    fn image_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Rootfs) {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let path = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        let rootfs = Rootfs::new(vec![dir.path().to_path_buf()]);
        (dir, rootfs)
    }

    #[test]
    fn users_resolve_as_docker_does() {
        let (_dir, image) = image_with(&[
            (
                "/etc/passwd",
                "root:x:0:0::/root:/bin/sh\nbob:x:1000:100::/home/bob:/bin/sh\n",
            ),
            (
                "/etc/group",
                "root:x:0:\nusers:x:100:\nwheel:x:10:bob,alice\n",
            ),
        ]);
        assert_eq!(resolve_user("", &image).unwrap(), Identity::default());
        assert_eq!(
            resolve_user("bob", &image).unwrap(),
            Identity {
                uid: 1000,
                gid: 100,
                groups: vec![10]
            }
        );
        assert_eq!(
            resolve_user("bob:wheel", &image).unwrap(),
            Identity {
                uid: 1000,
                gid: 10,
                groups: vec![]
            }
        );
        // A number need not exist; its group is then 0.
        assert_eq!(resolve_user("4242", &image).unwrap().gid, 0);
        assert_eq!(resolve_user("1000", &image).unwrap().gid, 100);
        let error = resolve_user("nobody", &image).unwrap_err();
        assert!(error.contains("unable to find user nobody"), "{error}");
        assert!(resolve_user("bob:staff", &image).is_err());
        // A user in no group list has no supplementary groups: not even its primary group.
        assert_eq!(
            resolve_user("root", &image).unwrap().groups,
            Vec::<u32>::new()
        );
        assert_eq!(
            resolve_user("1000:100", &image).unwrap().groups,
            Vec::<u32>::new()
        );
    }

    #[test]
    fn home_comes_from_the_passwd_entry_of_the_uid() {
        let (_dir, image) = image_with(&[(
            "/etc/passwd",
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:100::/home/bob:/bin/sh\nnohome:x:7:7:::\n",
        )]);
        assert_eq!(home_of(0, &image), "/root");
        assert_eq!(home_of(1000, &image), "/home/bob");
        assert_eq!(home_of(7, &image), "/");
        assert_eq!(home_of(4242, &image), "/");
        let mut env = vec!["HOME=/custom".to_string()];
        add_home(&mut env, 1000, &image);
        assert_eq!(env, ["HOME=/custom"]);
        let mut env = vec!["PATH=/bin".to_string()];
        add_home(&mut env, 1000, &image);
        assert_eq!(env, ["PATH=/bin", "HOME=/home/bob"]);
    }

    #[test]
    fn mount_points_missing_from_the_image_are_made_aside() {
        let (_dir, image) = image_with(&[("/etc/passwd", "root:x:0:0::/:/bin/sh\n")]);
        let out = tempfile::tempdir().unwrap();
        let created = make_mount_points(&image, out.path(), &[]).unwrap();
        let names: Vec<String> = created.iter().map(|p| p.display().to_string()).collect();
        // /etc exists in the image: only its missing files are made (and /etc to hold them).
        assert_eq!(
            names,
            ["proc", "sys", "dev", "etc", "etc/hosts", "etc/resolv.conf"]
        );
        assert!(out.path().join("etc/hosts").is_file());
        assert!(!out.path().join("etc/passwd").exists());
    }

    #[test]
    fn mount_targets_are_made_aside_and_symlinks_refused() {
        let (dir, image) = image_with(&[("/etc/passwd", "root:x:0:0::/:/bin/sh\n")]);
        let out = tempfile::tempdir().unwrap();
        let extra = vec![
            ("run/secrets/tok".to_string(), false),
            ("var/cache/x".to_string(), true),
            ("etc/app".to_string(), true),
        ];
        let created = make_mount_points(&image, out.path(), &extra).unwrap();
        let names: Vec<String> = created.iter().map(|p| p.display().to_string()).collect();
        for expected in [
            "run",
            "run/secrets",
            "run/secrets/tok",
            "var/cache/x",
            "etc/app",
        ] {
            assert!(names.contains(&expected.to_string()), "{names:?}");
        }
        assert!(out.path().join("run/secrets/tok").is_file());
        assert!(out.path().join("var/cache/x").is_dir());
        std::os::unix::fs::symlink("/", dir.path().join("link")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let error =
            make_mount_points(&image, out.path(), &[("link/x".to_string(), true)]).unwrap_err();
        assert!(
            error.to_string().contains("/link is a symbolic link"),
            "{error}"
        );
        std::fs::write(dir.path().join("file"), "").unwrap();
        let error =
            make_mount_points(&image, out.path(), &[("file/x".to_string(), true)]).unwrap_err();
        assert!(error.to_string().contains("not a directory"), "{error}");
    }

    #[test]
    fn mount_targets_are_cleaned() {
        assert_eq!(clean_target("/a/./b/", "/").unwrap(), "a/b");
        assert_eq!(clean_target("rel", "/work").unwrap(), "work/rel");
        assert!(clean_target("/a/../b", "/").is_err());
        assert!(clean_target("/", "/").is_err());
    }

    #[test]
    fn output_is_split_into_lines_and_the_tail_kept() {
        let seen = std::sync::Mutex::new(Vec::new());
        let on_line = |line: &str| seen.lock().unwrap().push(line.to_string());
        let mut log = OutputLog {
            pending: Vec::new(),
            tail: VecDeque::new(),
            file: None,
            on_line: &on_line,
            lines: 0,
        };
        for i in 0..30 {
            log.take(format!("line {i}\n").as_bytes());
        }
        log.take(b"partial");
        log.finish();
        assert_eq!(log.lines, 31);
        assert_eq!(log.tail.len(), TAIL_LINES);
        assert_eq!(log.tail.back().unwrap(), "partial");
        assert_eq!(seen.lock().unwrap()[0], "line 0");
    }

    #[test]
    fn shell_heredocs_follow_the_command() {
        let recipe = kiln_recipe::parse_recipe("FROM scratch\nRUN cat <<EOF > /x\nhello\nEOF\n");
        let plan = kiln_plan::plan(&recipe, &kiln_plan::PlanOptions::default());
        let step = &plan.stages[0].steps[0];
        let kiln_plan::Action::Run(run) = &step.action else {
            panic!("not a RUN")
        };
        let (argv, files) = command(run);
        assert!(files.is_empty());
        assert_eq!(argv.last().unwrap(), "cat <<EOF > /x\nhello\nEOF\n");
    }
}
