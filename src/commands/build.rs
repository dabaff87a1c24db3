//! `weir build PATH`: compile a step crate and put it in the compile cache.

use crate::StoreArg;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `weir build`.
#[derive(clap::Args)]
pub struct Args {
    /// The step crate folder
    path: PathBuf,
    #[command(flatten)]
    store: StoreArg,
}

/// Runs `weir build`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let wasm = weir_runtime::builder::build_crate(&args.path)?;
    let executor = super::tool_executor(&args.store)?;
    let c = executor.load(&wasm, &|_, _| true)?;
    let note = if c.capabilities.is_empty() {
        String::new()
    } else {
        format!(
            " (imports {}: runs only where the trust policy names this digest)",
            c.capabilities.join(", ")
        )
    };
    outln!("{} {}{note}", c.digest, wasm.display());
    Ok(ExitCode::SUCCESS)
}
