//! Writes `report.md` from a folder of per-part summaries (the collected
//! output of the summarize map), or a short notice when given no summaries.

use std::fmt::Write as _;
use weir_sdk::serde_json::Value;
use weir_sdk::{Context, Result};

#[derive(serde::Deserialize)]
struct Params {
    title: String,
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let mut md = format!("# {}\n\n", ctx.params().title);
    if let Ok(dir) = ctx.input("summaries") {
        let mut parts: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
        parts.sort_by_key(|e| e.file_name());
        writeln!(md, "| part | rows | means |\n|---|---|---|")?;
        for p in parts {
            let s: Value = weir_sdk::serde_json::from_str(&std::fs::read_to_string(
                p.path().join("summary.json"),
            )?)?;
            let means: Vec<String> = s["means"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={:.2}", v.as_f64().unwrap_or(f64::NAN)))
                .collect();
            writeln!(
                md,
                "| {} | {} | {} |",
                s["part"].as_str().unwrap_or("?"),
                s["rows"],
                means.join(", ")
            )?;
        }
    }
    std::fs::write(ctx.output("report")?.join("report.md"), md)?;
    Ok(())
}

weir_sdk::step!(run);
