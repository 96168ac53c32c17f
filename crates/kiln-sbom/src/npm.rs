//! npm packages: `package.json` of every package in a `node_modules` tree (scoped `@s/name`
//! packages and nested `node_modules` included).
//!
//! kiln does not walk the whole image for this (that would cost more than every other
//! database together). It looks in the global trees (`/usr/lib/node_modules`,
//! `/usr/local/lib/node_modules`, where the node images keep npm itself) and in
//! `node_modules` directories at most three levels below `/`, `/usr/src`, `/usr/local/src`,
//! outside the system directories: `/app/node_modules`, `/home/node/app/node_modules`,
//! `/usr/src/app/node_modules`, `/opt/x/y/node_modules`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::files::{list_sorted, read_capped};
use crate::{purl, Ecosystem, ImageFiles, Package, Result, ScanWarning, MAX_METADATA_SIZE};

const GLOBAL_TREES: [&str; 2] = ["/usr/lib/node_modules", "/usr/local/lib/node_modules"];
const APP_BASES: [&str; 3] = ["/", "/usr/src", "/usr/local/src"];
/// Top-level directories that hold the system, not applications.
const SYSTEM_DIRS: [&str; 16] = [
    "bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "media", "mnt", "proc", "run", "sbin",
    "sys", "tmp", "usr", "var",
];
/// How deep nested `node_modules` are followed, and how many packages are read at most.
const MAX_NESTING: usize = 16;
const MAX_PACKAGES: usize = 100_000;

#[derive(Deserialize)]
struct Manifest {
    name: Option<String>,
    version: Option<String>,
    license: Option<LicenseField>,
    licenses: Option<Vec<LicenseObject>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LicenseField {
    Text(String),
    Object(LicenseObject),
}

#[derive(Deserialize)]
struct LicenseObject {
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub(crate) fn scan(
    image: &dyn ImageFiles,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<ScanWarning>,
) -> Result<()> {
    let mut trees: Vec<PathBuf> = GLOBAL_TREES.iter().map(PathBuf::from).collect();
    for base in APP_BASES.iter().map(Path::new) {
        find_trees(image, base, 0, base == Path::new("/"), &mut trees)?;
    }
    trees.sort();
    trees.dedup();
    let mut budget = MAX_PACKAGES;
    for tree in trees {
        read_tree(image, &tree, 0, &mut budget, packages, warnings)?;
    }
    Ok(())
}

/// `node_modules` directories at most three levels below `dir`.
fn find_trees(
    image: &dyn ImageFiles,
    dir: &Path,
    depth: usize,
    at_root: bool,
    trees: &mut Vec<PathBuf>,
) -> Result<()> {
    if depth >= 3 {
        return Ok(());
    }
    for name in list_sorted(image, dir)? {
        let text = name.to_string_lossy();
        if at_root && SYSTEM_DIRS.contains(&text.as_ref()) || text.starts_with('.') {
            continue;
        }
        let path = dir.join(&name);
        if text == "node_modules" {
            trees.push(path);
        } else {
            find_trees(image, &path, depth + 1, false, trees)?;
        }
    }
    Ok(())
}

fn read_tree(
    image: &dyn ImageFiles,
    tree: &Path,
    nesting: usize,
    budget: &mut usize,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<ScanWarning>,
) -> Result<()> {
    if nesting > MAX_NESTING {
        return Ok(());
    }
    let mut package_dirs = Vec::new();
    for name in list_sorted(image, tree)? {
        let text = name.to_string_lossy();
        if text.starts_with('.') {
            continue;
        }
        if text.starts_with('@') {
            for scoped in list_sorted(image, &tree.join(&name))? {
                package_dirs.push(tree.join(&name).join(scoped));
            }
        } else {
            package_dirs.push(tree.join(&name));
        }
    }
    for dir in package_dirs {
        if *budget == 0 {
            warnings.push(ScanWarning {
                path: tree.to_path_buf(),
                message: format!("more than {MAX_PACKAGES} npm packages; the rest are left out"),
            });
            return Ok(());
        }
        let manifest_path = dir.join("package.json");
        let Some(bytes) = read_capped(image, &manifest_path, MAX_METADATA_SIZE)? else {
            continue;
        };
        *budget -= 1;
        match package_of(&manifest_path, &bytes, image.layer_of(&manifest_path)) {
            Some(package) => packages.push(package),
            None => warnings.push(ScanWarning {
                path: manifest_path,
                message: "no valid name and version; skipped".into(),
            }),
        }
        read_tree(
            image,
            &dir.join("node_modules"),
            nesting + 1,
            budget,
            packages,
            warnings,
        )?;
    }
    Ok(())
}

fn package_of(path: &Path, bytes: &[u8], layer: Option<usize>) -> Option<Package> {
    let manifest: Manifest = serde_json::from_slice(bytes).ok()?;
    let name = manifest.name.filter(|n| !n.is_empty())?;
    let version = manifest.version.filter(|v| !v.is_empty())?;
    let license = match manifest.license {
        Some(LicenseField::Text(text)) => Some(text),
        Some(LicenseField::Object(object)) => object.kind,
        None => {
            // The old `licenses: [{type}]` form: all of them apply.
            let kinds: Vec<String> = manifest
                .licenses
                .unwrap_or_default()
                .into_iter()
                .filter_map(|l| l.kind)
                .collect();
            (!kinds.is_empty()).then(|| kinds.join(" OR "))
        }
    };
    let (namespace, short) = match name.split_once('/') {
        Some((scope, short)) if scope.starts_with('@') => (Some(scope), short),
        _ => (None, name.as_str()),
    };
    Some(Package {
        ecosystem: Ecosystem::Npm,
        purl: purl(Ecosystem::Npm, namespace, short, &version, &[])?,
        name: name.clone(),
        version,
        architecture: None,
        license,
        source: None,
        supplier: None,
        layer,
        found_in: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DirImage;

    fn write(root: &Path, path: &str, content: &str) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    #[test]
    fn global_and_app_trees() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            r,
            "usr/local/lib/node_modules/npm/package.json",
            r#"{"name":"npm","version":"10.2.4","license":"Artistic-2.0"}"#,
        );
        write(
            r,
            "usr/local/lib/node_modules/npm/node_modules/@isaacs/cliui/package.json",
            r#"{"name":"@isaacs/cliui","version":"8.0.2","license":{"type":"ISC"}}"#,
        );
        write(
            r,
            "app/node_modules/left-pad/package.json",
            r#"{"name":"left-pad","version":"1.3.0","licenses":[{"type":"WTFPL"},{"type":"MIT"}]}"#,
        );
        write(r, "app/node_modules/broken/package.json", "{not json");
        // System directories are not searched for applications.
        write(
            r,
            "var/cache/x/node_modules/hidden/package.json",
            r#"{"name":"hidden","version":"1.0.0"}"#,
        );
        let mut packages = Vec::new();
        let mut warnings = Vec::new();
        scan(&DirImage::new(r), &mut packages, &mut warnings).unwrap();
        let got: Vec<(&str, Option<&str>)> = packages
            .iter()
            .map(|p| (p.purl.as_str(), p.license.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("pkg:npm/left-pad@1.3.0", Some("WTFPL OR MIT")),
                ("pkg:npm/npm@10.2.4", Some("Artistic-2.0")),
                ("pkg:npm/%40isaacs/cliui@8.0.2", Some("ISC")),
            ]
        );
        assert_eq!(packages[2].name, "@isaacs/cliui");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
}
