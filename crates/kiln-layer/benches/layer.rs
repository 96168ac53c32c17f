//! Layer-writing benchmark: kiln's one-pass `write_layer` against the shell pipeline doing the
//! same job (`tar | gzip | sha256sum`, and pigz/zstd when installed), measured in the same run on
//! the same tree.
//!
//! Tree: 20,000 small files in 200 directories plus 300 MB in 4 large files, seeded
//! pseudo-random content (text-like and so compressible, with some incompressible stretches).
//!
//! Run: `cargo bench -p kiln-layer --bench layer` (KILN_BENCH_LARGE_MB=… to resize the large part).

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_layer::{write_layer, Compression, Layer, LayerOptions};

/// xorshift64: fast, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

const WORDS: &[&[u8]] = &[
    b"the ",
    b"layer ",
    b"image ",
    b"build ",
    b"kiln ",
    b"return ",
    b"fn ",
    b"let ",
    b"0x1f ",
    b"config ",
    b"{\n",
    b"}\n",
    b"    ",
    b"if ",
    b"else ",
    b"error ",
    b"path ",
    b"/usr/lib/ ",
    b"x86_64 ",
    b"static ",
    b"const ",
    b"struct ",
    b"import ",
    b"data ",
    b"= ",
    b"; ",
    b"\n",
    b"#include ",
    b"<stdio.h> ",
    b"printf(",
    b"); ",
    b"null ",
];

/// Appends `n` bytes of text-like content, with a random (incompressible) stretch now and then.
fn fill(rng: &mut Rng, out: &mut Vec<u8>, n: usize) {
    let end = out.len() + n;
    while out.len() < end {
        let r = rng.next();
        if r.is_multiple_of(1999) {
            for _ in 0..64 {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            out.extend_from_slice(WORDS[(r >> 32) as usize % WORDS.len()]);
            if r.is_multiple_of(7) {
                out.extend_from_slice(format!("{} ", r % 100_000).as_bytes());
            }
        }
    }
    out.truncate(end);
}

fn make_tree(root: &Path, large_mb: usize) -> io::Result<u64> {
    let mut rng = Rng(0x6b69_6c6e_6c61_7972);
    let mut total = 0u64;
    let mut buf = Vec::new();
    for d in 0..200 {
        let dir = root.join(format!("pkg{:03}/lib{}", d, d % 7));
        fs::create_dir_all(&dir)?;
        for f in 0..100 {
            buf.clear();
            let size = 100 + (rng.next() % 8000) as usize;
            fill(&mut rng, &mut buf, size);
            fs::write(dir.join(format!("file{f:03}.txt")), &buf)?;
            total += size as u64;
        }
    }
    let large = large_mb * 1024 * 1024;
    for i in 0..4 {
        let mut f = io::BufWriter::new(fs::File::create(root.join(format!("big{i}.bin")))?);
        let mut left = large / 4;
        while left > 0 {
            buf.clear();
            let n = left.min(4 * 1024 * 1024);
            fill(&mut rng, &mut buf, n);
            f.write_all(&buf)?;
            left -= n;
        }
        f.flush()?;
        total += (large / 4) as u64;
    }
    Ok(total)
}

fn time_kiln(root: &Path, compression: Compression) -> (Duration, Layer) {
    let options = LayerOptions {
        compression,
        source_date_epoch: Some(0),
        threads: 0,
    };
    let start = Instant::now();
    let layer = match write_layer(root, &options, io::sink()) {
        Ok((layer, _)) => layer,
        Err(e) => {
            eprintln!("write_layer failed: {e}");
            std::process::exit(1);
        }
    };
    (start.elapsed(), layer)
}

fn time_shell(root: &Path, pipeline: &str) -> Option<Duration> {
    let script = format!("tar -cf - -C \"$1\" . | {pipeline} | sha256sum >/dev/null");
    let start = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg("sh")
        .arg(root)
        .stdout(Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| start.elapsed())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let large_mb = std::env::var("KILN_BENCH_LARGE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tempdir: {e}");
            std::process::exit(1);
        }
    };
    let root = dir.path().join("tree");
    let t = Instant::now();
    let content = match make_tree(&root, large_mb) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("making the tree: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "tree: 20000 small files + {large_mb} MB in 4 large files, {:.0} MB of content (made in {:.1}s); {} cores",
        content as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // Warm the page cache so both sides read from memory.
    let _ = time_shell(&root, "cat");

    let (kiln_gz, layer) = time_kiln(&root, Compression::Gzip { level: 6 });
    let tar_bytes = layer.uncompressed_size;
    println!(
        "{:<44} {:>7.2}s {:>8.1} MB/s  ratio {:.3}",
        "kiln write_layer (gzip -6, parallel)",
        kiln_gz.as_secs_f64(),
        mbps(tar_bytes, kiln_gz),
        layer.size as f64 / tar_bytes as f64
    );
    let shell_gz = time_shell(&root, "gzip -6");
    if let Some(d) = shell_gz {
        println!(
            "{:<44} {:>7.2}s {:>8.1} MB/s",
            "tar | gzip -6 | sha256sum",
            d.as_secs_f64(),
            mbps(tar_bytes, d)
        );
        println!(
            "  kiln/shell speed: {:.2}x",
            d.as_secs_f64() / kiln_gz.as_secs_f64()
        );
    }
    if have("pigz") {
        if let Some(d) = time_shell(&root, "pigz -6") {
            println!(
                "{:<44} {:>7.2}s {:>8.1} MB/s",
                "tar | pigz -6 | sha256sum",
                d.as_secs_f64(),
                mbps(tar_bytes, d)
            );
            println!(
                "  kiln/pigz speed: {:.2}x",
                d.as_secs_f64() / kiln_gz.as_secs_f64()
            );
        }
    }

    let (kiln_zst, zl) = time_kiln(&root, Compression::Zstd { level: 3 });
    println!(
        "{:<44} {:>7.2}s {:>8.1} MB/s  ratio {:.3}",
        "kiln write_layer (zstd -3, multithreaded)",
        kiln_zst.as_secs_f64(),
        mbps(tar_bytes, kiln_zst),
        zl.size as f64 / tar_bytes as f64
    );
    if have("zstd") {
        if let Some(d) = time_shell(&root, "zstd -3 -T0 -q -c") {
            println!(
                "{:<44} {:>7.2}s {:>8.1} MB/s",
                "tar | zstd -3 -T0 | sha256sum",
                d.as_secs_f64(),
                mbps(tar_bytes, d)
            );
            println!(
                "  kiln/shell speed: {:.2}x",
                d.as_secs_f64() / kiln_zst.as_secs_f64()
            );
        }
    }

    let (kiln_tar, _) = time_kiln(&root, Compression::None);
    println!(
        "{:<44} {:>7.2}s {:>8.1} MB/s",
        "kiln write_layer (uncompressed)",
        kiln_tar.as_secs_f64(),
        mbps(tar_bytes, kiln_tar)
    );
    if let Some(d) = time_shell(&root, "cat") {
        println!(
            "{:<44} {:>7.2}s {:>8.1} MB/s",
            "tar | sha256sum",
            d.as_secs_f64(),
            mbps(tar_bytes, d)
        );
        println!(
            "  kiln/shell speed: {:.2}x",
            d.as_secs_f64() / kiln_tar.as_secs_f64()
        );
    }
}
