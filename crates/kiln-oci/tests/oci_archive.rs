#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;

use common::*;
use kiln_oci::{
    media_types, read_oci_archive, sha256_digest, to_canonical_json, write_oci_archive, Descriptor,
    Error, ImageName, Index, Manifest, MemoryBlobs, Platform, ReadOptions, WriteOptions,
};
use tar::EntryType;

fn write(t: &TestImage, mtime: u64) -> Vec<u8> {
    let mut out = Vec::new();
    write_oci_archive(&mut out, &t.image, &t.blobs, &WriteOptions { mtime }).unwrap();
    out
}

#[test]
fn oci_archive_entries_are_sorted_and_deterministic() {
    let t = hello_image();
    let bytes = write(&t, 0);
    let listed = list_tar(&bytes);
    let hex = |d: &kiln_oci::Digest| d.hex().to_owned();
    let mut blob_names = vec![
        format!("blobs/sha256/{}", hex(&t.image.manifest.digest)),
        format!("blobs/sha256/{}", hex(&t.manifest.config.digest)),
        format!("blobs/sha256/{}", hex(&t.manifest.layers[0].digest)),
    ];
    blob_names.sort();
    let mut expected = vec!["blobs/".to_string(), "blobs/sha256/".to_string()];
    expected.extend(blob_names);
    expected.extend([
        "index.json".into(),
        "manifest.json".into(),
        "oci-layout".into(),
    ]);
    let names: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, expected);
    for (path, kind, mode, uid, gid, mtime, _, _) in &listed {
        let want_mode = if path.ends_with('/') { 0o755 } else { 0o644 };
        let want_kind = if path.ends_with('/') {
            EntryType::Directory
        } else {
            EntryType::Regular
        };
        assert_eq!(
            (*kind, *mode, *uid, *gid, *mtime),
            (want_kind, want_mode, 0, 0, 0),
            "{path}"
        );
    }
    // Same input, same bytes; the mtime option is applied everywhere.
    assert_eq!(write(&t, 0), bytes);
    let later = write(&t, 1_700_000_000);
    assert!(list_tar(&later).iter().all(|e| e.5 == 1_700_000_000));
    assert_eq!(later.len(), bytes.len());
    assert_eq!(bytes.len() % 512, 0);
}

#[test]
fn oci_archive_documents() {
    let t = hello_image();
    let bytes = write(&t, 0);
    assert_eq!(
        tar_file(&bytes, "oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let m = &t.image.manifest;
    let index = String::from_utf8(tar_file(&bytes, "index.json")).unwrap();
    assert_eq!(
        index,
        format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"#,
                r#""mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"#,
                r#""annotations":{{"io.containerd.image.name":"docker.io/kiln-test/hello:1.0","org.opencontainers.image.ref.name":"1.0"}},"#,
                r#""platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
            ),
            m.digest, m.size
        )
    );
    let docker = String::from_utf8(tar_file(&bytes, "manifest.json")).unwrap();
    assert_eq!(
        docker,
        format!(
            r#"[{{"Config":"blobs/sha256/{}","RepoTags":["docker.io/kiln-test/hello:1.0"],"Layers":["blobs/sha256/{}"]}}]"#,
            t.manifest.config.digest.hex(),
            t.manifest.layers[0].digest.hex()
        )
    );
    assert_eq!(tar_file(&bytes, &m.digest.blob_path()), t.manifest_bytes);
    assert_eq!(
        tar_file(&bytes, &t.manifest.config.digest.blob_path()),
        t.config_bytes
    );
    assert_eq!(
        tar_file(&bytes, &t.manifest.layers[0].digest.blob_path()),
        t.layers[0].1
    );
}

#[test]
fn names_tags_and_ref_name_rules() {
    // Several names: one descriptor each; Hub names are short in RepoTags.
    let t = image_with(&[HELLO], &["alpine", "ghcr.io/o/app:v2", "alpine:latest"]);
    let bytes = write(&t, 0);
    let index: Index = serde_json::from_slice(&tar_file(&bytes, "index.json")).unwrap();
    let refs: Vec<(Option<&str>, &str)> = index
        .manifests
        .iter()
        .map(|d| {
            (
                d.ref_name(),
                d.annotations["io.containerd.image.name"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        vec![
            (Some("latest"), "docker.io/library/alpine:latest"),
            (Some("v2"), "ghcr.io/o/app:v2")
        ]
    );
    let docker: serde_json::Value =
        serde_json::from_slice(&tar_file(&bytes, "manifest.json")).unwrap();
    assert_eq!(
        docker[0]["RepoTags"],
        serde_json::json!(["docker.io/library/alpine:latest", "ghcr.io/o/app:v2"])
    );

    // No names: one bare descriptor, no RepoTags.
    let t = image_with(&[HELLO], &[]);
    let bytes = write(&t, 0);
    let index: Index = serde_json::from_slice(&tar_file(&bytes, "index.json")).unwrap();
    assert_eq!(index.manifests.len(), 1);
    assert!(index.manifests[0].annotations.is_empty());
    assert!(tar_file(&bytes, "manifest.json").starts_with(br#"[{"Config":"blobs/sha256/"#));

    // A digest-only name: the full name is recorded, there is no tag to be a ref.
    let mut t = image_with(&[HELLO], &[]);
    let pinned = ImageName::parse(&format!("repo@{}", sha256_digest(b"x"))).unwrap();
    t.image.names.push(pinned);
    let index: Index = serde_json::from_slice(&tar_file(&write(&t, 0), "index.json")).unwrap();
    assert_eq!(index.manifests[0].ref_name(), None);

    // A Docker tag that the OCI ref grammar refuses.
    let t = image_with(&[HELLO], &["app:v1_rc"]);
    assert!(write_oci_archive(Vec::new(), &t.image, &t.blobs, &WriteOptions::default()).is_ok());
    let t = image_with(&[HELLO], &["app:_v1"]);
    let err =
        write_oci_archive(Vec::new(), &t.image, &t.blobs, &WriteOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidReference { .. }), "{err}");
}

#[test]
fn oci_round_trip() {
    let t = image_with(&[HELLO, b"second layer\n"], &["kiln-test/hello:1.0"]);
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "img.tar", &write(&t, 0));
    let img = read_oci_archive(&path, &ReadOptions::default()).unwrap();
    assert_eq!(img.manifest, t.manifest);
    assert_eq!(img.manifest_bytes, t.manifest_bytes);
    assert_eq!(img.config, t.config);
    assert_eq!(img.config_bytes, t.config_bytes);
    assert_eq!(img.names, vec!["docker.io/kiln-test/hello:1.0".to_string()]);
    assert_eq!(img.manifest_descriptor.digest, t.image.manifest.digest);
    for (i, (_, gz)) in t.layers.iter().enumerate() {
        let mut got = Vec::new();
        img.open_layer(i).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(&got, gz);
    }
    img.verify_layers().unwrap();
    assert!(img.open_layer(2).is_err());

    // Writing the read image again gives the same bytes.
    let again = {
        let mut out = Vec::new();
        write_oci_archive(&mut out, &img.image_ref(), &img, &WriteOptions::default()).unwrap();
        out
    };
    assert_eq!(again, write(&t, 0));

    // Selection by tag, by full name, by familiar name.
    for name in [
        "1.0",
        "docker.io/kiln-test/hello:1.0",
        "kiln-test/hello:1.0",
    ] {
        let opts = ReadOptions {
            name: Some(name.into()),
            ..ReadOptions::default()
        };
        assert!(read_oci_archive(&path, &opts).is_ok(), "{name}");
    }
    let opts = ReadOptions {
        name: Some("2.0".into()),
        ..ReadOptions::default()
    };
    assert!(matches!(
        read_oci_archive(&path, &opts),
        Err(Error::InvalidArchive(_))
    ));
}

#[test]
fn writer_refuses_blobs_that_do_not_match() {
    let t = hello_image();
    let layer = t.manifest.layers[0].clone();

    // Same size, different content.
    let mut blobs = t.blobs.clone();
    let mut bad = t.layers[0].1.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    blobs.insert_unchecked(layer.digest.clone(), bad);
    let err =
        write_oci_archive(Vec::new(), &t.image, &blobs, &WriteOptions::default()).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");

    // Short and long.
    for len in [t.layers[0].1.len() - 1, t.layers[0].1.len() + 1] {
        let mut blobs = t.blobs.clone();
        let mut v = t.layers[0].1.clone();
        v.resize(len, 0);
        blobs.insert_unchecked(layer.digest.clone(), v);
        let err =
            write_oci_archive(Vec::new(), &t.image, &blobs, &WriteOptions::default()).unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    }

    // A tampered config is caught before anything is written.
    let mut blobs = t.blobs.clone();
    let mut cfg = t.config_bytes.clone();
    cfg[0] = b' ';
    blobs.insert_unchecked(t.manifest.config.digest.clone(), cfg);
    let mut out = Vec::new();
    let err = write_oci_archive(&mut out, &t.image, &blobs, &WriteOptions::default()).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(out.is_empty());

    // A missing blob.
    let mut blobs = MemoryBlobs::new();
    blobs.insert_unchecked(t.image.manifest.digest.clone(), t.manifest_bytes.clone());
    blobs.insert_unchecked(t.manifest.config.digest.clone(), t.config_bytes.clone());
    let err =
        write_oci_archive(Vec::new(), &t.image, &blobs, &WriteOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");

    // A manifest descriptor that is not a manifest.
    let mut image = t.image.clone();
    image.manifest.media_type = media_types::OCI_INDEX.into();
    let err =
        write_oci_archive(Vec::new(), &image, &t.blobs, &WriteOptions::default()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedMediaType(_)), "{err}");
}

fn tampered(
    t: &TestImage,
    edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let entries = rewrite(&write(t, 0), edit);
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "bad.tar", &craft_owned(&entries));
    (dir, path)
}

#[test]
fn reader_verifies_digests_and_sizes() {
    let t = hello_image();
    let layer_path = t.manifest.layers[0].digest.blob_path();
    let config_path = t.manifest.config.digest.blob_path();

    // A flipped byte in the layer: found when the layer is streamed.
    let (_d, path) = tampered(&t, |p, mut v| {
        if p == layer_path {
            let last = v.len() - 1;
            v[last] ^= 1;
        }
        Some(v)
    });
    let img = read_oci_archive(&path, &ReadOptions::default()).unwrap();
    let mut r = img.open_layer(0).unwrap();
    let err = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(matches!(
        img.verify_layers(),
        Err(Error::DigestMismatch { .. })
    ));

    // A layer of the wrong size: refused on reading the archive.
    let (_d, path) = tampered(&t, |p, mut v| {
        if p == layer_path {
            v.push(0);
        }
        Some(v)
    });
    assert!(matches!(
        read_oci_archive(&path, &ReadOptions::default()),
        Err(Error::SizeMismatch { .. })
    ));

    // A tampered config.
    let (_d, path) = tampered(&t, |p, mut v| {
        if p == config_path {
            v[1] = b'A';
        }
        Some(v)
    });
    assert!(matches!(
        read_oci_archive(&path, &ReadOptions::default()),
        Err(Error::DigestMismatch { .. })
    ));

    // A missing layer.
    let (_d, path) = tampered(&t, |p, v| (p != layer_path).then_some(v));
    assert!(matches!(
        read_oci_archive(&path, &ReadOptions::default()),
        Err(Error::MissingEntry(_))
    ));

    // An index.json pointing at a digest that is not in the archive.
    let (_d, path) = tampered(&t, |p, v| {
        if p == "index.json" {
            let s = String::from_utf8(v).unwrap();
            let other = sha256_digest(b"other").to_string();
            return Some(
                s.replace(&t.image.manifest.digest.to_string(), &other)
                    .into_bytes(),
            );
        }
        Some(v)
    });
    assert!(matches!(
        read_oci_archive(&path, &ReadOptions::default()),
        Err(Error::MissingEntry(_))
    ));

    // An invalid digest string in index.json.
    let (_d, path) = tampered(&t, |p, v| {
        if p == "index.json" {
            let s = String::from_utf8(v).unwrap();
            let hex = t.image.manifest.digest.hex().to_string();
            return Some(s.replace(&hex, "../../../../etc/passwd").into_bytes());
        }
        Some(v)
    });
    assert!(matches!(
        read_oci_archive(&path, &ReadOptions::default()),
        Err(Error::Json { .. })
    ));
}

#[test]
fn reader_refuses_unsafe_and_malformed_archives() {
    let t = hello_image();
    let good = rewrite(&write(&t, 0), |_, v| Some(v));
    let dir = tempfile::tempdir().unwrap();

    for evil in ["../x", "blobs/../../x", "/etc/passwd", "./../x"] {
        let mut entries = good.clone();
        entries.push((evil.to_string(), Some(b"boom".to_vec()), None));
        let path = write_file(dir.path(), "evil.tar", &craft_owned(&entries));
        let err = read_oci_archive(&path, &ReadOptions::default()).unwrap_err();
        assert!(matches!(err, Error::UnsafePath(_)), "{evil}: {err}");
    }

    // A blob that is a symlink out of the archive.
    let layer_path = t.manifest.layers[0].digest.blob_path();
    let mut entries: Vec<_> = good.iter().filter(|e| e.0 != layer_path).cloned().collect();
    entries.push((
        layer_path.clone(),
        None,
        Some("../../../../etc/passwd".into()),
    ));
    let path = write_file(dir.path(), "link.tar", &craft_owned(&entries));
    assert!(matches!(
        read_oci_archive(&path, &ReadOptions::default()),
        Err(Error::UnsafePath(_))
    ));

    // A symlink that stays inside is followed.
    let mut entries: Vec<_> = good.iter().filter(|e| e.0 != layer_path).cloned().collect();
    let data = t.layers[0].1.clone();
    entries.push(("elsewhere/layer".into(), Some(data), None));
    entries.push((
        layer_path.clone(),
        None,
        Some("../../elsewhere/layer".into()),
    ));
    let path = write_file(dir.path(), "inside.tar", &craft_owned(&entries));
    let img = read_oci_archive(&path, &ReadOptions::default()).unwrap();
    img.verify_layers().unwrap();

    // Duplicate entries are ambiguous.
    let mut entries = good.clone();
    entries.push(("index.json".into(), Some(b"{}".to_vec()), None));
    let path = write_file(dir.path(), "dup.tar", &craft_owned(&entries));
    assert!(matches!(
        read_oci_archive(&path, &ReadOptions::default()),
        Err(Error::InvalidArchive(_))
    ));

    // Compressed archives are named as such.
    let path = write_file(dir.path(), "img.tar.gz", &gzip_stored(&write(&t, 0)));
    let err = read_oci_archive(&path, &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("gzip-compressed"), "{err}");

    // No oci-layout.
    let entries: Vec<_> = good
        .iter()
        .filter(|e| e.0 != "oci-layout")
        .cloned()
        .collect();
    let path = write_file(dir.path(), "nolayout.tar", &craft_owned(&entries));
    assert!(matches!(
        read_oci_archive(&path, &ReadOptions::default()),
        Err(Error::InvalidArchive(_))
    ));

    // An oversized index.json is not read into memory.
    let mut entries: Vec<_> = good
        .iter()
        .filter(|e| e.0 != "index.json")
        .cloned()
        .collect();
    let mut huge = b"{\"schemaVersion\":2,\"manifests\":[]}".to_vec();
    huge.resize(17 << 20, b' ');
    entries.push(("index.json".into(), Some(huge), None));
    let path = write_file(dir.path(), "huge.tar", &craft_owned(&entries));
    assert!(matches!(
        read_oci_archive(&path, &ReadOptions::default()),
        Err(Error::TooLarge { .. })
    ));

    // Not JSON.
    let entries: Vec<_> = good
        .iter()
        .map(|e| {
            if e.0 == "index.json" {
                (e.0.clone(), Some(b"not json".to_vec()), None)
            } else {
                e.clone()
            }
        })
        .collect();
    let path = write_file(dir.path(), "garbage.tar", &craft_owned(&entries));
    assert!(matches!(
        read_oci_archive(&path, &ReadOptions::default()),
        Err(Error::Json { .. })
    ));
}

#[test]
fn multi_platform_index_and_several_images() {
    let amd = image_with(&[HELLO], &[]);
    let mut arm_blobs = amd.blobs.clone();
    let mut arm_cfg = amd.config.clone();
    arm_cfg.architecture = "arm64".into();
    arm_cfg.variant = Some("v8".into());
    let arm_cfg_desc = arm_blobs.add(
        media_types::OCI_CONFIG,
        to_canonical_json(&arm_cfg).unwrap(),
    );
    let arm_manifest = Manifest::new(arm_cfg_desc.clone(), amd.manifest.layers.clone());
    let arm_manifest_bytes = to_canonical_json(&arm_manifest).unwrap();
    let mut arm_desc = arm_blobs.add(media_types::OCI_MANIFEST, arm_manifest_bytes.clone());
    arm_desc.platform = Some(Platform {
        variant: Some("v8".into()),
        ..Platform::new("linux", "arm64")
    });
    let mut amd_desc = amd.image.manifest.clone();
    amd_desc.platform = Some(Platform::new("linux", "amd64"));
    let mut attestation = Descriptor::new(media_types::OCI_MANIFEST, sha256_digest(b"att"), 3);
    attestation.platform = Some(Platform::new("unknown", "unknown"));
    attestation.annotations.insert(
        "vnd.docker.reference.type".into(),
        "attestation-manifest".into(),
    );
    let inner = Index::new(vec![amd_desc, arm_desc, attestation]);
    let inner_bytes = to_canonical_json(&inner).unwrap();
    let mut inner_desc = Descriptor::new(
        media_types::OCI_INDEX,
        sha256_digest(&inner_bytes),
        inner_bytes.len() as u64,
    );
    inner_desc
        .annotations
        .insert("org.opencontainers.image.ref.name".into(), "multi".into());
    let mut single = amd.image.manifest.clone();
    single
        .annotations
        .insert("org.opencontainers.image.ref.name".into(), "single".into());
    let top = Index::new(vec![inner_desc, single]);

    let b = |d: &kiln_oci::Digest| d.blob_path();
    let entries = vec![
        (
            "oci-layout".to_string(),
            Some(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            None,
        ),
        (
            "index.json".into(),
            Some(to_canonical_json(&top).unwrap()),
            None,
        ),
        (
            b(&sha256_digest(&inner_bytes)),
            Some(inner_bytes.clone()),
            None,
        ),
        (
            b(&amd.image.manifest.digest),
            Some(amd.manifest_bytes.clone()),
            None,
        ),
        (
            b(&amd.manifest.config.digest),
            Some(amd.config_bytes.clone()),
            None,
        ),
        (
            b(&sha256_digest(&arm_manifest_bytes)),
            Some(arm_manifest_bytes),
            None,
        ),
        (
            b(&arm_cfg_desc.digest),
            Some(to_canonical_json(&arm_cfg).unwrap()),
            None,
        ),
        (
            b(&amd.manifest.layers[0].digest),
            Some(amd.layers[0].1.clone()),
            None,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "multi.tar", &craft_owned(&entries));

    let err = read_oci_archive(&path, &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("2 images"), "{err}");
    let by_name = |name: &str, platform: Option<Platform>| {
        read_oci_archive(
            &path,
            &ReadOptions {
                name: Some(name.into()),
                platform,
                ..ReadOptions::default()
            },
        )
    };
    assert_eq!(
        by_name("single", None).unwrap().config.architecture,
        "amd64"
    );
    let err = by_name("multi", None).unwrap_err();
    assert!(err.to_string().contains("2 platforms"), "{err}");
    let arm = by_name("multi", Some(Platform::new("linux", "arm64"))).unwrap();
    assert_eq!(arm.config.variant.as_deref(), Some("v8"));
    arm.verify_layers().unwrap();
    let amd64 = by_name("multi", Some(Platform::new("linux", "amd64"))).unwrap();
    assert_eq!(amd64.config, amd.config);
    assert!(by_name("multi", Some(Platform::new("linux", "s390x"))).is_err());
}

#[test]
fn mtime_must_fit_the_tar_header() {
    let t = hello_image();
    let opts = WriteOptions {
        mtime: 0o77777777777 + 1,
    };
    let mut out = Vec::new();
    let err = write_oci_archive(&mut out, &t.image, &t.blobs, &opts).unwrap_err();
    assert!(matches!(err, Error::InvalidImage(_)), "{err}");
    assert!(out.is_empty());
}
