//! The isolation ladder: how RUN steps are kept apart from the machine kiln runs on, chosen
//! once at start, before any thread exists.
//!
//! - `sandbox`: kiln is root with CAP_SYS_ADMIN; each RUN gets mount, pid, uts and ipc
//!   namespaces of its own.
//! - `userns`: kiln lacks CAP_SYS_ADMIN (an ordinary user, or root in a container such as
//!   `podman run`'s default): kiln runs itself again in a user namespace where it has it, and
//!   the sandbox's mounts fall back where such a namespace may not mount (procfs bound from the
//!   existing /proc, sysfs bound read-only, devices bound, overlay with `userxattr` or a copy).
//! - neither: no namespace can be made (Docker's default seccomp profile, Kubernetes
//!   `RuntimeDefault`). kiln still works for what needs no RUN; a RUN fails with what is
//!   missing and what would fix it.
//!
//! `--isolation=auto|sandbox|userns` (or `KILN_ISOLATION`) forces a rung.

use std::sync::OnceLock;

/// What `--isolation` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The first rung that works here.
    Auto,
    /// Namespaces made directly: root with CAP_SYS_ADMIN.
    Sandbox,
    /// Through a user namespace, root or not.
    Userns,
    /// Chrooted into a private copy, no namespace: only inside a container.
    Chroot,
    /// The same on a machine kiln does not take for a container: the risk named.
    ChrootOnHost,
}

impl Requested {
    /// Parses a value of `--isolation`.
    pub fn parse(value: &str) -> Option<Requested> {
        match value {
            "auto" => Some(Requested::Auto),
            "sandbox" => Some(Requested::Sandbox),
            "userns" => Some(Requested::Userns),
            "chroot" => Some(Requested::Chroot),
            "chroot-on-host" => Some(Requested::ChrootOnHost),
            _ => None,
        }
    }
}

/// What this process runs RUN steps with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    /// `sandbox`, or `userns` once inside the user namespace; `why` is for the report line.
    Rung {
        /// The rung's name, as `--isolation` spells it.
        name: &'static str,
        /// Who kiln is and what the rung gives, in words.
        why: String,
    },
    /// Nothing works: every RUN fails with this message.
    Unavailable(String),
}

impl std::fmt::Display for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chosen::Rung { name, why } => write!(f, "isolation: {name} ({why})"),
            Chosen::Unavailable(message) => {
                write!(f, "isolation: none: RUN steps will fail here: {message}")
            }
        }
    }
}

static CHOSEN: OnceLock<Chosen> = OnceLock::new();

/// The rung chosen at start, for the line a build prints first; `None` when [`enter`] was not
/// called (the library used on its own).
pub fn chosen() -> Option<&'static Chosen> {
    CHOSEN.get()
}

/// Records the choice (the first call wins).
pub(crate) fn choose(chosen: Chosen) {
    let _ = CHOSEN.set(chosen);
}

/// The value of `--isolation` among the arguments (`--isolation=X` or `--isolation X`, up
/// to `--`), else of `KILN_ISOLATION`. An unknown value is left for the argument parser to
/// refuse.
pub fn requested(args: &[std::ffi::OsString], env: Option<&str>) -> Requested {
    let mut iter = args.iter().map(|a| a.to_str().unwrap_or(""));
    let mut found = None;
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        if let Some(value) = arg.strip_prefix("--isolation=") {
            found = Some(value.to_string());
        } else if arg == "--isolation" {
            found = iter.next().map(str::to_string);
        }
    }
    found
        .as_deref()
        .or(env)
        .and_then(Requested::parse)
        .unwrap_or(Requested::Auto)
}

pub use crate::privileges::Privileges;

/// The rung to take, before trying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Namespaces made directly by this process's sandbox helpers.
    Sandbox,
    /// Run again inside a user namespace.
    Userns,
    /// The chroot rung, asked for.
    Chroot,
    /// `--isolation=sandbox` or `chroot` where it cannot work.
    Refused(String),
}

/// The ladder's choice for what was asked and what the process may do.
pub fn plan(requested: Requested, privileges: Privileges, in_container: bool) -> Plan {
    let direct = privileges.root && privileges.sys_admin;
    match requested {
        Requested::Auto if direct => Plan::Sandbox,
        Requested::Auto | Requested::Userns => Plan::Userns,
        Requested::Sandbox if direct => Plan::Sandbox,
        Requested::Chroot | Requested::ChrootOnHost if !privileges.root || !privileges.chroot => {
            Plan::Refused(format!(
                "--isolation=chroot needs root with CAP_SYS_CHROOT and CAP_MKNOD (Docker's default \
                 capabilities) and kiln is {}",
                privileges.who()
            ))
        }
        Requested::Chroot if !in_container => Plan::Refused(
            "--isolation=chroot runs RUN steps without namespaces, which kiln does only inside a \
             container, and this does not look like one (no /.dockerenv, /run/.containerenv, \
             KUBERNETES_SERVICE_HOST or container cgroup); --isolation=chroot-on-host accepts \
             the weaker isolation here"
                .into(),
        ),
        Requested::Chroot | Requested::ChrootOnHost => Plan::Chroot,
        Requested::Sandbox => Plan::Refused(format!(
            "--isolation=sandbox needs root with CAP_SYS_ADMIN and kiln is {}; \
             use --isolation=auto (or userns), or give kiln CAP_SYS_ADMIN \
             (--cap-add SYS_ADMIN; in Kubernetes securityContext.capabilities.add: [SYS_ADMIN])",
            privileges.who()
        )),
    }
}

/// Whether kiln runs inside a container: a runtime's marker file, Kubernetes' environment, or
/// a container runtime in PID 1's cgroup.
pub fn in_container() -> bool {
    let markers = ["/.dockerenv", "/run/.containerenv"];
    markers.iter().any(|m| std::path::Path::new(m).exists())
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::fs::read_to_string("/proc/1/cgroup").is_ok_and(|text| cgroup_says_container(&text))
}

/// A cgroup path of a container runtime (`docker`, `kubepods`, `libpod`, `containerd`, `lxc`).
pub fn cgroup_says_container(cgroup: &str) -> bool {
    cgroup.lines().any(|line| {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        ["docker", "kubepods", "libpod", "containerd", "lxc"]
            .iter()
            .any(|runtime| path.contains(runtime))
    })
}

/// Root without CAP_SETFCAP may make a user namespace but not be root in it (Linux 5.12 and
/// later refuse the map): what is missing and what fixes it.
pub fn no_root_map_message(privileges: Privileges) -> String {
    format!(
        "kiln is {} and without CAP_SETFCAP, so Linux refuses to map root into a user \
         namespace. Any one of these fixes it: run the container as a non-root user (--user \
         1000; Kubernetes securityContext.runAsUser: 1000 with runAsNonRoot: true), keep \
         CAP_SETFCAP (--cap-add SETFCAP; capabilities.add: [SETFCAP]), or give kiln \
         CAP_SYS_ADMIN. See docs/ci.md",
        privileges.who()
    )
}

/// The error where no user namespace can be made: what is missing and what fixes it.
pub fn no_namespace_message(privileges: Privileges, error: &std::io::Error) -> String {
    format!(
        "kiln is {} and creating a user namespace was refused ({error}). \
         Docker's default seccomp profile and Kubernetes' RuntimeDefault refuse it. Any one of \
         these fixes it: allow user namespaces (docker/podman run --security-opt \
         seccomp=unconfined, or a profile that allows unshare and clone with CLONE_NEWUSER; in \
         Kubernetes securityContext.seccompProfile.type: Unconfined; on the host, sysctl \
         user.max_user_namespaces > 0), or give kiln CAP_SYS_ADMIN as root (--cap-add SYS_ADMIN; \
         Kubernetes securityContext.capabilities.add: [SYS_ADMIN]). See docs/ci.md",
        privileges.who()
    )
}

/// Called first thing in `main`, before any thread: chooses the rung, and for `userns` runs
/// kiln again in a user namespace. Returns `Some(code)` in the process that only waited for
/// that child (it exits with the child's code), `None` where the work goes on.
pub fn enter(args: &[std::ffi::OsString]) -> Option<i32> {
    if let Some(who) = crate::userns::child_report() {
        return match crate::userns::enter_as_child() {
            Ok(()) => {
                let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
                choose(Chosen::Rung {
                    name: "userns",
                    why: crate::userns::describe(&who, &uid_map),
                });
                None
            }
            Err(e) => {
                eprintln!("error: entering kiln's user namespace: {e}");
                Some(125)
            }
        };
    }
    let env = std::env::var("KILN_ISOLATION").ok();
    let requested = requested(args, env.as_deref());
    let privileges = Privileges::current();
    let container = in_container();
    let chroot_rung = |reason: String| Chosen::Rung {
        name: "chroot",
        why: format!(
            "{}, {}, {reason}: chrooted into a private copy, seccomp, no_new_privs, \
             no namespaces",
            privileges.who(),
            if container {
                "in a container"
            } else {
                "not in a container"
            }
        ),
    };
    match plan(requested, privileges, container) {
        Plan::Chroot => {
            choose(chroot_rung("as asked".into()));
            None
        }
        Plan::Sandbox => {
            choose(Chosen::Rung {
                name: "sandbox",
                why: format!(
                    "{}: mount, pid, uts and ipc namespaces, seccomp, no_new_privs",
                    privileges.who()
                ),
            });
            None
        }
        Plan::Refused(message) => {
            eprintln!("error: {message}");
            Some(125)
        }
        Plan::Userns => match crate::userns::probe() {
            Ok(()) if privileges.root && !privileges.set_ids && !privileges.set_fcap => {
                let message = no_root_map_message(privileges);
                if requested == Requested::Auto && container && privileges.chroot {
                    choose(chroot_rung(
                        "root cannot be mapped into a user namespace".into(),
                    ));
                    None
                } else if requested == Requested::Auto {
                    choose(Chosen::Unavailable(message));
                    None
                } else {
                    eprintln!("error: {message}");
                    Some(125)
                }
            }
            Ok(()) => Some(crate::userns::run_outer(privileges).unwrap_or_else(|e| {
                eprintln!("error: starting kiln in a user namespace: {e}");
                125
            })),
            Err(error) => {
                let message = no_namespace_message(privileges, &error);
                if privileges.root && requested == Requested::Auto && container && privileges.chroot
                {
                    choose(chroot_rung(format!("no user namespace ({error})")));
                    None
                } else if privileges.root && requested == Requested::Auto {
                    // Root can still unpack, copy and export: only RUN needs a namespace.
                    choose(Chosen::Unavailable(message));
                    None
                } else {
                    eprintln!("error: {message}");
                    Some(125)
                }
            }
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<std::ffi::OsString> {
        list.iter().map(Into::into).collect()
    }

    #[test]
    fn the_flag_is_found_in_both_spellings_and_before_the_separator_only() {
        assert_eq!(
            requested(&args(&["build", "--isolation=userns", "."]), None),
            Requested::Userns
        );
        assert_eq!(
            requested(&args(&["--isolation", "sandbox", "build"]), None),
            Requested::Sandbox
        );
        assert_eq!(
            requested(&args(&["run", "img", "--", "--isolation=userns"]), None),
            Requested::Auto
        );
        assert_eq!(
            requested(&args(&["build"]), Some("userns")),
            Requested::Userns
        );
        // The flag wins over the environment.
        assert_eq!(
            requested(&args(&["--isolation=auto"]), Some("userns")),
            Requested::Auto
        );
    }

    #[test]
    fn root_without_sys_admin_goes_through_a_user_namespace() {
        let podman_root = Privileges {
            root: true,
            sys_admin: false,
            set_ids: true,
            set_fcap: true,
            chroot: true,
        };
        assert_eq!(plan(Requested::Auto, podman_root, false), Plan::Userns);
        let host_root = Privileges {
            root: true,
            sys_admin: true,
            set_ids: true,
            set_fcap: true,
            chroot: true,
        };
        assert_eq!(plan(Requested::Auto, host_root, false), Plan::Sandbox);
        assert_eq!(plan(Requested::Userns, host_root, false), Plan::Userns);
        let user = Privileges {
            root: false,
            sys_admin: false,
            set_ids: true,
            set_fcap: true,
            chroot: true,
        };
        assert_eq!(plan(Requested::Auto, user, false), Plan::Userns);
    }

    #[test]
    fn forcing_sandbox_without_sys_admin_names_the_fix() {
        let Plan::Refused(message) = plan(
            Requested::Sandbox,
            Privileges {
                root: true,
                sys_admin: false,
                set_ids: true,
                set_fcap: true,
                chroot: true,
            },
            false,
        ) else {
            unreachable!("refused")
        };
        assert!(message.contains("CAP_SYS_ADMIN"), "{message}");
        assert!(message.contains("--cap-add SYS_ADMIN"), "{message}");
    }

    #[test]
    fn chroot_is_refused_outside_a_container_unless_the_risk_is_named() {
        let docker_root = Privileges {
            root: true,
            sys_admin: false,
            set_ids: true,
            set_fcap: true,
            chroot: true,
        };
        let Plan::Refused(message) = plan(Requested::Chroot, docker_root, false) else {
            unreachable!("refused")
        };
        assert!(message.contains("--isolation=chroot-on-host"), "{message}");
        assert_eq!(plan(Requested::Chroot, docker_root, true), Plan::Chroot);
        assert_eq!(
            plan(Requested::ChrootOnHost, docker_root, false),
            Plan::Chroot
        );
        let user = Privileges {
            root: false,
            chroot: false,
            ..docker_root
        };
        assert!(matches!(
            plan(Requested::ChrootOnHost, user, true),
            Plan::Refused(_)
        ));
    }

    #[test]
    fn container_cgroups_are_recognised() {
        assert!(cgroup_says_container("12:pids:/docker/0123abcd\n"));
        assert!(cgroup_says_container("0::/kubepods/besteffort/pod1/abc\n"));
        assert!(!cgroup_says_container("0::/init.scope\n9:name=systemd:/\n"));
    }

    #[test]
    fn root_without_any_capability_is_told_to_run_as_another_user() {
        let message = no_root_map_message(Privileges {
            root: true,
            sys_admin: false,
            set_ids: false,
            set_fcap: false,
            chroot: false,
        });
        assert!(message.contains("CAP_SETFCAP"), "{message}");
        assert!(message.contains("--user 1000"), "{message}");
    }

    #[test]
    fn no_namespace_names_seccomp_and_the_settings_that_fix_it() {
        let message = no_namespace_message(
            Privileges {
                root: true,
                sys_admin: false,
                set_ids: true,
                set_fcap: true,
                chroot: true,
            },
            &std::io::Error::from_raw_os_error(1),
        );
        for needed in [
            "seccomp=unconfined",
            "seccompProfile.type: Unconfined",
            "SYS_ADMIN",
            "RuntimeDefault",
        ] {
            assert!(message.contains(needed), "{needed}: {message}");
        }
        let line = Chosen::Unavailable(message).to_string();
        assert!(line.starts_with("isolation: none"), "{line}");
    }
}
