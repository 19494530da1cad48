//! Tables for people: the CLI's listings, aligned, fitted to the terminal's width.
//!
//! On a terminal, a table wider than the screen gives up width from its widest shrinkable
//! columns first, and a cell that no longer fits ends in `…`; piped or redirected, nothing is
//! cut (scripts want whole values, and `--json` for structure). It only formats: it never
//! decides what a listing shows.

use console::{measure_text_width, Term};

/// A table under construction.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns never cut (the first: an id that must stay whole to be used in a command).
    keep: Vec<bool>,
}

/// The narrowest a shrunk column gets.
const MIN_WIDTH: usize = 6;
/// Spaces between columns.
const GAP: usize = 2;

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            keep: headers.iter().enumerate().map(|(i, _)| i == 0).collect(),
        }
    }

    /// Add a row (missing cells are empty, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        // One line per row: a newline inside a value would break the alignment.
        for c in &mut cells {
            if c.contains(['\n', '\r', '\t']) {
                *c = c.replace(['\n', '\r', '\t'], " ");
            }
        }
        self.rows.push(cells);
    }

    /// Print to stdout, fitted to the terminal when stdout is one.
    pub fn print(&self) {
        let term = Term::stdout();
        let width = if term.is_term() {
            term.size_checked().map(|(_, cols)| usize::from(cols))
        } else {
            None
        };
        print!("{}", self.render(width));
    }

    /// The table as text, fitted to `width` columns when given.
    pub fn render(&self, width: Option<usize>) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| measure_text_width(h)).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(measure_text_width(c));
            }
        }
        if let Some(limit) = width {
            let total = |w: &[usize]| w.iter().sum::<usize>() + GAP * n.saturating_sub(1);
            // Take one column at a time from the widest shrinkable column.
            while total(&widths) > limit {
                let widest = (0..n)
                    .filter(|&i| !self.keep[i] && widths[i] > MIN_WIDTH)
                    .max_by_key(|&i| widths[i]);
                match widest {
                    Some(i) => widths[i] -= 1,
                    None => break,
                }
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut text = String::new();
            for (i, (c, &w)) in cells.iter().zip(&widths).enumerate() {
                let cell = fit(c, w);
                text.push_str(&cell);
                if i + 1 < n {
                    let pad = w.saturating_sub(measure_text_width(&cell)) + GAP;
                    text.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for r in &self.rows {
            line(r);
        }
        out
    }
}

/// How a JSON field is shown in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// As it is (strings unquoted; numbers and booleans as written; arrays joined with ", ").
    Text,
    /// Unix seconds or an RFC 3339 string, as a date and minute.
    Time,
}

/// One column of a table built from JSON objects: its header, the field (a dotted path, e.g.
/// `bootstrap.supplier`), and how it is shown.
#[derive(Debug, Clone, Copy)]
pub struct Col(pub &'static str, pub &'static str, pub Shown);

/// A table of `items` (JSON objects), one row each.
pub fn from_json<'a>(
    items: impl IntoIterator<Item = &'a serde_json::Value>,
    cols: &[Col],
) -> Table {
    let headers: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let mut t = Table::new(&headers);
    for item in items {
        t.row(cols.iter().map(|c| cell(item, c)).collect());
    }
    t
}

fn cell(item: &serde_json::Value, col: &Col) -> String {
    use serde_json::Value;
    let v = col
        .1
        .split('.')
        .try_fold(item, |v, k| v.get(k))
        .unwrap_or(&Value::Null);
    match col.2 {
        Shown::Time => when_secs(v),
        Shown::Text => match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        },
    }
}

/// Print a listing: pretty JSON with `json`, else a table of `items`, or `empty` when none.
pub fn print_listing(
    json: bool,
    whole: &serde_json::Value,
    items: &[serde_json::Value],
    cols: &[Col],
    empty: &str,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(whole)?);
    } else if items.is_empty() {
        println!("{empty}");
    } else {
        from_json(items, cols).print();
    }
    Ok(())
}

/// `text` cut to `width` display columns, ending in `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if measure_text_width(text) <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for ch in text.chars() {
        let w = measure_text_width(ch.encode_utf8(&mut [0; 4]));
        if used + w + 1 > width {
            break;
        }
        out.push(ch);
        used += w;
    }
    out.push('…');
    out
}

/// An RFC 3339 time from Unix seconds in a JSON value, as a person reads it in a table: date
/// and minute, UTC (`2026-12-01 17:49Z`); empty when absent.
pub fn when_secs(v: &serde_json::Value) -> String {
    v.as_i64()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .or_else(|| {
            // Already a time string (RFC 3339): shown to the minute.
            v.as_str().map(|s| {
                s.get(..16)
                    .map(|d| format!("{}Z", d.replace('T', " ")))
                    .unwrap_or_else(|| s.to_owned())
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["ID", "SUPPLIER", "DESCRIPTION"]);
        t.row(vec![
            "scanner-17".into(),
            "acme".into(),
            "a handheld scanner on dock 7 with a long description".into(),
        ]);
        t.row(vec!["r-1".into(), "globex".into(), "robot".into()]);
        t
    }

    #[test]
    fn columns_are_aligned() {
        let text = sample().render(None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("SUPPLIER").unwrap();
        assert_eq!(lines[1].find("acme"), Some(col));
        assert_eq!(lines[2].find("globex"), Some(col));
        assert!(
            text.contains("long description"),
            "nothing cut without a width"
        );
    }

    #[test]
    fn a_wide_table_is_fitted_to_the_terminal_and_ids_stay_whole() {
        let text = sample().render(Some(40));
        for line in text.lines() {
            assert!(measure_text_width(line) <= 40, "{line:?}");
        }
        assert!(text.contains("scanner-17"), "the id column is kept whole");
        assert!(text.contains('…'), "{text}");
    }

    #[test]
    fn cells_stay_on_one_line() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["x\ny".into()]);
        assert_eq!(t.render(None).lines().count(), 2);
    }

    #[test]
    fn json_items_become_rows() {
        let items = vec![
            serde_json::json!({"id": 3, "rule": "r", "device": null, "at": 0, "tags": ["a", "b"], "inner": {"x": "y"}}),
        ];
        let text = from_json(
            &items,
            &[
                Col("ID", "id", Shown::Text),
                Col("DEVICE", "device", Shown::Text),
                Col("AT", "at", Shown::Time),
                Col("TAGS", "tags", Shown::Text),
                Col("X", "inner.x", Shown::Text),
            ],
        )
        .render(None);
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("3 "), "{row}");
        assert!(
            row.contains("1970-01-01 00:00Z") && row.contains("a, b") && row.ends_with('y'),
            "{row}"
        );
    }

    #[test]
    fn times_read_as_dates() {
        assert_eq!(when_secs(&serde_json::json!(0)), "1970-01-01 00:00Z");
        assert_eq!(
            when_secs(&serde_json::json!("2026-12-01T17:49:01Z")),
            "2026-12-01 17:49Z"
        );
        assert_eq!(when_secs(&serde_json::Value::Null), "");
    }
}
