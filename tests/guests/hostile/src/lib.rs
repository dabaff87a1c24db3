//! Misbehaves on purpose, as param `mode` says: `recurse` (unbounded
//! recursion), `flood` (megabytes of stdout full of terminal escapes),
//! `biglog` (one huge log line), `logbomb` and `metricbomb` (a string of
//! `mb` MiB passed to `log.write` or as a metric name `times` times),
//! `logflood` (`lines` log lines of `kb` KiB), `fd_hog` (opens files
//! until an open fails), `evil_text` (terminal
//! escapes in a file name, a log line, a metric name and, with `fail`, its
//! error), `bystander` (writes `files`
//! small files and `done.txt`), `disk` (writes `mb` MiB to its output),
//! `inodes` (creates `files` files in its output), `disk_forever` and
//! `inodes_forever` (the same, until stopped), `bigrandom` (asks the host
//! for `mb` MiB of random bytes in one call), `pristine` (checks that its
//! initialised and zeroed statics and `pages` freshly grown pages hold what a
//! new instance must see, reports the bytes that did not as metric
//! `dirty_bytes`, then overwrites them all for the next instance to find).

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

/// A data segment: every fresh instance starts with these bytes.
static mut DATA: [u8; 8192] = [0x5a; 8192];
/// Zeroed data: every fresh instance starts with zeros here.
static mut BSS: [u8; 65536] = [0; 65536];

/// Bytes that differ from a fresh instance's, then marks them all.
fn pristine(pages: usize) -> Result<u64> {
    let mut dirty = 0u64;
    // SAFETY: the step runs on one thread and nothing else touches these.
    let (data, bss) = unsafe {
        (
            std::slice::from_raw_parts_mut((&raw mut DATA).cast::<u8>(), 8192),
            std::slice::from_raw_parts_mut((&raw mut BSS).cast::<u8>(), 65536),
        )
    };
    dirty += std::hint::black_box(&*data)
        .iter()
        .filter(|&&b| b != 0x5a)
        .count() as u64;
    dirty += std::hint::black_box(&*bss)
        .iter()
        .filter(|&&b| b != 0)
        .count() as u64;
    data.fill(0xa5);
    bss.fill(0xa5);
    #[cfg(target_arch = "wasm32")]
    {
        let before = core::arch::wasm32::memory_grow(0, pages);
        if before == usize::MAX {
            weir_sdk::bail!("memory.grow by {pages} pages failed");
        }
        // SAFETY: these pages were just added to linear memory and the
        // allocator does not know them; nothing else refers to them.
        let grown =
            unsafe { std::slice::from_raw_parts_mut((before * 65536) as *mut u8, pages * 65536) };
        dirty += std::hint::black_box(&*grown)
            .iter()
            .filter(|&&b| b != 0)
            .count() as u64;
        grown.fill(0xa5);
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = pages;
    Ok(dirty)
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
        "logbomb" | "metricbomb" => {
            // One string of `mb` MiB, handed to the host `times` times.
            let big = "x".repeat((num("mb", 64) as usize) << 20);
            for i in 0..num("times", 30) {
                if p["mode"] == "logbomb" {
                    ctx.info(big.as_str());
                } else {
                    ctx.metric(&big, i as f64);
                }
            }
        }
        "fd_hog" => {
            // Opens files and keeps them open, until an open fails (or the
            // host stops the step first).
            let out = ctx.output("out")?;
            std::fs::write(out.join("f"), b"x")?;
            let mut held = Vec::new();
            loop {
                match std::fs::File::open(out.join("f")) {
                    Ok(f) => held.push(f),
                    Err(e) => weir_sdk::bail!("open failed after {} files: {e}", held.len()),
                }
            }
        }
        "logflood" => {
            // `lines` log lines of `kb` KiB each.
            for i in 0..num("lines", 3000) {
                ctx.info(format!(
                    "{i:06} {}",
                    "y".repeat((num("kb", 60) as usize) << 10)
                ));
            }
        }
        "evil_text" => {
            // Terminal escapes (retitle, clear screen, bell) and a line
            // break in everything the host may print: a file name, a log
            // line, a metric name, and (with `fail`) the step's error.
            let evil = "\x1b]0;pwned\x07\x1b[2J\r\nforged line\u{202e}";
            ctx.info(format!("log {evil}"));
            ctx.metric(&format!("metric {evil}"), 1.0);
            if p.get("fail").is_some() {
                weir_sdk::bail!("error {evil}");
            }
            std::fs::write(ctx.output("out")?.join(format!("name {evil}")), b"x")?;
        }
        "bystander" => {
            // Writes `files` small files and one summary; all must be stored.
            let out = ctx.output("out")?;
            for i in 0..num("files", 20) {
                std::fs::write(out.join(format!("f{i}")), format!("{i}\n"))?;
            }
            std::fs::write(out.join("done.txt"), b"ok")?;
        }
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
        "pristine" => {
            let dirty = pristine(num("pages", 64) as usize)?;
            ctx.metric("dirty_bytes", dirty as f64);
            // The probe's own check: a second look in this instance sees
            // its marks (grown pages are new again, statics are not).
            let again = pristine(num("pages", 64) as usize)?;
            ctx.metric("dirty_bytes_again", again as f64);
        }
        other => weir_sdk::bail!("unknown mode {other:?}"),
    }
    Ok(())
}

weir_sdk::step!(run);
