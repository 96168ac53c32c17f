//! What this process may do: read once by the isolation ladder, used by it and by the user
//! namespace it may enter (its own module, so neither of those two depends on the other).

/// What the process may do, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// Effective uid 0.
    pub root: bool,
    /// CAP_SYS_ADMIN in the effective set.
    pub sys_admin: bool,
    /// CAP_SETUID and CAP_SETGID in the effective set: root may map every id it has.
    pub set_ids: bool,
    /// CAP_SETFCAP in the effective set: since Linux 5.12 root may not map itself as root of a
    /// user namespace without it.
    pub set_fcap: bool,
    /// CAP_SYS_CHROOT and CAP_MKNOD in the effective set, as root: the chroot rung works.
    pub chroot: bool,
}

impl Privileges {
    /// This process's.
    pub fn current() -> Privileges {
        use rustix::thread::{capabilities, CapabilitySet};
        let effective = capabilities(None)
            .map(|sets| sets.effective)
            .unwrap_or(CapabilitySet::empty());
        Privileges {
            root: rustix::process::geteuid().is_root(),
            sys_admin: effective.contains(CapabilitySet::SYS_ADMIN),
            set_ids: effective.contains(CapabilitySet::SETUID | CapabilitySet::SETGID),
            set_fcap: effective.contains(CapabilitySet::SETFCAP),
            chroot: effective.contains(CapabilitySet::SYS_CHROOT | CapabilitySet::MKNOD),
        }
    }

    /// Who kiln is, in the words of the report line.
    pub(crate) fn who(self) -> String {
        match (self.root, self.sys_admin) {
            (true, true) => "root with CAP_SYS_ADMIN".into(),
            (true, false) => "root without CAP_SYS_ADMIN".into(),
            (false, _) => format!("uid {}", rustix::process::geteuid().as_raw()),
        }
    }
}
