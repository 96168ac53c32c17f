//! Progress for people and for tools: plain lines for terminals and CI logs (one line per step,
//! then CACHED or why it ran and how long it took), or one JSON object per line.

use kiln_build::{Event, Progress};
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Json,
    Quiet,
}

pub struct Plain {
    started: Instant,
    style: Style,
    out: Mutex<std::io::Stderr>,
}

impl Plain {
    pub fn new(style: Style) -> Self {
        Plain {
            started: Instant::now(),
            style,
            out: Mutex::new(std::io::stderr()),
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Progress for Plain {
    fn event(&self, event: Event) {
        let Ok(mut out) = self.out.lock() else { return };
        match self.style {
            Style::Quiet => return,
            Style::Json => {
                let _ = writeln!(out, "{}", json_event(&event, self.elapsed()));
                return;
            }
            Style::Plain => {}
        }
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
            Event::Output { number, line } => writeln!(out, "#{number} | {line}"),
        };
    }
}

/// One event as a JSON object (the format is documented in docs/cli.md).
fn json_event(event: &Event, at: f64) -> serde_json::Value {
    match event {
        Event::Step {
            number,
            total,
            stage,
            text,
        } => serde_json::json!({
            "event": "step", "at": at, "number": number, "total": total, "stage": stage, "instruction": text,
        }),
        Event::Cached { number } => {
            serde_json::json!({"event": "cached", "at": at, "number": number})
        }
        Event::Miss { number, reason } => {
            serde_json::json!({"event": "running", "at": at, "number": number, "reason": reason})
        }
        Event::Done { number, elapsed } => serde_json::json!({
            "event": "done", "at": at, "number": number, "seconds": elapsed.as_secs_f64(),
        }),
        Event::Output { number, line } => serde_json::json!({
            "event": "output", "at": at, "number": number, "line": line,
        }),
    }
}

impl Plain {
    pub fn style(&self) -> Style {
        self.style
    }
}
