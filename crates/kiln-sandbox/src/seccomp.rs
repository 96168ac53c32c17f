//! The system calls a RUN may not make: the effect of Docker's default seccomp profile for a
//! container without CAP_SYS_ADMIN, plus `no_new_privs`.
//!
//! Docker's profile is an allow list; kiln's is the matching deny list (refused with EPERM
//! unless said otherwise), so a new harmless system call that a C library starts to use does
//! not break a build, while everything Docker's list leaves out on purpose stays out:
//! - keyrings (`add_key`, `keyctl`, `request_key`): not namespaced;
//! - new namespaces (`unshare`, `setns`, namespace flags of `clone`) and `clone3`, whose flags
//!   live in memory a filter cannot read: ENOSYS, so the C library falls back to `clone`;
//! - mounts, old and new API, `pivot_root`; kernel modules; `kexec_*`; `reboot`; `swapon`;
//!   clocks; `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*`; file handles; NUMA
//!   policies; `acct`, `quotactl`, `syslog`, `vhangup`, `ustat`, `sysfs`, `uselib`;
//! - `personality` with any value but the usual five (Linux, `UNAME26`, `ADDR_NO_RANDOMIZE`
//!   and their pairing, and the query `0xffffffff`).
//!
//! (`create_module`, `get_kernel_syms` and `query_module` are gone from Linux: ENOSYS already.)
//!
//! A system call of another architecture (a 32-bit binary on x86-64) ends the process, as the
//! filter cannot tell its numbers apart; x32 numbers of the refused calls are refused too.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Errors while building or installing the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The running architecture has no filter (only x86-64 and aarch64 do).
    #[error("no seccomp filter for the {0} architecture; use RUN --security=insecure to run without one")]
    Architecture(&'static str),
    /// seccompiler refused a rule or the kernel refused the program.
    #[error("seccomp: {0}")]
    Filter(#[from] seccompiler::Error),
    /// A rule could not be built.
    #[error("seccomp rule: {0}")]
    Rule(#[from] seccompiler::BackendError),
}

/// Refused outright, with EPERM.
const REFUSED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_init_module,
    libc::SYS_fanotify_init,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lookup_dcookie,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_nfsservctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
];

/// `personality` values Docker's profile allows: PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE,
/// both, and the query.
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// `clone` flags that make a namespace (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET).
const NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// The x32 ABI's numbers on x86-64: the same architecture in the filter's eyes.
#[cfg(target_arch = "x86_64")]
const X32_BIT: i64 = 0x4000_0000;

fn target() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Architecture(std::env::consts::ARCH))
}

/// What the chroot rung refuses besides: a second `chroot` (the way out of a first one), and
/// reaching into other processes, which no pid namespace hides there.
pub const CHROOT_EXTRA: &[i64] = &[
    libc::SYS_chroot,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
];

/// Both programs: the EPERM one (with `extra` refused too), then the ENOSYS one (`clone3`).
pub fn programs(extra: &[i64]) -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = target()?;
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for number in REFUSED.iter().chain(extra) {
        refused.insert(*number, Vec::new());
        #[cfg(target_arch = "x86_64")]
        refused.insert(*number | X32_BIT, Vec::new());
    }
    // personality(x) with x none of the allowed values.
    let unusual = PERSONALITIES
        .iter()
        .map(|value| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *value))
        .collect::<Result<Vec<_>, _>>()?;
    refused.insert(libc::SYS_personality, vec![SeccompRule::new(unusual)?]);
    // clone(flags, ...) with any namespace flag.
    let namespaces = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*flag),
                *flag,
            )
            .and_then(|condition| SeccompRule::new(vec![condition]))
        })
        .collect::<Result<Vec<_>, _>>()?;
    refused.insert(libc::SYS_clone, namespaces);
    let eperm = SeccompFilter::new(
        refused,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    let mut unknown: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    unknown.insert(libc::SYS_clone3, Vec::new());
    #[cfg(target_arch = "x86_64")]
    unknown.insert(libc::SYS_clone3 | X32_BIT, Vec::new());
    let enosys = SeccompFilter::new(
        unknown,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    Ok(vec![eperm.try_into()?, enosys.try_into()?])
}

/// Sets `no_new_privs` and installs the filters on the calling thread; every process it
/// starts afterwards inherits both, for good.
pub fn confine(programs: &[BpfProgram]) -> Result<(), SeccompError> {
    // apply_filter sets no_new_privs first (a filter needs it without CAP_SYS_ADMIN).
    for program in programs {
        seccompiler::apply_filter(program)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn both_programs_build_for_this_machine() {
        let programs = programs(CHROOT_EXTRA).unwrap();
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn the_refused_list_holds_what_issue_13_names() {
        for number in [
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_unshare,
            libc::SYS_bpf,
            libc::SYS_mount,
            libc::SYS_kexec_load,
        ] {
            assert!(REFUSED.contains(&number), "{number}");
        }
    }

    /// Installed in a child process (the filter cannot be taken off): the refused calls fail
    /// with EPERM, clone3 with ENOSYS, ordinary ones still work.
    #[test]
    fn a_confined_process_is_refused_what_docker_refuses() {
        let programs = programs(&[]).unwrap();
        // SAFETY: fork in a test; the child only makes raw system calls and exits.
        #[allow(unsafe_code)]
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = (|| -> i32 {
                if confine(&programs).is_err() {
                    return 10;
                }
                let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                // SAFETY: raw system calls with harmless arguments; each one is refused.
                #[allow(unsafe_code)]
                unsafe {
                    if libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) != -1
                        || errno() != libc::EPERM
                    {
                        return 11;
                    }
                    if libc::unshare(libc::CLONE_NEWUSER) != -1 || errno() != libc::EPERM {
                        return 12;
                    }
                    if libc::personality(0x0040_0000) != -1 || errno() != libc::EPERM {
                        return 13;
                    }
                    if libc::syscall(libc::SYS_clone3, 0, 0) != -1 || errno() != libc::ENOSYS {
                        return 14;
                    }
                    if libc::personality(0xffff_ffff) == -1 {
                        return 15;
                    }
                    if libc::getpid() <= 0 {
                        return 16;
                    }
                    if libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 {
                        return 17;
                    }
                }
                0
            })();
            // SAFETY: the forked child ends here without running the test harness's code.
            #[allow(unsafe_code)]
            unsafe {
                libc::_exit(code)
            };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        #[allow(unsafe_code)]
        unsafe {
            libc::waitpid(pid, &mut status, 0)
        };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
