//! Fails until attempt `succeed_on` (param; default 2), then writes `ok.txt`.
use weir_sdk::serde_json::Value;

fn run(ctx: &mut weir_sdk::Context<Value>) -> weir_sdk::Result<()> {
    let succeed_on = ctx
        .params()
        .get("succeed_on")
        .and_then(Value::as_u64)
        .unwrap_or(2) as u32;
    if ctx.attempt() < succeed_on {
        weir_sdk::bail!("flaky failure on attempt {}", ctx.attempt());
    }
    std::fs::write(ctx.output("out")?.join("ok.txt"), "ok")?;
    Ok(())
}
weir_sdk::step!(run);
