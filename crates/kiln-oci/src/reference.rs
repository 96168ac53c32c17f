//! Image references, parsed and normalised the way Docker does (distribution/reference's
//! grammar and `ParseNormalizedNamed`).
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain "/"] path-component ("/" path-component)*
//! domain           := host [":" port]
//! host             := domain-name | "[" ipv6 "]"
//! domain-name      := domain-component ("." domain-component)*
//! domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
//! port             := [0-9]+
//! path-component   := [a-z0-9]+ (separator [a-z0-9]+)*
//! separator        := [_.] | "__" | "-"+
//! tag              := [\w][\w.-]{0,127}
//! ```
//!
//! The first `/`-separated part is the domain when it contains `.` or `:`, is `localhost`, or
//! has uppercase letters; otherwise the name is on Docker Hub (`docker.io`), and a one-part Hub
//! name is put under `library/`. The name (domain + path) is at most 255 characters.

use std::fmt;
use std::str::FromStr;

use crate::{Digest, Error, Result};

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A normalised image reference: `domain/path[:tag][@digest]`.
///
/// [`ImageName::parse`] gives a name without tag or digest the tag `latest`. A reference with
/// both a tag and a digest keeps both (pulls go by the digest).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageName {
    /// Parses and normalises: `alpine` → `docker.io/library/alpine:latest`.
    pub fn parse(input: &str) -> Result<ImageName> {
        let mut name = ImageName::parse_normalized(input)?;
        if name.tag.is_none() && name.digest.is_none() {
            name.tag = Some(DEFAULT_TAG.into());
        }
        Ok(name)
    }

    /// Parses and normalises without adding a default tag.
    pub fn parse_normalized(input: &str) -> Result<ImageName> {
        let err = |reason: &str| Error::InvalidReference {
            input: input.chars().take(300).collect(),
            reason: reason.into(),
        };
        if input.is_empty() {
            return Err(err("empty reference"));
        }
        if input.len() == 64
            && input
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(err("a 64-character hex string is an image ID, not a name"));
        }
        let (domain, remainder) = split_docker_domain(input);
        let remote = remainder.split(':').next().unwrap_or_default();
        if remote.to_lowercase() != remote {
            return Err(err("repository name must be lowercase"));
        }

        let (name_and_tag, digest) = match remainder.split_once('@') {
            Some((left, d)) => (
                left,
                Some(Digest::parse(d).map_err(|e| err(&e.to_string()))?),
            ),
            None => (remainder.as_str(), None),
        };
        let (path, tag) = match name_and_tag.split_once(':') {
            Some((p, t)) => (p, Some(t)),
            None => (name_and_tag, None),
        };
        if !valid_domain(&domain) {
            return Err(err("invalid registry domain"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(err(
                "invalid repository path: components are [a-z0-9] runs joined by '.', '_', '__' or dashes",
            ));
        }
        if domain.len().saturating_add(1).saturating_add(path.len()) > NAME_MAX {
            return Err(err("repository name must not be more than 255 characters"));
        }
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(err(
                    "invalid tag: [A-Za-z0-9_] then up to 127 of [A-Za-z0-9_.-]",
                ));
            }
        }
        Ok(ImageName {
            domain,
            path: path.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry: `docker.io`, `localhost`, `registry:5000`, `[::1]:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path: `library/alpine`, `user/app`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, when there is one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, when there is one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/path`, without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// Docker's short repository name: `alpine`, `user/app`, `ghcr.io/o/r`.
    pub fn familiar_repository(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.repository();
        }
        match self.path.strip_prefix(OFFICIAL_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => self.path.clone(),
        }
    }

    /// Docker's short form of the whole reference: `alpine:latest`, `user/app:1.0`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_repository();
        self.push_suffix(&mut s);
        s
    }

    /// The same repository with `tag` (replacing any tag, keeping any digest).
    pub fn with_tag(&self, tag: &str) -> Result<ImageName> {
        if !valid_tag(tag) {
            return Err(Error::InvalidReference {
                input: tag.chars().take(300).collect(),
                reason: "invalid tag".into(),
            });
        }
        Ok(ImageName {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// The same repository with `digest` (keeping any tag).
    pub fn with_digest(&self, digest: Digest) -> ImageName {
        ImageName {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The repository with its tag only (no digest), e.g. for `RepoTags`; `None` when untagged.
    pub fn tagged(&self) -> Option<ImageName> {
        self.tag.as_ref().map(|_| ImageName {
            digest: None,
            ..self.clone()
        })
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
    }
}

impl fmt::Display for ImageName {
    /// The full form: `docker.io/library/alpine:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.repository();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for ImageName {
    type Err = Error;
    fn from_str(s: &str) -> Result<ImageName> {
        ImageName::parse(s)
    }
}

/// Splits off the registry as Docker does; the remainder still carries tag and digest.
fn split_docker_domain(name: &str) -> (String, String) {
    let Some((first, rest)) = name.split_once('/') else {
        return (DEFAULT_DOMAIN.into(), format!("{OFFICIAL_PREFIX}{name}"));
    };
    let (domain, remainder) = if first == "localhost" {
        (first, rest)
    } else if first == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN, rest)
    } else if first.contains(['.', ':']) || first.to_lowercase() != first {
        (first, rest)
    } else {
        (DEFAULT_DOMAIN, name)
    };
    let remainder = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        format!("{OFFICIAL_PREFIX}{remainder}")
    } else {
        remainder.to_owned()
    };
    (domain.to_owned(), remainder)
}

fn valid_domain(domain: &str) -> bool {
    let (host_ok, rest) = if let Some(after) = domain.strip_prefix('[') {
        match after.split_once(']') {
            Some((ip, rest)) => (
                !ip.is_empty() && ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
                rest,
            ),
            None => return false,
        }
    } else {
        let (host, rest) = domain.split_at(domain.find(':').unwrap_or(domain.len()));
        (host.split('.').all(valid_domain_component), rest)
    };
    let port_ok = match rest.strip_prefix(':') {
        Some(port) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
        None => rest.is_empty(),
    };
    host_ok && port_ok
}

fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        }
        _ => false,
    }
}

fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let lower_alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && lower_alnum(b[i]) {
            i = i.saturating_add(1);
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i = i.saturating_add(1),
            b'_' if b.get(i.saturating_add(1)) == Some(&b'_') => i = i.saturating_add(2),
            b'_' => i = i.saturating_add(1),
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i = i.saturating_add(1);
                }
            }
            _ => return false,
        }
    }
}

fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        ImageName::parse(s).unwrap().to_string()
    }

    fn short(s: &str) -> String {
        ImageName::parse(s).unwrap().familiar()
    }

    fn bad(s: &str) {
        assert!(ImageName::parse(s).is_err(), "accepted {s:?}");
    }

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_hub_names() {
        assert_eq!(full("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(short("alpine"), "alpine:latest");
        assert_eq!(full("alpine:3.19"), "docker.io/library/alpine:3.19");
        assert_eq!(full("user/app:1.0"), "docker.io/user/app:1.0");
        assert_eq!(short("user/app:1.0"), "user/app:1.0");
        assert_eq!(full("docker.io/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(
            full("index.docker.io/user/app"),
            "docker.io/user/app:latest"
        );
        assert_eq!(
            full("docker.io/library/a/b"),
            "docker.io/library/a/b:latest"
        );
        // Nested under library/ stays as is in the familiar form.
        assert_eq!(short("docker.io/library/a/b"), "library/a/b:latest");
        let n = ImageName::parse("alpine").unwrap();
        assert_eq!(
            (n.domain(), n.path(), n.tag()),
            ("docker.io", "library/alpine", Some("latest"))
        );
        assert_eq!(n.familiar_repository(), "alpine");
        assert_eq!(n.repository(), "docker.io/library/alpine");
    }

    #[test]
    fn registries_ports_localhost() {
        let r = format!("registry:5000/a/b@sha256:{HEX}");
        let n = ImageName::parse(&r).unwrap();
        assert_eq!(n.domain(), "registry:5000");
        assert_eq!(n.path(), "a/b");
        assert_eq!(n.tag(), None);
        assert_eq!(n.digest().unwrap().hex(), HEX);
        assert_eq!(n.to_string(), r);
        assert_eq!(n.familiar(), r);
        assert_eq!(full("localhost/x"), "localhost/x:latest");
        assert_eq!(full("localhost:5000/x:v"), "localhost:5000/x:v");
        assert_eq!(full("ghcr.io/o/r"), "ghcr.io/o/r:latest");
        assert_eq!(short("ghcr.io/o/r:1"), "ghcr.io/o/r:1");
        assert_eq!(full("127.0.0.1:5000/x"), "127.0.0.1:5000/x:latest");
        assert_eq!(full("[::1]:5000/x"), "[::1]:5000/x:latest");
        assert_eq!(full("[fe80::1]/x"), "[fe80::1]/x:latest");
        // No slash: never a domain; "localhost:5000" is library/localhost tagged 5000.
        assert_eq!(full("localhost:5000"), "docker.io/library/localhost:5000");
        // Uppercase first part: a domain.
        assert_eq!(
            ImageName::parse("Registry.Example/x").unwrap().domain(),
            "Registry.Example"
        );
        assert_eq!(ImageName::parse("Foo/bar").unwrap().domain(), "Foo");
    }

    #[test]
    fn tags_and_digests() {
        let both = format!("app:1@sha256:{HEX}");
        let n = ImageName::parse(&both).unwrap();
        assert_eq!(
            n.to_string(),
            format!("docker.io/library/app:1@sha256:{HEX}")
        );
        assert_eq!(n.familiar(), both);
        assert_eq!(n.tagged().unwrap().to_string(), "docker.io/library/app:1");
        assert_eq!(
            ImageName::parse(&format!("app@sha256:{HEX}"))
                .unwrap()
                .tagged(),
            None
        );
        assert_eq!(full("a:_x"), "docker.io/library/a:_x");
        assert_eq!(full("a:X.y-Z_1"), "docker.io/library/a:X.y-Z_1");
        assert_eq!(
            full(&format!("a:{}", "t".repeat(128))).len(),
            "docker.io/library/a:".len() + 128
        );
        bad(&format!("a:{}", "t".repeat(129)));
        bad("a:.x");
        bad("a:-x");
        bad("a:");
        bad("a:b:c");
        bad("a:b/c");
        bad("a@sha256:abc");
        bad(&format!("a@sha256:{}", HEX.to_uppercase()));
        bad(&format!("a@md5:{HEX}"));
        bad("a@");
        assert_eq!(ImageName::parse_normalized("a").unwrap().tag(), None);
        let t = ImageName::parse("a").unwrap().with_tag("v2").unwrap();
        assert_eq!(t.to_string(), "docker.io/library/a:v2");
        assert!(t.with_tag("-bad").is_err());
    }

    #[test]
    fn path_components() {
        for ok in [
            "a__b",
            "a_b",
            "a.b",
            "a-b",
            "a---b",
            "a0/b1/c2",
            "x/y.z_w-v",
        ] {
            assert!(ImageName::parse(ok).is_ok(), "{ok}");
        }
        for no in [
            "a___b", "a..b", "-a", "a-", "_a", "a.", "a/", "/a", "a//b", "a b", "a+b", "ä", "a/B",
            "UPPER",
        ] {
            bad(no);
        }
    }

    #[test]
    fn domains_and_limits() {
        bad("");
        bad(HEX);
        bad("-bad.example/x");
        bad("bad-.example/x");
        bad("exa_mple.com/x");
        bad("example.com:/x");
        bad("example.com:port/x");
        bad("[::1/x");
        bad("[zz::1]/x");
        bad("[::1]x/x");
        let long = format!("example.com/{}", "a".repeat(244));
        assert_eq!(long.len(), 256);
        bad(&long);
        assert!(ImageName::parse(&long[..255]).is_ok());
    }
}
