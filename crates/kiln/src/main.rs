//! kiln: the command line. It reads arguments, calls the libraries and reports; nothing else.

mod attest_cmd;
mod build_cmd;
mod cli;
mod graph_cmd;
mod hint;
mod platforms_cmd;
mod progress;
mod recipe;
mod registry_cmd;
mod report;
mod run_cmd;
mod store_cmd;

use clap::Parser;
use kiln_store::Store;
use std::process::ExitCode;

/// SIGINT and SIGTERM end kiln at once, whatever the caller's dispositions: the sandbox helpers
/// die with it (parent-death signal), nothing half-written is ever named in the store, and the
/// next build reuses every step that finished and clears the work area left behind.
fn stop_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            // Never eprintln!: it panics when standard error is gone, and the exit must happen.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"\ninterrupted: kiln stopped; the steps that finished are cached\n",
            );
            std::process::exit(128 + signal);
        }
    });
}

/// mimalloc: fewer page faults and no arena lock contention when the warm walk allocates on all
/// cores.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The sandbox's helper processes are this executable with a hidden first argument; they
    // must start before anything creates a thread.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| {
        a == kiln_sandbox::HELPER_ARG
            || a == kiln_sandbox::INIT_ARG
            || a == kiln_sandbox::CHROOT_ARG
    }) {
        let code = kiln_sandbox::helper_main(&args);
        return ExitCode::from(u8::try_from(code).unwrap_or(125));
    }
    // The isolation ladder: without CAP_SYS_ADMIN kiln works as root of a user namespace.
    if let Some(code) = kiln_sandbox::isolation::enter(&args) {
        return ExitCode::from(u8::try_from(code).unwrap_or(125));
    }
    stop_on_signals();
    let cli = cli::Cli::parse();
    let root = cli.root.clone().unwrap_or_else(Store::default_root);
    match &cli.command {
        cli::Command::Build(args) => build_cmd::run(args, &root),
        cli::Command::Run(args) => run_cmd::run(args, &root),
        cli::Command::Graph(args) => graph_cmd::run(args, &root),
        cli::Command::Pull(args) => registry_cmd::pull(args, &root),
        cli::Command::Push(args) => registry_cmd::push(args, &root),
        cli::Command::Login(args) => registry_cmd::login(args),
        cli::Command::Logout { server } => registry_cmd::logout(server.as_deref()),
        other => store_cmd::run(other, &root),
    }
}
