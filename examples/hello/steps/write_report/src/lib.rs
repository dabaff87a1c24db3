//! Turns `stats.json` into a Markdown report.

use std::fmt::Write as _;
use weir_sdk::serde_json::Value;
use weir_sdk::{Context, Result, ResultExt};

#[derive(serde::Deserialize)]
struct Params {
    title: String,
}

fn num(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{x:.3}"))
        .unwrap_or_else(|| "".into())
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let path = ctx.input("stats")?.join("stats.json");
    let stats: Value = weir_sdk::serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let mut md = String::new();
    writeln!(md, "# {}\n", ctx.params().title)?;
    writeln!(md, "{} rows.\n", stats["rows"])?;
    writeln!(
        md,
        "| column | kind | count | missing | mean | std | min | max | distinct |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for c in stats["columns"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c["name"].as_str().unwrap_or("?"),
            c["kind"].as_str().unwrap_or("?"),
            c["count"],
            c["missing"],
            num(&c["mean"]),
            num(&c["std"]),
            num(&c["min"]),
            num(&c["max"]),
            c.get("distinct").map(|d| d.to_string()).unwrap_or_default(),
        )?;
    }
    std::fs::write(ctx.output("report")?.join("report.md"), md)?;
    ctx.info("report written");
    Ok(())
}

weir_sdk::step!(run);
