//! `weir verify RUN`: executes again every step a run executed, from its
//! recorded inputs, and compares each output's digest with the recorded
//! one ([`weir_runtime::verify`]).

use crate::StoreArg;
use std::process::ExitCode;
use weir_runtime::Runtime;
use weir_runtime::verify::{CheckOutcome, Verification};

/// Arguments of `weir verify`.
#[derive(clap::Args)]
pub struct Args {
    /// Run number (see `weir runs`)
    run: String,
    #[command(flatten)]
    store: StoreArg,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// Runs `weir verify`: exit 0 when every executed step reproduced its
/// outputs, 1 otherwise.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.resolve();
    let records = super::open_records(&store)?;
    let id = super::parse_run(&args.run)?;
    super::need_run(&*records, id)?;
    let plan: weir_runtime::Plan = serde_json::from_str(
        &records
            .plan_json(id)?
            .ok_or_else(|| anyhow::anyhow!("run {id} has no recorded plan"))?,
    )?;
    drop(records);
    // The run's own project: its trust file decides what steps are granted.
    let config = super::runtime_config(&plan.base_dir, &store, None, |_| Ok(()))?;
    let runtime = Runtime::new(&config)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime.jobs().max(1))
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let v = tokio.block_on(runtime.verify(id))?;
    let took = started.elapsed();
    if args.json {
        jsonln!("{}", serde_json::to_string_pretty(&json(&v, took))?);
    } else {
        print(&v, took)?;
    }
    Ok(if v.all_reproduced() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print(v: &Verification, took: std::time::Duration) -> anyhow::Result<()> {
    let cached = if v.cached > 0 {
        format!(
            "; {} cache hit(s) not (`weir why {} STEP` names the run that produced each)",
            v.cached, v.run
        )
    } else {
        String::new()
    };
    outln!(
        "run {}: {} executed step(s) executed again{cached}",
        v.run,
        v.steps.len()
    );
    let width = v.steps.iter().map(|s| s.step.len()).max().unwrap_or(0);
    let (mut same, mut differ, mut unchecked) = (0, 0, 0);
    for s in &v.steps {
        let name = super::one_line(&s.step);
        let ms = s.duration.as_secs_f64() * 1000.0;
        match &s.outcome {
            CheckOutcome::Reproduced => {
                same += 1;
                outln!("  same     {name:width$}  every output reproduced ({ms:.1}ms)");
            }
            CheckOutcome::Differs(diffs) => {
                differ += 1;
                for d in diffs {
                    let short =
                        |x: Option<weir_runtime::Digest>| x.map_or("none".into(), |d| d.short());
                    outln!(
                        "  DIFFERS  {name:width$}  output '{}': recorded {}, now {}{}",
                        super::one_line(&d.output),
                        short(d.recorded),
                        short(d.now),
                        d.first_difference
                            .as_deref()
                            .map(|p| format!(" (first differing file: {})", super::one_line(p)))
                            .unwrap_or_default()
                    );
                }
            }
            CheckOutcome::Failed(e) => {
                differ += 1;
                outln!("  FAILED   {name:width$}  {}", super::one_line(e));
            }
            CheckOutcome::NotChecked(why) => {
                unchecked += 1;
                outln!("  unchecked {name:width$} {}", super::one_line(why));
            }
        }
    }
    let of_run = v
        .run_duration
        .map(|d| format!("; the run took {:.2}s", d.as_secs_f64()))
        .unwrap_or_default();
    outln!(
        "run {}: {same} reproduced, {differ} did not, {unchecked} not checked (verifying took {:.2}s{of_run})",
        v.run,
        took.as_secs_f64()
    );
    Ok(())
}

fn json(v: &Verification, took: std::time::Duration) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = v
        .steps
        .iter()
        .map(|s| {
            let (outcome, detail) = match &s.outcome {
                CheckOutcome::Reproduced => ("reproduced", serde_json::Value::Null),
                CheckOutcome::Differs(diffs) => (
                    "differs",
                    diffs
                        .iter()
                        .map(|d| {
                            serde_json::json!({
                                "output": d.output,
                                "recorded": d.recorded.map(|x| x.to_hex()),
                                "now": d.now.map(|x| x.to_hex()),
                                "first_difference": d.first_difference,
                            })
                        })
                        .collect(),
                ),
                CheckOutcome::Failed(e) => ("failed", e.clone().into()),
                CheckOutcome::NotChecked(why) => ("not_checked", why.clone().into()),
            };
            serde_json::json!({
                "step": s.step,
                "outcome": outcome,
                "detail": detail,
                "duration_ms": s.duration.as_secs_f64() * 1000.0,
            })
        })
        .collect();
    serde_json::json!({
        "run": v.run.0,
        "reproduced": v.all_reproduced(),
        "cached": v.cached,
        "steps": steps,
        "verify_ms": took.as_secs_f64() * 1000.0,
        "run_ms": v.run_duration.map(|d| d.as_millis() as u64),
    })
}
