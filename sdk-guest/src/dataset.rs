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
    /// Reads a table by its file's extension: `.parquet` (with the SDK's
    /// `parquet` feature) or CSV (`.csv`, `.tsv` is not supported).
    pub fn read(path: impl AsRef<Path>) -> Result<Table> {
        let path = path.as_ref();
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq") => {
                #[cfg(feature = "parquet")]
                return Table::read_parquet(path);
                #[cfg(not(feature = "parquet"))]
                bail!(
                    "{}: reading Parquet needs weir-sdk's `parquet` feature",
                    path.display()
                )
            }
            Some(e) if e.eq_ignore_ascii_case("csv") => Table::read_csv(path),
            _ => bail!("{}: expected a .csv or .parquet file", path.display()),
        }
    }

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

#[cfg(feature = "parquet")]
mod parquet_io {
    use super::{Table, parse_cell};
    use crate::{Result, ResultExt, bail};
    use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
    use parquet::column::writer::ColumnWriter;
    use parquet::data_type::ByteArray;
    use parquet::file::properties::WriterProperties;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::record::Field;
    use parquet::schema::types::Type;
    use std::path::Path;
    use std::sync::Arc;

    impl Table {
        /// Reads a Parquet file (flat schema: one primitive column per table
        /// column). Numbers are formatted so they parse back exactly; nulls
        /// become empty cells.
        pub fn read_parquet(path: impl AsRef<Path>) -> Result<Table> {
            let path = path.as_ref();
            // Read whole: the file reader clones file handles, which WASI lacks.
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot open {}", path.display()))?;
            let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))
                .with_context(|| format!("{}: cannot read it as Parquet", path.display()))?;
            let schema = reader.metadata().file_metadata().schema_descr();
            let columns: Vec<String> = schema
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            let mut rows =
                Vec::with_capacity(reader.metadata().file_metadata().num_rows().max(0) as usize);
            let iter = reader
                .get_row_iter(None)
                .with_context(|| format!("{}: cannot read rows", path.display()))?;
            for (i, row) in iter.enumerate() {
                let row = row.with_context(|| format!("{}: row {}", path.display(), i + 1))?;
                let mut cells = Vec::with_capacity(columns.len());
                for (name, field) in row.get_column_iter() {
                    cells.push(match field {
                        Field::Null => String::new(),
                        Field::Str(s) => s.clone(),
                        Field::Double(v) => v.to_string(),
                        Field::Float(v) => v.to_string(),
                        Field::Bool(v) => v.to_string(),
                        Field::Int(v) => v.to_string(),
                        Field::Long(v) => v.to_string(),
                        Field::Group(_) | Field::ListInternal(_) | Field::MapInternal(_) => {
                            bail!(
                                "{}: column '{name}' is nested; only flat tables are supported",
                                path.display()
                            )
                        }
                        other => other.to_string(),
                    });
                }
                rows.push(cells);
            }
            Ok(Table { columns, rows })
        }

        /// Writes the table as Parquet (Snappy-compressed, one row group).
        /// A column whose every non-empty cell is a number is stored as
        /// `DOUBLE`, any other as a UTF-8 string; empty cells are nulls.
        pub fn write_parquet(&self, path: impl AsRef<Path>) -> Result<()> {
            let path = path.as_ref();
            if let Some(i) = self.rows.iter().position(|r| r.len() != self.columns.len()) {
                bail!(
                    "{}: data row {} has {} cells, expected {} (one per column)",
                    path.display(),
                    i + 1,
                    self.rows[i].len(),
                    self.columns.len()
                );
            }
            let numeric: Vec<bool> = (0..self.columns.len())
                .map(|c| {
                    let mut any = false;
                    let all = self.rows.iter().all(|r| match parse_cell(&r[c]) {
                        Ok(Some(_)) => {
                            any = true;
                            true
                        }
                        Ok(None) => true,
                        Err(_) => false,
                    });
                    all && any
                })
                .collect();
            let fields = self
                .columns
                .iter()
                .zip(&numeric)
                .map(|(name, &num)| {
                    let b = if num {
                        Type::primitive_type_builder(name, PhysicalType::DOUBLE)
                    } else {
                        Type::primitive_type_builder(name, PhysicalType::BYTE_ARRAY)
                            .with_logical_type(Some(LogicalType::String))
                    };
                    b.with_repetition(Repetition::OPTIONAL)
                        .build()
                        .map(Arc::new)
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .context("cannot build the Parquet schema")?;
            let schema = Arc::new(
                Type::group_type_builder("table")
                    .with_fields(fields)
                    .build()
                    .context("cannot build the Parquet schema")?,
            );
            let props = Arc::new(
                WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build(),
            );
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut writer = SerializedFileWriter::new(file, schema, props)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let mut group = writer.next_row_group()?;
            let mut c = 0;
            while let Some(mut col) = group.next_column()? {
                let mut defs = Vec::with_capacity(self.rows.len());
                match col.untyped() {
                    ColumnWriter::DoubleColumnWriter(w) => {
                        let mut values = Vec::with_capacity(self.rows.len());
                        for r in &self.rows {
                            match parse_cell(&r[c]).ok().flatten() {
                                Some(v) => {
                                    values.push(v);
                                    defs.push(1);
                                }
                                None => defs.push(0),
                            }
                        }
                        w.write_batch(&values, Some(&defs), None)?;
                    }
                    ColumnWriter::ByteArrayColumnWriter(w) => {
                        let mut values = Vec::with_capacity(self.rows.len());
                        for r in &self.rows {
                            if r[c].is_empty() {
                                defs.push(0);
                            } else {
                                values.push(ByteArray::from(r[c].as_str()));
                                defs.push(1);
                            }
                        }
                        w.write_batch(&values, Some(&defs), None)?;
                    }
                    _ => bail!("internal error: unexpected Parquet column type"),
                }
                col.close()?;
                c += 1;
            }
            group.close()?;
            writer
                .close()
                .with_context(|| format!("cannot finish {}", path.display()))?;
            Ok(())
        }
    }
}
