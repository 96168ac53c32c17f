//! Keeping credentials and secret values out of attestations.

use serde_json::Value;

/// `scheme://user:password@host/…` → `scheme://host/…`, and for an address without a scheme
/// (scp-style git `token@host:path`) everything up to the last `@` before the first `/`.
pub fn strip_userinfo(url: &str) -> String {
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => format!("{prefix}{}{tail}", &authority[at + 1..]),
        None => url.to_string(),
    }
}

/// What replaces a secret value found in an attestation string.
pub(crate) const REDACTED: &str = "***";

/// Replaces every occurrence of every secret value in every string (and object key) of
/// `value`.
pub(crate) fn redact(value: &mut Value, secrets: &[(String, String)]) {
    match value {
        Value::String(text) => redact_text(text, secrets),
        Value::Array(items) => items.iter_mut().for_each(|item| redact(item, secrets)),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (mut key, mut item) in entries {
                redact_text(&mut key, secrets);
                redact(&mut item, secrets);
                map.insert(key, item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn redact_text(text: &mut String, secrets: &[(String, String)]) {
    for (_, secret) in secrets {
        if !secret.is_empty() && text.contains(secret.as_str()) {
            *text = text.replace(secret.as_str(), REDACTED);
        }
    }
}

/// The id of a secret whose value (raw or as JSON escapes it) is in `bytes`.
pub(crate) fn leaked_secret<'a>(bytes: &[u8], secrets: &'a [(String, String)]) -> Option<&'a str> {
    secrets.iter().find_map(|(id, secret)| {
        if secret.is_empty() {
            return None;
        }
        let escaped = serde_json::to_string(secret).unwrap_or_default();
        let escaped = escaped
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(&escaped);
        (contains(bytes, secret.as_bytes()) || contains(bytes, escaped.as_bytes()))
            .then_some(id.as_str())
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_stripped() {
        assert_eq!(
            strip_userinfo("https://user:pa55@example.com/x.tar.gz?a=b#c"),
            "https://example.com/x.tar.gz?a=b#c"
        );
        assert_eq!(
            strip_userinfo("https://token@github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(
            strip_userinfo("https://a@b:c@host:8443"),
            "https://host:8443"
        );
        assert_eq!(
            strip_userinfo("https://example.com/path@v1"),
            "https://example.com/path@v1"
        );
        assert_eq!(
            strip_userinfo("ghp_token@github.com:o/r.git"),
            "github.com:o/r.git"
        );
        assert_eq!(
            strip_userinfo("user:pw@registry.example.com/app"),
            "registry.example.com/app"
        );
        assert_eq!(strip_userinfo("plain/name"), "plain/name");
    }

    #[test]
    fn redaction_reaches_keys_and_nested_strings() {
        let secrets = vec![("tok".to_string(), "s3cr\"t".to_string())];
        let mut value = serde_json::json!({"a": ["x s3cr\"t y"], "s3cr\"t": {"b": "s3cr\"t"}});
        redact(&mut value, &secrets);
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_eq!(leaked_secret(&bytes, &secrets), None);
        assert_eq!(
            value,
            serde_json::json!({"a": ["x *** y"], "***": {"b": "***"}})
        );
        assert_eq!(leaked_secret(br#"{"k":"s3cr\"t"}"#, &secrets), Some("tok"));
    }
}
