//! `weir show RUN`: the step table of one run.

use crate::StoreArg;
use std::process::ExitCode;

/// Arguments of `weir show`.
#[derive(clap::Args)]
pub struct Args {
    /// Run number (see `weir runs`)
    run: String,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

/// Runs `weir show`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let records = super::open_records(&args.store.resolve())?;
    let id = super::parse_run(&args.run)?;
    let r = super::need_run(&*records, id)?;
    let steps = records.steps(id)?;
    if args.json {
        // One flat object: the run's summary (its number as `run`, as in
        // `weir runs --json`) and its steps.
        let mut v = serde_json::to_value(&r)?;
        v["steps"] = serde_json::to_value(&steps)?;
        jsonln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "run {} of pipeline {}: {} (plan {})",
        r.id,
        r.pipeline,
        r.state,
        r.plan_digest.short()
    );
    if let Some(e) = &r.error {
        outln!("error: {}", super::one_line(e));
    }
    outln!(
        "{:<20} {:<10} {:>8} {:>9}  {:<12}  outputs",
        "step",
        "state",
        "attempts",
        "duration",
        "cache key"
    );
    for s in steps {
        let outs: Vec<String> = s
            .outputs
            .iter()
            .map(|(n, d)| format!("{n}={}", d.short()))
            .collect();
        outln!(
            "{:<20} {:<10} {:>8} {:>9}  {:<12}  {}",
            s.step,
            s.state,
            s.attempts,
            super::fmt_ms(s.ended_ms - s.started_ms),
            s.cache_key.map(|k| k.short()).unwrap_or_default(),
            outs.join(" ")
        );
        for (name, v) in &s.metrics {
            outln!("{:<20}   {} = {v}", "", super::one_line(name));
        }
        if s.attempts > 1 {
            for a in records.attempts(id, &s.step)? {
                let outcome = super::one_line(a.error.as_deref().unwrap_or("succeeded"));
                outln!(
                    "{:<20}   attempt {} ({}): {outcome}",
                    "",
                    a.attempt,
                    super::fmt_ms(a.ended_ms - a.started_ms)
                );
            }
        }
        if let Some(e) = &s.error {
            let kind = s.failure.map(|k| format!(" ({k})")).unwrap_or_default();
            outln!(
                "{:<20}   error{kind}: {}",
                "",
                e.replace('\n', "\n                         ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
