//! Fuzzes `--chmod` and `--chown`: the first line is the `--chmod` value, the second the
//! `--chown` value, the rest is written as the image's /etc/passwd and /etc/group for name
//! lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let chmod = lines.next().unwrap_or("");
    let chown = lines.next().unwrap_or("");
    let files = lines.next().unwrap_or("");
    if let Ok(parsed) = kiln_plan::Chmod::parse(chmod) {
        for mode in [0, 0o644, 0o755, 0o7777] {
            for is_dir in [false, true] {
                assert!(parsed.apply(mode, is_dir) <= 0o7777, "{chmod:?}");
            }
        }
    }
    let Ok(root) = tempfile::tempdir() else {
        return;
    };
    let etc = root.path().join("etc");
    if std::fs::create_dir(&etc).is_err() {
        return;
    }
    let _ = std::fs::write(etc.join("passwd"), files);
    let _ = std::fs::write(etc.join("group"), files);
    let image = kiln_build::rootfs::Rootfs::new(vec![root.path().to_path_buf()]);
    let _ = kiln_build::copy::resolve_chown(chown, &image);
});
