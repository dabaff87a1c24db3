//! Spins in pure computation. Without params it spins forever and must be
//! stopped by the step's timeout or a cancel; with `{"iterations": n}` it
//! spins n rounds and succeeds: a step with real CPU work and nothing else
//! (the benchmark's busy fan-out).
fn run(ctx: &mut weir_sdk::Context<weir_sdk::serde_json::Value>) -> weir_sdk::Result<()> {
    let rounds = ctx
        .params()
        .get("iterations")
        .and_then(weir_sdk::serde_json::Value::as_u64)
        .unwrap_or(u64::MAX);
    let mut x: u64 = 1;
    for _ in 0..rounds {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    Ok(())
}
weir_sdk::step!(run);
