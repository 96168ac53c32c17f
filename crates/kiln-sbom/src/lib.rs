//! kiln-sbom: the packages of an image, read from the image's own package databases, as an
//! SPDX 2.3 JSON document.
//!
//! * [`ImageFiles`] is how the scanner sees the final image: read a file, list a directory,
//!   and say which layer a path comes from. [`DirImage`] implements it for a plain directory;
//!   the builder implements it over its union view of the layer snapshots.
//! * [`scan`] reads `/etc/os-release` and the dpkg (`/var/lib/dpkg/status`, `status.d/`), apk
//!   (`/lib/apk/db/installed`), rpm (`/var/lib/rpm/rpmdb.sqlite`, or Fedora's newer
//!   `/usr/lib/sysimage/rpm`), Python (`*.dist-info`, `*.egg-info`) and npm (global and
//!   application `node_modules` trees) databases into an [`Inventory`]. Every database is
//!   untrusted input: sizes are capped, rpm headers are bounds-checked, and a malformed record
//!   is skipped with a [`ScanWarning`].
//! * [`spdx_document`] turns an inventory into an [`SpdxDocument`] whose bytes
//!   ([`SpdxDocument::to_json`]) depend only on the inventory and the [`SbomOptions`]:
//!   packages are sorted, the document namespace is derived from the content, and `created` is
//!   the time the caller passes (`SOURCE_DATE_EPOCH` when set, see [`Timestamp`]).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apk;
mod dpkg;
mod error;
mod files;
mod npm;
mod os_release;
mod python;
mod rpm;
mod spdx_doc;
mod time;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use files::{DirImage, ImageFiles};
pub use os_release::OsRelease;
pub use rpm::header::{tags as rpm_tags, HeaderError, RpmHeader};
pub use spdx_doc::{
    spdx_document, SbomOptions, SpdxCreationInfo, SpdxDocument, SpdxExternalRef, SpdxPackage,
    SpdxRelationship,
};
pub use time::Timestamp;

/// The largest package database file read into memory (dpkg status, apk installed, rpmdb).
pub const MAX_DATABASE_SIZE: u64 = 256 << 20;

/// The largest small metadata file read (os-release, a dist-info `METADATA`, a status.d entry).
pub const MAX_METADATA_SIZE: u64 = 4 << 20;

/// Which package manager a package was found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ecosystem {
    /// dpkg (Debian, Ubuntu, distroless).
    Deb,
    /// apk (Alpine, Wolfi).
    Apk,
    /// rpm (Fedora, RHEL, SUSE, Amazon Linux).
    Rpm,
    /// Python distributions (`*.dist-info`, `*.egg-info`).
    Python,
    /// npm packages (`node_modules/**/package.json`).
    Npm,
}

impl Ecosystem {
    /// The purl type and the short name used in SPDX ids.
    pub fn purl_type(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Rpm => "rpm",
            Ecosystem::Python => "pypi",
            Ecosystem::Npm => "npm",
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    /// The version as the package manager shows it (dpkg: with epoch; rpm:
    /// `[EPOCH:]VERSION-RELEASE`).
    pub version: String,
    /// The architecture as the database records it (`amd64`, `x86_64`, `noarch`, `all`).
    pub architecture: Option<String>,
    /// The license as the database records it (apk `L:`, rpm `LICENSE`, Python metadata), or
    /// for dpkg the license names of the package's machine-readable (DEP-5)
    /// `/usr/share/doc/NAME/copyright`, in Debian's short-name syntax. The SPDX document
    /// declares it only when it is (or maps exactly to) a valid SPDX expression.
    pub license: Option<String>,
    /// The source package (dpkg `Source`, apk origin, rpm source rpm), when it differs.
    pub source: Option<String>,
    /// Who made the package (dpkg `Maintainer`, apk maintainer, rpm vendor/packager).
    pub supplier: Option<String>,
    /// The package URL.
    pub purl: String,
    /// The layer (0 = bottom) the package's files come from, when the image can tell.
    pub layer: Option<usize>,
    /// The database file the package was read from.
    pub found_in: PathBuf,
}

/// A record the scanner skipped or a database it could not read, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanWarning {
    /// The database file concerned.
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for ScanWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// Everything [`scan`] found in an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// `/etc/os-release` (or `/usr/lib/os-release`), if the image has one.
    pub os: Option<OsRelease>,
    /// The layer `os-release` comes from.
    pub os_layer: Option<usize>,
    /// Packages sorted by ecosystem, name, version, architecture and purl; no two share a purl.
    pub packages: Vec<Package>,
    pub warnings: Vec<ScanWarning>,
}

/// A distribution package database reader (dpkg, apk, rpm): the packages it finds in the image
/// are appended to the list, records it skips to the warnings.
pub(crate) type DatabaseScan =
    fn(&dyn ImageFiles, &OsRelease, &mut Vec<Package>, &mut Vec<ScanWarning>) -> Result<()>;

/// Reads every package database kiln knows in `image`.
pub fn scan(image: &dyn ImageFiles) -> Result<Inventory> {
    let mut inventory = Inventory::default();
    let os_release_path = [
        Path::new("/etc/os-release"),
        Path::new("/usr/lib/os-release"),
    ]
    .into_iter()
    .find(|path| image.layer_of(path).is_some());
    if let Some(path) = os_release_path {
        if let Some(bytes) = files::read_capped(image, path, MAX_METADATA_SIZE)? {
            inventory.os = Some(OsRelease::parse(&String::from_utf8_lossy(&bytes)));
            inventory.os_layer = image.layer_of(path);
        }
    }
    let os = inventory.os.clone().unwrap_or_default();
    let mut packages = Vec::new();
    let mut warnings = Vec::new();
    let distribution_databases: [DatabaseScan; 3] = [dpkg::scan, apk::scan, rpm::scan];
    for read in distribution_databases {
        read(image, &os, &mut packages, &mut warnings)?;
    }
    python::scan(image, &mut packages, &mut warnings)?;
    npm::scan(image, &mut packages, &mut warnings)?;
    packages.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, &a.architecture, &a.purl).cmp(&(
            b.ecosystem,
            &b.name,
            &b.version,
            &b.architecture,
            &b.purl,
        ))
    });
    packages.dedup_by(|later, earlier| later.purl == earlier.purl);
    inventory.packages = packages;
    inventory.warnings = warnings;
    Ok(inventory)
}

/// What a distribution package's purl is made of: `pkg:TYPE/NAMESPACE/NAME@VERSION` with the
/// `arch`, `epoch` and `upstream` (source package, when it differs) qualifiers, and `distro`
/// from os-release. dpkg, apk and rpm records all come down to this.
pub(crate) struct DistroPurl<'a> {
    pub ecosystem: Ecosystem,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub version: &'a str,
    pub arch: Option<&'a str>,
    pub epoch: Option<&'a str>,
    pub upstream: Option<&'a str>,
}

impl<'a> DistroPurl<'a> {
    /// The source package when it is not the package itself (what `upstream` says).
    pub(crate) fn other_source(&self) -> Option<&'a str> {
        self.upstream.filter(|source| *source != self.name)
    }

    /// The purl for a package of `os`; `None` when a part is not acceptable to the purl grammar.
    pub(crate) fn build(&self, os: &OsRelease) -> Option<String> {
        let distro = os.distro();
        let upstream = self.other_source();
        purl(
            self.ecosystem,
            self.namespace,
            self.name,
            self.version,
            &[
                ("arch", self.arch),
                ("epoch", self.epoch),
                ("distro", distro.as_deref()),
                ("upstream", upstream),
            ],
        )
    }

    /// [`DistroPurl::build`], or a warning about the record at `path` (which is then skipped).
    pub(crate) fn build_or_warn(
        &self,
        os: &OsRelease,
        path: &Path,
        warnings: &mut Vec<ScanWarning>,
    ) -> Option<String> {
        let built = self.build(os);
        if built.is_none() {
            warnings.push(ScanWarning {
                path: path.to_path_buf(),
                message: format!("package {:?}: no valid package URL", self.name),
            });
        }
        built
    }
}

/// Builds a purl; `None` when a part is not acceptable to the purl grammar (an empty name).
pub(crate) fn purl(
    ecosystem: Ecosystem,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    qualifiers: &[(&str, Option<&str>)],
) -> Option<String> {
    let mut purl = packageurl::PackageUrl::new(ecosystem.purl_type(), name).ok()?;
    if let Some(namespace) = namespace.filter(|ns| !ns.is_empty()) {
        purl.with_namespace(namespace).ok()?;
    }
    if !version.is_empty() {
        purl.with_version(version).ok()?;
    }
    for (key, value) in qualifiers {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            purl.add_qualifier(*key, value).ok()?;
        }
    }
    Some(purl.to_string())
}

/// One database reader's scan of `image` for the unit tests: the packages and warnings.
#[cfg(test)]
pub(crate) fn scan_dir(
    scan: DatabaseScan,
    image: &dyn ImageFiles,
    os: &OsRelease,
) -> Result<(Vec<Package>, Vec<ScanWarning>)> {
    let mut packages = Vec::new();
    let mut warnings = Vec::new();
    scan(image, os, &mut packages, &mut warnings)?;
    Ok((packages, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::ffi::OsString;

    /// An image held in memory: path → content, every file in layer 0.
    struct MemImage(BTreeMap<PathBuf, Vec<u8>>);

    impl ImageFiles for MemImage {
        fn read(&self, path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self.0.get(path).map(|bytes| {
                bytes
                    .iter()
                    .take(usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX))
                    .copied()
                    .collect()
            }))
        }
        fn list(&self, path: &Path) -> std::io::Result<Option<Vec<OsString>>> {
            // Directories are implied by the files below them.
            let mut names: Vec<OsString> = self
                .0
                .keys()
                .flat_map(|key| key.ancestors())
                .filter(|entry| entry.parent() == Some(path))
                .filter_map(|entry| entry.file_name().map(|n| n.to_os_string()))
                .collect();
            names.sort();
            names.dedup();
            Ok((!names.is_empty()).then_some(names))
        }
        fn layer_of(&self, path: &Path) -> Option<usize> {
            self.0.contains_key(path).then_some(0)
        }
    }

    #[test]
    fn hostile_text_databases_never_panic() {
        // Byte soup weighted towards the characters the parsers split on.
        const ALPHABET: &[u8] = b"PVALomFR:: \n\n\t=\"'#()+/.-abcXYZ019\xff\xc3\x80\0";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..1500 {
            let mut soup = || {
                let len = (next() % 400) as usize;
                (0..len)
                    .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                    .collect::<Vec<u8>>()
            };
            let image = MemImage(BTreeMap::from([
                (PathBuf::from("/etc/os-release"), soup()),
                (PathBuf::from("/var/lib/dpkg/status"), soup()),
                (PathBuf::from("/var/lib/dpkg/status.d/x"), soup()),
                (PathBuf::from("/usr/share/doc/x/copyright"), soup()),
                (PathBuf::from("/lib/apk/db/installed"), soup()),
                (
                    PathBuf::from("/usr/lib/python3/dist-packages/x.dist-info/METADATA"),
                    soup(),
                ),
            ]));
            let inventory = scan(&image).unwrap();
            assert!(inventory.packages.iter().all(|p| !p.purl.is_empty()));
            let options = SbomOptions::new("x", "kiln-test", Timestamp(0));
            let bytes = spdx_document(&inventory, &options)
                .unwrap()
                .to_json()
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
        }
    }
}
