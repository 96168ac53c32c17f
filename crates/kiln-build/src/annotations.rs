//! `--annotation` as buildx takes it: `[TYPE[,TYPE...]:]KEY=VALUE`, where TYPE says which
//! document carries the annotation: `manifest` (the default: each image manifest),
//! `manifest-descriptor` (each manifest's entry in the image index), `index` (the image index)
//! or `index-descriptor` (the index's entry in an OCI archive's `index.json`).
//!
//! The flag's values travel in [`crate::BuildOptions::annotations`] as one map: a manifest
//! annotation under its key, any other under `TYPES:KEY` (the types checked, `manifest` left
//! out), which [`Annotations::split`] takes apart again.

use std::collections::BTreeMap;

/// Which document an annotation goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Each image manifest.
    Manifest,
    /// Each image manifest's descriptor in the index.
    ManifestDescriptor,
    /// The image index.
    Index,
    /// The image index's descriptor (in an OCI archive's `index.json`).
    IndexDescriptor,
}

impl Target {
    /// The type as buildx spells it.
    pub fn name(self) -> &'static str {
        match self {
            Target::Manifest => "manifest",
            Target::ManifestDescriptor => "manifest-descriptor",
            Target::Index => "index",
            Target::IndexDescriptor => "index-descriptor",
        }
    }

    fn parse(text: &str) -> Option<Target> {
        [
            Target::Manifest,
            Target::ManifestDescriptor,
            Target::Index,
            Target::IndexDescriptor,
        ]
        .into_iter()
        .find(|t| t.name() == text)
    }
}

/// Why an `--annotation` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// No `=`, or an empty key.
    #[error("{0:?}: expected [TYPE:]KEY=VALUE")]
    Malformed(String),
    /// A type buildx does not know either.
    #[error("{value:?}: unknown annotation type {kind:?} (manifest, manifest-descriptor, index or index-descriptor)")]
    UnknownType {
        /// The flag's value.
        value: String,
        /// The type.
        kind: String,
    },
    /// `TYPE[PLATFORM]:`: annotations of one platform's documents.
    #[error("{value:?}: annotations for one platform ({kind}) are not available; give the type without [PLATFORM]")]
    PerPlatform {
        /// The flag's value.
        value: String,
        /// The type with its platform.
        kind: String,
    },
}

/// Reads one `--annotation` value into the key and value [`crate::BuildOptions::annotations`]
/// holds. A prefix with a `.` or `/` is part of the key (`com.example:x=1`), not a type.
pub fn parse_flag(value: &str) -> Result<(String, String), AnnotationError> {
    let malformed = || AnnotationError::Malformed(value.to_string());
    let (key, v) = value.split_once('=').ok_or_else(malformed)?;
    // A platform in brackets may hold `/`; the types before it may not.
    let is_types = |kinds: &str| {
        let types = kinds.split('[').next().unwrap_or(kinds);
        !types.contains('.') && !types.contains('/')
    };
    let Some((kinds, bare)) = key.split_once(':').filter(|(kinds, _)| is_types(kinds)) else {
        if key.is_empty() {
            return Err(malformed());
        }
        return Ok((key.to_string(), v.to_string()));
    };
    if bare.is_empty() {
        return Err(malformed());
    }
    let mut targets: Vec<&'static str> = Vec::new();
    for kind in kinds.split(',') {
        if kind.contains('[') {
            return Err(AnnotationError::PerPlatform {
                value: value.to_string(),
                kind: kind.to_string(),
            });
        }
        let target = Target::parse(kind).ok_or_else(|| AnnotationError::UnknownType {
            value: value.to_string(),
            kind: kind.to_string(),
        })?;
        if !targets.contains(&target.name()) {
            targets.push(target.name());
        }
    }
    if targets == ["manifest"] {
        return Ok((bare.to_string(), v.to_string()));
    }
    Ok((format!("{}:{bare}", targets.join(",")), v.to_string()))
}

/// The annotations of a build, by the document they go on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// On each image manifest.
    pub manifest: BTreeMap<String, String>,
    /// On each manifest's descriptor in the image index.
    pub manifest_descriptor: BTreeMap<String, String>,
    /// On the image index.
    pub index: BTreeMap<String, String>,
    /// On the image index's descriptor.
    pub index_descriptor: BTreeMap<String, String>,
}

impl Annotations {
    /// Takes apart what [`parse_flag`] put into one map.
    pub fn split(options: &BTreeMap<String, String>) -> Annotations {
        let mut split = Annotations::default();
        for (key, value) in options {
            let typed = key.split_once(':').and_then(|(kinds, bare)| {
                let targets: Option<Vec<Target>> = kinds.split(',').map(Target::parse).collect();
                targets.map(|t| (t, bare))
            });
            let Some((targets, bare)) = typed else {
                split.manifest.insert(key.clone(), value.clone());
                continue;
            };
            for target in targets {
                let map = match target {
                    Target::Manifest => &mut split.manifest,
                    Target::ManifestDescriptor => &mut split.manifest_descriptor,
                    Target::Index => &mut split.index,
                    Target::IndexDescriptor => &mut split.index_descriptor,
                };
                map.insert(bare.to_string(), value.clone());
            }
        }
        split
    }

    /// The types that need an image index, among those given (for the error of a build that
    /// makes none).
    pub fn needing_an_index(&self) -> Vec<&'static str> {
        [
            (Target::Index, &self.index),
            (Target::IndexDescriptor, &self.index_descriptor),
            (Target::ManifestDescriptor, &self.manifest_descriptor),
        ]
        .into_iter()
        .filter(|(_, map)| !map.is_empty())
        .map(|(target, _)| target.name())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Result<(String, String), AnnotationError> {
        parse_flag(value)
    }

    #[test]
    fn flags_in_buildx_form() {
        let ok = |key: &str, value: &str| Ok((key.to_string(), value.to_string()));
        assert_eq!(parsed("a=b"), ok("a", "b"));
        assert_eq!(parsed("manifest:a=b=c"), ok("a", "b=c"));
        assert_eq!(
            parsed("index:org.opencontainers.image.title=x"),
            ok("index:org.opencontainers.image.title", "x")
        );
        assert_eq!(parsed("index,manifest:a=1"), ok("index,manifest:a", "1"));
        assert_eq!(
            parsed("index-descriptor,index:a=1"),
            ok("index-descriptor,index:a", "1")
        );
        assert_eq!(parsed("com.example:x=1"), ok("com.example:x", "1"));
        assert_eq!(parsed("example.com/a:b=1"), ok("example.com/a:b", "1"));
        assert!(matches!(
            parsed("bogus:a=b"),
            Err(AnnotationError::UnknownType { .. })
        ));
        assert!(matches!(
            parsed("manifest[linux/amd64]:a=b"),
            Err(AnnotationError::PerPlatform { .. })
        ));
        for bad in ["a", "=b", "index:=b", ":a=b"] {
            assert!(parsed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn split_puts_each_on_its_documents() {
        let options: BTreeMap<String, String> = [
            "a=1",
            "index:b=2",
            "index,manifest:c=3",
            "manifest-descriptor,index-descriptor:d=4",
            "com.example:e=5",
        ]
        .iter()
        .map(|v| parse_flag(v).unwrap_or_default())
        .collect();
        let split = Annotations::split(&options);
        let keys = |map: &BTreeMap<String, String>| map.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&split.manifest), ["a", "c", "com.example:e"]);
        assert_eq!(keys(&split.index), ["b", "c"]);
        assert_eq!(keys(&split.manifest_descriptor), ["d"]);
        assert_eq!(keys(&split.index_descriptor), ["d"]);
        assert_eq!(
            split.needing_an_index(),
            ["index", "index-descriptor", "manifest-descriptor"]
        );
        assert!(Annotations::split(&BTreeMap::new())
            .needing_an_index()
            .is_empty());
    }
}
