//! Fuzzes the layer reader (kiln-layer `visit_layer`): any bytes, as a plain, gzip or zstd
//! layer (the first byte picks), must give entries or an error, never a panic, and every
//! entry must be within the bounds the reader promises.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, blob)) = data.split_first() else {
        return;
    };
    let media_type = match pick % 3 {
        0 => "application/vnd.oci.image.layer.v1.tar",
        1 => "application/vnd.oci.image.layer.v1.tar+gzip",
        _ => "application/vnd.oci.image.layer.v1.tar+zstd",
    };
    let limits = kiln_layer::ReadLimits {
        max_bytes: 64 << 20,
        ..kiln_layer::ReadLimits::default()
    };
    let _ = kiln_layer::visit_layer_limited(blob, media_type, &limits, |entry, content| {
        assert!(entry.path.len() <= limits.max_path, "path over the bound");
        assert!(entry.size <= limits.max_bytes, "size over the bound");
        let mut sink = [0u8; 4096];
        let _ = std::io::Read::read(content, &mut sink);
        Ok(())
    });
});
