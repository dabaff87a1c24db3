//! Sleeps in a host call, then writes its params to `out`. Param `ms`
//! (default: one hour, so that only a timeout or cancellation ends it);
//! with `ticks: N`, it sleeps in N parts and logs `tick I` after each (a
//! step whose logs arrive while it runs).
use weir_sdk::serde_json::Value;

fn run(ctx: &mut weir_sdk::Context<Value>) -> weir_sdk::Result<()> {
    let ms = ctx
        .params()
        .get("ms")
        .and_then(Value::as_u64)
        .unwrap_or(3_600_000);
    let ticks = ctx
        .params()
        .get("ticks")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if ticks == 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    } else {
        for i in 0..ticks {
            std::thread::sleep(std::time::Duration::from_millis(ms / ticks));
            ctx.info(format!("tick {i}"));
        }
    }
    if let Ok(out) = ctx.output("out") {
        std::fs::write(out.join("params.json"), ctx.params().to_string())?;
    }
    Ok(())
}
weir_sdk::step!(run);
