//! Fuzzes the archive readers: any bytes, as an OCI archive and as a docker archive, must be
//! read or refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    let options = kiln_oci::ReadOptions::default();
    if let Ok(image) = kiln_oci::read_oci_archive(file.path(), &options) {
        let _ = image.verify_layers();
    }
    if let Ok(image) = kiln_oci::read_docker_archive(file.path(), &options) {
        let _ = image.verify_layers();
    }
});
