//! Allocates `bytes` (default 1 GiB) and touches every page: at once, or,
//! with `chunk_mb`, in chunks of that many MiB, each touched and kept, so
//! the guest's memory really grows until the limit refuses it.
fn run(ctx: &mut weir_sdk::Context<weir_sdk::serde_json::Value>) -> weir_sdk::Result<()> {
    let n = ctx
        .params()
        .get("bytes")
        .and_then(|v| v.as_u64())
        .unwrap_or(1 << 30) as usize;
    if let Some(mb) = ctx.params().get("chunk_mb").and_then(|v| v.as_u64()) {
        let chunk = (mb as usize).max(1) << 20;
        let mut kept: Vec<Vec<u8>> = Vec::new();
        let mut total = 0;
        while total < n {
            let mut v = vec![0u8; chunk];
            for i in (0..chunk).step_by(4096) {
                v[i] = i as u8 | 1;
            }
            total += chunk;
            kept.push(v);
        }
        ctx.metric("bytes", total as f64);
        std::hint::black_box(&kept);
        return Ok(());
    }
    let mut v: Vec<u8> = Vec::with_capacity(n);
    for i in (0..n).step_by(4096) {
        v.push(i as u8);
    }
    ctx.metric("pages", v.len() as f64);
    std::hint::black_box(&v);
    Ok(())
}
weir_sdk::step!(run);
