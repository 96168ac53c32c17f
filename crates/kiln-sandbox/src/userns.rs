//! The `userns` rung: kiln without CAP_SYS_ADMIN (an ordinary user, or root in a container)
//! runs itself again inside a user namespace where it has it, so snapshots keep image owners
//! and RUN can mount. Root maps every id it has to itself. With subordinate id ranges
//! (`/etc/subuid`, `/etc/subgid` and the setuid `newuidmap`/`newgidmap`) every id of an image
//! exists; without them only root does, mapped to the caller.
//!
//! ```text
//! kiln (uid 1000) ──spawn──▶ kiln (same arguments, KILN_USERNS=child)
//!   waits until the child's user namespace exists,         unshare(user)
//!   writes its id maps (newuidmap, or "0 1000 1"),          waits for its maps, is root there,
//!   waits, and exits with its code                          and does the real work
//! ```

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "KILN_USERNS";
/// The report line's reason, handed from the outer process to the child.
const REPORT_ENV: &str = "KILN_USERNS_REPORT";
const WAIT: Duration = Duration::from_secs(10);

/// In the child: who the outer process was (for the report line); `None` elsewhere.
pub(crate) fn child_report() -> Option<String> {
    if std::env::var_os(ROLE_ENV).is_some_and(|v| v == "child") {
        Some(std::env::var(REPORT_ENV).unwrap_or_default())
    } else {
        None
    }
}

/// The report line's reason once inside: who kiln was outside and which ids the namespace
/// maps, from its `uid_map`.
pub(crate) fn describe(who: &str, uid_map: &str) -> String {
    let ranges: Vec<Vec<u64>> = uid_map
        .lines()
        .map(|line| {
            line.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .filter(|fields: &Vec<u64>| fields.len() == 3)
        .collect();
    let ids: u64 = ranges.iter().map(|r| r[2]).fold(0, u64::saturating_add);
    let mapping = match ranges.as_slice() {
        [only] if only[2] == 1 => format!(
            "only root is mapped (to id {}): files of other owners cannot be made",
            only[1]
        ),
        _ if ranges.iter().all(|r| r[0] == r[1]) => {
            format!("{ids} ids mapped to themselves")
        }
        _ => format!("{ids} ids mapped (subordinate ids)"),
    };
    format!("{who}: a user namespace, {mapping}")
}

/// Whether a user namespace can be made here, tried in a forked child so this process stays
/// where it is. Must run while the process has one thread.
pub(crate) fn probe() -> io::Result<()> {
    // SAFETY: the process has one thread (called first thing in main), so the child may do
    // anything; it only makes two system calls and exits.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: raw system calls in the forked child, which ends here.
        #[allow(unsafe_code)]
        unsafe {
            let code = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                0
            } else {
                io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(1)
                    .clamp(1, 255)
            };
            libc::_exit(code)
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    #[allow(unsafe_code)]
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    if waited != pid {
        return Err(io::Error::last_os_error());
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, errno) => Err(io::Error::from_raw_os_error(errno)),
        _ => Err(io::Error::other("the probe for user namespaces was killed")),
    }
}

/// In the child: enters a new user namespace and waits for the outer process to map it.
pub(crate) fn enter_as_child() -> io::Result<()> {
    // SAFETY: called before `main` does anything else, so the process has one thread, and
    // FILES is not unshared.
    #[allow(unsafe_code)]
    unsafe {
        rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER)?
    };
    let started = Instant::now();
    while std::fs::read_to_string("/proc/self/uid_map")?
        .trim()
        .is_empty()
    {
        if started.elapsed() > WAIT {
            return Err(io::Error::other(
                "no uid map was written for the user namespace",
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// In the outer process: runs kiln again (same arguments) in a user namespace, maps it, waits,
/// and returns the child's exit code.
pub(crate) fn run_outer(privileges: crate::privileges::Privileges) -> io::Result<i32> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(ROLE_ENV, "child")
        .env(REPORT_ENV, privileges.who())
        .spawn()?;
    let pid = child.id();
    let own = std::fs::read_link("/proc/self/ns/user")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            // It ended before entering a namespace: it said why.
            return Ok(status.code().unwrap_or(125));
        }
        match std::fs::read_link(format!("/proc/{pid}/ns/user")) {
            Ok(ns) if ns != own => break,
            _ if started.elapsed() > WAIT => {
                let _ = child.kill();
                return Err(io::Error::other(
                    "the child never entered its user namespace",
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    if let Err(e) = write_maps(pid, privileges) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let status = child.wait()?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .unwrap_or(125))
}

/// Whether this process is in the machine's first user namespace (where overlay keeps its
/// marks in `trusted.*` xattrs); an identity map of every id does not make a namespace the
/// initial one.
pub fn in_initial_user_namespace() -> bool {
    // PROC_USER_INIT_INO: the fixed inode number of the initial user namespace.
    std::fs::read_link("/proc/self/ns/user")
        .map(|link| link.as_os_str() == "user:[4026531837]")
        .unwrap_or(false)
}

/// A user's subordinate range from `/etc/subuid` or `/etc/subgid` (`name:start:count`, or the
/// number instead of the name).
pub fn subordinate_range(file_text: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    file_text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        if owner != name && owner != id.to_string() {
            return None;
        }
        let start = fields.next()?.parse().ok()?;
        let count = fields.next()?.parse().ok()?;
        Some((start, count))
    })
}

fn user_name(uid: u32) -> Option<String> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.get(2)? == &uid.to_string()).then(|| fields[0].to_string())
        })
}

/// Maps the child's namespace: root with CAP_SETUID and CAP_SETGID maps every id it has to
/// itself (the same owners as outside, so the same layers); an ordinary user its subordinate
/// ranges through `newuidmap`/`newgidmap`; otherwise only root, as the caller.
fn write_maps(pid: u32, privileges: crate::privileges::Privileges) -> io::Result<()> {
    let proc = Path::new("/proc").join(pid.to_string());
    if privileges.root && privileges.set_ids {
        let identity = |own: &str| -> io::Result<String> {
            let text = std::fs::read_to_string(Path::new("/proc/self").join(own))?;
            Ok(identity_map(&text))
        };
        let uids = identity("uid_map")?;
        let gids = identity("gid_map")?;
        if std::fs::write(proc.join("uid_map"), uids).is_ok()
            && std::fs::write(proc.join("gid_map"), gids).is_ok()
        {
            return Ok(());
        }
    }
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    if !privileges.root {
        let name = user_name(uid).unwrap_or_default();
        let range = |file: &str, id: u32| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|text| subordinate_range(&text, &name, id))
        };
        if let (Some((us, uc)), Some((gs, gc))) =
            (range("/etc/subuid", uid), range("/etc/subgid", gid))
        {
            let map = |tool: &str, id: u32, start: u32, count: u32| -> bool {
                Command::new(tool)
                    .args([pid, 0, id, 1, 1, start, count].map(|n| n.to_string()))
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if map("newuidmap", uid, us, uc) && map("newgidmap", gid, gs, gc) {
                return Ok(());
            }
        }
    }
    // No other ids: root inside is the caller, and there is no other id.
    let write = |name: &str, text: String| {
        let path = proc.join(name);
        std::fs::write(&path, &text)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("gid_map", format!("0 {gid} 1\n"))
}

/// Every id of this process's own map (its first column), mapped to itself.
fn identity_map(own_map: &str) -> String {
    own_map
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [inside, _, count] => Some(format!("{inside} {inside} {count}\n")),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_number() {
        let text = "alice:100000:65536\n1001:165536:65536\n";
        assert_eq!(
            subordinate_range(text, "alice", 1000),
            Some((100000, 65536))
        );
        assert_eq!(subordinate_range(text, "bob", 1001), Some((165536, 65536)));
        assert_eq!(subordinate_range(text, "carol", 1002), None);
    }

    #[test]
    fn root_maps_its_own_ids_to_themselves() {
        assert_eq!(
            identity_map("         0          0 4294967295\n"),
            "0 0 4294967295\n"
        );
        // Root of a rootless container: its ids, not the host's.
        assert_eq!(
            identity_map("0 1000 1\n1 100000 65536\n"),
            "0 0 1\n1 1 65536\n"
        );
    }

    #[test]
    fn the_report_says_which_ids_exist() {
        assert_eq!(
            describe("root without CAP_SYS_ADMIN", "0 0 4294967295\n"),
            "root without CAP_SYS_ADMIN: a user namespace, 4294967295 ids mapped to themselves"
        );
        assert!(describe("uid 1000", "0 1000 1\n").contains("only root is mapped"));
        assert!(describe("uid 1000", "0 1000 1\n1 100000 65536\n").contains("subordinate"));
    }
}
