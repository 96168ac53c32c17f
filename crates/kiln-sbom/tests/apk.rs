//! An Alpine-style root: os-release plus an apk installed database.

use std::path::Path;

use kiln_sbom::{scan, spdx_document, DirImage, Ecosystem, SbomOptions, Timestamp};

const INSTALLED: &str = "\
C:Q1SJmNRtgnUA2GA/J/zB9LN6QGKXE=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407467
I:655360
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
t:1705947285
c:0fee56c5dc7ee6b5ff4b0ac3fa8fd0f3b6a9f2e9
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1FjJ7ICCVzq2MGo7+7MZQ7Q3JzJM=
R:libc.musl-x86_64.so.1

C:Q1fR3vFgMBGn8pNYTkJ3L7ZQK7TFo=
P:busybox-binsh
V:1.36.1-r15
A:x86_64
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
F:bin
R:sh

P:ssl_client
V:1.36.1-r15
A:x86_64
L:GPL2
o:busybox

P:no-version
A:x86_64
";

#[test]
fn apk_database() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("lib/apk/db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("installed"), INSTALLED).unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/os-release"),
        "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n",
    )
    .unwrap();
    std::fs::write(root.path().join("lib/ld-musl-x86_64.so.1"), b"").unwrap();
    let inventory = scan(&DirImage::new(root.path())).unwrap();
    let got: Vec<_> = inventory
        .packages
        .iter()
        .map(|p| {
            assert_eq!(p.ecosystem, Ecosystem::Apk);
            (p.name.as_str(), p.version.as_str(), p.purl.as_str())
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "busybox-binsh",
                "1.36.1-r15",
                "pkg:apk/alpine/busybox-binsh@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1&upstream=busybox"
            ),
            (
                "musl",
                "1.2.4_git20230717-r4",
                "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1"
            ),
            (
                "ssl_client",
                "1.36.1-r15",
                "pkg:apk/alpine/ssl_client@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1&upstream=busybox"
            ),
        ]
    );
    assert_eq!(inventory.warnings.len(), 1, "{:?}", inventory.warnings);
    let musl = &inventory.packages[1];
    assert_eq!(musl.license.as_deref(), Some("MIT"));
    assert_eq!(musl.layer, Some(0));

    let document = spdx_document(
        &inventory,
        &SbomOptions::new("alpine:3.19", "kiln-test", Timestamp(0)),
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&document.to_json().unwrap()).unwrap();
    let licenses: Vec<_> = json["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["licenseDeclared"].as_str().unwrap())
        .collect();
    // image, os, busybox-binsh, musl, ssl_client ("GPL2" is not an SPDX id).
    assert_eq!(
        licenses,
        [
            "NOASSERTION",
            "NOASSERTION",
            "GPL-2.0-only",
            "MIT",
            "NOASSERTION"
        ]
    );
    assert!(Path::new("/").is_absolute());
}
