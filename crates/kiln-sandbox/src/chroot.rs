//! The `chroot` rung: where no namespace can be made at all (Docker's default seccomp profile,
//! Kubernetes `RuntimeDefault`) but kiln is root in a container with Docker's default
//! capabilities (CAP_SYS_CHROOT, CAP_MKNOD). The step runs chrooted into the copy snapshotter's
//! private tree — never the container's own root — with what a mount would have given put in
//! place by hand and taken out again before the tree is compared with the image:
//!
//! - /dev/null, zero, full, random, urandom, tty: device nodes made like the container's;
//! - /etc/hosts, /etc/resolv.conf and secret or file binds: the file's bytes written over the
//!   mount point, the image's own bytes, owner, mode and times put back after;
//! - cache mounts: the cache directory renamed onto the (empty) mount point and back;
//! - tmpfs mounts: emptied after.
//!
//! Every path is checked for symbolic links before it is touched, before and after the step, so
//! a step that plants one cannot redirect the clean-up out of the tree. Without a pid namespace,
//! the helper is the step's child subreaper and kills every descendant when the command ends
//! (see `descendants`), even those in a session of their own; the seccomp filter also refuses
//! `chroot` (the way out of a chroot is a second one), `ptrace` and `process_vm_*`.

use crate::setup::{check_no_symlinks, DEVICES};
use crate::{Exit, MountKind, RootSpec, Spec, Status};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What to put back after the step, in reverse order of making.
enum Undo {
    /// A node or file kiln made.
    Remove(String),
    /// A directory kiln made (empty again by then).
    RemoveDir(String),
    /// A file whose bytes kiln replaced.
    Restore { relative: String, saved: Saved },
    /// A cache directory renamed onto its mount point: back to `source`, and the empty mount
    /// point made again with its metadata.
    MoveBack {
        relative: String,
        source: PathBuf,
        saved: Saved,
    },
    /// A tmpfs mount point: whatever the step left in it goes.
    Empty(String),
    /// A directory whose entries kiln changed: its times back, last.
    Times { relative: String, saved: Saved },
}

/// A file's or directory's bytes (files only) and metadata before kiln touched it.
struct Saved {
    content: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    atime: (i64, i64),
    mtime: (i64, i64),
}

impl Saved {
    fn of(path: &Path, with_content: bool) -> io::Result<Saved> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Saved {
            content: if with_content {
                std::fs::read(path)?
            } else {
                Vec::new()
            },
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            atime: (meta.atime(), meta.atime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }

    fn put_back(&self, path: &Path, with_content: bool) -> io::Result<()> {
        use rustix::fs::{Timespec, Timestamps};
        if with_content {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)?;
            file.write_all(&self.content)?;
        }
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            Some(rustix::fs::Uid::from_raw(self.uid)),
            Some(rustix::fs::Gid::from_raw(self.gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.mode))?;
        let stamp = |(sec, nsec): (i64, i64)| Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &Timestamps {
                last_access: stamp(self.atime),
                last_modification: stamp(self.mtime),
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }
}

fn relative(target: &str) -> Result<String, String> {
    let relative = target.trim_start_matches('/').to_string();
    if relative.is_empty() || relative.split('/').any(|part| part == "..") {
        return Err(format!(
            "mount target /{relative}: a mount target must be an absolute path below /"
        ));
    }
    Ok(relative)
}

/// Refuses a path with a symbolic link on its way (the step may have planted one).
fn checked(root: &Path, relative: &str) -> Result<PathBuf, String> {
    check_no_symlinks(root, relative).map_err(|e| format!("/{relative}: {e}"))?;
    Ok(root.join(relative))
}

fn io_error(what: &str, relative: &str, e: io::Error) -> String {
    format!("{what} /{relative}: {e}")
}

/// Puts in place what the sandbox's mounts would give; returns what to undo.
fn prepare(root: &Path, spec: &Spec, undo: &mut Vec<Undo>) -> Result<(), String> {
    if spec.network == crate::Network::None {
        return Err(
            "RUN --network=none needs a network namespace, which the chroot isolation cannot make; \
             see docs/ci.md for the settings that give kiln the userns isolation"
                .into(),
        );
    }
    let dev = checked(root, "dev")?;
    undo.push(Undo::Times {
        relative: "dev".into(),
        saved: Saved::of(&dev, false).map_err(|e| io_error("reading", "dev", e))?,
    });
    for name in DEVICES {
        let relative = format!("dev/{name}");
        let path = root.join(&relative);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        let host = std::fs::metadata(Path::new("/dev").join(name))
            .map_err(|e| io_error("reading the container's", &relative, e))?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            host.rdev(),
        )
        .map_err(|e| io_error("creating", &relative, e.into()))?;
        undo.push(Undo::Remove(relative.clone()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| io_error("setting the mode of", &relative, e))?;
    }
    if !spec.files.is_empty() {
        let pipes = root.join("dev/pipes");
        std::fs::create_dir(&pipes).map_err(|e| io_error("creating", "dev/pipes", e))?;
        undo.push(Undo::RemoveDir("dev/pipes".into()));
        for file in &spec.files {
            let relative = format!("dev/pipes/{}", file.name);
            let path = root.join(&relative);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(file.mode)
                .open(&path)
                .and_then(|mut f| f.write_all(&file.content))
                .map_err(|e| io_error("writing", &relative, e))?;
            undo.push(Undo::Remove(relative));
        }
    }
    for (relative, source) in [
        ("etc/hosts", &spec.hosts_file),
        ("etc/resolv.conf", &spec.resolv_file),
    ] {
        replace_file(root, relative, source, undo)?;
    }
    for mount in &spec.mounts {
        let relative = relative(&mount.target)?;
        let target = checked(root, &relative)?;
        match &mount.kind {
            MountKind::Bind { source, .. } if source.is_file() => {
                replace_file(root, &relative, source, undo)?;
            }
            MountKind::Bind {
                source,
                read_only: false,
            } if source.is_dir() => {
                let parent = relative.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                undo.push(Undo::Times {
                    relative: parent.to_string(),
                    saved: Saved::of(&root.join(parent), false)
                        .map_err(|e| io_error("reading", parent, e))?,
                });
                let saved =
                    Saved::of(&target, false).map_err(|e| io_error("reading", &relative, e))?;
                std::fs::remove_dir(&target).map_err(|e| {
                    io_error("emptying the mount point (it must be an empty directory)", &relative, e)
                })?;
                std::fs::rename(source, &target)
                    .map_err(|e| io_error("moving the cache onto", &relative, e))?;
                undo.push(Undo::MoveBack {
                    relative,
                    source: source.clone(),
                    saved,
                });
            }
            MountKind::Bind { source, .. } => {
                return Err(format!(
                    "/{relative}: a read-only directory or socket mount ({}) needs the sandbox or userns isolation",
                    source.display()
                ))
            }
            MountKind::Tmpfs { .. } => {
                undo.push(Undo::Times {
                    relative: relative.clone(),
                    saved: Saved::of(&target, false)
                        .map_err(|e| io_error("reading", &relative, e))?,
                });
                undo.push(Undo::Empty(relative));
            }
        }
    }
    Ok(())
}

/// The file at `relative` (a mount point, or the image's own file there) gets `source`'s bytes
/// for the step and its own back after.
fn replace_file(
    root: &Path,
    relative: &str,
    source: &Path,
    undo: &mut Vec<Undo>,
) -> Result<(), String> {
    let path = checked(root, relative)?;
    let saved = Saved::of(&path, true).map_err(|e| io_error("reading", relative, e))?;
    let content = std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?;
    undo.push(Undo::Restore {
        relative: relative.to_string(),
        saved,
    });
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .and_then(|mut f| f.write_all(&content))
        .map_err(|e| io_error("writing", relative, e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| io_error("setting the mode of", relative, e))
}

/// Takes out what [`prepare`] put in, newest first; the first failure is reported after the
/// rest was tried.
fn restore(root: &Path, undo: Vec<Undo>) -> Result<(), String> {
    let mut first = None;
    for step in undo.into_iter().rev() {
        let result = match step {
            Undo::Remove(relative) => checked(root, &relative).and_then(|path| {
                std::fs::remove_file(&path).map_err(|e| io_error("removing", &relative, e))
            }),
            Undo::RemoveDir(relative) => checked(root, &relative).and_then(|path| {
                std::fs::remove_dir_all(&path).map_err(|e| io_error("removing", &relative, e))
            }),
            Undo::Restore { relative, saved } => checked(root, &relative).and_then(|path| {
                saved
                    .put_back(&path, true)
                    .map_err(|e| io_error("putting back", &relative, e))
            }),
            Undo::MoveBack {
                relative,
                source,
                saved,
            } => checked(root, &relative).and_then(|path| {
                std::fs::rename(&path, &source)
                    .and_then(|()| std::fs::create_dir(&path))
                    .and_then(|()| saved.put_back(&path, false))
                    .map_err(|e| io_error("moving the cache back from", &relative, e))
            }),
            Undo::Empty(relative) => checked(root, &relative).and_then(|path| {
                let entries =
                    std::fs::read_dir(&path).map_err(|e| io_error("emptying", &relative, e))?;
                for entry in entries.flatten() {
                    let kind = entry
                        .file_type()
                        .map_err(|e| io_error("emptying", &relative, e))?;
                    let removed = if kind.is_dir() {
                        std::fs::remove_dir_all(entry.path())
                    } else {
                        std::fs::remove_file(entry.path())
                    };
                    removed.map_err(|e| io_error("emptying", &relative, e))?;
                }
                Ok(())
            }),
            Undo::Times { relative, saved } => checked(root, &relative).and_then(|path| {
                saved
                    .put_back(&path, false)
                    .map_err(|e| io_error("putting back the times of", &relative, e))
            }),
        };
        if let Err(message) = result {
            first.get_or_insert(message);
        }
    }
    first.map_or(Ok(()), Err)
}

/// The helper for the chroot rung: prepares the tree, runs the command chrooted into it in a
/// process group of its own, kills what is left of the group, cleans the tree, writes the
/// status. Single-threaded (it forks).
pub(crate) fn run(spec: &Spec) -> i32 {
    let report = |status: Status| {
        if let Ok(bytes) = serde_json::to_vec(&status) {
            let _ = std::fs::write(&spec.status_file, bytes);
        }
    };
    let root = match &spec.root {
        RootSpec::Directory { path } => path.clone(),
        RootSpec::Overlay { .. } => {
            report(Status::SetupFailed {
                message: "the chroot isolation cannot mount an overlay".into(),
                overlay: true,
            });
            return 125;
        }
    };
    let programs = if spec.privileged {
        None
    } else {
        match crate::seccomp::programs(crate::seccomp::CHROOT_EXTRA) {
            Ok(programs) => Some(programs),
            Err(e) => {
                report(Status::SetupFailed {
                    message: format!("building the seccomp filter: {e}"),
                    overlay: false,
                });
                return 125;
            }
        }
    };
    let mut undo = Vec::new();
    if let Err(message) = prepare(&root, spec, &mut undo) {
        let _ = restore(&root, undo);
        report(Status::SetupFailed {
            message,
            overlay: false,
        });
        return 125;
    }
    // Whatever the step leaves running is reparented here, not to the container's init.
    if let Err(e) = crate::descendants::become_subreaper() {
        let _ = restore(&root, undo);
        report(Status::SetupFailed {
            message: format!("becoming the reaper of the step's processes: {e}"),
            overlay: false,
        });
        return 125;
    }
    let exit = spawn_and_wait(&root, spec, programs);
    let restored = restore(&root, undo);
    match (exit, restored) {
        (Ok(exit), Ok(())) => {
            report(Status::Ended(exit));
            0
        }
        (Err(status), _) => {
            report(status);
            125
        }
        (Ok(_), Err(message)) => {
            report(Status::SetupFailed {
                message: format!("cleaning the step's root after it: {message}"),
                overlay: false,
            });
            125
        }
    }
}

fn spawn_and_wait(
    root: &Path,
    spec: &Spec,
    programs: Option<Vec<seccompiler::BpfProgram>>,
) -> Result<Exit, Status> {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(Status::NotStarted {
            program: String::new(),
            message: "the command is empty".into(),
        });
    };
    let env: Vec<(&str, &str)> = spec
        .env
        .iter()
        .map(|entry| entry.split_once('=').unwrap_or((entry.as_str(), "")))
        .collect();
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::inherit())
        .process_group(0);
    let root = root.to_path_buf();
    let cwd = spec.cwd.clone();
    let identity = spec.identity.clone();
    let privileged = spec.privileged;
    // SAFETY: this helper process is single-threaded, so the forked child may allocate; the
    // closure only changes the child's own root, capabilities, ids and filter.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            rustix::process::chroot(&root)?;
            std::env::set_current_dir("/")?;
            std::fs::create_dir_all(&cwd)?;
            std::env::set_current_dir(&cwd)?;
            if !privileged {
                crate::credentials::limit_capabilities()?;
            }
            crate::credentials::drop_to(&identity)?;
            if let Some(programs) = &programs {
                crate::seccomp::confine(programs).map_err(io::Error::other)?;
            }
            Ok(())
        })
    };
    let mut child = command.spawn().map_err(|e| Status::NotStarted {
        program: program.clone(),
        message: if e.kind() == io::ErrorKind::NotFound {
            "not found in the image".to_string()
        } else {
            e.to_string()
        },
    })?;
    let group = rustix::process::Pid::from_child(&child);
    let status = child.wait();
    // No pid namespace: what the step left running goes with its process group, and what left
    // the group (a session of its own) was reparented to this subreaper and goes too.
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    if let Err(left) = crate::descendants::kill_all() {
        return Err(Status::SetupFailed {
            message: format!("{left} processes the step started could not be stopped"),
            overlay: false,
        });
    }
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => Ok(match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(125),
        }),
        Err(e) => Err(Status::SetupFailed {
            message: format!("waiting for the command: {e}"),
            overlay: false,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Identity, MountSpec, Network, ScriptFile};

    /// Every entry under `root` with its metadata and bytes, for before/after comparisons.
    fn listing(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = path.symlink_metadata().unwrap();
                let content = if meta.is_file() {
                    std::fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                out.push(format!(
                    "{} {:o} {}:{} {}.{} {:?}",
                    path.strip_prefix(root).unwrap().display(),
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    content
                ));
                if meta.is_dir() {
                    stack.push(path);
                }
            }
        }
        out.sort();
        out
    }

    fn tree() -> (tempfile::TempDir, Spec) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        for sub in [
            "dev",
            "etc",
            "proc",
            "sys",
            "cache",
            "scratch",
            "run/secrets",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("etc/hosts"), "image's own hosts\n").unwrap();
        std::fs::write(root.join("etc/resolv.conf"), "").unwrap();
        std::fs::write(root.join("run/secrets/tok"), "").unwrap();
        std::fs::write(dir.path().join("hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(dir.path().join("resolv"), "nameserver 127.0.0.53\n").unwrap();
        std::fs::write(dir.path().join("secret"), "s3cret").unwrap();
        std::fs::create_dir(dir.path().join("cache-store")).unwrap();
        std::fs::write(dir.path().join("cache-store/kept"), "cached").unwrap();
        let spec = Spec {
            root: RootSpec::Directory { path: root },
            argv: vec!["/bin/sh".into()],
            env: vec![],
            cwd: "/".into(),
            identity: Identity::default(),
            hostname: "kiln".into(),
            network: Network::Host,
            hosts_file: dir.path().join("hosts"),
            resolv_file: dir.path().join("resolv"),
            files: vec![ScriptFile {
                name: "EOF".into(),
                content: b"echo hi\n".to_vec(),
                mode: 0o755,
            }],
            mounts: vec![
                MountSpec {
                    target: "/cache".into(),
                    kind: MountKind::Bind {
                        source: dir.path().join("cache-store"),
                        read_only: false,
                    },
                },
                MountSpec {
                    target: "/run/secrets/tok".into(),
                    kind: MountKind::Bind {
                        source: dir.path().join("secret"),
                        read_only: true,
                    },
                },
                MountSpec {
                    target: "/scratch".into(),
                    kind: MountKind::Tmpfs { size: None },
                },
            ],
            privileged: false,
            shm_size: None,
            rlimits: Vec::new(),
            status_file: dir.path().join("status"),
        };
        (dir, spec)
    }

    /// What the mounts would show is in place during the step, and the tree is exactly as
    /// before afterwards (bytes, modes, owners, times), whatever the step wrote in the cache and
    /// the tmpfs.
    #[test]
    fn prepared_then_restored_leaves_the_tree_as_it_was() {
        let (dir, spec) = tree();
        let root = spec.root_dir();
        let before = listing(&root);
        let mut undo = Vec::new();
        prepare(&root, &spec, &mut undo).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
            "127.0.0.1 localhost\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("run/secrets/tok")).unwrap(),
            "s3cret"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("cache/kept")).unwrap(),
            "cached"
        );
        assert!(root.join("dev/null").symlink_metadata().is_ok());
        assert_eq!(
            std::fs::read(root.join("dev/pipes/EOF")).unwrap(),
            b"echo hi\n"
        );
        // The step's own writes.
        std::fs::write(root.join("cache/new"), "for next time").unwrap();
        std::fs::write(root.join("scratch/tmp"), "gone after").unwrap();
        restore(&root, undo).unwrap();
        assert_eq!(listing(&root), before);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cache-store/new")).unwrap(),
            "for next time"
        );
    }

    #[test]
    fn network_none_is_refused_not_ignored() {
        let (_dir, mut spec) = tree();
        spec.network = Network::None;
        let root = spec.root_dir();
        let mut undo = Vec::new();
        let error = prepare(&root, &spec, &mut undo).unwrap_err();
        assert!(error.contains("--network=none"), "{error}");
        assert!(undo.is_empty());
    }

    /// A step that swaps /etc for a symbolic link cannot make the clean-up write through it.
    #[test]
    fn a_planted_symbolic_link_stops_the_clean_up_there() {
        let (dir, spec) = tree();
        let root = spec.root_dir();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("hosts"), "not kiln's").unwrap();
        let mut undo = Vec::new();
        prepare(&root, &spec, &mut undo).unwrap();
        std::fs::rename(root.join("etc"), dir.path().join("etc-moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc")).unwrap();
        let error = restore(&root, undo).unwrap_err();
        assert!(error.contains("symbolic link"), "{error}");
        assert_eq!(
            std::fs::read_to_string(outside.join("hosts")).unwrap(),
            "not kiln's"
        );
    }
}
