#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;

use common::*;
use kiln_oci::{
    chain_ids, media_types, read_docker_archive, read_oci_archive, sha256_digest,
    write_docker_archive, write_oci_archive, Error, ReadOptions, WriteOptions,
};
use tar::EntryType;

fn write(t: &TestImage) -> Vec<u8> {
    let mut out = Vec::new();
    write_docker_archive(&mut out, &t.image, &t.blobs, &WriteOptions::default()).unwrap();
    out
}

#[test]
fn docker_archive_layout() {
    let t = image_with(&[HELLO, b"two\n"], &["kiln-test/hello:1.0", "alpine"]);
    let bytes = write(&t);
    let chain = chain_ids(&t.config.rootfs.diff_ids);
    let (id0, id1) = (chain[0].hex().to_owned(), chain[1].hex().to_owned());
    let cfg = format!("{}.json", t.manifest.config.digest.hex());

    let listed = list_tar(&bytes);
    let mut expected: Vec<String> = vec![
        cfg.clone(),
        format!("{id0}/"),
        format!("{id0}/VERSION"),
        format!("{id0}/json"),
        format!("{id0}/layer.tar"),
        format!("{id1}/"),
        format!("{id1}/VERSION"),
        format!("{id1}/json"),
        format!("{id1}/layer.tar"),
        "manifest.json".into(),
        "repositories".into(),
    ];
    expected.sort();
    let names: Vec<String> = listed.iter().map(|e| e.0.clone()).collect();
    assert_eq!(names, expected);
    assert!(listed.iter().all(|e| e.3 == 0 && e.4 == 0 && e.5 == 0));
    assert!(listed
        .iter()
        .filter(|e| e.1 == EntryType::Directory)
        .all(|e| e.2 == 0o755));
    assert!(listed
        .iter()
        .filter(|e| e.1 == EntryType::Regular)
        .all(|e| e.2 == 0o644));

    assert_eq!(tar_file(&bytes, &cfg), t.config_bytes);
    assert_eq!(tar_file(&bytes, &format!("{id0}/VERSION")), b"1.0");
    assert_eq!(tar_file(&bytes, &format!("{id1}/layer.tar")), t.layers[1].1);
    assert_eq!(
        String::from_utf8(tar_file(&bytes, &format!("{id1}/json"))).unwrap(),
        format!(
            r#"{{"id":"{id1}","parent":"{id0}","created":"2024-01-01T00:00:00Z","os":"linux","architecture":"amd64"}}"#
        )
    );
    assert_eq!(
        String::from_utf8(tar_file(&bytes, "manifest.json")).unwrap(),
        format!(
            r#"[{{"Config":"{cfg}","RepoTags":["docker.io/kiln-test/hello:1.0","docker.io/library/alpine:latest"],"Layers":["{id0}/layer.tar","{id1}/layer.tar"]}}]"#
        )
    );
    assert_eq!(
        String::from_utf8(tar_file(&bytes, "repositories")).unwrap(),
        format!(r#"{{"alpine":{{"latest":"{id1}"}},"kiln-test/hello":{{"1.0":"{id1}"}}}}"#)
    );
    assert_eq!(write(&t), bytes);
}

#[test]
fn docker_round_trip_and_conversion() {
    let t = image_with(&[HELLO, b"two\n"], &["kiln-test/hello:1.0"]);
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "d.tar", &write(&t));
    let img = read_docker_archive(&path, &ReadOptions::default()).unwrap();
    assert_eq!(img.config, t.config);
    assert_eq!(img.config_bytes, t.config_bytes);
    assert_eq!(img.manifest.config.digest, t.manifest.config.digest);
    assert_eq!(
        img.manifest.media_type.as_deref(),
        Some(media_types::DOCKER_MANIFEST)
    );
    assert_eq!(img.manifest.config.media_type, media_types::DOCKER_CONFIG);
    assert_eq!(img.names, vec!["docker.io/kiln-test/hello:1.0".to_string()]);
    for (i, l) in img.layers().iter().enumerate() {
        assert_eq!(l.digest, t.manifest.layers[i].digest);
        assert_eq!(l.media_type, media_types::DOCKER_LAYER_TAR_GZIP);
        let mut got = Vec::new();
        img.open_layer(i).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, t.layers[i].1);
    }
    assert_eq!(
        sha256_digest(&img.manifest_bytes),
        img.manifest_descriptor.digest
    );

    // docker → OCI → read back: same config and layers.
    let mut oci = Vec::new();
    write_oci_archive(&mut oci, &img.image_ref(), &img, &WriteOptions::default()).unwrap();
    let oci_path = write_file(dir.path(), "o.tar", &oci);
    let back = read_oci_archive(&oci_path, &ReadOptions::default()).unwrap();
    assert_eq!(back.config_bytes, t.config_bytes);
    assert_eq!(back.layers(), img.layers());
    assert_eq!(
        back.names,
        vec!["docker.io/kiln-test/hello:1.0".to_string()]
    );
    back.verify_layers().unwrap();

    // OCI archive (with its manifest.json) read as a docker archive, as docker ≥ 25 would.
    let t_oci = {
        let mut out = Vec::new();
        write_oci_archive(&mut out, &t.image, &t.blobs, &WriteOptions::default()).unwrap();
        write_file(dir.path(), "t.oci.tar", &out)
    };
    let as_docker = read_docker_archive(&t_oci, &ReadOptions::default()).unwrap();
    assert_eq!(as_docker.config, t.config);
    assert_eq!(as_docker.layers()[1].digest, t.manifest.layers[1].digest);
    as_docker.verify_layers().unwrap();
}

#[test]
fn duplicate_layers_become_symlinks() {
    let t = image_with(&[HELLO, HELLO], &["dup:1"]);
    let bytes = write(&t);
    let chain = chain_ids(&t.config.rootfs.diff_ids);
    let listed = list_tar(&bytes);
    let link = listed
        .iter()
        .find(|e| e.0 == format!("{}/layer.tar", chain[1].hex()))
        .unwrap();
    assert_eq!(link.1, EntryType::Symlink);
    assert_eq!(
        link.7.as_deref(),
        Some(format!("../{}/layer.tar", chain[0].hex()).as_str())
    );

    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "dup.tar", &bytes);
    let img = read_docker_archive(&path, &ReadOptions::default()).unwrap();
    assert_eq!(img.layers().len(), 2);
    assert_eq!(img.layers()[0], img.layers()[1]);
    img.verify_layers().unwrap();
}

#[test]
fn uncompressed_layers_are_checked_against_diff_ids() {
    let t = hello_image();
    let cfg = format!("{}.json", t.manifest.config.digest.hex());
    let manifest = format!(r#"[{{"Config":"{cfg}","RepoTags":["x:1"],"Layers":["l/layer.tar"]}}]"#);
    let dir = tempfile::tempdir().unwrap();

    let good = craft(&[
        Craft::File(&cfg, t.config_bytes.clone()),
        Craft::File("l/layer.tar", t.layers[0].0.clone()),
        Craft::File("manifest.json", manifest.clone().into_bytes()),
    ]);
    let path = write_file(dir.path(), "plain.tar", &good);
    let img = read_docker_archive(&path, &ReadOptions::default()).unwrap();
    assert_eq!(img.layers()[0].media_type, media_types::DOCKER_LAYER_TAR);
    assert_eq!(img.layers()[0].digest, t.config.rootfs.diff_ids[0]);

    let mut other = t.layers[0].0.clone();
    other[600] ^= 1;
    let bad = craft(&[
        Craft::File(&cfg, t.config_bytes.clone()),
        Craft::File("l/layer.tar", other),
        Craft::File("manifest.json", manifest.into_bytes()),
    ]);
    let path = write_file(dir.path(), "bad.tar", &bad);
    assert!(matches!(
        read_docker_archive(&path, &ReadOptions::default()),
        Err(Error::DigestMismatch { .. })
    ));
}

#[test]
fn docker_reader_refuses_hostile_archives() {
    let t = hello_image();
    let cfg = format!("{}.json", t.manifest.config.digest.hex());
    let dir = tempfile::tempdir().unwrap();
    let case = |name: &str, entries: &[Craft<'_>]| {
        let path = write_file(dir.path(), name, &craft(entries));
        read_docker_archive(&path, &ReadOptions::default())
    };
    let manifest = |config: &str, layer: &str| {
        format!(r#"[{{"Config":"{config}","RepoTags":null,"Layers":["{layer}"]}}]"#).into_bytes()
    };

    // Traversal in manifest.json's paths.
    let err = case(
        "m1.tar",
        &[Craft::File(
            "manifest.json",
            manifest("../../etc/passwd", "l/layer.tar"),
        )],
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnsafePath(_)), "{err}");
    let err = case(
        "m2.tar",
        &[
            Craft::File(&cfg, t.config_bytes.clone()),
            Craft::File("manifest.json", manifest(&cfg, "/etc/shadow")),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnsafePath(_)), "{err}");

    // Traversal in an entry name.
    let err = case(
        "e.tar",
        &[
            Craft::File("../evil", b"x".to_vec()),
            Craft::File("manifest.json", manifest(&cfg, "l/layer.tar")),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnsafePath(_)), "{err}");

    // A layer symlink that leaves the archive.
    let err = case(
        "s.tar",
        &[
            Craft::File(&cfg, t.config_bytes.clone()),
            Craft::Symlink("l/layer.tar", "../../../etc/passwd"),
            Craft::File("manifest.json", manifest(&cfg, "l/layer.tar")),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnsafePath(_)), "{err}");

    // A config whose content is not the digest its name claims.
    let mut cfg_bytes = t.config_bytes.clone();
    cfg_bytes.push(b' ');
    let err = case(
        "c.tar",
        &[
            Craft::File(&cfg, cfg_bytes),
            Craft::File("l/layer.tar", t.layers[0].1.clone()),
            Craft::File("manifest.json", manifest(&cfg, "l/layer.tar")),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");

    // Layer count disagreeing with the config.
    let two = format!(r#"[{{"Config":"{cfg}","Layers":["l/layer.tar","l/layer.tar"]}}]"#);
    let err = case(
        "n.tar",
        &[
            Craft::File(&cfg, t.config_bytes.clone()),
            Craft::File("l/layer.tar", t.layers[0].1.clone()),
            Craft::File("manifest.json", two.into_bytes()),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidImage(_)), "{err}");

    // A directory where a file should be; a missing file; no manifest.json.
    let err = case(
        "d.tar",
        &[
            Craft::File(&cfg, t.config_bytes.clone()),
            Craft::Dir("l/layer.tar/"),
            Craft::File("manifest.json", manifest(&cfg, "l/layer.tar")),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArchive(_)), "{err}");
    let err = case(
        "x.tar",
        &[
            Craft::File(&cfg, t.config_bytes.clone()),
            Craft::File("manifest.json", manifest(&cfg, "l/layer.tar")),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, Error::MissingEntry(_)), "{err}");
    let err = case("none.tar", &[Craft::File(&cfg, t.config_bytes.clone())]).unwrap_err();
    assert!(matches!(err, Error::InvalidArchive(_)), "{err}");

    // Symlink loops end.
    let err = case(
        "loop.tar",
        &[
            Craft::File(&cfg, t.config_bytes.clone()),
            Craft::Symlink("a/layer.tar", "../b/layer.tar"),
            Craft::Symlink("b/layer.tar", "../a/layer.tar"),
            Craft::File("manifest.json", manifest(&cfg, "a/layer.tar")),
        ],
    )
    .unwrap_err();
    assert!(err.to_string().contains("too many levels"), "{err}");
}

#[test]
fn picking_an_image_by_tag() {
    let a = image_with(&[HELLO], &["a:1"]);
    let b = image_with(&[b"bee\n"], &["b:2"]);
    let cfg = |t: &TestImage| format!("{}.json", t.manifest.config.digest.hex());
    let manifest = format!(
        r#"[{{"Config":"{}","RepoTags":["a:1"],"Layers":["a/layer.tar"]}},{{"Config":"{}","RepoTags":["docker.io/library/b:2"],"Layers":["b/layer.tar"]}}]"#,
        cfg(&a),
        cfg(&b)
    );
    let bytes = craft(&[
        Craft::File(&cfg(&a), a.config_bytes.clone()),
        Craft::File(&cfg(&b), b.config_bytes.clone()),
        Craft::File("a/layer.tar", a.layers[0].1.clone()),
        Craft::File("b/layer.tar", b.layers[0].1.clone()),
        Craft::File("manifest.json", manifest.into_bytes()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "two.tar", &bytes);
    assert!(read_docker_archive(&path, &ReadOptions::default()).is_err());
    let pick = |n: &str| {
        read_docker_archive(
            &path,
            &ReadOptions {
                name: Some(n.into()),
                ..ReadOptions::default()
            },
        )
    };
    assert_eq!(pick("a:1").unwrap().config, a.config);
    assert_eq!(pick("b:2").unwrap().config, b.config);
    assert_eq!(pick("docker.io/library/a:1").unwrap().config, a.config);
    assert!(pick("c:3").is_err());
}
