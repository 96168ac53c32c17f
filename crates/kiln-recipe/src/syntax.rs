//! The syntax layer: recipe text → a list of [`Node`]s, as BuildKit's parser splits it.
//!
//! This layer joins continuation lines, honours parser directives, skips comments, extracts
//! instruction flags, cuts arguments by each instruction's rules and collects heredoc bodies.
//! It does not know what a flag means or whether an instruction exists: that is
//! [`instruction`](super::instruction)'s job, so this layer can be checked against BuildKit's
//! own parser tests (see [`dump`](super::dump)).

use crate::diag::Diagnostic;
use crate::span::{LineIndex, Span};
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{char, digit0, space0};
use nom::combinator::{opt, rest};
use nom::{IResult, Parser};

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// The escape character: `\` unless `# escape=`` ` says otherwise.
    pub escape: char,
    /// Where `# escape=` is, when given.
    pub escape_span: Option<Span>,
    /// `# syntax=`: the frontend image BuildKit would use, and where it is.
    pub syntax: Option<(String, Span)>,
    /// `# check=`: the lint policy as written, and where it is.
    pub check: Option<(String, Span)>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            escape_span: None,
            syntax: None,
            check: None,
        }
    }
}

/// A builder flag such as `--from=build`; quotes and escapes are already removed from `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The flag as written, `--name=value`.
    pub text: String,
    /// Where it is.
    pub span: Span,
}

impl Flag {
    /// The name without the leading `--`: `from` for `--from=build`.
    pub fn name(&self) -> &str {
        let body = self.text.strip_prefix("--").unwrap_or(&self.text);
        body.split_once('=').map_or(body, |(name, _)| name)
    }

    /// The value after `=`, or `None` for a bare `--link`.
    pub fn value(&self) -> Option<&str> {
        self.text.split_once('=').map(|(_, value)| value)
    }
}

/// One argument of an instruction as written (not yet expanded), with the source span it came
/// from. For JSON form the text is the decoded string and the span is the whole array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The text (decoded for JSON form).
    pub text: String,
    /// Where it came from.
    pub span: Span,
}

/// A heredoc collected after an instruction: `<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (`EOF`).
    pub name: String,
    /// `<<-`: leading tabs were stripped from every body line and the terminator.
    pub strip_tabs: bool,
    /// False when the delimiter was quoted: the body is used verbatim, never expanded.
    pub expand: bool,
    /// File descriptor prefix (`3<<EOF`), if any.
    pub fd: Option<u32>,
    /// The body, every line ending in `\n`.
    pub content: String,
    /// The `<<EOF` marker in the instruction line.
    pub marker_span: Span,
    /// The body lines and the terminator.
    pub body_span: Span,
}

/// How an instruction's arguments were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A JSON array of strings (exec form).
    Json,
    /// Anything else.
    Text,
}

/// One instruction as BuildKit's parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction word as written (`from`, `From`, `FROM`).
    pub keyword: String,
    /// Where the keyword is.
    pub keyword_span: Span,
    /// The leading `--flags`.
    pub flags: Vec<Flag>,
    /// The arguments, split by the instruction's own rule.
    pub args: Vec<Word>,
    /// Whether the arguments were a JSON array.
    pub form: Form,
    /// Everything after the keyword and the flags, trimmed, as one piece.
    pub rest: Word,
    /// The heredocs after the line.
    pub heredocs: Vec<Heredoc>,
    /// For `ONBUILD`: the trigger instruction.
    pub trigger: Option<Box<Node>>,
    /// The logical line (continuations joined, trimmed), as BuildKit keeps it for history.
    pub original: String,
    /// ARG only: each word split into name and default, with spans of their own (a word may
    /// run over a continuation, so offsets within it cannot be computed from its start).
    pub arg_decls: Vec<(Word, Option<Word>)>,
    /// The syntax layer already reported an error for this node; its arguments are unusable
    /// and the meaning layer must not pile a second, misleading error on top.
    pub broken: bool,
    /// From the keyword to the end of the last continuation line (heredoc bodies excluded).
    pub span: Span,
    /// 1-based, inclusive; the range covers comment and blank lines inside continuations and
    /// heredoc bodies.
    pub start_line: usize,
    /// The last line, 1-based, inclusive.
    pub end_line: usize,
}

impl Node {
    /// The keyword in upper case, for matching.
    pub fn instruction(&self) -> String {
        self.keyword.to_ascii_uppercase()
    }
}

/// A parsed recipe: directives, nodes and whatever went wrong on the way.
#[derive(Debug, Clone)]
pub struct Document {
    /// The parser directives.
    pub directives: Directives,
    /// The instructions, in file order.
    pub nodes: Vec<Node>,
    /// What went wrong while cutting the text.
    pub diagnostics: Vec<Diagnostic>,
    /// Offsets to lines and columns.
    pub lines: LineIndex,
}

impl Document {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// One physical line: where it starts in the file and its text without the line ending.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    start: usize,
    text: &'a str,
}

fn physical_lines(text: &str, skip: usize) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = skip;
    let body = text.get(skip..).unwrap_or("");
    for piece in body.split_inclusive('\n') {
        let content = piece.strip_suffix('\n').unwrap_or(piece);
        let content = content.strip_suffix('\r').unwrap_or(content);
        lines.push(Line {
            start,
            text: content,
        });
        start += piece.len();
    }
    lines
}

/// A logical line built from pieces of physical lines, remembering where each piece came from
/// so that any byte of it maps back to the file.
#[derive(Debug, Default, Clone)]
struct Logical {
    text: String,
    /// (offset in `text`, offset in the file) for the start of each piece.
    pieces: Vec<(usize, usize)>,
}

impl Logical {
    fn push(&mut self, piece: &str, source_offset: usize) {
        self.pieces.push((self.text.len(), source_offset));
        self.text.push_str(piece);
    }

    fn source(&self, offset: usize) -> usize {
        let index = match self.pieces.binary_search_by_key(&offset, |p| p.0) {
            Ok(i) => i,
            Err(0) => 0,
            Err(i) => i - 1,
        };
        match self.pieces.get(index) {
            Some((logical, source)) => source + offset.saturating_sub(*logical),
            None => offset,
        }
    }

    /// The file span of `text[start..end]`.
    fn span(&self, start: usize, end: usize) -> Span {
        if end <= start {
            return Span::point(self.source(start));
        }
        // Map the last byte, not the end, so a span ending at a piece boundary stays on its line.
        Span::new(self.source(start), self.source(end - 1) + 1)
    }
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\u{b}' | '\u{c}')
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// If `line` continues onto the next one, the byte index of its escape character.
fn continuation(line: &str, escape: char) -> Option<usize> {
    let trimmed = line.trim_end_matches([' ', '\t']);
    let before = trimmed.strip_suffix(escape)?;
    if before.trim_matches([' ', '\t']).is_empty() || !before.ends_with(escape) {
        Some(before.len())
    } else {
        None
    }
}

/// `# name = value`, where name is letters and digits.
fn directive_line(input: &str) -> IResult<&str, (&str, &str)> {
    let (input, (_, _, name, _, _, _, value)) = (
        char('#'),
        space0,
        take_while1(|c: char| c.is_ascii_alphanumeric()),
        space0,
        char('='),
        space0,
        rest,
    )
        .parse(input)?;
    Ok((input, (name, value)))
}

fn parse_directives(lines: &[Line<'_>], diagnostics: &mut Vec<Diagnostic>) -> (Directives, usize) {
    let mut directives = Directives::default();
    let mut consumed = 0;
    for line in lines {
        // BuildKit trims the line first, so an indented directive still counts.
        let Ok((_, (name, value))) = directive_line(line.text.trim_start()) else {
            break;
        };
        let value = value.trim();
        if value.is_empty() {
            // `# escape=` with no value is not a directive but a comment, which ends the zone.
            break;
        }
        let name_lower = name.to_ascii_lowercase();
        if !matches!(name_lower.as_str(), "syntax" | "escape" | "check") {
            break;
        }
        let value_start = line.start + (value.as_ptr() as usize - line.text.as_ptr() as usize);
        let span = Span::new(value_start, value_start + value.len());
        let line_span = Span::new(line.start, line.start + line.text.len());
        let duplicate = match name_lower.as_str() {
            "syntax" => directives
                .syntax
                .replace((value.to_string(), span))
                .is_some(),
            "check" => directives
                .check
                .replace((value.to_string(), span))
                .is_some(),
            _ => {
                let duplicate = directives.escape_span.replace(span).is_some();
                match value {
                    "\\" => directives.escape = '\\',
                    "`" => directives.escape = '`',
                    other => diagnostics.push(
                        Diagnostic::error(span, format!("invalid escape character {other:?}"))
                            .with_label("must be ` or \\"),
                    ),
                }
                duplicate
            }
        };
        if duplicate {
            diagnostics.push(
                Diagnostic::error(
                    line_span,
                    format!("only one {name_lower} parser directive can be used"),
                )
                .with_label("repeated here"),
            );
        }
        consumed += 1;
    }
    (directives, consumed)
}

/// Splits a document into nodes. Never fails: problems are diagnostics in the result.
pub fn parse(text: &str) -> Document {
    let skip = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let lines = physical_lines(text, skip);
    let mut diagnostics = Vec::new();
    let (directives, first) = parse_directives(&lines, &mut diagnostics);
    let escape = directives.escape;
    let line_index = LineIndex::new(text);

    let mut nodes = Vec::new();
    let mut i = first;
    while let Some(line) = lines.get(i) {
        let start_number = i + 1;
        i += 1;
        let leading = line.text.len() - line.text.trim_start().len();
        let body = &line.text[leading..];
        if body.trim().is_empty() || body.starts_with('#') {
            continue;
        }
        let mut logical = Logical::default();
        let mut last_number = start_number;
        let mut current = Line {
            start: line.start + leading,
            text: body,
        };
        loop {
            match continuation(current.text, escape) {
                None => {
                    logical.push(current.text, current.start);
                    break;
                }
                Some(cut) => {
                    logical.push(&current.text[..cut], current.start);
                    // Find the next line that carries text; blank and comment lines in
                    // between are skipped but still belong to the instruction's range.
                    let mut next = None;
                    let mut empty_lines = Vec::new();
                    while let Some(candidate) = lines.get(i) {
                        i += 1;
                        if is_comment(candidate.text) {
                            last_number = i;
                            continue;
                        }
                        if candidate.text.trim().is_empty() {
                            empty_lines.push(candidate.start);
                            continue;
                        }
                        // Empty lines only matter when the instruction goes on after them.
                        for start in empty_lines.drain(..) {
                            diagnostics.push(
                                Diagnostic::warning("NoEmptyContinuation", Span::point(start), "empty line inside a continuation")
                                    .with_help("remove the empty line; a future Dockerfile syntax may end the instruction there"),
                            );
                        }
                        last_number = i;
                        next = Some(*candidate);
                        break;
                    }
                    match next {
                        Some(next) => current = next,
                        None => break,
                    }
                }
            }
        }
        let mut markers = Vec::new();
        let mut node = split_instruction(&logical, escape, &mut markers, &mut diagnostics);
        node.start_line = start_number;
        // Heredoc bodies follow the instruction line.
        let owner = match node.trigger.as_deref_mut() {
            Some(trigger) => trigger,
            None => &mut node,
        };
        let has_heredocs = !markers.is_empty();
        for marker in markers {
            match read_heredoc(&lines, &mut i, marker) {
                Ok(heredoc) => owner.heredocs.push(heredoc),
                Err(diagnostic) => diagnostics.push(diagnostic),
            }
        }
        if has_heredocs {
            last_number = last_number.max(i);
        }
        node.end_line = last_number;
        if let Some(trigger) = node.trigger.as_deref_mut() {
            trigger.start_line = node.start_line;
            trigger.end_line = node.end_line;
        }
        nodes.push(node);
    }

    if nodes.is_empty() {
        diagnostics.push(
            Diagnostic::error(Span::point(text.len()), "the recipe has no instructions")
                .with_help("a recipe starts with FROM, e.g. `FROM scratch`"),
        );
    }
    Document {
        directives,
        nodes,
        diagnostics,
        lines: line_index,
    }
}

/// Where a heredoc marker was found, before its body is read.
struct Marker {
    name: String,
    strip_tabs: bool,
    expand: bool,
    fd: Option<u32>,
    span: Span,
}

/// `[fd]<<[-]NAME` where NAME may be quoted.
fn heredoc_word(word: &str) -> IResult<&str, (&str, Option<char>, &str)> {
    (
        digit0,
        tag("<<"),
        opt(char('-')),
        take_while(|c: char| c != '<'),
    )
        .parse(word)
        .map(|(rest, (fd, _, dash, name))| (rest, (fd, dash, name)))
}

fn heredoc_markers(logical: &Logical, base: usize, end: usize, escape: char) -> Vec<Marker> {
    let text = &logical.text[base..end];
    let mut markers = Vec::new();
    for (start, end) in split_words(text, escape) {
        let word = &text[start..end];
        let Ok(("", (fd, dash, raw_name))) = heredoc_word(word) else {
            continue;
        };
        let quoted = raw_name.contains(['"', '\'']);
        let name = unquote_simple(raw_name, escape);
        if name.is_empty() {
            continue;
        }
        markers.push(Marker {
            name,
            strip_tabs: dash.is_some(),
            expand: !quoted,
            fd: fd.parse().ok(),
            span: logical.span(base + start, base + end),
        });
    }
    markers
}

/// Removes quotes and escapes from a heredoc delimiter.
fn unquote_simple(raw: &str, escape: char) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('\'') => out.push(c),
            Some(_) if c == escape => out.extend(chars.next()),
            Some(_) => out.push(c),
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == escape => out.extend(chars.next()),
            None => out.push(c),
        }
    }
    out
}

fn read_heredoc(lines: &[Line<'_>], i: &mut usize, marker: Marker) -> Result<Heredoc, Diagnostic> {
    let mut content = String::new();
    let body_start = lines.get(*i).map(|l| l.start);
    while let Some(line) = lines.get(*i) {
        *i += 1;
        let text = if marker.strip_tabs {
            line.text.trim_start_matches('\t')
        } else {
            line.text
        };
        if text == marker.name {
            return Ok(Heredoc {
                name: marker.name,
                strip_tabs: marker.strip_tabs,
                expand: marker.expand,
                fd: marker.fd,
                content,
                marker_span: marker.span,
                body_span: Span::new(
                    body_start.unwrap_or(line.start),
                    line.start + line.text.len(),
                ),
            });
        }
        content.push_str(text);
        content.push('\n');
    }
    Err(Diagnostic::error(
        marker.span,
        format!(
            "unterminated heredoc: no line `{}` before the end of the file",
            marker.name
        ),
    )
    .with_label("heredoc starts here")
    .with_help(format!(
        "end the heredoc with a line that holds only `{}`",
        marker.name
    )))
}

/// Splits the logical line into keyword, flags and arguments.
fn split_instruction(
    logical: &Logical,
    escape: char,
    markers: &mut Vec<Marker>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Node {
    let full = logical.text.as_str();
    let start = full.len() - full.trim_start().len();
    let end = full.trim_end().len().max(start);
    split_from(logical, start, end, escape, markers, diagnostics)
}

fn split_from(
    logical: &Logical,
    start: usize,
    end: usize,
    escape: char,
    markers: &mut Vec<Marker>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Node {
    let errors_before = diagnostics.iter().filter(|d| d.is_error()).count();
    let line = &logical.text[start..end];
    let keyword_len = line.find(is_blank).unwrap_or(line.len());
    let keyword = &line[..keyword_len];
    let after_keyword = start + keyword_len;
    let (flags, rest_start) = extract_flags(logical, after_keyword, end, escape);
    let rest_text = &logical.text[rest_start..end];
    let rest = Word {
        text: rest_text.to_string(),
        span: logical.span(rest_start, end),
    };
    let mut node = Node {
        keyword: keyword.to_string(),
        keyword_span: logical.span(start, after_keyword),
        flags,
        args: Vec::new(),
        form: Form::Text,
        rest,
        heredocs: Vec::new(),
        trigger: None,
        original: line.to_string(),
        arg_decls: Vec::new(),
        broken: false,
        span: logical.span(start, end),
        start_line: 0,
        end_line: 0,
    };
    let sub = |a: usize, b: usize| Word {
        text: logical.text[a..b].to_string(),
        span: logical.span(a, b),
    };
    match node.instruction().as_str() {
        "FROM" | "EXPOSE" => {
            node.args = split_blanks(rest_text, rest_start)
                .map(|(a, b)| sub(a, b))
                .collect()
        }
        "ADD" | "COPY" | "VOLUME" => match json_array(rest_text, &node.rest, diagnostics) {
            Some(items) => {
                node.form = Form::Json;
                node.args = items;
            }
            None => {
                node.args = split_blanks(rest_text, rest_start)
                    .map(|(a, b)| sub(a, b))
                    .collect()
            }
        },
        "RUN" | "CMD" | "ENTRYPOINT" | "SHELL" => {
            command_args(&mut node, rest_start, end, logical, diagnostics);
        }
        "HEALTHCHECK" => {
            if !rest_text.is_empty() {
                let kind_len = rest_text
                    .find(char::is_whitespace)
                    .unwrap_or(rest_text.len());
                node.args.push(sub(rest_start, rest_start + kind_len));
                let tail = &rest_text[kind_len..];
                let tail_start = rest_start + kind_len + (tail.len() - tail.trim_start().len());
                let kind_node_rest = Word {
                    text: logical.text[tail_start..end].to_string(),
                    span: logical.span(tail_start, end),
                };
                let mut command = node.clone();
                command.rest = kind_node_rest;
                command.args.clear();
                command_args(&mut command, tail_start, end, logical, diagnostics);
                node.form = command.form;
                node.args.extend(command.args);
            }
        }
        "MAINTAINER" | "STOPSIGNAL" | "USER" | "WORKDIR" => {
            if !rest_text.is_empty() {
                node.args.push(node.rest.clone());
            }
        }
        "ARG" => {
            for (a, b) in split_words(rest_text, escape) {
                let (a, b) = (rest_start + a, rest_start + b);
                node.args.push(sub(a, b));
                let decl = match logical.text[a..b].find('=') {
                    Some(eq) => (sub(a, a + eq), Some(sub(a + eq + 1, b))),
                    None => (sub(a, b), None),
                };
                node.arg_decls.push(decl);
            }
        }
        "ENV" | "LABEL" => {
            node.args = key_values(logical, rest_start, end, escape, &node.keyword, diagnostics);
        }
        "ONBUILD" => {
            if !rest_text.is_empty() {
                let trigger = split_from(logical, rest_start, end, escape, markers, diagnostics);
                node.trigger = Some(Box::new(trigger));
            }
        }
        _ => node.args.push(Word {
            text: String::new(),
            span: node.rest.span,
        }),
    }
    if node.form == Form::Text && matches!(node.instruction().as_str(), "RUN" | "COPY" | "ADD") {
        markers.extend(heredoc_markers(logical, rest_start, end, escape));
    }
    node.broken = diagnostics.iter().filter(|d| d.is_error()).count() > errors_before;
    node
}

/// JSON form or whole-text form for RUN, CMD, ENTRYPOINT, SHELL and HEALTHCHECK's command.
fn command_args(
    node: &mut Node,
    rest_start: usize,
    end: usize,
    logical: &Logical,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let text = &logical.text[rest_start..end];
    match json_array(text, &node.rest, diagnostics) {
        Some(items) => {
            node.form = Form::Json;
            node.args = items;
        }
        None if text.is_empty() => {}
        None => node.args.push(Word {
            text: text.to_string(),
            span: logical.span(rest_start, end),
        }),
    }
}

/// A JSON array of strings, or `None` when the text is not a JSON array (shell form).
/// A valid JSON array holding something other than strings is an error, as in BuildKit.
fn json_array(text: &str, whole: &Word, diagnostics: &mut Vec<Diagnostic>) -> Option<Vec<Word>> {
    if !text.starts_with('[') {
        return None;
    }
    let serde_json::Value::Array(items) = serde_json::from_str::<serde_json::Value>(text).ok()?
    else {
        return None;
    };
    let mut args = Vec::with_capacity(items.len());
    for item in items {
        match item {
            serde_json::Value::String(s) => args.push(Word {
                text: s,
                span: whole.span,
            }),
            other => {
                diagnostics.push(
                    Diagnostic::error(
                        whole.span,
                        format!("exec form must be a JSON array of strings, found {other}"),
                    )
                    .with_label("not a list of strings"),
                );
                return Some(Vec::new());
            }
        }
    }
    Some(args)
}

/// Ranges of `text[..]` split on runs of blanks, offset by `base`.
fn split_blanks(text: &str, base: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    text.split(is_blank)
        .filter(|piece| !piece.is_empty())
        .map(move |piece| {
            let start = piece.as_ptr() as usize - text.as_ptr() as usize;
            (base + start, base + start + piece.len())
        })
}

/// BuildKit's word splitting for ARG, ENV and LABEL: whitespace outside quotes separates
/// words; quotes and escapes stay in the word. Returns byte ranges of `text`.
pub(crate) fn split_words(text: &str, escape: char) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut word_start: Option<usize> = None;
    let mut quote: Option<char> = None;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if quote.is_none() && c.is_whitespace() {
            if let Some(s) = word_start.take() {
                words.push((s, i));
            }
            continue;
        }
        let start = *word_start.get_or_insert(i);
        if c == escape && quote != Some('\'') {
            if chars.next().is_none() {
                // An escape at the very end is dropped.
                if i > start {
                    words.push((start, i));
                }
                word_start = None;
            }
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => {}
        }
    }
    if let Some(s) = word_start {
        words.push((s, text.len()));
    }
    words
}

/// ENV and LABEL arguments as (key, value, separator) triples.
fn key_values(
    logical: &Logical,
    start: usize,
    end: usize,
    escape: char,
    keyword: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Word> {
    let text = &logical.text[start..end];
    let words = split_words(text, escape);
    let arg = |a: usize, b: usize| Word {
        text: logical.text[a..b].to_string(),
        span: logical.span(a, b),
    };
    let Some(&(first_start, first_end)) = words.first() else {
        return Vec::new();
    };
    if !text[first_start..first_end].contains('=') {
        // Legacy `ENV key value`: the value is everything after the first run of blanks.
        let key_len = text.find(is_blank).unwrap_or(text.len());
        let value_start = text[key_len..]
            .find(|c| !is_blank(c))
            .map(|p| key_len + p)
            .unwrap_or(text.len());
        if value_start >= text.len() {
            diagnostics.push(
                Diagnostic::error(
                    logical.span(start, end),
                    format!(
                        "{} needs a value: `{0} {} <value>` or `{0} {1}=<value>`",
                        keyword.to_ascii_uppercase(),
                        text
                    ),
                )
                .with_label("no value given"),
            );
            return Vec::new();
        }
        return vec![
            arg(start, start + key_len),
            arg(start + value_start, end),
            Word {
                text: String::new(),
                span: Span::point(logical.source(start + key_len)),
            },
        ];
    }
    let mut args = Vec::new();
    for (a, b) in words {
        let word = &text[a..b];
        match word.find('=') {
            Some(eq) => {
                args.push(arg(start + a, start + a + eq));
                args.push(arg(start + a + eq + 1, start + b));
                args.push(Word {
                    text: "=".to_string(),
                    span: logical.span(start + a + eq, start + a + eq + 1),
                });
            }
            None => diagnostics.push(
                Diagnostic::error(
                    logical.span(start + a, start + b),
                    format!("can't find = in {word:?}"),
                )
                .with_label("expected name=value")
                .with_help(format!(
                    "{} takes either `name value` or a list of `name=value` pairs",
                    keyword.to_ascii_uppercase()
                )),
            ),
        }
    }
    args
}

/// Flags are the leading words that start with `--`; a bare `--` ends them. Returns the flags
/// and the logical offset where the arguments start.
fn extract_flags(logical: &Logical, start: usize, end: usize, escape: char) -> (Vec<Flag>, usize) {
    let text = &logical.text;
    let mut flags = Vec::new();
    let mut position = start;
    loop {
        let word_start = text[position..end]
            .find(|c: char| !c.is_whitespace())
            .map_or(end, |p| position + p);
        if !text[word_start..end].starts_with("--") {
            return (flags, word_start);
        }
        let mut value = String::new();
        let mut quote: Option<char> = None;
        let mut chars = text[word_start..end].char_indices();
        let mut word_end = end;
        while let Some((i, c)) = chars.next() {
            match quote {
                Some(q) if c == q => quote = None,
                Some('\'') => value.push(c),
                Some(_) if c == escape => value.extend(chars.next().map(|(_, c)| c)),
                Some(_) => value.push(c),
                None if c.is_whitespace() => {
                    word_end = word_start + i;
                    break;
                }
                None if c == '\'' || c == '"' => quote = Some(c),
                None if c == escape => value.extend(chars.next().map(|(_, c)| c)),
                None => value.push(c),
            }
        }
        position = word_end;
        if value == "--" {
            let next = text[position..end]
                .find(|c: char| !c.is_whitespace())
                .map_or(end, |p| position + p);
            return (flags, next);
        }
        flags.push(Flag {
            text: value,
            span: logical.span(word_start, word_end),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let doc = parse(text);
        assert!(!doc.has_errors(), "{:?}", doc.diagnostics);
        doc.nodes.into_iter().next().unwrap_or_else(|| Node {
            keyword: String::new(),
            keyword_span: Span::default(),
            flags: vec![],
            args: vec![],
            form: Form::Text,
            rest: Word {
                text: String::new(),
                span: Span::default(),
            },
            heredocs: vec![],
            trigger: None,
            original: String::new(),
            arg_decls: vec![],
            broken: false,
            span: Span::default(),
            start_line: 0,
            end_line: 0,
        })
    }

    fn texts(node: &Node) -> Vec<&str> {
        node.args.iter().map(|a| a.text.as_str()).collect()
    }

    #[test]
    fn continuation_joins_without_separator_and_keeps_indentation() {
        let node = one("RUN echo hello\\\n  world\n");
        assert_eq!(texts(&node), ["echo hello  world"]);
        assert_eq!((node.start_line, node.end_line), (1, 2));
    }

    #[test]
    fn escaped_escape_does_not_continue() {
        let doc = parse("FROM a\nENV C x\\\\\nENV D y\n");
        assert_eq!(doc.nodes.len(), 3);
    }

    #[test]
    fn comments_and_blank_lines_inside_continuations_are_skipped() {
        let node = one("RUN a \\\n# note\n\n  b\n");
        assert_eq!(texts(&node), ["a   b"]);
        assert_eq!(node.end_line, 4);
    }

    #[test]
    fn crlf_and_bom_are_accepted() {
        let doc = parse("\u{feff}FROM a\r\nRUN b \\\r\n c\r\n");
        assert_eq!(doc.nodes.len(), 2);
        assert_eq!(texts(&doc.nodes[1]), ["b  c"]);
    }

    #[test]
    fn backtick_escape_directive() {
        let doc = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\n");
        assert_eq!(doc.directives.escape, '`');
        assert_eq!(texts(&doc.nodes[1]), ["dir c:\\   /w"]);
    }

    #[test]
    fn directive_after_comment_is_a_comment() {
        let doc = parse("# hello\n# escape=`\nFROM a\n");
        assert_eq!(doc.directives.escape, '\\');
    }

    #[test]
    fn indented_directive_counts_and_empty_value_is_a_comment() {
        assert_eq!(parse("  # escape=`\nFROM a\n").directives.escape, '`');
        let doc = parse("# escape=\n# escape=`\nFROM a\n");
        assert!(!doc.has_errors());
        assert_eq!(doc.directives.escape, '\\');
    }

    #[test]
    fn repeated_directive_is_an_error() {
        let doc = parse("# escape=`\n# escape=\\\nFROM a\n");
        assert!(doc.has_errors());
    }

    #[test]
    fn spans_point_into_continuation_lines() {
        let text = "COPY a \\\n  bb /c\n";
        let node = one(text);
        let bb = &node.args[1];
        assert_eq!(&text[bb.span.range()], "bb");
    }

    #[test]
    fn flags_stop_at_first_non_flag_and_at_double_dash() {
        let node = one("COPY --from=\"a b\" --link -- --x /d\n");
        let flags: Vec<_> = node.flags.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(flags, ["--from=a b", "--link"]);
        assert_eq!(texts(&node), ["--x", "/d"]);
        assert_eq!(node.flags[0].name(), "from");
        assert_eq!(node.flags[0].value(), Some("a b"));
        assert_eq!(node.flags[1].value(), None);
    }

    #[test]
    fn invalid_json_falls_back_to_shell_form() {
        let node = one("CMD ['echo','x']\n");
        assert_eq!(node.form, Form::Text);
        assert_eq!(texts(&node), ["['echo','x']"]);
    }

    #[test]
    fn nested_json_is_an_error() {
        assert!(parse("CMD [\"a\", [\"b\"]]\n").has_errors());
    }

    #[test]
    fn heredocs_are_collected_in_order() {
        let text = "RUN <<A cat - <<-'B'\nx $y\nA\n\tz\n\tB\nRUN next\n";
        let doc = parse(text);
        assert!(!doc.has_errors(), "{:?}", doc.diagnostics);
        let run = &doc.nodes[0];
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].name, "A");
        assert_eq!(run.heredocs[0].content, "x $y\n");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.heredocs[1].name, "B");
        assert_eq!(run.heredocs[1].content, "z\n");
        assert!(!run.heredocs[1].expand);
        assert!(run.heredocs[1].strip_tabs);
        assert_eq!((run.start_line, run.end_line), (1, 5));
        assert_eq!(texts(&doc.nodes[1]), ["next"]);
    }

    #[test]
    fn heredoc_with_fd_and_in_onbuild() {
        let doc = parse("ONBUILD RUN 3<<EOF cat\nhi\nEOF\n");
        assert!(!doc.has_errors(), "{:?}", doc.diagnostics);
        let trigger = doc.nodes[0].trigger.as_deref();
        assert_eq!(trigger.map(|t| t.heredocs.len()), Some(1));
        assert_eq!(trigger.and_then(|t| t.heredocs[0].fd), Some(3));
    }

    #[test]
    fn quoted_heredoc_marker_in_a_string_is_not_a_heredoc() {
        let node = one("RUN echo \"<<EOF\"\n");
        assert!(node.heredocs.is_empty());
    }

    #[test]
    fn unterminated_heredoc_is_an_error() {
        let doc = parse("COPY <<EOF /x\nhello\n");
        assert!(doc.has_errors());
    }

    #[test]
    fn env_legacy_and_pairs() {
        let node = one("ENV a  b c\n");
        assert_eq!(texts(&node), ["a", "b c", ""]);
        let node = one("ENV a=\"1 2\" b=\n");
        assert_eq!(texts(&node), ["a", "\"1 2\"", "=", "b", "", "="]);
        assert!(parse("ENV PATH\n").has_errors());
        assert!(parse("ENV a=b c\n").has_errors());
    }

    #[test]
    fn no_instructions_is_an_error() {
        assert!(parse("").has_errors());
        assert!(parse("# just a comment\n\n").has_errors());
    }
}
