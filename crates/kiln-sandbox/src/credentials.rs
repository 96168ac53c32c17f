//! What the command may be: its capabilities, its resource limits and its user, set by the
//! process that becomes it (pid 1 of the namespaces, or the chroot rung's helper).

/// What a RUN may do as root: Docker's default capabilities, less MKNOD (with no device
/// cgroup here, a device node would reach the host's disks). No SYS_ADMIN: no mounts.
const KEPT: rustix::thread::CapabilitySet = {
    use rustix::thread::CapabilitySet as C;
    C::CHOWN
        .union(C::DAC_OVERRIDE)
        .union(C::FSETID)
        .union(C::FOWNER)
        .union(C::NET_RAW)
        .union(C::SETGID)
        .union(C::SETUID)
        .union(C::SETFCAP)
        .union(C::SETPCAP)
        .union(C::NET_BIND_SERVICE)
        .union(C::SYS_CHROOT)
        .union(C::KILL)
        .union(C::AUDIT_WRITE)
};

/// Takes every other capability out of the bounding set: the command, exec'd after this, can
/// never have them.
pub(crate) fn limit_capabilities() -> std::io::Result<()> {
    for bit in 0..64 {
        let capability = rustix::thread::CapabilitySet::from_bits_retain(1 << bit);
        if KEPT.contains(capability) {
            continue;
        }
        match rustix::thread::remove_capability_from_bounding_set(capability) {
            // Past the kernel's last capability: nothing to drop.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `--ulimit`s, set by pid 1 while it may still raise a hard limit; the command inherits them.
pub(crate) fn set_rlimits(limits: &[crate::Rlimit]) -> std::io::Result<()> {
    use crate::RlimitResource as R;
    use rustix::process::Resource;
    for limit in limits {
        let resource = match limit.resource {
            R::Core => Resource::Core,
            R::Cpu => Resource::Cpu,
            R::Data => Resource::Data,
            R::Fsize => Resource::Fsize,
            R::Locks => Resource::Locks,
            R::Memlock => Resource::Memlock,
            R::Msgqueue => Resource::Msgqueue,
            R::Nice => Resource::Nice,
            R::Nofile => Resource::Nofile,
            R::Nproc => Resource::Nproc,
            R::Rss => Resource::Rss,
            R::Rtprio => Resource::Rtprio,
            R::Rttime => Resource::Rttime,
            R::Sigpending => Resource::Sigpending,
            R::Stack => Resource::Stack,
            R::As => Resource::As,
        };
        rustix::process::setrlimit(
            resource,
            rustix::process::Rlimit {
                current: limit.soft,
                maximum: limit.hard,
            },
        )?;
    }
    Ok(())
}

/// Supplementary groups, then group, then user: once the uid is not 0 nothing else may change.
pub(crate) fn drop_to(identity: &crate::Identity) -> std::io::Result<()> {
    use rustix::process::{Gid, Uid};
    let groups: Vec<Gid> = identity.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let staying = identity.uid == rustix::process::getuid().as_raw();
    if rustix::thread::set_thread_groups(&groups).is_err() && !staying {
        // A user namespace that maps one id cannot set groups; that only matters for a change
        // of user, which it cannot make either.
        return Err(std::io::Error::other(
            "cannot set supplementary groups (a user namespace without subordinate ids has no other users)",
        ));
    }
    if staying && identity.gid == rustix::process::getgid().as_raw() {
        return Ok(());
    }
    let gid = Gid::from_raw(identity.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    let uid = Uid::from_raw(identity.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    Ok(())
}
