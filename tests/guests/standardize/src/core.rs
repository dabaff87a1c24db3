//! Feature standardisation: each numeric column to zero mean and unit
//! variance. Plain Rust with no weir dependency, so the same file is compiled
//! natively (benches/weir.rs) and into the wasm step (lib.rs) to compare them.

use std::io::{Read, Write};

/// Reads a CSV with a header row of numeric columns, writes it standardised
/// with 6 decimals. Returns the number of rows.
pub fn standardize(input: impl Read, output: impl Write) -> Result<usize, String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let headers = r.headers().map_err(|e| e.to_string())?.clone();
    let cols = headers.len();
    let mut data: Vec<f64> = Vec::new();
    let mut rec = csv::ByteRecord::new();
    while r.read_byte_record(&mut rec).map_err(|e| e.to_string())? {
        if rec.len() != cols {
            return Err(format!(
                "row {} has {} cells, expected {cols}",
                data.len() / cols + 1,
                rec.len()
            ));
        }
        for cell in rec.iter() {
            let s = std::str::from_utf8(cell).map_err(|e| e.to_string())?;
            data.push(
                s.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{s:?} is not a number"))?,
            );
        }
    }
    let rows = data.len() / cols.max(1);
    let mut mean = vec![0.0f64; cols];
    let mut m2 = vec![0.0f64; cols];
    for row in data.chunks_exact(cols) {
        for (j, x) in row.iter().enumerate() {
            mean[j] += x;
        }
    }
    for m in &mut mean {
        *m /= rows.max(1) as f64;
    }
    for row in data.chunks_exact(cols) {
        for (j, x) in row.iter().enumerate() {
            m2[j] += (x - mean[j]) * (x - mean[j]);
        }
    }
    let std: Vec<f64> = m2
        .iter()
        .map(|v| (v / rows.max(1) as f64).sqrt().max(1e-12))
        .collect();
    let mut w = csv::Writer::from_writer(output);
    w.write_record(&headers).map_err(|e| e.to_string())?;
    let mut cells: Vec<String> = vec![String::new(); cols];
    for row in data.chunks_exact(cols) {
        for (j, x) in row.iter().enumerate() {
            cells[j].clear();
            use std::fmt::Write as _;
            let _ = write!(cells[j], "{:.6}", (x - mean[j]) / std[j]);
        }
        w.write_record(&cells).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    Ok(rows)
}
