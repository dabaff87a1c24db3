//! Helpers shared by the integration tests: fixture components built from
//! `tests/guests/`, fresh runtimes on temporary stores, and the CLI binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use weir_runtime::plan::{ComponentSource, InputSource, Plan, StepPlan};
use weir_runtime::{Config, RunOptions, RunReport, Runtime};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds (once per test process) the fixture crate `tests/guests/<name>`
/// and returns its component file.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let map = BUILT.get_or_init(Default::default);
    let mut m = map.lock().unwrap();
    if let Some(p) = m.get(name) {
        return p.clone();
    }
    let crate_dir = repo().join("tests/guests").join(name);
    let wasm = weir_runtime::builder::build_crate(&crate_dir)
        .unwrap_or_else(|e| panic!("building fixture {name}: {e:#}"));
    m.insert(name.to_string(), wasm.clone());
    wasm
}

/// A runtime on a store in `dir`.
pub fn runtime(dir: &Path) -> Runtime {
    Runtime::new(Config::new(dir.join(".weir")).jobs(2)).expect("runtime")
}

/// Runs `plan` on `rt`, panicking if the run cannot start.
pub fn run(rt: &Runtime, plan: &Plan) -> RunReport {
    try_run(rt, plan).unwrap_or_else(|e| panic!("run did not start: {e:#}"))
}

/// Runs `plan` on `rt`.
pub fn try_run(rt: &Runtime, plan: &Plan) -> anyhow::Result<RunReport> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(rt.run(plan, RunOptions::default()))
}

/// A step running a fixture component (or any wasm file).
pub fn step(name: &str, wasm: &Path) -> StepPlan {
    let mut s = StepPlan::new(name, ComponentSource::Wasm(wasm.to_path_buf()));
    s.outputs.insert("out".into());
    s
}

/// Reads `output` of `upstream` into input `input` of `s`.
pub fn wire(s: &mut StepPlan, input: &str, upstream: &str, output: &str) {
    s.inputs.insert(
        input.into(),
        InputSource::Step {
            step: upstream.into(),
            output: output.into(),
        },
    );
}

/// A plan over `steps` whose paths resolve in `base`.
pub fn plan(base: &Path, steps: Vec<StepPlan>) -> Plan {
    let mut p = Plan::new("test", base);
    p.steps = steps;
    p
}

/// The `weir` binary built by cargo for this test run.
pub fn weir() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env_remove("WEIR_STORE");
    c
}

/// Copies a folder tree (without `target/` and `.weir/`).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "target" || name == ".weir" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}
