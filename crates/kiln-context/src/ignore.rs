//! `.dockerignore` rules: which context paths COPY and ADD may never see.
//!
//! Each non-comment line is a pattern (Go `filepath.Match` syntax plus `**` for any number of
//! directories), matched against the path relative to the context root. A pattern also
//! matches everything below a directory it matches. `!` re-includes. The last matching
//! line decides.

use crate::ContextError;
use globset::{GlobBuilder, GlobMatcher};

#[derive(Debug, Clone)]
struct Rule {
    pattern: String,
    matcher: GlobMatcher,
    exception: bool,
}

/// `.dockerignore` rules (also `COPY --exclude`): the last matching line wins, `!` re-includes.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

/// Cleans a context-relative path or pattern: `/` separators, no leading `/` or `./`, `.` and
/// `..` resolved without ever climbing above the root.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// A glob with Go's `filepath.Match` rules: `*` and `?` never cross `/`, `\` escapes.
pub(crate) fn compile_glob(pattern: &str) -> Result<GlobMatcher, ContextError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|e| ContextError::Pattern {
            pattern: pattern.to_string(),
            message: e.kind().to_string(),
        })
}

impl IgnoreRules {
    /// Reads `.dockerignore` text: one pattern a line, `#` comments and blank lines skipped.
    pub fn parse(text: &str) -> Result<Self, ContextError> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            // Braces are literal in Docker's matcher; keep them literal here too.
            let escaped = pattern.replace('{', "\\{").replace('}', "\\}");
            rules.push(Rule {
                matcher: compile_glob(&escaped)?,
                pattern,
                exception,
            });
        }
        Ok(IgnoreRules { rules })
    }

    /// Whether there is no rule (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some `!` rule exists: then an excluded directory must still be walked, since a
    /// file inside it may be re-included.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Whether the cleaned relative `path` is excluded.
    pub fn is_excluded(&self, path: &str) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let path = clean(path);
        if path.is_empty() {
            return false;
        }
        let mut excluded = false;
        for rule in &self.rules {
            if rule.matches_self_or_parent(&path) {
                excluded = !rule.exception;
            }
        }
        excluded
    }

    /// The patterns, for cache keys and messages.
    pub fn patterns(&self) -> impl Iterator<Item = (bool, &str)> {
        self.rules.iter().map(|r| (r.exception, r.pattern.as_str()))
    }
}

impl Rule {
    fn matches_self_or_parent(&self, path: &str) -> bool {
        if self.matcher.is_match(path) {
            return true;
        }
        let mut end = 0;
        while let Some(offset) = path[end..].find('/') {
            end += offset;
            if self.matcher.is_match(&path[..end]) {
                return true;
            }
            end += 1;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(text).unwrap()
    }

    #[test]
    fn plain_names_exclude_files_and_whole_directories() {
        let r = rules("node_modules\n*.log\n");
        assert!(r.is_excluded("node_modules"));
        assert!(r.is_excluded("node_modules/a/b.js"));
        assert!(r.is_excluded("debug.log"));
        assert!(
            !r.is_excluded("src/debug.log"),
            "* does not cross directories"
        );
        assert!(!r.is_excluded("src/main.rs"));
    }

    #[test]
    fn double_star_matches_any_depth() {
        let r = rules("**/*.tmp\n");
        assert!(r.is_excluded("a.tmp"));
        assert!(r.is_excluded("x/y/z.tmp"));
        assert!(!r.is_excluded("x/y/z.txt"));
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        let r = rules("*.md\n!README.md\n");
        assert!(r.is_excluded("CHANGES.md"));
        assert!(!r.is_excluded("README.md"));
        let r = rules("!README.md\n*.md\n");
        assert!(
            r.is_excluded("README.md"),
            "a later rule overrides the exception"
        );
        let r = rules("docs\n!docs/keep\n");
        assert!(r.is_excluded("docs/other.txt"));
        assert!(!r.is_excluded("docs/keep/file.txt"));
        assert!(r.has_exceptions());
    }

    #[test]
    fn comments_blank_lines_leading_slash_and_dots_are_cleaned() {
        let r = rules("# comment\n\n  /build/  \n./tmp\nsub/../secret\n");
        assert!(r.is_excluded("build/x"));
        assert!(r.is_excluded("tmp"));
        assert!(r.is_excluded("secret"));
        assert_eq!(r.patterns().count(), 3);
    }

    #[test]
    fn question_mark_and_classes() {
        let r = rules("file?.txt\n[ab].bin\n");
        assert!(r.is_excluded("file1.txt"));
        assert!(!r.is_excluded("file10.txt"));
        assert!(r.is_excluded("a.bin"));
        assert!(!r.is_excluded("c.bin"));
    }

    #[test]
    fn braces_are_literal_as_in_docker() {
        let r = rules("{a,b}.txt\n");
        assert!(!r.is_excluded("a.txt"));
        assert!(r.is_excluded("{a,b}.txt"));
    }

    #[test]
    fn clean_never_climbs_above_the_root() {
        assert_eq!(clean("../../etc/passwd"), "etc/passwd");
        assert_eq!(clean("/a/./b/../c/"), "a/c");
        assert_eq!(clean("."), "");
    }
}
