//! The live progress display (`--progress tty`) on a real terminal: kiln runs inside a detached
//! tmux pane and the test reads the screen back. Without tmux: skipped with a message, or a
//! failure under `KILN_REQUIRE_ALL=1`.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::skip_or_fail;

const WIDTH: usize = 100;
const LONG_NAME: &str = "a-file-with-a-name-long-enough-that-its-copy-instruction-cannot-fit-on-one-line-of-a-hundred-columns.txt";

fn kiln() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

/// tmux (which answers `-V`, not `--version`), or [`skip_or_fail`] without it.
fn have_tmux() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip_or_fail("tmux not installed (apt-get install tmux)");
    }
    found
}

/// A tmux server of the test's own, killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Self {
        Tmux {
            socket: format!("kiln-progress-{}-{name}", std::process::id()),
        }
    }

    fn cmd(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket, "-f", "/dev/null"]);
        command
    }

    /// Runs `shell` in a new 100×30 pane; `EXIT=<status>` follows what it prints.
    fn start(&self, session: &str, shell: &str) {
        let status = self
            .cmd()
            .args(["new-session", "-d", "-s", session, "-x", "100", "-y", "30"])
            .arg(format!("{shell}; echo EXIT=$?; sleep 60"))
            .status()
            .expect("tmux new-session");
        assert!(status.success(), "tmux new-session failed");
    }

    /// The screen once the pane printed `EXIT=`.
    fn wait(&self, session: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.capture(session);
            if screen.contains("EXIT=") {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "kiln did not finish in the pane:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screen_after(&self, session: &str, shell: &str) -> String {
        self.start(session, shell);
        self.wait(session)
    }

    /// The screen and what scrolled off it.
    fn history(&self, session: &str) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-S", "-1000", "-t", session])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn capture(&self, session: &str) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", session])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.txt"), "a\n").unwrap();
    fs::write(dir.path().join("b.txt"), "b\n").unwrap();
    fs::write(dir.path().join(LONG_NAME), "long\n").unwrap();
    fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM scratch AS first\n\
             COPY a.txt /a.txt\n\
             FROM scratch\n\
             COPY b.txt /b.txt\n\
             COPY {LONG_NAME} /long.txt\n\
             COPY --from=first /a.txt /from-first.txt\n\
             LABEL org.example.test=progress\n"
        ),
    )
    .unwrap();
    dir
}

/// The screen's lines for step `#number`.
fn step_line(screen: &str, number: usize) -> &str {
    let prefix = format!("#{number} [");
    screen
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for step {number} on the screen:\n{screen}"))
}

#[test]
fn tty_progress_leaves_one_line_per_step_and_the_summary() {
    if !have_tmux() {
        return;
    }
    let ctx = context();
    let root = tempfile::tempdir().unwrap();
    let tmux = Tmux::new("build");
    let shell = format!(
        "{} --root {} build --progress tty {}",
        quote(Path::new(kiln())),
        quote(root.path()),
        quote(ctx.path())
    );

    let screen = tmux.screen_after("first", &shell);
    assert!(screen.contains("EXIT=0"), "build failed:\n{screen}");
    for number in 1..=5 {
        let line = step_line(&screen, number);
        assert!(line.chars().count() <= WIDTH, "{line:?}");
        assert!(
            line.trim_end().ends_with('s') && line.contains(" DONE "),
            "step {number} is not DONE:\n{screen}"
        );
    }
    assert!(
        step_line(&screen, 1).contains("COPY a.txt /a.txt"),
        "{screen}"
    );
    assert!(
        step_line(&screen, 2).contains("COPY b.txt /b.txt"),
        "{screen}"
    );
    // The long instruction is cut to the terminal, not wrapped onto a second line.
    let long = step_line(&screen, 3);
    assert!(long.contains('…'), "{screen}");
    assert!(long.contains("COPY a-file-with-a-name"), "{screen}");
    let built = screen
        .lines()
        .find(|l| l.starts_with("built "))
        .unwrap_or_else(|| panic!("no summary on the screen:\n{screen}"));
    assert!(built.contains("5 steps, 0 cached"), "{built}");
    // The live region is cleared before the summary.
    assert!(!screen.contains("[+] Building"), "{screen}");
    assert!(!screen.contains("running "), "{screen}");

    // Built again, the layer steps come from the cache.
    let screen = tmux.screen_after("again", &shell);
    assert!(screen.contains("EXIT=0"), "rebuild failed:\n{screen}");
    for number in [1, 2, 3, 4] {
        let line = step_line(&screen, number);
        assert!(
            line.trim_end().ends_with(" CACHED"),
            "step {number} not CACHED:\n{screen}"
        );
    }
    assert!(screen.contains(" cached, "), "{screen}");
    assert!(!screen.contains("[+] Building"), "{screen}");
}

fn busybox() -> Option<&'static Path> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
}

/// A context whose last stage runs a shell: FROM scratch with a static busybox.
fn busybox_context(busybox: &Path, run: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(busybox, dir.path().join("busybox")).unwrap();
    fs::write(dir.path().join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(dir.path().join("group"), "root:x:0:\n").unwrap();
    fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             COPY passwd group /etc/\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             ENV PATH=/bin\n\
             RUN {run}\n"
        ),
    )
    .unwrap();
    dir
}

#[test]
fn tty_progress_shows_a_running_steps_tail_and_all_output_of_a_failed_one() {
    if !have_tmux() {
        return;
    }
    let Some(busybox) = busybox() else {
        skip_or_fail("RUN needs a static busybox (apt-get install busybox-static)");
        return;
    };
    let root = tempfile::tempdir().unwrap();

    let tmux = Tmux::new("run");
    let ctx = busybox_context(
        busybox,
        "for i in $(seq 1 10); do echo tail line $i; done; sleep 4",
    );
    tmux.start(
        "live",
        &format!(
            "{} --root {} build --progress tty {}",
            quote(Path::new(kiln())),
            quote(root.path()),
            quote(ctx.path())
        ),
    );
    // While the RUN sleeps, its line ticks and its last 5 lines show under it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        let screen = tmux.capture("live");
        if screen.contains("tail line 10") && screen.contains(" running ") {
            break screen;
        }
        assert!(
            Instant::now() < deadline,
            "no live tail on the screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(live.contains("[+] Building "), "{live}");
    assert!(step_line(&live, 5).contains("running "), "{live}");
    for i in 6..=10 {
        assert!(live.contains(&format!("#5 tail line {i}\n")), "{live}");
    }
    assert!(!live.contains("#5 tail line 5\n"), "{live}");
    let done = tmux.wait("live");
    assert!(done.contains("EXIT=0"), "{done}");
    assert!(step_line(&done, 5).contains(" DONE "), "{done}");
    assert!(
        !done.contains("#5 tail line"),
        "the tail stays after the step:\n{done}"
    );
    assert!(!done.contains("[+] Building"), "{done}");

    // A failing RUN: every line it printed is on the screen, not only the last few.
    let ctx = busybox_context(
        busybox,
        "for i in $(seq 1 40); do echo out $i; done; exit 3",
    );
    tmux.start(
        "failed",
        &format!(
            "{} --root {} build --progress tty {}",
            quote(Path::new(kiln())),
            quote(root.path()),
            quote(ctx.path())
        ),
    );
    tmux.wait("failed");
    let history = tmux.history("failed");
    assert!(history.contains("EXIT=1"), "{history}");
    for i in 1..=40 {
        assert!(history.contains(&format!("#5 | out {i}\n")), "{history}");
    }
    assert!(history.contains("error: "), "{history}");
    assert!(!history.contains("[+] Building"), "{history}");
}
