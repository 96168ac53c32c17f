//! Parse + plan time of generated recipes of 1k, 5k and 20k lines: it must grow linearly.
//!
//! Prints, per size, kiln's best-of-N time, its cost per line, and the ratio of that cost to
//! the 1k-line cost (1.0 means perfectly linear). Beside it, a reference measured in the same
//! run on the same text: one pass that splits the text into lines and words, the floor any
//! parser pays. Run with `just bench` or `cargo bench -p kiln-plan --bench scale`.

// Tests and benchmarks fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_plan::{plan, PlanOptions};
use kiln_recipe::parse_recipe;
use std::fmt::Write;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A realistic recipe: stages of ~100 lines using every instruction kind, ARG/ENV expansion,
/// continuations, heredocs, mounts and COPY --from edges to earlier stages.
fn generate(lines: usize) -> String {
    let mut text =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\nARG VERSION=1.0\n");
    let mut stage = 0;
    let mut counted = 0;
    let mut newlines = 0;
    loop {
        // Count only what was appended since the last look, so generating stays linear.
        newlines += text.as_bytes()[counted..]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        counted = text.len();
        if newlines >= lines {
            break;
        }
        let _ = write!(
            text,
            "FROM ${{BASE}} AS stage{stage}\nARG VERSION\nENV APP=/srv/app{stage} VERSION=${{VERSION:-dev}}\nWORKDIR $APP\n"
        );
        for i in 0..12 {
            let _ = write!(
                text,
                "RUN --mount=type=cache,target=/var/cache/apt{i} \\\n    apt-get update && \\\n    # a comment inside\n    apt-get install -y pkg{i} && echo ${{APP%/*}}\n\
                 COPY --chown=1000:1000 --chmod=0644 src/file{i}.txt ${{APP}}/file{i}.txt\n\
                 ENV STEP{i}=\"value ${{VERSION}} {i}\"\n\
                 LABEL com.example.step{i}=\"${{APP##*/}}\" other=${{VERSION/./-}}\n"
            );
            if stage > 0 && i == 0 {
                let _ = writeln!(text, "COPY --from=stage{} /srv /srv/prev", stage - 1);
            }
        }
        let _ = write!(
            text,
            "COPY <<EOF /etc/motd\nstage {stage} version ${{VERSION}}\nEOF\nEXPOSE 80{:02}/tcp\nHEALTHCHECK --interval=30s CMD [\"true\"]\nCMD [\"/srv/app/run\"]\n",
            stage % 100
        );
        stage += 1;
    }
    text
}

/// The measured work, in a function of its own so callgrind can count just it
/// (`--toggle-collect=*parse_and_plan*`).
#[inline(never)]
fn parse_and_plan(text: &str) -> usize {
    let recipe = parse_recipe(black_box(text));
    let planned = plan(&recipe, &PlanOptions::default());
    assert!(
        !planned.has_errors(),
        "generated recipe is invalid: {:?}",
        planned.diagnostics.first()
    );
    black_box(planned.stages.len())
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    // `KILN_BENCH_LINES=N` parses and plans one recipe of N lines once: for instruction counts
    // under `valgrind --tool=callgrind`, which do not depend on what else the machine runs.
    if let Some(lines) = std::env::var("KILN_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let text = generate(lines);
        let stages = parse_and_plan(&text);
        println!("{} lines, {stages} stages", text.lines().count());
        return;
    }
    println!("parse + plan of generated recipes (best of 7 runs)");
    println!(
        "{:>7} {:>10} {:>11} {:>12} {:>14} {:>10}",
        "lines", "kiln ms", "kiln ns/ln", "vs 1k/line", "reference ms", "kiln/ref"
    );
    let mut base_per_line = None;
    for target in [1_000, 5_000, 20_000] {
        let text = generate(target);
        let lines = text.lines().count();
        let kiln = best_of(7, || {
            let recipe = parse_recipe(black_box(&text));
            let planned = plan(&recipe, &PlanOptions::default());
            assert!(
                !planned.has_errors(),
                "generated recipe is invalid: {:?}",
                planned.diagnostics.first()
            );
            black_box(planned);
        });
        let reference = best_of(7, || {
            let words: usize = black_box(&text)
                .lines()
                .map(|l| l.split_whitespace().count())
                .sum();
            black_box(words);
        });
        let per_line = kiln.as_nanos() as f64 / lines as f64;
        let linearity = per_line / *base_per_line.get_or_insert(per_line);
        println!(
            "{lines:>7} {:>10.2} {per_line:>11.0} {linearity:>11.2}x {:>14.3} {:>9.1}x",
            kiln.as_secs_f64() * 1e3,
            reference.as_secs_f64() * 1e3,
            kiln.as_secs_f64() / reference.as_secs_f64(),
        );
    }
}
