//! `weir worker`: serves the cluster's queue of units (in the PostgreSQL
//! records database): claims units, runs them in their sandboxes with a
//! store of its own (a read-through cache of the shared remote), and
//! completes them ([`weir_runtime::cluster::Worker`]). SIGTERM or Ctrl-C
//! drains (no new claims; what runs finishes); a second one cancels.

use crate::StoreArg;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weir_runtime::cluster::{Worker, WorkerEvent, WorkerOptions};

/// Arguments of `weir worker`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// Serve units whose steps carry these tags (.tags("gpu")), besides
    /// untagged ones: --tags gpu,large
    #[arg(long, value_delimiter = ',', value_name = "TAG,...")]
    tags: Vec<String>,
    /// Units to run at once [default: number of cores]
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Seconds a claim lasts without a heartbeat; a unit of a worker that
    /// stopped answering goes to another after this long
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    lease: f64,
    /// This worker's name in the cluster [default: HOST-PID]
    #[arg(long)]
    name: Option<String>,
}

/// Runs `weir worker` until SIGTERM or Ctrl-C (exit 0 after draining).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let queue = super::cluster_queue("weir worker")?;
    let (store, bucket) = worker_store(&args.store)?;
    let mut config = super::runtime_config(&store, &store, args.jobs, |_| Ok(()))?;
    if let Some(url) = bucket {
        config.remote(Arc::new(weir_object_store::BucketRemote::connect(&url)?));
    }
    // Its own crates are never built: components come from the queue.
    config.build_crates(false);
    let runtime = weir_runtime::Runtime::new(&config)?;
    anyhow::ensure!(
        args.lease.is_finite() && args.lease >= 0.3,
        "--lease {}: expected at least 0.3 seconds",
        args.lease
    );
    let mut options = WorkerOptions::new(args.name.unwrap_or_else(default_name));
    options.tags = args.tags.iter().map(|t| t.trim().to_string()).collect();
    options.jobs = runtime.jobs();
    options.lease = Duration::from_secs_f64(args.lease);
    options.on_event = Some(Arc::new(print_event));
    for t in &options.tags {
        weir_runtime::names::check_name("tag", t).map_err(|e| anyhow::anyhow!("--tags: {e}"))?;
    }
    let worker = Worker::new(runtime, queue, &options);
    let (drain, stop) = (CancellationToken::new(), CancellationToken::new());
    watch_signals(&drain, &stop)?;
    eprintln!(
        "weir worker {}: serving the queue with {} slot(s){}",
        options.name,
        options.jobs,
        if options.tags.is_empty() {
            String::new()
        } else {
            format!(", tags {}", options.tags.join(","))
        }
    );
    let report = worker.run(&drain, &stop)?;
    eprintln!(
        "weir worker {}: stopped; {} unit(s) completed, {} finished after their lease was lost",
        options.name, report.completed, report.lost
    );
    Ok(ExitCode::SUCCESS)
}

/// One line on stderr per unit started and ended.
fn print_event(e: &WorkerEvent) {
    let run =
        |r: &Option<weir_runtime::RunId>| r.map(|r| format!(" of run {r}")).unwrap_or_default();
    let line = match e {
        WorkerEvent::Started {
            run: r,
            step,
            delivery,
        } => {
            let again = if *delivery > 1 {
                format!(" (delivery {delivery}: a worker before this one lost it)")
            } else {
                String::new()
            };
            format!("  start  {step}{}{again}", run(r))
        }
        WorkerEvent::Finished {
            run: r,
            step,
            failure,
            duration,
            accepted,
        } => {
            let state = failure.map_or("ok    ", |k| {
                if k == weir_runtime::records::FailureKind::Cancelled {
                    "cancel"
                } else {
                    "FAILED"
                }
            });
            let lost = if *accepted {
                ""
            } else {
                "; its lease was lost: outcome dropped"
            };
            let why = failure.map(|k| format!(" ({k})")).unwrap_or_default();
            format!("  {state} {step}{}{why} ({duration:.1?}){lost}", run(r))
        }
    };
    let text = weir_runtime::names::inert(&line, false).into_owned() + "\n";
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), text.as_bytes());
}

/// The worker's local store, and the bucket when `--store` names one
/// (`--store s3://bucket/prefix`: the bucket is the shared remote, and the
/// local store a cache under `$XDG_CACHE_HOME/weir/worker-store` or
/// `~/.cache/weir/worker-store`).
fn worker_store(arg: &StoreArg) -> anyhow::Result<(std::path::PathBuf, Option<String>)> {
    let store = arg.resolve();
    let text = store.to_string_lossy().into_owned();
    if !weir_object_store::is_url(&text) {
        return Ok((store, None));
    }
    anyhow::ensure!(
        !super::has_remote(),
        "--store {text} names a bucket and --remote (or $WEIR_REMOTE) another: give the bucket once"
    );
    let cache = super::user_cache().ok_or_else(|| {
        anyhow::anyhow!(
            "--store {text}: no $HOME for the local cache; give --remote {text} and --store DIR"
        )
    })?;
    Ok((cache.join("worker-store"), Some(text)))
}

/// `HOST-PID`.
fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// The first SIGTERM or Ctrl-C drains, the second stops.
fn watch_signals(drain: &CancellationToken, stop: &CancellationToken) -> anyhow::Result<()> {
    let (drain, stop) = (drain.clone(), stop.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("weir-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                for _ in 0..2 {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                    if drain.is_cancelled() {
                        eprintln!("weir worker: stopping (cancelling the units it holds)");
                        stop.cancel();
                        return;
                    }
                    eprintln!(
                        "weir worker: draining (finishing the units it holds; again to cancel them)"
                    );
                    drain.cancel();
                }
            })
        })?;
    Ok(())
}

/// Arguments of `weir workers`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Print the workers and the queue as JSON
    #[arg(long)]
    json: bool,
    /// Show workers heard of within this many seconds
    #[arg(long, default_value_t = weir_runtime::cluster::WORKERS_LISTED.as_secs(), value_name = "SECS")]
    within: u64,
}

/// Runs `weir workers`: the cluster's workers (tags, state, last
/// heartbeat, what each runs) and the queue's depth.
pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let queue = super::cluster_queue("weir workers")?;
    let workers = queue.workers(Duration::from_secs(args.within))?;
    let depth = queue.depth()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if args.json {
        jsonln!(
            "{}",
            serde_json::json!({
                "workers": workers,
                "queued": depth.queued,
                "running": depth.leased,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!("queue: {} waiting, {} running", depth.queued, depth.leased);
    if workers.is_empty() {
        outln!("no worker heard of in the last {} s", args.within);
    }
    for w in &workers {
        let tags = if w.tags.is_empty() {
            "-".to_string()
        } else {
            w.tags.join(",")
        };
        let ago = (now - w.heartbeat_ms).max(0) as f64 / 1000.0;
        outln!(
            "{:<24} {:<9} tags {:<12} jobs {:<3} heartbeat {ago:.1} s ago",
            w.name,
            w.state,
            tags,
            w.jobs
        );
        for u in &w.running {
            match u.run {
                Some(r) => outln!("    running {} of run {r}", u.step),
                None => outln!("    running {}", u.step),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
