//! Ending every process a step started, where there is no pid namespace to end them with it
//! (the chroot rung). Killing the step's process group misses a process that started a session
//! or a group of its own (`setsid sleep 1000 &`, a daemon that double-forks). So the helper
//! makes itself a child subreaper before the step starts: whatever the step leaves behind is
//! reparented to the helper instead of the container's init, and so stays a descendant. After
//! the step, the helper kills every process whose parent chain leads to it, reaps them, and
//! looks again until none is left.

use rustix::process::{Pid, Signal, WaitOptions};
use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

/// How long the helper keeps killing before it gives up on a step that forks faster than it
/// can kill (SIGKILL cannot be caught, so in practice a few rounds end everything).
const KILL_LIMIT: Duration = Duration::from_secs(10);

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`).
pub(crate) fn become_subreaper() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(io::Error::from)
}

/// Every process's parent, from `/proc/PID/stat` (processes that end while being read are
/// left out).
fn parents() -> HashMap<i32, i32> {
    let mut parents = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return parents;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(parent) = parent_of(pid) {
            parents.insert(pid, parent);
        }
    }
    parents
}

/// The parent pid in `/proc/PID/stat`: the second field after the command name, which is in
/// parentheses and may itself hold spaces and parentheses (so the last `)` ends it).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_parent(&stat)
}

fn parse_parent(stat: &str) -> Option<i32> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid`'s chain of parents reaches `ancestor` (bounded by the number of processes, so
/// a table read while processes change cannot loop).
fn descends_from(parents: &HashMap<i32, i32>, pid: i32, ancestor: i32) -> bool {
    let mut current = pid;
    for _ in 0..=parents.len() {
        match parents.get(&current) {
            Some(&parent) if parent == ancestor => return true,
            Some(&parent) if parent > 0 && parent != current => current = parent,
            _ => return false,
        }
    }
    false
}

/// The processes below `ancestor`.
fn descendants_of(ancestor: i32) -> Vec<i32> {
    let parents = parents();
    let mut found: Vec<i32> = parents
        .keys()
        .copied()
        .filter(|&pid| descends_from(&parents, pid, ancestor))
        .collect();
    found.sort_unstable();
    found
}

/// SIGKILL to `pid`, through a pidfd so that a pid reused since /proc was read is not hit: once
/// the pidfd is open it names one process, which is checked to still be a descendant.
fn kill_descendant(pid: i32, ancestor: i32) {
    let Some(target) = Pid::from_raw(pid) else {
        return;
    };
    let Ok(pidfd) = rustix::process::pidfd_open(target, rustix::process::PidfdFlags::empty())
    else {
        return;
    };
    if descends_from(&parents(), pid, ancestor) {
        let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
    }
}

/// Reaps every child of this process that has ended.
fn reap() {
    while let Ok(Some(_)) = rustix::process::waitpid(None, WaitOptions::NOHANG) {}
}

/// Kills and reaps every descendant of this process, looking again until there is none.
/// Err with how many were still there when [`KILL_LIMIT`] ran out.
pub(crate) fn kill_all() -> Result<(), usize> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let started = Instant::now();
    loop {
        reap();
        // Zombies of processes already killed are reaped by the next round.
        let left: Vec<i32> = descendants_of(me)
            .into_iter()
            .filter(|&pid| !is_zombie(pid))
            .collect();
        if left.is_empty() {
            reap();
            return Ok(());
        }
        if started.elapsed() > KILL_LIMIT {
            return Err(left.len());
        }
        for pid in left {
            kill_descendant(pid, me);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after) = stat.rsplit_once(')')?;
            after.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_after_the_last_parenthesis() {
        assert_eq!(parse_parent("42 (sleep) S 7 42 42 0"), Some(7));
        assert_eq!(parse_parent("42 (a) b) (c) R 9 1 1"), Some(9));
        assert_eq!(parse_parent("42 (truncated"), None);
    }

    #[test]
    fn chains_are_followed_and_cycles_end() {
        let parents: HashMap<i32, i32> = [(10, 1), (11, 10), (12, 11), (20, 21), (21, 20)]
            .into_iter()
            .collect();
        assert!(descends_from(&parents, 12, 10));
        assert!(descends_from(&parents, 11, 10));
        assert!(!descends_from(&parents, 10, 10));
        assert!(!descends_from(&parents, 20, 10));
    }
}
