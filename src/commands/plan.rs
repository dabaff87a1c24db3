//! `weir plan PIPELINE`: validate a script and print its plan as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `weir plan`.
#[derive(clap::Args)]
pub struct Args {
    /// The pipeline script (.rhai)
    pipeline: PathBuf,
}

/// Runs `weir plan`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = weir_dsl::compile_file(&args.pipeline)?;
    println!("{}", plan.to_json());
    Ok(ExitCode::SUCCESS)
}
