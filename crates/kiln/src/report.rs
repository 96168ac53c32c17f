//! Renders diagnostics like a compiler: file:line:column, the line, a caret, and help.

use codespan_reporting::diagnostic::{Diagnostic as Report, Label, Severity as ReportSeverity};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor::WriteColor, Config};
use kiln_recipe::{Diagnostic, Severity};

pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

/// Writes every diagnostic to `out`, in order.
pub fn emit(
    out: &mut dyn WriteColor,
    source: &Source<'_>,
    diagnostics: &[Diagnostic],
) -> std::io::Result<()> {
    let file = SimpleFile::new(source.name, source.text);
    let config = Config::default();
    for diagnostic in diagnostics {
        let severity = match diagnostic.severity {
            Severity::Error => ReportSeverity::Error,
            Severity::Warning => ReportSeverity::Warning,
        };
        let mut report = Report::new(severity).with_message(&diagnostic.message);
        if let Some(rule) = diagnostic.rule {
            report = report.with_code(rule);
        }
        if diagnostic.located {
            let end = diagnostic.span.end.min(source.text.len());
            let start = diagnostic.span.start.min(end);
            let mut label = Label::primary((), start..end);
            if let Some(text) = &diagnostic.label {
                label = label.with_message(text);
            }
            report = report.with_labels(vec![label]);
        }
        if let Some(help) = &diagnostic.help {
            report = report.with_notes(vec![format!("help: {help}")]);
        }
        term::emit_to_write_style(out, &config, &file, &report).map_err(std::io::Error::other)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use codespan_reporting::term::termcolor::NoColor;
    use kiln_recipe::Span;

    #[test]
    fn shows_file_line_column_source_and_caret() {
        let text = "FROM a\nCOPPY x y\n";
        let diagnostic = Diagnostic::error(Span::new(7, 12), "unknown instruction: COPPY")
            .with_help("did you mean `COPY`?");
        let mut out = NoColor::new(Vec::new());
        emit(
            &mut out,
            &Source {
                name: "Dockerfile",
                text,
            },
            &[diagnostic],
        )
        .unwrap();
        let rendered = String::from_utf8(out.into_inner()).unwrap();
        assert!(
            rendered.contains("error: unknown instruction: COPPY"),
            "{rendered}"
        );
        assert!(rendered.contains("Dockerfile:2:1"), "{rendered}");
        assert!(rendered.contains("COPPY x y"), "{rendered}");
        assert!(rendered.contains("^^^^^"), "{rendered}");
        assert!(
            rendered.contains("help: did you mean `COPY`?"),
            "{rendered}"
        );
    }
}
