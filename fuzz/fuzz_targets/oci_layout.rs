//! Fuzzes the OCI layout reader (`read_oci_layout_dir`) past its digest checks: the input is
//! split at `\n--\n` into index.json and blobs; in each part, `@N` becomes the digest of part N
//! and `#N` its size, so the fuzzer can write documents that point at each other.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn split(data: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(4).position(|w| w == b"\n--\n") {
        parts.push(rest[..at].to_vec());
        rest = &rest[at + 4..];
    }
    parts.push(rest.to_vec());
    parts.truncate(8);
    parts
}

fn substitute(part: &[u8], digests: &[Option<(String, usize)>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(part.len());
    let mut i = 0;
    while i < part.len() {
        let next = part.get(i + 1).copied().unwrap_or(0);
        let index = usize::from(next.wrapping_sub(b'0'));
        match (part[i], digests.get(index)) {
            (b'@', Some(Some((digest, _)))) => {
                out.extend_from_slice(digest.as_bytes());
                i += 2;
            }
            (b'#', Some(Some((_, size)))) => {
                out.extend_from_slice(size.to_string().as_bytes());
                i += 2;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let parts = split(data);
    // Last part first: each part may name the digests of the parts after it.
    let mut digests: Vec<Option<(String, usize)>> = vec![None; parts.len()];
    let mut resolved: Vec<Vec<u8>> = vec![Vec::new(); parts.len()];
    for i in (0..parts.len()).rev() {
        let bytes = substitute(&parts[i], &digests);
        digests[i] = Some((kiln_oci::sha256_digest(&bytes).to_string(), bytes.len()));
        resolved[i] = bytes;
    }
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let blobs = dir.path().join("blobs/sha256");
    if std::fs::create_dir_all(&blobs).is_err() {
        return;
    }
    let _ = std::fs::write(
        dir.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    let _ = std::fs::write(dir.path().join("index.json"), &resolved[0]);
    for (bytes, digest) in resolved.iter().zip(&digests).skip(1) {
        if let Some((digest, _)) = digest {
            let hex = digest.trim_start_matches("sha256:");
            let _ = std::fs::write(blobs.join(hex), bytes);
        }
    }
    for name in [None, Some("latest".to_string())] {
        let options = kiln_oci::ReadOptions {
            name,
            ..kiln_oci::ReadOptions::default()
        };
        if let Ok(image) = kiln_oci::read_oci_layout_dir(dir.path(), &options) {
            let _ = image.verify_layers();
            for i in 0..image.layers().len() {
                if let Ok(mut layer) = image.open_layer(i) {
                    let _ = std::io::copy(&mut layer, &mut std::io::sink());
                }
            }
        }
    }
});
