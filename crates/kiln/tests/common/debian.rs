//! A Debian base for the tests that need a real distribution (apt, dpkg).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A Debian root made with `debootstrap --variant=minbase bookworm` (the mirror from
/// /etc/apt/sources.list*), as a tar without /dev/*, made once and kept under
/// /var/tmp/kiln-tests for every later test binary and run. Fails (never skips) when
/// debootstrap is missing or cannot reach the mirror.
pub fn debian_base() -> PathBuf {
    let cache = Path::new("/var/tmp/kiln-tests");
    let tar = cache.join("debian-bookworm-minbase.tar");
    if tar.is_file() {
        return tar;
    }
    assert!(
        super::have("debootstrap") || Path::new("/usr/sbin/debootstrap").is_file(),
        "debootstrap is needed: apt-get install debootstrap"
    );
    fs::create_dir_all(cache).unwrap();
    let sources = [
        "/etc/apt/sources.list",
        "/etc/apt/sources.list.d/debian.sources",
    ]
    .iter()
    .filter_map(|p| fs::read_to_string(p).ok())
    .collect::<String>();
    let mirror = sources
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .unwrap_or("http://deb.debian.org/debian")
        .to_string();
    let root = tempfile::tempdir_in(cache).unwrap();
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(root.path())
        .arg(&mirror)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "debootstrap from {mirror} failed");
    // Written beside and renamed: a concurrent test binary never reads half a tar.
    let partial = cache.join(format!("debian.{}.tar", std::process::id()));
    let packed = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["--exclude=./dev/*", "-cf"])
        .arg(&partial)
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success());
    fs::rename(&partial, &tar).unwrap();
    tar
}
