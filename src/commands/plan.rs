//! `weir plan PIPELINE`: validate a script and print its plan as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `weir plan` and `weir check`.
#[derive(clap::Args)]
pub struct Args {
    /// The pipeline script (.rhai)
    pipeline: PathBuf,
    /// Set a pipeline param: --param name=value (repeatable)
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    params: Vec<String>,
}

fn compile(args: &Args) -> anyhow::Result<weir_runtime::Plan> {
    Ok(weir_dsl::compile_file_with(
        &args.pipeline,
        &super::run::parse_params(&args.params)?,
    )?)
}

/// Runs `weir plan`: the plan as stable JSON.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    outln!("{}", compile(&args)?.to_json_pretty());
    Ok(ExitCode::SUCCESS)
}

/// Runs `weir check`: validates without running, prints a one-line summary.
pub fn check(args: Args) -> anyhow::Result<ExitCode> {
    let plan = compile(&args)?;
    let maps = plan.steps.iter().filter(|s| s.map.is_some()).count();
    let gates = plan.steps.iter().filter(|s| s.when.is_some()).count();
    outln!(
        "{}: pipeline '{}' is valid: {} steps ({maps} maps, {gates} gated), {} params{}",
        args.pipeline.display(),
        plan.name,
        plan.steps.len(),
        plan.params.len(),
        plan.schedule
            .as_ref()
            .map(|s| format!(", schedule {s:?}"))
            .unwrap_or_default()
    );
    // What it holds, by name (as docs/cli.md says).
    let names = |f: &dyn Fn(&weir_runtime::StepPlan) -> bool| -> String {
        let v: Vec<&str> = plan
            .steps
            .iter()
            .filter(|s| f(s))
            .map(|s| s.name.as_str())
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    };
    outln!("  steps:  {}", names(&|_| true));
    outln!("  maps:   {}", names(&|s| s.map.is_some()));
    outln!("  gated:  {}", names(&|s| s.when.is_some()));
    let params: Vec<String> = plan
        .params
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    outln!(
        "  params: {}",
        if params.is_empty() {
            "none".into()
        } else {
            params.join(", ")
        }
    );
    if let Some(s) = &plan.schedule {
        let tz = plan.serve.timezone.as_deref().unwrap_or("UTC");
        outln!("  schedule: {s} ({tz}; fired by `weir serve`)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `weir graph`.
#[derive(clap::Args)]
pub struct GraphArgs {
    #[command(flatten)]
    plan: Args,
    /// Output format
    #[arg(long, value_enum, default_value = "mermaid")]
    format: GraphFormat,
}

/// Graph formats.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    /// Mermaid flowchart
    Mermaid,
    /// Graphviz DOT
    Dot,
}

/// Runs `weir graph`: the DAG as Mermaid or DOT.
pub fn graph(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let plan = compile(&args.plan)?;
    let deps = plan.dependencies();
    let mut out = String::new();
    match args.format {
        GraphFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for s in &plan.steps {
                let shape = if s.map.is_some() {
                    format!("{}[[\"{} (map)\"]]", s.name, s.name)
                } else if s.when.is_some() {
                    format!("{}{{\"{}\"}}", s.name, s.name)
                } else {
                    format!("{}[\"{}\"]", s.name, s.name)
                };
                out.push_str(&format!("    {shape}\n"));
            }
            for (i, ds) in deps.iter().enumerate() {
                for &d in ds {
                    out.push_str(&format!(
                        "    {} --> {}\n",
                        plan.steps[d].name, plan.steps[i].name
                    ));
                }
            }
        }
        GraphFormat::Dot => {
            out.push_str(&format!("digraph \"{}\" {{\n    rankdir=TB;\n", plan.name));
            for s in &plan.steps {
                let shape = if s.map.is_some() {
                    "box3d"
                } else if s.when.is_some() {
                    "diamond"
                } else {
                    "box"
                };
                out.push_str(&format!("    \"{}\" [shape={shape}];\n", s.name));
            }
            for (i, ds) in deps.iter().enumerate() {
                for &d in ds {
                    out.push_str(&format!(
                        "    \"{}\" -> \"{}\";\n",
                        plan.steps[d].name, plan.steps[i].name
                    ));
                }
            }
            out.push_str("}\n");
        }
    }
    out!("{out}");
    Ok(ExitCode::SUCCESS)
}
