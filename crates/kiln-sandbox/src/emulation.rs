//! Whether this machine can execute programs of a platform: natively, or through a
//! binfmt_misc entry (qemu-user) registered with the `F` flag, whose interpreter the kernel
//! opened at registration and so runs inside any root filesystem. kiln never copies an
//! emulator into the root: nothing of it can land in a layer.
//!
//! Checked before a build runs anything, so a platform that cannot execute fails the build
//! with what to install and register, and the store is left as it was.

use std::path::{Path, PathBuf};

/// Where the kernel shows binfmt_misc entries.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// Why a platform's programs cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum EmulationError {
    /// kiln does not know how that architecture's programs look (no ELF machine for it).
    #[error("{platform}: kiln cannot tell how its programs look, so it cannot check that this machine ({host}) runs them")]
    UnknownArchitecture {
        /// The platform asked for.
        platform: String,
        /// This machine's architecture.
        host: String,
    },
    /// Nothing handles the architecture's programs.
    #[error("{platform}: this machine ({host}) cannot run its programs: {why}.\n{help}")]
    NotRunnable {
        /// The platform asked for.
        platform: String,
        /// This machine's architecture.
        host: String,
        /// What is missing.
        why: String,
        /// What to install and register.
        help: String,
    },
}

/// A platform's CPU as the ELF header of its programs says it: class (1: 32-bit, 2: 64-bit),
/// byte order (1: little, 2: big), `e_machine`, and qemu's name for it.
struct Elf {
    class: u8,
    data: u8,
    machine: u16,
    qemu: &'static str,
}

/// The ELF identity of an OCI architecture (`arm64`, `arm`, `s390x`, ...).
fn elf_of(architecture: &str) -> Option<Elf> {
    let (class, data, machine, qemu) = match architecture {
        "amd64" => (2, 1, 62, "x86_64"),
        "386" => (1, 1, 3, "i386"),
        "arm64" => (2, 1, 183, "aarch64"),
        "arm" => (1, 1, 40, "arm"),
        "ppc64le" => (2, 1, 21, "ppc64le"),
        "ppc64" => (2, 2, 21, "ppc64"),
        "s390x" => (2, 2, 22, "s390x"),
        "riscv64" => (2, 1, 243, "riscv64"),
        "mips64le" => (2, 1, 8, "mips64el"),
        "mips64" => (2, 2, 8, "mips64"),
        "loong64" => (2, 1, 258, "loongarch64"),
        _ => return None,
    };
    Some(Elf {
        class,
        data,
        machine,
        qemu,
    })
}

impl Elf {
    /// The first 20 bytes of an executable of this CPU: what binfmt_misc matches against.
    fn header(&self) -> [u8; 20] {
        let mut header = [0u8; 20];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = self.class;
        header[5] = self.data;
        header[6] = 1;
        let (kind, machine) = if self.data == 2 {
            (2u16.to_be_bytes(), self.machine.to_be_bytes())
        } else {
            (2u16.to_le_bytes(), self.machine.to_le_bytes())
        };
        header[16..18].copy_from_slice(&kind);
        header[18..20].copy_from_slice(&machine);
        header
    }
}

/// The OCI architectures this machine runs without an emulator.
fn native(host: &str) -> &'static [&'static str] {
    match host {
        "x86_64" => &["amd64", "386"],
        "aarch64" => &["arm64"],
        "arm" => &["arm"],
        "s390x" => &["s390x"],
        "powerpc64" => &["ppc64le", "ppc64"],
        "riscv64" => &["riscv64"],
        "loongarch64" => &["loong64"],
        _ => &[],
    }
}

/// One binfmt_misc entry, as its file under [`BINFMT_DIR`] shows it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Entry {
    enabled: bool,
    interpreter: String,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse_entry(text: &str) -> Entry {
    let mut entry = Entry::default();
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "enabled" => entry.enabled = true,
            "interpreter" => entry.interpreter = value.trim().to_string(),
            "flags:" => entry.flags = value.trim().to_string(),
            "offset" => entry.offset = value.trim().parse().unwrap_or(usize::MAX),
            "magic" => entry.magic = hex_bytes(value).unwrap_or_default(),
            "mask" => entry.mask = hex_bytes(value).unwrap_or_default(),
            _ => {}
        }
    }
    entry
}

impl Entry {
    /// Whether the kernel would hand a program starting with `header` to this entry.
    fn matches(&self, header: &[u8]) -> bool {
        if self.magic.is_empty() {
            return false;
        }
        let Some(end) = self.offset.checked_add(self.magic.len()) else {
            return false;
        };
        let Some(window) = header.get(self.offset..end) else {
            return false;
        };
        window
            .iter()
            .zip(&self.magic)
            .enumerate()
            .all(|(i, (byte, magic))| {
                let mask = self.mask.get(i).copied().unwrap_or(0xff);
                byte & mask == magic & mask
            })
    }
}

/// What to run to make `qemu` programs work here.
fn help(qemu: &str, dir: &Path) -> String {
    format!(
        "Install the emulators and register this one with the F flag (as root):\n  \
         apt-get install qemu-user-static\n  \
         mountpoint -q {dir} || mount -t binfmt_misc binfmt_misc {dir}\n  \
         grep -v '^#' /usr/lib/binfmt.d/qemu-{qemu}.conf > {dir}/register\n\
         (or, with docker: docker run --privileged --rm tonistiigi/binfmt --install {qemu})",
        dir = dir.display()
    )
}

/// Checks that programs of `os/architecture` run here; see the module's documentation.
pub fn check(os: &str, architecture: &str, variant: Option<&str>) -> Result<(), EmulationError> {
    check_in(
        Path::new(BINFMT_DIR),
        std::env::consts::ARCH,
        os,
        architecture,
        variant,
    )
}

/// [`check`] against the binfmt_misc entries in `dir`, on a machine of CPU `host`.
pub fn check_in(
    dir: &Path,
    host: &str,
    os: &str,
    architecture: &str,
    variant: Option<&str>,
) -> Result<(), EmulationError> {
    let platform = match variant {
        Some(v) if !v.is_empty() => format!("{os}/{architecture}/{v}"),
        _ => format!("{os}/{architecture}"),
    };
    let host_os = std::env::consts::OS;
    // An image that names no OS or architecture is taken as this machine's (as runtimes do).
    if architecture.is_empty() {
        return Ok(());
    }
    if !os.is_empty() && os != host_os {
        return Err(EmulationError::NotRunnable {
            platform,
            host: host.to_string(),
            why: format!("kiln runs {host_os} programs only"),
            help: "Build that platform's images on a machine of its operating system.".into(),
        });
    }
    if native(host).contains(&architecture) {
        return Ok(());
    }
    let Some(elf) = elf_of(architecture) else {
        return Err(EmulationError::UnknownArchitecture {
            platform,
            host: host.to_string(),
        });
    };
    let not_runnable = |why: String| EmulationError::NotRunnable {
        platform: platform.clone(),
        host: host.to_string(),
        why,
        help: help(elf.qemu, dir),
    };
    let status = std::fs::read_to_string(dir.join("status")).map_err(|_| {
        not_runnable(format!(
            "binfmt_misc is not mounted at {} (no emulator is registered)",
            dir.display()
        ))
    })?;
    if status.trim() != "enabled" {
        return Err(not_runnable(format!(
            "binfmt_misc is turned off ({}/status says {:?})",
            dir.display(),
            status.trim()
        )));
    }
    let header = elf.header();
    let mut found: Vec<(PathBuf, Entry)> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        not_runnable(format!(
            "its entries cannot be read ({}: {e})",
            dir.display()
        ))
    })?;
    for item in entries.flatten() {
        let name = item.file_name();
        if name == "status" || name == "register" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(item.path()) else {
            continue;
        };
        let entry = parse_entry(&text);
        if entry.matches(&header) {
            found.push((item.path(), entry));
        }
    }
    if found
        .iter()
        .any(|(_, e)| e.enabled && e.flags.contains('F'))
    {
        return Ok(());
    }
    let why = match found.first() {
        None => format!(
            "no binfmt_misc entry handles {} programs (no qemu-{} is registered)",
            elf.qemu, elf.qemu
        ),
        Some((path, entry)) if !entry.enabled => {
            format!("the binfmt_misc entry {} is disabled", path.display())
        }
        Some((path, entry)) => format!(
            "the binfmt_misc entry {} was registered without the F flag (flags {:?}), so its interpreter {} would have to be inside the image; kiln never puts an emulator there",
            path.display(),
            entry.flags,
            entry.interpreter
        ),
    };
    Err(not_runnable(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn binfmt(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"))
        };
        write("status", "enabled\n");
        write("register", "");
        for (name, text) in entries {
            write(name, text);
        }
        dir
    }

    #[test]
    fn native_platforms_need_nothing() {
        let none = Path::new("/nonexistent");
        assert!(check_in(none, "x86_64", "linux", "amd64", None).is_ok());
        assert!(check_in(none, "x86_64", "linux", "386", None).is_ok());
        assert!(check_in(none, "aarch64", "linux", "arm64", None).is_ok());
    }

    #[test]
    fn a_registered_f_entry_runs_the_platform() {
        let dir = binfmt(&[("qemu-aarch64", AARCH64)]);
        assert!(check_in(dir.path(), "x86_64", "linux", "arm64", None).is_ok());
        // Its magic is aarch64's only.
        let err = check_in(dir.path(), "x86_64", "linux", "s390x", None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no qemu-s390x is registered"), "{text}");
        assert!(text.contains("apt-get install qemu-user-static"), "{text}");
        assert!(text.contains("/usr/lib/binfmt.d/qemu-s390x.conf"), "{text}");
    }

    #[test]
    fn disabled_or_f_less_entries_do_not_count() {
        let disabled = AARCH64.replacen("enabled", "disabled", 1);
        let dir = binfmt(&[("qemu-aarch64", &disabled)]);
        let text = check_in(dir.path(), "x86_64", "linux", "arm64", None)
            .unwrap_err()
            .to_string();
        assert!(text.contains("is disabled"), "{text}");
        let no_f = AARCH64.replace("flags: POF", "flags: P");
        let dir = binfmt(&[("qemu-aarch64", &no_f)]);
        let text = check_in(dir.path(), "x86_64", "linux", "arm64", None)
            .unwrap_err()
            .to_string();
        assert!(text.contains("without the F flag"), "{text}");
    }

    #[test]
    fn an_unmounted_binfmt_misc_says_so() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let text = check_in(dir.path(), "x86_64", "linux", "arm64", None)
            .unwrap_err()
            .to_string();
        assert!(text.contains("not mounted"), "{text}");
        assert!(text.contains("mount -t binfmt_misc"), "{text}");
    }

    #[test]
    fn headers_match_qemus_own_magic() {
        // The arm (v7) entry of Debian's qemu-user-static.
        let arm = parse_entry("enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c4601010100000000000000000002002800\nmask ffffffffffffff00fffffffffffffffffeffffff\n");
        let elf = elf_of("arm").unwrap_or_else(|| panic!("arm"));
        assert!(arm.matches(&elf.header()));
        let s390x = parse_entry("enabled\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c4602020100000000000000000000020016\nmask ffffffffffffff00fffffffffffffffffffeffff\n");
        let elf = elf_of("s390x").unwrap_or_else(|| panic!("s390x"));
        assert!(s390x.matches(&elf.header()));
        assert!(!s390x.matches(&elf_of("arm64").map(|e| e.header()).unwrap_or_default()));
    }
}
