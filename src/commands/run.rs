//! `weir run PIPELINE`: compile the script, run it, print the outcome.

use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use weir_runtime::{Config, RunEvent, RunOptions, RunState, Runtime, StepState};

/// Arguments of `weir run`.
#[derive(clap::Args)]
pub struct Args {
    /// The pipeline script (.rhai)
    pipeline: PathBuf,
    /// Store folder [default: .weir beside the pipeline]
    #[arg(long)]
    store: Option<PathBuf>,
    /// Steps to run at once [default: number of cores]
    #[arg(long, short)]
    jobs: Option<usize>,
}

/// Runs `weir run`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = weir_dsl::compile_file(&args.pipeline)?;
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| plan.base_dir.join(".weir"));
    let mut config = Config::new(&store);
    if let Some(j) = args.jobs {
        config = config.jobs(j);
    }
    let jobs = config.jobs;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(jobs.max(1))
        .enable_all()
        .build()?;
    let rt = Runtime::new(config)?;

    let bar = ProgressBar::new(plan.steps.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    // Progress lines go to stderr, through the bar when it is drawn.
    let say = move |b: &ProgressBar, line: String| {
        if b.is_hidden() {
            eprintln!("{line}");
        } else {
            b.println(line);
        }
    };
    let on_event = Arc::new(move |e: &RunEvent| match e {
        RunEvent::Preparing { what } => b.set_message(what.clone()),
        RunEvent::RunStarted { run, steps } => say(&b, format!("run {run}: {steps} steps")),
        RunEvent::StepStarted { step } => b.set_message(format!("running {step}")),
        RunEvent::StepFinished {
            step,
            state,
            duration,
            error,
        } => {
            b.inc(1);
            let mark = match state {
                StepState::Succeeded => "ok    ",
                StepState::Cached => "cached",
                StepState::Skipped => "skip  ",
                _ => "FAILED",
            };
            let mut line = format!("  {mark} {step} ({:.1?})", duration);
            if let Some(e) = error {
                line.push_str(&format!("\n         {}", e.replace('\n', "\n         ")));
            }
            say(&b, line);
        }
    });
    let report = tokio.block_on(rt.run(
        &plan,
        RunOptions {
            on_event: Some(on_event),
        },
    ));
    bar.finish_and_clear();
    let report = report?;

    let executed = report
        .steps
        .iter()
        .filter(|s| s.state == StepState::Succeeded)
        .count();
    let cached = report
        .steps
        .iter()
        .filter(|s| s.state == StepState::Cached)
        .count();
    println!(
        "run {} {}: {} steps, {executed} executed, {cached} cached (store {})",
        report.run,
        report.state,
        report.steps.len(),
        store.display()
    );
    for s in &report.steps {
        for (name, d) in &s.outputs {
            let path = rt
                .store()
                .view(d)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            println!("  {}.{name} = {} {}", s.name, d.short(), path);
        }
    }
    if let Some(e) = &report.error {
        eprintln!("error: run {} failed: {e}", report.run);
    }
    Ok(if report.state == RunState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
