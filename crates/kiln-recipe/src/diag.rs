//! Diagnostics: what went wrong, where, and what to do about it. Rendering is the binary's job.

use crate::span::Span;
use std::fmt;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// A lint finding: the recipe still builds.
    Warning,
    /// The recipe cannot be built as written.
    Error,
}

/// One finding about a recipe. `rule` names a lint rule (as BuildKit's `# check=` directive
/// names them) for warnings that can be skipped; errors from the grammar carry none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// Where in the recipe.
    pub span: Span,
    /// Short text shown under the caret.
    pub label: Option<String>,
    /// Advice on how to fix it ("did you mean `COPY`?").
    pub help: Option<String>,
    /// The lint rule, for warnings a `# check=skip=` can silence.
    pub rule: Option<&'static str>,
    /// False for findings about the build as a whole (an unused --build-arg, an unknown
    /// --target), which have no place in the file to point at.
    pub located: bool,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            label: None,
            help: None,
            rule: None,
            located: true,
        }
    }

    /// A warning of lint rule `rule` at `span`.
    pub fn warning(rule: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            message: message.into(),
            span,
            label: None,
            help: None,
            rule: Some(rule),
            located: true,
        }
    }

    /// Adds the text shown under the caret.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Adds advice on how to fix it.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Marks it as about the build as a whole, not a place in the file.
    pub fn unlocated(mut self) -> Self {
        self.located = false;
        self
    }

    /// Whether it is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

/// The `# check=` directive: `skip=Rule1,Rule2` (or `skip=all`) silences lint warnings and
/// `error=true` makes the remaining ones fail the check, as in BuildKit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckPolicy {
    /// `skip=all`: every lint warning is silenced.
    pub skip_all: bool,
    /// `skip=Rule1,Rule2`: the rules silenced.
    pub skip: Vec<String>,
    /// `error=true`: the remaining warnings fail the check.
    pub error: bool,
}

impl CheckPolicy {
    /// Reads the directive's value, or says what is wrong with it.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut policy = CheckPolicy::default();
        for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, val) = part.split_once('=').ok_or_else(|| {
                format!("invalid check directive part {part:?}: expected key=value")
            })?;
            match key.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in val.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            policy.skip_all = true;
                        } else {
                            policy.skip.push(rule.to_string());
                        }
                    }
                }
                "error" => {
                    policy.error = crate::go_bool::parse_go_bool(val.trim()).ok_or_else(|| {
                        format!("invalid check directive error={val:?}: expected true or false")
                    })?
                }
                other => {
                    return Err(format!(
                        "unknown check directive key {other:?} (use skip or error)"
                    ))
                }
            }
        }
        Ok(policy)
    }

    /// Drops skipped warnings and, with `error=true`, turns the rest into errors.
    pub fn apply(&self, diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
        diagnostics
            .into_iter()
            .filter(|d| match (d.severity, d.rule) {
                (Severity::Warning, Some(rule)) => {
                    !self.skip_all && !self.skip.iter().any(|s| s.eq_ignore_ascii_case(rule))
                }
                _ => true,
            })
            .map(|mut d| {
                if self.error && d.severity == Severity::Warning && d.rule.is_some() {
                    d.severity = Severity::Error;
                }
                d
            })
            .collect()
    }
}

/// Edit distance, for "did you mean" suggestions.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            let delete = previous[j + 1] + 1;
            let insert = current[j] + 1;
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The candidate closest to `word` (case-insensitively), if it is close enough to be a
/// plausible typo rather than a different word.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (levenshtein(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_instruction() {
        let known = ["FROM", "COPY", "RUN", "WORKDIR"];
        assert_eq!(suggest("COPPY", known), Some("COPY"));
        assert_eq!(suggest("wrkdir", known), Some("WORKDIR"));
        assert_eq!(suggest("BANANA", known), None);
    }

    #[test]
    fn check_policy_skips_and_promotes() {
        let warn = |rule| Diagnostic::warning(rule, Span::default(), "w");
        let policy = CheckPolicy::parse("skip=JSONArgsRecommended;error=true").unwrap();
        let out = policy.apply(vec![warn("JSONArgsRecommended"), warn("StageNameCasing")]);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_error());
        assert!(CheckPolicy::parse("skip=all")
            .unwrap()
            .apply(vec![warn("X")])
            .is_empty());
        assert!(CheckPolicy::parse("bogus").is_err());
        assert!(CheckPolicy::parse("error=maybe").is_err());
    }

    #[test]
    fn levenshtein_counts_edits() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }
}
