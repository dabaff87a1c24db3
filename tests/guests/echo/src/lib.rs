//! Writes what it was given and what the sandbox shows it, so tests can check
//! determinism and caching: params, input files, random bytes, clocks.
//! Params: `fail` (return that error), `panic` (panic), `random` (write
//! 32 random bytes), `files` (an object: file name, with folders, to text,
//! written to the output), `metrics` (an object: name to number, recorded and written to
//! `metrics.json`), `bare` (write only `files`), `nan` (write the bits of a
//! NaN with a payload times one to `nan.txt`), `note` (any value).

use std::fmt::Write as _;
use weir_sdk::serde_json::Value;
use weir_sdk::{Context, Result, bail};

/// Writes `text` to `name` under `out`, making its folders (`a/b.csv`).
fn write_file(out: &std::path::Path, name: &str, text: &Value) -> Result<()> {
    let path = out.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text.as_str().unwrap_or_default())?;
    Ok(())
}

fn list(dir: &std::path::Path, prefix: &str, out: &mut String) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type()?.is_dir() {
            list(&e.path(), &format!("{name}/"), out)?;
        } else {
            writeln!(
                out,
                "{name}: {}",
                std::fs::read_to_string(e.path()).unwrap_or_default().trim()
            )?;
        }
    }
    Ok(())
}

fn run(ctx: &mut Context<Value>) -> Result<()> {
    let p = ctx.params().clone();
    if let Some(msg) = p.get("fail").and_then(Value::as_str) {
        bail!("asked to fail: {msg}");
    }
    if p.get("panic").and_then(Value::as_bool) == Some(true) {
        panic!("asked to panic");
    }
    let out = ctx.output("out")?.to_path_buf();
    if p.get("bare").and_then(Value::as_bool) == Some(true) {
        // Only the requested files: a clean folder to map over.
        for (name, text) in p
            .get("files")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            write_file(&out, name, text)?;
        }
        return Ok(());
    }
    std::fs::write(
        out.join("params.json"),
        weir_sdk::serde_json::to_string(&p)?,
    )?;
    let mut inputs = String::new();
    for name in ctx.input_names() {
        list(ctx.input(name)?, &format!("{name}/"), &mut inputs)?;
    }
    if let Some(files) = p.get("files").and_then(Value::as_object) {
        for (name, text) in files {
            write_file(&out, name, text)?;
        }
    }
    if let Some(metrics) = p.get("metrics").and_then(Value::as_object) {
        for (name, v) in metrics {
            ctx.metric(name, v.as_f64().unwrap_or(f64::NAN));
        }
        std::fs::write(
            out.join("metrics.json"),
            weir_sdk::serde_json::to_string(metrics)?,
        )?;
    }
    std::fs::write(out.join("inputs.txt"), inputs)?;
    if p.get("nan").and_then(Value::as_bool) == Some(true) {
        // A NaN with a payload through an arithmetic instruction: hardware
        // keeps the payload (x86) or not (Arm); a canonicalising engine
        // always gives the canonical NaN.
        let x = std::hint::black_box(f32::from_bits(0x7fc0_0001));
        let y = std::hint::black_box(x * std::hint::black_box(1.0f32));
        std::fs::write(out.join("nan.txt"), format!("{:08x}", y.to_bits()))?;
    }
    if p.get("random").and_then(Value::as_bool) == Some(true) {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| weir_sdk::anyhow!("random: {e}"))?;
        std::fs::write(out.join("random.bin"), random)?;
    }
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let t0 = std::time::Instant::now();
    let mono = t0.elapsed().as_nanos();
    std::fs::create_dir_all(out.join("sub"))?;
    std::fs::write(
        out.join("sub/clock.txt"),
        format!("wall={wall} mono_elapsed={mono}"),
    )?;
    println!(
        "echo wrote {} bytes of inputs listing",
        std::fs::metadata(out.join("inputs.txt"))?.len()
    );
    ctx.info("echo done");
    ctx.metric(
        "input_count",
        ctx.params().as_object().map(|m| m.len()).unwrap_or(0) as f64,
    );
    Ok(())
}

weir_sdk::step!(run);
