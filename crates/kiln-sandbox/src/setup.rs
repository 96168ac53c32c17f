//! The root a command runs in: the mount plan, made of [`Syscall`] calls so it can be checked
//! without privileges.

use crate::syscall::{MountOptions, Syscall};
use crate::{MountKind, MountSpec, Network, RootSpec, Spec};
use std::io;
use std::path::{Path, PathBuf};

/// Paths inside the root that the sandbox mounts over. They must exist in the root as a
/// directory or a file before the sandbox starts; the builder provides the missing ones in a
/// layer of their own, so they never land in the step's diff.
pub const MOUNT_POINTS: &[(&str, bool)] = &[
    ("proc", true),
    ("sys", true),
    ("dev", true),
    ("etc", true),
    ("etc/hosts", false),
    ("etc/resolv.conf", false),
];

/// Device nodes bound from the host into the sandbox's own /dev.
pub(crate) const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// A step of the mount plan that failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SetupError {
    /// The step, in words.
    pub what: String,
    /// The system's reason.
    pub source: io::Error,
    /// Set when the overlay mount itself failed: the builder then falls back to a copy.
    pub overlay: bool,
}

fn step<T>(what: impl FnOnce() -> String, result: io::Result<T>) -> Result<T, SetupError> {
    result.map_err(|source| SetupError {
        what: what(),
        source,
        overlay: false,
    })
}

/// Refuses a mount target with a symbolic link on its way: the mount would land wherever the
/// link points, maybe outside the root.
pub(crate) fn check_no_symlinks(root: &Path, relative: &str) -> io::Result<()> {
    let mut path = root.to_path_buf();
    for part in relative.split('/').filter(|p| !p.is_empty()) {
        path.push(part);
        if std::fs::symlink_metadata(&path)?.file_type().is_symlink() {
            return Err(io::Error::other(format!(
                "/{relative} is a symbolic link in the image; kiln mounts over it and will not follow it"
            )));
        }
    }
    Ok(())
}

/// Mounts the root filesystem and everything under it, then makes it the root. `verify`
/// checks mount targets on the real filesystem (off for the recording fake).
pub fn enter_root(sys: &dyn Syscall, spec: &Spec, verify: bool) -> Result<(), SetupError> {
    let root = spec.root_dir();
    match &spec.root {
        RootSpec::Overlay {
            lowers,
            upper,
            work,
            userxattr,
            ..
        } => {
            sys.mount_overlay(lowers, upper, work, *userxattr, &root)
                .map_err(|source| SetupError {
                    what: "mounting the overlay of the image's layers".into(),
                    source,
                    overlay: true,
                })?;
        }
        RootSpec::Directory { .. } => {
            // pivot_root needs a mount point.
            step(
                || "binding the root directory".into(),
                sys.bind(&root, &root, true),
            )?;
        }
    }
    if verify {
        for (relative, _) in MOUNT_POINTS {
            step(
                || format!("checking /{relative}"),
                check_no_symlinks(&root, relative),
            )?;
        }
    }
    let at = |relative: &str| -> PathBuf { root.join(relative) };
    if sys
        .mount_fs("proc", &at("proc"), MountOptions::SAFE, "")
        .is_err()
    {
        // A container's /proc with masked paths forbids a fresh procfs in a user namespace
        // (podman's defaults): the existing one, masks and all, bound instead. It shows the
        // container's processes, not only the step's.
        step(
            || "mounting /proc (and binding the existing /proc instead)".into(),
            sys.bind(Path::new("/proc"), &at("proc"), true),
        )?;
    }
    let sys_ro = MountOptions {
        read_only: true,
        ..MountOptions::SAFE
    };
    if sys.mount_fs("sysfs", &at("sys"), sys_ro, "").is_err() {
        // A user namespace that does not own the network namespace may not mount sysfs: the
        // host's, read-only, instead.
        step(
            || "binding /sys".into(),
            sys.bind(Path::new("/sys"), &at("sys"), true),
        )?;
        step(
            || "making /sys read-only".into(),
            sys.remount_bind_read_only(&at("sys")),
        )?;
    }
    make_dev(sys, &at("dev"), spec)?;
    for (target, source) in [
        ("etc/hosts", &spec.hosts_file),
        ("etc/resolv.conf", &spec.resolv_file),
    ] {
        step(
            || format!("binding /{target}"),
            sys.bind(source, &at(target), false),
        )?;
    }
    for mount in &spec.mounts {
        make_mount(sys, &root, mount, verify)?;
    }
    // A container's seccomp profile may refuse sethostname without CAP_SYS_ADMIN (podman's
    // default does, even in a user namespace of one's own): the step then keeps the
    // container's name, in a UTS namespace of its own all the same.
    let _ = sys.sethostname(&spec.hostname);
    step(|| "entering the root".into(), sys.pivot_root(&root))?;
    Ok(())
}

/// One `RUN --mount`: its target checked (no symbolic link on the way), then the bind (made
/// read-only when asked) or the tmpfs.
fn make_mount(
    sys: &dyn Syscall,
    root: &Path,
    mount: &MountSpec,
    verify: bool,
) -> Result<(), SetupError> {
    let relative = mount.target.trim_start_matches('/');
    let shown = format!("/{relative}");
    if relative.is_empty() || relative.split('/').any(|part| part == "..") {
        return Err(SetupError {
            what: format!("mount target {shown}"),
            source: io::Error::other("a mount target must be an absolute path below /"),
            overlay: false,
        });
    }
    let target = root.join(relative);
    if verify {
        match check_no_symlinks(root, relative) {
            Ok(()) => {}
            // Below an earlier mount (a tmpfs, a cache): made there, on that mount.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let is_dir = match &mount.kind {
                    MountKind::Bind { source, .. } => source.is_dir(),
                    MountKind::Tmpfs { .. } => true,
                };
                create_missing(sys, root, relative, is_dir).map_err(|source| SetupError {
                    what: format!("creating the mount target {shown}"),
                    source,
                    overlay: false,
                })?;
            }
            Err(source) => {
                return Err(SetupError {
                    what: format!("checking the mount target {shown}"),
                    source,
                    overlay: false,
                })
            }
        }
    }
    match &mount.kind {
        MountKind::Bind { source, read_only } => {
            step(
                || format!("binding {} on {shown}", source.display()),
                sys.bind(source, &target, true),
            )?;
            if *read_only {
                step(
                    || format!("making {shown} read-only"),
                    sys.remount_bind_read_only(&target),
                )?;
            }
        }
        MountKind::Tmpfs { size } => {
            let mut data = "mode=755".to_string();
            if let Some(size) = size {
                data.push_str(&format!(",size={size}"));
            }
            step(
                || format!("mounting a tmpfs on {shown}"),
                sys.mount_fs(
                    "tmpfs",
                    &target,
                    MountOptions {
                        no_exec: false,
                        ..MountOptions::SAFE
                    },
                    &data,
                ),
            )?;
        }
    }
    Ok(())
}

/// Creates the missing part of `relative` (a mount target below an earlier mount), refusing
/// symbolic links on the way.
fn create_missing(sys: &dyn Syscall, root: &Path, relative: &str, is_dir: bool) -> io::Result<()> {
    let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
    let mut path = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "/{relative} goes through a symbolic link; kiln will not follow it"
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if i + 1 < parts.len() || is_dir {
                    sys.mkdir(&path, 0o755)?;
                } else {
                    sys.create_file(&path, b"", 0o644)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A /dev of its own: a tmpfs with the usual nodes bound from the host, a private devpts and
/// /dev/shm; heredoc scripts are written here too, so they are never part of a layer.
fn make_dev(sys: &dyn Syscall, dev: &Path, spec: &Spec) -> Result<(), SetupError> {
    let dev_options = MountOptions {
        no_exec: false,
        ..MountOptions::SAFE
    };
    step(
        || "mounting /dev".into(),
        sys.mount_fs("tmpfs", dev, dev_options, "mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        step(
            || format!("creating /dev/{name}"),
            sys.create_file(&target, b"", 0o666),
        )?;
        step(
            || format!("binding /dev/{name}"),
            sys.bind(&Path::new("/dev").join(name), &target, false),
        )?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        step(
            || format!("linking /dev/{link}"),
            sys.symlink(target, &dev.join(link)),
        )?;
    }
    step(
        || "creating /dev/pts".into(),
        sys.mkdir(&dev.join("pts"), 0o755),
    )?;
    // Without a devpts of its own (refused in some user namespaces) the step has no
    // pseudo-terminals, which a build does not need; the host's are never lent.
    let _ = sys.mount_fs(
        "devpts",
        &dev.join("pts"),
        MountOptions {
            no_dev: false,
            ..MountOptions::SAFE
        },
        "newinstance,ptmxmode=0666,mode=0620",
    );
    step(
        || "creating /dev/shm".into(),
        sys.mkdir(&dev.join("shm"), 0o1777),
    )?;
    step(
        || "mounting /dev/shm".into(),
        sys.mount_fs(
            "tmpfs",
            &dev.join("shm"),
            MountOptions::SAFE,
            &format!(
                "mode=1777,size={}k",
                spec.shm_size
                    .map_or(65_536, |bytes| bytes.div_ceil(1024).max(1))
            ),
        ),
    )?;
    if !spec.files.is_empty() {
        step(
            || "creating /dev/pipes".into(),
            sys.mkdir(&dev.join("pipes"), 0o755),
        )?;
        for file in &spec.files {
            step(
                || format!("writing /dev/pipes/{}", file.name),
                sys.create_file(
                    &dev.join("pipes").join(&file.name),
                    &file.content,
                    file.mode,
                ),
            )?;
        }
    }
    Ok(())
}

/// The namespaces a sandbox gets: always mount, pid, uts and ipc; network unless it shares the
/// host's.
pub fn namespaces(network: Network) -> Vec<&'static str> {
    let mut names = vec!["mount", "pid", "uts", "ipc"];
    if network == Network::None {
        names.push("net");
    }
    names
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::syscall::Recorder;
    use crate::{Identity, ScriptFile};

    fn spec(root: RootSpec) -> Spec {
        Spec {
            root,
            argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            identity: Identity::default(),
            hostname: "kiln".into(),
            network: Network::Host,
            hosts_file: "/w/hosts".into(),
            resolv_file: "/w/resolv.conf".into(),
            files: vec![],
            mounts: vec![],
            privileged: false,
            shm_size: None,
            rlimits: Vec::new(),
            status_file: "/w/status".into(),
        }
    }

    fn overlay() -> RootSpec {
        RootSpec::Overlay {
            lowers: vec!["/s/top".into(), "/s/bottom".into()],
            upper: "/w/upper".into(),
            work: "/w/work".into(),
            merged: "/w/merged".into(),
            userxattr: false,
        }
    }

    #[test]
    fn overlay_root_is_mounted_first_and_entered_last() {
        let sys = Recorder::default();
        enter_root(&sys, &spec(overlay()), false).unwrap();
        let calls = sys.calls.borrow();
        assert_eq!(
            calls.first().unwrap(),
            "overlay lowers=/s/top:/s/bottom upper=/w/upper work=/w/work userxattr=false on /w/merged"
        );
        assert_eq!(calls.last().unwrap(), "pivot_root /w/merged");
        assert!(calls.contains(&"mount proc on /w/merged/proc ro=false data=".to_string()));
        assert!(calls.contains(&"mount sysfs on /w/merged/sys ro=true data=".to_string()));
        assert!(calls.contains(&"bind /w/hosts on /w/merged/etc/hosts recursive=false".to_string()));
        assert!(calls.contains(&"bind /dev/null on /w/merged/dev/null recursive=false".to_string()));
        assert!(calls.contains(&"hostname kiln".to_string()));
        // /dev/null is created on the tmpfs before it is bound.
        let tmpfs = calls
            .iter()
            .position(|c| c.starts_with("mount tmpfs on /w/merged/dev "))
            .unwrap();
        let null = calls
            .iter()
            .position(|c| c.starts_with("file /w/merged/dev/null"))
            .unwrap();
        assert!(tmpfs < null);
    }

    #[test]
    fn sysfs_refused_falls_back_to_a_read_only_bind() {
        let sys = Recorder {
            refuse: vec!["mount sysfs".into()],
            ..Recorder::default()
        };
        enter_root(&sys, &spec(overlay()), false).unwrap();
        let calls = sys.calls.borrow();
        let bind = calls
            .iter()
            .position(|c| c == "bind /sys on /w/merged/sys recursive=true")
            .unwrap();
        assert_eq!(calls[bind + 1], "remount-ro /w/merged/sys");
    }

    #[test]
    fn procfs_refused_falls_back_to_binding_the_existing_proc() {
        let sys = Recorder {
            refuse: vec!["mount proc".into()],
            ..Recorder::default()
        };
        enter_root(&sys, &spec(overlay()), false).unwrap();
        let calls = sys.calls.borrow();
        let refused = calls
            .iter()
            .position(|c| c.starts_with("mount proc on /w/merged/proc"))
            .unwrap();
        assert_eq!(
            calls[refused + 1],
            "bind /proc on /w/merged/proc recursive=true"
        );
        assert_eq!(calls.last().unwrap(), "pivot_root /w/merged");
    }

    /// podman's defaults, seen from its user namespace: no procfs, no sysfs, no devpts; the
    /// root still comes up, with every fallback in place.
    #[test]
    fn a_container_user_namespace_gets_every_fallback() {
        let sys = Recorder {
            refuse: vec![
                "mount proc".into(),
                "mount sysfs".into(),
                "mount devpts".into(),
                "hostname".into(),
            ],
            ..Recorder::default()
        };
        enter_root(&sys, &spec(overlay()), false).unwrap();
        let calls = sys.calls.borrow();
        for expected in [
            "bind /proc on /w/merged/proc recursive=true",
            "bind /sys on /w/merged/sys recursive=true",
            "remount-ro /w/merged/sys",
            "bind /dev/null on /w/merged/dev/null recursive=false",
            "mkdir /w/merged/dev/pts 755",
            "pivot_root /w/merged",
        ] {
            assert!(
                calls.contains(&expected.to_string()),
                "{expected}: {calls:?}"
            );
        }
        // Device nodes are never made: each is an empty file with the host's node bound on it.
        assert!(!calls.iter().any(|c| c.starts_with("mknod")));
    }

    #[test]
    fn a_refused_proc_bind_names_proc() {
        let sys = Recorder {
            refuse: vec!["mount proc".into(), "bind /proc".into()],
            ..Recorder::default()
        };
        let error = enter_root(&sys, &spec(overlay()), false).unwrap_err();
        assert!(error.to_string().contains("/proc"), "{error}");
        assert!(!error.overlay);
    }

    #[test]
    fn a_failed_overlay_says_so() {
        let sys = Recorder {
            refuse: vec!["overlay".into()],
            ..Recorder::default()
        };
        let error = enter_root(&sys, &spec(overlay()), false).unwrap_err();
        assert!(error.overlay);
        assert_eq!(sys.calls.borrow().len(), 1);
    }

    #[test]
    fn a_directory_root_is_bound_onto_itself() {
        let sys = Recorder::default();
        let mut s = spec(RootSpec::Directory {
            path: "/w/copy".into(),
        });
        s.files.push(ScriptFile {
            name: "EOF".into(),
            content: b"#!/bin/sh\n".to_vec(),
            mode: 0o755,
        });
        enter_root(&sys, &s, false).unwrap();
        let calls = sys.calls.borrow();
        assert_eq!(calls[0], "bind /w/copy on /w/copy recursive=true");
        assert!(calls.contains(&"file /w/copy/dev/pipes/EOF 755 10 bytes".to_string()));
    }

    #[test]
    fn a_symlinked_mount_point_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("sys")).unwrap();
        let error = check_no_symlinks(dir.path(), "sys").unwrap_err();
        assert!(error.to_string().contains("/sys is a symbolic link"));
        check_no_symlinks(dir.path(), "proc").unwrap();
    }

    #[test]
    fn run_mounts_come_after_the_root_mounts_and_before_pivot_root() {
        let sys = Recorder::default();
        let mut s = spec(overlay());
        s.mounts = vec![
            MountSpec {
                target: "/cache".into(),
                kind: MountKind::Bind {
                    source: "/store/cache-mounts/abc".into(),
                    read_only: false,
                },
            },
            MountSpec {
                target: "/run/secrets/token".into(),
                kind: MountKind::Bind {
                    source: "/w/secrets/token".into(),
                    read_only: true,
                },
            },
            MountSpec {
                target: "/scratch".into(),
                kind: MountKind::Tmpfs {
                    size: Some(1 << 20),
                },
            },
        ];
        enter_root(&sys, &s, false).unwrap();
        let calls = sys.calls.borrow();
        let at = |call: &str| calls.iter().position(|c| c == call).unwrap();
        let resolv = at("bind /w/resolv.conf on /w/merged/etc/resolv.conf recursive=false");
        let cache = at("bind /store/cache-mounts/abc on /w/merged/cache recursive=true");
        let secret = at("bind /w/secrets/token on /w/merged/run/secrets/token recursive=true");
        let tmpfs = at("mount tmpfs on /w/merged/scratch ro=false data=mode=755,size=1048576");
        let pivot = at("pivot_root /w/merged");
        assert!(resolv < cache && cache < secret && secret < tmpfs && tmpfs < pivot);
        assert_eq!(calls[secret + 1], "remount-ro /w/merged/run/secrets/token");
        // A read-write bind is not remounted.
        assert_ne!(calls[cache + 1], "remount-ro /w/merged/cache");
    }

    #[test]
    fn a_mount_target_must_stay_below_the_root() {
        let sys = Recorder::default();
        let mut s = spec(overlay());
        s.mounts = vec![MountSpec {
            target: "/../etc".into(),
            kind: MountKind::Tmpfs { size: None },
        }];
        let error = enter_root(&sys, &s, false).unwrap_err();
        assert!(error.to_string().contains("below /"), "{error}");
        assert!(!sys
            .calls
            .borrow()
            .iter()
            .any(|c| c.starts_with("pivot_root")));
    }

    #[test]
    fn a_mount_target_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["proc", "sys", "dev", "etc"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        for name in ["etc/hosts", "etc/resolv.conf"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::os::unix::fs::symlink("/", dir.path().join("cache")).unwrap();
        let sys = Recorder::default();
        let mut s = spec(RootSpec::Directory {
            path: dir.path().to_path_buf(),
        });
        s.mounts = vec![MountSpec {
            target: "/cache/x".into(),
            kind: MountKind::Tmpfs { size: None },
        }];
        let error = enter_root(&sys, &s, true).unwrap_err();
        assert!(error.to_string().contains("is a symbolic link"), "{error}");
    }

    #[test]
    fn network_none_adds_a_network_namespace() {
        assert_eq!(namespaces(Network::Host), ["mount", "pid", "uts", "ipc"]);
        assert!(namespaces(Network::None).contains(&"net"));
    }
}
