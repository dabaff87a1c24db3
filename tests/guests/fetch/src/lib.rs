//! A plugin that tries to phone home over `wasi:http/outgoing-handler`:
//! it imports WASI's HTTP interfaces, which weir never links, so the
//! component is refused before it runs (tests/hostile.rs).
use wasip2::http::{outgoing_handler, types};

fn run(ctx: &mut weir_sdk::Context<weir_sdk::serde_json::Value>) -> weir_sdk::Result<()> {
    let req = types::OutgoingRequest::new(types::Fields::new());
    let _ = req.set_authority(Some("example.com"));
    let sent = outgoing_handler::handle(req, None).is_ok();
    ctx.metric("sent", if sent { 1.0 } else { 0.0 });
    Ok(())
}

weir_sdk::step!(run);
