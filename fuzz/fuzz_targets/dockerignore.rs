//! Fuzzes `.dockerignore`: the first line of the input is a path to test, the rest the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, rules) = text.split_once('\n').unwrap_or(("", text));
    let Ok(rules) = kiln_context::IgnoreRules::parse(rules) else {
        return;
    };
    let _ = rules.has_exceptions();
    for candidate in [path, "a/b/c", "Dockerfile", ".dockerignore", "x"] {
        let cleaned = kiln_context::clean(candidate);
        let _ = rules.is_excluded(&cleaned);
    }
});
