//! Layer round trip, for comparing builds of kiln-layer (say, with and without
//! `overflow-checks`): writes a layer of a fixed tree (5,000 small files and 64 MiB in two
//! large ones, text-like content), gzip, one thread, then reads it back through the checked
//! reader (`visit_layer_limited`), and prints the median of each over the rounds.
//!
//! Run: `cargo bench -p kiln-layer --bench roundtrip` (KILN_BENCH_ROUNDS=… rounds, default 7).
//! Two builds compare by running their binaries in turn on the same machine.

// A benchmark fails by panicking, as a test does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io;
use std::time::{Duration, Instant};

use kiln_layer::{write_layer, Compression, LayerOptions, ReadLimits};

fn main() {
    let rounds: usize = std::env::var("KILN_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let tree = tempfile::tempdir().unwrap();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: [&[u8]; 8] = [
        b"layer ",
        b"image ",
        b"fn ",
        b"{\n",
        b"}\n",
        b"/usr/lib ",
        b"0x1f ",
        b"config ",
    ];
    let mut text = |len: usize| {
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            out.extend_from_slice(words[(next() % 8) as usize]);
        }
        out.truncate(len);
        out
    };
    for dir in 0..50 {
        let d = tree.path().join(format!("d{dir}"));
        fs::create_dir(&d).unwrap();
        for file in 0..100 {
            fs::write(d.join(format!("f{file}")), text(2000)).unwrap();
        }
    }
    for big in 0..2 {
        fs::write(tree.path().join(format!("big{big}")), text(32 << 20)).unwrap();
    }
    let options = LayerOptions {
        compression: Compression::Gzip { level: 6 },
        source_date_epoch: Some(0),
        threads: 1,
    };
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let (layer, blob) = write_layer(tree.path(), &options, Vec::new()).unwrap();
        writes.push(start.elapsed());
        let start = Instant::now();
        let mut entries = 0u64;
        let visited = kiln_layer::visit_layer_limited(
            &blob[..],
            layer.media_type,
            &ReadLimits::default(),
            |_, content| {
                entries += 1;
                io::copy(content, &mut io::sink()).map_err(kiln_layer::LayerError::Read)?;
                Ok(())
            },
        )
        .unwrap();
        reads.push(start.elapsed());
        assert_eq!(visited.diff_id, layer.diff_id);
        assert!(entries > 5000);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "roundtrip: {rounds} rounds, write median {:.3} s, read median {:.3} s",
        median(&mut writes).as_secs_f64(),
        median(&mut reads).as_secs_f64()
    );
}
