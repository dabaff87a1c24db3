//! `weir inspect COMPONENT`: what a component is and what it would be granted.

use crate::StoreArg;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_runtime::executor::{EngineConfig, Executor, GPU_INTERFACE};

/// Arguments of `weir inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A component file (.wasm)
    component: PathBuf,
    /// Digests to treat as trusted, as `weir run --trust` would
    #[arg(long, value_name = "DIGEST")]
    trust: Vec<String>,
    #[command(flatten)]
    store: StoreArg,
}

/// Runs `weir inspect`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = weir_runtime::store::Store::open(args.store.resolve())?;
    let ex = Executor::new(
        &EngineConfig {
            max_concurrent: 1,
            fuel: true,
            pooling: false,
            gpu: Default::default(),
        },
        &store.compiled_dir(),
    )?;
    let (digest, imports, exports) = ex.describe(&args.component)?;
    let mut trust = weir_runtime::TrustPolicy::default();
    for d in &args.trust {
        trust = trust.trust(d).map_err(anyhow::Error::msg)?;
    }
    println!("component {}", args.component.display());
    println!("digest    {digest}");
    let is_step = exports.iter().any(|e| e == "run");
    let wants_gpu = imports.iter().any(|i| i == GPU_INTERFACE);
    println!(
        "world     {}",
        match (is_step, wants_gpu) {
            (true, true) => "weir:step/trusted-step (imports the gpu capability)",
            (true, false) => "weir:step/step",
            (false, _) => "not a weir step (no `run` export)",
        }
    );
    println!("imports:");
    for i in &imports {
        println!("  {i}");
    }
    println!("exports:");
    for e in &exports {
        println!("  {e}");
    }
    let grant = if !wants_gpu {
        "the minimal sandbox (it asks for no capability)".to_string()
    } else if trust.allows(&digest) {
        "the gpu capability, for steps that request it with .requires(\"gpu\")".to_string()
    } else {
        format!(
            "nothing: it imports the gpu capability but is not trusted (weir run --trust {})",
            digest.short()
        )
    };
    println!("policy    would grant {grant}");
    Ok(ExitCode::SUCCESS)
}
