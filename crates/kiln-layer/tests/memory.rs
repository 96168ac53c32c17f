//! Peak memory of writing a layer does not grow with the layer: a 300 MB file goes through
//! the whole pipeline (tar, hashing, parallel gzip) with the process's peak RSS staying well
//! under 50 MB above where it started. Its own test binary, so no other test shares the process.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::fs::{self, File};
use std::io::Write;

use kiln_layer::{write_layer, Compression, HashingWriter, LayerOptions};

/// Peak resident set size so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn a_300_mb_layer_stays_under_50_mb_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 300 * 1024 * 1024;
    // Two files: one sparse (holes read as zeros), one with written, varied content.
    File::create(dir.path().join("sparse"))
        .unwrap()
        .set_len(size - 20 * 1024 * 1024)
        .unwrap();
    let mut f = File::create(dir.path().join("data")).unwrap();
    let mut block = vec![0u8; 1024 * 1024];
    let mut x: u32 = 1;
    for _ in 0..20 {
        for b in block.iter_mut() {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (x >> 27) as u8; // 32 symbols: compressible, not trivially
        }
        f.write_all(&block).unwrap();
    }
    drop(f);
    drop(block);

    let before = peak_rss();
    let sink = HashingWriter::new(std::io::sink());
    let options = LayerOptions {
        compression: Compression::Gzip { level: 1 },
        source_date_epoch: Some(0),
        threads: 2,
    };
    let (layer, sink) = write_layer(dir.path(), &options, sink).unwrap();
    let after = peak_rss();
    let (_, digest, len) = sink.finish().unwrap();
    assert_eq!(layer.digest, digest.to_string());
    assert_eq!(layer.size, len);
    assert!(layer.uncompressed_size > size);
    let grown = after.saturating_sub(before);
    eprintln!(
        "peak RSS {} MB before, {} MB after writing a {} MB layer (+{} MB)",
        before >> 20,
        after >> 20,
        layer.uncompressed_size >> 20,
        grown >> 20
    );
    assert!(grown < 50 * 1024 * 1024, "peak RSS grew by {grown} bytes");
}
