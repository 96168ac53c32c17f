//! `kiln inspect --provenance` / `--sbom`: an image's attestation statements, read from the
//! store (recorded there by `kiln build`) or, for a name the store does not hold, from the
//! registry's image index (BuildKit's attestation manifests).

use crate::cli::InspectAttestations;
use crate::recipe::{INVALID, USAGE};
use kiln_attest::{attestations_for, is_attestation_manifest, layers_with_predicate};
use kiln_oci::{from_json_slice, media_types, Descriptor, ImageName, Index, Manifest};
use kiln_registry::Registry;
use kiln_store::Store;
use std::process::ExitCode;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// Where the attestation blobs are read from.
enum Source<'a> {
    Store,
    Registry(&'a Registry, ImageName),
}

impl Source<'_> {
    /// A manifest or blob by descriptor, its digest checked by the store.
    fn blob(&self, store: &Store, descriptor: &Descriptor) -> Result<Vec<u8>, String> {
        match self {
            Source::Store => {}
            Source::Registry(registry, name) => {
                if media_types::is_manifest(&descriptor.media_type) {
                    let by_digest = ImageName::parse(&format!(
                        "{}/{}@{}",
                        name.domain(),
                        name.path(),
                        descriptor.digest
                    ))
                    .map_err(|e| e.to_string())?;
                    let (found, bytes) = registry
                        .fetch_manifest(&by_digest)
                        .map_err(|e| e.to_string())?;
                    if found.digest != descriptor.digest {
                        return Err(format!(
                            "{name}: asked for {}, the registry gave {}",
                            descriptor.digest, found.digest
                        ));
                    }
                    return Ok(bytes);
                }
                registry
                    .fetch_blob(name, descriptor, store, &|_| {})
                    .map_err(|e| e.to_string())?;
            }
        }
        store
            .read_blob(&descriptor.digest)
            .map_err(|e| e.to_string())
    }
}

/// The attestation manifest entry for this machine's image in `index` (else the first
/// image's).
fn entry_in_index(index: &Index) -> Option<&Descriptor> {
    let host = kiln_plan::Platform::host();
    let images: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| !is_attestation_manifest(d))
        .collect();
    let image = images
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == host.os && p.architecture == host.architecture)
        })
        .or(images.first())?;
    attestations_for(index, image.digest.as_str())
}

/// Prints the statements asked for, as JSON.
pub fn inspect(store: &Store, image: &str, args: &InspectAttestations) -> Result<(), ExitCode> {
    let name = ImageName::parse(image).map_err(|e| fail(USAGE, format!("{image:?}: {e}")))?;
    let registry;
    let (source, entry) = match store.resolve(&name.to_string()) {
        Ok(tagged) if media_types::is_index(&tagged.manifest.media_type) => {
            let bytes = store
                .read_blob(&tagged.manifest.digest)
                .map_err(|e| fail(INVALID, e))?;
            let index: Index = from_json_slice(&bytes).map_err(|e| fail(INVALID, e))?;
            (Source::Store, entry_in_index(&index).cloned())
        }
        Ok(tagged) => {
            let entry = store
                .attestations_for(&tagged.manifest.digest)
                .map_err(|e| fail(INVALID, e))?;
            (Source::Store, entry)
        }
        Err(_) => {
            registry = crate::registry_cmd::client(&args.registry);
            let (descriptor, bytes) = registry
                .fetch_manifest(&name)
                .map_err(|e| fail(INVALID, format!("{name}: {e}")))?;
            let entry = if media_types::is_index(&descriptor.media_type) {
                let index: Index = from_json_slice(&bytes).map_err(|e| fail(INVALID, e))?;
                entry_in_index(&index).cloned()
            } else {
                None
            };
            (Source::Registry(&registry, name.clone()), entry)
        }
    };
    let entry = entry.ok_or_else(|| {
        fail(
            INVALID,
            format!("{name}: the image has no attestations (build it with --provenance or --sbom)"),
        )
    })?;
    let manifest_bytes = source
        .blob(store, &entry)
        .map_err(|e| fail(INVALID, format!("{name}: attestation manifest: {e}")))?;
    let manifest: Manifest = from_json_slice(&manifest_bytes).map_err(|e| fail(INVALID, e))?;
    let mut wanted = Vec::new();
    if args.provenance {
        wanted.push(("provenance", kiln_attest::SLSA_PROVENANCE_V1));
    }
    if args.sbom {
        wanted.push(("sbom", kiln_attest::SPDX_DOCUMENT));
    }
    let mut found = serde_json::Map::new();
    for (key, predicate_type) in &wanted {
        let layer = layers_with_predicate(&manifest, predicate_type)
            .next()
            .ok_or_else(|| fail(INVALID, format!("{name}: no {key} attestation")))?;
        let bytes = source
            .blob(store, layer)
            .map_err(|e| fail(INVALID, format!("{name}: {key} attestation: {e}")))?;
        let statement: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| fail(INVALID, e))?;
        found.insert(key.to_string(), statement);
    }
    let output = match (wanted.len(), found.values().next()) {
        (1, Some(one)) => one.clone(),
        _ => serde_json::Value::Object(found),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&output).unwrap_or_default()
    );
    Ok(())
}
