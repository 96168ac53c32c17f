//! SBOM cost on a buildpack-deps-sized Debian root (hundreds of packages), beside the peer
//! answer to the same question: `chroot ROOT dpkg-query -W`. Prints both and their ratio.
//!
//! `cargo bench -p kiln-sbom --bench scan` (debootstraps the root once under target/tmp).

#![allow(clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use kiln_sbom::{scan, spdx_document, DirImage, SbomOptions, Timestamp};

const RUNS: usize = 15;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let root = common::debian_root("debian-bookworm-buildpack", common::BUILDPACK_PACKAGES);
    let options = SbomOptions::new("buildpack-deps:bookworm", "kiln-bench", Timestamp(0));
    let mut kiln = Vec::new();
    let mut scans = Vec::new();
    let mut packages = 0;
    let mut bytes = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let inventory = scan(&DirImage::new(&root)).expect("scan");
        scans.push(start.elapsed());
        let document = spdx_document(&inventory, &options)
            .expect("document")
            .to_json()
            .expect("json");
        kiln.push(start.elapsed());
        packages = inventory.packages.len();
        bytes = document.len();
    }
    let scan_only = median(scans);
    let mut peer = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let output = Command::new("chroot")
            .arg(&root)
            .args(["dpkg-query", "-W"])
            .output()
            .expect("chroot dpkg-query");
        assert!(output.status.success());
        peer.push(start.elapsed());
    }
    let (kiln, peer) = (median(kiln), median(peer));
    println!(
        "sbom: {packages} packages, {bytes} bytes of SPDX JSON; median of {RUNS} runs: \
         kiln scan+SPDX {:.1} ms (scan alone {:.1} ms), dpkg-query -W {:.1} ms, \
         ratio kiln/dpkg-query {:.2}",
        kiln.as_secs_f64() * 1e3,
        scan_only.as_secs_f64() * 1e3,
        peer.as_secs_f64() * 1e3,
        kiln.as_secs_f64() / peer.as_secs_f64()
    );
}
