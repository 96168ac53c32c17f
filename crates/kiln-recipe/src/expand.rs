//! Dockerfile word expansion ("environment replacement"), matching BuildKit's shell lexer.
//!
//! Expansion runs in two steps: the input is parsed into a small tree first and evaluated
//! afterwards. Parsing first means syntax errors are reported even inside words that are never
//! evaluated, while evaluation can stay lazy like a shell's (`${a:-$b}` with `a` set never
//! looks at `b`, so `b` is neither "used" nor "unset").
//!
//! Deliberate differences from BuildKit, each where BuildKit's result is an accident of its
//! implementation rather than a documented behaviour: modifier words are evaluated lazily;
//! quoted pattern characters match literally; patterns support bracket expressions and use
//! leftmost-longest matching; an empty `/` pattern replaces nothing; `${}`-style empty names are
//! always errors; Mode::Heredoc follows sh here-document escaping (see [`Mode::Heredoc`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where variable values come from during expansion.
pub trait VarSource {
    /// The value of `name`, if it is set.
    fn get(&self, name: &str) -> Option<&str>;
}

impl VarSource for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl VarSource for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

/// How a text is expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A Dockerfile word (ADD/COPY/ENV/EXPOSE/FROM/LABEL/STOPSIGNAL/USER/VOLUME/WORKDIR args, ARG defaults, flag values):
    /// variables expanded, single/double quotes processed and removed, the escape character escapes the next character.
    Word,
    /// The body of an unquoted heredoc (like a shell here-document): variables expanded; quotes are ordinary characters;
    /// the escape character only escapes `$` and the escape character itself (otherwise it stays literally).
    Heredoc,
}

/// The result of expanding a text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The expanded text.
    pub value: String,
    /// Names that were referenced and were set (sorted, deduplicated) — used to know which build args were consumed.
    pub used: Vec<String>,
    /// Names that were referenced but not set (sorted, deduplicated) — used for "undefined variable" warnings.
    pub unset: Vec<String>,
}

/// An expansion that failed, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    /// What is wrong.
    pub message: String,
    /// Byte offset into the input where the faulty construct starts (e.g. the `$` of an unterminated `${`).
    pub offset: usize,
    /// Byte length of the faulty construct (at least 1 unless the input is empty).
    pub len: usize,
}

/// Expands one word. `escape` is the active escape character: '\\' by default, or '`' after `# escape=``.
pub fn expand(
    input: &str,
    escape: char,
    mode: Mode,
    vars: &dyn VarSource,
) -> Result<Expansion, ExpandError> {
    let parts = Parser::new(input, escape, mode, true).parse()?;
    let mut eval = Eval::new(vars, escape);
    let mut segs = Vec::new();
    eval.parts(&parts, false, &mut segs)?;
    let value = segs.into_iter().map(|s| s.text).collect();
    Ok(eval.finish(value))
}

/// Like BuildKit's ProcessWords: expands and then splits into fields on unquoted whitespace
/// (quoted whitespace and whitespace from variable values behave as BuildKit does; check its tests).
///
/// As in BuildKit, whitespace in an unquoted variable's value splits (even when it came from a
/// quoted default like `${x:-"a b"}`), escaped or quoted whitespace does not, and empty
/// fields (`""`) are dropped.
pub fn expand_fields(
    input: &str,
    escape: char,
    vars: &dyn VarSource,
) -> Result<
    (
        Vec<String>,
        Expansion, /* value empty, used/unset filled */
    ),
    ExpandError,
> {
    let parts = Parser::new(input, escape, Mode::Word, true).parse()?;
    let mut eval = Eval::new(vars, escape);
    let mut segs = Vec::new();
    eval.parts(&parts, false, &mut segs)?;
    Ok((split_fields(&segs), eval.finish(String::new())))
}

/// Removes quotes and escapes as Mode::Word does, but expands nothing (`$x` stays `$x`). Used for quoted heredoc
/// delimiters and other places that need unquoting only.
pub fn unquote(input: &str, escape: char) -> Result<String, ExpandError> {
    let parts = Parser::new(input, escape, Mode::Word, false).parse()?;
    let none: BTreeMap<String, String> = BTreeMap::new();
    let mut eval = Eval::new(&none, escape);
    let mut segs = Vec::new();
    eval.parts(&parts, false, &mut segs)?;
    Ok(segs.into_iter().map(|s| s.text).collect())
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Deep enough for any real Dockerfile; the limit exists so hostile input cannot overflow the
/// stack through recursion.
const MAX_NESTING: usize = 64;

#[derive(Debug)]
enum Part {
    /// Unquoted source text: splits on whitespace and is glob-active inside patterns.
    Plain(String),
    /// Escaped or single-quoted text: taken literally everywhere.
    Literal(String),
    /// A double-quoted group; everything inside is taken literally once evaluated.
    Quoted(Vec<Part>),
    Var(Box<VarRef>),
}

#[derive(Debug)]
struct VarRef {
    name: String,
    /// Byte range of the whole reference in the input, for evaluation errors.
    start: usize,
    end: usize,
    op: Op,
}

#[derive(Debug)]
enum Op {
    Value,
    Default {
        colon: bool,
        word: Vec<Part>,
    },
    Alternative {
        colon: bool,
        word: Vec<Part>,
    },
    Required {
        colon: bool,
        word: Vec<Part>,
    },
    TrimPrefix {
        longest: bool,
        pattern: Vec<Part>,
    },
    TrimSuffix {
        longest: bool,
        pattern: Vec<Part>,
    },
    Replace {
        all: bool,
        pattern: Vec<Part>,
        replacement: Vec<Part>,
    },
}

/// A parse error that remembers whether it was caused by running out of input, so that an
/// enclosing `${` can report itself as the unterminated construct (as BuildKit does).
#[derive(Debug)]
struct ParseError {
    message: String,
    offset: usize,
    len: usize,
    at_eof: bool,
}

impl From<ParseError> for ExpandError {
    fn from(e: ParseError) -> Self {
        ExpandError {
            message: e.message,
            offset: e.offset,
            len: e.len,
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
    escape: char,
    /// Word mode: quotes are syntax. Heredoc mode: quotes are text.
    quotes: bool,
    /// Heredoc mode: the escape character only escapes `$`, itself and a pending stop character.
    heredoc: bool,
    /// False for `unquote`: `$` is an ordinary character.
    expand: bool,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str, escape: char, mode: Mode, expand: bool) -> Self {
        Parser {
            input,
            chars: input.char_indices().collect(),
            pos: 0,
            escape,
            quotes: mode == Mode::Word,
            heredoc: mode == Mode::Heredoc,
            expand,
            depth: 0,
        }
    }

    fn parse(mut self) -> Result<Vec<Part>, ExpandError> {
        Ok(self.seq(None, false)?)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Byte offset of the next character (input length at the end).
    fn offset(&self) -> usize {
        self.chars
            .get(self.pos)
            .map_or(self.input.len(), |&(o, _)| o)
    }

    fn to_end(&self, offset: usize, message: String) -> ParseError {
        ParseError {
            message,
            offset,
            len: self.input.len().saturating_sub(offset),
            at_eof: true,
        }
    }

    fn missing_brace(&self, start: usize) -> ParseError {
        self.to_end(start, "syntax error: missing '}' in ${...}".to_string())
    }

    /// Parses until `stop` (consumed) or the end of input. `raw` keeps escape characters in
    /// the result, which BuildKit does for the replacement of `${var/pattern/replacement}`.
    fn seq(&mut self, stop: Option<char>, raw: bool) -> Result<Vec<Part>, ParseError> {
        let mut parts = Vec::new();
        loop {
            let Some(ch) = self.peek() else {
                return match stop {
                    Some(s) => Err(self.to_end(
                        self.offset(),
                        format!("unexpected end of statement while looking for matching {s}"),
                    )),
                    None => Ok(parts),
                };
            };
            if Some(ch) == stop {
                self.bump();
                return Ok(parts);
            }
            if ch == '$' && self.expand {
                parts.push(self.dollar()?);
            } else if self.quotes && ch == '\'' {
                parts.push(self.single_quoted()?);
            } else if self.quotes && ch == '"' {
                parts.push(self.double_quoted(raw)?);
            } else if ch == self.escape {
                self.bump();
                self.escaped(&mut parts, stop, raw);
            } else {
                self.bump();
                push_plain(&mut parts, ch);
            }
        }
    }

    /// Handles the character after an (already consumed) escape character outside quotes.
    fn escaped(&mut self, parts: &mut Vec<Part>, stop: Option<char>, raw: bool) {
        let esc = self.escape;
        match self.peek() {
            Some(c) if !self.heredoc || c == '$' || c == esc || Some(c) == stop => {
                self.bump();
                parts.push(Part::Literal(escaped_text(esc, c, raw)));
            }
            // Heredoc: an escape before anything else is just text.
            _ if self.heredoc => push_plain(parts, esc),
            // Word: BuildKit drops an escape character at the very end.
            _ => {}
        }
    }

    fn single_quoted(&mut self) -> Result<Part, ParseError> {
        let start = self.offset();
        self.bump();
        let mut text = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(self.to_end(
                        start,
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    ))
                }
                Some('\'') => return Ok(Part::Literal(text)),
                Some(c) => text.push(c),
            }
        }
    }

    fn double_quoted(&mut self, raw: bool) -> Result<Part, ParseError> {
        let start = self.offset();
        self.bump();
        let mut inner = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(self.to_end(
                        start,
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    ))
                }
                Some('"') => {
                    self.bump();
                    return Ok(Part::Quoted(inner));
                }
                Some('$') if self.expand => inner.push(self.dollar()?),
                Some(c) if c == self.escape => {
                    self.bump();
                    match self.peek() {
                        // Inside double quotes only these can be escaped; otherwise the escape
                        // character stays, as in sh.
                        Some(n) if n == '"' || n == '$' || n == self.escape => {
                            self.bump();
                            inner.push(Part::Literal(escaped_text(self.escape, n, raw)));
                        }
                        Some(_) => push_plain(&mut inner, c),
                        None => {}
                    }
                }
                Some(c) => {
                    self.bump();
                    push_plain(&mut inner, c);
                }
            }
        }
    }

    /// Reads a name the way BuildKit does: letters, digits and `_`; a leading digit reads
    /// only digits (`$10`), and one special parameter character (`$@`, `$$`, ...) is a name too.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if is_digit(c) => {
                while let Some(c) = self.peek().filter(|&c| is_digit(c)) {
                    self.bump();
                    name.push(c);
                }
            }
            Some(c) if is_special_param(c) => {
                self.bump();
                name.push(c);
            }
            _ => {
                while let Some(c) = self.peek().filter(|&c| is_name_char(c)) {
                    self.bump();
                    name.push(c);
                }
            }
        }
        name
    }

    fn dollar(&mut self) -> Result<Part, ParseError> {
        let start = self.offset();
        self.bump();
        if self.peek() == Some('{') {
            self.depth += 1;
            let part = self.braced(start);
            self.depth -= 1;
            return part;
        }
        let name = self.name();
        if name.is_empty() {
            return Ok(Part::Plain("$".to_string()));
        }
        Ok(Part::Var(Box::new(VarRef {
            name,
            start,
            end: self.offset(),
            op: Op::Value,
        })))
    }

    /// Parses a nested word of a `${...}`, turning "ran out of input" into this brace's error.
    fn brace_word(&mut self, start: usize, stop: char, raw: bool) -> Result<Vec<Part>, ParseError> {
        self.seq(Some(stop), raw).map_err(|e| {
            if e.at_eof {
                self.missing_brace(start)
            } else {
                e
            }
        })
    }

    fn bad_substitution(&self, start: usize) -> ParseError {
        ParseError {
            message: "syntax error: bad substitution".to_string(),
            offset: start,
            len: self.offset().saturating_sub(start).max(1),
            at_eof: false,
        }
    }

    fn unsupported(&self, offset: usize, modifier: &str) -> ParseError {
        ParseError {
            message: format!("unsupported modifier ({modifier}) in substitution"),
            offset,
            len: modifier.len().max(1),
            at_eof: false,
        }
    }

    fn braced(&mut self, start: usize) -> Result<Part, ParseError> {
        if self.depth > MAX_NESTING {
            return Err(ParseError {
                message: format!("variable substitutions nested deeper than {MAX_NESTING}"),
                offset: start,
                len: 2,
                at_eof: false,
            });
        }
        self.bump(); // '{'
        match self.peek() {
            None => return Err(self.missing_brace(start)),
            Some('{' | '}' | ':') => {
                self.bump();
                return Err(self.bad_substitution(start));
            }
            Some(_) => {}
        }
        let name = self.name();
        let mod_offset = self.offset();
        let Some(ch) = self.bump() else {
            return Err(self.missing_brace(start));
        };
        if name.is_empty() {
            return Err(self.bad_substitution(start));
        }
        let op = match ch {
            '}' => Op::Value,
            ':' => {
                let Some(c2) = self.peek() else {
                    return Err(self.missing_brace(start));
                };
                match c2 {
                    '-' | '+' | '?' | '#' | '%' => {
                        self.bump();
                        self.modifier(start, c2, true)?
                    }
                    '}' => return Err(self.unsupported(mod_offset, ":")),
                    _ => {
                        self.bump();
                        // BuildKit reads the word first, so an unterminated one wins.
                        self.brace_word(start, '}', false)?;
                        let modifier = format!(":{c2}");
                        return Err(self.unsupported(mod_offset, &modifier));
                    }
                }
            }
            '-' | '+' | '?' | '#' | '%' => self.modifier(start, ch, false)?,
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.bump();
                }
                let pattern = self.seq(Some('/'), false).map_err(|e| {
                    if e.at_eof {
                        self.to_end(start, "syntax error: missing '/' in ${...}".to_string())
                    } else {
                        e
                    }
                })?;
                let replacement = self.brace_word(start, '}', true)?;
                Op::Replace {
                    all,
                    pattern,
                    replacement,
                }
            }
            other => return Err(self.unsupported(mod_offset, &other.to_string())),
        };
        Ok(Part::Var(Box::new(VarRef {
            name,
            start,
            end: self.offset(),
            op,
        })))
    }

    /// Parses the word after one of `- + ? # %` (already consumed).
    fn modifier(&mut self, start: usize, kind: char, colon: bool) -> Result<Op, ParseError> {
        // `##` / `%%`; BuildKit also accepts `:#` and `:%` and treats them like `#` and `%`.
        let longest = (kind == '#' || kind == '%') && self.peek() == Some(kind);
        if longest {
            self.bump();
        }
        let word = self.brace_word(start, '}', false)?;
        Ok(match kind {
            '-' => Op::Default { colon, word },
            '+' => Op::Alternative { colon, word },
            '?' => Op::Required { colon, word },
            '#' => Op::TrimPrefix {
                longest,
                pattern: word,
            },
            _ => Op::TrimSuffix {
                longest,
                pattern: word,
            },
        })
    }
}

fn push_plain(parts: &mut Vec<Part>, c: char) {
    if let Some(Part::Plain(s)) = parts.last_mut() {
        s.push(c);
    } else {
        parts.push(Part::Plain(c.to_string()));
    }
}

fn escaped_text(escape: char, c: char, raw: bool) -> String {
    let mut s = String::new();
    if raw {
        s.push(escape);
    }
    s.push(c);
    s
}

/// Go's `unicode.IsDigit`, approximated: BuildKit accepts any Unicode digit in names.
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// BuildKit accepts Unicode letters in names (`$café`), not just ASCII.
fn is_name_char(c: char) -> bool {
    c == '_' || c.is_alphabetic() || is_digit(c)
}

/// POSIX special parameters; BuildKit treats each as a one-character name (normally unset).
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// A piece of the result. `bare` text was unquoted: it splits into fields and, inside a
/// pattern, its glob characters are active.
struct Seg {
    text: String,
    bare: bool,
}

struct Eval<'v> {
    vars: &'v dyn VarSource,
    escape: char,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
}

impl<'v> Eval<'v> {
    fn new(vars: &'v dyn VarSource, escape: char) -> Self {
        Eval {
            vars,
            escape,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
        }
    }

    fn finish(self, value: String) -> Expansion {
        Expansion {
            value,
            used: self.used.into_iter().collect(),
            unset: self.unset.into_iter().collect(),
        }
    }

    fn lookup(&mut self, name: &str) -> Option<&'v str> {
        let value = self.vars.get(name);
        let set = if value.is_some() {
            &mut self.used
        } else {
            &mut self.unset
        };
        if !set.contains(name) {
            set.insert(name.to_string());
        }
        value
    }

    fn parts(
        &mut self,
        parts: &[Part],
        quoted: bool,
        out: &mut Vec<Seg>,
    ) -> Result<(), ExpandError> {
        for part in parts {
            match part {
                Part::Plain(s) => out.push(Seg {
                    text: s.clone(),
                    bare: !quoted,
                }),
                Part::Literal(s) => out.push(Seg {
                    text: s.clone(),
                    bare: false,
                }),
                Part::Quoted(inner) => {
                    out.push(Seg {
                        text: String::new(),
                        bare: false,
                    });
                    self.parts(inner, true, out)?;
                }
                Part::Var(var) => {
                    let text = self.var(var)?;
                    out.push(Seg {
                        text,
                        bare: !quoted,
                    });
                }
            }
        }
        Ok(())
    }

    fn string(&mut self, parts: &[Part]) -> Result<String, ExpandError> {
        let mut segs = Vec::new();
        self.parts(parts, false, &mut segs)?;
        Ok(segs.into_iter().map(|s| s.text).collect())
    }

    fn pattern(&mut self, parts: &[Part]) -> Result<Vec<glob::Token>, ExpandError> {
        let mut segs = Vec::new();
        self.parts(parts, false, &mut segs)?;
        let chars: Vec<(char, bool)> = segs
            .iter()
            .flat_map(|s| s.text.chars().map(move |c| (c, s.bare)))
            .collect();
        Ok(glob::compile(&chars, self.escape))
    }

    fn var(&mut self, var: &VarRef) -> Result<String, ExpandError> {
        let value = self.lookup(&var.name);
        // The `:` forms treat an empty value like an unset one.
        let missing = |colon: bool| match value {
            None => true,
            Some(v) => colon && v.is_empty(),
        };
        let current = value.unwrap_or("");
        match &var.op {
            Op::Value => Ok(current.to_string()),
            Op::Default { colon, word } => {
                if missing(*colon) {
                    self.string(word)
                } else {
                    Ok(current.to_string())
                }
            }
            Op::Alternative { colon, word } => {
                if missing(*colon) {
                    Ok(String::new())
                } else {
                    self.string(word)
                }
            }
            Op::Required { colon, word } => {
                if !missing(*colon) {
                    return Ok(current.to_string());
                }
                let mut message = self.string(word)?;
                if message.is_empty() {
                    message = if value.is_none() {
                        "is not allowed to be unset".to_string()
                    } else {
                        "is not allowed to be empty".to_string()
                    };
                }
                Err(ExpandError {
                    message: format!("{}: {}", var.name, message),
                    offset: var.start,
                    len: var.end.saturating_sub(var.start).max(1),
                })
            }
            Op::TrimPrefix { longest, pattern } => {
                let tokens = self.pattern(pattern)?;
                let chars: Vec<char> = current.chars().collect();
                let cut = glob::match_prefix(&tokens, &chars, *longest).unwrap_or(0);
                Ok(chars.iter().skip(cut).collect())
            }
            Op::TrimSuffix { longest, pattern } => {
                let tokens = glob::reversed(self.pattern(pattern)?);
                let rev: Vec<char> = current.chars().rev().collect();
                let cut = glob::match_prefix(&tokens, &rev, *longest).unwrap_or(0);
                let keep = rev.len().saturating_sub(cut);
                Ok(current.chars().take(keep).collect())
            }
            Op::Replace {
                all,
                pattern,
                replacement,
            } => {
                let tokens = self.pattern(pattern)?;
                let replacement = self.string(replacement)?;
                Ok(glob::replace(&tokens, current, &replacement, *all))
            }
        }
    }
}

/// Field splitting as BuildKit's ProcessWords does it: only bare whitespace separates fields,
/// and a field is kept only when it is non-empty.
fn split_fields(segs: &[Seg]) -> Vec<String> {
    let mut fields = Vec::new();
    let mut word = String::new();
    for seg in segs {
        if !seg.bare {
            word.push_str(&seg.text);
            continue;
        }
        for c in seg.text.chars() {
            if c.is_whitespace() {
                if !word.is_empty() {
                    fields.push(std::mem::take(&mut word));
                }
            } else {
                word.push(c);
            }
        }
    }
    if !word.is_empty() {
        fields.push(word);
    }
    fields
}

// ---------------------------------------------------------------------------------------------
// Glob patterns
// ---------------------------------------------------------------------------------------------

/// Shell glob matching for `#`, `%` and `/` substitutions.
///
/// Patterns are simulated as an NFA over pattern positions (one pass over the text per
/// search), so runs of `*` cannot cause exponential backtracking.
mod glob {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum Token {
        Lit(char),
        Any,
        Star,
        Class { negated: bool, items: Vec<Item> },
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum Item {
        Char(char),
        Range(char, char),
        Named(Named),
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Named {
        Alpha,
        Digit,
        Alnum,
        Upper,
        Lower,
        Space,
        Blank,
        Punct,
        XDigit,
        Cntrl,
        Print,
        Graph,
    }

    impl Named {
        fn parse(name: &str) -> Option<Named> {
            Some(match name {
                "alpha" => Named::Alpha,
                "digit" => Named::Digit,
                "alnum" => Named::Alnum,
                "upper" => Named::Upper,
                "lower" => Named::Lower,
                "space" => Named::Space,
                "blank" => Named::Blank,
                "punct" => Named::Punct,
                "xdigit" => Named::XDigit,
                "cntrl" => Named::Cntrl,
                "print" => Named::Print,
                "graph" => Named::Graph,
                _ => return None,
            })
        }

        fn matches(self, c: char) -> bool {
            match self {
                Named::Alpha => c.is_alphabetic(),
                Named::Digit => c.is_ascii_digit(),
                Named::Alnum => c.is_alphanumeric(),
                Named::Upper => c.is_uppercase(),
                Named::Lower => c.is_lowercase(),
                Named::Space => c.is_whitespace(),
                Named::Blank => c == ' ' || c == '\t',
                Named::Punct => c.is_ascii_punctuation(),
                Named::XDigit => c.is_ascii_hexdigit(),
                Named::Cntrl => c.is_control(),
                Named::Print => !c.is_control(),
                Named::Graph => !c.is_control() && !c.is_whitespace(),
            }
        }
    }

    impl Token {
        fn matches(&self, c: char) -> bool {
            match self {
                Token::Lit(l) => *l == c,
                Token::Any => true,
                Token::Star => false,
                Token::Class { negated, items } => {
                    let hit = items.iter().any(|item| match item {
                        Item::Char(x) => *x == c,
                        Item::Range(lo, hi) => *lo <= c && c <= *hi,
                        Item::Named(n) => n.matches(c),
                    });
                    hit != *negated
                }
            }
        }
    }

    /// Compiles pattern text. Each char carries whether it is active (unquoted): quoted or
    /// escaped characters always match themselves.
    pub(super) fn compile(pattern: &[(char, bool)], escape: char) -> Vec<Token> {
        let mut tokens = Vec::new();
        let mut i = 0;
        while let Some(&(c, active)) = pattern.get(i) {
            i += 1;
            if !active {
                tokens.push(Token::Lit(c));
                continue;
            }
            match c {
                _ if c == escape => match pattern.get(i) {
                    Some(&(next, _)) => {
                        i += 1;
                        tokens.push(Token::Lit(next));
                    }
                    None => tokens.push(Token::Lit(c)),
                },
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::Any),
                '[' => match bracket(pattern, i, escape) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => tokens.push(Token::Lit('[')),
                },
                _ => tokens.push(Token::Lit(c)),
            }
        }
        tokens
    }

    /// Parses a bracket expression whose `[` was just before `i`; `None` when it is not
    /// closed, in which case the `[` is an ordinary character (as in sh).
    fn bracket(pattern: &[(char, bool)], mut i: usize, escape: char) -> Option<(Token, usize)> {
        let mut negated = false;
        if let Some(&(c, true)) = pattern.get(i) {
            if c == '!' || c == '^' {
                negated = true;
                i += 1;
            }
        }
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let &(c, active) = pattern.get(i)?;
            i += 1;
            if active && c == ']' && !first {
                return Some((Token::Class { negated, items }, i));
            }
            first = false;
            let lo = if active && c == '[' && matches!(pattern.get(i), Some(&(':', true))) {
                if let Some((named, next)) = named_class(pattern, i + 1) {
                    items.push(Item::Named(named));
                    i = next;
                    continue;
                }
                c
            } else if active && c == escape {
                let &(n, _) = pattern.get(i)?;
                i += 1;
                n
            } else {
                c
            };
            // A range needs an active '-' followed by something other than the closing ']'.
            let range_end = match (pattern.get(i), pattern.get(i + 1)) {
                (Some(&('-', true)), Some(&(hi, hi_active))) if !(hi_active && hi == ']') => {
                    if hi_active && hi == escape {
                        pattern.get(i + 2).map(|&(h, _)| (h, i + 3))
                    } else {
                        Some((hi, i + 2))
                    }
                }
                _ => None,
            };
            match range_end {
                Some((hi, next)) => {
                    items.push(Item::Range(lo, hi));
                    i = next;
                }
                None => items.push(Item::Char(lo)),
            }
        }
    }

    /// Parses `name:]` of a `[:name:]` class starting at `i`.
    fn named_class(pattern: &[(char, bool)], i: usize) -> Option<(Named, usize)> {
        let mut name = String::new();
        let mut j = i;
        loop {
            let &(c, _) = pattern.get(j)?;
            j += 1;
            if c == ':' {
                return match pattern.get(j) {
                    Some(&(']', _)) => Named::parse(&name).map(|n| (n, j + 1)),
                    _ => None,
                };
            }
            if !c.is_ascii_lowercase() || name.len() > 8 {
                return None;
            }
            name.push(c);
        }
    }

    /// The pattern that matches the reversed text, used to turn suffix matching into prefix
    /// matching.
    pub(super) fn reversed(mut tokens: Vec<Token>) -> Vec<Token> {
        tokens.reverse();
        tokens
    }

    /// Adds the positions reachable by letting a `*` match nothing. Stars are collapsed at
    /// compile time, but a forward pass handles any chain anyway.
    fn close(tokens: &[Token], states: &mut [usize]) {
        for (k, token) in tokens.iter().enumerate() {
            if *token == Token::Star {
                let s = states.get(k).copied().unwrap_or(DEAD);
                if let Some(next) = states.get_mut(k + 1) {
                    *next = (*next).min(s);
                }
            }
        }
    }

    const DEAD: usize = usize::MAX;

    /// One step of the NFA: `states[k]` holds the smallest start position of a partial match
    /// of `tokens[..k]` (or DEAD).
    fn step(tokens: &[Token], states: &[usize], c: char, next: &mut [usize]) {
        next.iter_mut().for_each(|s| *s = DEAD);
        for (k, token) in tokens.iter().enumerate() {
            let s = states.get(k).copied().unwrap_or(DEAD);
            if s == DEAD {
                continue;
            }
            let target = match token {
                Token::Star => k,
                t if t.matches(c) => k + 1,
                _ => continue,
            };
            if let Some(slot) = next.get_mut(target) {
                *slot = (*slot).min(s);
            }
        }
        close(tokens, next);
    }

    /// Length of the shortest (or longest) prefix of `text` that the pattern matches.
    pub(super) fn match_prefix(tokens: &[Token], text: &[char], longest: bool) -> Option<usize> {
        let m = tokens.len();
        let mut cur = vec![DEAD; m + 1];
        let mut next = vec![DEAD; m + 1];
        if let Some(s) = cur.first_mut() {
            *s = 0;
        }
        close(tokens, &mut cur);
        let accepted = |states: &[usize]| states.get(m).is_some_and(|&s| s != DEAD);
        let mut best = None;
        if accepted(&cur) {
            best = Some(0);
            if !longest {
                return best;
            }
        }
        for (i, &c) in text.iter().enumerate() {
            step(tokens, &cur, c, &mut next);
            std::mem::swap(&mut cur, &mut next);
            if accepted(&cur) {
                best = Some(i + 1);
                if !longest {
                    return best;
                }
            }
            if cur.iter().all(|&s| s == DEAD) {
                break;
            }
        }
        best
    }

    /// Leftmost, then longest, non-empty match in `text[from..]`, as `(start, end)`.
    fn find(tokens: &[Token], text: &[char], from: usize) -> Option<(usize, usize)> {
        let m = tokens.len();
        if m == 0 {
            return None;
        }
        let mut cur = vec![DEAD; m + 1];
        let mut next = vec![DEAD; m + 1];
        let mut best: Option<(usize, usize)> = None;
        let mut p = from;
        loop {
            if best.is_none() {
                if let Some(s) = cur.first_mut() {
                    *s = (*s).min(p);
                }
                close(tokens, &mut cur);
            }
            let s = cur.get(m).copied().unwrap_or(DEAD);
            if s != DEAD && s < p {
                best = match best {
                    Some((bs, _)) if bs < s => best,
                    _ => Some((s, p)),
                };
            }
            if let Some((bs, _)) = best {
                // Only partial matches starting no later than the best one can still matter.
                if cur.iter().take(m).all(|&s| s == DEAD || s > bs) {
                    break;
                }
            }
            let Some(&c) = text.get(p) else { break };
            step(tokens, &cur, c, &mut next);
            std::mem::swap(&mut cur, &mut next);
            p += 1;
        }
        best
    }

    /// `${var/pattern/replacement}` and `${var//pattern/replacement}`. An empty pattern (or
    /// one that only matches the empty string) replaces nothing.
    pub(super) fn replace(tokens: &[Token], value: &str, replacement: &str, all: bool) -> String {
        let text: Vec<char> = value.chars().collect();
        let mut out = String::with_capacity(value.len());
        let mut from = 0;
        while let Some((start, end)) = find(tokens, &text, from) {
            out.extend(text.iter().take(start).skip(from));
            out.push_str(replacement);
            from = end;
            if !all {
                break;
            }
        }
        out.extend(text.iter().skip(from));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(input: &str, pairs: &[(&str, &str)]) -> Result<Expansion, ExpandError> {
        expand(input, '\\', Mode::Word, &vars(pairs))
    }

    fn word(input: &str, pairs: &[(&str, &str)]) -> String {
        match run(input, pairs) {
            Ok(e) => e.value,
            Err(e) => panic!("{input:?} failed: {e:?}"),
        }
    }

    fn err(input: &str, pairs: &[(&str, &str)]) -> ExpandError {
        match run(input, pairs) {
            Ok(e) => panic!("{input:?} unexpectedly expanded to {:?}", e.value),
            Err(e) => e,
        }
    }

    fn tick(input: &str, pairs: &[(&str, &str)]) -> String {
        expand(input, '`', Mode::Word, &vars(pairs)).unwrap().value
    }

    fn heredoc(input: &str, pairs: &[(&str, &str)]) -> String {
        expand(input, '\\', Mode::Heredoc, &vars(pairs))
            .unwrap()
            .value
    }

    fn fields(input: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        expand_fields(input, '\\', &vars(pairs)).unwrap().0
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    // --- plain references -------------------------------------------------------------------

    #[test]
    fn text_without_specials_is_unchanged() {
        assert_eq!(word("hello/world.txt", &[]), "hello/world.txt");
        assert_eq!(word("", &[]), "");
    }

    #[test]
    fn dollar_name_is_replaced_by_value() {
        assert_eq!(word("$dir/bin", &[("dir", "/usr")]), "/usr/bin");
    }

    #[test]
    fn braces_delimit_the_name() {
        let v = [("foo", "F"), ("foo_bar", "X")];
        assert_eq!(word("${foo}_bar", &v), "F_bar");
        assert_eq!(word("$foo_bar", &v), "X");
    }

    #[test]
    fn unbraced_name_stops_at_first_non_name_character() {
        let v = [("a", "1")];
        assert_eq!(word("$a.b", &v), "1.b");
        assert_eq!(word("$a-b", &v), "1-b");
        assert_eq!(word("$a/$a", &v), "1/1");
    }

    #[test]
    fn unset_variable_expands_to_nothing() {
        assert_eq!(word("a${nope}b$nope", &[]), "ab");
    }

    #[test]
    fn dollar_that_cannot_start_a_name_is_literal() {
        assert_eq!(word("$", &[]), "$");
        assert_eq!(word("cost: 5$", &[]), "cost: 5$");
        assert_eq!(word("he$.x", &[]), "he$.x");
        assert_eq!(word("$ x", &[]), "$ x");
        assert_eq!(word("$/", &[]), "$/");
    }

    #[test]
    fn leading_digit_reads_all_digits_as_a_name() {
        // BuildKit treats `$1x` as the (unset) variable "1" followed by "x".
        assert_eq!(word("he$1x", &[]), "hex");
        assert_eq!(word("$10", &[("10", "ten"), ("1", "one")]), "ten");
        assert_eq!(run("$1", &[]).unwrap().unset, names(&["1"]));
    }

    #[test]
    fn special_parameters_are_one_character_names() {
        assert_eq!(word("a$@b", &[]), "ab");
        assert_eq!(word("$$", &[]), "");
        assert_eq!(word("$$x", &[]), "x");
        assert_eq!(word("${#}", &[("#", "3")]), "3");
        assert_eq!(run("$?", &[]).unwrap().unset, names(&["?"]));
    }

    #[test]
    fn names_may_contain_unicode_letters() {
        assert_eq!(word("$café!", &[("café", "latte")]), "latte!");
        assert_eq!(word("안녕$KOREAN", &[("KOREAN", "한국어")]), "안녕한국어");
    }

    #[test]
    fn non_ascii_text_passes_through() {
        assert_eq!(word("日本語/ü/🚀", &[]), "日本語/ü/🚀");
        assert_eq!(word("'ü'\"ö\"", &[]), "üö");
    }

    #[test]
    fn expanded_values_are_not_expanded_again() {
        let v = [("x", "$y '${z}' \"q\" \\n"), ("y", "Y")];
        assert_eq!(word("$x", &v), "$y '${z}' \"q\" \\n");
        assert_eq!(word("${x:-d}", &v), "$y '${z}' \"q\" \\n");
    }

    // --- default / alternative / required ---------------------------------------------------

    #[test]
    fn default_is_used_when_unset() {
        assert_eq!(word("${x:-dflt}", &[]), "dflt");
        assert_eq!(word("${x-dflt}", &[]), "dflt");
        assert_eq!(word("${x:-dflt}", &[("x", "v")]), "v");
        assert_eq!(word("${x-dflt}", &[("x", "v")]), "v");
    }

    #[test]
    fn colon_default_treats_empty_as_unset() {
        assert_eq!(word("${x:-dflt}", &[("x", "")]), "dflt");
        assert_eq!(word("[${x-dflt}]", &[("x", "")]), "[]");
    }

    #[test]
    fn alternative_is_used_only_when_set() {
        assert_eq!(word("[${x:+alt}]", &[]), "[]");
        assert_eq!(word("[${x+alt}]", &[]), "[]");
        assert_eq!(word("${x:+alt}", &[("x", "v")]), "alt");
        assert_eq!(word("[${x:+alt}]", &[("x", "")]), "[]");
        assert_eq!(word("${x+alt}", &[("x", "")]), "alt");
    }

    #[test]
    fn modifier_words_are_expanded_recursively() {
        let v = [("PWD", "/home"), ("SHELL", "bash")];
        assert_eq!(word("he${XXX:-$PWD}xx", &v), "he/homexx");
        assert_eq!(word("he${XXX:-${PWD:-yyy}}xx", &v), "he/homexx");
        assert_eq!(word("he${XXX:-${YYY:-yyy}}xx", &v), "heyyyxx");
        assert_eq!(word("he${PWD:+${SHELL}}xx", &v), "hebashxx");
        assert_eq!(word("he${PWD:+${PWD}:}xx", &v), "he/home:xx");
    }

    #[test]
    fn quotes_inside_modifier_words_are_removed() {
        assert_eq!(word("${x:-'a b'}", &[]), "a b");
        assert_eq!(word("${x:-\"}\"}", &[]), "}");
        assert_eq!(word("${x:-'$y'}", &[("y", "Y")]), "$y");
        assert_eq!(word("${x:-\"$y\"}", &[("y", "Y")]), "Y");
    }

    #[test]
    fn escapes_inside_modifier_words_make_characters_literal() {
        assert_eq!(word("${x:-a\\}b}", &[]), "a}b");
        assert_eq!(word("he${XXX:-\\$PWD:}xx", &[("PWD", "/h")]), "he$PWD:xx");
        assert_eq!(
            word("he${XXX:-\\${PWD}z}xx", &[("PWD", "/h")]),
            "he${PWDz}xx"
        );
    }

    #[test]
    fn required_fails_with_name_and_message_when_unset() {
        let e = err("${x?need x}", &[]);
        assert_eq!(e.message, "x: need x");
        let e = err("${x:?need x}", &[("x", "")]);
        assert_eq!(e.message, "x: need x");
    }

    #[test]
    fn required_uses_default_texts_for_empty_message() {
        assert_eq!(err("${x?}", &[]).message, "x: is not allowed to be unset");
        assert_eq!(err("${x:?}", &[]).message, "x: is not allowed to be unset");
        assert_eq!(
            err("${x:?}", &[("x", "")]).message,
            "x: is not allowed to be empty"
        );
    }

    #[test]
    fn required_without_colon_accepts_empty_value() {
        assert_eq!(word("[${x?boom}]", &[("x", "")]), "[]");
        assert_eq!(word("${x:?boom}", &[("x", "ok")]), "ok");
    }

    #[test]
    fn required_message_is_expanded() {
        let e = err("${VAR:?message here$ARG}", &[("ARG", "x")]);
        assert_eq!(e.message, "VAR: message herex");
    }

    #[test]
    fn required_error_spans_the_whole_reference() {
        let e = err("ab${x:?m}cd", &[]);
        assert_eq!((e.offset, e.len), (2, 7));
    }

    // --- prefix / suffix removal ------------------------------------------------------------

    #[test]
    fn hash_removes_shortest_prefix_and_double_hash_longest() {
        let v = [("p", "a/b/c.tar.gz")];
        assert_eq!(word("${p#*/}", &v), "b/c.tar.gz");
        assert_eq!(word("${p##*/}", &v), "c.tar.gz");
    }

    #[test]
    fn percent_removes_shortest_suffix_and_double_percent_longest() {
        let v = [("p", "a/b/c.tar.gz")];
        assert_eq!(word("${p%.*}", &v), "a/b/c.tar");
        assert_eq!(word("${p%%.*}", &v), "a/b/c");
        assert_eq!(word("${p%/*}", &v), "a/b");
        assert_eq!(word("${p%%/*}", &v), "a");
    }

    #[test]
    fn non_matching_pattern_leaves_value_alone() {
        let v = [("p", "abc")];
        assert_eq!(word("${p#x}", &v), "abc");
        assert_eq!(word("${p%x}", &v), "abc");
        assert_eq!(word("${p#b}", &v), "abc");
    }

    #[test]
    fn empty_pattern_removes_nothing() {
        let v = [("p", "xxyy")];
        for input in ["${p#}", "${p##}", "${p%}", "${p%%}"] {
            assert_eq!(word(input, &v), "xxyy", "{input}");
        }
    }

    #[test]
    fn lone_star_matches_empty_for_shortest_and_all_for_longest() {
        let v = [("p", "xxyy")];
        assert_eq!(word("${p#*}", &v), "xxyy");
        assert_eq!(word("[${p##*}]", &v), "[]");
        assert_eq!(word("${p%*}", &v), "xxyy");
        assert_eq!(word("[${p%%*}]", &v), "[]");
    }

    #[test]
    fn star_between_literals_follows_shortest_or_longest() {
        let v = [("p", "xxyy")];
        assert_eq!(word("${p#*x*y}", &v), "y");
        assert_eq!(word("${p##*x}", &v), "yy");
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        let v = [("p", "abcd")];
        assert_eq!(word("${p#??}", &v), "cd");
        assert_eq!(word("${p%?}", &v), "abc");
        assert_eq!(word("${p#?????}", &v), "abcd");
    }

    #[test]
    fn escaped_glob_characters_match_literally() {
        assert_eq!(word("${p#?\\?}", &[("p", "???y")]), "?y");
        assert_eq!(word("${p%%\\**}", &[("p", "xx**")]), "xx");
        assert_eq!(word("${p%%\\**\\*}", &[("p", "a***yy*")]), "a");
        assert_eq!(word("${p#\\[a]}", &[("p", "[a]b")]), "b");
    }

    #[test]
    fn regex_metacharacters_are_plain_pattern_characters() {
        let v = [("p", "()[]{}^$.*?|\\x")];
        assert_eq!(word("${p#()[]{\\}^$.\\*\\?|\\\\}", &v), "x");
        assert_eq!(word("${p#(.)}", &[("p", "(.)z")]), "z");
    }

    #[test]
    fn quoted_glob_characters_match_literally() {
        assert_eq!(word("${p#\"*\"}", &[("p", "*a")]), "a");
        assert_eq!(word("${p#\"*\"}", &[("p", "ba")]), "ba");
        assert_eq!(word("${p#'?'}", &[("p", "ab")]), "ab");
        assert_eq!(word("${p#\"$g\"}", &[("p", "ab"), ("g", "?")]), "ab");
    }

    #[test]
    fn unquoted_variable_in_pattern_is_glob_active() {
        let v = [("p", "xxyy"), ("x", "x"), ("any", "?"), ("e", "")];
        assert_eq!(word("${p#$x}", &v), "xyy");
        assert_eq!(word("${p#$any}", &v), "xyy");
        assert_eq!(word("${p#$e}", &v), "xxyy");
        assert_eq!(word("${p%%$e}", &v), "xxyy");
    }

    #[test]
    fn colon_before_hash_or_percent_is_accepted() {
        // BuildKit parses `${p:#pat}` like `${p#pat}`.
        let v = [("p", "aab")];
        assert_eq!(word("${p:#a}", &v), "ab");
        assert_eq!(word("${p:##*a}", &v), "b");
        assert_eq!(word("${p:%b}", &v), "aa");
    }

    #[test]
    fn trimming_an_unset_variable_gives_empty_and_records_it() {
        let e = run("[${nope#a}]", &[]).unwrap();
        assert_eq!(e.value, "[]");
        assert_eq!(e.unset, names(&["nope"]));
    }

    #[test]
    fn patterns_match_whole_unicode_characters() {
        let v = [("p", "한국어")];
        assert_eq!(word("${p#?}", &v), "국어");
        assert_eq!(word("${p%?}", &v), "한국");
        assert_eq!(word("${p/국/-}", &v), "한-어");
        assert_eq!(word("${p//[국어]/.}", &v), "한..");
    }

    // --- bracket expressions ----------------------------------------------------------------

    #[test]
    fn bracket_matches_any_listed_character() {
        let v = [("p", "banana")];
        assert_eq!(word("${p#[abc]}", &v), "anana");
        assert_eq!(word("${p//[an]/_}", &v), "b_____");
    }

    #[test]
    fn bracket_ranges_match_inclusive() {
        let v = [("p", "v1.2.3-rc9")];
        assert_eq!(word("${p//[0-9]/N}", &v), "vN.N.N-rcN");
        assert_eq!(word("${p##*[a-c]}", &v), "9");
    }

    #[test]
    fn negated_bracket_with_bang_or_caret() {
        let v = [("p", "aab")];
        assert_eq!(word("${p//[!a]/X}", &v), "aaX");
        assert_eq!(word("${p//[^a]/X}", &v), "aaX");
    }

    #[test]
    fn close_bracket_first_in_set_is_a_member() {
        assert_eq!(word("${p//[]x]/_}", &[("p", "a]x")]), "a__");
        assert_eq!(word("${p//[!]]/_}", &[("p", "a]x")]), "_]_");
    }

    #[test]
    fn dash_at_edges_of_bracket_is_literal() {
        assert_eq!(word("${p//[-a]/_}", &[("p", "a-b")]), "__b");
        assert_eq!(word("${p//[a-]/_}", &[("p", "a-b")]), "__b");
    }

    #[test]
    fn unclosed_bracket_is_an_ordinary_character() {
        assert_eq!(word("${p#[ab}", &[("p", "[abc")]), "c");
    }

    #[test]
    fn posix_character_classes_in_brackets() {
        let v = [("p", "ab12 cD")];
        assert_eq!(word("${p//[[:digit:]]/}", &v), "ab cD");
        assert_eq!(word("${p//[[:upper:][:space:]]/_}", &v), "ab12_c_");
        assert_eq!(word("${p//[![:alpha:]]/}", &v), "abcD");
    }

    // --- replacement ------------------------------------------------------------------------

    #[test]
    fn single_slash_replaces_first_match_double_slash_all() {
        let v = [("p", "a-b-c")];
        assert_eq!(word("${p/-/+}", &v), "a+b-c");
        assert_eq!(word("${p//-/+}", &v), "a+b+c");
    }

    #[test]
    fn replacement_uses_leftmost_longest_match() {
        let v = [("p", "xaXbYbz")];
        assert_eq!(word("${p/a*b/_}", &v), "x_z");
        assert_eq!(word("${p/*/_}", &v), "_");
        assert_eq!(word("${p//?/_}", &v), "_______");
    }

    #[test]
    fn pattern_and_replacement_may_use_variables() {
        let v = [
            ("p", "/a/foo/b/c.txt"),
            ("n", "/?/"),
            ("r", "/"),
            ("u", "http://x.de"),
            ("scheme", "http://"),
            ("tls", "https://"),
        ];
        assert_eq!(
            word("${p/$n/$r} - ${p//$n/$r}", &v),
            "/foo/b/c.txt - /foo/c.txt"
        );
        assert_eq!(word("${u/$scheme/$tls}", &v), "https://x.de");
    }

    #[test]
    fn escape_in_variable_used_as_pattern_is_honoured() {
        let v = [("p", "/foo*/*/*.txt"), ("n", "\\*/")];
        assert_eq!(
            word("${p/$n/.} - ${p//$n/.}", &v),
            "/foo.*/*.txt - /foo..*.txt"
        );
    }

    #[test]
    fn empty_replacement_deletes_matches() {
        let v = [("p", "/tmp/tmp/bar.txt"), ("n", "/tmp")];
        assert_eq!(word("${p/$n/} - ${p//$n/}", &v), "/tmp/bar.txt - /bar.txt");
    }

    #[test]
    fn escapes_are_kept_in_the_replacement_like_buildkit() {
        let v = [("p", "/tmp/foo.txt")];
        assert_eq!(word("${p//\\//\\/}", &v), "\\/tmp\\/foo.txt");
        assert_eq!(word("${p/foo/a\\}b}", &v), "/tmp/a\\}b.txt");
    }

    #[test]
    fn replacement_may_contain_slashes_and_quotes() {
        let v = [("p", "a.b")];
        assert_eq!(word("${p/./x/y}", &v), "ax/yb");
        assert_eq!(word("${p/./\" \"}", &v), "a b");
    }

    #[test]
    fn empty_pattern_replaces_nothing() {
        let v = [("p", "xxyy"), ("e", "")];
        assert_eq!(word("${p/$e/ww}", &v), "xxyy");
        assert_eq!(word("${p///}", &v), "xxyy");
        assert_eq!(word("[${q///}]", &v), "[]");
    }

    #[test]
    fn hash_or_percent_after_slash_is_not_an_anchor() {
        // BuildKit has no `${p/#pat/r}` anchors: the `#` is part of the pattern.
        assert_eq!(word("${p/#a/X}", &[("p", "a#ab")]), "aXb");
        assert_eq!(word("${p/%b/X}", &[("p", "b%b")]), "bX");
    }

    #[test]
    fn replace_on_empty_value_gives_empty() {
        assert_eq!(word("[${p//*/x}]", &[("p", "")]), "[]");
    }

    #[test]
    fn replace_without_second_slash_is_an_error() {
        let e = err("${p//ww}", &[("p", "xxyy")]);
        assert!(e.message.contains("missing '/'"), "{}", e.message);
        assert_eq!((e.offset, e.len), (0, 8));
        assert!(run("${p//}", &[("p", "x")]).is_err());
    }

    // --- glob performance -------------------------------------------------------------------

    #[test]
    fn many_stars_on_long_values_finish_quickly() {
        let long: String = "ab".repeat(5_000);
        let stars = "*".repeat(50);
        let spread = "a*".repeat(50);
        let v = [("p", long.as_str())];
        let start = std::time::Instant::now();
        assert_eq!(word(&format!("[${{p#{stars}}}]"), &v).len(), 10_002);
        assert_eq!(word(&format!("[${{p##{stars}}}]"), &v), "[]");
        assert_eq!(word(&format!("[${{p%%{stars}c}}]"), &v).len(), 10_002);
        assert_eq!(word(&format!("[${{p//{spread}c/x}}]"), &v).len(), 10_002);
        assert_eq!(word(&format!("${{p/{spread}/x}}"), &v), "x");
        assert_eq!(word("${p//a/}", &v), "b".repeat(5_000));
        assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
    }

    // --- syntax errors ----------------------------------------------------------------------

    #[test]
    fn unterminated_brace_points_at_the_dollar() {
        let e = err("he${PWD", &[]);
        assert!(e.message.contains("missing '}'"), "{}", e.message);
        assert_eq!((e.offset, e.len), (2, 5));
        assert_eq!(err("${", &[]).offset, 0);
        assert_eq!(err("x${x:-abc", &[]).offset, 1);
        assert_eq!(err("${x:", &[]).offset, 0);
        assert_eq!(err("${x/a/b", &[]).offset, 0);
    }

    #[test]
    fn unterminated_nested_brace_reports_the_outermost() {
        let e = err("a${x:-${y", &[]);
        assert!(e.message.contains("missing '}'"));
        assert_eq!((e.offset, e.len), (1, 8));
        // A quote left open inside braces also leaves the brace open.
        let e = err("${x:-\"ab}", &[]);
        assert!(e.message.contains("missing '}'"));
        assert_eq!(e.offset, 0);
    }

    #[test]
    fn empty_or_invalid_names_are_bad_substitutions() {
        for input in [
            "${}", "${:}", "${:-x}", "${{x}}", "${.}", "${ x}", "${/a/b}",
        ] {
            let e = err(input, &[]);
            assert_eq!(e.message, "syntax error: bad substitution", "{input}");
            assert_eq!(e.offset, 0, "{input}");
        }
        assert_eq!(err("ab${}", &[]).offset, 2);
        assert_eq!(err("ab${}", &[]).len, 3);
    }

    #[test]
    fn unknown_modifier_after_colon_is_reported_at_the_modifier() {
        let e = err("he${XXX:YYY}", &[]);
        assert_eq!(e.message, "unsupported modifier (:Y) in substitution");
        assert_eq!((e.offset, e.len), (7, 2));
        assert!(err("${x:}", &[]).message.contains("unsupported modifier"));
    }

    #[test]
    fn unknown_modifier_character_is_an_error() {
        for (input, m) in [("${x!y}", "!"), ("${x=y}", "="), ("${x:=y}", ":=")] {
            let e = err(input, &[("x", "v")]);
            assert_eq!(
                e.message,
                format!("unsupported modifier ({m}) in substitution")
            );
            assert_eq!(e.offset, 3, "{input}");
        }
    }

    #[test]
    fn syntax_errors_in_unused_words_are_still_reported() {
        assert!(run("${x:-${}}", &[("x", "set")]).is_err());
        assert!(run("${x:+${y!}}", &[]).is_err());
    }

    #[test]
    fn evaluation_errors_in_unused_words_are_not_raised() {
        assert_eq!(word("${x:-${y:?boom}}", &[("x", "set")]), "set");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let depth = 10_000;
        let input = format!("{}{}", "${a:-".repeat(depth), "}".repeat(depth));
        let e = err(&input, &[]);
        assert!(e.message.contains("nested"), "{}", e.message);
        let ok = format!("{}x{}", "${a:-".repeat(20), "}".repeat(20));
        assert_eq!(word(&ok, &[]), "x");
    }

    // --- quotes and escapes (Mode::Word) ----------------------------------------------------

    #[test]
    fn single_quotes_are_fully_literal() {
        let v = [("PWD", "/home")];
        assert_eq!(word("'$PWD'", &v), "$PWD");
        assert_eq!(word("'\\$PWD'", &v), "\\$PWD");
        assert_eq!(word("'he${XX}'", &v), "he${XX}");
        assert_eq!(word("'\"hi\"'", &v), "\"hi\"");
        assert_eq!(word("he'll'o", &v), "hello");
    }

    #[test]
    fn double_quotes_expand_variables_and_keep_single_quotes() {
        let v = [("PWD", "/home")];
        assert_eq!(word("\"he${PWD}\"", &v), "he/home");
        assert_eq!(word("\"he'$PWD'\"", &v), "he'/home'");
        assert_eq!(word("\"''\"", &v), "''");
    }

    #[test]
    fn escape_in_double_quotes_only_escapes_quote_dollar_and_itself() {
        assert_eq!(word("\"abc\\tdef\"", &[]), "abc\\tdef");
        assert_eq!(word("\"he\\$PWD\"", &[("PWD", "/h")]), "he$PWD");
        assert_eq!(word("\"a\\\"b\"", &[]), "a\"b");
        assert_eq!(word("\"a\\\\b\"", &[]), "a\\b");
        assert_eq!(word("\"a\\'b\"", &[]), "a\\'b");
    }

    #[test]
    fn escape_outside_quotes_makes_next_character_literal() {
        let v = [("PWD", "/home")];
        assert_eq!(word("abc\\tdef", &v), "abctdef");
        assert_eq!(word("he\\'llo", &v), "he'llo");
        assert_eq!(word("he\\$PWD", &v), "he$PWD");
        assert_eq!(word("he\\\\$PWD", &v), "he\\/home");
        assert_eq!(word("he\\${}xx", &v), "he${}xx");
        assert_eq!(word("a\\ b", &v), "a b");
    }

    #[test]
    fn trailing_escape_is_dropped() {
        assert_eq!(word("hello\\", &[]), "hello");
        assert_eq!(word("hello\\\\", &[]), "hello\\");
        assert_eq!(word("안녕하세요\\", &[]), "안녕하세요");
    }

    #[test]
    fn unterminated_double_quote_points_at_opening_quote() {
        let e = err("ab\"cd", &[]);
        assert_eq!(
            e.message,
            "unexpected end of statement while looking for matching double-quote"
        );
        assert_eq!((e.offset, e.len), (2, 3));
        // The escaped closing quote does not close it.
        assert_eq!(err("\"hello\\\"", &[]).offset, 0);
        assert_eq!(err("ü\"", &[]).offset, 2);
    }

    #[test]
    fn unterminated_single_quote_points_at_opening_quote() {
        let e = err("x'abc", &[]);
        assert_eq!(
            e.message,
            "unexpected end of statement while looking for matching single-quote"
        );
        assert_eq!((e.offset, e.len), (1, 4));
        // The escape character means nothing inside single quotes, so it cannot hide the quote.
        assert_eq!(word("'hello\\'", &[]), "hello\\");
    }

    #[test]
    fn empty_quotes_contribute_nothing() {
        assert_eq!(word("\"\"", &[]), "");
        assert_eq!(word("a''b\"\"c", &[]), "abc");
    }

    // --- backtick escape --------------------------------------------------------------------

    #[test]
    fn backtick_escape_replaces_backslash() {
        let v = [("PWD", "/home")];
        assert_eq!(tick("he`$PWD", &v), "he$PWD");
        assert_eq!(tick("a` b", &v), "a b");
        assert_eq!(tick("a``b", &v), "a`b");
        assert_eq!(tick("\"a`\"b\"", &v), "a\"b");
        assert_eq!(tick("${x:-a`}b}", &v), "a}b");
    }

    #[test]
    fn backslash_is_ordinary_with_backtick_escape() {
        let v = [("dir", "bin")];
        assert_eq!(tick("c:\\foo\\$dir", &v), "c:\\foo\\bin");
        assert_eq!(tick("\"c:\\foo\\\"", &v), "c:\\foo\\");
        assert_eq!(tick("c:\\", &v), "c:\\");
    }

    #[test]
    fn backtick_escapes_pattern_characters() {
        let v = [("p", "*a\\b")];
        assert_eq!(tick("${p#`*}", &v), "a\\b");
        assert_eq!(tick("${p##*\\}", &v), "b");
    }

    // --- heredoc mode -----------------------------------------------------------------------

    #[test]
    fn heredoc_expands_variables() {
        let v = [("name", "kiln")];
        assert_eq!(
            heredoc("hello $name\n${name:-x}!\n", &v),
            "hello kiln\nkiln!\n"
        );
    }

    #[test]
    fn heredoc_quotes_are_ordinary_characters() {
        let v = [("x", "v")];
        assert_eq!(heredoc("echo '$x' \"$x\"", &v), "echo 'v' \"v\"");
        assert_eq!(heredoc("it's", &v), "it's");
    }

    #[test]
    fn heredoc_escape_only_escapes_dollar_and_itself() {
        let v = [("x", "v")];
        assert_eq!(heredoc("\\$x", &v), "$x");
        assert_eq!(heredoc("a\\\\b", &v), "a\\b");
        assert_eq!(heredoc("printf 'a\\nb'", &v), "printf 'a\\nb'");
        assert_eq!(heredoc("end\\", &v), "end\\");
    }

    #[test]
    fn heredoc_with_backtick_escape() {
        let r = expand("`$x \\$x ``", '`', Mode::Heredoc, &vars(&[("x", "v")])).unwrap();
        assert_eq!(r.value, "$x \\v `");
    }

    #[test]
    fn heredoc_reports_unterminated_braces() {
        let e = expand("a ${x", '\\', Mode::Heredoc, &vars(&[])).unwrap_err();
        assert_eq!(e.offset, 2);
    }

    // --- field splitting --------------------------------------------------------------------

    #[test]
    fn fields_split_on_unquoted_whitespace() {
        assert_eq!(
            fields("  hello   there\t!  ", &[]),
            names(&["hello", "there", "!"])
        );
        assert!(fields("   ", &[]).is_empty());
    }

    #[test]
    fn fields_keep_quoted_and_escaped_whitespace() {
        assert_eq!(fields("hello\" there  \"", &[]), names(&["hello there  "]));
        assert_eq!(fields("hello\\ there", &[]), names(&["hello there"]));
        assert_eq!(fields("hello\\\" there", &[]), names(&["hello\"", "there"]));
    }

    #[test]
    fn fields_split_unquoted_variable_values() {
        let v = [("s", "abc  def"), ("lead", "  ab c"), ("trail", "ab c   ")];
        assert_eq!(fields("hello${s}bye", &v), names(&["helloabc", "defbye"]));
        assert_eq!(fields("hello\"${s}\"bye", &v), names(&["helloabc  defbye"]));
        assert_eq!(
            fields("hello${lead}def", &v),
            names(&["hello", "ab", "cdef"])
        );
        assert_eq!(fields("hello${trail}d", &v), names(&["helloab", "c", "d"]));
        assert_eq!(fields("hel\"lo${trail}\"", &v), names(&["helloab c   "]));
    }

    #[test]
    fn fields_split_quoted_default_words_like_buildkit() {
        assert_eq!(fields("${x:-\"a b\"}", &[]), names(&["a", "b"]));
    }

    #[test]
    fn fields_drop_empty_quoted_words() {
        assert_eq!(fields("a \"\" b ''", &[]), names(&["a", "b"]));
        assert!(fields("\"\"", &[]).is_empty());
    }

    #[test]
    fn fields_report_used_and_unset_without_value() {
        let (f, e) = expand_fields("$a $b", '\\', &vars(&[("a", "1")])).unwrap();
        assert_eq!(f, names(&["1"]));
        assert_eq!(e.value, "");
        assert_eq!((e.used, e.unset), (names(&["a"]), names(&["b"])));
    }

    #[test]
    fn fields_propagate_errors() {
        assert!(expand_fields("a \"b", '\\', &vars(&[])).is_err());
    }

    // --- used / unset -----------------------------------------------------------------------

    #[test]
    fn used_and_unset_are_sorted_and_deduplicated() {
        let r = run("$z $a $z ${m} $y $y", &[("z", "1"), ("a", "2")]).unwrap();
        assert_eq!(r.used, names(&["a", "z"]));
        assert_eq!(r.unset, names(&["m", "y"]));
    }

    #[test]
    fn set_but_empty_counts_as_used() {
        let r = run("${e:-x}", &[("e", "")]).unwrap();
        assert_eq!((r.used, r.unset), (names(&["e"]), vec![]));
    }

    #[test]
    fn default_word_is_not_evaluated_when_variable_is_set() {
        let r = run("${a:-$b}", &[("a", "1")]).unwrap();
        assert_eq!((r.used, r.unset), (names(&["a"]), vec![]));
        let r = run("${a:-$b}", &[("b", "2")]).unwrap();
        assert_eq!((r.used, r.unset), (names(&["b"]), names(&["a"])));
    }

    #[test]
    fn alternative_word_is_evaluated_only_when_set() {
        let r = run("${a:+$b}", &[]).unwrap();
        assert_eq!((r.used, r.unset), (vec![], names(&["a"])));
        let r = run("${a:+$b}", &[("a", "1")]).unwrap();
        assert_eq!((r.used, r.unset), (names(&["a"]), names(&["b"])));
    }

    #[test]
    fn names_in_patterns_and_replacements_are_recorded() {
        let r = run("${p/$n/$r}${p#$q}", &[("p", "x"), ("n", "x")]).unwrap();
        assert_eq!(r.used, names(&["n", "p"]));
        assert_eq!(r.unset, names(&["q", "r"]));
    }

    #[test]
    fn quoted_and_escaped_references_are_not_recorded() {
        let r = run("'$a' \\$b", &[]).unwrap();
        assert!(r.used.is_empty() && r.unset.is_empty());
    }

    #[test]
    fn hashmap_and_btreemap_are_var_sources() {
        let h: HashMap<String, String> = [("k".to_string(), "v".to_string())].into();
        assert_eq!(expand("$k", '\\', Mode::Word, &h).unwrap().value, "v");
        assert_eq!(VarSource::get(&vars(&[("k", "w")]), "k"), Some("w"));
    }

    // --- unquote ----------------------------------------------------------------------------

    #[test]
    fn unquote_removes_quotes_but_expands_nothing() {
        assert_eq!(unquote("'EOF'", '\\').unwrap(), "EOF");
        assert_eq!(unquote("\"E\"OF", '\\').unwrap(), "EOF");
        assert_eq!(unquote("$x${y:-'a b'}", '\\').unwrap(), "$x${y:-a b}");
        assert_eq!(unquote("\"$x\"", '\\').unwrap(), "$x");
    }

    #[test]
    fn unquote_processes_escapes() {
        assert_eq!(unquote("E\\OF", '\\').unwrap(), "EOF");
        assert_eq!(unquote("\\$x", '\\').unwrap(), "$x");
        assert_eq!(unquote("c:\\x`'q", '`').unwrap(), "c:\\x'q");
    }

    #[test]
    fn unquote_reports_unterminated_quotes() {
        let e = unquote("ab'cd", '\\').unwrap_err();
        assert_eq!((e.offset, e.len), (2, 3));
        // Braces mean nothing to unquote.
        assert_eq!(unquote("${", '\\').unwrap(), "${");
    }

    // --- robustness -------------------------------------------------------------------------

    fn check_sane(input: &str, escape: char, v: &BTreeMap<String, String>, no_values: bool) {
        for mode in [Mode::Word, Mode::Heredoc] {
            match expand(input, escape, mode, v) {
                Ok(e) => {
                    assert!(e.used.windows(2).all(|w| w[0] < w[1]), "{input:?}");
                    assert!(e.unset.windows(2).all(|w| w[0] < w[1]), "{input:?}");
                    assert!(e.used.iter().all(|n| !e.unset.contains(n)), "{input:?}");
                    if no_values {
                        assert!(
                            e.value.chars().count() <= input.chars().count(),
                            "{input:?} -> {:?}",
                            e.value
                        );
                    }
                }
                Err(e) => {
                    assert!(e.offset <= input.len(), "{input:?} {e:?}");
                    assert!(input.is_char_boundary(e.offset), "{input:?} {e:?}");
                    assert!(e.offset + e.len <= input.len(), "{input:?} {e:?}");
                    assert!(input.is_empty() || e.len >= 1, "{input:?} {e:?}");
                }
            }
        }
        let word = expand(input, escape, Mode::Word, v);
        match expand_fields(input, escape, v) {
            Ok((fields, e)) => {
                assert!(word.is_ok(), "{input:?}");
                assert!(fields.iter().all(|f| !f.is_empty()), "{input:?}");
                assert!(e.value.is_empty());
            }
            Err(e) => assert_eq!(word.err(), Some(e), "{input:?}"),
        }
        if let Ok(s) = unquote(input, escape) {
            assert!(s.chars().count() <= input.chars().count(), "{input:?}");
        }
    }

    #[test]
    fn exhaustive_short_inputs_never_panic() {
        let alphabet: Vec<char> = "${}:-+?#%/*[]!'\"\\ab".chars().collect();
        let empty = BTreeMap::new();
        let set = vars(&[("a", "x*y"), ("b", ""), ("ab", "$a '\" \\")]);
        let mut current = vec![0usize; 0];
        let mut count = 0;
        // Every string up to length 4, then evenly thinned sweeps of lengths 5 and 6.
        for len in 0..=6usize {
            let stride = match len {
                0..=4 => 1,
                5 => 31,
                _ => 997,
            };
            current.clear();
            current.resize(len, 0);
            let mut n = 0u64;
            loop {
                n += 1;
                if n.is_multiple_of(stride) {
                    let s: String = current.iter().map(|&i| alphabet[i]).collect();
                    check_sane(&s, '\\', &empty, true);
                    check_sane(&s, '\\', &set, false);
                    check_sane(&s, '`', &set, false);
                    count += 1;
                }
                // Odometer increment.
                let mut i = 0;
                loop {
                    if i == len {
                        break;
                    }
                    current[i] += 1;
                    if current[i] < alphabet.len() {
                        break;
                    }
                    current[i] = 0;
                    i += 1;
                }
                if i == len {
                    break;
                }
            }
        }
        assert!(count > 100_000);
    }

    /// Exponential but obviously right: does `tokens` match all of `text`?
    fn naive_full_match(tokens: &[glob::Token], text: &[char]) -> bool {
        match tokens.split_first() {
            None => text.is_empty(),
            Some((glob::Token::Star, rest)) => {
                (0..=text.len()).any(|i| naive_full_match(rest, &text[i..]))
            }
            Some((t, rest)) => match text.split_first() {
                Some((c, tail)) => glob_token_matches(t, *c) && naive_full_match(rest, tail),
                None => false,
            },
        }
    }

    fn glob_token_matches(t: &glob::Token, c: char) -> bool {
        // A one-token pattern matches a one-char text exactly when the token accepts it.
        glob::match_prefix(std::slice::from_ref(t), &[c], false) == Some(1)
    }

    #[test]
    fn glob_matcher_agrees_with_naive_backtracking() {
        let pattern_alphabet: Vec<char> = "ab*?[]!-".chars().collect();
        let text_alphabet: Vec<char> = "ab-]".chars().collect();
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3_000 {
            let plen = (next() % 7) as usize;
            let pattern: Vec<(char, bool)> = (0..plen)
                .map(|_| (pattern_alphabet[(next() % 8) as usize], true))
                .collect();
            let tlen = (next() % 8) as usize;
            let text: Vec<char> = (0..tlen)
                .map(|_| text_alphabet[(next() % 4) as usize])
                .collect();
            let tokens = glob::compile(&pattern, '\\');
            let prefixes: Vec<usize> = (0..=text.len())
                .filter(|&j| naive_full_match(&tokens, &text[..j]))
                .collect();
            let ctx = format!("{pattern:?} on {text:?}");
            assert_eq!(
                glob::match_prefix(&tokens, &text, false),
                prefixes.first().copied(),
                "{ctx}"
            );
            assert_eq!(
                glob::match_prefix(&tokens, &text, true),
                prefixes.last().copied(),
                "{ctx}"
            );
            let mut expected = None;
            'outer: for s in 0..text.len() {
                for e in (s + 1..=text.len()).rev() {
                    if naive_full_match(&tokens, &text[s..e]) {
                        expected = Some((s, e));
                        break 'outer;
                    }
                }
            }
            let replaced: String = match expected {
                Some((s, e)) => text[..s]
                    .iter()
                    .chain(['_'].iter())
                    .chain(text[e..].iter())
                    .collect(),
                None => text.iter().collect(),
            };
            let value: String = text.iter().collect();
            assert_eq!(
                glob::replace(&tokens, &value, "_", false),
                replaced,
                "{ctx}"
            );
        }
    }

    #[test]
    fn random_long_inputs_never_panic() {
        let alphabet: Vec<char> = "${}:-+?#%/*[]!^'\"\\`ab_ 1é한\n".chars().collect();
        let set = vars(&[("a", "a*[b]"), ("b", " x y "), ("_", "é")]);
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let len = if round % 100 == 0 {
                2_000
            } else {
                (next() % 40) as usize
            };
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            check_sane(&s, '\\', &set, false);
        }
    }
}
