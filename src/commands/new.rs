//! `weir new step NAME`: scaffold a step crate that builds as is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `weir new` creates.
#[derive(clap::Subcommand)]
pub enum What {
    /// A step crate
    Step(StepArgs),
}

/// Arguments of `weir new step`.
#[derive(clap::Args)]
pub struct StepArgs {
    /// The step's name (also the crate and folder name)
    name: String,
    /// Parent folder [default: current folder]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Path of the weir-sdk crate [default: the SDK this weir was built with]
    #[arg(long)]
    sdk: Option<PathBuf>,
}

/// The SDK beside the sources this binary was built from.
fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk-guest")
}

/// Runs `weir new`.
pub fn run(what: What) -> anyhow::Result<ExitCode> {
    let What::Step(args) = what;
    weir_runtime::names::check_name("step", &args.name)?;
    let dir = args
        .dir
        .unwrap_or_else(|| PathBuf::from("."))
        .join(&args.name);
    if dir.exists() {
        anyhow::bail!(
            "{} already exists; choose another name or --dir",
            dir.display()
        );
    }
    let sdk = args.sdk.unwrap_or_else(default_sdk);
    if !sdk.join("Cargo.toml").is_file() {
        anyhow::bail!(
            "no weir-sdk crate at {} (pass its folder with --sdk)",
            sdk.display()
        );
    }
    let sdk = sdk.canonicalize()?;
    std::fs::create_dir_all(dir.join("src"))?;
    let crate_name = args.name.replace('-', "_");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{crate_name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
weir-sdk = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}

# A step crate is its own workspace; steps that share one can move this up.
[workspace]

[profile.release]
opt-level = "s"
lto = true
# Keeps the name section: a trap names the function it happened in.
strip = "debuginfo"
"#
        ),
    )?;
    std::fs::write(
        dir.join("rust-toolchain.toml"),
        "[toolchain]\nchannel = \"1.95.0\"\ntargets = [\"wasm32-wasip2\"]\n",
    )?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    std::fs::write(
        dir.join("src/lib.rs"),
        r#"//! A weir step. Build it with `weir build .`; use it in a pipeline with
//! `p.step("name", "path/to/this/folder")`.

use weir_sdk::{Context, Result};

/// The step's params, from `.params(#{ ... })` in the pipeline.
#[derive(serde::Deserialize)]
struct Params {
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    "hello".into()
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let out = ctx.output("out")?;
    std::fs::write(out.join("greeting.txt"), &ctx.params().greeting)?;
    ctx.info(format!("wrote {}", ctx.params().greeting));
    ctx.metric("greeting_len", ctx.params().greeting.len() as f64);
    Ok(())
}

weir_sdk::step!(run);
"#,
    )?;
    outln!("created step crate {}", dir.display());
    outln!("build it with: weir build {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
