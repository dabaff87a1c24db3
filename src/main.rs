//! `weir`: the command-line front end of the weir runtime.
//!
//! Each subcommand lives in its own module under `commands/`; all of them
//! are thin users of `weir-runtime` and `weir-dsl`.

/// `println!` for command output, which may hold guest or script text:
/// control characters are escaped ([`weir_runtime::names::inert`]; line
/// breaks and tabs kept), and a closed pipe (`weir show 1 | head`) ends the
/// command quietly through `?` instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(
            std::io::stdout().lock(),
            "{}",
            weir_runtime::names::inert(&format!($($arg)*), true)
        )?
    }};
}

/// `print!` with the same care as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(
            std::io::stdout().lock(),
            "{}",
            weir_runtime::names::inert(&format!($($arg)*), true)
        )?
    }};
}

/// `println!` for JSON (serde escapes control characters in strings), with
/// a closed pipe ending the command quietly.
macro_rules! jsonln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod commands;
mod serve;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// weir: ML pipelines as Rhai scripts, steps as sandboxed WebAssembly components,
/// results cached by content.
#[derive(Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
struct Cli {
    /// Keep run records in this PostgreSQL database instead of the store's
    /// weir.db (postgres://user@host/db) [default: $WEIR_RECORDS]
    #[arg(long, global = true, value_name = "URL")]
    records: Option<String>,
    /// Push every new artifact to this shared remote and fetch missing ones
    /// from it: object storage (s3://bucket/prefix, gs://..., az://...) or a
    /// folder every machine mounts [default: $WEIR_REMOTE]
    #[arg(long, global = true, value_name = "URL")]
    remote: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Where the store is, for commands that read records.
#[derive(clap::Args, Clone)]
struct StoreArg {
    /// Store folder [default: $WEIR_STORE, else .weir in the current folder]
    #[arg(long, global = true)]
    store: Option<PathBuf>,
}

impl StoreArg {
    fn resolve(&self) -> PathBuf {
        self.store
            .clone()
            .or_else(|| std::env::var_os("WEIR_STORE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".weir"))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline script
    Run(commands::run::Args),
    /// Check a pipeline script and print its plan as JSON, without running it
    Plan(commands::plan::Args),
    /// Check a pipeline script without running it
    Check(commands::plan::Args),
    /// Print a pipeline's DAG as Mermaid or DOT
    Graph(commands::plan::GraphArgs),
    /// Compare two runs step by step: code, params, inputs, outputs
    Diff(commands::diff::Args),
    /// Say why a step ran in a run, or why it did not (cache hit, skip)
    Why(commands::why::Args),
    /// Execute again every step a run executed and check each output has its recorded digest
    Verify(commands::verify::Args),
    /// Print a run's params and metrics
    Metrics(commands::metrics::Args),
    /// Put the params and metrics of two or more runs side by side; differences are marked *
    Compare(commands::metrics::CompareArgs),
    /// The model registry: list, show and promote model versions
    #[command(subcommand)]
    Models(commands::models::What),
    /// Print where an artifact (or a model version) came from, step by step
    Lineage(commands::lineage::Args),
    /// Build a step crate into a component (wasm32-wasip2)
    Build(commands::build::Args),
    /// Make a weir project: weir.toml, a first pipeline and a step workspace
    Init(commands::new::InitArgs),
    /// Add something to a project
    #[command(subcommand)]
    New(commands::new::What),
    /// List recent runs
    Runs(commands::runs::Args),
    /// Show a run's steps, outputs and metrics
    Show(commands::show::Args),
    /// Print the logs of a step in a run
    Logs(commands::logs::Args),
    /// Print an artifact: a folder's listing, or a file inside it
    Cat(commands::cat::Args),
    /// Check the store
    #[command(subcommand)]
    Store(commands::store::What),
    /// Create a publisher key pair for signing components
    Keygen(commands::trust::KeygenArgs),
    /// Sign a component as a publisher (writes COMPONENT.sig)
    Sign(commands::trust::SignArgs),
    /// Edit the project's trust file (weir.toml)
    #[command(subcommand)]
    Trust(commands::trust::TrustWhat),
    /// Show a component's digest, imports, exports and what the trust policy would grant it
    Inspect(commands::inspect::Args),
    /// Serve a project: cron schedules, the REST API and the dashboard
    Serve(serve::Args),
    /// Run the cluster's units (steps sent by weir run --cluster) from the queue in the --records database
    Worker(commands::worker::Args),
    /// List the cluster's workers (tags, state, last heartbeat, what each runs) and the queue's depth
    Workers(commands::worker::ListArgs),
    /// List scheduled pipelines with their next fire times and recent slots
    Schedules(serve::cli::SchedulesArgs),
    /// Run the past slots of a pipeline's schedule between two instants
    Backfill(serve::cli::BackfillArgs),
}

fn main() -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let records = cli
        .records
        .clone()
        .or_else(|| std::env::var("WEIR_RECORDS").ok());
    let remote = cli
        .remote
        .clone()
        .or_else(|| std::env::var("WEIR_REMOTE").ok());
    let result = commands::set_records_url(records)
        .and_then(|()| commands::set_remote(remote))
        .and_then(|()| dispatch(cli.command));
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            // The chain may quote guest or script text.
            let text = format!("error: {e:#}\n");
            let _ = std::io::Write::write_all(
                &mut std::io::stderr().lock(),
                weir_runtime::names::inert(&text, true).as_bytes(),
            );
            ExitCode::from(2)
        }
    }
}

/// Runs the subcommand.
fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(a) => commands::run::run(a),
        Command::Plan(a) => commands::plan::run(a),
        Command::Metrics(a) => commands::metrics::run(a),
        Command::Compare(a) => commands::metrics::compare(a),
        Command::Models(w) => commands::models::run(w),
        Command::Lineage(a) => commands::lineage::run(a),
        Command::Keygen(a) => commands::trust::keygen(a),
        Command::Sign(a) => commands::trust::sign(a),
        Command::Trust(w) => commands::trust::trust(w),
        Command::Check(a) => commands::plan::check(a),
        Command::Graph(a) => commands::plan::graph(a),
        Command::Diff(a) => commands::diff::run(a),
        Command::Why(a) => commands::why::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Build(a) => commands::build::run(a),
        Command::Init(a) => commands::new::init(a),
        Command::New(w) => commands::new::run(w),
        Command::Runs(a) => commands::runs::run(a),
        Command::Show(a) => commands::show::run(a),
        Command::Logs(a) => commands::logs::run(a),
        Command::Cat(a) => commands::cat::run(a),
        Command::Store(w) => commands::store::run(w),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Worker(a) => commands::worker::run(a),
        Command::Workers(a) => commands::worker::list(a),
        Command::Schedules(a) => serve::cli::schedules(a),
        Command::Backfill(a) => serve::cli::backfill(a),
    }
}
