//! `weir inspect COMPONENT`: what a component is and what it would be granted.

use crate::StoreArg;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use weir_runtime::executor::GPU_INTERFACE;

/// Arguments of `weir inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A component file (.wasm)
    component: PathBuf,
    /// Digests to treat as trusted, as `weir run --trust` would
    #[arg(long, value_name = "DIGEST")]
    trust: Vec<String>,
    /// The trust file to apply [default: weir.toml in the current folder or above]
    #[arg(long)]
    trust_file: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArg,
}

/// Runs `weir inspect`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ex = super::tool_executor(&args.store)?;
    let (digest, imports, exports) = ex.describe(&args.component)?;
    let mut trust = weir_runtime::TrustPolicy::default();
    let file = args
        .trust_file
        .clone()
        .or_else(|| weir_runtime::TrustPolicy::find_file(Path::new(".")));
    if let Some(f) = &file {
        trust.trust_file(f)?;
    }
    for d in &args.trust {
        trust
            .trust(d)
            .map_err(|e| anyhow::anyhow!("--trust {d}: {e}"))?;
    }
    outln!("component {}", args.component.display());
    outln!("digest    {digest}");
    let is_step = exports.iter().any(|e| e == "run");
    let wants_gpu = imports.iter().any(|i| i == GPU_INTERFACE);
    outln!(
        "world     {}",
        match (is_step, wants_gpu) {
            (true, true) => "weir:step/trusted-step (imports the gpu capability)",
            (true, false) => "weir:step/step",
            (false, _) => "not a weir step (no `run` export)",
        }
    );
    let signed = weir_runtime::signing::verify(&args.component, &digest);
    match &signed {
        Ok(None) => outln!("signature none"),
        Ok(Some(s)) => outln!(
            "signature valid, by publisher '{}' ({}){}",
            s.publisher,
            weir_runtime::signing::format_public_key(&s.key),
            match trust.signer(&args.component, &digest) {
                Ok(Some(name)) => format!(", trusted as '{name}'"),
                _ => ", a key the trust policy does not name".to_string(),
            }
        ),
        Err(why) => outln!("signature INVALID: {why}"),
    }
    if let Some(f) = &file {
        outln!("policy    from {}", f.display());
    }
    outln!("imports:");
    for i in &imports {
        outln!("  {i}");
    }
    outln!("exports:");
    for e in &exports {
        outln!("  {e}");
    }
    let grant = if !wants_gpu {
        "the minimal sandbox (it asks for no capability)".to_string()
    } else if trust.grants("gpu", &digest, None, Some(&args.component)) {
        "the gpu capability, for steps that request it with .requires(\"gpu\")".to_string()
    } else {
        format!(
            "nothing: it imports the gpu capability but is not trusted (weir run --trust {})",
            digest.short()
        )
    };
    // Whether it links at all: imports beyond WASI preview 2, weir:step and
    // weir's capabilities (wasi:http, say) are never satisfied, whatever the trust.
    match ex.load(&args.component, &|_, _| true) {
        Ok(_) => outln!("links     yes"),
        Err(e) => outln!("links     NO, it cannot run in weir: {e:#}"),
    }
    outln!("policy    would grant {grant}");
    if let Some(cap) = trust.limits_for(&digest, None, Some(&args.component)) {
        outln!("limits    capped by the trust file: {}", cap.describe());
    }
    Ok(ExitCode::SUCCESS)
}
