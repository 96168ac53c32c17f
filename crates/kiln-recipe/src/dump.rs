//! Renders nodes in the text format of BuildKit's parser tests, so kiln's syntax layer can be
//! compared with BuildKit's on the same files (see `tests/conformance.rs`).

use crate::syntax::{Document, Node};
use std::fmt::Write;

/// One line per instruction, each ending in `\n`.
pub fn dump(document: &Document) -> String {
    let mut out = String::new();
    for node in &document.nodes {
        dump_node(node, &mut out);
        out.push('\n');
    }
    out
}

fn dump_node(node: &Node, out: &mut String) {
    out.push('(');
    out.push_str(&node.keyword.to_lowercase());
    if !node.flags.is_empty() {
        out.push_str(" [");
        for (i, flag) in node.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            go_quote(&flag.text, out);
        }
        out.push(']');
    }
    if let Some(trigger) = &node.trigger {
        out.push(' ');
        dump_node(trigger, out);
    }
    for arg in &node.args {
        out.push(' ');
        go_quote(&arg.text, out);
    }
    out.push(')');
}

/// Quotes like Go's `strconv.Quote`: the format BuildKit's dumps use.
pub fn go_quote(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            ' ' => out.push(' '),
            c if c.is_ascii() => out.push(c),
            c if go_printable(c) => out.push(c),
            c if (c as u32) > 0xffff => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Go's `unicode.IsPrint` for non-ASCII: letters, marks, numbers, punctuation and symbols.
/// Without a Unicode category table, approximate by excluding what is known not to be
/// printable: whitespace, controls, format characters, private use and unassigned planes.
fn go_printable(c: char) -> bool {
    let code = c as u32;
    if c.is_whitespace() || c.is_control() {
        return false;
    }
    let format_or_special = matches!(
        code,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f | 0x202a..=0x202e
            | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff | 0xfff9..=0xfffb | 0x110bd | 0x1d173..=0x1d17a
            | 0xe0001 | 0xe0020..=0xe007f
    );
    let private_or_surrogate = matches!(code, 0xe000..=0xf8ff | 0xf0000..=0x10ffff);
    let noncharacter = (code & 0xfffe) == 0xfffe || (0xfdd0..=0xfdef).contains(&code);
    !(format_or_special || private_or_surrogate || noncharacter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(text: &str) -> String {
        let mut out = String::new();
        go_quote(text, &mut out);
        out
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(quoted("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quoted("\u{0}\u{7}\t\u{7f}"), r#""\x00\a\t\x7f""#);
        assert_eq!(quoted("♥ é 한국어"), "\"♥ é 한국어\"");
        assert_eq!(
            quoted("\u{a0}\u{200b}\u{feff}\u{2028}"),
            r#""\u00a0\u200b\ufeff\u2028""#
        );
        assert_eq!(quoted("'`"), "\"'`\"");
    }
}
