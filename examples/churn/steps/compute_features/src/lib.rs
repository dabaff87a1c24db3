//! Turns the validated table into model-ready features: a seeded train/test
//! split (by id when the table has one, else by row), median imputation of
//! numeric columns, one-hot encoding of categoricals (missing is its own
//! category) and standardisation, written as CSV and Parquet. Columns not
//! named in params are inferred (numeric when every cell is a number). The
//! label may have any number of classes; they are numbered 0..k in sorted
//! order and named in `classes.json`. Every statistic is fitted on the train
//! split only and written to `transform.json`, so the test split never leaks
//! into training.

use std::collections::BTreeSet;
use weir_sdk::dataset::{Table, parse_cell};
use weir_sdk::{Context, Result, ResultExt, bail};

#[derive(serde::Deserialize)]
struct Params {
    /// The file inside input `data` [default: its only file].
    #[serde(default)]
    file: Option<String>,
    /// The id column; empty or absent: none (rows are split by position).
    #[serde(default)]
    id: String,
    label: String,
    /// Numeric and categorical feature columns; both absent (or empty):
    /// every other column, typed by its cells.
    #[serde(default)]
    numeric: Vec<String>,
    #[serde(default)]
    categorical: Vec<String>,
    test_fraction: f64,
    seed: u64,
}

/// The feature columns: as given, or every column but the id and the label,
/// numeric when each non-empty cell is a number.
fn feature_columns(table: &Table, p: &Params) -> (Vec<String>, Vec<String>) {
    if !p.numeric.is_empty() || !p.categorical.is_empty() {
        return (p.numeric.clone(), p.categorical.clone());
    }
    let (mut numeric, mut categorical) = (Vec::new(), Vec::new());
    for (i, c) in table.columns.iter().enumerate() {
        if *c == p.label || *c == p.id {
            continue;
        }
        if table.rows.iter().all(|r| parse_cell(&r[i]).is_ok()) {
            numeric.push(c.clone());
        } else {
            categorical.push(c.clone());
        }
    }
    (numeric, categorical)
}

/// The label's classes in order: numerically when every value is a number,
/// else by text.
fn classes(table: &Table, label: usize) -> Vec<String> {
    let set: BTreeSet<&str> = table.rows.iter().map(|r| r[label].as_str()).collect();
    let mut v: Vec<String> = set.into_iter().map(String::from).collect();
    let num = |s: &str| s.parse::<f64>().ok();
    if v.iter().all(|c| num(c).is_some()) {
        v.sort_by(|a, b| num(a).unwrap_or(0.0).total_cmp(&num(b).unwrap_or(0.0)));
    }
    v
}

/// Which split a customer falls in: a hash of the seed and the id, so a
/// customer stays on its side however the table is ordered or grows.
fn in_test(seed: u64, id: &str, fraction: f64) -> bool {
    // FNV-1a, then a splitmix finaliser.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    ((h >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let p = ctx.params();
    if !(0.0..1.0).contains(&p.test_fraction) || p.test_fraction == 0.0 {
        bail!(
            "param 'test_fraction' must be in (0, 1), found {}",
            p.test_fraction
        );
    }
    let src = match &p.file {
        Some(f) => ctx.input("data")?.join(f),
        None => ctx.input_file("data")?,
    };
    let table = Table::read(&src)?;
    let id = if p.id.is_empty() {
        None
    } else {
        Some(table.column_index(&p.id)?)
    };
    let label = table.column_index(&p.label)?;
    let class_names = classes(&table, label);
    let is_test: Vec<bool> = table
        .rows
        .iter()
        .enumerate()
        .map(|(n, r)| match id {
            Some(i) => in_test(p.seed, &r[i], p.test_fraction),
            None => in_test(p.seed, &n.to_string(), p.test_fraction),
        })
        .collect();
    let (numeric_columns, categorical_columns) = feature_columns(&table, p);

    // Fit on the train rows only.
    let mut numeric = Vec::new();
    for c in &numeric_columns {
        let values = table.numeric_column(c)?;
        let train: Vec<f64> = values
            .iter()
            .zip(&is_test)
            .filter(|(_, t)| !**t)
            .filter_map(|(v, _)| *v)
            .collect();
        let med = median(train.clone());
        let imputed: Vec<f64> = values
            .iter()
            .zip(&is_test)
            .filter(|(_, t)| !**t)
            .map(|(v, _)| v.unwrap_or(med))
            .collect();
        let mean = imputed.iter().sum::<f64>() / imputed.len().max(1) as f64;
        let var = imputed.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>()
            / imputed.len().max(1) as f64;
        let std = if var > 0.0 { var.sqrt() } else { 1.0 };
        numeric.push((c.clone(), values, med, mean, std));
    }
    let mut categorical = Vec::new();
    for c in &categorical_columns {
        let i = table.column_index(c)?;
        let cat = |v: &str| {
            if v.is_empty() {
                "missing".to_string()
            } else {
                v.to_string()
            }
        };
        let levels: BTreeSet<String> = table
            .rows
            .iter()
            .zip(&is_test)
            .filter(|(_, t)| !**t)
            .map(|(r, _)| cat(&r[i]))
            .collect();
        categorical.push((c.clone(), i, levels.into_iter().collect::<Vec<_>>()));
    }

    let mut columns: Vec<String> = numeric.iter().map(|n| n.0.clone()).collect();
    for (c, _, levels) in &categorical {
        columns.extend(levels.iter().map(|l| format!("{c}_{l}")));
    }
    let features = columns.len();
    columns.push(p.label.clone());
    let mut train = Table {
        columns: columns.clone(),
        rows: Vec::new(),
    };
    let mut test = Table {
        columns,
        rows: Vec::new(),
    };
    for (r, row) in table.rows.iter().enumerate() {
        let mut out = Vec::with_capacity(features + 1);
        for (_, values, med, mean, std) in &numeric {
            out.push(format!("{}", (values[r].unwrap_or(*med) - mean) / std));
        }
        for (_, i, levels) in &categorical {
            let v = if row[*i].is_empty() {
                "missing"
            } else {
                row[*i].as_str()
            };
            // A level never seen in training encodes as all zeros.
            out.extend(
                levels
                    .iter()
                    .map(|l| if l == v { "1" } else { "0" }.to_string()),
            );
        }
        let y = class_names
            .iter()
            .position(|c| *c == row[label])
            .with_context(|| format!("label of data row {}", r + 1))?;
        out.push(y.to_string());
        if is_test[r] { &mut test } else { &mut train }
            .rows
            .push(out);
    }
    if train.rows.is_empty() || test.rows.is_empty() {
        bail!(
            "the split left {} train and {} test rows; use more data or another test_fraction",
            train.rows.len(),
            test.rows.len()
        );
    }
    // Both formats: CSV for the host's tensor loader, Parquet for tools.
    for (table, output) in [(&train, "train"), (&test, "test")] {
        let dir = ctx.output(output)?;
        table.write_csv(dir.join("data.csv"))?;
        table.write_parquet(dir.join("data.parquet"))?;
        std::fs::write(dir.join("classes.json"), serde_json::to_vec(&class_names)?)?;
    }
    let transform = serde_json::json!({
        "numeric": numeric.iter().map(|(c, _, med, mean, std)| serde_json::json!({"column": c, "median": med, "mean": mean, "std": std})).collect::<Vec<_>>(),
        "categorical": categorical.iter().map(|(c, _, levels)| serde_json::json!({"column": c, "levels": levels})).collect::<Vec<_>>(),
        "label": p.label,
        "classes": class_names,
        "features": features,
        "test_fraction": p.test_fraction,
        "seed": p.seed,
    });
    std::fs::write(
        ctx.output("transform")?.join("transform.json"),
        serde_json::to_vec_pretty(&transform)?,
    )?;
    ctx.info(format!(
        "{features} features; {} train rows, {} test rows",
        train.rows.len(),
        test.rows.len()
    ));
    ctx.metric("features", features as f64);
    ctx.metric("classes", class_names.len() as f64);
    ctx.metric("train_rows", train.rows.len() as f64);
    ctx.metric("test_rows", test.rows.len() as f64);
    Ok(())
}

weir_sdk::step!(run);
