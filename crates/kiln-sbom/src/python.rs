//! Python distributions installed by pip or a distribution package: `*.dist-info/METADATA`
//! and `*.egg-info[/PKG-INFO]` (core metadata, email-header style) in the interpreters'
//! `site-packages`/`dist-packages`.

use std::path::{Path, PathBuf};

use crate::files::{list_sorted, read_capped};
use crate::{purl, Ecosystem, ImageFiles, Package, Result, ScanWarning, MAX_METADATA_SIZE};

const LIB_DIRS: [&str; 3] = ["/usr/lib", "/usr/local/lib", "/usr/lib64"];
const SITE_DIRS: [&str; 2] = ["site-packages", "dist-packages"];

pub(crate) fn scan(
    image: &dyn ImageFiles,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<ScanWarning>,
) -> Result<()> {
    let mut site_dirs = Vec::new();
    for lib in LIB_DIRS.iter().map(Path::new) {
        for name in list_sorted(image, lib)? {
            if name.to_string_lossy().starts_with("python") {
                for site in SITE_DIRS {
                    site_dirs.push(lib.join(&name).join(site));
                }
            }
        }
    }
    // `/usr/lib64` is often a link to `/usr/lib`; read each resolved directory once.
    let mut seen_metadata: Vec<Vec<u8>> = Vec::new();
    for site in site_dirs {
        for name in list_sorted(image, &site)? {
            let text = name.to_string_lossy();
            // pip writes `*.dist-info/METADATA`; setuptools (and Debian's python3-* packages)
            // `*.egg-info/PKG-INFO`, or a single `*.egg-info` file with the same content.
            let candidates = if text.ends_with(".dist-info") {
                vec![site.join(&name).join("METADATA")]
            } else if text.ends_with(".egg-info") {
                vec![site.join(&name).join("PKG-INFO"), site.join(&name)]
            } else {
                continue;
            };
            let mut found = None;
            for candidate in candidates {
                if let Some(bytes) = read_capped(image, &candidate, MAX_METADATA_SIZE)? {
                    found = Some((candidate, bytes));
                    break;
                }
            }
            let Some((metadata, bytes)) = found else {
                continue;
            };
            if let Some(package) = package_of(&metadata, &bytes, image.layer_of(&metadata)) {
                if seen_metadata.contains(&bytes) {
                    continue;
                }
                seen_metadata.push(bytes);
                packages.push(package);
            } else {
                warnings.push(ScanWarning {
                    path: metadata,
                    message: "no Name or Version in the metadata; skipped".into(),
                });
            }
        }
    }
    Ok(())
}

fn package_of(path: &Path, bytes: &[u8], layer: Option<usize>) -> Option<Package> {
    let text = String::from_utf8_lossy(bytes);
    let (mut name, mut version, mut license, mut expression) = (None, None, None, None);
    // The headers end at the first blank line; the description follows.
    for line in text.lines().take_while(|line| !line.is_empty()) {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.to_ascii_lowercase().as_str() {
            "name" => name = name.or(Some(value)),
            "version" => version = version.or(Some(value)),
            "license" => license = license.or(Some(value)),
            // PEP 639: an SPDX expression, preferred over the free-text field.
            "license-expression" => expression = expression.or(Some(value)),
            _ => {}
        }
    }
    let (name, version) = (name?, version?);
    Some(Package {
        ecosystem: Ecosystem::Python,
        name: name.to_string(),
        version: version.to_string(),
        architecture: None,
        license: expression.or(license).map(str::to_string),
        source: None,
        supplier: None,
        purl: purl(Ecosystem::Python, None, name, version, &[])?,
        layer,
        found_in: PathBuf::from(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DirImage;

    #[test]
    fn dist_info() {
        let root = tempfile::tempdir().unwrap();
        let site = root
            .path()
            .join("usr/local/lib/python3.12/site-packages/PyYAML-6.0.1.dist-info");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(
            site.join("METADATA"),
            "Metadata-Version: 2.1\nName: PyYAML\nVersion: 6.0.1\nLicense: MIT\n\nLicense: not a header\n",
        )
        .unwrap();
        let dist = root.path().join("usr/lib/python3/dist-packages");
        std::fs::create_dir_all(dist.join("six-1.16.0.egg-info")).unwrap();
        std::fs::write(
            dist.join("six-1.16.0.egg-info/PKG-INFO"),
            "Metadata-Version: 1.2\nName: six\nVersion: 1.16.0\n",
        )
        .unwrap();
        std::fs::write(
            dist.join("chardet-5.1.0.egg-info"),
            "Metadata-Version: 1.1\nName: chardet\nVersion: 5.1.0\nLicense: LGPL\n",
        )
        .unwrap();
        let mut packages = Vec::new();
        let mut warnings = Vec::new();
        scan(&DirImage::new(root.path()), &mut packages, &mut warnings).unwrap();
        let names: Vec<_> = packages.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            names,
            [
                "pkg:pypi/chardet@5.1.0",
                "pkg:pypi/six@1.16.0",
                "pkg:pypi/pyyaml@6.0.1"
            ]
        );
        packages.retain(|p| p.name == "PyYAML");
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].purl, "pkg:pypi/pyyaml@6.0.1");
        assert_eq!(packages[0].license.as_deref(), Some("MIT"));
        assert!(warnings.is_empty());
    }
}
