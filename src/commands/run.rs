//! `weir run PIPELINE`: compile the script, run it, print the outcome.

use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use weir_runtime::{RunEvent, RunOptions, RunState, Runtime, StepState};

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
    /// Set a pipeline param declared with param(): --param name=value (repeatable)
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Stop at the first failing step instead of letting independent branches finish
    #[arg(long)]
    fail_fast: bool,
    /// Continue an earlier run of this pipeline (same run number) after a crash or failure
    #[arg(long, value_name = "RUN")]
    resume: Option<String>,
    /// Print steps' log lines and metrics as they happen
    #[arg(long, short = 'f')]
    follow: bool,
    /// Print no line per step, only failures, retries and the summary
    #[arg(long, short = 'q', conflicts_with = "follow")]
    quiet: bool,
    /// Trust the component with this digest (12+ hex characters) with the capabilities its step requests (repeatable)
    #[arg(long, value_name = "DIGEST")]
    trust: Vec<String>,
    /// Send every step to the cluster's workers (weir worker) through the
    /// queue in the --records database instead of running it here; with
    /// --remote, the artifacts travel through that object storage
    #[arg(long)]
    cluster: bool,
    /// Trust every component (development machines only). Step crates named
    /// in the project's weir.toml are trusted without flags.
    #[arg(long)]
    trust_all: bool,
}

/// Parses `--param name=value` flags.
pub fn parse_params(flags: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for f in flags {
        let Some((k, v)) = f.split_once('=') else {
            anyhow::bail!("--param {f:?}: expected NAME=VALUE");
        };
        if out.insert(k.trim().to_string(), v.to_string()).is_some() {
            anyhow::bail!("--param {k}: given twice");
        }
    }
    Ok(out)
}

/// Runs `weir run`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Shared with the run, not copied.
    let plan = std::sync::Arc::new(weir_dsl::compile_file_with(
        &args.pipeline,
        &parse_params(&args.params)?,
    )?);
    let resume = args.resume.as_deref().map(super::parse_run).transpose()?;
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| plan.base_dir.join(".weir"));
    let rt = Runtime::new(&config_for(&args, &plan, &store)?)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(rt.jobs())
        .enable_all()
        .build()?;

    let (bar, on_event) = progress_display(&plan, args.follow, args.quiet);
    let cancel = CancellationToken::new();
    let report = tokio.block_on(async {
        let c = cancel.clone();
        let b = bar.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                b.println("interrupted: stopping the run (running steps are cancelled)");
                c.cancel();
            }
        });
        rt.run_shared(
            plan.clone(),
            RunOptions {
                on_event: Some(on_event),
                cancel: Some(cancel.clone()),
                fail_fast: args.fail_fast,
                resume,
                ..RunOptions::default()
            },
        )
        .await
    });
    bar.finish_and_clear();
    let report = report.map_err(with_cli_hint)?;

    print_summary(&rt, &plan, &report, &store)?;
    if let Some(e) = &report.error {
        let e = super::one_line(e);
        let text = format!("error: run {} {}: {e}\n", report.run, report.state);
        let _ = std::io::Write::write_all(
            &mut std::io::stderr().lock(),
            weir_runtime::names::inert(&text, true).as_bytes(),
        );
    }
    Ok(match report.state {
        RunState::Succeeded => ExitCode::SUCCESS,
        RunState::Cancelled => ExitCode::from(130),
        _ => ExitCode::from(1),
    })
}

/// The runtime configuration for `weir run`: the project's, with the
/// command line's trust flags.
fn config_for(
    args: &Args,
    plan: &weir_runtime::Plan,
    store: &std::path::Path,
) -> anyhow::Result<weir_runtime::Config> {
    let mut config = super::runtime_config(&plan.base_dir, store, args.jobs, |policy| {
        for d in &args.trust {
            policy
                .trust(d)
                .map_err(|e| anyhow::anyhow!("--trust {d}: {e}"))?;
        }
        if args.trust_all {
            policy.trust_all();
        }
        Ok(())
    })?;
    if args.cluster {
        super::cluster_config(&mut config, args.jobs)?;
    }
    Ok(config)
}

/// The progress display: a spinner with counts on a terminal, lines on
/// stderr otherwise; a line per top-level step (map children counted on
/// their map's line), retries, failures, and with `follow` the steps' logs
/// and metrics. Returns the bar (to clear at the end) and the event sink.
/// (Long because it is one `match` over the event kinds, a few lines each.)
fn progress_display(
    plan: &weir_runtime::Plan,
    follow: bool,
    quiet: bool,
) -> (ProgressBar, weir_runtime::run::EventSink) {
    let bar = ProgressBar::new(plan.steps.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The spinner moves while cargo or a step works: nothing looks stuck.
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let b = bar.clone();
    // Progress lines go to stderr, through the bar when it is drawn.
    let say = move |b: &ProgressBar, line: String| {
        // Step errors, log lines and metric names are guest text.
        let mut line = weir_runtime::names::inert(&line, true).into_owned();
        if b.is_hidden() {
            // One write per line (eprintln! makes two), and a closed stderr
            // does not stop the run.
            line.push('\n');
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        } else {
            b.println(line);
        }
    };
    // When a "still working" line was last printed without a terminal.
    let last_said = std::sync::Mutex::new(std::time::Instant::now());
    // Children finished per map step, by state.
    let children: std::sync::Mutex<BTreeMap<String, BTreeMap<&'static str, usize>>> =
        Default::default();
    // Where each step is declared, for failures found at run time (a
    // param that does not fit the step's type, say).
    let declared: std::collections::HashMap<String, String> = plan
        .steps
        .iter()
        .filter_map(|s| s.origin.clone().map(|o| (s.name.clone(), o)))
        .collect();
    let on_event = Arc::new(move |e: &RunEvent| match e {
        RunEvent::Preparing { what } => {
            // Without a terminal there is no spinner: a line at most every
            // few seconds says what the run waits on (a long cargo build).
            if b.is_hidden() && !quiet {
                let mut last = last_said.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= std::time::Duration::from_secs(5) {
                    *last = std::time::Instant::now();
                    say(&b, format!("  ...    {what}"));
                }
            }
            b.set_message(what.clone())
        }
        RunEvent::Building { workspace, crates } => {
            let line = format!(
                "  build  {} ({} in {}, one cargo run)",
                crates.join(", "),
                if crates.len() == 1 {
                    "1 crate".to_string()
                } else {
                    format!("{} crates", crates.len())
                },
                workspace.display()
            );
            b.set_message(format!("building {}", crates.join(", ")));
            say(&b, line)
        }
        RunEvent::Built { crates, took } => {
            say(&b, format!("  built  {} ({took:.1?})", crates.join(", ")))
        }
        RunEvent::RunStarted {
            run,
            steps,
            resumed,
        } => {
            let verb = if *resumed { "resuming run" } else { "run" };
            if !quiet {
                say(&b, format!("{verb} {run}: {}", steps_word(*steps)))
            }
        }
        RunEvent::StepRetrying {
            step,
            attempt,
            error,
            delay,
        } => say(
            &b,
            format!(
                "  retry  {step}: attempt {attempt} failed ({}); retrying in {delay:.1?}",
                super::one_line(error)
            ),
        ),
        RunEvent::StepStarted { step } => b.set_message(format!("running {step}")),
        RunEvent::StepFinished {
            step,
            state,
            duration,
            error,
        } => {
            let failed = *state == StepState::Failed;
            // A map's children are counted, not listed (failures are): the
            // map's own line says how many there were.
            let unit = weir_runtime::names::UnitName::parse(step);
            if unit.child.is_some() {
                let mut c = children.lock().unwrap_or_else(|p| p.into_inner());
                *c.entry(unit.step.to_string())
                    .or_default()
                    .entry(state.as_str())
                    .or_default() += 1;
                if !failed {
                    return;
                }
            } else {
                b.inc(1);
            }
            if quiet && !failed {
                return;
            }
            let mark = match state {
                StepState::Succeeded => "ok    ",
                StepState::Cached => "cached",
                StepState::Skipped => "skip  ",
                StepState::Cancelled => "cancel",
                _ => "FAILED",
            };
            let mut line = format!("  {mark} {step} ({:.1?})", duration);
            if let Some(counts) = children
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(step.as_str())
            {
                let total: usize = counts.values().sum();
                let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
                line.push_str(&format!(" [{total} children: {}]", parts.join(", ")));
            }
            if let Some(e) = error {
                line.push_str(&format!("\n         {}", e.replace('\n', "\n         ")));
            }
            let base = weir_runtime::names::UnitName::parse(step).step;
            if failed && let Some(at) = declared.get(base) {
                line.push_str(&format!("\n         (step '{base}' is declared at {at})"));
            }
            say(&b, line);
        }
        RunEvent::StepLog {
            step,
            attempt,
            line,
        } if follow => {
            let msg = super::one_line(&line.message);
            say(&b, format!("  [{step}#{attempt}] {:<6} {msg}", line.level))
        }
        RunEvent::StepMetric { step, metric, .. } if follow => say(
            &b,
            format!(
                "  [{step}] metric {} = {}",
                super::one_line(&metric.name),
                metric.value
            ),
        ),
        _ => {}
    });
    (bar, on_event)
}

/// The summary on stdout: counts, early cutoff, outputs, the schedule,
/// hooks, and the models registered.
fn print_summary(
    rt: &Runtime,
    plan: &weir_runtime::Plan,
    report: &weir_runtime::RunReport,
    store: &std::path::Path,
) -> anyhow::Result<()> {
    let count = |st: StepState| report.steps.iter().filter(|s| s.state == st).count();
    let mut summary = format!(
        "run {} {}: {}, {} executed, {} cached",
        report.run,
        report.state,
        steps_word(report.steps.len()),
        count(StepState::Succeeded),
        count(StepState::Cached)
    );
    for (st, word) in [
        (StepState::Failed, "failed"),
        (StepState::Skipped, "skipped"),
        (StepState::Cancelled, "cancelled"),
    ] {
        if count(st) > 0 {
            summary.push_str(&format!(", {} {word}", count(st)));
        }
    }
    outln!("{summary} (store {})", store.display());
    let cutoff: Vec<&str> = report
        .steps
        .iter()
        .chain(&report.children)
        .filter(|s| s.early_cutoff)
        .map(|s| s.name.as_str())
        .collect();
    if !cutoff.is_empty() {
        let shown = cutoff.len().min(10);
        let more = if cutoff.len() > shown {
            format!(" and {} more", cutoff.len() - shown)
        } else {
            String::new()
        };
        outln!(
            "  early cutoff: {}{more} re-ran with outputs identical to the previous run, so their dependants stayed cached",
            cutoff[..shown].join(", ")
        );
    }
    // The results (outputs no step reads) with the folder to open; the
    // others by digest, up to a screenful (their folders are laid out on
    // demand: `weir cat`, `weir show`). Gathered into one write: a line
    // each is a system call each.
    const INTERMEDIATE_SHOWN: usize = 20;
    let read = plan.read_outputs();
    let mut outputs = String::new();
    let mut intermediate = 0;
    for s in &report.steps {
        for (name, d) in &s.outputs {
            if read.contains(&(s.name.as_str(), name.as_str())) {
                intermediate += 1;
                if intermediate <= INTERMEDIATE_SHOWN {
                    let _ = writeln!(outputs, "  {}.{name} = {}", s.name, d.short());
                }
                continue;
            }
            // A result a worker made is fetched from the remote first.
            let store = rt.store();
            let path = match store.is_valid_tree(d) {
                Ok(true) => store
                    .view(d)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                _ => "(not in this store)".into(),
            };
            let _ = writeln!(outputs, "  {}.{name} = {} {}", s.name, d.short(), path);
        }
    }
    if intermediate > INTERMEDIATE_SHOWN {
        let _ = writeln!(
            outputs,
            "  ({} more outputs of intermediate steps: `weir show {}`)",
            intermediate - INTERMEDIATE_SHOWN,
            report.run
        );
    }
    out!("{outputs}");
    if let Some(cron) = &plan.schedule {
        outln!(
            "schedule: {cron} (this run was started by hand; `weir serve` runs the pipeline on its schedule)"
        );
    }
    if !plan.serve.on_failure.is_empty() || !plan.serve.on_success.is_empty() {
        outln!(
            "hooks: the pipeline's on_failure/on_success hooks are called by `weir serve` only; `weir run` did not call them"
        );
    }
    for s in plan.steps.iter().filter(|s| s.register.is_some()) {
        let (Some(name), Ok(output)) = (&s.register, s.registered_output()) else {
            continue;
        };
        let Some(d) = report.step(&s.name).and_then(|r| r.outputs.get(output)) else {
            continue;
        };
        if let Some(v) = rt
            .records()
            .models(Some(name))?
            .into_iter()
            .find(|v| v.digest == *d)
        {
            let metrics: Vec<String> = v
                .metrics
                .iter()
                .map(|(k, x)| format!("{k}={}", super::fmt_metric(*x)))
                .collect();
            let new = if v.run == report.run {
                "registered"
            } else {
                "already registered"
            };
            outln!(
                "model {}@{} {new} (artifact {}, stage {}){}{}",
                v.name,
                v.version,
                d.short(),
                v.stage,
                if metrics.is_empty() { "" } else { ": " },
                metrics.join(" ")
            );
        }
    }
    Ok(())
}

/// "1 step", "3 steps".
fn steps_word(n: usize) -> String {
    if n == 1 {
        "1 step".into()
    } else {
        format!("{n} steps")
    }
}

/// The runtime says what to do through its API; on the command line, the
/// flag that does it.
fn with_cli_hint(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<weir_runtime::NotTrusted>() {
        Some(nt) => {
            let how = if nt.requested {
                format!("weir run --trust {}", nt.digest.short())
            } else {
                format!(
                    "add .requires(\"{}\") to the step, and weir run --trust {}",
                    nt.capability,
                    nt.digest.short()
                )
            };
            anyhow::anyhow!("{e:#}\nhint: {how}")
        }
        None => e,
    }
}
