//! `weir init [DIR]` makes a project; `weir new step NAME` adds a step crate
//! to the project's step workspace.
//!
//! A project builds with the `weir` binary and Rust alone: the binary
//! carries the step SDK and the WIT contract of its own version and writes
//! them into the project (`steps/sdk/`), so no weir checkout is needed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `weir new` creates.
#[derive(clap::Subcommand)]
pub enum What {
    /// A step crate, added to the project's step workspace (steps/)
    Step(StepArgs),
}

/// Arguments of `weir new step`.
#[derive(clap::Args)]
pub struct StepArgs {
    /// The step's name (also the crate and folder name)
    name: String,
    /// The project [default: the project of the current folder]
    #[arg(long)]
    project: Option<PathBuf>,
}

/// Arguments of `weir init`.
#[derive(clap::Args)]
pub struct InitArgs {
    /// The project folder (created if missing; must hold no weir project yet)
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The pipeline's name [default: the folder's name]
    #[arg(long)]
    name: Option<String>,
}

/// The step SDK and the WIT contract of this weir, as written into projects:
/// (path under `steps/sdk/`, contents). `weir-sdk/` finds the contract at
/// `../wit`, as in the weir repository.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "weir-sdk/Cargo.toml",
        include_str!("../../sdk-guest/Cargo.toml"),
    ),
    (
        "weir-sdk/src/lib.rs",
        include_str!("../../sdk-guest/src/lib.rs"),
    ),
    (
        "weir-sdk/src/dataset.rs",
        include_str!("../../sdk-guest/src/dataset.rs"),
    ),
    ("wit/step.wit", include_str!("../../wit/step.wit")),
    ("wit/gpu.wit", include_str!("../../wit/gpu.wit")),
];

/// The dependency versions the SDK is tested with; a new project starts
/// from them (cargo adds the project's own crates).
const SDK_LOCK: &str = include_str!("../../sdk-guest/Cargo.lock");

/// The toolchain weir itself is built and tested with.
const TOOLCHAIN: &str = include_str!("../../rust-toolchain.toml");

/// The folder of a project's step workspace.
const STEPS: &str = "steps";

/// Runs `weir init`.
pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir;
    for taken in ["weir.toml", "pipeline.rhai", STEPS] {
        if dir.join(taken).exists() {
            anyhow::bail!(
                "{} already exists: {} holds a project already (add steps to it with `weir new step NAME`)",
                dir.join(taken).display(),
                dir.display()
            );
        }
    }
    let name = match args.name {
        Some(n) => {
            weir_runtime::names::check_name("pipeline", &n)?;
            n
        }
        None => pipeline_name(&dir),
    };
    std::fs::create_dir_all(&dir)?;
    write_new(&dir.join("weir.toml"), WEIR_TOML)?;
    write_new(&dir.join(".gitignore"), "/.weir/\n/steps/target/\n")?;
    write_new(
        &dir.join("pipeline.rhai"),
        &PIPELINE.replace("{name}", &name),
    )?;
    let steps = dir.join(STEPS);
    std::fs::create_dir_all(&steps)?;
    write_new(&steps.join("Cargo.toml"), STEPS_TOML)?;
    write_new(&steps.join("Cargo.lock"), SDK_LOCK)?;
    write_new(&steps.join("rust-toolchain.toml"), &toolchain_file())?;
    write_sdk(&steps.join("sdk"))?;
    write_step(&steps, "hello")?;
    outln!("created weir project {name} in {}", dir.display());
    outln!("  weir.toml        trust file (what steps may use beyond the sandbox)");
    outln!("  pipeline.rhai    the pipeline");
    outln!("  steps/hello      its first step (a Rust crate; add more with `weir new step NAME`)");
    outln!(
        "  steps/sdk        the step SDK and WIT contract of weir {}",
        env!("CARGO_PKG_VERSION")
    );
    let cd = if dir == Path::new(".") {
        String::new()
    } else {
        format!("cd {} && ", dir.display())
    };
    outln!("run it with: {cd}weir run pipeline.rhai");
    Ok(ExitCode::SUCCESS)
}

/// Runs `weir new`.
pub fn run(what: What) -> anyhow::Result<ExitCode> {
    let What::Step(args) = what;
    weir_runtime::names::check_name("step", &args.name)?;
    let start = match args.project {
        Some(p) => p,
        None => std::env::current_dir()?,
    };
    let Some(project) = find_project(&start) else {
        anyhow::bail!(
            "{} is not inside a weir project (no steps/Cargo.toml beside a weir.toml here or above); make one with `weir init`",
            start.display()
        );
    };
    let steps = project.join(STEPS);
    if steps.join(&args.name).exists() {
        anyhow::bail!(
            "{} already exists; choose another name",
            steps.join(&args.name).display()
        );
    }
    let manifest = steps.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let updated = add_member(&text, &args.name).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; add \"{}\" to [workspace] members by hand",
            manifest.display(),
            args.name
        )
    })?;
    write_step(&steps, &args.name)?;
    std::fs::write(&manifest, updated)?;
    outln!(
        "created step crate {} (a member of {})",
        steps.join(&args.name).display(),
        manifest.display()
    );
    outln!(
        "use it in a pipeline with: p.step(\"{0}\", \"steps/{0}\").output(\"out\")",
        args.name
    );
    Ok(ExitCode::SUCCESS)
}

/// The project folder at or above `dir`: one with a `weir.toml` and a
/// `steps/Cargo.toml`.
fn find_project(dir: &Path) -> Option<PathBuf> {
    let dir = dir.canonicalize().ok()?;
    dir.ancestors()
        .find(|d| d.join("weir.toml").is_file() && d.join(STEPS).join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

/// A pipeline name from the project folder's name.
fn pipeline_name(dir: &Path) -> String {
    let folder = std::path::absolute(dir)
        .ok()
        .and_then(|d| {
            d.components()
                .next_back()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let name: String = folder
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if weir_runtime::names::check_name("pipeline", &name).is_ok() {
        name
    } else {
        "pipeline".into()
    }
}

/// `[workspace] members` of `text` with `name` added; the rest of the file
/// (comments included) is kept as it was.
fn add_member(text: &str, name: &str) -> Result<String, String> {
    let members = |t: &str| -> Result<Vec<String>, String> {
        let v: toml::Table = toml::from_str(t).map_err(|e| e.to_string())?;
        Ok(v.get("workspace")
            .and_then(|w| w.get("members"))
            .and_then(|m| m.as_array())
            .ok_or("no [workspace] members list")?
            .iter()
            .filter_map(|m| m.as_str().map(String::from))
            .collect())
    };
    let before = members(text)?;
    if before.iter().any(|m| m == name) {
        return Err(format!("\"{name}\" is a member already"));
    }
    let at = text
        .match_indices("members")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || text[..i].ends_with('\n'))
        .ok_or("no [workspace] members list")?;
    let close = text[at..]
        .find(']')
        .ok_or("the members list is not closed")?
        + at;
    // The last line before `]`, with a comma after its element (before any comment).
    let head = text[..close].trim_end();
    let (earlier, last) = head.rsplit_once('\n').unwrap_or(("", head));
    let (code, comment) = last.split_once('#').unwrap_or((last, ""));
    let code = code.trim_end();
    let sep = if code.ends_with('[') || code.ends_with(',') || code.is_empty() {
        ""
    } else {
        ","
    };
    let last = if comment.is_empty() {
        format!("{code}{sep}")
    } else {
        format!("{code}{sep} #{comment}")
    };
    let head = if earlier.is_empty() && !head.contains('\n') {
        last
    } else {
        format!("{earlier}\n{last}")
    };
    let updated = format!("{head}\n    \"{name}\",\n{}", &text[close..]);
    match members(&updated) {
        Ok(after) if after.len() == before.len() + 1 && after.iter().any(|m| m == name) => {
            Ok(updated)
        }
        _ => Err("the members list has a shape weir does not edit".into()),
    }
}

/// Writes the SDK and WIT files under `dir`.
fn write_sdk(dir: &Path) -> anyhow::Result<()> {
    for (path, text) in SDK_FILES {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_new(&p, text)?;
    }
    write_new(
        &dir.join("README.md"),
        &format!(
            "The step SDK (`weir-sdk/`) and the WIT contract (`wit/`) of weir {}, written by `weir init`.\n\
             Steps depend on them through `steps/Cargo.toml`; replace this folder to move to another weir version.\n",
            env!("CARGO_PKG_VERSION")
        ),
    )
}

/// Writes the step crate `steps/NAME`.
fn write_step(steps: &Path, name: &str) -> anyhow::Result<()> {
    let dir = steps.join(name);
    std::fs::create_dir_all(dir.join("src"))?;
    write_new(
        &dir.join("Cargo.toml"),
        &format!(
            r#"[package]
name = "{}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
weir-sdk.workspace = true
serde.workspace = true
"#,
            name.replace('-', "_")
        ),
    )?;
    write_new(&dir.join("src/lib.rs"), STEP_LIB)
}

/// Writes a file that must not exist yet.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The project's toolchain file: weir's own channel, with the step target.
fn toolchain_file() -> String {
    let channel = TOOLCHAIN
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel"))
        .and_then(|v| v.split('"').nth(1))
        .unwrap_or("stable");
    format!(
        "# The Rust toolchain the steps are built with: a pinned version, so the same\n\
         # sources give the same component bytes (and cache keys) on every machine.\n\
         [toolchain]\nchannel = \"{channel}\"\ntargets = [\"{}\"]\n",
        weir_runtime::builder::STEP_TARGET
    )
}

const WEIR_TOML: &str = r#"# This project's trust file: whoever runs weir trusts it; pipeline scripts
# and step components need not be trusted. A step runs in the minimal
# sandbox (no network, no environment, no files but its inputs and its own
# output folder) unless an entry here grants its component more, e.g. the
# host's training kernels to one of this project's step crates:
#
# [[trust]]
# source = "steps/train"
# capabilities = ["gpu"]
#
# See docs/sandbox.md for digests, publishers and limit caps.
"#;

const PIPELINE: &str = r#"// The {name} pipeline. Run it with `weir run pipeline.rhai`, then see what
// happened with `weir runs`, `weir show 1` and `weir logs 1 hello`.
//
//   weir run pipeline.rhai --param greeting=hi    (a new param: the step runs again)
//   weir run pipeline.rhai                        (nothing changed: every step is cached)

let greeting = param("greeting", "hello");

let p = pipeline("{name}");

// Each step is a Rust crate in steps/ (add one with `weir new step NAME`),
// built to a WebAssembly component and run in its own sandbox.
p.step("hello", "steps/hello")
    .output("out")
    .params(#{ greeting: greeting });
"#;

const STEPS_TOML: &str = r#"# The steps of this project, one crate each, in one cargo workspace:
# `weir run` builds the stale ones with one cargo invocation.
# `weir new step NAME` adds a member.
[workspace]
members = [
    "hello",
]
resolver = "3"

[workspace.dependencies]
# The step SDK of the weir that made this project (see sdk/README.md).
weir-sdk = { path = "sdk/weir-sdk" }
serde = { version = "1", features = ["derive"] }
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
# Keeps the name section: a trap names the function it happened in.
strip = "debuginfo"
"#;

const STEP_LIB: &str = r#"//! A weir step: `weir run` builds it (a WebAssembly component) and runs it
//! in its own sandbox. Use it in a pipeline with `p.step("name", "steps/name")`.

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
"#;

#[cfg(test)]
mod tests {
    use super::add_member;

    #[test]
    fn a_member_is_added_and_comments_kept() {
        let t = "# top\n[workspace]\nmembers = [\n    \"hello\", # first\n]\nresolver = \"3\"\n";
        let u = add_member(t, "train").unwrap();
        assert!(u.starts_with("# top\n") && u.contains("# first"), "{u}");
        assert!(u.contains("\"hello\", # first\n    \"train\",\n]"), "{u}");
        let one_line = "[workspace]\nmembers = [\"a\", \"b\"]\n";
        let u = add_member(one_line, "c").unwrap();
        assert!(u.contains("\"b\",\n    \"c\",\n]"), "{u}");
        let empty = "[workspace]\nmembers = []\n";
        assert!(add_member(empty, "c").unwrap().contains("[\n    \"c\",\n]"));
        assert!(add_member(t, "hello").is_err());
        assert!(add_member("[package]\nname = \"x\"\n", "c").is_err());
    }
}
