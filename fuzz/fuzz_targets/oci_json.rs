//! Fuzzes the OCI documents' JSON: any bytes parse as a manifest, an index and an image
//! config or are refused, and what parses writes back as canonical JSON that parses again to
//! the same document.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn round_trip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let Ok(value) = kiln_oci::from_json_slice::<T>(data) else {
        return;
    };
    let bytes = kiln_oci::to_canonical_json(&value).unwrap();
    let again: T = kiln_oci::from_json_slice(&bytes).unwrap();
    assert_eq!(
        kiln_oci::to_canonical_json(&again).unwrap(),
        bytes,
        "canonical JSON is stable"
    );
}

fuzz_target!(|data: &[u8]| {
    round_trip::<kiln_oci::Manifest>(data);
    round_trip::<kiln_oci::Index>(data);
    round_trip::<kiln_oci::ImageConfig>(data);
    if let Ok(config) = kiln_oci::from_json_slice::<kiln_oci::ImageConfig>(data) {
        if let Some(created) = config.created.as_deref() {
            let _ = kiln_oci::time::parse_rfc3339(created);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(seconds) = kiln_oci::time::parse_rfc3339(text) {
            let back = kiln_oci::time::format_rfc3339(seconds);
            assert_eq!(
                kiln_oci::time::parse_rfc3339(&back),
                Some(seconds),
                "{text:?}"
            );
        }
        let _ = kiln_oci::time::parse_http_date(text);
        let _ = kiln_oci::ImageName::parse_normalized(text);
        let _ = kiln_oci::Digest::parse(text);
    }
});
