//! weir's benchmark harness: `cargo bench --bench weir [-- FILTER]`.
//!
//! Prints one table: for each case the median and the spread (min..max) of
//! several repetitions, on fresh stores in a temporary folder. Cases:
//! component compile (cold vs the on-disk cache), no-op step chains and
//! fan-outs (first run and fully cached re-run; per-step overhead), and the
//! hello example (first run and cached re-run, including cargo's staleness
//! check of its three crates). The machine is shared and noisy: compare
//! medians, and re-run before trusting a difference under ~10%.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weir_runtime::executor::{EngineConfig, Executor};
use weir_runtime::plan::{ComponentSource, InputSource, Plan, StepPlan};
use weir_runtime::{Config, RunOptions, Runtime, StepState};

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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio")
}

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
    p
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let want = |c: &str| c.contains(&filter);
    let tmp = tempfile::tempdir().expect("tempdir");
    let noop =
        weir_runtime::builder::build_crate(&repo().join("tests/guests/noop")).expect("build noop");
    let mut rows = Vec::new();

    if want("compile") {
        let cfg = EngineConfig {
            max_concurrent: 2,
            fuel: true,
            pooling: true,
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
                ex.load(wasm).expect("load");
                cold.push(ms(t.elapsed()));
                drop(ex);
                let ex = Executor::new(&cfg, &dir).expect("executor");
                let t = Instant::now();
                ex.load(wasm).expect("load");
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
        for n in [10usize, 100, 1000] {
            let case = format!("{shape} {n}");
            if !want(&case) && !want(shape) {
                continue;
            }
            let (mut first, mut per_step, mut cached) = (Vec::new(), Vec::new(), Vec::new());
            let reps = if n >= 1000 { 3 } else { 5 };
            for r in 0..reps {
                let dir = tmp.path().join(format!("{shape}-{n}-{r}"));
                let rt = Runtime::new(Config::new(&dir)).expect("runtime");
                let plan = noop_plan(&dir, &noop, n, shape);
                let tokio = tokio();
                // Load (and compile) the component outside the timed region.
                rt.executor().load(&noop).expect("load");
                let t = Instant::now();
                let rep = tokio
                    .block_on(rt.run(&plan, RunOptions::default()))
                    .expect("run");
                let d = t.elapsed();
                assert!(rep.steps.iter().all(|s| s.state == StepState::Succeeded));
                first.push(ms(d));
                per_step.push(d.as_secs_f64() * 1e6 / n as f64);
                let t = Instant::now();
                let rep = tokio
                    .block_on(rt.run(&plan, RunOptions::default()))
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
                case: format!("{case} no-op steps, fully cached re-run"),
                unit: "ms",
                samples: cached,
                note: "cache lookups + validity checks + record".into(),
            });
        }
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

    if want("hello") {
        let script = repo().join("examples/hello/pipeline.rhai");
        let (mut first, mut cached) = (Vec::new(), Vec::new());
        for r in 0..5 {
            let dir = tmp.path().join(format!("hello-{r}"));
            let tokio = tokio();
            let t = Instant::now();
            let plan = weir_dsl::compile_file(&script).expect("compile");
            let rt = Runtime::new(Config::new(&dir)).expect("runtime");
            tokio
                .block_on(rt.run(&plan, RunOptions::default()))
                .expect("run");
            first.push(ms(t.elapsed()));
            drop(rt);
            let t = Instant::now();
            let plan = weir_dsl::compile_file(&script).expect("compile");
            let rt = Runtime::new(Config::new(&dir)).expect("runtime");
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
            note: "fresh store; crates already built by cargo".into(),
        });
        rows.push(Row {
            case: "hello pipeline, cached re-run (new process state)".into(),
            unit: "ms",
            samples: cached,
            note: "includes 3 cargo staleness checks and engine start".into(),
        });
    }
    print(&rows);
}
