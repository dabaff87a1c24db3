//! Tabular datasets: read and write CSV with a header row.

use crate::{Result, ResultExt, bail};
use std::path::Path;

/// A table of text cells with named columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column names, from the header row.
    pub columns: Vec<String>,
    /// Rows, each with one cell per column.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Reads a CSV file whose first row names the columns. Every row must
    /// have one cell per column; the error names the line.
    pub fn read_csv(path: impl AsRef<Path>) -> Result<Table> {
        let path = path.as_ref();
        let mut r = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_path(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let columns: Vec<String> = r
            .headers()
            .with_context(|| format!("{}: cannot read the header row", path.display()))?
            .iter()
            .map(|c| c.trim().to_string())
            .collect();
        if columns.is_empty() || columns.iter().all(String::is_empty) {
            bail!("{}: the header row is empty", path.display());
        }
        let mut rows = Vec::new();
        for rec in r.records() {
            let rec = rec.with_context(|| format!("{}: malformed row", path.display()))?;
            rows.push(rec.iter().map(|c| c.trim().to_string()).collect());
        }
        Ok(Table { columns, rows })
    }

    /// Writes the table as CSV with a header row.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut w = csv::Writer::from_path(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        w.write_record(&self.columns)?;
        for row in &self.rows {
            w.write_record(row)?;
        }
        w.flush()?;
        Ok(())
    }

    /// The index of column `name`.
    pub fn column_index(&self, name: &str) -> Result<usize> {
        match self.columns.iter().position(|c| c == name) {
            Some(i) => Ok(i),
            None => bail!("no column '{name}' (columns: {})", self.columns.join(", ")),
        }
    }

    /// Column `name` parsed as numbers; empty cells and `NA` are `None`.
    /// A cell that is neither is an error naming its row.
    pub fn numeric_column(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let i = self.column_index(name)?;
        self.rows
            .iter()
            .enumerate()
            .map(|(r, row)| {
                parse_cell(&row[i]).with_context(|| format!("column '{name}', data row {}", r + 1))
            })
            .collect()
    }
}

/// Parses one cell: a number, or `None` for an empty or `NA` cell.
pub fn parse_cell(cell: &str) -> Result<Option<f64>> {
    let c = cell.trim();
    if c.is_empty() || c.eq_ignore_ascii_case("na") || c.eq_ignore_ascii_case("nan") {
        return Ok(None);
    }
    match c.parse::<f64>() {
        Ok(v) => Ok(Some(v)),
        Err(_) => bail!("{c:?} is not a number"),
    }
}
