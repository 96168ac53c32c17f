//! The store commands: images, inspect, history, tag, rmi, save, prune, du, verify.

use crate::cli::{ArchiveKind, Command};
use crate::recipe::{INVALID, USAGE};
use kiln_build::output::{Destination, OutputKind};
use kiln_oci::ImageName;
use kiln_store::{Store, Tagged};
use std::path::Path;
use std::process::ExitCode;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// Names as people type them (`app:1`) resolve to what the store keeps
/// (`docker.io/library/app:1`).
fn full_name(name: &str) -> Result<ImageName, ExitCode> {
    ImageName::parse(name).map_err(|e| fail(USAGE, format!("{name:?}: {e}")))
}

fn find(store: &Store, name: &str) -> Result<Tagged, ExitCode> {
    let full = full_name(name)?;
    store
        .resolve(&full.to_string())
        .map_err(|e| fail(INVALID, e))
}

fn short_id(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

pub fn run(command: &Command, root: &Path) -> ExitCode {
    let opened = match command {
        Command::Prune { .. } => Store::open_exclusive(root),
        _ => Store::open(root),
    };
    let store = match opened {
        Ok(store) => store,
        Err(e) => return fail(INVALID, format!("store {}: {e}", root.display())),
    };
    match run_in(command, &store) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn run_in(command: &Command, store: &Store) -> Result<(), ExitCode> {
    match command {
        Command::Build(_)
        | Command::Run(_)
        | Command::Graph(_)
        | Command::Pull(_)
        | Command::Push(_)
        | Command::Login(_)
        | Command::Logout { .. } => Ok(()),
        Command::Images => {
            let images = store.images().map_err(|e| fail(INVALID, e))?;
            println!(
                "{:<40} {:<14} {:<22} {:>10}  PLATFORMS",
                "NAME", "IMAGE ID", "CREATED", "SIZE"
            );
            for tagged in images {
                let familiar = ImageName::parse(&tagged.name)
                    .map(|n| n.familiar())
                    .unwrap_or(tagged.name.clone());
                match crate::platforms_cmd::summary(store, &tagged.manifest) {
                    Ok(row) => println!(
                        "{familiar:<40} {:<14} {:<22} {:>10}  {}",
                        short_id(&row.id),
                        row.created,
                        human(row.size),
                        row.platforms_column()
                    ),
                    Err(e) => println!("{familiar:<40} (unreadable: {e})"),
                }
            }
            Ok(())
        }
        Command::Inspect {
            image,
            attestations,
            platform,
        } => {
            if attestations.provenance || attestations.sbom {
                return crate::attest_cmd::inspect(store, image, attestations);
            }
            let tagged = find(store, image)?;
            let output = crate::platforms_cmd::inspect(store, &tagged, platform.as_deref())
                .map_err(|e| fail(INVALID, e))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&output).unwrap_or_default()
            );
            Ok(())
        }
        Command::History { image } => {
            let tagged = find(store, image)?;
            // Of a multi-platform image, this machine's platform (else the first).
            let host = kiln_plan::Platform::host().to_oci();
            let found = match store.image_for_platform(&tagged.manifest, Some(&host)) {
                Ok(None) => store.image_for_platform(&tagged.manifest, None),
                other => other,
            };
            let (_, stored) = found
                .map_err(|e| fail(INVALID, e))?
                .ok_or_else(|| fail(INVALID, format!("{image}: the store holds no image of it")))?;
            let mut layers = stored.manifest.layers.iter();
            println!("{:<22} {:>10}  CREATED BY", "CREATED", "SIZE");
            for entry in stored
                .config
                .history
                .iter()
                .rev()
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let size = if entry.empty_layer {
                    0
                } else {
                    layers.next().map(|l| l.size).unwrap_or(0)
                };
                println!(
                    "{:<22} {:>10}  {}",
                    entry.created.clone().unwrap_or_default(),
                    human(size),
                    entry.created_by.clone().unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Tag { source, target } => {
            let tagged = find(store, source)?;
            let target = full_name(target)?;
            let tag = target.tag().unwrap_or("latest").to_string();
            store
                .tag(&target.to_string(), &tag, &tagged.manifest)
                .map_err(|e| fail(INVALID, e))
        }
        Command::Rmi { images } => {
            let mut missing = false;
            for image in images {
                let full = full_name(image)?;
                match store.untag(&full.to_string()) {
                    Ok(true) => println!("untagged {}", full.familiar()),
                    Ok(false) => {
                        eprintln!("error: image {image:?} is not in the store");
                        missing = true;
                    }
                    Err(e) => return Err(fail(INVALID, e)),
                }
            }
            if missing {
                Err(ExitCode::from(INVALID))
            } else {
                Ok(())
            }
        }
        Command::Save {
            image,
            output,
            format,
            platform,
        } => {
            let tagged = find(store, image)?;
            let name = full_name(image)?;
            let platform = match platform.as_deref().map(kiln_plan::Platform::parse) {
                Some(Ok(platform)) => Some(platform.to_oci()),
                Some(Err(e)) => return Err(fail(USAGE, format!("--platform: {e}"))),
                None => None,
            };
            let destination = if output.as_os_str() == "-" {
                Destination::Stdout
            } else {
                Destination::File(output.clone())
            };
            let kind = match format {
                ArchiveKind::Oci => OutputKind::Oci,
                ArchiveKind::Docker => OutputKind::Docker,
            };
            kiln_build::archive_io::save(
                store,
                &tagged,
                &[name],
                platform.as_ref(),
                kind,
                &destination,
            )
            .map_err(|e| fail(INVALID, e))
        }
        Command::Load { input, tags } => {
            let loaded =
                kiln_build::archive_io::load(store, input).map_err(|e| fail(INVALID, e))?;
            let mut names: Vec<ImageName> = loaded
                .names
                .iter()
                .filter_map(|n| ImageName::parse(n).ok())
                .collect();
            for tag in tags {
                names.push(full_name(tag)?);
            }
            // A multi-platform image says which platforms came with it.
            let platforms = if loaded.platforms.len() > 1 {
                format!(" ({})", loaded.platforms.join(", "))
            } else {
                String::new()
            };
            for name in &names {
                let tag = name.tag().unwrap_or("latest");
                store
                    .tag(&name.to_string(), tag, &loaded.descriptor)
                    .map_err(|e| fail(INVALID, e))?;
                println!("loaded {}{platforms}", name.familiar());
            }
            if names.is_empty() {
                println!(
                    "loaded {}{platforms} (no name: give one with -t)",
                    loaded.descriptor.digest
                );
            }
            Ok(())
        }
        Command::Prune { all } => {
            let report = store.prune(*all).map_err(|e| fail(INVALID, e))?;
            println!(
                "removed {} blobs, {} snapshots, {} cache records: {} freed",
                report.blobs,
                report.snapshots,
                report.cache_records,
                human(report.bytes)
            );
            Ok(())
        }
        Command::Du => {
            let usage = store.disk_usage();
            println!("{:<10} {:>8} {:>12}", "PART", "COUNT", "SIZE");
            println!(
                "{:<10} {:>8} {:>12}",
                "blobs",
                usage.blob_count,
                human(usage.blobs)
            );
            println!(
                "{:<10} {:>8} {:>12}",
                "snapshots",
                usage.snapshot_count,
                human(usage.snapshots)
            );
            println!(
                "{:<10} {:>8} {:>12}",
                "cache",
                usage.cache_count,
                human(usage.cache)
            );
            println!(
                "{:<10} {:>8} {:>12}",
                "total",
                "",
                human(usage.blobs + usage.snapshots + usage.cache)
            );
            Ok(())
        }
        Command::Verify => {
            let bad = store.verify().map_err(|e| fail(INVALID, e))?;
            if bad.is_empty() {
                println!("all blobs match their digests");
                Ok(())
            } else {
                for problem in &bad {
                    eprintln!("error: {problem}");
                }
                Err(ExitCode::from(INVALID))
            }
        }
    }
}
