//! `weir runs`: the newest runs first.

use crate::StoreArg;
use std::process::ExitCode;

/// Arguments of `weir runs`.
#[derive(clap::Args)]
pub struct Args {
    /// How many runs to list
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print JSON for tools
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

/// Runs `weir runs`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let records = super::open_records(&args.store.resolve())?;
    let runs = records.runs(args.limit)?;
    if args.json {
        jsonln!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:>5}  {:<20} {:<10} {:>9}  {:<12}  error",
        "run",
        "pipeline",
        "state",
        "duration",
        "plan"
    );
    for r in runs {
        let dur = r
            .ended_ms
            .map(|e| super::fmt_ms(e - r.started_ms))
            .unwrap_or_else(|| "-".into());
        outln!(
            "{:>5}  {:<20} {:<10} {:>9}  {:<12}  {}",
            r.id,
            r.pipeline,
            r.state,
            dur,
            r.plan_digest.short(),
            super::one_line(&r.error.unwrap_or_default())
        );
    }
    Ok(ExitCode::SUCCESS)
}
