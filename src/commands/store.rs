//! `weir store verify`: re-hash every object and check every record's
//! references; `weir store gc`: remove what no kept run needs.

use crate::StoreArg;
use std::process::ExitCode;
use weir_runtime::store::Store;

/// What `weir store` does.
#[derive(clap::Subcommand)]
pub enum What {
    /// Re-hash every object, check that every artifact the records name is
    /// present and whole, and clean temporary files of dead processes
    Verify(VerifyArgs),
    /// Remove what no kept run needs: old runs' records, objects no kept
    /// artifact holds, compiled components no kept run used. Waits for runs
    /// in progress; runs that start meanwhile wait for it.
    Gc(GcArgs),
}

/// Arguments of `weir store gc`.
#[derive(clap::Args)]
pub struct GcArgs {
    /// Keep runs started within this many days
    #[arg(long, default_value_t = weir_runtime::gc::KeepPolicy::default().days)]
    keep_days: u32,
    /// Keep the newest N runs of each pipeline
    #[arg(long, default_value_t = weir_runtime::gc::KeepPolicy::default().last)]
    keep_last: usize,
    /// Print what would be removed, remove nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    store: StoreArg,
}

/// Arguments of `weir store verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArg,
}

/// Runs `weir store`.
pub fn run(what: What) -> anyhow::Result<ExitCode> {
    match what {
        What::Verify(args) => verify(args),
        What::Gc(args) => gc(args),
    }
}

/// Runs `weir store gc`.
fn gc(args: GcArgs) -> anyhow::Result<ExitCode> {
    let dir = args.store.resolve();
    let records = super::open_records(&dir)?;
    let store = Store::open(&dir)?;
    let policy = weir_runtime::gc::KeepPolicy {
        days: args.keep_days,
        last: args.keep_last,
    };
    let waiting = || {
        eprintln!("weir: waiting for the runs in progress on this store to finish");
    };
    let plan = weir_runtime::gc::collect(&store, &*records, &policy, args.dry_run, &waiting)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let compiled: u64 = plan.compiled_removed.iter().map(|(_, b)| b).sum();
    outln!(
        "{verb} {} runs (kept {}: newer than {} days, the last {} of each pipeline, those that registered a model, those running), {} cache entries, {} objects, {} views and {} compiled components: {} in all ({} of it compiled code)",
        plan.runs_removed.len(),
        plan.runs_kept,
        policy.days,
        policy.last,
        plan.cache_removed.len(),
        plan.objects(),
        plan.views_removed.len(),
        plan.compiled_removed.len(),
        bytes(plan.bytes()),
        bytes(compiled)
    );
    if args.dry_run && !plan.runs_removed.is_empty() {
        let runs: Vec<String> = plan.runs_removed.iter().map(|r| r.to_string()).collect();
        outln!("runs: {}", runs.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

/// "1.2 MB".
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

/// Runs `weir store verify`.
fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let dir = args.store.resolve();
    let records = super::open_records(&dir)?;
    let store = Store::open(&dir)?;
    let cleaned = store.clean_tmp()?;
    let objects = store.verify_objects()?;
    let mut missing = Vec::new();
    let mut checked = 0usize;
    let mut seen = std::collections::HashSet::new();
    for (place, d) in records.references()? {
        if seen.insert(d) {
            checked += 1;
        }
        if !store.is_valid_tree(&d)? {
            missing.push(format!(
                "{place}: artifact {} is missing or damaged",
                d.short()
            ));
        }
    }
    outln!(
        "{} objects ({} bytes) re-hashed: {} corrupt; {} stray files; {checked} artifacts referenced by records: {} missing or damaged; {cleaned} temporary leftovers removed",
        objects.objects,
        objects.bytes,
        objects.corrupt.len(),
        objects.stray.len(),
        missing.len()
    );
    for d in &objects.corrupt {
        outln!("corrupt object {d} (moved to corrupt/; the step that made it will run again)");
    }
    for p in &objects.stray {
        outln!("stray file {}", p.display());
    }
    for m in &missing {
        outln!("{m}");
    }
    Ok(if objects.corrupt.is_empty() && missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
