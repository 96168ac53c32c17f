//! Rootless kiln: an ordinary user's kiln runs itself again inside a user namespace where it is
//! root, so snapshots keep image owners and RUN can mount. With subordinate id ranges
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
const WAIT: Duration = Duration::from_secs(10);

/// Called first thing in `main`. As root: nothing (`None`). As another user: in the outer
/// process, runs the child and returns its exit code; in the child, enters the namespace and
/// returns `None` so the work goes on as root there.
pub fn run_rootless() -> Option<i32> {
    if rustix::process::geteuid().is_root() {
        return None;
    }
    if std::env::var_os(ROLE_ENV).is_some_and(|v| v == "child") {
        return match enter() {
            Ok(()) => None,
            Err(e) => {
                eprintln!("error: kiln as a user other than root needs user namespaces: {e}");
                Some(125)
            }
        };
    }
    Some(match outer() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: kiln as a user other than root needs user namespaces: {e}");
            125
        }
    })
}

fn enter() -> io::Result<()> {
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

fn outer() -> io::Result<i32> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(ROLE_ENV, "child")
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
    if let Err(e) = write_maps(pid) {
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

fn write_maps(pid: u32) -> io::Result<()> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let name = user_name(uid).unwrap_or_default();
    let range = |file: &str, id: u32| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| subordinate_range(&text, &name, id))
    };
    if let (Some((us, uc)), Some((gs, gc))) = (range("/etc/subuid", uid), range("/etc/subgid", gid))
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
    // No subordinate ids: root inside is the caller, and there is no other id.
    let proc = Path::new("/proc").join(pid.to_string());
    std::fs::write(proc.join("setgroups"), "deny")?;
    std::fs::write(proc.join("uid_map"), format!("0 {uid} 1\n"))?;
    std::fs::write(proc.join("gid_map"), format!("0 {gid} 1\n"))
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
}
