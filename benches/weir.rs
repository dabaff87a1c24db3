//! weir's benchmark harness: `cargo bench --bench weir [-- FILTER]`.
//!
//! Prints one table: for each case the median and the spread (min..max) of
//! several repetitions, on fresh stores in a temporary folder. An argument
//! selects the groups whose key contains it (`real`, `rss`, `compile`, `chain 1000`,
//! `fanout 10`, `busy`, `plan 100`, `startup`, `ingest`, `standardize`,
//! `hello`, `serve`, `cluster`; `chain` or `fanout` for a whole shape). The groups: real
//! steps through the CLI (`real`: chains and fan-outs of steps that each read
//! and write a small file; per-step cost, disk and records per tiny step), the
//! real CLI on generated chains and fan-outs (`rss`: wall time and peak RSS),
//! component compile (cold vs the on-disk cache), no-op step chains and
//! fan-outs (first run and fully cached re-run; per-step overhead; cores
//! busy), a chain and a fan-out of busy steps (`busy`: ~0.8 ms of guest CPU
//! each; cores busy and the fan-out's speed-up), plan building, `weir`
//! start-up, artifact ingest, the standardise feature code natively and as a
//! wasm step, the hello example, the HTTP server, and no-op units through the
//! cluster's queue (`cluster`: PostgreSQL at `$WEIR_BENCH_POSTGRES`, 1, 2 and 4
//! `weir worker` processes). BENCHMARKS.md says what
//! each measures. The machine is shared and noisy: compare medians, and
//! re-run before trusting a difference under ~10%.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_runtime::executor::{EngineConfig, Executor};
use weir_runtime::plan::{ComponentSource, InputSource, Plan, StepPlan};
use weir_runtime::{Config, RunEvent, RunOptions, Runtime, StepState};

/// The same feature code the `standardize` wasm step runs, compiled natively.
#[path = "../tests/guests/standardize/src/core.rs"]
mod standardize_core;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Row {
    case: String,
    unit: &'static str,
    samples: Vec<f64>,
    note: String,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn print(rows: &[Row]) {
    println!("\n| case | median | min .. max | runs | note |");
    println!("|---|---|---|---|---|");
    for r in rows {
        let min = r.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "| {} | {:.3} {u} | {:.3} .. {:.3} {u} | {} | {} |",
            r.case,
            median(&r.samples),
            min,
            max,
            r.samples.len(),
            r.note,
            u = r.unit
        );
    }
}

/// CPU time (user + system) this process has used, all threads.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio")
}

/// What a run's events show the harness, recorded as they come.
#[derive(Default)]
struct Seen {
    /// When each step finished, in order: in a chain, the gap between two
    /// finishes is one step's whole cost on the critical path.
    finishes: Vec<Instant>,
    /// Each finished step's own duration, in the same order.
    durations: Vec<Duration>,
    /// Time and the process's CPU time at the first finish and at the n-th
    /// (in a fan-out: the root's and the last fanned-out step's).
    marks: Vec<(Instant, Duration)>,
}

impl Seen {
    /// Run options whose events fill the returned `Seen`; `n` is the finish
    /// marked besides the first.
    fn watch(n: usize) -> (Arc<Mutex<Seen>>, RunOptions) {
        let seen = Arc::new(Mutex::new(Seen {
            finishes: Vec::with_capacity(n + 1),
            durations: Vec::with_capacity(n + 1),
            marks: Vec::new(),
        }));
        let sink = seen.clone();
        let opts = RunOptions {
            on_event: Some(Arc::new(move |e: &RunEvent| {
                if let RunEvent::StepFinished { duration, .. } = e {
                    let mut s = sink.lock().expect("seen");
                    s.finishes.push(Instant::now());
                    s.durations.push(*duration);
                    if s.finishes.len() == 1 || s.finishes.len() == n {
                        s.marks.push((Instant::now(), cpu_time()));
                    }
                }
            })),
            ..RunOptions::default()
        };
        (seen, opts)
    }

    /// CPU time over wall time between the two marks: how busy the cores were.
    fn cores_busy(&self) -> Option<f64> {
        let [(t0, c0), (t1, c1)] = self.marks[..] else {
            return None;
        };
        Some((c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64())
    }
}

/// Rounds of the spin guest's loop in each busy step: ~0.8 ms on this machine.
const BUSY_ROUNDS: u64 = 1_000_000;

fn noop_plan(base: &Path, wasm: &Path, n: usize, shape: &str) -> Plan {
    let mut p = Plan::new("bench", base);
    for i in 0..n {
        let mut s = StepPlan::new(format!("s{i}"), ComponentSource::Wasm(wasm.to_path_buf()));
        s.params = serde_json::json!({ "i": i });
        s.outputs.insert("out".into());
        let up = match shape {
            "chain" if i > 0 => Some(format!("s{}", i - 1)),
            "fanout" if i > 0 => Some("s0".to_string()),
            _ => None,
        };
        if let Some(up) = up {
            s.inputs.insert(
                "in".into(),
                InputSource::Step {
                    step: up,
                    output: "out".into(),
                },
            );
        }
        p.steps.push(s);
    }
    if shape == "fanout" && n > 1 {
        // The collect: one step reading every fanned-out step's output.
        let mut c = StepPlan::new("collect", ComponentSource::Wasm(wasm.to_path_buf()));
        c.outputs.insert("out".into());
        for i in 1..n {
            c.inputs.insert(
                format!("in{i}"),
                InputSource::Step {
                    step: format!("s{i}"),
                    output: "out".into(),
                },
            );
        }
        p.steps.push(c);
    }
    p
}

/// A generated script for the CLI cases: `n` steps of component `wasm` as
/// a chain, or as a root, `n - 1` steps reading it and a collect step
/// reading them all; step `i` gets params `#{ <param>: i }` (distinct cache
/// keys; the `relay` fixture adds `add`). One line per step, as a generator
/// of pipelines would write it.
fn generated_script(wasm: &Path, n: usize, chain: bool, param: &str) -> String {
    let wasm = wasm.display().to_string();
    let mut s = format!(
        "let p = pipeline(\"generated\");\nlet root = p.step(\"s0\", {wasm:?}).output(\"out\");\nlet prev = root;\n"
    );
    if !chain {
        s.push_str(&format!(
            "let collect = p.step(\"collect\", {wasm:?}).output(\"out\");\n"
        ));
    }
    for i in 1..n {
        let from = if chain { "prev" } else { "root" };
        s.push_str(&format!(
            "prev = p.step(\"s{i}\", {wasm:?}).input(\"in\", {from}.out(\"out\")).output(\"out\").params(#{{ {param}: {i} }});\n"
        ));
        if !chain {
            s.push_str(&format!("collect.input(\"in{i}\", prev.out(\"out\"));\n"));
        }
    }
    s
}

/// Bytes and inodes under `dir`, not following links (hard links counted once).
fn disk_use(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if seen.insert((m.dev(), m.ino())) {
                inodes += 1;
                bytes += m.blocks() * 512;
            }
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// The records database's size once its log is folded in.
fn records_bytes(store: &Path) -> u64 {
    let db = store.join("weir.db");
    if let Ok(c) = rusqlite::Connection::open(&db) {
        let _ = c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    }
    std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
}

/// The headline rows: real steps through the real CLI (`weir run --quiet`)
/// on fresh stores, the shapes interleaved in each of 5 rounds; per-step
/// cost as (T1000 - T100) / 900, so start-up and the plan's fixed costs
/// cancel; disk, inodes and records per tiny step.
fn real_steps(tmp: &Path) -> Vec<Row> {
    let weir = repo().join("target/release/weir");
    if !weir.is_file() {
        eprintln!("skipping real-step cases: build the CLI first (cargo build --release)");
        return Vec::new();
    }
    let relay = weir_runtime::builder::build_crate(&repo().join("tests/guests/relay"))
        .expect("build relay");
    let shapes = [(100, true), (1000, true), (100, false), (1000, false)];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); shapes.len()];
    let mut fan_store = None;
    for round in 0..5 {
        for (k, &(n, chain)) in shapes.iter().enumerate() {
            let dir = tmp.join(format!("real-{round}-{k}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let script = dir.join("p.rhai");
            std::fs::write(&script, generated_script(&relay, n, chain, "add")).expect("script");
            let t = Instant::now();
            let out = std::process::Command::new(&weir)
                .args(["run", "--quiet"])
                .arg(&script)
                .output()
                .expect("weir run");
            wall[k].push(ms(t.elapsed()));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            if n == 1000 && !chain {
                fan_store = Some((script, dir.join(".weir")));
            }
        }
    }
    let label = |&(n, chain): &(usize, bool)| {
        format!(
            "weir run, {n} real steps, {}",
            if chain { "chain" } else { "fan-out + collect" }
        )
    };
    let mut rows: Vec<Row> = shapes
        .iter()
        .zip(&wall)
        .map(|(shape, w)| Row {
            case: label(shape),
            unit: "ms",
            samples: w.clone(),
            note: "each step reads and writes one small file; fresh store; whole process".into(),
        })
        .collect();
    for (name, small, big) in [("chain", 0, 1), ("fan-out child", 2, 3)] {
        rows.push(Row {
            case: format!("weir run, per real step, {name}"),
            unit: "ms",
            samples: wall[big]
                .iter()
                .zip(&wall[small])
                .map(|(b, s)| (b - s) / 900.0)
                .collect(),
            note: "(T1000 - T100) / 900, per round".into(),
        });
    }
    if let Some((script, store)) = fan_store {
        let (bytes, inodes) = disk_use(&store);
        let before = records_bytes(&store);
        let again = std::process::Command::new(&weir)
            .args(["run", "--quiet"])
            .arg(&script)
            .output()
            .expect("weir run");
        assert!(again.status.success());
        let after = records_bytes(&store);
        rows.push(Row {
            case: "store per tiny step (fan-out of 1,000): disk".into(),
            unit: "KiB",
            samples: vec![bytes as f64 / 1024.0 / 1000.0],
            note: "allocated blocks of the whole store / 1,000 (views, pack, records)".into(),
        });
        rows.push(Row {
            case: "store per tiny step (fan-out of 1,000): inodes".into(),
            unit: "",
            samples: vec![inodes as f64 / 1000.0],
            note: "files and folders of the whole store / 1,000".into(),
        });
        let gc = std::process::Command::new(&weir)
            .args(["store", "gc", "--store"])
            .arg(&store)
            .output()
            .expect("weir store gc");
        assert!(
            gc.status.success(),
            "{}",
            String::from_utf8_lossy(&gc.stderr)
        );
        let (bytes, inodes) = disk_use(&store);
        rows.push(Row {
            case: "store per tiny step (fan-out of 1,000) after `weir store gc`: disk".into(),
            unit: "KiB",
            samples: vec![bytes as f64 / 1024.0 / 1000.0],
            note: "views of tiny artifacts dropped (laid out again when needed)".into(),
        });
        rows.push(Row {
            case: "store per tiny step (fan-out of 1,000) after `weir store gc`: inodes".into(),
            unit: "",
            samples: vec![inodes as f64 / 1000.0],
            note: "files and folders of the whole store / 1,000".into(),
        });
        rows.push(Row {
            case: "records added by a fully cached re-run, per step".into(),
            unit: "B",
            samples: vec![(after.saturating_sub(before)) as f64 / 1001.0],
            note: "weir.db after a checkpoint, before and after".into(),
        });
    }
    rows
}

fn main() {
    // Cases that time the real CLI need `cargo build --release` first.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let want = |c: &str| c.contains(&filter);
    let tmp = tempfile::tempdir().expect("tempdir");
    let noop =
        weir_runtime::builder::build_crate(&repo().join("tests/guests/noop")).expect("build noop");
    let mut rows = Vec::new();

    if want("real") {
        rows.extend(real_steps(tmp.path()));
    }

    if want("rss") {
        // The real CLI on generated pipelines: wall time and peak RSS of the
        // whole `weir run` process, to see memory grow with pipeline size.
        // Runs first, while this process is small: a child's peak RSS counts
        // the pages it shares with this process between fork and exec.
        let weir = repo().join("target/release/weir");
        if !weir.is_file() {
            eprintln!("skipping rss cases: build the CLI first (cargo build --release)");
        }
        let sizes = [10usize, 100, 1000, 10_000];
        let shapes = sizes
            .map(|n| (n, true))
            .into_iter()
            .chain(sizes.map(|n| (n, false)));
        for (n, chain) in shapes {
            if !weir.is_file() {
                break;
            }
            let shape = if chain { "chain" } else { "fan-out + collect" };
            let dir = tmp.path().join(format!(
                "rss-{n}-{}",
                if chain { "chain" } else { "fanout" }
            ));
            std::fs::create_dir_all(&dir).expect("dir");
            let path = dir.join("p.rhai");
            std::fs::write(&path, generated_script(&noop, n, chain, "i")).expect("script");
            for (label, runs) in [("first run", 1), ("cached re-run", 5)] {
                let mut wall = Vec::new();
                let mut rss = Vec::new();
                for _ in 0..runs {
                    let t = Instant::now();
                    // Reaped by wait4 below, which also reports its peak RSS.
                    #[allow(clippy::zombie_processes)]
                    let child = std::process::Command::new(&weir)
                        .arg("run")
                        .arg(&path)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .expect("spawn weir");
                    let mut status = 0;
                    // SAFETY: wait4 on our own child, with a zeroed rusage to fill.
                    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
                    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
                    wall.push(ms(t.elapsed()));
                    assert!(
                        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                        "weir run {} failed (wait status {status})",
                        path.display()
                    );
                    rss.push(usage.ru_maxrss as f64 / 1024.0);
                }
                rows.push(Row {
                    case: format!("weir run, {n}-step {shape}, {label}: wall"),
                    unit: "ms",
                    samples: wall,
                    note: "whole process: start, plan, run, records".into(),
                });
                rows.push(Row {
                    case: format!("weir run, {n}-step {shape}, {label}: peak RSS"),
                    unit: "MiB",
                    samples: rss,
                    note: "getrusage of the child".into(),
                });
            }
        }
    }

    if want("compile") {
        let cfg = EngineConfig {
            max_concurrent: 2,
            pooling: true,
            ..EngineConfig::default()
        };
        let hello =
            weir_runtime::builder::build_crate(&repo().join("examples/hello/steps/column_stats"))
                .expect("build");
        for (name, wasm) in [("noop", &noop), ("column_stats", &hello)] {
            let bytes = std::fs::metadata(wasm).map(|m| m.len()).unwrap_or(0);
            let (mut cold, mut cached) = (Vec::new(), Vec::new());
            for i in 0..5 {
                let dir = tmp.path().join(format!("compile-{name}-{i}"));
                let ex = Executor::new(&cfg, &dir).expect("executor");
                let t = Instant::now();
                ex.load(wasm, &|_, _| false).expect("load");
                cold.push(ms(t.elapsed()));
                drop(ex);
                let ex = Executor::new(&cfg, &dir).expect("executor");
                let t = Instant::now();
                ex.load(wasm, &|_, _| false).expect("load");
                cached.push(ms(t.elapsed()));
            }
            rows.push(Row {
                case: format!("compile {name} ({} KB), cold", bytes / 1024),
                unit: "ms",
                samples: cold,
                note: "Cranelift".into(),
            });
            rows.push(Row {
                case: format!("compile {name} ({} KB), from disk cache", bytes / 1024),
                unit: "ms",
                samples: cached,
                note: "new Executor, deserialise".into(),
            });
        }
    }

    for shape in ["chain", "fanout"] {
        for n in [10usize, 100, 1000, 10_000] {
            let case = format!("{shape} {n}");
            if !want(&case) && !want(shape) {
                continue;
            }
            let (mut first, mut per_step, mut cached) = (Vec::new(), Vec::new(), Vec::new());
            let mut gaps = Vec::new();
            let mut busy = Vec::new();
            let (mut head, mut tail) = (Vec::new(), Vec::new());
            let mut fan_busy = Vec::new();
            let reps = if n >= 1000 { 3 } else { 5 };
            for r in 0..reps {
                let dir = tmp.path().join(format!("{shape}-{n}-{r}"));
                let rt = Runtime::new(&Config::new(&dir)).expect("runtime");
                // Shared with the runs, as a host re-running a plan would.
                let plan = Arc::new(noop_plan(&dir, &noop, n, shape));
                let tokio = tokio();
                // Load (and compile) the component outside the timed region.
                rt.executor().load(&noop, &|_, _| false).expect("load");
                let (seen, opts) = Seen::watch(n);
                let (t, cpu) = (Instant::now(), cpu_time());
                let rep = tokio
                    .block_on(rt.run_shared(plan.clone(), opts))
                    .expect("run");
                let d = t.elapsed();
                busy.push((cpu_time() - cpu).as_secs_f64() / d.as_secs_f64());
                let seen = seen.lock().expect("seen");
                // The run's fixed costs: before its first step finished
                // (checks, plan record, scheduler set-up, the first step
                // itself) and after its last (final commit, report).
                if let (Some(first), Some(last)) = (seen.finishes.first(), seen.finishes.last()) {
                    head.push(ms(*first - t));
                    tail.push(ms(d.saturating_sub(*last - t)));
                }
                if shape == "fanout"
                    && let Some(b) = seen.cores_busy()
                {
                    fan_busy.push(b);
                }
                if shape == "chain" {
                    let mut g: Vec<f64> = seen
                        .finishes
                        .windows(2)
                        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e6)
                        .collect();
                    g.sort_by(f64::total_cmp);
                    gaps.push(g[g.len() / 2]);
                }
                assert!(rep.steps.iter().all(|s| s.state == StepState::Succeeded));
                first.push(ms(d));
                per_step.push(d.as_secs_f64() * 1e6 / n as f64);
                let t = Instant::now();
                let rep = tokio
                    .block_on(rt.run_shared(plan.clone(), RunOptions::default()))
                    .expect("run");
                cached.push(ms(t.elapsed()));
                assert!(rep.steps.iter().all(|s| s.state == StepState::Cached));
            }
            rows.push(Row {
                case: format!("{case} no-op steps, first run"),
                unit: "ms",
                samples: first,
                note: "instantiate + call + hash/commit outputs + record".into(),
            });
            rows.push(Row {
                case: format!("{case} no-op steps, per step"),
                unit: "us",
                samples: per_step,
                note: "first run / N".into(),
            });
            rows.push(Row {
                case: format!("{case} no-op steps, first run, cores busy"),
                unit: "x",
                samples: busy,
                note: "CPU time of all threads / wall time (2 = both cores)".into(),
            });
            if !fan_busy.is_empty() {
                rows.push(Row {
                    case: format!("{case} no-op steps, fan-out phase, cores busy"),
                    unit: "x",
                    samples: fan_busy,
                    note: "CPU time / wall from the root's finish to the last fanned-out step's"
                        .into(),
                });
            }
            rows.push(Row {
                case: format!("{case} no-op steps, first step done"),
                unit: "ms",
                samples: head,
                note: "from run() to the first StepFinished".into(),
            });
            rows.push(Row {
                case: format!("{case} no-op steps, end after last step"),
                unit: "ms",
                samples: tail,
                note: "from the last StepFinished to run() returning".into(),
            });
            if !gaps.is_empty() {
                rows.push(Row {
                    case: format!("{case} no-op steps, per step, median over steps"),
                    unit: "us",
                    samples: gaps,
                    note: "median gap between consecutive steps finishing".into(),
                });
            }
            rows.push(Row {
                case: format!("{case} no-op steps, fully cached re-run"),
                unit: "ms",
                samples: cached,
                note: "cache lookups + validity checks + record".into(),
            });
        }
    }

    if want("busy") {
        // The same shapes with real CPU work in every step (the spin guest,
        // a fixed number of rounds, ~0.8 ms here): whether a fan-out keeps both
        // cores busy when the steps, not weir's own bookkeeping, are the work.
        let spin = weir_runtime::builder::build_crate(&repo().join("tests/guests/spin"))
            .expect("build spin");
        let n = 1000;
        let (mut chain, mut fan, mut fan_busy) = (Vec::new(), Vec::new(), Vec::new());
        let (mut speedup, mut slower) = (Vec::new(), Vec::new());
        for r in 0..3 {
            let (mut walls, mut sums) = (Vec::new(), Vec::new());
            for shape in ["chain", "fanout"] {
                let dir = tmp.path().join(format!("busy-{shape}-{r}"));
                let rt = Runtime::new(&Config::new(&dir)).expect("runtime");
                let mut plan = noop_plan(&dir, &spin, n, shape);
                // The fan-out's collect only gathers: zero rounds, so both
                // shapes run the same 1,000 busy steps.
                for (i, s) in plan.steps.iter_mut().enumerate() {
                    let rounds = if s.name == "collect" { 0 } else { BUSY_ROUNDS };
                    s.params = serde_json::json!({ "i": i, "iterations": rounds });
                }
                let plan = Arc::new(plan);
                rt.executor().load(&spin, &|_, _| false).expect("load");
                let (seen, opts) = Seen::watch(n);
                // The tokio runtime is started outside the timed region.
                let tokio = tokio();
                let t = Instant::now();
                let rep = tokio.block_on(rt.run_shared(plan, opts)).expect("run");
                let d = t.elapsed();
                assert!(rep.steps.iter().all(|s| s.state == StepState::Succeeded));
                walls.push(d);
                let seen = seen.lock().expect("seen");
                // The busy steps' own times (a worker's, from taking the
                // unit); the fan-out's collect finishes last and is left out.
                sums.push(seen.durations[..n].iter().sum::<Duration>());
                if shape == "fanout"
                    && let Some(b) = seen.cores_busy()
                {
                    fan_busy.push(b);
                }
            }
            chain.push(ms(walls[0]));
            fan.push(ms(walls[1]));
            speedup.push(walls[0].as_secs_f64() / walls[1].as_secs_f64());
            slower.push(sums[1].as_secs_f64() / sums[0].as_secs_f64());
        }
        let per_step: Vec<f64> = chain.iter().map(|c| c * 1e3 / n as f64).collect();
        rows.push(Row {
            case: format!("chain {n} busy steps, first run"),
            unit: "ms",
            samples: chain,
            note: format!("spin guest, {BUSY_ROUNDS} rounds per step"),
        });
        rows.push(Row {
            case: format!("chain {n} busy steps, per step"),
            unit: "us",
            samples: per_step,
            note: "first run / N: one step's work plus weir's overhead".into(),
        });
        rows.push(Row {
            case: format!("fanout {n} busy steps, first run"),
            unit: "ms",
            samples: fan,
            note: "the same steps, all depending on the first; a collect of zero rounds".into(),
        });
        rows.push(Row {
            case: format!("fanout {n} busy steps, fan-out phase, cores busy"),
            unit: "x",
            samples: fan_busy,
            note: "CPU time / wall from the root's finish to the last fanned-out step's".into(),
        });
        rows.push(Row {
            case: format!("fanout {n} busy steps, speed-up over the chain"),
            unit: "x",
            samples: speedup,
            note: "chain wall / fan-out wall, same round (2 = both cores fully used)".into(),
        });
        rows.push(Row {
            case: format!("fanout {n} busy steps, steps' own time against the chain's"),
            unit: "x",
            samples: slower,
            note: "sum of the steps' durations, fan-out / chain: side by side each runs slower"
                .into(),
        });
    }

    for n in [100usize, 1000, 10_000] {
        let case = format!("plan {n}");
        if !want(&case) && !want("plan") {
            continue;
        }
        // A generated script: n steps in a chain, each with params and a limit.
        let mut script = String::from(
            "let p = pipeline(\"generated\");\nlet prev = p.step(\"s0\", \"step.wasm\").output(\"out\");\n",
        );
        for i in 1..n {
            script.push_str(&format!(
                "prev = p.step(\"s{i}\", \"step.wasm\").input(\"in\", prev.out(\"out\")).output(\"out\").params(#{{ i: {i}, name: \"step {i}\" }}).timeout(\"30s\");\n"
            ));
        }
        let mut samples = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let plan =
                weir_dsl::compile_str(&script, "generated.rhai", tmp.path()).expect("compile");
            samples.push(ms(t.elapsed()));
            assert_eq!(plan.steps.len(), n);
        }
        rows.push(Row {
            case: format!("plan build, generated {n}-step script"),
            unit: "ms",
            samples,
            note: "parse + evaluate + validate".into(),
        });
    }

    if want("startup") {
        let weir = repo().join("target/release/weir");
        if weir.is_file() {
            let mut version = Vec::new();
            for _ in 0..10 {
                let t = Instant::now();
                let out = std::process::Command::new(&weir)
                    .arg("--version")
                    .output()
                    .expect("weir --version");
                assert!(out.status.success());
                version.push(ms(t.elapsed()));
            }
            rows.push(Row {
                case: "weir --version".into(),
                unit: "ms",
                samples: version,
                note: "process start".into(),
            });
            let dir = tmp.path().join("startup");
            std::fs::create_dir_all(&dir).expect("dir");
            let path = dir.join("p.rhai");
            std::fs::write(
                &path,
                format!(
                    "let p = pipeline(\"one\");\np.step(\"s\", {:?}).output(\"out\");\n",
                    noop.display().to_string()
                ),
            )
            .expect("script");
            let status = std::process::Command::new(&weir)
                .arg("run")
                .arg(&path)
                .output()
                .expect("weir run");
            assert!(status.status.success());
            let mut cached = Vec::new();
            for _ in 0..10 {
                let t = Instant::now();
                let out = std::process::Command::new(&weir)
                    .arg("run")
                    .arg(&path)
                    .output()
                    .expect("weir run");
                assert!(out.status.success());
                cached.push(ms(t.elapsed()));
            }
            rows.push(Row {
                case: "weir run, fully cached 1-step pipeline".into(),
                unit: "ms",
                samples: cached,
                note: "start, engine, plan, cache hit, records".into(),
            });
        } else {
            eprintln!("skipping startup cases: build the CLI first (cargo build --release)");
        }
    }

    if want("ingest") {
        let store = weir_runtime::store::Store::open(tmp.path().join("ingest")).expect("store");
        let quota = weir_runtime::store::Quota {
            bytes: u64::MAX,
            files: u64::MAX,
        };
        // One 1 GiB file, written into a staging folder on the store's filesystem.
        let mut big = Vec::new();
        for r in 0..3 {
            let dir = store.staging_dir("bench").expect("staging");
            {
                use std::io::Write;
                let mut f = std::fs::File::create(dir.join("big.bin")).expect("create");
                let mut block = vec![0u8; 1 << 20];
                for i in 0..1024u32 {
                    block[..4].copy_from_slice(&i.to_le_bytes());
                    block[4] = r as u8;
                    f.write_all(&block).expect("write");
                }
            }
            let t = Instant::now();
            store.ingest_output(&dir, quota).expect("ingest");
            big.push((1u64 << 30) as f64 / 1e9 / t.elapsed().as_secs_f64());
        }
        rows.push(Row {
            case: "ingest a 1 GiB output file".into(),
            unit: "GB/s",
            samples: big,
            note: "hash (blake3, mmap, all cores) + link, no copy; page cache warm".into(),
        });
        let mut small = Vec::new();
        for r in 0..2 {
            let dir = store.staging_dir("bench").expect("staging");
            for i in 0..100_000u32 {
                let sub = dir.join(format!("d{}", i / 1000));
                if i % 1000 == 0 {
                    std::fs::create_dir_all(&sub).expect("sub");
                }
                std::fs::write(sub.join(format!("f{i}")), format!("{r}-{i}")).expect("write");
            }
            let t = Instant::now();
            store.ingest_output(&dir, quota).expect("ingest");
            small.push(100_000.0 / t.elapsed().as_secs_f64() / 1000.0);
        }
        rows.push(Row {
            case: "ingest 100k small files (100 folders)".into(),
            unit: "k files/s",
            samples: small,
            note: "hash + link each, tree objects".into(),
        });
        store.sync().expect("sync");
    }

    if want("standardize") {
        // 1M rows x 20 columns, deterministic.
        let csv = tmp.path().join("features.csv");
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).expect("csv"));
            let header: Vec<String> = (0..20).map(|j| format!("f{j}")).collect();
            writeln!(f, "{}", header.join(",")).expect("write");
            let mut x: u64 = 42;
            for _ in 0..1_000_000 {
                for j in 0..20 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let v = (x >> 40) as f64 / 16777216.0 * 100.0 - 50.0;
                    if j > 0 {
                        f.write_all(b",").expect("write");
                    }
                    write!(f, "{v:.4}").expect("write");
                }
                f.write_all(b"\n").expect("write");
            }
        }
        let wasm_file =
            weir_runtime::builder::build_crate(&repo().join("tests/guests/standardize"))
                .expect("build standardize");
        let tokio = tokio();
        // Without a fuel budget (the default) and with one (the step runs on
        // the engine that counts fuel); one store each, the component loaded
        // outside the timed region.
        let runtimes: Vec<(bool, Runtime, weir_runtime::Digest, PathBuf)> = [true, false]
            .into_iter()
            .map(|fuel| {
                let dir = tmp.path().join(format!("standardize-store-{fuel}"));
                let rt = Runtime::new(&Config::new(&dir)).expect("runtime");
                let input = rt.store().ingest_path(&csv).expect("ingest");
                rt.executor().load(&wasm_file, &|_, _| false).expect("load");
                (fuel, rt, input, dir)
            })
            .collect();
        // Rounds interleave native and wasm so that a slow spell of this
        // shared machine hits both; the ratio is the median of the rounds'.
        let mut native = Vec::new();
        let mut wasm: Vec<Vec<f64>> = vec![Vec::new(); runtimes.len()];
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); runtimes.len()];
        let mut step_ms: Vec<Vec<f64>> = vec![Vec::new(); runtimes.len()];
        let mut step_ratios: Vec<Vec<f64>> = vec![Vec::new(); runtimes.len()];
        for r in 0..5 {
            let t = Instant::now();
            let input = std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(&csv).expect("open"),
            );
            let output = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(tmp.path().join("native-out.csv")).expect("create"),
            );
            let rows = standardize_core::standardize(input, output).expect("standardize");
            assert_eq!(rows, 1_000_000);
            let n = ms(t.elapsed());
            native.push(n);
            for (k, (fuel, rt, input, dir)) in runtimes.iter().enumerate() {
                let mut plan = Plan::new("standardize", dir);
                let mut s = StepPlan::new("std", ComponentSource::Wasm(wasm_file.clone()));
                s.inputs
                    .insert("data".into(), InputSource::Artifact(*input));
                s.outputs.insert("out".into());
                s.params = serde_json::json!({ "rep": r });
                s.limits.memory_bytes = 2 << 30;
                if *fuel {
                    s.limits.fuel = Some(1 << 62);
                }
                plan.steps.push(s);
                let t = Instant::now();
                let rep = tokio
                    .block_on(rt.run(&plan, RunOptions::default()))
                    .expect("run");
                let w = ms(t.elapsed());
                assert_eq!(
                    rep.steps[0].state,
                    StepState::Succeeded,
                    "{:?}",
                    rep.steps[0].error
                );
                wasm[k].push(w);
                ratios[k].push(w / n);
                let step = ms(rep.steps[0].duration);
                step_ms[k].push(step);
                step_ratios[k].push(step / n);
            }
        }
        rows.push(Row {
            case: "standardise 1M x 20 CSV, native".into(),
            unit: "ms",
            samples: native,
            note: "tests/guests/standardize/src/core.rs, release".into(),
        });
        for (k, (fuel, _, _, _)) in runtimes.iter().enumerate() {
            let fuel = if *fuel {
                "counted"
            } else {
                "not counted (default)"
            };
            rows.push(Row {
                case: format!("standardise 1M x 20 CSV, wasm step, fuel {fuel}"),
                unit: "ms",
                samples: wasm[k].clone(),
                note: "same code as a step, whole run incl. output ingest".into(),
            });
            rows.push(Row {
                case: format!("standardise wasm/native, fuel {fuel}"),
                unit: "x",
                samples: ratios[k].clone(),
                note: "per round: whole wasm run / the native run just before it".into(),
            });
            rows.push(Row {
                case: format!("standardise, the step alone, fuel {fuel}"),
                unit: "ms",
                samples: step_ms[k].clone(),
                note: "the step's duration: sandbox, instantiate, call, output hashed and linked"
                    .into(),
            });
            rows.push(Row {
                case: format!("standardise step/native, fuel {fuel}"),
                unit: "x",
                samples: step_ratios[k].clone(),
                note: "per round: the step alone / the native run just before it".into(),
            });
        }
    }

    if want("hello") {
        let script = repo().join("examples/hello/pipeline.rhai");
        let (mut first, mut cached) = (Vec::new(), Vec::new());
        for r in 0..5 {
            let dir = tmp.path().join(format!("hello-{r}"));
            let tokio = tokio();
            let t = Instant::now();
            let plan = weir_dsl::compile_file(&script).expect("compile");
            let rt = Runtime::new(&Config::new(&dir)).expect("runtime");
            tokio
                .block_on(rt.run(&plan, RunOptions::default()))
                .expect("run");
            first.push(ms(t.elapsed()));
            drop(rt);
            let t = Instant::now();
            let plan = weir_dsl::compile_file(&script).expect("compile");
            let rt = Runtime::new(&Config::new(&dir)).expect("runtime");
            let rep = tokio
                .block_on(rt.run(&plan, RunOptions::default()))
                .expect("run");
            cached.push(ms(t.elapsed()));
            assert!(rep.steps.iter().all(|s| s.state == StepState::Cached));
        }
        rows.push(Row {
            case: "hello pipeline, first run (components compiled)".into(),
            unit: "ms",
            samples: first,
            note: "fresh store: 3 cargo staleness checks, Cranelift, 3 executions".into(),
        });
        rows.push(Row {
            case: "hello pipeline, cached re-run (new process state)".into(),
            unit: "ms",
            samples: cached,
            note: "engine start, staleness checks from dep-info (no cargo), 3 cache hits".into(),
        });
    }
    if want("handle") {
        // An embedding host's view (issue 29): 3-step chains started with
        // `Runtime::start` and awaited with `finish` on one long-lived
        // `Runtime` (jobs = 2), uncached (new params each run) and cached;
        // then 32 runs at once, and the process's peak RSS and virtual size.
        // Run alone (`-- handle`) for the process figures to be this case's.
        let dir = tmp.path().join("handle");
        let rt = Runtime::new(Config::new(&dir).jobs(2)).expect("runtime");
        let tokio = tokio();
        let plan = |tag: usize| {
            let mut p = noop_plan(&dir, &noop, 3, "chain");
            for s in &mut p.steps {
                s.params["tag"] = serde_json::json!(tag);
            }
            std::sync::Arc::new(p)
        };
        let once = |p: std::sync::Arc<Plan>| {
            let t = Instant::now();
            let report = tokio.block_on(async {
                let h = rt.start(p, RunOptions::default()).await.expect("start");
                h.finish().await.expect("finish")
            });
            assert_eq!(report.state, weir_runtime::RunState::Succeeded);
            ms(t.elapsed())
        };
        once(plan(0)); // compiles the component
        let uncached: Vec<f64> = (1..=20).map(|i| once(plan(i))).collect();
        let cached: Vec<f64> = (0..20).map(|_| once(plan(1))).collect();
        let t = Instant::now();
        tokio.block_on(async {
            let mut handles = Vec::new();
            for i in 0..32 {
                let h = rt.start(plan(1000 + i), RunOptions::default()).await;
                handles.push(h.expect("start"));
            }
            for h in handles {
                let r = h.finish().await.expect("finish");
                assert_eq!(r.state, weir_runtime::RunState::Succeeded);
            }
        });
        let concurrent = ms(t.elapsed());
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        for (case, samples, unit, note) in [
            (
                "run handle, 3-step chain, uncached",
                uncached,
                "ms",
                "start + finish, new params each run",
            ),
            (
                "run handle, 3-step chain, cached",
                cached,
                "ms",
                "start + finish, every step a cache hit",
            ),
            (
                "run handle, 32 uncached 3-step runs at once",
                vec![concurrent],
                "ms",
                "32 handles, then finish each",
            ),
            (
                "run handle, process peak RSS after the 32 runs",
                vec![kib("VmHWM:") / 1024.0],
                "MiB",
                "VmHWM of the bench process",
            ),
            (
                "run handle, process peak virtual size",
                vec![kib("VmPeak:") / 1024.0 / 1024.0],
                "GiB",
                "VmPeak: mostly the instance pool's reservation",
            ),
        ] {
            rows.push(Row {
                case: case.into(),
                unit,
                samples,
                note: note.into(),
            });
        }
    }

    if want("cluster") {
        match cluster(tmp.path(), &noop) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => eprintln!("skipping cluster cases: {e}"),
        }
    }

    if want("serve") {
        match serve_load(tmp.path()) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => eprintln!("skipping serve cases: {e}"),
        }
    }
    print(&rows);
}

/// `weir serve` (the release CLI) under a bounded local load: 20 runs in
/// the store, then 10,000 requests from 8 keep-alive clients for each of
/// the runs list and an artifact download. Each sample is one request's
/// latency; the note has p99 and throughput.
fn serve_load(tmp: &Path) -> Result<Vec<Row>, String> {
    use std::io::BufRead as _;
    let weir = repo().join("target/release/weir");
    if !weir.is_file() {
        return Err("build the CLI first (cargo build --release)".into());
    }
    let echo = weir_runtime::builder::build_crate(&repo().join("tests/guests/echo"))
        .map_err(|e| e.to_string())?;
    let proj = tmp.join("serve-project");
    std::fs::create_dir_all(&proj).map_err(|e| e.to_string())?;
    std::fs::write(
        proj.join("quick.rhai"),
        format!(
            "let n = param(\"n\", 0);\nlet p = pipeline(\"quick\");\np.step(\"a\", {:?}).output(\"out\").params(#{{ n: n, files: #{{ \"data.csv\": \"x,y\\n1,2\\n\" }} }});\n",
            echo.display().to_string()
        ),
    )
    .map_err(|e| e.to_string())?;
    const TOKEN: &str = "bench-token-0123456789";
    let mut child = std::process::Command::new(&weir)
        .arg("serve")
        .arg(&proj)
        .args(["--bind", "127.0.0.1:0", "--token", TOKEN, "--store"])
        .arg(tmp.join("serve-store"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(a) = l.strip_prefix("listening on ") {
                    break a.to_string();
                }
            }
            _ => return Err("weir serve did not start".into()),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let agent = || -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    };
    let auth = format!("Bearer {TOKEN}");
    let a = agent();
    let mut digest = String::new();
    for n in 0..20 {
        let mut r = a
            .post(&format!("{base}/api/pipelines/quick/runs"))
            .header("Authorization", &auth)
            .send(format!("{{\"params\":{{\"n\":{n}}}}}").as_bytes())
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let id = v["run"].as_i64().ok_or(format!("no run: {v}"))?;
        loop {
            let mut r = a
                .get(&format!("{base}/api/runs/{id}"))
                .header("Authorization", &auth)
                .call()
                .map_err(|e| e.to_string())?;
            let v: serde_json::Value =
                serde_json::from_str(&r.body_mut().read_to_string().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            if v["run"]["active"] == false && v["run"]["ended_ms"].is_i64() {
                digest = v["steps"][0]["outputs"]["out"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut rows = Vec::new();
    for (case, path) in [
        (
            "serve: GET /api/runs (20 runs), 10k requests, 8 clients",
            "/api/runs".to_string(),
        ),
        (
            "serve: artifact download (12 B file), 10k requests, 8 clients",
            format!("/api/artifacts/{digest}/files/data.csv"),
        ),
    ] {
        let t = Instant::now();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (url, auth) = (format!("{base}{path}"), auth.clone());
                std::thread::spawn(move || {
                    let a = agent();
                    let mut lat = Vec::with_capacity(1250);
                    for _ in 0..1250 {
                        let t = Instant::now();
                        let ok = a
                            .get(&url)
                            .header("Authorization", &auth)
                            .call()
                            .ok()
                            .and_then(|mut r| {
                                let s = r.status().as_u16();
                                r.body_mut().read_to_vec().ok().map(|_| s)
                            });
                        lat.push(ms(t.elapsed()));
                        assert_eq!(ok, Some(200), "{url}");
                    }
                    lat
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| "client thread panicked")?);
        }
        let wall = t.elapsed().as_secs_f64();
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let p99 = sorted[(sorted.len() * 99) / 100];
        rows.push(Row {
            case: case.into(),
            unit: "ms",
            note: format!("p99 {p99:.2} ms, {:.0} requests/s", all.len() as f64 / wall),
            samples: all,
        });
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    Ok(rows)
}

/// Runs `sql` on the PostgreSQL database at `url`; the rows' columns as f64
/// text-free numbers (every query here selects numbers).
fn pg_rows(url: &str, sql: &str) -> Result<Vec<Vec<f64>>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
        let conn = tokio::spawn(conn);
        let rows = client
            .simple_query(sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
        drop(client);
        let _ = conn.await;
        Ok(rows
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    })
}

/// No-op units through the cluster's queue (the release CLI): `weir run
/// --cluster` of a fan-out of 1,000 (throughput: units completed per second
/// between the first enqueue and the last completion, every completion a
/// committed transaction) and of a chain of 200 (queue latency: enqueue to
/// claim, one unit in the queue at a time), with 1, 2 and 4 `weir worker`
/// processes of one slot each, on a fresh database each round. Times come
/// from the queue's own rows (the server's clock).
fn cluster(tmp: &Path, noop: &Path) -> Result<Vec<Row>, String> {
    let weir = repo().join("target/release/weir");
    if !weir.is_file() {
        return Err("build the CLI first (cargo build --release)".into());
    }
    let admin = std::env::var("WEIR_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into());
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(b, _)| b)
        .to_string();
    let mut rows = Vec::new();
    const ROUNDS: usize = 3;
    for workers in [1usize, 2, 4] {
        let (mut rate, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            for (n, chain) in [(1000usize, false), (200, true)] {
                let name = format!("weir_bench_{}_{workers}_{round}_{n}", std::process::id());
                pg_rows(&admin, &format!("CREATE DATABASE {name}"))?;
                let url = format!("{base}/{name}");
                let dir = tmp.join(&name);
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let script = dir.join("p.rhai");
                std::fs::write(&script, generated_script(noop, n, chain, "i"))
                    .map_err(|e| e.to_string())?;
                let remote = dir.join("remote");
                let cmd = || {
                    let mut c = std::process::Command::new(&weir);
                    c.args(["--records", &url, "--remote"]).arg(&remote);
                    c
                };
                let mut procs: Vec<std::process::Child> = (0..workers)
                    .map(|i| {
                        cmd()
                            .args(["worker", "--jobs", "1", "--store"])
                            .arg(dir.join(format!("w{i}")))
                            .stderr(std::process::Stdio::null())
                            .spawn()
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<_, _>>()?;
                let status = cmd()
                    .args(["run", "--cluster", "--quiet", "--store"])
                    .arg(dir.join("coordinator"))
                    .arg(&script)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .map_err(|e| e.to_string());
                for p in &mut procs {
                    let _ = p.kill();
                    let _ = p.wait();
                }
                if !status.as_ref().is_ok_and(|s| s.success()) {
                    return Err(format!("weir run --cluster failed: {status:?}"));
                }
                let got = pg_rows(
                    &url,
                    "SELECT count(*),
                        extract(epoch from max(finished_at) - min(enqueued_at)),
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch from started_at - enqueued_at)),
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch from started_at - enqueued_at))
                     FROM units WHERE state = 'done'",
                )?;
                pg_rows(&admin, &format!("DROP DATABASE {name} WITH (FORCE)"))?;
                let r = got.first().ok_or("no units")?;
                if chain {
                    p50.push(r[2] * 1000.0);
                    p99.push(r[3] * 1000.0);
                } else {
                    rate.push(r[0] / r[1]);
                }
            }
        }
        rows.push(Row {
            case: format!("cluster: no-op units per second, fan-out of 1,000, {workers} worker(s)"),
            unit: "/s",
            samples: rate,
            note: "first enqueue to last completion; each completion committed".into(),
        });
        rows.push(Row {
            case: format!("cluster: queue latency p50, chain of 200, {workers} worker(s)"),
            unit: "ms",
            samples: p50,
            note: "enqueue to claim".into(),
        });
        rows.push(Row {
            case: format!("cluster: queue latency p99, chain of 200, {workers} worker(s)"),
            unit: "ms",
            samples: p99,
            note: "enqueue to claim".into(),
        });
    }
    Ok(rows)
}
