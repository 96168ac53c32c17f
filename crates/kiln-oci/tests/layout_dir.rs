#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::path::Path;

use common::*;
use kiln_oci::{
    read_oci_archive, read_oci_layout_dir, write_oci_archive, write_oci_layout_dir, Error, Index,
    LayoutBlobs, ReadOptions, WriteOptions,
};

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn layout_dir_has_the_archive_content() {
    let t = hello_image();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("layout");
    write_oci_layout_dir(&root, &t.image, &t.blobs).unwrap();

    let mut expected = vec![
        t.image.manifest.digest.blob_path(),
        t.manifest.config.digest.blob_path(),
        t.manifest.layers[0].digest.blob_path(),
        "index.json".into(),
        "oci-layout".into(),
    ];
    expected.sort();
    assert_eq!(files(&root), expected, "no temporary files left behind");
    assert_eq!(
        fs::read(root.join("oci-layout")).unwrap(),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );

    // index.json is byte-for-byte the archive's.
    let mut archive = Vec::new();
    write_oci_archive(&mut archive, &t.image, &t.blobs, &WriteOptions::default()).unwrap();
    assert_eq!(
        fs::read(root.join("index.json")).unwrap(),
        tar_file(&archive, "index.json")
    );

    // Idempotent.
    write_oci_layout_dir(&root, &t.image, &t.blobs).unwrap();
    assert_eq!(
        fs::read(root.join("index.json")).unwrap(),
        tar_file(&archive, "index.json")
    );
    assert_eq!(files(&root), expected);

    // The directory is a blob source: exporting from it gives the same archive.
    let mut again = Vec::new();
    write_oci_archive(
        &mut again,
        &t.image,
        &LayoutBlobs::new(&root),
        &WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(again, archive);
}

#[test]
fn layout_dir_keeps_other_images_and_replaces_same_names() {
    let a = image_with(&[HELLO], &["app:1"]);
    let b = image_with(&[b"version two\n"], &["app:2"]);
    let a2 = image_with(&[b"new one\n"], &["app:1"]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_oci_layout_dir(root, &a.image, &a.blobs).unwrap();
    write_oci_layout_dir(root, &b.image, &b.blobs).unwrap();
    let index: Index = serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    let refs: Vec<_> = index
        .manifests
        .iter()
        .map(|d| (d.ref_name().unwrap(), d.digest.clone()))
        .collect();
    assert_eq!(
        refs,
        vec![
            ("1", a.image.manifest.digest.clone()),
            ("2", b.image.manifest.digest.clone())
        ]
    );

    write_oci_layout_dir(root, &a2.image, &a2.blobs).unwrap();
    let index: Index = serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    let refs: Vec<_> = index
        .manifests
        .iter()
        .map(|d| (d.ref_name().unwrap(), d.digest.clone()))
        .collect();
    assert_eq!(
        refs,
        vec![
            ("2", b.image.manifest.digest.clone()),
            ("1", a2.image.manifest.digest.clone())
        ]
    );
}

#[test]
fn layout_dir_refuses_bad_blobs_and_leaves_nothing_half_written() {
    let t = hello_image();
    let mut blobs = t.blobs.clone();
    let mut bad = t.layers[0].1.clone();
    bad[20] ^= 0x55;
    blobs.insert_unchecked(t.manifest.layers[0].digest.clone(), bad);
    let dir = tempfile::tempdir().unwrap();
    let err = write_oci_layout_dir(dir.path(), &t.image, &blobs).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    let left = files(dir.path());
    assert!(
        !left
            .iter()
            .any(|f| f.contains(t.manifest.layers[0].digest.hex())),
        "{left:?}"
    );
    assert!(!left.iter().any(|f| f.contains(".tmp-")), "{left:?}");
    assert!(!dir.path().join("index.json").exists());

    // An existing oci-layout of another version is not overwritten.
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    assert!(matches!(
        write_oci_layout_dir(dir.path(), &t.image, &t.blobs),
        Err(Error::InvalidArchive(_))
    ));
}

#[test]
fn archive_of_a_layout_reads_back() {
    let t = hello_image();
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    write_oci_archive(
        &mut out,
        &t.image,
        &t.blobs,
        &WriteOptions { mtime: 86_400 },
    )
    .unwrap();
    let path = write_file(dir.path(), "a.tar", &out);
    let img = read_oci_archive(&path, &ReadOptions::default()).unwrap();
    let root = dir.path().join("from-archive");
    write_oci_layout_dir(&root, &img.image_ref(), &img).unwrap();
    assert_eq!(
        fs::read(root.join(t.manifest.layers[0].digest.blob_path())).unwrap(),
        t.layers[0].1
    );
}

#[test]
fn layout_dir_reads_back_as_the_archive_does() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("layout");
    let t = image_with(&[b"one", b"two"], &["kiln-test/app:1.0"]);
    write_oci_layout_dir(&root, &t.image, &t.blobs).unwrap();
    for name in [None, Some("1.0".to_string())] {
        let img = read_oci_layout_dir(
            &root,
            &ReadOptions {
                name,
                ..ReadOptions::default()
            },
        )
        .unwrap();
        assert_eq!(img.manifest_descriptor.digest, t.image.manifest.digest);
        assert_eq!(img.config, t.config);
        assert_eq!(img.path(), fs::canonicalize(&root).unwrap());
        img.verify_layers().unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut img.open_layer(1).unwrap(), &mut got).unwrap();
        assert_eq!(got, t.layers[1].1);
    }
    let missing = read_oci_layout_dir(
        &root,
        &ReadOptions {
            name: Some("2.0".into()),
            ..ReadOptions::default()
        },
    )
    .unwrap_err();
    assert!(missing.to_string().contains("\"2.0\""), "{missing}");

    // Two images, no name: refused, listing the refs.
    let other = image_with(&[b"three"], &["kiln-test/app:2.0"]);
    write_oci_layout_dir(&root, &other.image, &other.blobs).unwrap();
    let ambiguous = read_oci_layout_dir(&root, &ReadOptions::default()).unwrap_err();
    assert!(
        ambiguous.to_string().contains("refs: 1.0, 2.0"),
        "{ambiguous}"
    );
    assert!(read_oci_layout_dir(dir.path(), &ReadOptions::default())
        .unwrap_err()
        .to_string()
        .contains("no oci-layout"));
}

#[test]
fn layout_dir_blobs_are_verified_and_stay_inside() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("layout");
    let t = image_with(&[b"one"], &["kiln-test/app:1.0"]);
    write_oci_layout_dir(&root, &t.image, &t.blobs).unwrap();
    let layer = root.join(t.manifest.layers[0].digest.blob_path());
    let good = fs::read(&layer).unwrap();

    // Same size, other bytes: the layer reader fails at its end.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    fs::write(&layer, &bad).unwrap();
    let img = read_oci_layout_dir(&root, &ReadOptions::default()).unwrap();
    assert!(matches!(
        img.verify_layers(),
        Err(Error::Io { .. } | Error::DigestMismatch { .. })
    ));

    // Another size is refused when the layout is read.
    fs::write(&layer, &good[1..]).unwrap();
    assert!(matches!(
        read_oci_layout_dir(&root, &ReadOptions::default()),
        Err(Error::SizeMismatch { .. })
    ));

    // A blob that links out of the layout is not followed.
    let outside = dir.path().join("outside");
    fs::write(&outside, &good).unwrap();
    fs::remove_file(&layer).unwrap();
    std::os::unix::fs::symlink(&outside, &layer).unwrap();
    assert!(matches!(
        read_oci_layout_dir(&root, &ReadOptions::default()),
        Err(Error::UnsafePath(_))
    ));
    // A link inside it is.
    let inside = root.join("inside");
    fs::write(&inside, &good).unwrap();
    fs::remove_file(&layer).unwrap();
    std::os::unix::fs::symlink("../../inside", &layer).unwrap();
    read_oci_layout_dir(&root, &ReadOptions::default())
        .unwrap()
        .verify_layers()
        .unwrap();

    // The config is checked against its digest.
    let config = root.join(t.manifest.config.digest.blob_path());
    let mut bytes = fs::read(&config).unwrap();
    bytes[0] = b' ';
    fs::write(&config, bytes).unwrap();
    assert!(matches!(
        read_oci_layout_dir(&root, &ReadOptions::default()),
        Err(Error::DigestMismatch { .. } | Error::Io { .. })
    ));
}
