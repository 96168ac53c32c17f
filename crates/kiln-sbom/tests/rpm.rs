//! A real rpm database, made by rpm itself: rpmbuild two tiny packages, install them into a
//! fresh root with `rpm --root --dbpath`, and compare the SBOM with `rpm -qa`.

#![allow(clippy::panic)]

use std::path::Path;
use std::process::Command;

use kiln_sbom::{scan, DirImage, Ecosystem};

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|err| {
        panic!(
            "{:?} could not run ({err}); this test needs rpm and rpmbuild: apt-get install rpm",
            command.get_program()
        )
    });
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn spec(name: &str, epoch: Option<u32>, license: &str, arch: &str) -> String {
    let epoch = epoch.map(|e| format!("Epoch: {e}\n")).unwrap_or_default();
    format!(
        "Name: {name}\nVersion: 1.2.3\nRelease: 4.kiln\n{epoch}Summary: test\nLicense: {license}\n\
         BuildArch: {arch}\nVendor: Kiln Test Project\n%description\ntest\n%install\n\
         mkdir -p %{{buildroot}}/usr/share/{name}\necho hi > %{{buildroot}}/usr/share/{name}/hello\n\
         %files\n/usr/share/{name}/hello\n"
    )
}

#[test]
fn rpm_database_written_by_rpm() {
    let work = tempfile::tempdir().unwrap();
    let top = work.path().join("rpmbuild");
    std::fs::create_dir_all(top.join("SPECS")).unwrap();
    let specs = [
        ("kiln-alpha", None, "MIT AND (Apache-2.0 OR BSD-3-Clause)"),
        ("kiln-beta", Some(3), "GPLv2+"),
    ];
    for (name, epoch, license) in specs {
        let path = top.join("SPECS").join(format!("{name}.spec"));
        std::fs::write(&path, spec(name, epoch, license, "noarch")).unwrap();
        run(Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("--quiet")
            .arg("-bb")
            .arg(&path));
    }
    let root = work.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let rpm = |args: &[&str]| {
        let mut command = Command::new("rpm");
        command
            .arg("--root")
            .arg(&root)
            .args(["--dbpath", "/var/lib/rpm"])
            .args(args);
        run(&mut command)
    };
    rpm(&["--initdb"]);
    let built: Vec<String> = std::fs::read_dir(top.join("RPMS/noarch"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut install = vec!["-i", "--nodeps"];
    install.extend(built.iter().map(String::as_str));
    rpm(&install);
    assert!(root.join("var/lib/rpm/rpmdb.sqlite").is_file());
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=fedora\nVERSION_ID=40\n").unwrap();

    let mut expected: Vec<String> = rpm(&[
        "-qa",
        "--qf",
        "%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{ARCH} %{LICENSE}\n",
    ])
    .lines()
    .map(str::to_string)
    .collect();
    expected.sort();
    assert_eq!(expected.len(), 2, "{expected:?}");

    let inventory = scan(&DirImage::new(&root)).unwrap();
    assert!(inventory.warnings.is_empty(), "{:?}", inventory.warnings);
    let got: Vec<String> = inventory
        .packages
        .iter()
        .map(|p| {
            assert_eq!(p.ecosystem, Ecosystem::Rpm);
            format!(
                "{} {} {} {}",
                p.name,
                p.version,
                p.architecture.as_deref().unwrap_or(""),
                p.license.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(got, expected);
    let beta = &inventory.packages[1];
    assert_eq!(
        beta.purl,
        "pkg:rpm/fedora/kiln-beta@1.2.3-4.kiln?arch=noarch&distro=fedora-40&epoch=3&upstream=kiln-beta-1.2.3-4.kiln.src.rpm"
    );
    assert_eq!(beta.supplier.as_deref(), Some("Kiln Test Project"));
    // Its files were installed, so its layer is known.
    assert_eq!(beta.layer, Some(0));
    assert!(Path::new(&root).join("usr/share/kiln-beta/hello").is_file());
}
