//! Prints the SPDX document of an unpacked image root:
//! `cargo run -p kiln-sbom --example sbom -- ROOT [NAME] > sbom.spdx.json`.
//! `created` is `SOURCE_DATE_EPOCH` when set, else now. Warnings go to stderr.

use std::io::Write;
use std::process::ExitCode;

use kiln_sbom::{scan, spdx_document, DirImage, SbomOptions, Timestamp};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next() else {
        eprintln!("usage: sbom ROOT [NAME]");
        return ExitCode::from(2);
    };
    let name = args.next().unwrap_or_else(|| root.clone());
    let created = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|value| Timestamp::from_source_date_epoch(&value))
        .unwrap_or_else(Timestamp::now);
    let result = scan(&DirImage::new(&root)).and_then(|inventory| {
        for warning in &inventory.warnings {
            eprintln!("warning: {warning}");
        }
        let options =
            SbomOptions::new(name, format!("kiln-{}", env!("CARGO_PKG_VERSION")), created);
        spdx_document(&inventory, &options)?.to_json()
    });
    match result {
        Ok(bytes) => {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(&bytes)
                .and_then(|()| out.write_all(b"\n"))
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
