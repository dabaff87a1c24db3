//! Reads the raw CSV input, drops blank rows, checks every row has one cell
//! per column, and writes the cleaned table.

use weir_sdk::dataset::Table;
use weir_sdk::{Context, Result, bail};

#[derive(serde::Deserialize)]
struct Params {
    /// Fail if fewer rows than this remain.
    #[serde(default)]
    min_rows: usize,
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let path = ctx.input_file("raw")?;
    let mut table = Table::read_csv(&path)?;
    let before = table.rows.len();
    table.rows.retain(|r| r.iter().any(|c| !c.is_empty()));
    if table.rows.len() < ctx.params().min_rows {
        bail!(
            "{} has {} data rows, fewer than min_rows = {}",
            path.display(),
            table.rows.len(),
            ctx.params().min_rows
        );
    }
    ctx.info(format!(
        "read {} rows x {} columns from {}",
        before,
        table.columns.len(),
        path.display()
    ));
    ctx.metric("rows", table.rows.len() as f64);
    ctx.metric("columns", table.columns.len() as f64);
    ctx.metric("blank_rows_dropped", (before - table.rows.len()) as f64);
    table.write_csv(ctx.output("table")?.join("table.csv"))
}

weir_sdk::step!(run);
