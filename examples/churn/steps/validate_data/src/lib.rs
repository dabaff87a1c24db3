//! Checks a table before anything learns from it: row count, required
//! columns, null rate per column, value ranges, and a label with at least
//! two classes. Thresholds come from params. Reads CSV or Parquet (by
//! extension). Passes the table on unchanged (same bytes, so the same
//! digest) and writes `validation.json`; fails naming every violated check.

use std::collections::BTreeMap;
use weir_sdk::dataset::Table;
use weir_sdk::{Context, Result, ResultExt, bail};

#[derive(serde::Deserialize)]
struct Params {
    /// The file inside input `data` [default: its only file].
    #[serde(default)]
    file: Option<String>,
    label: String,
    min_rows: usize,
    max_null_rate: f64,
    #[serde(default)]
    required: Vec<String>,
    /// Column -> [low, high], inclusive.
    #[serde(default)]
    ranges: BTreeMap<String, [f64; 2]>,
}

#[derive(serde::Serialize)]
struct Check {
    check: String,
    ok: bool,
    detail: String,
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let p = ctx.params();
    let src = match &p.file {
        Some(f) => ctx.input("data")?.join(f),
        None => ctx.input_file("data")?,
    };
    let table = Table::read(&src)?;
    let mut checks = Vec::new();
    let mut check = |name: String, ok: bool, detail: String| {
        checks.push(Check {
            check: name,
            ok,
            detail,
        })
    };

    let rows = table.rows.len();
    check(
        "row count".into(),
        rows >= p.min_rows,
        format!("{rows} rows, at least {} required", p.min_rows),
    );
    for c in p.required.iter().chain(std::iter::once(&p.label)) {
        let present = table.columns.contains(c);
        check(
            format!("column {c} present"),
            present,
            if present {
                "present".into()
            } else {
                "missing".into()
            },
        );
    }
    ctx.metric("rows", rows as f64);
    ctx.metric("columns", table.columns.len() as f64);
    for (i, c) in table.columns.iter().enumerate() {
        let nulls = table.rows.iter().filter(|r| r[i].is_empty()).count();
        let rate = if rows == 0 {
            0.0
        } else {
            nulls as f64 / rows as f64
        };
        ctx.metric(&format!("null_rate.{c}"), rate);
        let limit = if *c == p.label { 0.0 } else { p.max_null_rate };
        check(
            format!("null rate of {c}"),
            rate <= limit,
            format!(
                "{:.2}% null, at most {:.2}% allowed",
                100.0 * rate,
                100.0 * limit
            ),
        );
    }
    for (c, [lo, hi]) in &p.ranges {
        let Ok(values) = table.numeric_column(c) else {
            check(
                format!("range of {c}"),
                false,
                "column missing or not numeric".into(),
            );
            continue;
        };
        let bad: Vec<f64> = values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v < lo || v > hi)
            .collect();
        check(
            format!("range of {c}"),
            bad.is_empty(),
            match bad.first() {
                None => format!("all within [{lo}, {hi}]"),
                Some(v) => format!("{} values outside [{lo}, {hi}], e.g. {v}", bad.len()),
            },
        );
    }
    if let Ok(i) = table.column_index(&p.label) {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in table.rows.iter().filter(|r| !r[i].is_empty()) {
            *counts.entry(r[i].as_str()).or_default() += 1;
        }
        let shown: Vec<String> = counts.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        check(
            format!("label {} has at least two classes", p.label),
            counts.len() >= 2,
            shown.join(", "),
        );
        ctx.metric("classes", counts.len() as f64);
        // A 0/1 label: the share of positives.
        if rows > 0 && counts.keys().all(|c| ["0", "1", "0.0", "1.0"].contains(c)) {
            let positives: usize = counts
                .iter()
                .filter(|(c, _)| c.starts_with('1'))
                .map(|(_, n)| n)
                .sum();
            ctx.metric("positive_rate", positives as f64 / rows as f64);
        }
    }

    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let report = serde_json::json!({
        "file": name,
        "rows": rows,
        "passed": failed.is_empty(),
        "checks": &checks,
    });
    std::fs::write(
        ctx.output("report")?.join("validation.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    ctx.metric("failed_checks", failed.len() as f64);
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|c| format!("  - {}: {}", c.check, c.detail))
            .collect();
        bail!(
            "{} of {} data checks failed:\n{}",
            failed.len(),
            checks.len(),
            list.join("\n")
        );
    }
    std::fs::copy(&src, ctx.output("data")?.join(&name))
        .with_context(|| "copying the validated table")?;
    ctx.info(format!("{} checks passed on {rows} rows", checks.len()));
    Ok(())
}

weir_sdk::step!(run);
