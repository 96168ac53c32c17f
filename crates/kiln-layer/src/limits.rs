//! Bounds on reading a layer: a layer comes from a registry or an archive kiln does not
//! control, so a few KB of gzip that expand to terabytes, millions of entries, or endless
//! names must be refused before they fill the disk or memory.
//!
//! The uncompressed size of a layer may be at most `max(10 × its compressed size, ceiling)`,
//! and of a whole image `max(10 × the sum of its layers' compressed sizes, image ceiling)`;
//! the ceilings default to [`DEFAULT_LAYER_CEILING`] and [`DEFAULT_IMAGE_CEILING`] and are
//! set with [`LAYER_SIZE_VAR`] and [`IMAGE_SIZE_VAR`] (see docs/limits.md).

use crate::LayerError;

/// Environment variable setting the per-layer ceiling (bytes, or with a K/M/G/T suffix).
pub const LAYER_SIZE_VAR: &str = "KILN_MAX_LAYER_SIZE";
/// Environment variable setting the per-image ceiling.
pub const IMAGE_SIZE_VAR: &str = "KILN_MAX_IMAGE_SIZE";
/// Environment variable setting the most entries a layer may hold.
pub const ENTRIES_VAR: &str = "KILN_MAX_LAYER_ENTRIES";

/// Uncompressed bytes a layer may always expand to, whatever its compressed size: 16 GiB.
pub const DEFAULT_LAYER_CEILING: u64 = 16 << 30;
/// Uncompressed bytes an image's layers may always expand to together: 64 GiB.
pub const DEFAULT_IMAGE_CEILING: u64 = 64 << 30;
/// How many times its compressed size a layer may expand to, beyond the ceiling.
pub const EXPANSION_RATIO: u64 = 10;
/// Most entries (files, directories, links...) in one layer.
pub const DEFAULT_MAX_ENTRIES: u64 = 4_000_000;
/// Longest entry path or link target, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Largest PAX extended header or GNU long-name member, in bytes. Paths are bounded by
/// [`MAX_PATH`] and Linux xattr values by 64 KiB, so this is generous.
pub const MAX_EXTENSION: u64 = 1 << 20;

/// What reading one layer may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most uncompressed (tar) bytes.
    pub max_bytes: u64,
    /// The setting that raises `max_bytes`, named in the error.
    pub bytes_setting: Option<&'static str>,
    /// Most entries (extension headers not counted).
    pub max_entries: u64,
    /// Longest path or link target, in bytes.
    pub max_path: usize,
    /// Largest PAX or GNU extension member, in bytes.
    pub max_extension: u64,
}

impl Default for ReadLimits {
    fn default() -> ReadLimits {
        ReadLimits {
            max_bytes: DEFAULT_LAYER_CEILING,
            bytes_setting: Some(LAYER_SIZE_VAR),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_path: MAX_PATH,
            max_extension: MAX_EXTENSION,
        }
    }
}

/// The caps for unpacking an image's layers: ceilings and the entry bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackCaps {
    /// Per-layer ceiling (see the module docs).
    pub layer_ceiling: u64,
    /// Per-image ceiling.
    pub image_ceiling: u64,
    /// Most entries in one layer.
    pub max_entries: u64,
}

impl Default for UnpackCaps {
    fn default() -> UnpackCaps {
        UnpackCaps {
            layer_ceiling: DEFAULT_LAYER_CEILING,
            image_ceiling: DEFAULT_IMAGE_CEILING,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

impl UnpackCaps {
    /// The defaults, with [`LAYER_SIZE_VAR`], [`IMAGE_SIZE_VAR`] and [`ENTRIES_VAR`] applied
    /// when set; a value that is not a size is an error naming the variable.
    pub fn from_env() -> Result<UnpackCaps, LayerError> {
        let mut caps = UnpackCaps::default();
        for (var, field) in [
            (LAYER_SIZE_VAR, &mut caps.layer_ceiling),
            (IMAGE_SIZE_VAR, &mut caps.image_ceiling),
            (ENTRIES_VAR, &mut caps.max_entries),
        ] {
            if let Some(value) = std::env::var_os(var) {
                let text = value.to_string_lossy();
                *field = parse_size(&text).ok_or_else(|| LayerError::BadSetting {
                    name: var,
                    value: text.into_owned(),
                })?;
            }
        }
        Ok(caps)
    }

    /// The most a layer of `compressed` bytes may expand to.
    pub fn layer_limit(&self, compressed: u64) -> u64 {
        compressed
            .saturating_mul(EXPANSION_RATIO)
            .max(self.layer_ceiling)
    }

    /// The most an image whose layers are `compressed_total` bytes may expand to.
    pub fn image_limit(&self, compressed_total: u64) -> u64 {
        compressed_total
            .saturating_mul(EXPANSION_RATIO)
            .max(self.image_ceiling)
    }

    /// The limits for one layer of `compressed` bytes when the image it belongs to may still
    /// expand by `image_remaining` bytes: the smaller bound wins, and is named in the error.
    pub fn read_limits(&self, compressed: u64, image_remaining: u64) -> ReadLimits {
        let layer = self.layer_limit(compressed);
        let (max_bytes, setting) = if image_remaining < layer {
            (image_remaining, IMAGE_SIZE_VAR)
        } else {
            (layer, LAYER_SIZE_VAR)
        };
        ReadLimits {
            max_bytes,
            bytes_setting: Some(setting),
            max_entries: self.max_entries,
            ..ReadLimits::default()
        }
    }
}

/// A size: a decimal number of bytes with an optional binary suffix (`K`, `M`, `G`, `T`,
/// optionally followed by `iB` or `B`, any case). `None` when it is not one or overflows.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    let suffix = suffix.trim().to_ascii_lowercase();
    let unit = suffix
        .strip_suffix("ib")
        .or_else(|| suffix.strip_suffix('b'))
        .unwrap_or(&suffix);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_overflow_is_refused() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("8GiB"), Some(8 << 30));
        assert_eq!(parse_size("2 kb"), Some(2048));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        for bad in [
            "",
            "M",
            "-1",
            "1.5G",
            "10X",
            "99999999999999999999",
            "16777216T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_larger_of_ratio_and_ceiling_applies_and_the_image_bound_can_be_smaller() {
        let caps = UnpackCaps {
            layer_ceiling: 100,
            image_ceiling: 1000,
            max_entries: 5,
        };
        assert_eq!(caps.layer_limit(3), 100);
        assert_eq!(caps.layer_limit(50), 500);
        assert_eq!(caps.layer_limit(u64::MAX), u64::MAX);
        assert_eq!(caps.image_limit(7), 1000);
        let limits = caps.read_limits(50, 200);
        assert_eq!(
            (limits.max_bytes, limits.bytes_setting),
            (200, Some(IMAGE_SIZE_VAR))
        );
        let limits = caps.read_limits(50, 2000);
        assert_eq!(
            (limits.max_bytes, limits.bytes_setting),
            (500, Some(LAYER_SIZE_VAR))
        );
        assert_eq!(limits.max_entries, 5);
    }
}
