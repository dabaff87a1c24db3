//! Uses a host-defined capability: looks up each key in param `keys`
//! through the host's `acme:kv/lookup` interface and writes `key=value`
//! lines (`-` when missing; keys cut to 20 characters) to output `out`.
//! With `big_mb`, it also looks up one key of that many MiB.

mod kv {
    wit_bindgen::generate!({ path: "wit", world: "kv-client" });
}

use weir_sdk::{Context, Result};

#[derive(serde::Deserialize)]
struct Params {
    keys: Vec<String>,
    /// Also look up one key of this many MiB (a hostile case).
    #[serde(default)]
    big_mb: usize,
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let mut text = String::new();
    let mut keys = ctx.params().keys.clone();
    if ctx.params().big_mb > 0 {
        keys.push("k".repeat(ctx.params().big_mb << 20));
    }
    for k in &keys {
        let v = kv::acme::kv::lookup::get(k).unwrap_or_else(|| "-".into());
        let shown: String = k.chars().take(20).collect();
        text.push_str(&format!("{shown}={v}\n"));
    }
    std::fs::write(ctx.output("out")?.join("values.txt"), text)?;
    Ok(())
}

weir_sdk::step!(run);
