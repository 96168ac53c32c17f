//! An arm64 busybox base for multi-platform tests: Debian's arm64 busybox-static (the arm64
//! architecture added to dpkg, as scripts/test.sh does), run through qemu-aarch64 registered in
//! binfmt_misc with the F flag.

use super::*;
use std::path::PathBuf;

pub const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

/// Whether a binfmt_misc entry named `name` is registered, enabled, with the F flag.
pub fn emulator_registered(name: &str) -> bool {
    fs::read_to_string(Path::new(BINFMT).join(name)).is_ok_and(|text| {
        text.starts_with("enabled")
            && text
                .lines()
                .any(|l| l.starts_with("flags:") && l.contains('F'))
    })
}

/// Debian's arm64 busybox-static, downloaded and extracted under `dir`; `None` (after
/// [`skip_or_fail`]) when the arm64 architecture or the mirror is missing.
pub fn arm64_busybox(dir: &Path) -> Option<PathBuf> {
    let download = Command::new("apt-get")
        .args(["download", "busybox-static:arm64"])
        .current_dir(dir)
        .output();
    let deb = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"));
    let Some(deb) = deb else {
        let why = download
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_else(|e| e.to_string());
        skip_or_fail(&format!(
            "apt-get download busybox-static:arm64 failed (dpkg --add-architecture arm64 && apt-get update, as scripts/test.sh does): {why}"
        ));
        return None;
    };
    let extracted = dir.join("x");
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&extracted)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb -x: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = extracted.join("bin/busybox");
    assert!(binary.is_file(), "no bin/busybox in {}", deb.display());
    Some(binary)
}

/// Builds `busybox:multi` into the store at `root`: an index of linux/amd64 (this machine's
/// busybox-static) and linux/arm64 (`arm64`, from [`arm64_busybox`]), made by kiln itself from
/// one recipe at [`EPOCH`], so every store that builds it holds the same image.
pub fn multi_busybox_at(root: &Path, arm64: &Path) {
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM scratch\nARG TARGETARCH\nCOPY busybox-$TARGETARCH /bin/busybox\nCOPY passwd group /etc/\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n",
        ),
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("group", "root:x:0:\n"),
    ]);
    fs::copy(busybox_binary(), ctx.path().join("busybox-amd64")).unwrap();
    fs::copy(arm64, ctx.path().join("busybox-arm64")).unwrap();
    build(
        ctx.path(),
        root,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "busybox:multi",
        ],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
}
