//! Authentication pieces that need no network: `WWW-Authenticate` challenges, credentials,
//! token answers, the token cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// One challenge of a `WWW-Authenticate` header: `Bearer realm="…",service="…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lowercased: `basic`, `bearer`, …
    pub scheme: String,
    /// Parameter names lowercased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `WWW-Authenticate` value (RFC 7235): challenges separated by commas, each a scheme
/// then either a token68 or `name=value` parameters, values tokens or quoted strings (which
/// may hold commas and `\`-escapes). Garbage is skipped rather than failing the whole header,
/// since one good challenge is enough.
pub(crate) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip_separators();
        if p.done() {
            break;
        }
        let token = p.token();
        if token.is_empty() {
            // Not a token character: skip it so the loop always advances.
            p.i = p.i.saturating_add(1);
            continue;
        }
        p.skip_spaces();
        if p.peek() == Some(b'=') && !out.is_empty() && !p.is_token68_end() {
            p.i = p.i.saturating_add(1);
            p.skip_spaces();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token()
            };
            if let Some(last) = out.last_mut() {
                last.params.push((token.to_ascii_lowercase(), value));
            }
        } else if p.peek() == Some(b'=') {
            // A token68 (`Basic dXNlcg==`) or a stray `x=` before any scheme: skip it.
            while p.peek() == Some(b'=') {
                p.i = p.i.saturating_add(1);
            }
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i = self.i.saturating_add(1);
        }
    }
    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i = self.i.saturating_add(1);
        }
    }
    /// At `=`: whether only `=`s and then a separator or the end follow, as in a token68.
    fn is_token68_end(&self) -> bool {
        let mut j = self.i;
        while self.s.get(j) == Some(&b'=') {
            j = j.saturating_add(1);
        }
        j.saturating_sub(self.i) > 1 || matches!(self.s.get(j), None | Some(b','))
    }
    fn token(&mut self) -> String {
        let start = self.i;
        while let Some(c) = self.peek() {
            let tchar = c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c);
            if !tchar {
                break;
            }
            self.i = self.i.saturating_add(1);
        }
        String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default()).into_owned()
    }
    fn quoted(&mut self) -> String {
        let mut out = Vec::new();
        self.i = self.i.saturating_add(1); // the opening quote
        while let Some(c) = self.peek() {
            self.i = self.i.saturating_add(1);
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.i = self.i.saturating_add(1);
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A user name and a password (or identity token). `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub username: String,
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The `Authorization` header value for Basic auth.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// The value of config.json's `auth` field.
    pub fn encoded(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.secret))
    }

    /// Reads config.json's `auth` field: base64 of `user:password`.
    pub fn decode(auth: &str) -> Option<Credentials> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (user, secret) = text.split_once(':')?;
        Some(Credentials {
            username: user.to_string(),
            secret: secret.trim_end_matches('\0').to_string(),
        })
    }
}

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    pub expires: Instant,
}

/// The token service's answer: `token` (Docker) or `access_token` (OAuth2), `expires_in`
/// seconds (60 when absent, as the spec says).
pub(crate) fn parse_token_response(bytes: &[u8], now: Instant) -> Option<Token> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        token: String,
        #[serde(default)]
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let answer: Answer = serde_json::from_slice(bytes).ok()?;
    let value = if answer.token.is_empty() {
        answer.access_token
    } else {
        answer.token
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let lifetime = answer
        .expires_in
        .filter(|s| *s > 0)
        .unwrap_or(60)
        .min(86_400);
    // Stop a little early so a token does not expire between our check and the server's.
    let margin = (lifetime / 10).clamp(1, 30);
    Some(Token {
        value,
        expires: now
            .checked_add(Duration::from_secs(lifetime.saturating_sub(margin)))
            .unwrap_or(now),
    })
}

/// Tokens by (registry host, scopes).
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<(String, String), Token>>,
}

impl TokenCache {
    pub fn get(&self, host: &str, scopes: &str) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        let token = tokens.get(&(host.to_string(), scopes.to_string()))?;
        (token.expires > Instant::now()).then(|| token.value.clone())
    }

    pub fn put(&self, host: &str, scopes: &str, token: Token) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|_, t| t.expires > Instant::now());
            tokens.insert((host.to_string(), scopes.to_string()), token);
        }
    }

    pub fn clear_host(&self, host: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|(h, _), _| h != host);
        }
    }

    pub fn forget(&self, host: &str, scopes: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(&(host.to_string(), scopes.to_string()));
        }
    }
}

/// `repository:NAME:ACTIONS`.
pub(crate) fn repository_scope(path: &str, push: bool) -> String {
    if push {
        format!("repository:{path}:pull,push")
    } else {
        format!("repository:{path}:pull")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn docker_hub_bearer() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(
            c[0].params,
            p(&[
                ("realm", "https://auth.docker.io/token"),
                ("service", "registry.docker.io"),
                ("scope", "repository:samalba/my-app:pull,push"),
            ])
        );
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("error"), None);
    }

    #[test]
    fn basic_and_several_challenges() {
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            vec![Challenge {
                scheme: "basic".into(),
                params: p(&[("realm", "Registry Realm")])
            }]
        );
        let c = parse_challenges(
            r#"Basic realm="a, b", Bearer realm="https://t/x?y=1",service=reg , Negotiate"#,
        );
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].param("realm"), Some("a, b"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://t/x?y=1"));
        assert_eq!(c[1].param("service"), Some("reg"));
        assert_eq!(c[2].scheme, "negotiate");
        assert!(c[2].params.is_empty());
    }

    #[test]
    fn odd_challenges() {
        // Escapes in quoted strings, upper case names, spaces around '='.
        let c = parse_challenges(r#"BEARER Realm = "a\"b\\c",error="insufficient_scope""#);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some(r#"a"b\c"#));
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        // A token68 is skipped; the next challenge still parses.
        let c = parse_challenges(r#"Basic dXNlcjpwYXNz==, Bearer realm="r""#);
        assert_eq!(c.len(), 2);
        assert!(c[0].params.is_empty());
        assert_eq!(c[1].param("realm"), Some("r"));
        // Garbage and unterminated quotes do not loop or panic.
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges(" , ,").is_empty());
        let c = parse_challenges(r#"Bearer realm="unterminated"#);
        assert_eq!(c[0].param("realm"), Some("unterminated"));
        let c = parse_challenges("=x \u{1} ;; Bearer ( realm=r");
        assert!(c.iter().any(|c| c.scheme == "bearer"));
    }

    #[test]
    fn basic_auth_round_trip() {
        let c = Credentials {
            username: "user".into(),
            secret: "p:ss".into(),
        };
        assert_eq!(c.basic(), "Basic dXNlcjpwOnNz");
        assert_eq!(Credentials::decode(&c.encoded()), Some(c.clone()));
        assert_eq!(Credentials::decode("!!"), None);
        assert_eq!(Credentials::decode("bm9jb2xvbg=="), None); // "nocolon"
        assert!(!format!("{c:?}").contains("p:ss"));
    }

    #[test]
    fn token_answers() {
        let now = Instant::now();
        let t = parse_token_response(br#"{"token":"abc","expires_in":300}"#, now).unwrap();
        assert_eq!(t.value, "abc");
        assert_eq!(t.expires, now + Duration::from_secs(270));
        let t = parse_token_response(br#"{"access_token":"xyz"}"#, now).unwrap();
        assert_eq!(t.value, "xyz");
        assert_eq!(t.expires, now + Duration::from_secs(54));
        let t = parse_token_response(br#"{"token":"a","access_token":"b","expires_in":1}"#, now)
            .unwrap();
        assert_eq!(t.value, "a");
        assert!(t.expires <= now + Duration::from_secs(1));
        assert!(parse_token_response(br#"{"token":""}"#, now).is_none());
        assert!(parse_token_response(br#"{"token":"a b"}"#, now).is_none());
        assert!(parse_token_response(b"<html>", now).is_none());
    }

    #[test]
    fn token_cache_expires() {
        let cache = TokenCache::default();
        cache.put(
            "h",
            "s",
            Token {
                value: "t".into(),
                expires: Instant::now() + Duration::from_secs(60),
            },
        );
        assert_eq!(cache.get("h", "s").as_deref(), Some("t"));
        assert_eq!(cache.get("h", "other"), None);
        cache.put(
            "h",
            "old",
            Token {
                value: "t".into(),
                expires: Instant::now(),
            },
        );
        assert_eq!(cache.get("h", "old"), None);
        cache.forget("h", "s");
        assert_eq!(cache.get("h", "s"), None);
    }

    #[test]
    fn scopes() {
        assert_eq!(repository_scope("a/b", false), "repository:a/b:pull");
        assert_eq!(repository_scope("a/b", true), "repository:a/b:pull,push");
    }
}
