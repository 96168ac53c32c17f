//! Fuzzes the base-layer unpacker (kiln-build `unpack_layer`): a hostile tar may fail, but
//! must never panic, and nothing may land outside the snapshot directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(top) = tempfile::tempdir() else {
        return;
    };
    let dest = top.path().join("snapshot");
    if std::fs::create_dir(&dest).is_err() {
        return;
    }
    let diff_id = kiln_oci::sha256_digest(data).to_string();
    let _ = kiln_build::unpack::unpack_layer(
        data,
        "application/vnd.oci.image.layer.v1.tar",
        &dest,
        &diff_id,
    );
    // The snapshot is the only thing in the top directory: nothing escaped next to it.
    let names: Vec<_> = std::fs::read_dir(top.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [std::ffi::OsString::from("snapshot")],
        "an entry escaped"
    );
});
