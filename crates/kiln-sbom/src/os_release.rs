//! `/etc/os-release` (freedesktop.org's format: shell-style `KEY=value` lines).

/// The fields of os-release the SBOM uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID` (`debian`, `alpine`, `fedora`), lowercase.
    pub id: Option<String>,
    /// `ID_LIKE`, split on spaces.
    pub id_like: Vec<String>,
    /// `NAME` (`Debian GNU/Linux`).
    pub name: Option<String>,
    /// `VERSION_ID` (`12`, `3.19.1`).
    pub version_id: Option<String>,
    /// `VERSION_CODENAME` (`bookworm`).
    pub version_codename: Option<String>,
    /// `PRETTY_NAME`.
    pub pretty_name: Option<String>,
}

impl OsRelease {
    /// Parses os-release text; unknown keys and malformed lines are ignored.
    pub fn parse(text: &str) -> OsRelease {
        let mut release = OsRelease::default();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let Some((key, raw)) = line.split_once('=') else {
                continue;
            };
            let value = unquote(raw.trim());
            if value.is_empty() {
                continue;
            }
            match key.trim() {
                "ID" => release.id = Some(value.to_ascii_lowercase()),
                "ID_LIKE" => {
                    release.id_like = value.split_whitespace().map(str::to_string).collect()
                }
                "NAME" => release.name = Some(value),
                "VERSION_ID" => release.version_id = Some(value),
                "VERSION_CODENAME" => release.version_codename = Some(value),
                "PRETTY_NAME" => release.pretty_name = Some(value),
                _ => {}
            }
        }
        release
    }

    /// The purl `distro` qualifier: `ID-VERSION_ID` (`debian-12`, `alpine-3.19.1`), or
    /// `ID-VERSION_CODENAME` for releases without a version (Debian testing).
    pub fn distro(&self) -> Option<String> {
        let id = self.id.as_deref()?;
        let version = self
            .version_id
            .as_deref()
            .or(self.version_codename.as_deref())?;
        Some(format!("{id}-{version}"))
    }

    /// Whether the OS is `id` or says it is like it.
    pub fn is_like(&self, id: &str) -> bool {
        self.id.as_deref() == Some(id) || self.id_like.iter().any(|like| like == id)
    }
}

/// Removes one level of shell quoting ('…' literal, "…" with backslash escapes).
fn unquote(raw: &str) -> String {
    let bytes = raw.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'\'' && bytes[bytes.len() - 1] == b'\'' {
        return raw[1..raw.len() - 1].to_string();
    }
    if bytes.len() >= 2 && bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"' {
        let mut out = String::new();
        let mut chars = raw[1..raw.len() - 1].chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    raw.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_alpine() {
        let debian = OsRelease::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n# comment\nbroken line\n",
        );
        assert_eq!(debian.id.as_deref(), Some("debian"));
        assert_eq!(debian.distro().as_deref(), Some("debian-12"));
        assert_eq!(
            debian.pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        let alpine = OsRelease::parse("ID=alpine\nVERSION_ID=3.19.1\nNAME='Alpine Linux'\n");
        assert_eq!(alpine.distro().as_deref(), Some("alpine-3.19.1"));
        assert_eq!(alpine.name.as_deref(), Some("Alpine Linux"));
        let testing = OsRelease::parse("ID=debian\nVERSION_CODENAME=trixie\n");
        assert_eq!(testing.distro().as_deref(), Some("debian-trixie"));
        let ubuntu = OsRelease::parse("ID=ubuntu\nID_LIKE=debian\n");
        assert!(ubuntu.is_like("debian"));
        assert_eq!(
            OsRelease::parse("ID=\"a\\\"b\"").id.as_deref(),
            Some("a\"b")
        );
        assert_eq!(OsRelease::parse("ID=\"").id.as_deref(), Some("\""));
    }
}
