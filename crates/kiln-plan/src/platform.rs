//! Platforms as `os/arch[/variant]`, and the automatic platform build args.

use std::fmt;

/// A platform as OCI names it: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`, ….
    pub os: String,
    /// `amd64`, `arm64`, ….
    pub architecture: String,
    /// `v7` for `arm/v7`, ….
    pub variant: Option<String>,
}

impl Platform {
    /// The platform kiln runs on, named as OCI names it.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            "loongarch64" => ("loong64", None),
            "mips64" => ("mips64le", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// The same platform as an OCI image index names it (what registries and archives match).
    pub fn to_oci(&self) -> kiln_oci::Platform {
        kiln_oci::Platform {
            variant: self.variant.clone(),
            ..kiln_oci::Platform::new(self.os.clone(), self.architecture.clone())
        }
    }

    /// Parses `--platform`'s list: platforms separated by commas, `local` meaning this
    /// machine's, each once (in the order first given).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let mut platforms: Vec<Platform> = Vec::new();
        for item in text.split(',') {
            let platform = match item.trim() {
                "" => return Err(format!("invalid platform list {text:?}: an empty entry")),
                "local" => Platform::host(),
                one => Platform::parse(one)?,
            };
            if !platforms.contains(&platform) {
                platforms.push(platform);
            }
        }
        Ok(platforms)
    }

    /// Parses `linux/arm64`, `linux/arm/v7`, or just `arm64` (the host's OS is assumed).
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        let bad =
            || format!("invalid platform {text:?}: expected os/arch[/variant], e.g. linux/amd64");
        let (os, architecture, variant) = match parts.as_slice() {
            [arch] => (std::env::consts::OS, *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(bad()),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !valid(os) || !valid(architecture) || variant.is_some_and(|v| !valid(v)) {
            return Err(bad());
        }
        let os = os.to_ascii_lowercase();
        let (architecture, variant) = normalize(
            &architecture.to_ascii_lowercase(),
            variant.map(str::to_ascii_lowercase),
        );
        Ok(Platform {
            os,
            architecture,
            variant,
        })
    }
}

/// The spellings containerd normalises (`x86_64` → `amd64`, `aarch64` → `arm64`).
fn normalize(architecture: &str, variant: Option<String>) -> (String, Option<String>) {
    match (architecture, variant.as_deref()) {
        ("x86_64" | "x86-64", _) => ("amd64".into(), variant),
        ("aarch64", Some("v8") | None) => ("arm64".into(), None),
        ("arm64", Some("v8")) => ("arm64".into(), None),
        ("armhf", _) => ("arm".into(), Some("v7".into())),
        ("armel", _) => ("arm".into(), Some("v6".into())),
        ("i386" | "i686", _) => ("386".into(), variant),
        (arch, _) => (arch.to_string(), variant),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// The automatic platform args (TARGETPLATFORM, BUILDOS, ...) with their values.
pub fn platform_args(target: &Platform, build: &Platform) -> Vec<(String, String)> {
    let mut args = Vec::new();
    for (prefix, platform) in [("TARGET", target), ("BUILD", build)] {
        args.push((format!("{prefix}PLATFORM"), platform.to_string()));
        args.push((format!("{prefix}OS"), platform.os.clone()));
        args.push((format!("{prefix}ARCH"), platform.architecture.clone()));
        args.push((
            format!("{prefix}VARIANT"),
            platform.variant.clone().unwrap_or_default(),
        ));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!(
            Platform::parse("linux/amd64").map(|p| p.to_string()),
            Ok("linux/amd64".into())
        );
        assert_eq!(
            Platform::parse("linux/arm/v7").map(|p| p.to_string()),
            Ok("linux/arm/v7".into())
        );
        assert_eq!(
            Platform::parse("linux/aarch64").map(|p| p.to_string()),
            Ok("linux/arm64".into())
        );
        assert_eq!(
            Platform::parse("Linux/X86_64").map(|p| p.to_string()),
            Ok("linux/amd64".into())
        );
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn parses_lists_with_local() {
        let list = Platform::parse_list("linux/amd64, linux/arm64,linux/arm/v7,local").unwrap();
        let names: Vec<String> = list.iter().map(ToString::to_string).collect();
        let mut expected = vec!["linux/amd64", "linux/arm64", "linux/arm/v7"];
        let host = Platform::host().to_string();
        if !expected.contains(&host.as_str()) {
            expected.push(&host);
        }
        assert_eq!(names, expected);
        assert!(Platform::parse_list("linux/amd64,,linux/arm64").is_err());
        assert!(Platform::parse_list("linux/amd64,linux/").is_err());
    }

    #[test]
    fn platform_args_name_every_part() {
        let target = Platform::parse("linux/arm/v7").unwrap();
        let build = Platform::parse("linux/amd64").unwrap();
        let args = platform_args(&target, &build);
        let get = |k: &str| args.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("TARGETPLATFORM"), Some("linux/arm/v7"));
        assert_eq!(get("TARGETVARIANT"), Some("v7"));
        assert_eq!(get("BUILDARCH"), Some("amd64"));
        assert_eq!(get("BUILDVARIANT"), Some(""));
    }
}
