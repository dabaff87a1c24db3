//! Does nothing: the floor of per-step overhead.
fn run(_ctx: &mut weir_sdk::Context<weir_sdk::serde_json::Value>) -> weir_sdk::Result<()> {
    Ok(())
}
weir_sdk::step!(run);
