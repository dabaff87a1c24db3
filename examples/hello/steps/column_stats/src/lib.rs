//! Per-column statistics of a table: count, missing, and for numeric columns
//! mean, standard deviation, min and max; for text columns the number of
//! distinct values. Writes `stats.json`.

use std::collections::BTreeSet;
use weir_sdk::dataset::{Table, parse_cell};
use weir_sdk::serde_json::{Value, json};
use weir_sdk::{Context, Result};

fn run(ctx: &mut Context<Value>) -> Result<()> {
    let table = Table::read_csv(ctx.input_file("table")?)?;
    let mut columns = Vec::new();
    for (i, name) in table.columns.iter().enumerate() {
        let cells: Vec<&str> = table.rows.iter().map(|r| r[i].as_str()).collect();
        let parsed: Vec<Option<Option<f64>>> = cells.iter().map(|c| parse_cell(c).ok()).collect();
        let missing = parsed.iter().filter(|p| matches!(p, Some(None))).count();
        let numeric = parsed.iter().all(Option::is_some);
        let mut col = json!({ "name": name, "count": cells.len() - missing, "missing": missing });
        if numeric {
            let xs: Vec<f64> = parsed.into_iter().flatten().flatten().collect();
            let n = xs.len() as f64;
            if !xs.is_empty() {
                let mean = xs.iter().sum::<f64>() / n;
                let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
                let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
                let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                col["kind"] = json!("numeric");
                col["mean"] = json!(mean);
                col["std"] = json!(var.sqrt());
                col["min"] = json!(min);
                col["max"] = json!(max);
                ctx.metric(&format!("{name}.mean"), mean);
            }
        } else {
            let distinct: BTreeSet<&str> =
                cells.iter().copied().filter(|c| !c.is_empty()).collect();
            col["kind"] = json!("text");
            col["distinct"] = json!(distinct.len());
        }
        columns.push(col);
    }
    ctx.metric("columns", columns.len() as f64);
    let stats = json!({ "rows": table.rows.len(), "columns": columns });
    std::fs::write(
        ctx.output("stats")?.join("stats.json"),
        weir_sdk::serde_json::to_string_pretty(&stats)?,
    )?;
    Ok(())
}

weir_sdk::step!(run);
