//! apk: `/lib/apk/db/installed` (Alpine's "installed database": blank-line separated records
//! of `X:value` lines; `P` name, `V` version, `A` arch, `L` license, `o` origin, `m`
//! maintainer, `F` a directory and `R` a file in it).

use std::path::{Path, PathBuf};

use crate::files::read_capped;
use crate::{DistroPurl, Ecosystem, ImageFiles, OsRelease, Package, Result, ScanWarning};

const INSTALLED: &str = "/lib/apk/db/installed";
/// How many of a package's files are looked up to find its layer.
const FILES_PROBED: usize = 8;

#[derive(Default)]
struct Record<'a> {
    name: Option<&'a str>,
    version: Option<&'a str>,
    arch: Option<&'a str>,
    license: Option<&'a str>,
    origin: Option<&'a str>,
    maintainer: Option<&'a str>,
    files: Vec<PathBuf>,
    dir: Option<&'a str>,
}

pub(crate) fn scan(
    image: &dyn ImageFiles,
    os: &OsRelease,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<ScanWarning>,
) -> Result<()> {
    let path = Path::new(INSTALLED);
    let Some(bytes) = read_capped(image, path, crate::MAX_DATABASE_SIZE)? else {
        return Ok(());
    };
    let db_layer = image.layer_of(path);
    let text = String::from_utf8_lossy(&bytes);
    let mut record = Record::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if record.name.is_some() || record.version.is_some() {
                finish(image, os, path, &record, db_layer, packages, warnings);
            }
            record = Record::default();
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = Some(value).filter(|v| !v.is_empty());
        match key {
            "P" => record.name = value,
            "V" => record.version = value,
            "A" => record.arch = value,
            "L" => record.license = value,
            "o" => record.origin = value,
            "m" => record.maintainer = value,
            "F" => record.dir = value,
            "R" if record.files.len() < FILES_PROBED => {
                if let Some(file) = value {
                    let mut full = PathBuf::from("/");
                    if let Some(dir) = record.dir {
                        full.push(dir);
                    }
                    full.push(file);
                    record.files.push(full);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn finish(
    image: &dyn ImageFiles,
    os: &OsRelease,
    path: &Path,
    record: &Record<'_>,
    db_layer: Option<usize>,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<ScanWarning>,
) {
    let (Some(name), Some(version)) = (record.name, record.version) else {
        warnings.push(ScanWarning {
            path: path.to_path_buf(),
            message: "a package record without P: or V: was skipped".into(),
        });
        return;
    };
    let identity = DistroPurl {
        ecosystem: Ecosystem::Apk,
        namespace: Some(os.id.as_deref().unwrap_or("alpine")),
        name,
        version,
        arch: record.arch,
        epoch: None,
        upstream: record.origin,
    };
    let Some(purl) = identity.build_or_warn(os, path, warnings) else {
        return;
    };
    // apk writes a package's files when it installs it: the layer of the first one still in
    // the image is the layer that installed this version.
    let layer = record
        .files
        .iter()
        .find_map(|file| image.layer_of(file))
        .or(db_layer);
    packages.push(Package {
        ecosystem: Ecosystem::Apk,
        name: name.to_string(),
        version: version.to_string(),
        architecture: record.arch.map(str::to_string),
        license: record.license.map(str::to_string),
        source: identity.other_source().map(str::to_string),
        supplier: record.maintainer.map(str::to_string),
        purl,
        layer,
        found_in: path.to_path_buf(),
    });
}
