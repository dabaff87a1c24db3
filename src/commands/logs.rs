//! `weir logs RUN STEP`: a step's log lines, stdout and stderr.

use crate::StoreArg;
use std::process::ExitCode;

/// Arguments of `weir logs`.
#[derive(clap::Args)]
pub struct Args {
    /// Run number
    run: String,
    /// Step name
    step: String,
    #[command(flatten)]
    store: StoreArg,
}

/// Runs `weir logs`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let records = super::open_records(&args.store.resolve())?;
    let id = super::parse_run(&args.run)?;
    super::need_run(&*records, id)?;
    let steps = records.steps(id)?;
    if !steps.iter().any(|s| s.step == args.step) {
        let names: Vec<&str> = steps.iter().map(|s| s.step.as_str()).collect();
        anyhow::bail!(
            "run {id} has no step '{}'{} (its steps: {})",
            args.step,
            weir_runtime::plan::suggest(&args.step, names.iter().copied()),
            names.join(", ")
        );
    }
    for (attempt, line) in records.logs(id, &args.step)? {
        // Guest text may hold terminal escapes and line breaks.
        let msg = super::one_line(&line.message);
        outln!("[attempt {attempt}] {:<6} {msg}", line.level);
    }
    Ok(ExitCode::SUCCESS)
}
