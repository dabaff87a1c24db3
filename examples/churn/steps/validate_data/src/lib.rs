//! Checks a customer table before anything learns from it: row count,
//! required columns, null rate per column, value ranges, and a label with
//! both classes. Thresholds come from params. Passes the table on unchanged
//! (same bytes, so the same digest) and writes `validation.json`; fails
//! naming every violated check.

use std::collections::BTreeMap;
use weir_sdk::dataset::{Table, parse_cell};
use weir_sdk::{Context, Result, ResultExt, bail};

#[derive(serde::Deserialize)]
struct Params {
    /// The file inside input `data`.
    file: String,
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
    let src = ctx.input("data")?.join(&p.file);
    let table = Table::read_parquet(&src)?;
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
        let mut counts = [0usize; 2];
        let mut other = 0usize;
        for r in &table.rows {
            match parse_cell(&r[i]).ok().flatten() {
                Some(0.0) => counts[0] += 1,
                Some(1.0) => counts[1] += 1,
                _ => other += 1,
            }
        }
        check(
            format!("label {} is 0 or 1", p.label),
            other == 0,
            format!("{other} other values"),
        );
        check(
            format!("label {} has both classes", p.label),
            counts[0] > 0 && counts[1] > 0,
            format!("{} negatives, {} positives", counts[0], counts[1]),
        );
        if rows > 0 {
            ctx.metric("positive_rate", counts[1] as f64 / rows as f64);
        }
    }

    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    let report = serde_json::json!({
        "file": p.file,
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
    std::fs::copy(&src, ctx.output("data")?.join(&p.file))
        .with_context(|| "copying the validated table")?;
    ctx.info(format!("{} checks passed on {rows} rows", checks.len()));
    Ok(())
}

weir_sdk::step!(run);
