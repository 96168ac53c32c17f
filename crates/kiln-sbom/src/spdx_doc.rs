//! The SPDX 2.3 JSON document (spdx.github.io/spdx-spec/v2.3, its JSON schema for field
//! names).

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{Ecosystem, Inventory, Package, Result, Timestamp};

/// What the caller says about the document, beyond what the scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomOptions {
    /// The document and image package name: the image reference (`docker.io/library/x:1`),
    /// or a build's name.
    pub name: String,
    /// The creating tool, `NAME-VERSION` (`kiln-0.1.0`).
    pub tool: String,
    /// `created`: `SOURCE_DATE_EPOCH` when set, else the build's time.
    pub created: Timestamp,
    /// The layers' diff IDs, bottom first, so a package's layer index can be named.
    pub layer_diff_ids: Vec<String>,
    /// The URI prefix of the document namespace; the name and a content digest are appended.
    pub namespace_base: String,
}

impl SbomOptions {
    /// Options with kiln's namespace base and no layer ids.
    pub fn new(name: impl Into<String>, tool: impl Into<String>, created: Timestamp) -> Self {
        SbomOptions {
            name: name.into(),
            tool: tool.into(),
            created,
            layer_diff_ids: Vec::new(),
            namespace_base: "https://kiln.invalid/spdx".into(),
        }
    }
}

/// An SPDX 2.3 document. Field order is the serialisation order; every list is sorted, so the
/// bytes depend only on the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpdxDocument {
    #[serde(rename = "spdxVersion")]
    pub spdx_version: String,
    #[serde(rename = "dataLicense")]
    pub data_license: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(rename = "documentNamespace")]
    pub document_namespace: String,
    #[serde(rename = "creationInfo")]
    pub creation_info: SpdxCreationInfo,
    pub packages: Vec<SpdxPackage>,
    pub relationships: Vec<SpdxRelationship>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpdxCreationInfo {
    pub creators: Vec<String>,
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpdxPackage {
    pub name: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    #[serde(rename = "versionInfo", skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    #[serde(rename = "downloadLocation")]
    pub download_location: String,
    #[serde(rename = "filesAnalyzed")]
    pub files_analyzed: bool,
    #[serde(rename = "licenseConcluded")]
    pub license_concluded: String,
    #[serde(rename = "licenseDeclared")]
    pub license_declared: String,
    /// The database's license text when it is not a valid SPDX expression.
    #[serde(rename = "licenseComments", skip_serializing_if = "Option::is_none")]
    pub license_comments: Option<String>,
    #[serde(rename = "copyrightText")]
    pub copyright_text: String,
    /// Where the package was found: database file and layer.
    #[serde(rename = "sourceInfo", skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    #[serde(
        rename = "primaryPackagePurpose",
        skip_serializing_if = "Option::is_none"
    )]
    pub primary_package_purpose: Option<String>,
    #[serde(rename = "externalRefs", skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<SpdxExternalRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpdxExternalRef {
    #[serde(rename = "referenceCategory")]
    pub reference_category: String,
    #[serde(rename = "referenceType")]
    pub reference_type: String,
    #[serde(rename = "referenceLocator")]
    pub reference_locator: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpdxRelationship {
    #[serde(rename = "spdxElementId")]
    pub spdx_element_id: String,
    #[serde(rename = "relationshipType")]
    pub relationship_type: String,
    #[serde(rename = "relatedSpdxElement")]
    pub related_spdx_element: String,
}

const NOASSERTION: &str = "NOASSERTION";

impl SpdxDocument {
    /// The document's bytes: compact JSON, fields in declaration order, no trailing newline.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(self)?)
    }
}

/// The SPDX document of `inventory`: one package for the image (`CONTAINER`), one for the
/// operating system when os-release names it, and one per package found; the document
/// `DESCRIBES` the image, which `CONTAINS` the others.
pub fn spdx_document(inventory: &Inventory, options: &SbomOptions) -> Result<SpdxDocument> {
    let creator = format!("Tool: {}", options.tool);
    let image_id = "SPDXRef-Image".to_string();
    let mut packages = vec![SpdxPackage {
        name: options.name.clone(),
        spdx_id: image_id.clone(),
        version_info: None,
        supplier: None,
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        license_concluded: NOASSERTION.into(),
        license_declared: NOASSERTION.into(),
        license_comments: None,
        copyright_text: NOASSERTION.into(),
        source_info: None,
        primary_package_purpose: Some("CONTAINER".into()),
        external_refs: Vec::new(),
    }];
    if let Some(os) = &inventory.os {
        if let Some(id) = &os.id {
            packages.push(SpdxPackage {
                name: id.clone(),
                spdx_id: "SPDXRef-OperatingSystem".into(),
                version_info: os.version_id.clone().or(os.version_codename.clone()),
                supplier: None,
                download_location: NOASSERTION.into(),
                files_analyzed: false,
                license_concluded: NOASSERTION.into(),
                license_declared: NOASSERTION.into(),
                license_comments: None,
                copyright_text: NOASSERTION.into(),
                source_info: Some(source_info(
                    "/etc/os-release",
                    inventory.os_layer,
                    &options.layer_diff_ids,
                )),
                primary_package_purpose: Some("OPERATING-SYSTEM".into()),
                external_refs: Vec::new(),
            });
        }
    }
    for package in &inventory.packages {
        packages.push(spdx_package(package, &options.layer_diff_ids));
    }
    let mut relationships = vec![SpdxRelationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES".into(),
        related_spdx_element: image_id.clone(),
    }];
    relationships.extend(packages.iter().skip(1).map(|package| SpdxRelationship {
        spdx_element_id: image_id.clone(),
        relationship_type: "CONTAINS".into(),
        related_spdx_element: package.spdx_id.clone(),
    }));
    let mut document = SpdxDocument {
        spdx_version: "SPDX-2.3".into(),
        data_license: "CC0-1.0".into(),
        spdx_id: "SPDXRef-DOCUMENT".into(),
        name: options.name.clone(),
        document_namespace: String::new(),
        creation_info: SpdxCreationInfo {
            creators: vec![creator],
            created: options.created.to_string(),
        },
        packages,
        relationships,
    };
    // The namespace must be unique per document and stable per content: derive it from the
    // bytes of everything else.
    let digest = Sha256::digest(document.to_json()?);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    document.document_namespace = format!(
        "{}/{}-{hex}",
        options.namespace_base.trim_end_matches('/'),
        uri_segment(&options.name)
    );
    Ok(document)
}

fn spdx_package(package: &Package, layer_diff_ids: &[String]) -> SpdxPackage {
    let declared = match (package.ecosystem, package.license.as_deref()) {
        (Ecosystem::Deb, Some(text)) => debian_to_spdx(text),
        (_, Some(text)) => spdx_expression(text),
        (_, None) => None,
    };
    let (license_declared, license_comments) = match package.license.as_deref() {
        Some(text) => match declared {
            Some(expression) => (expression, None),
            None => (NOASSERTION.to_string(), Some(text.to_string())),
        },
        None => (NOASSERTION.to_string(), None),
    };
    SpdxPackage {
        name: package.name.clone(),
        spdx_id: package_id(package),
        version_info: Some(package.version.clone()),
        supplier: package
            .supplier
            .as_deref()
            .map(|supplier| match package.ecosystem {
                Ecosystem::Rpm => format!("Organization: {}", spdx_agent(supplier)),
                _ => format!("Person: {}", spdx_agent(supplier)),
            }),
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        license_concluded: NOASSERTION.into(),
        license_declared,
        license_comments,
        copyright_text: NOASSERTION.into(),
        source_info: Some(source_info(
            &package.found_in.to_string_lossy(),
            package.layer,
            layer_diff_ids,
        )),
        // A package database does not say whether a package is an application or a library.
        primary_package_purpose: None,
        external_refs: vec![SpdxExternalRef {
            reference_category: "PACKAGE-MANAGER".into(),
            reference_type: "purl".into(),
            reference_locator: package.purl.clone(),
        }],
    }
}

/// `SPDXRef-Package-deb-libc6-<16 hex of the purl's sha256>`: readable, and unique because
/// purls are unique in an inventory. SPDX ids allow only letters, digits, `.` and `-`.
fn package_id(package: &Package) -> String {
    let digest = Sha256::digest(package.purl.as_bytes());
    let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let name: String = package
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "SPDXRef-Package-{}-{name}-{short}",
        package.ecosystem.purl_type()
    )
}

fn source_info(database: &str, layer: Option<usize>, diff_ids: &[String]) -> String {
    match layer {
        Some(index) => match diff_ids.get(index) {
            Some(diff_id) => format!("{database}, layer {index} ({diff_id})"),
            None => format!("{database}, layer {index}"),
        },
        None => database.to_string(),
    }
}

/// `Name <mail>` → `Name (mail)`, SPDX's agent form.
fn spdx_agent(text: &str) -> String {
    match text.split_once('<') {
        Some((name, rest)) => {
            let mail = rest.trim_end().trim_end_matches('>');
            format!("{} ({})", name.trim(), mail.trim())
        }
        None => text.trim().to_string(),
    }
}

/// `text` when it is a valid SPDX license expression over the SPDX license list (deprecated
/// ids allowed, as the 2.3 spec does); `None` for free text such as `GPLv2+` or Debian's
/// short names, and for `LicenseRef-` ids (the document would have to define them).
pub(crate) fn spdx_expression(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() || text.contains("Ref-") {
        return None;
    }
    let mode = spdx::ParseMode {
        allow_deprecated: true,
        allow_postfix_plus_on_gpl: true,
        ..spdx::ParseMode::STRICT
    };
    spdx::Expression::parse_mode(text, mode)
        .ok()
        .map(|_| text.to_string())
}

/// A DEP-5 license expression (Debian's short names, `or`/`and`, parentheses) as an SPDX
/// expression, when every name is one whose meaning is fixed: the DEP-5 spec's short names
/// for the GPL family (`GPL-2+` is GPL-2.0-or-later), `Expat` (MIT), the BSD clause names,
/// `Artistic` (Debian's common-licenses text: Perl's), or a name that already is an SPDX id.
/// Anything else (`permissive`, `public-domain`, a `with … exception` phrase) gives `None`.
pub(crate) fn debian_to_spdx(text: &str) -> Option<String> {
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    let mut out = Vec::new();
    for token in spaced.split_whitespace() {
        let mapped = match token {
            "(" | ")" => token.to_string(),
            "or" | "OR" | "|" => "OR".to_string(),
            "and" | "AND" => "AND".to_string(),
            name => debian_license_name(name)?,
        };
        out.push(mapped);
    }
    let expression = out.join(" ").replace("( ", "(").replace(" )", ")");
    spdx_expression(&expression)
}

fn debian_license_name(name: &str) -> Option<String> {
    let (base, or_later) = match name.strip_suffix('+') {
        Some(base) => (base, true),
        None => (name, false),
    };
    let versioned = |family: &str, version: &str| {
        let suffix = if or_later { "or-later" } else { "only" };
        Some(format!("{family}-{version}-{suffix}"))
    };
    match base {
        "GPL-1" | "GPL-1.0" => versioned("GPL", "1.0"),
        "GPL-2" | "GPL-2.0" => versioned("GPL", "2.0"),
        "GPL-3" | "GPL-3.0" => versioned("GPL", "3.0"),
        "LGPL-2" | "LGPL-2.0" => versioned("LGPL", "2.0"),
        "LGPL-2.1" => versioned("LGPL", "2.1"),
        "LGPL-3" | "LGPL-3.0" => versioned("LGPL", "3.0"),
        "AGPL-3" | "AGPL-3.0" => versioned("AGPL", "3.0"),
        "GFDL-1.2" => versioned("GFDL", "1.2"),
        "GFDL-1.3" => versioned("GFDL", "1.3"),
        _ if or_later => None,
        "Expat" => Some("MIT".into()),
        "BSD-2-clause" => Some("BSD-2-Clause".into()),
        "BSD-3-clause" => Some("BSD-3-Clause".into()),
        "BSD-4-clause" => Some("BSD-4-Clause".into()),
        "Artistic" => Some("Artistic-1.0-Perl".into()),
        // Already an SPDX id (case-sensitive): Apache-2.0, MIT, ISC, Zlib, CC0-1.0, curl, …
        other => spdx::license_id(other)
            .filter(|id| !id.is_deprecated())
            .map(|id| id.name.to_string()),
    }
}

/// A name made safe for a URI path segment.
fn uri_segment(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "image".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ecosystem, OsRelease};
    use std::path::PathBuf;

    fn package(name: &str, license: Option<&str>) -> Package {
        Package {
            ecosystem: Ecosystem::Apk,
            name: name.into(),
            version: "1.0-r0".into(),
            architecture: Some("x86_64".into()),
            license: license.map(str::to_string),
            source: None,
            supplier: Some("Natanael Copa <ncopa@alpinelinux.org>".into()),
            purl: format!("pkg:apk/alpine/{name}@1.0-r0?arch=x86_64"),
            layer: Some(1),
            found_in: PathBuf::from("/lib/apk/db/installed"),
        }
    }

    fn inventory() -> Inventory {
        Inventory {
            os: Some(OsRelease::parse("ID=alpine\nVERSION_ID=3.19.1\n")),
            os_layer: Some(0),
            packages: vec![
                package("busybox", Some("GPL-2.0-only")),
                package("musl", Some("MIT AND GPLv2")),
            ],
            warnings: Vec::new(),
        }
    }

    #[test]
    fn shape() {
        let mut options = SbomOptions::new("example.com/app:1", "kiln-0.1.0", Timestamp(0));
        options.layer_diff_ids = vec!["sha256:aa".into(), "sha256:bb".into()];
        let document = spdx_document(&inventory(), &options).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&document.to_json().unwrap()).unwrap();
        assert_eq!(json["spdxVersion"], "SPDX-2.3");
        assert_eq!(json["dataLicense"], "CC0-1.0");
        assert_eq!(json["creationInfo"]["created"], "1970-01-01T00:00:00Z");
        assert_eq!(json["creationInfo"]["creators"][0], "Tool: kiln-0.1.0");
        assert!(json["documentNamespace"]
            .as_str()
            .unwrap()
            .starts_with("https://kiln.invalid/spdx/example.com-app-1-"));
        let packages = json["packages"].as_array().unwrap();
        assert_eq!(packages.len(), 4);
        assert_eq!(packages[0]["primaryPackagePurpose"], "CONTAINER");
        assert_eq!(packages[1]["primaryPackagePurpose"], "OPERATING-SYSTEM");
        assert_eq!(packages[1]["versionInfo"], "3.19.1");
        let busybox = &packages[2];
        assert_eq!(busybox["licenseDeclared"], "GPL-2.0-only");
        assert_eq!(
            busybox["supplier"],
            "Person: Natanael Copa (ncopa@alpinelinux.org)"
        );
        assert_eq!(
            busybox["sourceInfo"],
            "/lib/apk/db/installed, layer 1 (sha256:bb)"
        );
        assert_eq!(
            busybox["externalRefs"][0]["referenceLocator"],
            "pkg:apk/alpine/busybox@1.0-r0?arch=x86_64"
        );
        let musl = &packages[3];
        assert_eq!(musl["licenseDeclared"], "NOASSERTION");
        assert_eq!(musl["licenseComments"], "MIT AND GPLv2");
        let relationships = json["relationships"].as_array().unwrap();
        assert_eq!(relationships.len(), 4);
        assert_eq!(relationships[0]["relationshipType"], "DESCRIBES");
        assert_eq!(relationships[3]["relatedSpdxElement"], musl["SPDXID"]);
        let id = busybox["SPDXID"].as_str().unwrap();
        assert!(id.starts_with("SPDXRef-Package-apk-busybox-"), "{id}");
    }

    #[test]
    fn same_content_same_bytes_and_namespace_follows_content() {
        let options = SbomOptions::new("app", "kiln-0.1.0", Timestamp(1_700_000_000));
        let a = spdx_document(&inventory(), &options)
            .unwrap()
            .to_json()
            .unwrap();
        let b = spdx_document(&inventory(), &options)
            .unwrap()
            .to_json()
            .unwrap();
        assert_eq!(a, b);
        let mut changed = inventory();
        changed.packages.pop();
        let c = spdx_document(&changed, &options).unwrap();
        let first = spdx_document(&inventory(), &options).unwrap();
        assert_ne!(c.document_namespace, first.document_namespace);
    }

    #[test]
    fn debian_license_names() {
        assert_eq!(
            debian_to_spdx("GPL-1+ or Artistic").as_deref(),
            Some("GPL-1.0-or-later OR Artistic-1.0-Perl")
        );
        assert_eq!(
            debian_to_spdx("(LGPL-3+ or GPL-2+) AND BSD-3-clause AND Expat").as_deref(),
            Some("(LGPL-3.0-or-later OR GPL-2.0-or-later) AND BSD-3-Clause AND MIT")
        );
        assert_eq!(debian_to_spdx("GPL-2").as_deref(), Some("GPL-2.0-only"));
        assert_eq!(debian_to_spdx("Zlib").as_deref(), Some("Zlib"));
        assert_eq!(debian_to_spdx("GPL-2+ with Libtool exception"), None);
        assert_eq!(debian_to_spdx("permissive"), None);
        assert_eq!(debian_to_spdx("GPL-2 AND public-domain"), None);
        assert_eq!(debian_to_spdx("Expat+"), None);
        assert_eq!(debian_to_spdx("GPL-2 or"), None);
    }

    #[test]
    fn license_expressions() {
        assert_eq!(
            spdx_expression("MIT AND (Apache-2.0 OR BSD-3-Clause)").as_deref(),
            Some("MIT AND (Apache-2.0 OR BSD-3-Clause)")
        );
        assert_eq!(spdx_expression("GPL-2.0+").as_deref(), Some("GPL-2.0+"));
        assert_eq!(spdx_expression("GPLv2+"), None);
        assert_eq!(spdx_expression("LicenseRef-Custom"), None);
        assert_eq!(spdx_expression(""), None);
    }
}
