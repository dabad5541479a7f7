//! What the CLI prints: plain aligned tables or the server's JSON.
//!
//! Invariant: results go to stdout, notes and warnings to stderr, so
//! `--format json` and `--token-only` output can be piped. Tables and JSON
//! text that may hold a secret are wiped from memory once written.

use std::io::Write;

use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

/// Output format of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned plain-text columns.
    Table,
    /// The API's JSON, pretty-printed.
    Json,
}

/// Rows of cells printed as aligned columns (two spaces apart). The cells
/// are zeroized on drop, since some hold secrets.
#[derive(Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Drop for Table {
    fn drop(&mut self) {
        for row in &mut self.rows {
            for cell in row {
                cell.zeroize();
            }
        }
    }
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Table::default()
    }

    /// A table with a header row.
    pub fn with_header(header: &[&str]) -> Self {
        let mut t = Table::new();
        t.row(header.iter().map(|h| h.to_string()).collect());
        t
    }

    /// Add a row.
    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// Add a two-column key/value row.
    pub fn kv(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.row(vec![key.to_string(), value.to_string()])
    }

    /// The aligned text, one line per row, each ending in '\n'. The last
    /// column is not padded.
    pub fn render(&self) -> Zeroizing<String> {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; cols];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = Zeroizing::new(String::new());
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 2;
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        }
        out
    }

    /// Print to stdout.
    pub fn print(&self) -> std::io::Result<()> {
        print_raw(self.render().as_bytes())
    }
}

/// Write bytes to stdout as they are.
pub fn print_raw(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> std::io::Result<()> {
    let mut text =
        Zeroizing::new(serde_json::to_string_pretty(value).map_err(std::io::Error::other)?);
    text.push('\n');
    print_raw(text.as_bytes())
}

/// Write one line of (non-secret) text to stdout.
pub fn line(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// A note for the human on stderr (never part of the result). A closed
/// stderr is ignored.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_last_is_not_padded() {
        let mut t = Table::with_header(&["ID", "ADDRESS", "LEADER"]);
        t.row(vec!["1".into(), "10.0.0.1:8200".into(), "true".into()]);
        t.row(vec!["12".into(), "n2".into(), "false".into()]);
        assert_eq!(
            t.render().as_str(),
            "ID  ADDRESS        LEADER\n1   10.0.0.1:8200  true\n12  n2             false\n"
        );
        let mut kv = Table::new();
        kv.kv("Sealed", false).kv("Unseal progress", "2/3");
        assert_eq!(
            kv.render().as_str(),
            "Sealed           false\nUnseal progress  2/3\n"
        );
        assert_eq!(Table::new().render().as_str(), "");
    }
}
