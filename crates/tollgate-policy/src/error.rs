//! Errors reported when a policy file does not parse or validate.

use std::fmt;

/// A policy file could not be loaded. Holds every problem found, in file
/// order, so an operator can fix them all in one go.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct PolicyError {
    pub diagnostics: Vec<Diagnostic>,
}

/// One problem in a policy file, with its 1-based line and column.
///
/// Displays as `policy.toml:12:5: message`.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub source: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.source, self.line, self.column, self.message
        )
    }
}

/// Convert a byte offset in `text` to a 1-based (line, column) pair, the
/// column counted in characters. Offsets past the end (or inside a UTF-8
/// sequence) are clamped; this never panics.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// Collects diagnostics while a file is being validated.
pub(crate) struct Diagnostics<'a> {
    text: &'a str,
    source: &'a str,
    /// (byte offset, diagnostic), sorted by offset at the end.
    found: Vec<(usize, Diagnostic)>,
}

impl<'a> Diagnostics<'a> {
    pub(crate) fn new(text: &'a str, source: &'a str) -> Self {
        Diagnostics {
            text,
            source,
            found: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, offset: usize, message: String) {
        let (line, column) = line_col(self.text, offset);
        self.found.push((
            offset,
            Diagnostic {
                source: self.source.to_string(),
                line,
                column,
                message,
            },
        ));
    }

    pub(crate) fn line_of(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub(crate) fn into_error(mut self) -> PolicyError {
        // Stable: problems at the same place keep the order they were found.
        self.found.sort_by_key(|(offset, _)| *offset);
        let mut diagnostics: Vec<Diagnostic> = Vec::with_capacity(self.found.len());
        for (_, d) in self.found {
            let duplicate = diagnostics
                .iter()
                .any(|e| e.line == d.line && e.column == d.column && e.message == d.message);
            if !duplicate {
                diagnostics.push(d);
            }
        }
        PolicyError { diagnostics }
    }
}
