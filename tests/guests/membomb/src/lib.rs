//! Allocates `bytes` (default 1 GiB) and touches every page.
fn run(ctx: &mut weir_sdk::Context<weir_sdk::serde_json::Value>) -> weir_sdk::Result<()> {
    let n = ctx
        .params()
        .get("bytes")
        .and_then(|v| v.as_u64())
        .unwrap_or(1 << 30) as usize;
    let mut v: Vec<u8> = Vec::with_capacity(n);
    for i in (0..n).step_by(4096) {
        v.push(i as u8);
    }
    ctx.metric("pages", v.len() as f64);
    std::hint::black_box(&v);
    Ok(())
}
weir_sdk::step!(run);
