//! Misbehaves on purpose, as param `mode` says: `recurse` (unbounded
//! recursion), `flood` (megabytes of stdout full of terminal escapes),
//! `biglog` (one huge log line), `disk` (writes `mb` MiB to its output),
//! `inodes` (creates `files` files in its output), `disk_forever` and
//! `inodes_forever` (the same, until stopped), `bigrandom` (asks the host
//! for `mb` MiB of random bytes in one call).

use weir_sdk::serde_json::Value;
use weir_sdk::{Context, Result};

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(n % 256) as usize] = n as u8;
    let mut next = *pad;
    std::hint::black_box(&mut next);
    recurse(n + 1, &mut next) + u64::from(pad[0])
}

fn run(ctx: &mut Context<Value>) -> Result<()> {
    let p = ctx.params().clone();
    let num = |k: &str, d: u64| p.get(k).and_then(Value::as_u64).unwrap_or(d);
    match p.get("mode").and_then(Value::as_str).unwrap_or("") {
        "recurse" => {
            let mut pad = [0u8; 256];
            std::hint::black_box(recurse(0, &mut pad));
        }
        "flood" => {
            let chunk = "\x1b[31mRED\x1b[0m \x1b]0;title\x07 \x1b[2J".repeat(1000);
            for _ in 0..200 {
                println!("{chunk}");
            }
        }
        "biglog" => ctx.info("x".repeat(2 << 20)),
        "bigrandom" => {
            let bytes = wasip2::random::random::get_random_bytes(num("mb", 64) << 20);
            ctx.metric("random_bytes", bytes.len() as f64);
        }
        "disk" => {
            let block = vec![7u8; 1 << 20];
            let out = ctx.output("out")?;
            let mut f = std::fs::File::create(out.join("big.bin"))?;
            for _ in 0..num("mb", 8) {
                std::io::Write::write_all(&mut f, &block)?;
            }
        }
        "inodes" => {
            let out = ctx.output("out")?;
            for i in 0..num("files", 3000) {
                std::fs::write(out.join(format!("f{i}")), b"x")?;
            }
        }
        "disk_forever" => {
            let block = vec![7u8; 1 << 20];
            let out = ctx.output("out")?;
            let mut f = std::fs::File::create(out.join("big.bin"))?;
            loop {
                std::io::Write::write_all(&mut f, &block)?;
            }
        }
        "inodes_forever" => {
            let out = ctx.output("out")?;
            for i in 0u64.. {
                std::fs::write(out.join(format!("f{i}")), b"x")?;
            }
        }
        other => weir_sdk::bail!("unknown mode {other:?}"),
    }
    Ok(())
}

weir_sdk::step!(run);
