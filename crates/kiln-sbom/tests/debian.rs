//! The SBOM of a real debootstrapped Debian root against dpkg's own answer.

mod common;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use kiln_sbom::{scan, spdx_document, DirImage, Ecosystem, ImageFiles, SbomOptions, Timestamp};

fn deb_packages(inventory: &kiln_sbom::Inventory) -> Vec<(String, String)> {
    let mut listed: Vec<(String, String)> = inventory
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Deb)
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    listed.sort();
    listed
}

#[test]
fn sbom_lists_exactly_what_dpkg_query_lists() {
    let root = common::debian_root("debian-bookworm-minbase", &[]);
    let expected = common::dpkg_query(&root);
    assert!(
        expected.len() > 50,
        "minbase has ~90 packages: {expected:?}"
    );
    let inventory = scan(&DirImage::new(&root)).unwrap();
    assert!(inventory.warnings.is_empty(), "{:?}", inventory.warnings);
    assert_eq!(deb_packages(&inventory), expected);

    let os = inventory.os.as_ref().expect("os-release");
    assert_eq!(os.id.as_deref(), Some("debian"));
    assert_eq!(os.version_id.as_deref(), Some("12"));
    let libc = inventory
        .packages
        .iter()
        .find(|p| p.name == "libc6")
        .expect("libc6");
    assert!(
        libc.purl.starts_with("pkg:deb/debian/libc6@")
            && libc.purl.contains("arch=")
            && libc.purl.contains("distro=debian-12")
            && libc.purl.contains("upstream=glibc"),
        "{}",
        libc.purl
    );

    // The SPDX document carries every one of them with its version and purl.
    let mut options = SbomOptions::new("debian:bookworm", "kiln-test", Timestamp(1_700_000_000));
    options.layer_diff_ids = vec!["sha256:0000".into()];
    let bytes = spdx_document(&inventory, &options)
        .unwrap()
        .to_json()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let mut in_document: Vec<(String, String)> = json["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.get("externalRefs").is_some())
        .map(|p| {
            let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
            assert!(purl.starts_with("pkg:deb/debian/"), "{purl}");
            assert!(
                p["sourceInfo"]
                    .as_str()
                    .unwrap()
                    .ends_with("layer 0 (sha256:0000)"),
                "{p}"
            );
            (
                p["name"].as_str().unwrap().to_string(),
                p["versionInfo"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    in_document.sort();
    assert_eq!(in_document, expected);
    // Licenses from the DEP-5 copyright files, when every name has a fixed SPDX meaning.
    let declared = |name: &str| {
        let package = json["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        (
            package["licenseDeclared"].as_str().unwrap().to_string(),
            package["licenseComments"].as_str().map(str::to_string),
        )
    };
    assert_eq!(declared("zlib1g"), ("Zlib".to_string(), None));
    assert_eq!(
        declared("libacl1").0,
        "GPL-2.0-or-later AND LGPL-2.0-or-later"
    );
    assert_eq!(
        declared("liblz4-1").0,
        "BSD-2-Clause AND GPL-2.0-or-later AND (GPL-2.0-or-later OR BSD-2-Clause)"
    );
    // dpkg's names `public-domain-s-s-d`: no SPDX claim, the Debian names kept as a comment.
    let (dpkg_declared, dpkg_comment) = declared("dpkg");
    assert_eq!(dpkg_declared, "NOASSERTION");
    assert!(
        dpkg_comment
            .as_deref()
            .unwrap_or("")
            .contains("public-domain-s-s-d"),
        "{dpkg_comment:?}"
    );
    // base-files' copyright is not machine-readable.
    assert_eq!(declared("base-files"), ("NOASSERTION".to_string(), None));

    // Same root, same options: same bytes.
    let again = spdx_document(&scan(&DirImage::new(&root)).unwrap(), &options)
        .unwrap()
        .to_json()
        .unwrap();
    assert_eq!(bytes, again);
}

/// Two directories stacked the way the builder stacks layer snapshots (upper wins; no
/// whiteouts needed here).
struct TwoLayers {
    layers: [PathBuf; 2],
}

impl TwoLayers {
    fn find(&self, path: &Path) -> Option<(usize, DirImage)> {
        (0..2).rev().find_map(|index| {
            let image = DirImage::new(&self.layers[index]);
            image.layer_of(path).map(|_| (index, image))
        })
    }
}

impl ImageFiles for TwoLayers {
    fn read(&self, path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        match self.find(path) {
            Some((_, image)) => image.read(path, limit),
            None => Ok(None),
        }
    }
    fn list(&self, path: &Path) -> io::Result<Option<Vec<OsString>>> {
        let mut names = Vec::new();
        let mut any = false;
        for layer in &self.layers {
            if let Some(found) = DirImage::new(layer).list(path)? {
                any = true;
                names.extend(found);
            }
        }
        names.sort();
        names.dedup();
        Ok(any.then_some(names))
    }
    fn layer_of(&self, path: &Path) -> Option<usize> {
        self.find(path).map(|(index, _)| index)
    }
}

#[test]
fn each_package_names_the_layer_that_installed_it() {
    let root = common::debian_root("debian-bookworm-minbase", &[]);
    // Layer 1: what `RUN apt-get install hello` leaves: a status file with one more package
    // and that package's info/hello.list.
    let upper = tempfile::tempdir().unwrap();
    let dpkg = upper.path().join("var/lib/dpkg");
    std::fs::create_dir_all(dpkg.join("info")).unwrap();
    let mut status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    status.push_str(
        "\nPackage: hello\nStatus: install ok installed\nArchitecture: amd64\n\
         Version: 2.10-3\nMaintainer: Santiago Vila <sanvila@debian.org>\n",
    );
    std::fs::write(dpkg.join("status"), status).unwrap();
    std::fs::write(dpkg.join("info/hello.list"), "/usr/bin/hello\n").unwrap();

    let image = TwoLayers {
        layers: [root.clone(), upper.path().to_path_buf()],
    };
    let inventory = scan(&image).unwrap();
    let layer_of = |name: &str| {
        inventory
            .packages
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .layer
    };
    assert_eq!(layer_of("hello"), Some(1));
    assert_eq!(layer_of("libc6"), Some(0));
    assert_eq!(layer_of("dpkg"), Some(0));
    assert_eq!(
        deb_packages(&inventory).len(),
        common::dpkg_query(&root).len() + 1
    );
}
