//! Diagnostics: one problem found in a procedure (or calendar) file, located by byte span,
//! and its two renderings — rustc-like text through miette for people, JSON for tools.
//!
//! Every check in `definition` reports through [`Diagnostic`]; none of them prints or
//! exits. This module must not decide what is an error: it only carries and renders.

use std::ops::Range;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde::Serialize;

/// How bad a problem is. Warnings do not fail `validate` unless `--deny-warnings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable, kebab-case identifier of the kind of problem (`unknown-step`, `toml-syntax`…),
    /// so tools and tests can match on it without parsing the sentence.
    pub code: &'static str,
    /// The sentence a process owner reads.
    pub message: String,
    /// Byte range in the file the problem points at; `None` means the whole file.
    pub span: Option<Range<usize>>,
    /// Short text printed under the caret.
    pub label: Option<String>,
    /// What to do about it ("did you mean `review`?").
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span: None,
            label: None,
            help: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn at(mut self, span: Option<Range<usize>>) -> Self {
        self.span = span;
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds "did you mean `x`?" when one of `candidates` is close to `wrong`.
    pub fn suggest<'a>(self, wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Self {
        match did_you_mean(wrong, candidates) {
            Some(best) => self.help(format!("did you mean `{best}`?")),
            None => self,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The closest candidate to `wrong` by Jaro-Winkler similarity, if it is close enough to be
/// a plausible typo rather than a different word.
pub fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(wrong, c), c))
        .filter(|(score, c)| *score >= 0.8 && *c != wrong)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A source file with its diagnostics: the unit `validate` reports on.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// Path as given by the user (or as found in a directory), used verbatim in output.
    pub path: String,
    pub source: Arc<str>,
    pub diagnostics: Vec<Diagnostic>,
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl FileReport {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// Sorts diagnostics by position so output reads top to bottom, errors before warnings
    /// at the same place.
    pub fn sort(&mut self) {
        self.diagnostics.sort_by(|a, b| {
            let pa = a.span.as_ref().map_or(0, |s| s.start);
            let pb = b.span.as_ref().map_or(0, |s| s.start);
            pa.cmp(&pb)
                .then(a.severity.cmp(&b.severity))
                .then(a.message.cmp(&b.message))
        });
        self.diagnostics.dedup();
    }

    /// rustc-like text: `path:line:col` header, the offending line, a caret, the message and
    /// the hint. No colours, so it is the same on a terminal, in a pipe and in a snapshot.
    pub fn render_text(&self) -> String {
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .with_links(false);
        let mut out = String::new();
        for d in &self.diagnostics {
            let (line, col) = d
                .span
                .as_ref()
                .map_or((1, 1), |s| line_col(&self.source, s.start));
            // One greppable `file:line:col: error[code]` line (the form editors' problem
            // matchers read), then miette's picture of the place with the sentence and hint.
            out.push_str(&format!(
                "{}:{}:{}: {}[{}]\n",
                self.path,
                line,
                col,
                match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                },
                d.code,
            ));
            let report = Rendered {
                diag: d,
                source: NamedSource::new(self.path.clone(), self.source.to_string()),
            };
            let mut s = String::new();
            if handler.render_report(&mut s, &report).is_ok() {
                out.push_str(&s);
            }
            out.push('\n');
        }
        out
    }

    /// The same diagnostics for tools: one object each, with 1-based line/column of the
    /// start and end of the span.
    /// Each error as one line, `file:line:col: sentence (help)`, for logs and the
    /// deployments history.
    pub fn error_lines(&self) -> Vec<String> {
        self.diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| {
                let (line, col) = d
                    .span
                    .as_ref()
                    .map_or((1, 1), |s| line_col(&self.source, s.start));
                match &d.help {
                    Some(h) => format!("{}:{line}:{col}: {} ({h})", self.path, d.message),
                    None => format!("{}:{line}:{col}: {}", self.path, d.message),
                }
            })
            .collect()
    }

    pub fn to_json(&self) -> Vec<serde_json::Value> {
        self.diagnostics
            .iter()
            .map(|d| {
                let (line, column) = d
                    .span
                    .as_ref()
                    .map_or((1, 1), |s| line_col(&self.source, s.start));
                let (end_line, end_column) = d
                    .span
                    .as_ref()
                    .map_or((line, column), |s| line_col(&self.source, s.end));
                serde_json::json!({
                    "file": self.path,
                    "line": line,
                    "column": column,
                    "end_line": end_line,
                    "end_column": end_column,
                    "severity": d.severity,
                    "code": d.code,
                    "message": d.message,
                    "label": d.label,
                    "help": d.help,
                })
            })
            .collect()
    }
}

/// Adapter so miette's graphical handler can draw one of our diagnostics.
struct Rendered<'a> {
    diag: &'a Diagnostic,
    source: NamedSource<String>,
}

impl std::fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Rendered<'_> {}

impl miette::Diagnostic for Rendered<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h.as_str()) as Box<dyn std::fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.diag
            .span
            .as_ref()
            .map(|_| &self.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.diag.span.clone()?;
        let len = span.end.saturating_sub(span.start).max(1);
        let label = LabeledSpan::new(self.diag.label.clone(), span.start, len);
        Some(Box::new(std::iter::once(label)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_in_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        // byte 9 is the space after `b` and the two-byte `é`
        assert_eq!(line_col(src, 9), (2, 3));
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("reveiw", ["review", "close"]), Some("review"));
        assert_eq!(did_you_mean("zzz", ["review", "close"]), None);
    }
}
