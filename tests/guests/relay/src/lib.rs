//! A real step at its smallest: reads one small input file and writes one
//! small output file. Reads `value.txt` from the input `in` when the step has
//! one (a number; 0 without), adds the param `add` (default 1) and writes
//! the sum to `value.txt` in the output `out`. The benchmark harness chains
//! and fans these out to measure per-step overhead of real steps.

use weir_sdk::serde_json::Value;
use weir_sdk::{Context, Result, anyhow};

fn run(ctx: &mut Context<Value>) -> Result<()> {
    let add = ctx.params().get("add").and_then(Value::as_i64).unwrap_or(1);
    let before = if ctx.input_names().any(|n| n == "in") {
        let text = std::fs::read_to_string(ctx.input("in")?.join("value.txt"))?;
        text.trim()
            .parse::<i64>()
            .map_err(|e| anyhow!("in/value.txt: expected a number, found {text:?}: {e}"))?
    } else {
        0
    };
    let out = ctx.output("out")?;
    std::fs::write(out.join("value.txt"), (before + add).to_string())?;
    Ok(())
}

weir_sdk::step!(run);
