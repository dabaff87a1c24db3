//! A minimal Rust host that embeds weir: it builds a plan in code (no Rhai),
//! starts it through `weir-runtime`'s public API, follows its events through
//! the run handle, and prints the report.
//!
//! Run it from the repository root with `cargo run -p weir-example-embed`.

use std::path::Path;
use weir_runtime::{
    ComponentSource, Config, InputSource, Plan, RunEvent, RunOptions, Runtime, StepPlan,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let hello = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../hello")
        .canonicalize()?;
    let store = std::env::var_os("WEIR_STORE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("weir-embed-example"));
    let rt = Runtime::new(&Config::new(&store))?;

    let mut plan = Plan::new("embedded", &hello);
    let mut load = StepPlan::new("load", ComponentSource::Crate("steps/load_csv".into()));
    load.inputs
        .insert("raw".into(), InputSource::Path("data/flowers.csv".into()));
    load.outputs.insert("table".into());
    let mut stats = StepPlan::new("stats", ComponentSource::Crate("steps/column_stats".into()));
    stats.inputs.insert(
        "table".into(),
        InputSource::Step {
            step: "load".into(),
            output: "table".into(),
        },
    );
    stats.outputs.insert("stats".into());
    plan.steps = vec![load, stats];

    // The run's number at once, its events as they happen, then its report.
    let mut run = rt
        .start(std::sync::Arc::new(plan), RunOptions::default())
        .await?;
    eprintln!("run {} started", run.id());
    while let Some(event) = run.next_event().await {
        if let RunEvent::StepFinished { step, state, .. } = event {
            eprintln!("  {step} {state}");
        }
    }
    let report = run.finish().await?;
    println!("run {} {}", report.run, report.state);
    for s in &report.steps {
        println!(
            "  {} {} {:?}",
            s.name,
            s.state,
            s.outputs.keys().collect::<Vec<_>>()
        );
    }
    if let Some(dir) = report.output_path(rt.store(), "stats", "stats") {
        println!("{}", std::fs::read_to_string(dir.join("stats.json"))?);
    }
    Ok(())
}
