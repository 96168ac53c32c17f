//! kiln-sandbox: runs one command isolated from the host, with no daemon and no runtime binary.
//!
//! The caller (multi-threaded) cannot create namespaces itself, so the sandbox is two fresh
//! processes of the same executable, started with a hidden first argument:
//!
//! ```text
//! kiln ──spawn──▶ kiln __kiln-sandbox         unshare(mount, pid, uts, ipc[, net]); / private;
//!                   │                          waits, writes how the command ended
//!                   └─spawn──▶ kiln __kiln-sandbox-init    pid 1 of the new pid namespace:
//!                                 overlay + /proc /dev /sys /etc/hosts /etc/resolv.conf,
//!                                 hostname, pivot_root, drop to the image's user,
//!                                 then exec: the command itself is pid 1
//! ```
//!
//! The command is pid 1, as under docker and BuildKit (an init like tini finds itself pid 1).
//! When it exits, the kernel kills whatever it left behind: every process of a step is gone when
//! the step ends. Both helpers die with their parent.

#![deny(missing_docs)]

mod chroot;
mod credentials;
mod descendants;
pub mod emulation;
pub mod isolation;
mod privileges;
mod process;
pub mod seccomp;
pub mod setup;
pub mod syscall;
pub mod userns;

pub use process::{helper_main, CHROOT_ARG, HELPER_ARG, INIT_ARG};
pub use setup::MOUNT_POINTS;

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the root filesystem of the sandbox is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootSpec {
    /// An overlay of snapshot directories (top first) with a fresh upper dir: after the
    /// command, the upper dir is the step's diff.
    Overlay {
        /// The snapshot directories, top first.
        lowers: Vec<PathBuf>,
        /// The fresh upper dir: the step's diff afterwards.
        upper: PathBuf,
        /// overlayfs' work dir, on the upper dir's filesystem.
        work: PathBuf,
        /// Where the overlay is mounted: the sandbox's `/`.
        merged: PathBuf,
        /// `user.overlay.*` xattrs, for overlays mounted inside a user namespace.
        userxattr: bool,
    },
    /// A private copy of the root, where overlay cannot be mounted.
    Directory {
        /// The private copy, which becomes `/`.
        path: PathBuf,
    },
}

/// The network a command sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// The host's network (BuildKit's `--network=host`; kiln's default).
    Host,
    /// A network namespace of its own, with no interface up.
    None,
}

/// Who the command runs as, already resolved from the image's passwd and group files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
}

/// A file written into the sandbox's /dev/pipes (heredoc scripts): outside every layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptFile {
    /// The file's name in /dev/pipes.
    pub name: String,
    /// What it holds.
    pub content: Vec<u8>,
    /// Its permission bits.
    pub mode: u32,
}

/// What a `RUN --mount` puts at its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host file or directory (or socket), bound; read-only binds are remounted read-only.
    Bind {
        /// The host path bound.
        source: PathBuf,
        /// Remounted read-only.
        read_only: bool,
    },
    /// A fresh tmpfs, `size` bytes at most when given.
    Tmpfs {
        /// The tmpfs' size limit in bytes.
        size: Option<u64>,
    },
}

/// One mount the sandbox makes inside the root, after the root's own mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute, inside the root. The caller provides it (outside every layer) when the image
    /// lacks it; a symbolic link on its way is refused.
    pub target: String,
    /// What is mounted there.
    pub kind: MountKind,
}

/// One resource limit, as `docker build --ulimit NAME=SOFT[:HARD]` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Which limit.
    pub resource: RlimitResource,
    /// The soft limit; `None` is unlimited.
    pub soft: Option<u64>,
    /// The hard limit; `None` is unlimited.
    pub hard: Option<u64>,
}

/// The limits `--ulimit` can name, by their docker names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RlimitResource {
    /// Core file size (RLIMIT_CORE).
    Core,
    /// CPU seconds (RLIMIT_CPU).
    Cpu,
    /// Data segment size (RLIMIT_DATA).
    Data,
    /// File size (RLIMIT_FSIZE).
    Fsize,
    /// File locks (RLIMIT_LOCKS).
    Locks,
    /// Locked memory (RLIMIT_MEMLOCK).
    Memlock,
    /// POSIX message queue bytes (RLIMIT_MSGQUEUE).
    Msgqueue,
    /// Nice ceiling (RLIMIT_NICE).
    Nice,
    /// Open files (RLIMIT_NOFILE).
    Nofile,
    /// Processes (RLIMIT_NPROC).
    Nproc,
    /// Resident set size (RLIMIT_RSS).
    Rss,
    /// Real-time priority (RLIMIT_RTPRIO).
    Rtprio,
    /// Real-time CPU microseconds (RLIMIT_RTTIME).
    Rttime,
    /// Pending signals (RLIMIT_SIGPENDING).
    Sigpending,
    /// Stack size (RLIMIT_STACK).
    Stack,
    /// Address space (RLIMIT_AS).
    As,
}

impl RlimitResource {
    /// Every name, in the order docker lists them.
    pub const NAMES: [(&'static str, RlimitResource); 16] = [
        ("core", RlimitResource::Core),
        ("cpu", RlimitResource::Cpu),
        ("data", RlimitResource::Data),
        ("fsize", RlimitResource::Fsize),
        ("locks", RlimitResource::Locks),
        ("memlock", RlimitResource::Memlock),
        ("msgqueue", RlimitResource::Msgqueue),
        ("nice", RlimitResource::Nice),
        ("nofile", RlimitResource::Nofile),
        ("nproc", RlimitResource::Nproc),
        ("rss", RlimitResource::Rss),
        ("rtprio", RlimitResource::Rtprio),
        ("rttime", RlimitResource::Rttime),
        ("sigpending", RlimitResource::Sigpending),
        ("stack", RlimitResource::Stack),
        ("as", RlimitResource::As),
    ];

    /// The resource a docker name means (`nofile`), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, resource)| *resource)
    }
}

/// Everything the sandbox needs, passed to the helpers in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The root filesystem.
    pub root: RootSpec,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// `NAME=value`, the whole environment: nothing of the caller's leaks in.
    pub env: Vec<String>,
    /// Absolute, inside the root; created when missing.
    pub cwd: String,
    /// Who the command runs as.
    pub identity: Identity,
    /// The sandbox's host name.
    pub hostname: String,
    /// The network it sees.
    pub network: Network,
    /// The file bound on /etc/hosts.
    pub hosts_file: PathBuf,
    /// The file bound on /etc/resolv.conf.
    pub resolv_file: PathBuf,
    /// Files written into /dev/pipes (heredoc scripts).
    pub files: Vec<ScriptFile>,
    /// `RUN --mount`s, made in order.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// `RUN --security=insecure`: every capability of the caller stays.
    pub privileged: bool,
    /// The size of `/dev/shm` in bytes (`kiln build --shm-size`); 64 MiB when not given.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// Resource limits set before the command starts (`kiln build --ulimit`).
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Where pid 1 writes how the command ended (outside the root).
    pub status_file: PathBuf,
}

impl Spec {
    /// The directory that becomes `/`.
    pub fn root_dir(&self) -> PathBuf {
        match &self.root {
            RootSpec::Overlay { merged, .. } => merged.clone(),
            RootSpec::Directory { path } => path.clone(),
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal of this number killed it.
    Signal(i32),
}

impl Exit {
    /// Exit code 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// The shell's convention: 128 + the signal's number.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(signal) => {
                write!(f, "killed by signal {signal} ({})", signal_name(*signal))
            }
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// What pid 1 reports, as one JSON document in the status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Status {
    Ended(Exit),
    SetupFailed { message: String, overlay: bool },
    NotStarted { program: String, message: String },
}

/// Why a command did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The helper process could not be started.
    #[error("starting the sandbox ({exe}): {source}")]
    Spawn {
        /// The executable started as the helper.
        exe: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// A namespace, mount or capability step failed before the command.
    #[error("setting up the sandbox: {message}")]
    Setup {
        /// What failed, and why.
        message: String,
        /// It was the overlay mount (a copy of the root will do).
        overlay: bool,
    },
    /// The command could not be started.
    #[error("{program}: {message}")]
    NotStarted {
        /// The program that was to run.
        program: String,
        /// Why it did not.
        message: String,
    },
    /// The caller cancelled the run.
    #[error("stopped: another stage of the build failed")]
    Cancelled,
    /// The helpers ended without reporting.
    #[error("the sandbox ended without a result ({0})")]
    Lost(String),
    /// Reading or writing the spec, status or output.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No rung of the isolation ladder works here (see [`isolation`]).
    #[error("RUN cannot be isolated here: {0}")]
    Unavailable(String),
}

impl SandboxError {
    /// The overlay could not be mounted: a copy of the root will do.
    pub fn is_overlay_failure(&self) -> bool {
        matches!(self, SandboxError::Setup { overlay: true, .. })
    }
}

/// The read end of the output pipe and who takes what comes out of it.
type OutputPipe<'a> = (std::io::PipeReader, &'a mut dyn FnMut(&[u8]));

/// Where the command's output goes.
pub enum Output<'a> {
    /// The caller's own standard streams (and input), as `kiln run` wants.
    Inherit,
    /// Standard output and error together, handed over as they come.
    Stream(&'a mut dyn FnMut(&[u8])),
}

/// Starts sandboxes by running an executable that dispatches [`HELPER_ARG`] to
/// [`helper_main`] (the `kiln` binary does).
#[derive(Debug, Clone)]
pub struct Sandbox {
    exe: PathBuf,
}

impl Sandbox {
    /// The running executable serves as the helper.
    pub fn current() -> Result<Self, SandboxError> {
        let exe = std::env::current_exe().map_err(|source| SandboxError::Spawn {
            exe: PathBuf::from("/proc/self/exe"),
            source,
        })?;
        Ok(Sandbox { exe })
    }

    /// `exe` serves as the helper (it must dispatch [`HELPER_ARG`] to [`helper_main`]).
    pub fn with_executable(exe: &Path) -> Self {
        Sandbox {
            exe: exe.to_path_buf(),
        }
    }

    /// Runs the spec's command and waits for it (and everything it started) to end.
    pub fn run(&self, spec: &Spec, output: Output<'_>) -> Result<Exit, SandboxError> {
        self.run_until(spec, output, &std::sync::atomic::AtomicBool::new(false))
    }

    /// [`Sandbox::run`], but the moment `cancel` is set the sandbox is killed, with everything
    /// in it, and the run ends with [`SandboxError::Cancelled`].
    pub fn run_until(
        &self,
        spec: &Spec,
        output: Output<'_>,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<Exit, SandboxError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        if let Some(isolation::Chosen::Unavailable(message)) = isolation::chosen() {
            return Err(SandboxError::Unavailable(message.clone()));
        }
        let _ = std::fs::remove_file(&spec.status_file);
        let input = serde_json::to_vec(spec).map_err(|e| SandboxError::Lost(e.to_string()))?;
        // The spec goes in a file beside the status, so the command's standard input stays
        // free: the caller's terminal for `kiln run`, nothing for a build.
        let spec_file = spec.status_file.with_extension("spec");
        std::fs::write(&spec_file, &input)?;
        let mut command = Command::new(&self.exe);
        let role = match isolation::chosen() {
            Some(isolation::Chosen::Rung { name: "chroot", .. }) => CHROOT_ARG,
            _ => HELPER_ARG,
        };
        command.arg(role).arg(&spec_file);
        let mut stream = None;
        match output {
            Output::Inherit => {}
            Output::Stream(sink) => {
                command.stdin(Stdio::null());
                let (reader, writer) = std::io::pipe()?;
                command.stdout(writer.try_clone()?).stderr(writer);
                stream = Some((reader, sink));
            }
        }
        let spawn_error = |source| SandboxError::Spawn {
            exe: self.exe.clone(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        drop(command);
        let pid = rustix::process::Pid::from_child(&child);
        let finished = AtomicBool::new(false);
        let cancelled = AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Killing the helper kills pid 1 (its parent-death signal), and with it the
            // whole pid namespace: the output pipe then ends and the wait below returns.
            scope.spawn(|| {
                while !finished.load(Ordering::Relaxed) {
                    if cancel.load(Ordering::Relaxed) {
                        cancelled.store(true, Ordering::Relaxed);
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            });
            let result = self.collect(&mut child, stream);
            finished.store(true, Ordering::Relaxed);
            result
        })?;
        if cancelled.load(Ordering::Relaxed) {
            return Err(SandboxError::Cancelled);
        }
        let helper = child.wait()?;
        let status = std::fs::read(&spec.status_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Status>(&bytes).ok());
        match status {
            Some(Status::Ended(exit)) => Ok(exit),
            Some(Status::SetupFailed { message, overlay }) => {
                Err(SandboxError::Setup { message, overlay })
            }
            Some(Status::NotStarted { program, message }) => {
                Err(SandboxError::NotStarted { program, message })
            }
            None => Err(SandboxError::Lost(format!("helper {helper}"))),
        }
    }

    /// Streams the output (if it is piped) until the sandbox closes it, then waits for the
    /// helper.
    fn collect(
        &self,
        child: &mut std::process::Child,
        stream: Option<OutputPipe<'_>>,
    ) -> Result<(), SandboxError> {
        if let Some((mut reader, sink)) = stream {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => sink(&buffer[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(e.into());
                    }
                }
            }
        }
        child.wait()?;
        Ok(())
    }
}
