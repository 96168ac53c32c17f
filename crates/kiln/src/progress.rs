//! Progress for people and for tools: a live display on terminals (one line per running step
//! with a tail of its output, like BuildKit's), plain lines for CI logs (one line per step, then
//! CACHED or why it ran and how long it took), or one JSON object per line.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_build::{Event, Progress};
use kiln_registry::{Action, Outcome, TransferEvent};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The live display (see [`Tty`]).
    Tty,
    Plain,
    Json,
    Quiet,
}

pub struct Plain {
    started: Instant,
    style: Style,
    out: Mutex<std::io::Stderr>,
    tty: Option<Tty>,
    transfers: Mutex<Transfers>,
}

impl Plain {
    pub fn new(style: Style) -> Self {
        Self::titled(style, "Building")
    }

    /// The display for a command that moves images rather than builds them: the live
    /// header says `title` (`Pulling`, `Pushing`).
    pub fn titled(style: Style, title: &'static str) -> Self {
        let started = Instant::now();
        Plain {
            started,
            style,
            out: Mutex::new(std::io::stderr()),
            tty: (style == Style::Tty).then(|| Tty::new(started, title)),
            transfers: Mutex::new(Transfers::default()),
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Clears the live display (and prints the steps a failed build left unfinished, with their
    /// output): call it once the build returns, before printing its error or summary. Does
    /// nothing for the other styles.
    pub fn finish(&self) {
        if let Some(tty) = &self.tty {
            tty.finish();
        }
    }
}

impl Progress for Plain {
    fn event(&self, event: Event) {
        if let Some(tty) = &self.tty {
            tty.event(event);
            return;
        }
        let Ok(mut out) = self.out.lock() else { return };
        match self.style {
            Style::Quiet => return,
            Style::Json => {
                let _ = writeln!(out, "{}", json_event(&event, self.elapsed()));
                return;
            }
            Style::Plain | Style::Tty => {}
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
            Event::Warning { message } => writeln!(out, "warning: {message}"),
            Event::Transfer(transfer) => {
                let line = self
                    .transfers
                    .lock()
                    .ok()
                    .and_then(|mut t| t.apply(&transfer, Instant::now()));
                match line {
                    Some(line) => writeln!(out, "{line}"),
                    None => Ok(()),
                }
            }
        };
    }
}

/// A blob on its way to or from a registry.
#[derive(Debug, Clone)]
struct TransferView {
    push: bool,
    total: u64,
    done: u64,
    started: Instant,
}

/// The transfers under way, and the line each leaves when it ends.
#[derive(Debug, Clone, Default)]
pub struct Transfers {
    open: BTreeMap<String, TransferView>,
    /// Blobs this process moved already: asked again (a pull fetches the config it planned
    /// with), they are not reported twice.
    moved: std::collections::BTreeSet<String>,
}

fn short_digest(id: &str) -> String {
    let hex = id.split_once(':').map_or(id, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// Bytes as people read them: 812 B, 4.2 MB, 1.31 GB (powers of 1000, as registries show).
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1e3 {
        format!("{n} B")
    } else if n < 1e6 {
        format!("{:.1} kB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.2} GB", n / 1e9)
    }
}

impl Transfers {
    /// Takes in one event; returns the line to leave in the log: when a transfer ends (with
    /// its size, time and rate), or is retried.
    pub fn apply(&mut self, event: &TransferEvent, now: Instant) -> Option<String> {
        match event {
            TransferEvent::Start { id, action, total } => {
                self.open.insert(
                    id.clone(),
                    TransferView {
                        push: matches!(action, Action::Push),
                        total: *total,
                        done: 0,
                        started: now,
                    },
                );
                None
            }
            TransferEvent::Progress { id, done, total } => {
                if let Some(view) = self.open.get_mut(id) {
                    view.done = *done;
                    view.total = (*total).max(view.total);
                }
                None
            }
            TransferEvent::Retry { id, attempt, error } => {
                Some(format!("{} retry {attempt}: {error}", short_digest(id)))
            }
            TransferEvent::Done { id, outcome } => {
                let view = self.open.remove(id)?;
                if !self.moved.insert(id.clone()) && *outcome == Outcome::Existed {
                    return None;
                }
                let verb = match (outcome, view.push) {
                    (Outcome::Existed, _) => {
                        return Some(format!("{} already there", short_digest(id)))
                    }
                    (Outcome::Mounted, _) => {
                        return Some(format!(
                            "{} mounted from another repository",
                            short_digest(id)
                        ))
                    }
                    (_, true) => "pushed",
                    (_, false) => "pulled",
                };
                let secs = now.saturating_duration_since(view.started).as_secs_f64();
                let rate = if secs > 0.0 {
                    format!(", {}/s", bytes((view.total as f64 / secs) as u64))
                } else {
                    String::new()
                };
                Some(format!(
                    "{verb} {} {} in {secs:.2}s{rate}",
                    short_digest(id),
                    bytes(view.total)
                ))
            }
        }
    }

    /// One line per transfer under way, with a bar: what the live display shows.
    fn render(&self, width: usize, now: Instant) -> Vec<String> {
        self.open
            .iter()
            .map(|(id, view)| {
                let secs = now.saturating_duration_since(view.started).as_secs_f64();
                let rate = if secs > 0.0 {
                    bytes((view.done as f64 / secs) as u64)
                } else {
                    bytes(0)
                };
                const BAR: usize = 20;
                let filled = if view.total > 0 {
                    ((view.done.min(view.total) as f64 / view.total as f64) * BAR as f64) as usize
                } else {
                    0
                };
                let line = format!(
                    "{} {} [{}{}] {} / {} {rate}/s",
                    if view.push { "push" } else { "pull" },
                    short_digest(id),
                    "=".repeat(filled),
                    " ".repeat(BAR - filled),
                    bytes(view.done),
                    bytes(view.total),
                );
                truncate(&line, width)
            })
            .collect()
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
        Event::Warning { message } => {
            serde_json::json!({"event": "warning", "at": at, "message": message})
        }
        Event::Transfer(transfer) => match transfer {
            TransferEvent::Start { id, action, total } => serde_json::json!({
                "event": "transfer", "at": at, "state": "start", "id": id,
                "action": if matches!(action, Action::Push) { "push" } else { "pull" }, "total": total,
            }),
            TransferEvent::Progress { id, done, total } => serde_json::json!({
                "event": "transfer", "at": at, "state": "progress", "id": id, "done": done, "total": total,
            }),
            TransferEvent::Done { id, outcome } => serde_json::json!({
                "event": "transfer", "at": at, "state": "done", "id": id,
                "outcome": match outcome {
                    Outcome::Fetched => "fetched",
                    Outcome::Uploaded => "uploaded",
                    Outcome::Existed => "existed",
                    Outcome::Mounted => "mounted",
                },
            }),
            TransferEvent::Retry { id, attempt, error } => serde_json::json!({
                "event": "transfer", "at": at, "state": "retry", "id": id, "attempt": attempt, "error": error,
            }),
        },
    }
}

impl Plain {
    pub fn style(&self) -> Style {
        self.style
    }

    /// The last words of a build: the image id alone with `-q` (on standard error when
    /// standard output carries an archive), a `built` event in JSON, else one line and the names.
    pub fn built(&self, built: &kiln_build::Built, names: &[String], stdout_taken: bool) {
        let image_id = built.config_descriptor.digest.to_string();
        match self.style {
            Style::Quiet if stdout_taken => eprintln!("{image_id}"),
            Style::Quiet => println!("{image_id}"),
            Style::Json => {
                let summary = serde_json::json!({
                    "event": "built",
                    "at": self.elapsed(),
                    "image": image_id,
                    "manifest": built.manifest.digest.to_string(),
                    "steps": built.steps,
                    "cached": built.cached,
                    "layers": built.layers.len(),
                    "context_bytes_read": built.context_bytes_read,
                    "names": names,
                });
                eprintln!("{summary}");
            }
            Style::Plain | Style::Tty => {
                let short = image_id
                    .trim_start_matches("sha256:")
                    .get(..12)
                    .unwrap_or_default()
                    .to_string();
                eprintln!(
                    "built {short} in {:.2}s: {} steps, {} cached, {} layers, {} bytes of context read",
                    self.elapsed(),
                    built.steps,
                    built.cached,
                    built.layers.len(),
                    built.context_bytes_read
                );
                for name in names {
                    eprintln!("tagged {name}");
                }
            }
        }
    }
}

/// The style for `--progress auto`: the live display when standard error is a terminal that can
/// move its cursor, plain lines otherwise (pipes, CI logs, `TERM=dumb`).
pub fn auto_style() -> Style {
    use std::io::IsTerminal;
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    if std::io::stderr().is_terminal() && !dumb {
        Style::Tty
    } else {
        Style::Plain
    }
}

/// How many output lines of a running step the live display shows under it.
pub const TAIL_LINES: usize = 5;

const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

#[derive(Debug, Clone, Copy, PartialEq)]
enum StepState {
    Running,
    Cached,
    Done(Duration),
}

#[derive(Debug, Clone)]
struct StepView {
    stage: String,
    text: String,
    started: Instant,
    cached: bool,
    state: StepState,
    /// Every line the step printed, in order: shown in full when the build fails.
    output: Vec<String>,
}

/// What the live display knows: the steps seen so far, their state, times and output. Plain
/// data, so that what is drawn can be checked without a terminal (see [`Board::render`]).
#[derive(Debug, Clone)]
pub struct Board {
    started: Instant,
    /// What the header says is going on.
    title: &'static str,
    total: usize,
    steps: BTreeMap<usize, StepView>,
    transfers: Transfers,
}

/// What an event finished, to be printed once above the live region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Step(usize),
    Line(String),
}

impl Board {
    pub fn new(started: Instant) -> Self {
        Board {
            started,
            title: "Building",
            total: 0,
            steps: BTreeMap::new(),
            transfers: Transfers::default(),
        }
    }

    fn view(&mut self, number: usize, now: Instant) -> &mut StepView {
        self.steps.entry(number).or_insert_with(|| StepView {
            stage: String::new(),
            text: String::new(),
            started: now,
            cached: false,
            state: StepState::Running,
            output: Vec::new(),
        })
    }

    /// Takes in one event; returns what it finished (a step, or a line to keep).
    pub fn apply(&mut self, event: Event, now: Instant) -> Option<Finished> {
        match event {
            Event::Step {
                number,
                total,
                stage,
                text,
            } => {
                self.total = self.total.max(total);
                let view = self.view(number, now);
                view.stage = one_line(&stage);
                view.text = one_line(&text);
                view.started = now;
                view.state = StepState::Running;
                None
            }
            Event::Cached { number } => {
                self.view(number, now).cached = true;
                None
            }
            Event::Miss { number, .. } => {
                self.view(number, now);
                None
            }
            Event::Output { number, line } => {
                self.view(number, now).output.push(clean(&line));
                None
            }
            Event::Done { number, elapsed } => {
                let view = self.view(number, now);
                view.state = if view.cached {
                    StepState::Cached
                } else {
                    StepState::Done(elapsed)
                };
                Some(Finished::Step(number))
            }
            Event::Warning { message } => Some(Finished::Line(format!("warning: {message}"))),
            Event::Transfer(transfer) => self.transfers.apply(&transfer, now).map(Finished::Line),
        }
    }

    /// The live region at `width` columns: a header, then each running step with the last
    /// [`TAIL_LINES`] lines of its output (dimmed) under it. Finished steps are not in it: they
    /// are printed once, above it (see [`Board::step_line`]).
    pub fn render(&self, width: usize, now: Instant) -> Vec<String> {
        let finished = self
            .steps
            .values()
            .filter(|s| s.state != StepState::Running)
            .count();
        let elapsed = seconds(now.saturating_duration_since(self.started));
        let steps = self.total.max(self.steps.len());
        let header = if steps == 0 && self.title != "Building" {
            format!("[+] {} {elapsed}", self.title)
        } else {
            format!("[+] {} {elapsed} ({finished}/{steps})", self.title)
        };
        let mut lines = vec![truncate(&header, width)];
        for (number, step) in &self.steps {
            if step.state != StepState::Running {
                continue;
            }
            lines.push(self.line(*number, step, width, now));
            let skip = step.output.len().saturating_sub(TAIL_LINES);
            for out in &step.output[skip..] {
                let shown = truncate(&format!("#{number} {out}"), width);
                lines.push(format!("{DIM}{shown}{RESET}"));
            }
        }
        lines.extend(self.transfers.render(width, now));
        lines
    }

    /// One step's line at `width` columns: number, stage, instruction, state and time.
    pub fn step_line(&self, number: usize, width: usize, now: Instant) -> Option<String> {
        self.steps
            .get(&number)
            .map(|step| self.line(number, step, width, now))
    }

    fn line(&self, number: usize, step: &StepView, width: usize, now: Instant) -> String {
        let state = match step.state {
            StepState::Running => format!(
                "running {}",
                seconds(now.saturating_duration_since(step.started))
            ),
            StepState::Cached => "CACHED".to_string(),
            StepState::Done(elapsed) => format!("DONE {}", seconds(elapsed)),
        };
        let left = if step.stage.is_empty() {
            format!("#{number} {}", step.text)
        } else {
            format!("#{number} [{}] {}", step.stage, step.text)
        };
        let state_len = state.chars().count();
        let room = width.saturating_sub(state_len + 1);
        if room < 4 {
            return truncate(&format!("{left} {state}"), width);
        }
        let left = truncate(&left, room);
        let gap = width
            .saturating_sub(left.chars().count() + state_len)
            .max(1);
        format!("{left}{}{state}", " ".repeat(gap))
    }

    /// Every step that started and did not finish, each with all of its output: what a failed
    /// build prints before its error.
    pub fn unfinished(&self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        for (number, step) in &self.steps {
            if step.state != StepState::Running {
                continue;
            }
            lines.push(format!(
                "#{number} [{}] {} (stopped after {})",
                step.stage,
                step.text,
                seconds(now.saturating_duration_since(step.started))
            ));
            for out in &step.output {
                lines.push(format!("#{number} | {out}"));
            }
        }
        lines
    }

    /// All the output a step printed so far.
    #[cfg(test)]
    pub fn output(&self, number: usize) -> &[String] {
        self.steps.get(&number).map_or(&[], |s| s.output.as_slice())
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// At most `width` characters, ending in `…` when something was cut.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// An instruction on one line: line breaks (continuations, heredocs) become spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An output line without what would upset the display: escape sequences and control
/// characters go, tabs become spaces.
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // A CSI sequence ends with a byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

struct Shared {
    board: Mutex<Board>,
    bar: ProgressBar,
    /// Whether finished steps and the failure report go to standard error when the bar is
    /// hidden (standard error is no terminal): `--progress tty` into a pipe still says something.
    echo: bool,
}

impl Shared {
    fn size() -> (usize, usize) {
        let (rows, cols) = console::Term::stderr().size();
        (usize::from(rows.max(2)), usize::from(cols.max(20)))
    }

    fn redraw(&self, board: &Board) {
        let (rows, cols) = Self::size();
        let mut lines = board.render(cols, Instant::now());
        // Keep the live region on the screen, or the terminal scrolls it into the history.
        lines.truncate(rows - 1);
        self.bar.set_message(lines.join("\n"));
    }

    /// Prints a line above the live region (straight to standard error when there is none).
    fn print(&self, line: &str) {
        if self.bar.is_hidden() {
            if self.echo {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        } else {
            self.bar.println(line);
        }
    }
}

/// The live display: one line per running step with a tail of its output, redrawn several
/// times a second; each step leaves one line behind when it finishes.
pub struct Tty {
    shared: Arc<Shared>,
    finished: AtomicBool,
    ticker: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

impl Tty {
    pub fn new(started: Instant, title: &'static str) -> Self {
        let tty = Self::with_target(started, ProgressDrawTarget::stderr(), true);
        if let Ok(mut board) = tty.shared.board.lock() {
            board.title = title;
        }
        tty
    }

    fn with_target(started: Instant, target: ProgressDrawTarget, echo: bool) -> Self {
        let bar = ProgressBar::with_draw_target(None, target);
        if let Ok(style) = ProgressStyle::with_template("{msg}") {
            bar.set_style(style);
        }
        let shared = Arc::new(Shared {
            board: Mutex::new(Board::new(started)),
            bar,
            echo,
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = Arc::clone(&shared);
        let ticker = std::thread::Builder::new()
            .name("kiln-progress".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Duration::from_millis(100))
                {
                    if let Ok(board) = ticking.board.lock() {
                        ticking.redraw(&board);
                    }
                }
            })
            .ok()
            .map(|handle| (stop, handle));
        Tty {
            shared,
            finished: AtomicBool::new(false),
            ticker: Mutex::new(ticker),
        }
    }

    pub fn event(&self, event: Event) {
        let Ok(mut board) = self.shared.board.lock() else {
            return;
        };
        let now = Instant::now();
        let finished_step = board.apply(event, now);
        if self.finished.load(Ordering::SeqCst) {
            return;
        }
        match finished_step {
            Some(Finished::Step(number)) => {
                let (_, cols) = Shared::size();
                if let Some(line) = board.step_line(number, cols, now) {
                    self.shared.print(&line);
                }
            }
            Some(Finished::Line(line)) => self.shared.print(&line),
            None => {}
        }
        self.shared.redraw(&board);
    }

    /// Stops the display and clears it; steps that did not finish (a failed build) are printed
    /// with all their output. Call it before printing the error or the summary; calling it
    /// again does nothing.
    pub fn finish(&self) {
        // Taken under the board's lock, so that no event is drawing while the display stops.
        let board = self.shared.board.lock();
        let already = self.finished.swap(true, Ordering::SeqCst);
        drop(board);
        if already {
            return;
        }
        if let Some((stop, handle)) = self.ticker.lock().ok().and_then(|mut t| t.take()) {
            drop(stop);
            let _ = handle.join();
        }
        self.shared.bar.finish_and_clear();
        if let Ok(board) = self.shared.board.lock() {
            if !self.shared.echo && self.shared.bar.is_hidden() {
                return;
            }
            let mut err = std::io::stderr().lock();
            for line in board.unfinished(Instant::now()) {
                let _ = writeln!(err, "{line}");
            }
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(number: usize, stage: &str, text: &str) -> Event {
        Event::Step {
            number,
            total: 4,
            stage: stage.into(),
            text: text.into(),
        }
    }

    fn output(number: usize, line: &str) -> Event {
        Event::Output {
            number,
            line: line.into(),
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_running_step_shows_its_number_stage_instruction_and_ticking_time() {
        let t0 = Instant::now();
        let mut board = Board::new(t0);
        assert_eq!(board.apply(step(1, "build 1/2", "RUN make"), t0), None);
        let lines = board.render(60, t0 + secs(2.34));
        assert_eq!(lines[0], "[+] Building 2.3s (0/4)");
        assert_eq!(lines[1].chars().count(), 60);
        assert!(
            lines[1].starts_with("#1 [build 1/2] RUN make "),
            "{lines:?}"
        );
        assert!(lines[1].ends_with(" running 2.3s"), "{lines:?}");
        let later = board.render(60, t0 + secs(5.0));
        assert!(later[1].ends_with(" running 5.0s"), "{later:?}");
    }

    #[test]
    fn a_long_instruction_is_cut_to_the_width_and_keeps_the_state_visible() {
        let t0 = Instant::now();
        let mut board = Board::new(t0);
        let long = format!("RUN echo {}", "x".repeat(200));
        board.apply(step(3, "0 1/1", &long), t0);
        for width in [30, 80, 100] {
            let lines = board.render(width, t0 + secs(1.0));
            for line in &lines {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
            assert!(lines[1].contains('…'), "{lines:?}");
            assert!(lines[1].ends_with("running 1.0s"), "{lines:?}");
        }
        // Too narrow for both: still no wider than the terminal.
        let lines = board.render(8, t0);
        assert!(lines.iter().all(|l| l.chars().count() <= 8), "{lines:?}");
    }

    #[test]
    fn a_multi_line_instruction_is_drawn_on_one_line() {
        let t0 = Instant::now();
        let mut board = Board::new(t0);
        board.apply(step(1, "0 1/1", "RUN a \\\n    && b"), t0);
        let lines = board.render(80, t0);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].starts_with("#1 [0 1/1] RUN a \\ && b "),
            "{lines:?}"
        );
    }

    #[test]
    fn a_running_step_shows_a_dimmed_tail_and_keeps_all_its_output() {
        let t0 = Instant::now();
        let mut board = Board::new(t0);
        board.apply(step(2, "0 2/3", "RUN ./build.sh"), t0);
        board.apply(
            Event::Miss {
                number: 2,
                reason: "new".into(),
            },
            t0,
        );
        for i in 1..=12 {
            board.apply(output(2, &format!("line {i}")), t0);
        }
        let lines = board.render(40, t0);
        assert_eq!(lines.len(), 2 + TAIL_LINES, "{lines:?}");
        assert_eq!(lines[2], format!("{DIM}#2 line 8{RESET}"));
        assert_eq!(lines[6], format!("{DIM}#2 line 12{RESET}"));
        assert_eq!(board.output(2).len(), 12);
        assert_eq!(board.output(2)[0], "line 1");
    }

    #[test]
    fn output_lines_lose_escapes_and_control_characters() {
        let t0 = Instant::now();
        let mut board = Board::new(t0);
        board.apply(step(1, "0 1/1", "RUN x"), t0);
        board.apply(output(1, "\x1b[31mred\x1b[0m\tdone\r"), t0);
        assert_eq!(board.output(1), ["red    done"]);
        let tail = &board.render(80, t0)[2];
        assert_eq!(tail, &format!("{DIM}#1 red    done{RESET}"));
    }

    #[test]
    fn a_tail_line_is_cut_to_the_width() {
        let t0 = Instant::now();
        let mut board = Board::new(t0);
        board.apply(step(1, "0 1/1", "RUN x"), t0);
        board.apply(output(1, &"y".repeat(300)), t0);
        let tail = &board.render(50, t0)[2];
        let visible = tail.trim_start_matches(DIM).trim_end_matches(RESET);
        assert_eq!(visible.chars().count(), 50);
        assert!(visible.ends_with('…'));
    }

    #[test]
    fn finished_steps_leave_the_live_region_and_get_their_own_line() {
        let t0 = Instant::now();
        let mut board = Board::new(t0);
        board.apply(step(1, "0 1/2", "COPY a /a"), t0);
        board.apply(Event::Cached { number: 1 }, t0);
        assert_eq!(
            board.apply(
                Event::Done {
                    number: 1,
                    elapsed: secs(0.01)
                },
                t0
            ),
            Some(Finished::Step(1))
        );
        board.apply(step(2, "0 2/2", "COPY b /b"), t0);
        board.apply(
            Event::Miss {
                number: 2,
                reason: "new".into(),
            },
            t0,
        );
        board.apply(output(2, "hidden once done"), t0);
        assert_eq!(
            board.apply(
                Event::Done {
                    number: 2,
                    elapsed: secs(1.25)
                },
                t0
            ),
            Some(Finished::Step(2))
        );
        let lines = board.render(40, t0 + secs(3.0));
        assert_eq!(lines, ["[+] Building 3.0s (2/4)"]);
        let cached = board.step_line(1, 40, t0).unwrap_or_default();
        assert!(cached.starts_with("#1 [0 1/2] COPY a /a "), "{cached:?}");
        assert!(cached.ends_with(" CACHED"), "{cached:?}");
        let done = board.step_line(2, 40, t0).unwrap_or_default();
        assert!(
            done.ends_with(" DONE 1.2s") || done.ends_with(" DONE 1.3s"),
            "{done:?}"
        );
        assert_eq!(board.step_line(9, 40, t0), None);
        assert!(board.unfinished(t0).is_empty());
    }

    #[test]
    fn steps_of_several_stages_run_at_once_in_step_order() {
        let t0 = Instant::now();
        let mut board = Board::new(t0);
        board.apply(step(4, "app 1/2", "RUN b"), t0);
        board.apply(step(1, "deps 1/3", "RUN a"), t0 + secs(1.0));
        board.apply(output(4, "from b"), t0);
        board.apply(output(1, "from a"), t0);
        let lines = board.render(40, t0 + secs(2.0));
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[1].starts_with("#1 [deps 1/3] RUN a"));
        assert!(lines[1].ends_with("running 1.0s"));
        assert!(lines[2].contains("#1 from a"));
        assert!(lines[3].starts_with("#4 [app 1/2] RUN b"));
        assert!(lines[3].ends_with("running 2.0s"));
        assert!(lines[4].contains("#4 from b"));
    }

    #[test]
    fn a_failed_step_is_reported_with_all_its_output() {
        let t0 = Instant::now();
        let mut board = Board::new(t0);
        board.apply(step(1, "0 1/2", "COPY a /a"), t0);
        board.apply(
            Event::Done {
                number: 1,
                elapsed: secs(0.1),
            },
            t0,
        );
        board.apply(step(2, "0 2/2", "RUN false"), t0);
        for i in 1..=8 {
            board.apply(output(2, &format!("out {i}")), t0);
        }
        let report = board.unfinished(t0 + secs(1.5));
        assert_eq!(report.len(), 9, "{report:?}");
        assert_eq!(report[0], "#2 [0 2/2] RUN false (stopped after 1.5s)");
        assert_eq!(report[1], "#2 | out 1");
        assert_eq!(report[8], "#2 | out 8");
    }

    #[test]
    fn the_live_display_takes_events_from_several_threads() {
        let tty = Tty::with_target(Instant::now(), ProgressDrawTarget::hidden(), false);
        std::thread::scope(|scope| {
            for stage in 0..4 {
                let tty = &tty;
                scope.spawn(move || {
                    for i in 0..3 {
                        let number = stage * 3 + i + 1;
                        tty.event(step(number, &format!("{stage} {i}/3"), "RUN x"));
                        tty.event(output(number, "hello"));
                        tty.event(Event::Done {
                            number,
                            elapsed: secs(0.0),
                        });
                    }
                });
            }
        });
        tty.finish();
        tty.finish();
        let board = tty.shared.board.lock().map(|b| b.clone());
        let Ok(board) = board else { return };
        assert_eq!(board.steps.len(), 12);
        assert!(board.unfinished(Instant::now()).is_empty());
        assert_eq!(board.output(7), ["hello"]);
    }

    #[test]
    fn a_transfer_shows_a_bar_while_it_moves_and_leaves_its_rate_when_done() {
        let t0 = Instant::now();
        let mut board = Board::new(t0);
        let id = format!("sha256:{}", "ab".repeat(32));
        board.apply(
            Event::Transfer(TransferEvent::Start {
                id: id.clone(),
                action: Action::Pull,
                total: 10_000_000,
            }),
            t0,
        );
        board.apply(
            Event::Transfer(TransferEvent::Progress {
                id: id.clone(),
                done: 5_000_000,
                total: 10_000_000,
            }),
            t0,
        );
        let lines = board.render(100, t0 + secs(1.0));
        assert_eq!(
            lines[1], "pull abababababab [==========          ] 5.0 MB / 10.0 MB 5.0 MB/s",
            "{lines:?}"
        );
        let finished = board.apply(
            Event::Transfer(TransferEvent::Done {
                id,
                outcome: Outcome::Fetched,
            }),
            t0 + secs(2.0),
        );
        assert_eq!(
            finished,
            Some(Finished::Line(
                "pulled abababababab 10.0 MB in 2.00s, 5.0 MB/s".into()
            ))
        );
        assert_eq!(
            board.render(100, t0 + secs(2.0)).len(),
            1,
            "the bar is gone"
        );
    }
}
