//! What the store commands show of multi-platform images (an index): `kiln images` lists the
//! platforms, `kiln inspect --platform` picks one.

use kiln_oci::{media_types, Descriptor};
use kiln_plan::Platform;
use kiln_store::{Store, Tagged};

/// One row of `kiln images`.
pub struct Summary {
    /// The image id: the config digest of a single image, the index digest of several.
    pub id: String,
    /// When it was made (the first platform's).
    pub created: String,
    /// Bytes of every platform's config and layers, as the manifests state them.
    pub size: u64,
    /// `os/arch[/variant]` of each platform the store holds.
    pub platforms: Vec<String>,
    /// Platforms its index lists whose images the store has not pulled (a multi-platform base
    /// pulled for some of them).
    pub not_pulled: Vec<String>,
}

impl Summary {
    /// The PLATFORMS column: the held platforms, and how many more the index lists.
    pub fn platforms_column(&self) -> String {
        let held = self.platforms.join(",");
        match self.not_pulled.len() {
            0 => held,
            n => format!("{held} (+{n} not pulled)"),
        }
    }
}

fn platform_text(platform: &kiln_oci::Platform) -> String {
    match &platform.variant {
        Some(v) if !v.is_empty() => format!("{}/{}/{v}", platform.os, platform.architecture),
        _ => format!("{}/{}", platform.os, platform.architecture),
    }
}

/// The images-table row of a name's descriptor.
pub fn summary(store: &Store, descriptor: &Descriptor) -> Result<Summary, kiln_store::StoreError> {
    let mut size: u64 = 0;
    let mut created = None;
    let mut platforms = Vec::new();
    let mut config_id = None;
    for manifest in store.manifests_of(descriptor)? {
        let image = store.image(&manifest)?;
        if image.config.os == "unknown" {
            continue;
        }
        // Registry-stated sizes: summed with checks.
        size = size.saturating_add(image.manifest.total_size().unwrap_or(u64::MAX));
        created.get_or_insert(image.config.created.clone().unwrap_or_default());
        config_id.get_or_insert(image.config_digest.to_string());
        platforms.push(platform_text(
            &manifest
                .platform
                .clone()
                .unwrap_or_else(|| image.config.platform()),
        ));
    }
    let not_pulled = store
        .platforms_of(descriptor)?
        .into_iter()
        .filter(|entry| !entry.held)
        .map(|entry| entry.text())
        .collect();
    let id = if media_types::is_index(&descriptor.media_type) {
        descriptor.digest.to_string()
    } else {
        config_id.unwrap_or_default()
    };
    Ok(Summary {
        id,
        created: created.unwrap_or_default(),
        size,
        platforms,
        not_pulled,
    })
}

/// `kiln inspect [--platform P]`: the manifest and config of the image (of a multi-platform
/// image, the one for P, by default this machine's), and, for an index, the index itself and
/// its platforms.
pub fn inspect(
    store: &Store,
    tagged: &Tagged,
    platform: Option<&str>,
) -> Result<serde_json::Value, String> {
    let wanted = match platform {
        Some(text) => Some(Platform::parse(text).map_err(|e| format!("--platform: {e}"))?),
        None => None,
    };
    let is_index = media_types::is_index(&tagged.manifest.media_type);
    // One image: --platform must match it; several: the platform asked for, else this machine's.
    let choose = wanted
        .clone()
        .or_else(|| is_index.then(Platform::host))
        .map(|p| p.to_oci());
    let found = store
        .image_for_platform(&tagged.manifest, choose.as_ref())
        .map_err(|e| e.to_string())?;
    let Some((manifest, stored)) = found else {
        let listed = store
            .platforms_of(&tagged.manifest)
            .map_err(|e| e.to_string())?;
        let held: Vec<String> = listed.iter().filter(|e| e.held).map(|e| e.text()).collect();
        let asked = choose.as_ref().map(platform_text).unwrap_or_default();
        let not_pulled = choose.as_ref().is_some_and(|wanted| {
            listed
                .iter()
                .any(|e| !e.held && e.platform.satisfies(wanted))
        });
        if not_pulled {
            return Err(format!(
                "{}: its index lists {asked}, but the store has not pulled that platform's image (pulled: {}); pull it with `kiln pull --platform {asked} {}`",
                tagged.name,
                held.join(", "),
                tagged.name
            ));
        }
        let mut have: Vec<String> = Vec::new();
        for entry in &listed {
            if !have.contains(&entry.text()) {
                have.push(entry.text());
            }
        }
        return Err(format!(
            "{}: no image for {asked}; it has {} (choose one with --platform)",
            tagged.name,
            have.join(", ")
        ));
    };
    let mut output = serde_json::json!({
        "Name": tagged.name,
        "Id": stored.config_digest.to_string(),
        "Digest": manifest.digest.to_string(),
        "Platform": platform_text(&manifest.platform.clone().unwrap_or_else(|| stored.config.platform())),
        "Manifest": stored.manifest,
        "Config": stored.config,
    });
    if is_index {
        let index: kiln_oci::Index = store
            .read_blob(&tagged.manifest.digest)
            .ok()
            .and_then(|b| kiln_oci::from_json_slice(&b).ok())
            .ok_or_else(|| format!("{}: its index cannot be read", tagged.name))?;
        output["IndexDigest"] = tagged.manifest.digest.to_string().into();
        output["Index"] = serde_json::to_value(&index).unwrap_or_default();
        let summary = summary(store, &tagged.manifest).map_err(|e| e.to_string())?;
        output["Platforms"] = summary.platforms.into();
        if !summary.not_pulled.is_empty() {
            output["NotPulled"] = summary.not_pulled.into();
        }
    }
    Ok(output)
}
