//! Plain progress lines for terminals and CI logs: one line per step, then CACHED or why it
//! ran and how long it took.

use kiln_build::{Event, Progress};
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

pub struct Plain {
    started: Instant,
    quiet: bool,
    out: Mutex<std::io::Stderr>,
}

impl Plain {
    pub fn new(quiet: bool) -> Self {
        Plain {
            started: Instant::now(),
            quiet,
            out: Mutex::new(std::io::stderr()),
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Progress for Plain {
    fn event(&self, event: Event) {
        if self.quiet {
            return;
        }
        let Ok(mut out) = self.out.lock() else { return };
        let _ = match event {
            Event::Step {
                number,
                total,
                stage,
                text,
            } => writeln!(out, "#{number}/{total} [{stage}] {text}"),
            Event::Cached { number } => writeln!(out, "#{number} CACHED"),
            Event::Miss { number, reason } => writeln!(out, "#{number} running: {reason}"),
            Event::Done { number, elapsed } => {
                writeln!(out, "#{number} done in {:.2}s", elapsed.as_secs_f64())
            }
        };
    }
}
