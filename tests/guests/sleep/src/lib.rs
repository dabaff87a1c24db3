//! Blocks in a host call (a one-hour sleep): must be stopped by the timeout
//! even though no wasm code runs meanwhile.
fn run(_ctx: &mut weir_sdk::Context<weir_sdk::serde_json::Value>) -> weir_sdk::Result<()> {
    std::thread::sleep(std::time::Duration::from_secs(3600));
    Ok(())
}
weir_sdk::step!(run);
