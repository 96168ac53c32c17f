//! rpm: the SQLite rpmdb (`rpmdb.sqlite`, rpm ≥ 4.16: Fedora ≥ 33, RHEL/UBI ≥ 9, Amazon
//! Linux 2023), one header blob per installed package in the `Packages` table.

pub mod header;

use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::files::read_capped;
use crate::{
    DistroPurl, Ecosystem, Error, ImageFiles, OsRelease, Package, Result, ScanWarning,
    MAX_DATABASE_SIZE,
};
use header::{tags, RpmHeader};

/// Where rpm keeps its database: Fedora ≥ 36 moved it to `/usr/lib/sysimage/rpm` and links
/// `/var/lib/rpm` there. The first one found is read.
const SQLITE_DATABASES: [&str; 2] = [
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
];
/// Older rpmdb formats kiln does not read (Berkeley DB, SUSE's ndb); reported as a warning.
const OTHER_DATABASES: [&str; 2] = ["/var/lib/rpm/Packages", "/var/lib/rpm/Packages.db"];
/// How many of a package's files are looked up to find its layer.
const FILES_PROBED: usize = 8;

pub(crate) fn scan(
    image: &dyn ImageFiles,
    os: &OsRelease,
    packages: &mut Vec<Package>,
    warnings: &mut Vec<ScanWarning>,
) -> Result<()> {
    let found = SQLITE_DATABASES
        .iter()
        .map(Path::new)
        .find(|path| image.layer_of(path).is_some());
    let Some(path) = found else {
        for other in OTHER_DATABASES.iter().map(Path::new) {
            if image.layer_of(other).is_some() {
                warnings.push(ScanWarning {
                    path: other.to_path_buf(),
                    message: "this rpm database format (Berkeley DB or ndb) is not read; \
                              its packages are missing from the SBOM"
                        .into(),
                });
            }
        }
        return Ok(());
    };
    let Some(bytes) = read_capped(image, path, MAX_DATABASE_SIZE)? else {
        return Ok(());
    };
    let wal_path = PathBuf::from(format!("{}-wal", path.display()));
    let wal = read_capped(image, &wal_path, MAX_DATABASE_SIZE)?.filter(|wal| !wal.is_empty());
    let (blobs, stopped) = match read_blobs(&bytes, wal.as_deref()) {
        Ok(read) => read,
        Err(BlobsError::Copy(source)) => {
            return Err(Error::RpmCopy {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(BlobsError::Sqlite(err)) => {
            warnings.push(ScanWarning {
                path: path.to_path_buf(),
                message: format!("not a readable rpm database: {err}"),
            });
            return Ok(());
        }
    };
    let db_layer = image.layer_of(path);
    for (hnum, blob) in blobs {
        let package = blob.and_then(|blob| {
            package_of(image, os, path, &blob, db_layer).map_err(|err| err.to_string())
        });
        match package {
            Ok(Some(package)) => packages.push(package),
            Ok(None) => {}
            Err(err) => warnings.push(ScanWarning {
                path: path.to_path_buf(),
                message: format!("package header {hnum} skipped: {err}"),
            }),
        }
    }
    if let Some(err) = stopped {
        warnings.push(ScanWarning {
            path: path.to_path_buf(),
            message: format!("stopped reading the database part way: {err}"),
        });
    }
    Ok(())
}

/// A row's header blob, or why it could not be read.
type RowBlob = std::result::Result<Vec<u8>, String>;

/// The `Packages` rows read, by `hnum`, and the error that stopped the reading early, if any.
type BlobRows = (Vec<(i64, RowBlob)>, Option<rusqlite::Error>);

enum BlobsError {
    Copy(std::io::Error),
    Sqlite(rusqlite::Error),
}

/// Every `(hnum, blob)` of the `Packages` table, in `hnum` order. The database is copied to a
/// private directory first (with its write-ahead log, which may hold packages not yet
/// checkpointed): SQLite opens files, and it must never write beside the image's own.
fn read_blobs(database: &[u8], wal: Option<&[u8]>) -> std::result::Result<BlobRows, BlobsError> {
    let dir = tempfile::tempdir().map_err(BlobsError::Copy)?;
    let db_path = dir.path().join("rpmdb.sqlite");
    std::fs::write(&db_path, database).map_err(BlobsError::Copy)?;
    if let Some(wal) = wal {
        std::fs::write(dir.path().join("rpmdb.sqlite-wal"), wal).map_err(BlobsError::Copy)?;
    }
    let conn = Connection::open_with_flags(
        &db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(BlobsError::Sqlite)?;
    // The file is untrusted: no schema-defined functions or triggers run, no writes that could
    // corrupt the (private) copy on purpose.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(BlobsError::Sqlite)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
        .map_err(BlobsError::Sqlite)?;
    let mut statement = conn
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
        .map_err(BlobsError::Sqlite)?;
    let mut rows = statement.query([]).map_err(BlobsError::Sqlite)?;
    let mut blobs = Vec::new();
    // A row whose blob is not a BLOB is skipped alone; a database that breaks part way keeps
    // the rows read before.
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                let hnum = row.get::<_, i64>(0).unwrap_or(-1);
                let blob = match row.get_ref(1) {
                    Ok(ValueRef::Blob(bytes)) => Ok(bytes.to_vec()),
                    Ok(other) => Err(format!("the blob column holds {}", other.data_type())),
                    Err(err) => Err(err.to_string()),
                };
                blobs.push((hnum, blob));
            }
            Ok(None) => return Ok((blobs, None)),
            Err(err) => return Ok((blobs, Some(err))),
        }
    }
}

/// The package a header describes; `None` for rpm's `gpg-pubkey` pseudo-packages (imported
/// signing keys, not software).
fn package_of(
    image: &dyn ImageFiles,
    os: &OsRelease,
    path: &Path,
    blob: &[u8],
    db_layer: Option<usize>,
) -> std::result::Result<Option<Package>, header::HeaderError> {
    let header = RpmHeader::parse(blob)?;
    let Some(name) = header.string(tags::NAME)?.filter(|n| !n.is_empty()) else {
        return Err(header::HeaderError::WrongType {
            tag: tags::NAME,
            expected: "a package name",
        });
    };
    if name == "gpg-pubkey" {
        return Ok(None);
    }
    let version = header.string(tags::VERSION)?.unwrap_or_default();
    let release = header.string(tags::RELEASE)?.unwrap_or_default();
    let epoch = header.u32(tags::EPOCH)?;
    let arch = header.string(tags::ARCH)?;
    let version_release = if release.is_empty() {
        version.to_string()
    } else {
        format!("{version}-{release}")
    };
    let full_version = match epoch {
        Some(epoch) => format!("{epoch}:{version_release}"),
        None => version_release.clone(),
    };
    let source_rpm = header.string(tags::SOURCERPM)?;
    let epoch_text = epoch.map(|e| e.to_string());
    let purl = DistroPurl {
        ecosystem: Ecosystem::Rpm,
        namespace: os.id.as_deref(),
        name,
        version: &version_release,
        arch,
        epoch: epoch_text.as_deref(),
        upstream: source_rpm,
    }
    .build(os)
    .ok_or(header::HeaderError::WrongType {
        tag: tags::NAME,
        expected: "a name valid in a package URL",
    })?;
    let supplier = header
        .string(tags::VENDOR)?
        .or(header.string(tags::PACKAGER)?);
    let layer = first_file_layer(image, &header)?.or(db_layer);
    Ok(Some(Package {
        ecosystem: Ecosystem::Rpm,
        name: name.to_string(),
        version: full_version,
        architecture: arch.map(str::to_string),
        license: header.string(tags::LICENSE)?.map(str::to_string),
        source: source_rpm.map(str::to_string),
        supplier: supplier.map(str::to_string),
        purl,
        layer,
        found_in: path.to_path_buf(),
    }))
}

/// The layer of the first of the package's files still in the image (rpm writes them when it
/// installs the package).
fn first_file_layer(
    image: &dyn ImageFiles,
    header: &RpmHeader<'_>,
) -> std::result::Result<Option<usize>, header::HeaderError> {
    let basenames = header.strings(tags::BASENAMES, FILES_PROBED)?;
    if basenames.is_empty() {
        return Ok(None);
    }
    let indexes = header.u32s(tags::DIRINDEXES, FILES_PROBED)?;
    let largest = indexes.iter().copied().max().unwrap_or(0) as usize;
    let dirnames = header.strings(tags::DIRNAMES, largest.saturating_add(1))?;
    Ok(basenames
        .iter()
        .zip(&indexes)
        .filter_map(|(base, &index)| {
            let dir = dirnames.get(index as usize)?;
            image.layer_of(&Path::new("/").join(format!("{dir}{base}")))
        })
        .next())
}

#[cfg(test)]
mod tests {
    use super::header::tests::{build_header, sample, Value};
    use super::*;
    use crate::DirImage;

    /// Writes an rpmdb.sqlite with rpm's `Packages` table holding `blobs`.
    fn write_db(root: &Path, blobs: &[Vec<u8>]) {
        let dir = root.join("var/lib/rpm");
        std::fs::create_dir_all(&dir).unwrap();
        let conn = Connection::open(dir.join("rpmdb.sqlite")).unwrap();
        conn.execute_batch(
            "CREATE TABLE 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
        )
        .unwrap();
        for blob in blobs {
            conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [blob])
                .unwrap();
        }
    }

    #[test]
    fn generated_database() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::fs::write(root.path().join("usr/bin/bash"), b"").unwrap();
        let pubkey = build_header(&[
            (tags::NAME, Value::Str("gpg-pubkey")),
            (tags::VERSION, Value::Str("a15b79cc")),
        ]);
        let mut hostile = sample();
        hostile[3] = 0xff; // il no longer matches the blob
        write_db(root.path(), &[sample(), pubkey, hostile, vec![1, 2, 3]]);
        let os = OsRelease::parse("ID=fedora\nVERSION_ID=40\n");
        let (packages, warnings) = crate::scan_dir(scan, &DirImage::new(root.path()), &os).unwrap();
        assert_eq!(packages.len(), 1, "{packages:?}");
        let bash = &packages[0];
        assert_eq!(bash.name, "bash");
        assert_eq!(bash.version, "2:5.2.26-3.fc40");
        assert_eq!(bash.license.as_deref(), Some("GPL-3.0-or-later"));
        assert_eq!(
            bash.purl,
            "pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64&distro=fedora-40&epoch=2"
        );
        assert_eq!(bash.layer, Some(0));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].message.contains("header 3 skipped"),
            "{warnings:?}"
        );
    }

    #[test]
    fn rows_only_in_the_write_ahead_log_are_read() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("var/lib/rpm");
        std::fs::create_dir_all(&dir).unwrap();
        let conn = Connection::open(dir.join("rpmdb.sqlite")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
        )
        .unwrap();
        conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [sample()])
            .unwrap();
        // A text value where a blob belongs: that row alone is skipped.
        conn.execute("INSERT INTO Packages (blob) VALUES ('text')", [])
            .unwrap();
        // Snapshot the files while the connection is open: the rows are still in the WAL.
        let image_root = tempfile::tempdir().unwrap();
        let image_dir = image_root.path().join("var/lib/rpm");
        std::fs::create_dir_all(&image_dir).unwrap();
        for name in ["rpmdb.sqlite", "rpmdb.sqlite-wal"] {
            std::fs::copy(dir.join(name), image_dir.join(name)).unwrap();
        }
        assert!(
            std::fs::metadata(image_dir.join("rpmdb.sqlite-wal"))
                .unwrap()
                .len()
                > 0
        );
        drop(conn);
        let os = OsRelease::default();
        let (packages, warnings) =
            crate::scan_dir(scan, &DirImage::new(image_root.path()), &os).unwrap();
        assert_eq!(packages.len(), 1, "{warnings:?}");
        assert_eq!(packages[0].name, "bash");
        assert_eq!(
            packages[0].purl,
            "pkg:rpm/bash@5.2.26-3.fc40?arch=x86_64&epoch=2"
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].message.contains("holds Text"), "{warnings:?}");
    }

    #[test]
    fn not_a_database() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("var/lib/rpm");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rpmdb.sqlite"), b"SQLite format 3\0garbage").unwrap();
        let os = OsRelease::default();
        let (packages, warnings) = crate::scan_dir(scan, &DirImage::new(root.path()), &os).unwrap();
        assert!(packages.is_empty());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn berkeley_db_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("var/lib/rpm");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Packages"), b"\0\0\0\0").unwrap();
        let os = OsRelease::default();
        let (_, warnings) = crate::scan_dir(scan, &DirImage::new(root.path()), &os).unwrap();
        assert!(warnings[0].message.contains("not read"), "{warnings:?}");
    }
}
