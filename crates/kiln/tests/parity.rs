//! Same recipe, same image as BuildKit (issue 12): each case builds one context with kiln and
//! with docker's BuildKit (`DOCKER_BUILDKIT=1 docker build --network none`, against the dockerd
//! scripts/test.sh starts), from the same busybox base, and compares the flattened trees and the
//! config fields (see tests/common/parity.rs for what is compared).
//!
//! Differences that come from docker 20.10's BuildKit being older than current BuildKit are
//! listed in each case with the reason. Cases for behaviours kiln does not match yet are
//! `#[ignore = "issue 12: ..."]`: whoever implements one removes the attribute.
//!
//! Without a docker daemon the cases print "skipped: ..." (a failure under KILN_REQUIRE_ALL=1).

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::context;
use common::parity::{assert_same_image, compare, flatten_blobs, write_files, Flat, Known, Pair};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

/// Docker 20.10's BuildKit leaves in a RUN's layer the empty mount points runc made for the
/// container's /dev, /proc and /sys when the base lacks them (kiln's busybox base does); current
/// BuildKit removes every such stub of the container's spec after the run
/// (`MountStubsCleanerForSpec`), as kiln never makes them.
const RUN_STUBS: &[Known] = &[
    Known::at(
        "/dev",
        "docker 20.10's BuildKit keeps runc's mount-point stub",
    ),
    Known::at(
        "/proc",
        "docker 20.10's BuildKit keeps runc's mount-point stub",
    ),
    Known::at(
        "/sys",
        "docker 20.10's BuildKit keeps runc's mount-point stub",
    ),
];

/// A tar (plain, or gzip when `gzip`) of `entries`: (path, kind, mode, uid, gid, content or
/// link target), kind one of "dir", "file", "symlink", "hardlink".
fn tar_of(entries: &[(&str, &str, u32, u64, u64, &str)], gzip: bool) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, mode, uid, gid, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mode(*mode);
        header.set_uid(*uid);
        header.set_gid(*gid);
        header.set_mtime(1_700_000_000);
        match *kind {
            "dir" => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .unwrap();
            }
            "file" => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, data.as_bytes())
                    .unwrap();
            }
            "symlink" | "hardlink" => {
                header.set_entry_type(if *kind == "symlink" {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                header.set_size(0);
                builder.append_link(&mut header, path, data).unwrap();
            }
            other => panic!("unknown kind {other}"),
        }
    }
    let plain = builder.into_inner().unwrap();
    if !gzip {
        return plain;
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &plain).unwrap();
    encoder.finish().unwrap()
}

// The harness itself: flattening and comparing must catch what they are for.

#[test]
fn flattening_applies_whiteouts_opaque_dirs_and_keeps_hard_link_groups() {
    let lower = tar_of(
        &[
            ("d", "dir", 0o755, 0, 0, ""),
            ("d/a", "file", 0o644, 0, 0, "a"),
            ("d/b", "file", 0o644, 0, 0, "b"),
            ("o", "dir", 0o755, 0, 0, ""),
            ("o/old", "file", 0o644, 0, 0, "old"),
            ("top", "file", 0o600, 1, 2, "top"),
            ("h", "file", 0o4755, 0, 0, "same"),
            ("h2", "hardlink", 0o4755, 0, 0, "h"),
            ("s", "symlink", 0o777, 0, 0, "d/b"),
        ],
        true,
    );
    let upper = tar_of(
        &[
            ("d/.wh.a", "file", 0o644, 0, 0, ""),
            ("d/b", "file", 0o640, 0, 0, "new b"),
            ("o", "dir", 0o700, 0, 0, ""),
            ("o/.wh..wh..opq", "file", 0o644, 0, 0, ""),
            ("o/new", "file", 0o644, 0, 0, "new"),
            (".wh.top", "file", 0o644, 0, 0, ""),
        ],
        false,
    );
    let (tree, hard_links) = flatten_blobs(&[lower, upper]);
    let paths: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        ["/d", "/d/b", "/h", "/h2", "/o", "/o/new", "/s"],
        "{tree:#?}"
    );
    assert!(
        tree["/d/b"].starts_with("file 0640 0:0 size=5 "),
        "{tree:#?}"
    );
    assert_eq!(tree["/o"], "dir 0700 0:0");
    assert_eq!(tree["/h"], tree["/h2"]);
    assert!(tree["/h"].starts_with("file 4755 0:0 size=4 "), "{tree:#?}");
    assert_eq!(tree["/s"], "symlink 0777 0:0 -> d/b");
    assert_eq!(
        hard_links.into_iter().collect::<Vec<_>>(),
        ["/h = /h2".to_string()]
    );
}

fn flat(tree: &[(&str, &str)], config: &[(&str, &str)]) -> Flat {
    Flat {
        tree: tree
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        hard_links: BTreeSet::new(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[test]
fn comparing_fails_on_a_difference_and_on_a_known_one_that_did_not_happen() {
    let pair = Pair {
        kiln: flat(&[("/a", "file 0644 0:0")], &[("User", "\"bob\"")]),
        buildkit: flat(&[("/a", "file 0644 0:0")], &[("User", "\"bob\"")]),
        docker_version: "test".into(),
    };
    compare("same", &pair, &[]);
    let differs = Pair {
        kiln: flat(&[("/a", "file 0644 0:0")], &[]),
        buildkit: flat(&[("/a", "file 0644 1000:1000")], &[]),
        docker_version: "test".into(),
    };
    let failed = std::panic::catch_unwind(|| compare("differs", &differs, &[]));
    let message = *failed.unwrap_err().downcast::<String>().unwrap();
    assert!(
        message.contains("/a\n    kiln:     file 0644 0:0\n    buildkit: file 0644 1000:1000"),
        "{message}"
    );
    compare("listed", &differs, &[Known::at("/a", "test")]);
    let stale =
        std::panic::catch_unwind(|| compare("stale", &pair, &[Known::at("/gone*", "test")]));
    let message = *stale.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("did not happen"), "{message}");
}

// Behaviours that match BuildKit today.

#[test]
fn copy_with_chown_and_chmod() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\n\
         COPY --chown=1000:10 a.txt /srv/a.txt\n\
         COPY --chown=bob:wheel dir/ /srv/dir/\n\
         COPY --chmod=0640 b.txt /srv/b.txt\n\
         COPY --chown=2000:3000 --chmod=750 run.sh /usr/local/bin/\n\
         COPY --chown=root exec.sh /srv/\n\
         COPY a.txt b.txt /many/\n",
    )]);
    write_files(
        ctx.path(),
        &[
            ("a.txt", b"a\n", 0o644),
            ("b.txt", b"bb\n", 0o600),
            ("dir/x", b"x\n", 0o600),
            ("dir/sub/y", b"y\n", 0o755),
            ("run.sh", b"#!/bin/sh\necho run\n", 0o755),
            ("exec.sh", b"#!/bin/sh\n", 0o700),
        ],
    );
    assert_same_image("copy-chown-chmod", ctx.path(), &[]);
}

#[test]
fn multi_stage_copy_from() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test AS build\n\
         RUN mkdir -p /out/lib && echo one > /out/one && echo two > /out/lib/two \
         && chmod 0600 /out/one && ln -s one /out/link && chown -R 1000:1000 /out/lib \
         && chmod 4755 /out/lib/two\n\
         FROM busybox:test\n\
         COPY --from=build /out/ /app/\n\
         COPY --from=build --chown=10:10 /out/one /single\n",
    )]);
    assert_same_image("multi-stage", ctx.path(), &[]);
}

/// Found by this suite (not in issue 12's list): a directory copied to a destination that does
/// not exist yet. BuildKit (fsutil's copy, 20.10 and current alike) first makes the destination
/// with mode 0755 owned by the --chown user (root without one) and copies only the contents'
/// metadata; kiln gives the new destination the source directory's mode and owner.
#[test]
fn copy_of_a_directory_to_a_new_destination() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test AS build\n\
         RUN mkdir -p /out/lib && echo two > /out/lib/two && chown -R 1000:1000 /out/lib \
         && chmod 0700 /out/lib\n\
         FROM busybox:test\n\
         COPY --from=build /out/lib /lib2\n\
         COPY private /private\n\
         COPY --chown=10:10 private /private-chowned\n",
    )]);
    write_files(ctx.path(), &[("private/p", b"p\n", 0o600)]);
    fs::set_permissions(
        ctx.path().join("private"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    assert_same_image("copy-dir-new-destination", ctx.path(), &[]);
}

#[test]
fn config_fields_from_metadata_instructions() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\n\
         ENV A=1 B=\"two words\"\n\
         ENV PATH=/usr/local/bin:$PATH\n\
         LABEL org.example.x=\"y\" other=z\n\
         EXPOSE 8080 53/udp\n\
         VOLUME /data\n\
         STOPSIGNAL SIGTERM\n\
         USER bob\n\
         WORKDIR /etc\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
         CMD [\"echo hi\"]\n",
    )]);
    assert_same_image("config", ctx.path(), &[]);
}

#[test]
fn run_deletes_and_replaces_with_whiteouts() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\n\
         RUN mkdir -p /d/sub /d/keep /e && echo x > /d/sub/f && echo y > /top \
         && echo z > /d/keep/k && echo w > /e/w\n\
         RUN rm -rf /d/sub /top /bin/vi /e && mkdir /e && echo new > /e/n \
         && echo changed > /d/keep/k && chmod 0700 /d/keep\n",
    )]);
    assert_same_image("run-whiteouts", ctx.path(), RUN_STUBS);
}

#[test]
fn add_of_a_local_tar_plain_and_gzip() {
    let entries: &[(&str, &str, u32, u64, u64, &str)] = &[
        ("pkg", "dir", 0o755, 0, 0, ""),
        ("pkg/bin", "dir", 0o755, 0, 0, ""),
        ("pkg/bin/tool", "file", 0o755, 0, 0, "#!/bin/sh\n"),
        ("pkg/bin/suid", "file", 0o4755, 0, 0, "suid\n"),
        ("pkg/etc", "dir", 0o750, 1000, 1000, ""),
        ("pkg/etc/conf", "file", 0o640, 1000, 10, "k=v\n"),
        ("pkg/current", "symlink", 0o777, 0, 0, "bin/tool"),
    ];
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\nADD app.tar /opt/\nADD app.tar.gz /opt2/\n",
    )]);
    fs::write(ctx.path().join("app.tar"), tar_of(entries, false)).unwrap();
    fs::write(ctx.path().join("app.tar.gz"), tar_of(entries, true)).unwrap();
    assert_same_image("add-tar", ctx.path(), &[]);
}

// Issue 12: behaviours kiln does not match yet. Remove the attribute with the fix.

/// Issue 12 items 1 and 2, the "Must show" recipe: USER, then WORKDIR under a home that does
/// not exist, then an npm-style install into $HOME.
#[test]
fn user_workdir_and_an_install_into_home() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\n\
         USER bob\n\
         WORKDIR /home/bob/app\n\
         RUN echo '{}' > package.json && mkdir -p \"$HOME/.npm/_cacache\" \
         && echo data > \"$HOME/.npm/_cacache/index\" && mkdir node_modules \
         && echo mod > node_modules/m.js\n",
    )]);
    assert_same_image("user-workdir-home", ctx.path(), RUN_STUBS);
}

#[test]
fn workdir_makes_its_directory() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\nWORKDIR /made/by/workdir\nUSER bob\nWORKDIR /srv/bob\n",
    )]);
    assert_same_image("workdir", ctx.path(), &[]);
}

#[test]
fn home_comes_from_passwd() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\n\
         RUN mkdir -m 1777 /out && echo \"$HOME\" > /out/root\n\
         USER bob\n\
         RUN echo \"$HOME\" > /out/bob\n\
         RUN [\"/bin/sh\", \"-c\", \"echo $HOME > /out/bob-exec\"]\n\
         USER 4242\n\
         RUN echo \"$HOME\" > /out/no-entry\n\
         USER bob\n\
         ENV HOME=/custom\n\
         RUN echo \"$HOME\" > /out/env-wins\n",
    )]);
    assert_same_image("home", ctx.path(), RUN_STUBS);
}

#[test]
fn supplementary_groups_of_a_non_root_run() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\n\
         RUN mkdir -m 1777 /out && echo 'solo:x:1001:1001::/:/bin/sh' >> /etc/passwd\n\
         USER bob\n\
         RUN id > /out/bob\n\
         USER solo\n\
         RUN id > /out/solo\n",
    )]);
    assert_same_image("groups", ctx.path(), RUN_STUBS);
}

#[test]
fn chown_to_a_name_takes_its_primary_group() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\n\
         RUN echo 'app:x:1001:50::/home/app:/bin/sh' >> /etc/passwd \
         && echo 'staff:x:50:' >> /etc/group\n\
         COPY --chown=app f /copied\n\
         ADD --chown=app f /added\n\
         COPY --chown=1002 f /numeric\n",
    )]);
    write_files(ctx.path(), &[("f", b"f\n", 0o644)]);
    assert_same_image("chown-name", ctx.path(), RUN_STUBS);
}

#[test]
fn hard_links_in_the_context_stay_hard_links() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test\nCOPY . /ctx/\nCOPY a b /two/\n",
    )]);
    write_files(ctx.path(), &[("a", b"one inode\n", 0o644)]);
    fs::hard_link(ctx.path().join("a"), ctx.path().join("b")).unwrap();
    fs::create_dir(ctx.path().join("dir")).unwrap();
    fs::hard_link(ctx.path().join("a"), ctx.path().join("dir/c")).unwrap();
    // Docker 20.10's BuildKit keeps the links within one source (`.`) but not across the two
    // sources of `COPY a b /two/`, which issue 12 asks kiln to keep: if kiln does, this is the
    // one expected difference (fsutil's copier keeps its inode map per source, so check
    // current BuildKit before deciding which is right).
    assert_same_image(
        "hard-links",
        ctx.path(),
        &[Known::at(
            "hard links /two/a = /two/b",
            "docker 20.10's BuildKit copies each source of a COPY on its own",
        )],
    );
}

#[test]
fn chown_keeps_setuid_setgid_and_sticky_bits() {
    let entries: &[(&str, &str, u32, u64, u64, &str)] = &[
        ("bin", "dir", 0o755, 0, 0, ""),
        ("bin/suid", "file", 0o4755, 0, 0, "suid\n"),
        ("bin/sgid", "file", 0o2755, 0, 0, "sgid\n"),
        ("shared", "dir", 0o1777, 0, 0, ""),
        ("group-dir", "dir", 0o2775, 0, 0, ""),
    ];
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test AS stage\n\
         RUN mkdir -p /s && echo x > /s/suid && chmod 4755 /s/suid && mkdir -m 3777 /s/t\n\
         FROM busybox:test\n\
         ADD --chown=1000:1000 app.tar /opt/\n\
         COPY --from=stage --chown=1000:1000 /s/ /from-stage/\n",
    )]);
    fs::write(ctx.path().join("app.tar"), tar_of(entries, false)).unwrap();
    assert_same_image(
        "chown-setuid",
        ctx.path(),
        &[Known::owner(
            "/opt/*",
            "docker 20.10's BuildKit extracts an ADDed archive with the tar's owners and ignores \
             --chown there; current BuildKit applies --chown to every extracted entry, as kiln",
        )],
    );
}

#[test]
fn scratch_images_work_in_the_root() {
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY f /f\n")]);
    write_files(ctx.path(), &[("f", b"f\n", 0o644)]);
    assert_same_image("scratch-workdir", ctx.path(), &[]);
}

#[test]
fn a_known_owner_difference_does_not_hide_a_mode_difference() {
    let pair = Pair {
        kiln: flat(
            &[("/a", "file 0755 1:1 size=1"), ("/b", "dir 0755 1:1")],
            &[],
        ),
        buildkit: flat(
            &[("/a", "file 4755 0:0 size=1"), ("/b", "dir 0755 0:0")],
            &[],
        ),
        docker_version: "test".into(),
    };
    let known = [Known::owner("/*", "test")];
    let failed = std::panic::catch_unwind(|| compare("owner", &pair, &known));
    let message = *failed.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("  /a\n"), "{message}");
    assert!(!message.contains("  /b\n"), "{message}");
}

#[test]
fn a_mount_with_no_target_lands_in_the_working_directory() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test AS data\n\
         RUN mkdir /data && echo from-stage > /data/f\n\
         FROM busybox:test\n\
         WORKDIR /etc\n\
         RUN --mount=from=data,source=/data cat f > /copied\n\
         RUN --mount=from=data,source=/data,target=sub cat sub/f > /relative\n",
    )]);
    // runc makes a missing mount target as an empty directory and docker 20.10's BuildKit
    // keeps it in the layer, as it keeps /dev, /proc and /sys (current BuildKit removes them).
    let known = [
        RUN_STUBS,
        &[Known::at(
            "/etc/sub",
            "docker 20.10's BuildKit keeps runc's stub of a missing mount target",
        )][..],
    ]
    .concat();
    assert_same_image("mount-no-target", ctx.path(), &known);
}

#[test]
fn a_cache_mount_seeded_from_a_stage() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:test AS seed\n\
         RUN mkdir /seed && echo seeded > /seed/f\n\
         FROM busybox:test\n\
         RUN --mount=type=cache,from=seed,source=/seed,target=/cache cat /cache/f > /out\n",
    )]);
    let known = [
        RUN_STUBS,
        &[Known::at(
            "/cache",
            "docker 20.10's BuildKit keeps runc's stub of a missing mount target",
        )][..],
    ]
    .concat();
    assert_same_image("cache-from-stage", ctx.path(), &known);
}
