//! Splits a table into one CSV per value of a column: `<value>.csv` files in
//! the output folder, which a map step then fans out over.

use std::collections::BTreeMap;
use weir_sdk::dataset::Table;
use weir_sdk::{Context, Result, bail};

#[derive(serde::Deserialize)]
struct Params {
    column: String,
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let table = Table::read_csv(ctx.input_file("table")?)?;
    let col = table.column_index(&ctx.params().column)?;
    let mut parts: BTreeMap<String, Table> = BTreeMap::new();
    for row in &table.rows {
        let key = row[col].clone();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!(
                "value {key:?} of column '{}' cannot name a file",
                ctx.params().column
            );
        }
        parts
            .entry(key)
            .or_insert_with(|| Table {
                columns: table.columns.clone(),
                rows: Vec::new(),
            })
            .rows
            .push(row.clone());
    }
    let out = ctx.output("parts")?;
    for (key, part) in &parts {
        part.write_csv(out.join(format!("{key}.csv")))?;
    }
    ctx.metric("parts", parts.len() as f64);
    Ok(())
}

weir_sdk::step!(run);
