//! Uses a host-defined capability: looks up each key in param `keys`
//! through the host's `acme:kv/lookup` interface and writes `key=value`
//! lines (`-` when missing) to output `out`.

mod kv {
    wit_bindgen::generate!({ path: "wit", world: "kv-client" });
}

use weir_sdk::{Context, Result};

#[derive(serde::Deserialize)]
struct Params {
    keys: Vec<String>,
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let mut text = String::new();
    for k in &ctx.params().keys {
        let v = kv::acme::kv::lookup::get(k).unwrap_or_else(|| "-".into());
        text.push_str(&format!("{k}={v}\n"));
    }
    std::fs::write(ctx.output("out")?.join("values.txt"), text)?;
    Ok(())
}

weir_sdk::step!(run);
