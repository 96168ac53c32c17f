//! A debootstrapped Debian root, made once and kept under the target directory.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The first Debian mirror apt is configured with (`/etc/apt/sources.list`, or a
/// `sources.list.d/*.list` / deb822 `*.sources` file), skipping security mirrors.
pub fn apt_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(
            more.into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources")),
        );
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if line.starts_with("deb ") {
                line.split_whitespace()
                    .find(|word| word.starts_with("http://") || word.starts_with("https://"))
            } else {
                None
            };
            if let Some(uri) = uri.filter(|u| u.contains("debian") && !u.contains("security")) {
                return uri.to_string();
            }
        }
    }
    panic!("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d: the SBOM tests need one for debootstrap");
}

/// `debootstrap --variant=minbase [--include=…] bookworm` into `target/tmp/kiln-sbom/NAME`,
/// once: later runs reuse it. Panics (never skips) when debootstrap is missing or fails.
pub fn debian_root(name: &str, include: &[&str]) -> PathBuf {
    // Tests of one binary run in parallel threads: one debootstrap at a time.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-sbom");
    let root = base.join(name);
    let done = base.join(format!("{name}.complete"));
    if done.exists() {
        return root;
    }
    std::fs::create_dir_all(&base).unwrap();
    let partial = base.join(format!("{name}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).unwrap();
    }
    let mut command = Command::new("debootstrap");
    command.arg("--variant=minbase");
    if !include.is_empty() {
        command.arg(format!("--include={}", include.join(",")));
    }
    command.arg("bookworm").arg(&partial).arg(apt_mirror());
    let output = command.output().unwrap_or_else(|err| {
        panic!("debootstrap could not run ({err}); the SBOM tests need it: apt-get install debootstrap")
    });
    assert!(
        output.status.success(),
        "debootstrap failed (it needs root and the apt mirror):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if root.exists() {
        std::fs::remove_dir_all(&root).unwrap();
    }
    std::fs::rename(&partial, &root).unwrap();
    std::fs::write(&done, b"").unwrap();
    root
}

/// `chroot ROOT dpkg-query -W -f '${Package} ${Version}\n'`, sorted.
pub fn dpkg_query(root: &Path) -> Vec<(String, String)> {
    let output = Command::new("chroot")
        .arg(root)
        .args(["dpkg-query", "-W", "-f", "${Package} ${Version}\n"])
        .output()
        .expect("chroot dpkg-query");
    assert!(
        output.status.success(),
        "dpkg-query failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut listed: Vec<(String, String)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, version)| (name.to_string(), version.to_string()))
        .collect();
    listed.sort();
    listed
}

/// What buildpack-deps:bookworm carries, roughly: the "hundreds of packages" image the SBOM
/// cost is measured on.
pub const BUILDPACK_PACKAGES: &[&str] = &[
    "ca-certificates",
    "curl",
    "wget",
    "gnupg",
    "git",
    "openssh-client",
    "procps",
    "build-essential",
    "autoconf",
    "automake",
    "libtool",
    "pkg-config",
    "libssl-dev",
    "libcurl4-openssl-dev",
    "libxml2-dev",
    "libyaml-dev",
    "zlib1g-dev",
    "libffi-dev",
    "libsqlite3-dev",
    "libpq-dev",
    "libjpeg-dev",
    "libpng-dev",
    "python3",
    "perl",
    "file",
    "xz-utils",
    "bzip2",
    "unzip",
];
