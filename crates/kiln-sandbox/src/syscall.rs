//! Every system call the sandbox makes to build its root, behind one trait: the real one for
//! running, a recording fake so the mount plan is unit-tested without root or namespaces.

use std::io;
use std::path::{Path, PathBuf};

/// A read-only remount and similar flags the plan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountOptions {
    /// MS_RDONLY.
    pub read_only: bool,
    /// MS_NOSUID.
    pub no_suid: bool,
    /// MS_NODEV.
    pub no_dev: bool,
    /// MS_NOEXEC.
    pub no_exec: bool,
}

impl MountOptions {
    /// nosuid, nodev, noexec: what /proc and /sys get.
    pub const SAFE: MountOptions = MountOptions {
        read_only: false,
        no_suid: true,
        no_dev: true,
        no_exec: true,
    };
}

/// The system calls of the mount plan.
pub trait Syscall {
    /// Mounts an overlay of `lowers` (top first) with `upper`/`work` on `target`.
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        userxattr: bool,
        target: &Path,
    ) -> io::Result<()>;
    /// A fresh instance of a pseudo filesystem (proc, sysfs, tmpfs, devpts).
    fn mount_fs(
        &self,
        fstype: &str,
        target: &Path,
        options: MountOptions,
        data: &str,
    ) -> io::Result<()>;
    /// Binds `source` on `target` (with its submounts when `recursive`).
    fn bind(&self, source: &Path, target: &Path, recursive: bool) -> io::Result<()>;
    /// Makes a bind read-only (nosuid, nodev, keeping the locked flags it has).
    fn remount_bind_read_only(&self, target: &Path) -> io::Result<()>;
    /// Stops mount events from travelling back to the caller's namespace.
    fn make_private(&self, target: &Path) -> io::Result<()>;
    /// Creates a directory with exactly `mode`.
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates a new file (never through a symbolic link) holding `content`.
    fn create_file(&self, path: &Path, content: &[u8], mode: u32) -> io::Result<()>;
    /// Creates a symbolic link `link` pointing to `target`.
    fn symlink(&self, target: &str, link: &Path) -> io::Result<()>;
    /// Sets the UTS namespace's host name.
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Makes `new_root` the root and detaches the old one.
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
}

/// The kernel.
pub struct Linux;

fn mount_flags(options: MountOptions) -> rustix::mount::MountFlags {
    use rustix::mount::MountFlags;
    let mut flags = MountFlags::empty();
    if options.read_only {
        flags |= MountFlags::RDONLY;
    }
    if options.no_suid {
        flags |= MountFlags::NOSUID;
    }
    if options.no_dev {
        flags |= MountFlags::NODEV;
    }
    if options.no_exec {
        flags |= MountFlags::NOEXEC;
    }
    flags
}

/// No redirects made either way; with `userxattr` the kernel takes only `nofollow` (`off`
/// follows existing redirects when the module's `redirect_always_follow` is set, which
/// conflicts with `userxattr`).
fn redirect_dir(userxattr: bool) -> &'static str {
    if userxattr {
        "nofollow"
    } else {
        "off"
    }
}

impl Syscall for Linux {
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        userxattr: bool,
        target: &Path,
    ) -> io::Result<()> {
        use rustix::mount::*;
        // The new mount API takes one lower dir per call, so deep images are not bounded by the
        // page-sized option string of mount(2).
        let configured = (|| -> io::Result<rustix::fd::OwnedFd> {
            let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
            for lower in lowers {
                fsconfig_set_string(&fs, "lowerdir+", lower)?;
            }
            fsconfig_set_string(&fs, "upperdir", upper)?;
            fsconfig_set_string(&fs, "workdir", work)?;
            // The upper dir must hold whole files and plain names: it becomes a layer as is.
            for (option, value) in [
                ("redirect_dir", redirect_dir(userxattr)),
                ("metacopy", "off"),
                ("index", "off"),
            ] {
                fsconfig_set_string(&fs, option, value)?;
            }
            if userxattr {
                fsconfig_set_flag(&fs, "userxattr")?;
            }
            // fsync in the sandbox (dpkg syncs every file it unpacks) does not reach the disk:
            // the upper dir is either discarded or committed into the store, which syncs the
            // whole snapshot once (syncfs) before naming it. Best effort: a kernel without the
            // option (before 5.10) mounts without it, and the work dir is fresh for every
            // mount (a volatile one cannot be mounted again).
            let _ = fsconfig_set_flag(&fs, "volatile");
            fsconfig_create(&fs)?;
            Ok(fsmount(
                &fs,
                FsMountFlags::FSMOUNT_CLOEXEC,
                MountAttrFlags::empty(),
            )?)
        })();
        match configured {
            Ok(mounted) => Ok(move_mount(
                &mounted,
                "",
                rustix::fs::CWD,
                target,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )?),
            Err(error) if lowers.is_empty() => Err(error),
            Err(_) => {
                // Kernels before 6.8 have no `lowerdir+`: the classic option string.
                let joined: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
                let mut data = format!(
                    "lowerdir={},upperdir={},workdir={},redirect_dir={},metacopy=off,index=off",
                    joined.join(":"),
                    upper.display(),
                    work.display(),
                    redirect_dir(userxattr)
                );
                if userxattr {
                    data.push_str(",userxattr");
                }
                let data = std::ffi::CString::new(data)
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                Ok(mount(
                    "overlay",
                    target,
                    "overlay",
                    MountFlags::empty(),
                    data.as_c_str(),
                )?)
            }
        }
    }

    fn mount_fs(
        &self,
        fstype: &str,
        target: &Path,
        options: MountOptions,
        data: &str,
    ) -> io::Result<()> {
        let data = std::ffi::CString::new(data)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(rustix::mount::mount(
            fstype,
            target,
            fstype,
            mount_flags(options),
            data.as_c_str(),
        )?)
    }

    fn bind(&self, source: &Path, target: &Path, recursive: bool) -> io::Result<()> {
        if recursive {
            Ok(rustix::mount::mount_bind_recursive(source, target)?)
        } else {
            Ok(rustix::mount::mount_bind(source, target)?)
        }
    }

    fn remount_bind_read_only(&self, target: &Path) -> io::Result<()> {
        use rustix::fs::StatVfsMountFlags as Has;
        use rustix::mount::MountFlags;
        // In a user namespace a bind keeps the locked flags of its source (noexec, atime
        // modes): a remount that drops one is refused, so they are carried over.
        let mut flags =
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
        let has = rustix::fs::statvfs(target)?.f_flag;
        for (present, flag) in [
            (Has::NOEXEC, MountFlags::NOEXEC),
            (Has::NOATIME, MountFlags::NOATIME),
            (Has::NODIRATIME, MountFlags::NODIRATIME),
            (Has::RELATIME, MountFlags::RELATIME),
        ] {
            if has.contains(present) {
                flags |= flag;
            }
        }
        Ok(rustix::mount::mount_remount(target, flags, "")?)
    }

    fn make_private(&self, target: &Path) -> io::Result<()> {
        use rustix::mount::MountPropagationFlags;
        Ok(rustix::mount::mount_change(
            target,
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )?)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().mode(mode).create(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn create_file(&self, path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)?;
        file.write_all(content)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        Ok(rustix::system::sethostname(name.as_bytes())?)
    }

    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only
        // the new root, with no directory of the host reachable.
        std::env::set_current_dir(new_root)?;
        rustix::process::pivot_root(".", ".")?;
        rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)?;
        std::env::set_current_dir("/")
    }
}

/// Records every call as a line of text, for tests of the mount plan.
#[derive(Default)]
pub struct Recorder {
    /// Every call so far, in order.
    pub calls: std::cell::RefCell<Vec<String>>,
    /// Calls whose text starts with one of these fail with EPERM.
    pub refuse: Vec<String>,
}

impl Recorder {
    fn record(&self, call: String) -> io::Result<()> {
        let refused = self.refuse.iter().any(|r| call.starts_with(r.as_str()));
        self.calls.borrow_mut().push(call);
        if refused {
            Err(io::Error::from_raw_os_error(1))
        } else {
            Ok(())
        }
    }
}

impl Syscall for Recorder {
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        userxattr: bool,
        target: &Path,
    ) -> io::Result<()> {
        let lowers: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        self.record(format!(
            "overlay lowers={} upper={} work={} userxattr={userxattr} on {}",
            lowers.join(":"),
            upper.display(),
            work.display(),
            target.display()
        ))
    }
    fn mount_fs(
        &self,
        fstype: &str,
        target: &Path,
        options: MountOptions,
        data: &str,
    ) -> io::Result<()> {
        self.record(format!(
            "mount {fstype} on {} ro={} data={data}",
            target.display(),
            options.read_only
        ))
    }
    fn bind(&self, source: &Path, target: &Path, recursive: bool) -> io::Result<()> {
        self.record(format!(
            "bind {} on {} recursive={recursive}",
            source.display(),
            target.display()
        ))
    }
    fn remount_bind_read_only(&self, target: &Path) -> io::Result<()> {
        self.record(format!("remount-ro {}", target.display()))
    }
    fn make_private(&self, target: &Path) -> io::Result<()> {
        self.record(format!("private {}", target.display()))
    }
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(format!("mkdir {} {mode:o}", path.display()))
    }
    fn create_file(&self, path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
        self.record(format!(
            "file {} {mode:o} {} bytes",
            path.display(),
            content.len()
        ))
    }
    fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        self.record(format!("symlink {} -> {target}", link.display()))
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(format!("hostname {name}"))
    }
    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        self.record(format!("pivot_root {}", new_root.display()))
    }
}
