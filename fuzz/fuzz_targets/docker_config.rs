//! Fuzzes `config.json` reading (docker's credentials file) as a pull reads it. Credential
//! helpers are never found (PATH is emptied), so only the file's parsing runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static EMPTY_PATH: std::sync::Once = std::sync::Once::new();
    EMPTY_PATH.call_once(|| std::env::set_var("PATH", "/nonexistent-kiln-fuzz"));
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if std::fs::write(dir.path().join("config.json"), data).is_err() {
        return;
    }
    for host in [
        "docker.io",
        "registry.example:5000",
        "https://index.docker.io/v1/",
    ] {
        let _ = kiln_registry::fuzzing::docker_config(dir.path().to_path_buf(), host);
    }
});
