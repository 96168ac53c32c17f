//! The two helper processes: one that creates the namespaces, and pid 1 inside them.

use crate::setup::{enter_root, namespaces};
use crate::syscall::Linux;
use crate::{Exit, Spec, Status};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// First argument that makes the executable the namespace-creating helper.
pub const HELPER_ARG: &str = "__kiln-sandbox";
/// First argument of pid 1 inside the namespaces.
pub const INIT_ARG: &str = "__kiln-sandbox-init";
/// First argument that makes the executable the helper of the chroot rung (no namespaces).
pub const CHROOT_ARG: &str = "__kiln-sandbox-chroot";

/// The helpers' entry point: `args` are the process's arguments after the executable. Returns
/// the process's exit code. Must run before the process starts any thread (unshare needs a
/// single-threaded process).
pub fn helper_main(args: &[std::ffi::OsString]) -> i32 {
    let (Some(role), Some(spec_file)) = (args.first(), args.get(1)) else {
        return 125;
    };
    let spec_path = Path::new(spec_file);
    let spec: Spec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(message) => {
            eprintln!("kiln sandbox: reading {}: {message}", spec_path.display());
            return 125;
        }
    };
    // Die with the parent: an interrupted build leaves no sandbox behind.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if role == HELPER_ARG {
        create_namespaces(&spec, spec_path)
    } else if role == INIT_ARG {
        init(&spec)
    } else if role == CHROOT_ARG {
        crate::chroot::run(&spec)
    } else {
        125
    }
}

fn write_status(path: &Path, status: &Status) {
    if let Ok(bytes) = serde_json::to_vec(status) {
        let _ = std::fs::write(path, bytes);
    }
}

fn setup_failed(spec: &Spec, message: String) -> i32 {
    write_status(
        &spec.status_file,
        &Status::SetupFailed {
            message,
            overlay: false,
        },
    );
    125
}

fn create_namespaces(spec: &Spec, spec_path: &Path) -> i32 {
    use rustix::thread::UnshareFlags;
    let mut flags = UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWUTS;
    flags |= UnshareFlags::NEWIPC;
    if spec.network == crate::Network::None {
        flags |= UnshareFlags::NEWNET;
    }
    // SAFETY: this process is single-threaded (nothing has spawned a thread before
    // helper_main) and FILES is not among the flags, so no thread can observe a file
    // descriptor table that was unshared from it.
    #[allow(unsafe_code)]
    let unshared = unsafe { rustix::thread::unshare_unsafe(flags) };
    if let Err(e) = unshared {
        return setup_failed(
            spec,
            format!(
                "creating the {} namespaces: {e} (kiln needs CAP_SYS_ADMIN, or a user namespace: --isolation=auto chooses; see docs/ci.md)",
                namespaces(spec.network).join(", ")
            ),
        );
    }
    if let Err(e) = crate::syscall::Syscall::make_private(&Linux, Path::new("/")) {
        return setup_failed(spec, format!("making / private: {e}"));
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return setup_failed(spec, format!("finding kiln's executable: {e}")),
    };
    // Opened now: init's pivot_root changes this process's root too (one mount namespace), so
    // the path is gone by the time the command has ended.
    let mut status_file = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&spec.status_file)
    {
        Ok(file) => file,
        Err(e) => {
            eprintln!("kiln sandbox: {}: {e}", spec.status_file.display());
            return 125;
        }
    };
    // The next child is pid 1 of the new pid namespace: it sets the sandbox up and then
    // becomes the command, which is pid 1 as under docker and BuildKit.
    match Command::new(exe)
        .arg(crate::INIT_ARG)
        .arg(spec_path)
        .status()
    {
        Ok(status) => {
            // An init that failed said why in the status file; one that became the command
            // wrote nothing, and how it ended is the command's.
            let reported = status_file.metadata().is_ok_and(|m| m.len() > 0);
            if !reported {
                use std::os::unix::process::ExitStatusExt;
                let exit = match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(signal)) => Exit::Signal(signal),
                    (None, None) => Exit::Code(125),
                };
                if let Ok(bytes) = serde_json::to_vec(&Status::Ended(exit)) {
                    let _ = status_file.write_all(&bytes);
                    let _ = status_file.sync_data();
                }
            }
            0
        }
        Err(e) => setup_failed(spec, format!("starting the sandbox's init: {e}")),
    }
}

fn init(spec: &Spec) -> i32 {
    // Opened before pivot_root, which hides the host's paths.
    let mut status_file = match std::fs::File::create(&spec.status_file) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("kiln sandbox: {}: {e}", spec.status_file.display());
            return 125;
        }
    };
    let mut report = |status: Status| {
        if let Ok(bytes) = serde_json::to_vec(&status) {
            let _ = status_file.write_all(&bytes);
            let _ = status_file.sync_data();
        }
    };
    if let Err(e) = enter_root(&Linux, spec, true) {
        report(Status::SetupFailed {
            message: e.to_string(),
            overlay: e.overlay,
        });
        return 125;
    }
    if let Err(e) = std::fs::create_dir_all(&spec.cwd) {
        report(Status::SetupFailed {
            message: format!("creating the working directory {}: {e}", spec.cwd),
            overlay: false,
        });
        return 125;
    }
    if let Err(e) = crate::credentials::set_rlimits(&spec.rlimits) {
        report(Status::SetupFailed {
            message: format!("setting --ulimit: {e}"),
            overlay: false,
        });
        return 125;
    }
    if !spec.privileged {
        if let Err(e) = crate::credentials::limit_capabilities() {
            report(Status::SetupFailed {
                message: format!("dropping capabilities: {e}"),
                overlay: false,
            });
            return 125;
        }
    }
    if let Err(e) = crate::credentials::drop_to(&spec.identity) {
        report(Status::SetupFailed {
            message: format!(
                "becoming uid {} gid {}: {e}",
                spec.identity.uid, spec.identity.gid
            ),
            overlay: false,
        });
        return 125;
    }
    // Last, as nothing below needs what it refuses: the command and all it starts keep it.
    if !spec.privileged {
        if let Err(e) = crate::seccomp::programs(&[]).and_then(|p| crate::seccomp::confine(&p)) {
            report(Status::SetupFailed {
                message: format!("applying the seccomp filter and no_new_privs: {e}"),
                overlay: false,
            });
            return 125;
        }
    }
    let Some((program, args)) = spec.argv.split_first() else {
        report(Status::NotStarted {
            program: String::new(),
            message: "the command is empty".into(),
        });
        return 125;
    };
    let env: Vec<(&str, &str)> = spec
        .env
        .iter()
        .map(|entry| entry.split_once('=').unwrap_or((entry.as_str(), "")))
        .collect();
    // pid 1 becomes the command, as runc makes it under docker and BuildKit: an init such as
    // tini finds itself pid 1, and when the command ends the kernel kills everything left in
    // the namespace. The helper outside reads how it ended. Only a failed exec returns here.
    use std::os::unix::process::CommandExt;
    let error = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::inherit())
        .exec();
    let message = if error.kind() == std::io::ErrorKind::NotFound {
        "not found in the image".to_string()
    } else {
        error.to_string()
    };
    report(Status::NotStarted {
        program: program.clone(),
        message,
    });
    125
}
