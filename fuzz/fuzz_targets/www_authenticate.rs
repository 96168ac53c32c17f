//! Fuzzes what a registry's auth says: the `WWW-Authenticate` parser and the token answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let count = kiln_registry::fuzzing::www_authenticate(text);
        assert!(count <= text.len(), "more challenges than bytes");
    }
    let _ = kiln_registry::fuzzing::token_response(data);
});
