//! dpkg: `/var/lib/dpkg/status`, and the one-file-per-package `status.d/` directory that
//! distroless images keep instead.

use std::path::{Path, PathBuf};

use crate::files::{list_sorted, read_capped};
use crate::{
    DistroPurl, Ecosystem, ImageFiles, OsRelease, Package, Result, ScanWarning, MAX_DATABASE_SIZE,
    MAX_METADATA_SIZE,
};

const STATUS: &str = "/var/lib/dpkg/status";
const STATUS_DIR: &str = "/var/lib/dpkg/status.d";
const INFO_DIR: &str = "/var/lib/dpkg/info";
const DOC_DIR: &str = "/usr/share/doc";

/// One control paragraph: fields in order, continuation lines folded into the value.
pub(crate) struct Paragraph<'a> {
    fields: Vec<(&'a str, String)>,
}

impl Paragraph<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Splits deb822 control text into paragraphs (blank-line separated, `Key: value`, lines
/// starting with a space or tab continue the previous field).
pub(crate) fn paragraphs(text: &str) -> Vec<Paragraph<'_>> {
    let mut out = Vec::new();
    let mut current: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(Paragraph {
                    fields: std::mem::take(&mut current),
                });
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            current.push((key.trim(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        out.push(Paragraph { fields: current });
    }
    out
}

/// Whether a `Status:` value (`want flag state`) means the package's files are on disk. No
/// status line (status.d entries) means installed.
fn is_present(status: Option<&str>) -> bool {
    let Some(status) = status else {
        return true;
    };
    match status.split_whitespace().nth(2) {
        // `not-installed` and `config-files` leave no package behind.
        Some("not-installed" | "config-files") => false,
        Some(_) => true,
        None => false,
    }
}

pub(crate) fn scan(
    image: &dyn ImageFiles,
    os: &OsRelease,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<ScanWarning>,
) -> Result<()> {
    let status = Path::new(STATUS);
    if let Some(bytes) = read_capped(image, status, MAX_DATABASE_SIZE)? {
        let fallback_layer = image.layer_of(status);
        read_database(
            image,
            os,
            status,
            &bytes,
            fallback_layer,
            true,
            packages,
            warnings,
        );
    }
    let dir = Path::new(STATUS_DIR);
    for name in list_sorted(image, dir)? {
        let name_text = name.to_string_lossy();
        // Newer distroless images put `NAME.md5sums` beside each `NAME` entry.
        if name_text.ends_with(".md5sums") || name_text.starts_with('.') {
            continue;
        }
        let path = dir.join(&name);
        let Some(bytes) = read_capped(image, &path, MAX_METADATA_SIZE)? else {
            continue;
        };
        let layer = image.layer_of(&path);
        read_database(image, os, &path, &bytes, layer, false, packages, warnings);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn read_database(
    image: &dyn ImageFiles,
    os: &OsRelease,
    path: &Path,
    bytes: &[u8],
    fallback_layer: Option<usize>,
    per_package_layer: bool,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<ScanWarning>,
) {
    let text = String::from_utf8_lossy(bytes);
    for paragraph in paragraphs(&text) {
        if !is_present(paragraph.get("Status")) {
            continue;
        }
        let (Some(name), Some(version)) = (paragraph.get("Package"), paragraph.get("Version"))
        else {
            warnings.push(ScanWarning {
                path: path.to_path_buf(),
                message: "a package entry without Package or Version was skipped".into(),
            });
            continue;
        };
        let architecture = paragraph.get("Architecture");
        let source = paragraph.get("Source").map(source_package);
        let identity = DistroPurl {
            ecosystem: Ecosystem::Deb,
            namespace: Some(os.id.as_deref().unwrap_or("debian")),
            name,
            version,
            arch: architecture,
            epoch: None,
            upstream: source.as_deref(),
        };
        let Some(purl) = identity.build_or_warn(os, path, warnings) else {
            continue;
        };
        // dpkg rewrites `info/NAME[:ARCH].list` whenever it installs the package, so its layer
        // is the layer that installed this version.
        let layer = per_package_layer
            .then(|| info_list_layer(image, name, architecture))
            .flatten()
            .or(fallback_layer);
        packages.push(Package {
            ecosystem: Ecosystem::Deb,
            name: name.to_string(),
            version: version.to_string(),
            architecture: architecture.map(str::to_string),
            license: copyright_licenses(image, name),
            source: identity.other_source().map(str::to_string),
            supplier: paragraph.get("Maintainer").map(str::to_string),
            purl,
            layer,
            found_in: path.to_path_buf(),
        });
    }
}

/// The licenses a machine-readable (DEP-5) `/usr/share/doc/NAME/copyright` names, in
/// Debian's short-name syntax: the first line of every `License:` field of a `Files:`
/// paragraph, distinct, sorted, joined with ` AND ` (each file is under its own license, so the
/// package is under all of them). `None` when the file is missing, not DEP-5, or names none.
pub(crate) fn copyright_licenses(image: &dyn ImageFiles, name: &str) -> Option<String> {
    if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
        return None;
    }
    let path = Path::new(DOC_DIR).join(name).join("copyright");
    let bytes = read_capped(image, &path, MAX_METADATA_SIZE).ok()??;
    let text = String::from_utf8_lossy(&bytes);
    let mut paragraphs = paragraphs(&text).into_iter();
    let header = paragraphs.next()?;
    if !header.get("Format")?.contains("copyright-format") {
        return None;
    }
    let mut licenses: Vec<String> = paragraphs
        .filter(|p| p.get("Files").is_some())
        .filter_map(|p| {
            let first = p.get("License")?.lines().next()?.trim().to_string();
            (!first.is_empty()).then_some(first)
        })
        .collect();
    licenses.sort();
    licenses.dedup();
    match licenses.len() {
        0 => None,
        1 => licenses.pop(),
        _ => Some(
            licenses
                .iter()
                .map(|l| {
                    if l.contains(char::is_whitespace) {
                        format!("({l})")
                    } else {
                        l.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
    }
}

/// `Source: name (version)` → `name`.
fn source_package(field: &str) -> String {
    field
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn info_list_layer(image: &dyn ImageFiles, name: &str, arch: Option<&str>) -> Option<usize> {
    // Package names are [a-z0-9+.-]; anything else could make the path leave info/.
    if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
        return None;
    }
    let info = PathBuf::from(INFO_DIR);
    arch.filter(|a| !a.contains(['/', '\0']))
        .and_then(|arch| image.layer_of(&info.join(format!("{name}:{arch}.list"))))
        .or_else(|| image.layer_of(&info.join(format!("{name}.list"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DirImage;

    const STATUS_TEXT: &str = "\
Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Description: GNU C Library: Shared libraries
 Contains the standard libraries.
 .
 More.

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: gone
Status: purge ok not-installed
Architecture: amd64

Package: bsdutils
Status: install ok installed
Architecture: amd64
Source: util-linux (2.38.1-5)
Version: 1:2.38.1-5+deb12u1

Package: broken
Status: install ok installed
";

    #[test]
    fn status_file() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/dpkg/info")).unwrap();
        std::fs::write(root.path().join("var/lib/dpkg/status"), STATUS_TEXT).unwrap();
        std::fs::write(
            root.path().join("var/lib/dpkg/info/libc6:amd64.list"),
            "/.\n",
        )
        .unwrap();
        let os = OsRelease::parse("ID=debian\nVERSION_ID=12\n");
        let (packages, warnings) = crate::scan_dir(scan, &DirImage::new(root.path()), &os).unwrap();
        let names: Vec<_> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["libc6", "bsdutils"]);
        assert_eq!(
            packages[0].purl,
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc"
        );
        assert_eq!(packages[0].layer, Some(0));
        assert_eq!(packages[1].version, "1:2.38.1-5+deb12u1");
        assert_eq!(packages[1].source.as_deref(), Some("util-linux"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn distroless_status_d() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("var/lib/dpkg/status.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("base-files"),
            "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n",
        )
        .unwrap();
        std::fs::write(dir.join("base-files.md5sums"), "abc  etc/issue\n").unwrap();
        std::fs::write(
            dir.join("tzdata"),
            "Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n",
        )
        .unwrap();
        let os = OsRelease::default();
        let (packages, warnings) = crate::scan_dir(scan, &DirImage::new(root.path()), &os).unwrap();
        let got: Vec<_> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("base-files", "12.4+deb12u5"),
                ("tzdata", "2024a-0+deb12u1")
            ]
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(packages[1].purl.starts_with("pkg:deb/debian/tzdata@"));
    }
}
