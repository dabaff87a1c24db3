//! Summarises one part (the map's `item`): row count and the mean of each
//! numeric column, written to `summary.json`.

use weir_sdk::dataset::Table;
use weir_sdk::serde_json::{Map, Value, json};
use weir_sdk::{Context, Result};

fn run(ctx: &mut Context<Value>) -> Result<()> {
    let path = ctx.input_file("item")?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let table = Table::read_csv(&path)?;
    let mut means = Map::new();
    for c in &table.columns {
        if let Ok(values) = table.numeric_column(c) {
            let xs: Vec<f64> = values.into_iter().flatten().collect();
            if !xs.is_empty() {
                means.insert(c.clone(), json!(xs.iter().sum::<f64>() / xs.len() as f64));
            }
        }
    }
    ctx.metric("rows", table.rows.len() as f64);
    let summary = json!({ "part": name, "rows": table.rows.len(), "means": means });
    std::fs::write(
        ctx.output("summary")?.join("summary.json"),
        weir_sdk::serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(())
}

weir_sdk::step!(run);
