//! Archives written into a file take the blobs a source vouches for by copy_file_range: the
//! bytes are those of the streamed archive, and a vouched blob of the wrong length is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use kiln_oci::{
    write_docker_archive, write_docker_archive_file, write_oci_archive, write_oci_archive_file,
    BlobSource, Digest, WriteOptions,
};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::PathBuf;

/// The blobs of a test image as files of a directory, vouched for as a store's are.
struct Vouched {
    dir: tempfile::TempDir,
}

impl Vouched {
    fn of(t: &TestImage) -> Vouched {
        let dir = tempfile::tempdir().unwrap();
        let mut digests = vec![
            t.image.manifest.digest.clone(),
            t.manifest.config.digest.clone(),
        ];
        digests.extend(t.manifest.layers.iter().map(|l| l.digest.clone()));
        for digest in digests {
            let mut bytes = Vec::new();
            t.blobs
                .open(&digest)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            std::fs::write(dir.path().join(digest.hex()), bytes).unwrap();
        }
        Vouched { dir }
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.path().join(digest.hex())
    }
}

impl BlobSource for Vouched {
    fn open(&self, digest: &Digest) -> std::io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(File::open(self.path(digest))?))
    }

    fn open_verified(&self, digest: &Digest) -> Option<File> {
        File::open(self.path(digest)).ok()
    }
}

/// Reproducible incompressible bytes, several copy_file_range calls' worth at small sizes.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

fn read_back(mut file: File) -> Vec<u8> {
    file.rewind().unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    bytes
}

#[test]
fn a_file_output_is_byte_for_byte_the_streamed_archive() {
    let big = noise(3 << 20);
    let t = image_with(&[b"small", &big, b"odd length!"], &["app:1"]);
    let vouched = Vouched::of(&t);
    let opts = WriteOptions { mtime: 7 };
    let mut streamed = Vec::new();
    write_oci_archive(&mut streamed, &t.image, &t.blobs, &opts).unwrap();
    let file = tempfile::tempfile().unwrap();
    write_oci_archive_file(&file, &t.image, &vouched, &opts).unwrap();
    assert!(read_back(file) == streamed, "oci archives differ");

    let mut streamed = Vec::new();
    write_docker_archive(&mut streamed, &t.image, &t.blobs, &opts).unwrap();
    let file = tempfile::tempfile().unwrap();
    write_docker_archive_file(&file, &t.image, &vouched, &opts).unwrap();
    assert!(read_back(file) == streamed, "docker archives differ");
}

#[test]
fn an_append_only_output_falls_back_to_streaming() {
    let t = image_with(&[&noise(1 << 20)], &[]);
    let vouched = Vouched::of(&t);
    let mut streamed = Vec::new();
    write_oci_archive(&mut streamed, &t.image, &t.blobs, &WriteOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.tar");
    // copy_file_range refuses a file opened for appending.
    let file = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    write_oci_archive_file(&file, &t.image, &vouched, &WriteOptions::default()).unwrap();
    assert!(std::fs::read(&path).unwrap() == streamed);
}

#[test]
fn a_vouched_blob_of_the_wrong_length_is_refused() {
    let t = image_with(&[b"some layer content"], &[]);
    let vouched = Vouched::of(&t);
    let layer = &t.manifest.layers[0].digest;
    std::fs::write(vouched.path(layer), b"short").unwrap();
    let file = tempfile::tempfile().unwrap();
    let err =
        write_oci_archive_file(&file, &t.image, &vouched, &WriteOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("size") || err.to_string().contains("expected"),
        "{err}"
    );
}
