//! Reading NumPy `.npy` files (format versions 1 to 3) into a [`Matrix`]:
//! little-endian `f4`, `f8`, `i4`, `i8`, `u1` and `b1` data, C or Fortran
//! order, one or two dimensions (a vector becomes one column).

use crate::{KernelError, Matrix, Result};

fn bad(msg: impl Into<String>) -> KernelError {
    KernelError::Invalid(format!("not a readable .npy file: {}", msg.into()))
}

/// Parses `.npy` bytes, refusing more than `max_cells` values.
pub fn read_npy(bytes: &[u8], max_cells: usize) -> Result<Matrix> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("it does not start with the NumPy magic bytes"));
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!("format version {v} (expected 1, 2 or 3)"))),
    };
    let header = bytes
        .get(start..start + len)
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("the header is not text"))?;
    let field = |key: &str| -> Result<&str> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or_else(|| bad(format!("the header has no '{key}'")))?;
        let rest = &header[at + key.len() + 2..];
        let colon = rest
            .find(':')
            .ok_or_else(|| bad(format!("malformed '{key}'")))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| bad("malformed 'descr'"))?;
    let fortran = field("fortran_order")?.starts_with("True");
    let shape_text = field("shape")?;
    let shape_text = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("malformed 'shape'"))?;
    let dims: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("shape entry {s:?}")))
        })
        .collect::<Result<_>>()?;
    let (rows, cols) = match dims.as_slice() {
        [n] => (*n, 1),
        [r, c] => (*r, *c),
        other => {
            return Err(bad(format!(
                "{} dimensions (a tensor has 1 or 2)",
                other.len()
            )));
        }
    };
    let cells = rows
        .checked_mul(cols)
        .filter(|c| *c <= max_cells)
        .ok_or_else(|| {
            bad(format!(
                "{rows}x{cols} is over the limit of {max_cells} values"
            ))
        })?;
    let (size, conv): (usize, fn(&[u8]) -> f32) = match descr {
        "<f4" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "<f8" => (8, |b| {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }),
        "<i4" => (4, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32),
        "<i8" => (8, |b| {
            i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }),
        "|u1" => (1, |b| b[0] as f32),
        "|b1" => (1, |b| f32::from(b[0] != 0)),
        other => {
            return Err(bad(format!(
                "data type {other:?} (supported: <f4, <f8, <i4, <i8, |u1, |b1)"
            )));
        }
    };
    let data = &bytes[start + len..];
    if data.len() != cells * size {
        return Err(bad(format!(
            "{} data bytes for {rows}x{cols} values of {size} bytes (expected {})",
            data.len(),
            cells * size
        )));
    }
    let mut values: Vec<f32> = data.chunks_exact(size).map(conv).collect();
    if fortran && rows > 1 && cols > 1 {
        let mut c = vec![0.0; cells];
        for j in 0..cols {
            for i in 0..rows {
                c[i * cols + j] = values[j * rows + i];
            }
        }
        values = c;
    }
    Matrix::from_vec(rows, cols, values)
}

/// Writes a matrix as a version-1 `.npy` file of `<f4` (for tests and tools).
pub fn write_npy(m: &Matrix) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        m.rows(),
        m.cols()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in m.as_slice() {
        out.extend(v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_numpy_layouts() {
        let m = Matrix::from_rows(&[&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]]);
        assert_eq!(read_npy(&write_npy(&m), 100).unwrap(), m);
        // A 1-D int64 vector, as `np.save("y.npy", np.array([0, 1, 1]))` writes it.
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }          \n";
        v.extend((h.len() as u16).to_le_bytes());
        v.extend(h.as_bytes());
        for x in [0i64, 1, 1] {
            v.extend(x.to_le_bytes());
        }
        let y = read_npy(&v, 100).unwrap();
        assert_eq!((y.rows(), y.cols()), (3, 1));
        assert_eq!(y.as_slice(), &[0.0, 1.0, 1.0]);
        // Fortran order is transposed into rows.
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }\n";
        f.extend((h.len() as u16).to_le_bytes());
        f.extend(h.as_bytes());
        for x in [1.0f64, 3.0, 2.0, 4.0] {
            f.extend(x.to_le_bytes());
        }
        assert_eq!(
            read_npy(&f, 100).unwrap(),
            Matrix::from_rows(&[&[1.0, 2.0], &[3.0, 4.0]])
        );
    }

    #[test]
    fn refuses_bad_files_with_a_reason() {
        let m = Matrix::from_rows(&[&[1.0, 2.0]]);
        let good = write_npy(&m);
        for (bytes, want) in [
            (b"not numpy".to_vec(), "magic"),
            (good[..good.len() - 1].to_vec(), "data bytes"),
            (
                good.iter()
                    .copied()
                    .map(|b| if b == b'4' { b'2' } else { b })
                    .collect(),
                "data type",
            ),
        ] {
            let e = read_npy(&bytes, 100).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        assert!(
            read_npy(&good, 1)
                .unwrap_err()
                .to_string()
                .contains("over the limit")
        );
    }
}
