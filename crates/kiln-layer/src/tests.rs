//! Layer tests on fixture trees built in temp dirs (the ones that chown, mknod or set trusted.*
//! xattrs need root and say so when skipped).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};

use super::*;

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// "skipped: WHY" (the caller then returns), or a failure under `KILN_REQUIRE_ALL=1` (as
/// `.ci/run` sets): the one way a test here gives up.
fn skip_or_fail(why: &str) {
    assert!(
        std::env::var("KILN_REQUIRE_ALL").map_or(true, |v| v != "1"),
        "KILN_REQUIRE_ALL=1 and this test cannot run: {why}"
    );
    eprintln!("skipped: {why}");
}

macro_rules! require_root {
    () => {
        if !is_root() {
            skip_or_fail("needs root (chown, mknod, trusted.* xattrs)");
            return;
        }
    };
}

fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 123_456_789,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn mknod(path: &Path, ty: FileType, major: u32, minor: u32) {
    rustix::fs::mknodat(
        CWD,
        path,
        ty,
        Mode::from_raw_mode(0o644),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

fn write(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

fn opts(compression: Compression) -> LayerOptions {
    LayerOptions {
        compression,
        source_date_epoch: None,
        threads: 2,
    }
}

fn build(root: &Path, options: &LayerOptions) -> (Layer, Vec<u8>) {
    write_layer(root, options, Vec::new()).unwrap()
}

fn uncompressed(blob: &[u8], media_type: &str) -> Vec<u8> {
    let mut out = Vec::new();
    decompress(blob, media_type)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn summaries(root: &Path) -> Vec<EntrySummary> {
    let (layer, blob) = build(root, &opts(Compression::default()));
    read_layer_entries(&blob[..], layer.media_type).unwrap()
}

fn names(entries: &[EntrySummary]) -> Vec<String> {
    entries.iter().map(|e| e.path_str().into_owned()).collect()
}

fn find<'a>(entries: &'a [EntrySummary], path: &str) -> &'a EntrySummary {
    entries
        .iter()
        .find(|e| e.path_str() == path)
        .unwrap_or_else(|| panic!("no entry {path:?} in {:?}", names(entries)))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256Digest::of(bytes).to_string()
}

#[test]
fn entries_are_sorted_by_name_bytes_whatever_the_creation_order() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    // Created in a scrambled order on purpose.
    for name in [
        "z", "a-b", "B", "a/c/d", "a/b", "_x", "a.txt", "é", "a/c/a", "0", "a/a/z",
    ] {
        write(&r.join(name), name.as_bytes());
    }
    fs::create_dir(r.join("empty")).unwrap();
    let got = names(&summaries(r));
    let want = [
        "0", "B", "_x", "a/", "a/a/", "a/a/z", "a/b", "a/c/", "a/c/a", "a/c/d", "a-b", "a.txt",
        "empty/", "z", "é",
    ];
    assert_eq!(got, want);
    // The lower-level listing gives the same order and names.
    let listed: Vec<String> = list_entries(r)
        .unwrap()
        .iter()
        .map(|e| e.path_lossy().into_owned())
        .collect();
    assert_eq!(listed, want);
}

#[test]
fn modes_owners_and_mtimes_are_kept() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(&r.join("suid"), b"x");
    fs::set_permissions(r.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    write(&r.join("sgid"), b"x");
    fs::set_permissions(r.join("sgid"), fs::Permissions::from_mode(0o2711)).unwrap();
    fs::create_dir(r.join("tmp")).unwrap();
    fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    write(&r.join("owned"), b"x");
    std::os::unix::fs::lchown(r.join("owned"), Some(1234), Some(5678)).unwrap();
    write(&r.join("bigid"), b"x");
    std::os::unix::fs::lchown(r.join("bigid"), Some(3_000_000), Some(4_000_000)).unwrap();
    symlink("suid", r.join("link")).unwrap();
    std::os::unix::fs::lchown(r.join("link"), Some(7), Some(8)).unwrap();
    for (name, t) in [
        ("suid", 1_000_000_000),
        ("tmp", 1_100_000_000),
        ("link", 1_200_000_000),
    ] {
        set_mtime(&r.join(name), t);
    }

    let (layer, blob) = build(r, &opts(Compression::None));
    let e = read_layer_entries(&blob[..], layer.media_type).unwrap();
    assert_eq!(find(&e, "suid").mode, 0o4755);
    assert_eq!(find(&e, "sgid").mode, 0o2711);
    assert_eq!(find(&e, "tmp/").mode, 0o1777);
    assert_eq!(find(&e, "tmp/").kind, EntryTypeSummary::Dir);
    let owned = find(&e, "owned");
    assert_eq!((owned.uid, owned.gid), (1234, 5678));
    let big = find(&e, "bigid");
    assert_eq!((big.uid, big.gid), (3_000_000, 4_000_000));
    assert!(big.pax_keys.contains(&"uid".to_string()));
    let link = find(&e, "link");
    assert_eq!((link.uid, link.gid), (7, 8));
    assert_eq!(find(&e, "suid").mtime, 1_000_000_000);
    assert_eq!(find(&e, "tmp/").mtime, 1_100_000_000);
    assert_eq!(link.mtime, 1_200_000_000);

    // No user/group names, no atime/ctime: check the raw headers.
    for block in blob.chunks(512) {
        if &block[257..263] == b"ustar\0" {
            assert!(
                block[265..265 + 64].iter().all(|&b| b == 0),
                "uname/gname empty"
            );
        }
    }
    let tar_text = String::from_utf8_lossy(&blob);
    assert!(!tar_text.contains("atime=") && !tar_text.contains("ctime="));
}

#[test]
fn long_and_non_ascii_names_use_pax_records() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let long_dir = "d".repeat(120);
    let name_150 = format!("{long_dir}/{}", "f".repeat(29)); // 150 bytes
    let name_300 = format!("{long_dir}/{}/{}", "g".repeat(120), "h".repeat(58)); // 300 bytes
    assert_eq!(name_150.len(), 150);
    assert_eq!(name_300.len(), 300);
    write(&r.join(&name_150), b"150");
    write(&r.join(&name_300), b"300");
    write(&r.join("grüße-日本"), b"utf8");
    let target = format!("/{}", "t".repeat(199));
    symlink(&target, r.join("longlink")).unwrap();
    symlink("relative/target", r.join("shortlink")).unwrap();

    let (layer, blob) = build(r, &opts(Compression::default()));
    let e = read_layer_entries(&blob[..], layer.media_type).unwrap();
    let long = find(&e, &name_300);
    assert_eq!(long.size, 3);
    assert!(long.pax_keys.contains(&"path".to_string()));
    assert!(find(&e, &name_150).pax_keys.contains(&"path".to_string()));
    assert!(find(&e, "grüße-日本")
        .pax_keys
        .contains(&"path".to_string()));
    let link = find(&e, "longlink");
    assert_eq!(link.kind, EntryTypeSummary::Symlink);
    assert_eq!(link.link_str().unwrap(), target);
    assert_eq!(link.pax_keys, ["linkpath"]);
    let short = find(&e, "shortlink");
    assert_eq!(short.link_str().unwrap(), "relative/target");
    assert!(short.pax_keys.is_empty());
    assert!(find(&e, "longlink").size == 0);

    // PAX, never GNU long names ('L'/'K' entries).
    let tar = uncompressed(&blob, layer.media_type);
    for block in tar.chunks(512) {
        assert!(!block.starts_with(b"././@LongLink"));
    }
    // The system tar reads it back the same way, contents included.
    let out = tempfile::tempdir().unwrap();
    let tar_path = out.path().join("layer.tar");
    fs::write(&tar_path, &tar).unwrap();
    let x = out.path().join("x");
    fs::create_dir(&x).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fs::read(x.join(&name_300)).unwrap(), b"300");
    assert_eq!(fs::read(x.join("grüße-日本")).unwrap(), b"utf8");
    assert_eq!(
        fs::read_link(x.join("longlink")).unwrap().to_str().unwrap(),
        target
    );
}

#[test]
fn non_utf8_names_are_kept_as_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let raw: &[u8] = b"caf\xe9";
    fs::write(r.join(std::ffi::OsStr::from_bytes(raw)), b"latin1").unwrap();
    let e = summaries(r);
    assert_eq!(e[0].path, raw);
    assert!(e[0].pax_keys.contains(&"hdrcharset".to_string()));
}

#[test]
fn hardlinks_point_at_the_first_name_in_layer_order() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(&r.join("m/one"), b"shared content");
    fs::hard_link(r.join("m/one"), r.join("b-two")).unwrap();
    fs::create_dir(r.join("z")).unwrap();
    fs::hard_link(r.join("m/one"), r.join("z/three")).unwrap();
    write(&r.join("pair1"), b"pair");
    fs::hard_link(r.join("pair1"), r.join("pair2")).unwrap();

    let (layer, blob) = build(r, &opts(Compression::default()));
    let e = read_layer_entries(&blob[..], layer.media_type).unwrap();
    assert_eq!(
        names(&e),
        ["b-two", "m/", "m/one", "pair1", "pair2", "z/", "z/three"]
    );
    let first = find(&e, "b-two");
    assert_eq!(first.kind, EntryTypeSummary::File);
    assert_eq!(first.size, 14);
    for other in ["m/one", "z/three"] {
        let h = find(&e, other);
        assert_eq!(h.kind, EntryTypeSummary::Hardlink);
        assert_eq!(h.link_str().unwrap(), "b-two");
        assert_eq!(h.size, 0);
    }
    assert_eq!(find(&e, "pair2").link_str().unwrap(), "pair1");

    // The system tar recreates the links.
    let out = tempfile::tempdir().unwrap();
    let tar_path = out.path().join("l.tar.gz");
    fs::write(&tar_path, &blob).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tar_path)
        .arg("-C")
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let a = fs::metadata(out.path().join("b-two")).unwrap();
    let b = fs::metadata(out.path().join("z/three")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 3);
}

#[test]
fn devices_and_fifos_are_entries_and_sockets_are_skipped() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    mknod(&r.join("null"), FileType::CharacterDevice, 1, 3);
    mknod(&r.join("loop0"), FileType::BlockDevice, 7, 0);
    mknod(&r.join("bigminor"), FileType::CharacterDevice, 259, 300_000);
    mknod(&r.join("pipe"), FileType::Fifo, 0, 0);
    let _listener = std::os::unix::net::UnixListener::bind(r.join("sock")).unwrap();

    let e = summaries(r);
    assert_eq!(names(&e), ["bigminor", "loop0", "null", "pipe"]);
    let null = find(&e, "null");
    assert_eq!(null.kind, EntryTypeSummary::CharDevice);
    assert_eq!(null.device, Some((1, 3)));
    assert_eq!(find(&e, "loop0").kind, EntryTypeSummary::BlockDevice);
    assert_eq!(find(&e, "loop0").device, Some((7, 0)));
    assert_eq!(find(&e, "bigminor").device, Some((259, 300_000)));
    assert_eq!(find(&e, "pipe").kind, EntryTypeSummary::Fifo);
}

#[test]
fn overlay_whiteouts_and_opaque_dirs_become_wh_entries() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    fs::create_dir_all(r.join("etc")).unwrap();
    write(&r.join("etc/-first"), b"sorts before .wh.");
    write(&r.join("etc/keep"), b"k");
    mknod(&r.join("etc/gone"), FileType::CharacterDevice, 0, 0);
    mknod(&r.join("etc/also-gone"), FileType::CharacterDevice, 0, 0);
    mknod(&r.join("top-gone"), FileType::CharacterDevice, 0, 0);
    // An "xwhiteout" (Linux 6.7+): an empty regular file marked by an overlay xattr.
    write(&r.join("etc/xgone"), b"");
    setxattr(&r.join("etc/xgone"), "trusted.overlay.whiteout", b"");
    fs::create_dir_all(r.join("opq")).unwrap();
    setxattr(&r.join("opq"), "trusted.overlay.opaque", b"y");
    write(&r.join("opq/!new"), b"n");
    fs::create_dir_all(r.join("uopq")).unwrap();
    setxattr(&r.join("uopq"), "user.overlay.opaque", b"y");
    fs::create_dir_all(r.join("not-opq")).unwrap();
    setxattr(&r.join("not-opq"), "trusted.overlay.opaque", b"x");
    fs::create_dir_all(r.join("not-opq-either")).unwrap();
    setxattr(&r.join("not-opq-either"), "user.foo.opaque", b"y");

    let e = summaries(r);
    assert_eq!(
        names(&e),
        [
            ".wh.top-gone",
            "etc/",
            "etc/.wh.also-gone",
            "etc/.wh.gone",
            "etc/.wh.xgone",
            "etc/-first",
            "etc/keep",
            "not-opq/",
            "not-opq-either/",
            "opq/",
            "opq/.wh..wh..opq",
            "opq/!new",
            "uopq/",
            "uopq/.wh..wh..opq",
        ]
    );
    for wh in [
        ".wh.top-gone",
        "etc/.wh.gone",
        "etc/.wh.xgone",
        "opq/.wh..wh..opq",
    ] {
        let w = find(&e, wh);
        assert_eq!(w.kind, EntryTypeSummary::File);
        assert_eq!(w.size, 0);
    }
    // Overlay's own attributes never reach the layer; others stay.
    assert!(find(&e, "opq/").xattrs.is_empty());
    assert_eq!(
        find(&e, "not-opq-either/").xattrs,
        [("user.foo.opaque".to_string(), b"y".to_vec())]
    );
}

#[test]
fn xattrs_are_kept_sorted_and_overlay_ones_dropped() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(&r.join("ping"), b"#!/bin/true\n");
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    setxattr(&r.join("ping"), "user.zeta", b"last");
    setxattr(&r.join("ping"), "security.capability", &cap);
    setxattr(&r.join("ping"), "user.foo", b"bar with spaces\nand newline");
    setxattr(&r.join("ping"), "trusted.overlay.origin", b"\x00\xfb");
    setxattr(&r.join("ping"), "user.overlay.impure", b"y");

    let e = summaries(r);
    let ping = find(&e, "ping");
    assert_eq!(
        ping.xattrs,
        [
            ("security.capability".to_string(), cap.to_vec()),
            (
                "user.foo".to_string(),
                b"bar with spaces\nand newline".to_vec()
            ),
            ("user.zeta".to_string(), b"last".to_vec()),
        ]
    );
    let listed = list_entries(r).unwrap();
    assert_eq!(listed[0].xattrs.len(), 3);
}

#[test]
fn overlay_redirects_and_reserved_names_are_refused() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("moved")).unwrap();
    setxattr(
        &dir.path().join("moved"),
        "trusted.overlay.redirect",
        b"/old",
    );
    let err = write_layer(dir.path(), &LayerOptions::default(), Vec::new()).unwrap_err();
    assert!(
        matches!(err, LayerError::OverlayIndirection { .. }),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    // An empty `.wh.NAME` file is a whiteout in OCI form; anything else by that name is not.
    write(&dir.path().join("sub/.wh.sneaky"), b"not empty");
    let err = write_layer(dir.path(), &LayerOptions::default(), Vec::new()).unwrap_err();
    assert!(matches!(err, LayerError::ReservedName { .. }), "{err}");
    assert!(err.to_string().contains(".wh.sneaky"));
}

#[test]
fn source_date_epoch_clamps_every_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(&r.join("d/new"), b"new");
    write(&r.join("old"), b"old");
    symlink("old", r.join("link")).unwrap();
    set_mtime(&r.join("d/new"), 2_000_000_000);
    set_mtime(&r.join("old"), 500_000_000);
    set_mtime(&r.join("link"), 1_900_000_000);
    set_mtime(&r.join("d"), 1_800_000_000);

    let epoch = 1_000_000_000;
    let options = LayerOptions {
        source_date_epoch: Some(epoch),
        ..opts(Compression::Zstd { level: 3 })
    };
    let (layer, blob) = build(r, &options);
    let e = read_layer_entries(&blob[..], layer.media_type).unwrap();
    assert_eq!(find(&e, "d/").mtime, epoch);
    assert_eq!(find(&e, "d/new").mtime, epoch);
    assert_eq!(find(&e, "link").mtime, epoch);
    assert_eq!(find(&e, "old").mtime, 500_000_000);

    // Without an epoch the times are as on disk.
    let e = summaries(r);
    assert_eq!(find(&e, "d/new").mtime, 2_000_000_000);
}

type Step = Box<dyn Fn(&Path)>;

/// Builds the same logical tree in `root`, creating entries in the given order.
fn make_tree(root: &Path, reverse: bool, with_special: bool) {
    let mut steps: Vec<Step> = vec![
        Box::new(|r| write(&r.join("usr/bin/tool"), &[7u8; 10_000])),
        Box::new(|r| write(&r.join("usr/lib/libx.so"), b"lib")),
        Box::new(|r| write(&r.join("etc/conf"), b"a=1\n")),
        Box::new(|r| write(&r.join("big"), &vec![42u8; 3 * 1024 * 1024 + 17])),
        Box::new(|r| fs::create_dir_all(r.join("var/empty")).unwrap()),
        Box::new(|r| {
            fs::create_dir_all(r.join("etc")).unwrap();
            symlink("../usr/bin/tool", r.join("etc/tool")).unwrap()
        }),
    ];
    if reverse {
        steps.reverse();
    }
    for step in &steps {
        step(root);
    }
    fs::hard_link(root.join("usr/lib/libx.so"), root.join("usr/lib/libx.so.1")).unwrap();
    if with_special {
        mknod(&root.join("etc/removed"), FileType::CharacterDevice, 0, 0);
        setxattr(&root.join("usr/bin/tool"), "user.kiln", b"1");
        fs::create_dir_all(root.join("opaque")).unwrap();
        setxattr(&root.join("opaque"), "trusted.overlay.opaque", b"y");
    }
    // Permissions the same on both, whatever the umask.
    for entry in ["usr", "usr/bin", "usr/lib", "etc", "var", "var/empty"] {
        fs::set_permissions(root.join(entry), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for entry in ["usr/bin/tool", "usr/lib/libx.so", "etc/conf", "big"] {
        fs::set_permissions(root.join(entry), fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[test]
fn same_tree_gives_the_same_bytes_whatever_order_times_and_threads() {
    let special = is_root();
    let a = tempfile::tempdir().unwrap();
    make_tree(a.path(), false, special);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = tempfile::tempdir().unwrap();
    make_tree(b.path(), true, special);
    let inode_a = fs::metadata(a.path().join("big")).unwrap().ino();
    let inode_b = fs::metadata(b.path().join("big")).unwrap().ino();
    assert_ne!(inode_a, inode_b);

    for compression in [
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
        Compression::None,
    ] {
        let mut options = LayerOptions {
            compression,
            source_date_epoch: Some(1_700_000_000),
            threads: 1,
        };
        let (la, blob_a) = build(a.path(), &options);
        options.threads = 3;
        let (lb, blob_b) = build(b.path(), &options);
        assert_eq!(la, lb, "{compression:?}");
        assert!(blob_a == blob_b, "{compression:?}: blobs differ");
        // And again from the same tree: stable.
        options.threads = 0;
        assert_eq!(build(a.path(), &options).0, la);
    }
}

#[test]
fn media_types_and_digests_match_the_bytes_written() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), false, false);
    let mut layers = Vec::new();
    for (compression, media_type) in [
        (Compression::Gzip { level: 6 }, MEDIA_TYPE_TAR_GZIP),
        (Compression::Zstd { level: 3 }, MEDIA_TYPE_TAR_ZSTD),
        (Compression::None, MEDIA_TYPE_TAR),
    ] {
        let (layer, blob) = build(dir.path(), &opts(compression));
        assert_eq!(layer.media_type, media_type);
        assert_eq!(layer.digest, sha256_hex(&blob));
        assert_eq!(layer.size, blob.len() as u64);
        let tar = uncompressed(&blob, media_type);
        assert_eq!(layer.diff_id, sha256_hex(&tar));
        assert_eq!(layer.uncompressed_size, tar.len() as u64);
        assert_eq!(tar.len() % 512, 0);
        assert!(tar[tar.len() - 1024..].iter().all(|&b| b == 0));
        if compression != Compression::None {
            assert!(blob.len() < tar.len() / 4, "{compression:?} compresses");
        }
        layers.push(layer);
    }
    // One tar, three blobs.
    assert_eq!(layers[0].diff_id, layers[1].diff_id);
    assert_eq!(layers[0].diff_id, layers[2].diff_id);
    assert_eq!(layers[2].digest, layers[2].diff_id);
    assert_ne!(layers[0].digest, layers[1].digest);
}

#[test]
fn gzip_header_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("f"), b"x");
    let (_, blob) = build(dir.path(), &opts(Compression::Gzip { level: 6 }));
    // magic, deflate, no flags (no name), mtime 0, XFL 0, OS 255.
    assert_eq!(&blob[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
}

#[test]
fn system_tar_lists_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), false, false);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("layer.tar.gz");
    let layer = write_layer_to_file(dir.path(), &LayerOptions::default(), &path).unwrap();
    assert_eq!(layer.digest, sha256_hex(&fs::read(&path).unwrap()));

    let listing = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$1\" | tar -t")
        .arg("sh")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listed = String::from_utf8(listing.stdout).unwrap();
    let want = [
        "big",
        "etc/",
        "etc/conf",
        "etc/tool",
        "usr/",
        "usr/bin/",
        "usr/bin/tool",
        "usr/lib/",
        "usr/lib/libx.so",
        "usr/lib/libx.so.1",
        "var/",
        "var/empty/",
    ];
    assert_eq!(listed.lines().collect::<Vec<_>>(), want);

    let verbose = Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(verbose.status.success());
    let text = String::from_utf8(verbose.stdout).unwrap();
    assert!(text.contains("etc/tool -> ../usr/bin/tool"), "{text}");
    assert!(
        text.contains("usr/lib/libx.so.1 link to usr/lib/libx.so"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("-rw-r--r-- 0/0") && l.ends_with(" big")),
        "{text}"
    );
    // Extracted contents match.
    let x = out.path().join("x");
    fs::create_dir(&x).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&path)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs::read(x.join("big")).unwrap(),
        fs::read(dir.path().join("big")).unwrap()
    );
}

#[test]
fn files_changed_between_listing_and_reading_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(&r.join("grows"), b"1234");
    let listed = list_entries(r).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(r.join("grows"))
        .unwrap()
        .write_all(b"5")
        .unwrap();
    let err = write_tar(listed.clone().into_iter().map(Ok), None, Vec::new()).unwrap_err();
    assert!(
        matches!(err, LayerError::Changed { detail: "grew", .. }),
        "{err}"
    );

    fs::write(r.join("grows"), b"12").unwrap();
    let err = write_tar(listed.clone().into_iter().map(Ok), None, Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            LayerError::Changed {
                detail: "shrank",
                ..
            }
        ),
        "{err}"
    );

    // Replaced by a new inode (created before the old one is freed, so its number differs).
    fs::write(r.join("new"), b"1234").unwrap();
    fs::rename(r.join("new"), r.join("grows")).unwrap();
    let err = write_tar(listed.clone().into_iter().map(Ok), None, Vec::new()).unwrap_err();
    assert!(matches!(err, LayerError::Changed { .. }), "{err}");

    fs::remove_file(r.join("grows")).unwrap();
    symlink("/etc/passwd", r.join("grows")).unwrap();
    let err = write_tar(listed.into_iter().map(Ok), None, Vec::new()).unwrap_err();
    assert!(matches!(err, LayerError::Fs { op: "open", .. }), "{err}");
}

/// A writer that fails after `left` bytes.
#[derive(Debug)]
struct FailingWriter {
    left: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_errors_stop_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), false, false);
    for compression in [
        Compression::None,
        Compression::Gzip { level: 1 },
        Compression::Zstd { level: 1 },
    ] {
        let err =
            write_layer(dir.path(), &opts(compression), FailingWriter { left: 100 }).unwrap_err();
        assert!(
            matches!(err, LayerError::Output(_)),
            "{compression:?}: {err}"
        );
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}

#[test]
fn missing_root_and_bad_media_type_are_errors() {
    let err = write_layer(
        Path::new("/nonexistent/kiln"),
        &LayerOptions::default(),
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Fs { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("file"), b"");
    let err = write_layer(
        &dir.path().join("file"),
        &LayerOptions::default(),
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::NotADirectory { .. }), "{err}");
    let err = read_layer_entries(&b""[..], "application/json").unwrap_err();
    assert!(matches!(err, LayerError::UnknownMediaType(_)));
}

#[test]
fn empty_snapshot_is_an_empty_tar() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, blob) = build(dir.path(), &opts(Compression::None));
    assert_eq!(blob, vec![0u8; 1024]);
    assert_eq!(layer.uncompressed_size, 1024);
    let (layer, blob) = build(dir.path(), &opts(Compression::default()));
    assert!(read_layer_entries(&blob[..], layer.media_type)
        .unwrap()
        .is_empty());
}

/// A sparse file a little over 100 MB goes through the whole pipeline: contents streamed,
/// digests right.
#[test]
fn hundred_megabyte_file_streams() {
    let dir = tempfile::tempdir().unwrap();
    let size = 110 * 1024 * 1024 + 3;
    let f = File::create(dir.path().join("sparse")).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let (layer, hasher) = write_layer(
        dir.path(),
        &opts(Compression::Gzip { level: 1 }),
        HashingWriter::new(std::io::sink()),
    )
    .unwrap();
    let (_, digest, len) = hasher.finish().unwrap();
    assert_eq!(layer.digest, digest.to_string());
    assert_eq!(layer.size, len);
    assert_eq!(
        layer.uncompressed_size,
        512 + size.div_ceil(512) * 512 + 1024
    );
    assert!(layer.size < size / 50, "zeros compress: {}", layer.size);
}

/// The size field's ustar limit (8 GiB - 1) is passed with a PAX `size` record. The file is
/// sparse and nothing is compressed or hashed, so this reads 8 GiB of holes in a few seconds.
#[test]
fn files_over_8_gib_get_a_pax_size() {
    let dir = tempfile::tempdir().unwrap();
    let size = 8 * 1024 * 1024 * 1024 + 1;
    let f = File::create(dir.path().join("huge")).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let mut head = HeadWriter {
        head: Vec::new(),
        total: 0,
    };
    write_tar(Entries::new(dir.path()).unwrap(), None, &mut head).unwrap();
    assert_eq!(head.total, 1536 + size.div_ceil(512) * 512 + 1024);
    let pax = String::from_utf8_lossy(&head.head[512..1024]);
    assert!(pax.starts_with("19 size=8589934593\n"), "{pax}");
    let header = tar::Header::from_byte_slice(&head.head[1024..1536]);
    assert_eq!(header.path_bytes().as_ref(), b"huge");
    assert_eq!(
        header.size().unwrap(),
        size,
        "base-256 size in the header too"
    );
}

/// Keeps the first 4 KiB and counts the rest.
struct HeadWriter {
    head: Vec<u8>,
    total: u64,
}

impl Write for HeadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let keep = buf.len().min(4096usize.saturating_sub(self.head.len()));
        self.head.extend_from_slice(&buf[..keep]);
        self.total += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An xattr value may hold newlines, even text that looks like a PAX record. The layer
/// carries it verbatim, and the true name is written first, so that a reader splitting PAX
/// data on newlines (the tar crate's own) is not misled into another path.
#[test]
fn xattr_values_with_newlines_cannot_forge_records() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(&r.join("innocent"), b"x");
    let forged = b"\n19 path=etc/shadow\n".to_vec();
    setxattr(&r.join("innocent"), "user.evil", &forged);
    let (layer, blob) = build(r, &opts(Compression::None));

    let mut archive = tar::Archive::new(&blob[..]);
    let paths: Vec<Vec<u8>> = archive
        .entries()
        .unwrap()
        .map(|en| en.unwrap().path_bytes().into_owned())
        .collect();
    assert_eq!(paths, [b"innocent".to_vec()]);

    let e = read_layer_entries(&blob[..], layer.media_type).unwrap();
    assert_eq!(names(&e), ["innocent"]);
    assert_eq!(e[0].xattrs, [("user.evil".to_string(), forged)]);
    assert_eq!(e[0].pax_keys, ["path", "SCHILY.xattr.user.evil"]);
}

#[test]
fn oci_form_markers_give_the_same_layer_as_overlay_form() {
    require_root!();
    let build = |oci: bool| {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(&r.join("etc/keep"), b"k");
        write(&r.join("etc/-first"), b"sorts before .wh.");
        write(&r.join("etc/zz"), b"z");
        fs::create_dir_all(r.join("opq/sub")).unwrap();
        write(&r.join("opq/new"), b"n");
        for gone in ["etc/gone", "etc/a-gone", "etc/zzz", "top-gone"] {
            let path = r.join(gone);
            if oci {
                let name = format!(".wh.{}", path.file_name().unwrap().to_str().unwrap());
                write(&path.with_file_name(name), b"");
            } else {
                mknod(&path, FileType::CharacterDevice, 0, 0);
            }
        }
        for opq in ["opq", "opq/sub"] {
            if oci {
                write(&r.join(opq).join(".wh..wh..opq"), b"");
            } else {
                setxattr(&r.join(opq), "trusted.overlay.opaque", b"y");
            }
        }
        // Same owner, mode and time on every entry and marker, whichever form.
        let mut all = Vec::new();
        let mut stack = vec![r.to_path_buf()];
        while let Some(d) = stack.pop() {
            for item in fs::read_dir(&d).unwrap() {
                let path = item.unwrap().path();
                if path.is_dir() {
                    stack.push(path.clone());
                }
                all.push(path);
            }
        }
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for path in all.iter().chain([&r.to_path_buf()]) {
            std::os::unix::fs::lchown(path, Some(7), Some(8)).unwrap();
            let mode = if path.is_dir() { 0o755 } else { 0o600 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
            set_mtime(path, 1_700_000_000);
        }
        let (layer, bytes) = write_layer(r, &opts(Compression::None), Vec::new()).unwrap();
        (dir, layer, bytes)
    };
    let (_a, overlay, overlay_bytes) = build(false);
    let (b, oci, oci_bytes) = build(true);
    assert_eq!(
        names(&summaries(b.path())),
        [
            ".wh.top-gone",
            "etc/",
            "etc/.wh.a-gone",
            "etc/.wh.gone",
            "etc/.wh.zzz",
            "etc/-first",
            "etc/keep",
            "etc/zz",
            "opq/",
            "opq/.wh..wh..opq",
            "opq/new",
            "opq/sub/",
            "opq/sub/.wh..wh..opq",
        ]
    );
    assert!(overlay_bytes == oci_bytes, "byte-identical layers");
    assert_eq!(overlay.diff_id, oci.diff_id);
}
