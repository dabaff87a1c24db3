//! `weir schedules` (next fire times) and `weir backfill` (run past slots),
//! on the same slot records as the server, so a slot runs at most once
//! whichever of them fires it.

use super::schedule::{Schedule, open_slots, slot_text};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_runtime::{RunOptions, RunState, Runtime};

/// Arguments of `weir schedules`.
#[derive(clap::Args)]
pub struct SchedulesArgs {
    /// The project folder [default: .]
    project: Option<PathBuf>,
    /// Store folder [default: PROJECT/.weir]
    #[arg(long)]
    store: Option<PathBuf>,
    /// Fire times to show per pipeline
    #[arg(long, default_value_t = 3)]
    next: usize,
}

/// Arguments of `weir backfill`.
#[derive(clap::Args)]
pub struct BackfillArgs {
    /// The scheduled pipeline
    pipeline: String,
    /// First instant (RFC 3339, or a date YYYY-MM-DD meaning its midnight UTC); slots from here on
    #[arg(long)]
    from: String,
    /// Last instant (same forms); slots up to and including this, and not after now
    #[arg(long)]
    to: String,
    /// The project folder [default: .]
    #[arg(long)]
    project: Option<PathBuf>,
    /// Store folder [default: PROJECT/.weir]
    #[arg(long)]
    store: Option<PathBuf>,
    /// Steps to run at once
    #[arg(long, short)]
    jobs: Option<usize>,
    /// The most slots to run (a guard against a typo in --from)
    #[arg(long, default_value_t = 1000)]
    max: usize,
}

/// Runs `weir schedules`.
pub fn schedules(args: SchedulesArgs) -> anyhow::Result<ExitCode> {
    let (project, store) = super::project_and_store(args.project, args.store)?;
    let found = super::discover(&project);
    let slots = if store.join("serve.db").exists() || crate::commands::records_url().is_some() {
        Some(open_slots(&store)?)
    } else {
        None
    };
    let now = Utc::now();
    let mut any = false;
    for p in found.values() {
        let Some(expr) = &p.schedule else { continue };
        any = true;
        let tz = p.serve.timezone.as_deref().unwrap_or("UTC");
        println!(
            "{}  {expr}  ({tz}, catch-up {:?}{}, max_active_runs {})",
            p.name,
            p.serve.catchup,
            if p.serve.catchup == weir_runtime::plan::Catchup::All {
                format!(" up to {}", p.serve.catchup_limit)
            } else {
                String::new()
            },
            p.serve.max_active_runs
        );
        if let Some(e) = &p.error {
            println!("  ERROR {e}");
            continue;
        }
        let sched = Schedule::parse(expr, p.serve.timezone.as_deref())?;
        for n in sched.next_n(now, args.next) {
            println!("  next  {}  ({})", slot_text(n), sched.local(n));
        }
        if let Some(slots) = &slots {
            for r in slots.recent(Some(&p.name), 3)? {
                println!(
                    "  past  {}  {}{}{}",
                    r.slot,
                    r.state,
                    r.run.map(|n| format!(" run {n}")).unwrap_or_default(),
                    r.reason.map(|w| format!(" ({w})")).unwrap_or_default()
                );
            }
        }
    }
    if !any {
        println!("no pipeline in {} declares a schedule", project.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// An instant from RFC 3339 or a date (midnight UTC); `what` names it in errors.
pub fn instant(text: &str, what: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    anyhow::bail!(
        "{what}: expected an RFC 3339 instant (2026-11-28T02:00:00Z) or a date (2026-11-28), found {text:?}"
    )
}

/// Runs `weir backfill`.
pub fn backfill(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let (project, store) = super::project_and_store(args.project, args.store)?;
    let found = super::discover(&project);
    let p = found.get(&args.pipeline).ok_or_else(|| {
        anyhow::anyhow!(
            "there is no pipeline '{}' in {} (pipelines: {})",
            args.pipeline,
            project.display(),
            found.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    if let Some(e) = &p.error {
        anyhow::bail!("pipeline '{}' cannot run: {e}", p.name);
    }
    let expr = p
        .schedule
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("pipeline '{}' declares no schedule", p.name))?;
    let sched = Schedule::parse(expr, p.serve.timezone.as_deref())?;
    let from = instant(&args.from, "--from")?;
    let to = instant(&args.to, "--to")?;
    if to < from {
        anyhow::bail!(
            "--to ({}) is before --from ({})",
            slot_text(to),
            slot_text(from)
        );
    }
    let now = Utc::now();
    if to > now {
        anyhow::bail!(
            "--to ({}) is in the future; backfill runs past slots only",
            slot_text(to)
        );
    }
    // Slots in [from, to]: start one second before `from` (slots are whole seconds).
    let (count, slots) = sched.slots(from - chrono::Duration::seconds(1), to, args.max + 1);
    if count > args.max {
        anyhow::bail!(
            "{count} slots between {} and {}: more than --max {}",
            slot_text(from),
            slot_text(to),
            args.max
        );
    }
    let runtime = Runtime::new(&crate::commands::runtime_config(
        &project,
        &store,
        args.jobs,
        |_| Ok(()),
    )?)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime.jobs().max(1))
        .enable_all()
        .build()?;
    let records = open_slots(&store)?;
    let script = project.join(&p.script);
    let mut failed = 0;
    println!(
        "{} slot(s) of '{}' ({expr}) to backfill",
        slots.len(),
        p.name
    );
    for t in slots {
        let slot = slot_text(t);
        if !records.claim(&p.name, &slot)? {
            println!("  {slot}  already ran or was passed over; skipped");
            continue;
        }
        let mut params = BTreeMap::new();
        if p.params.contains_key("slot") {
            params.insert("slot".to_string(), slot.clone());
        }
        let plan = match weir_dsl::compile_file_with(&script, &params) {
            Ok(plan) => plan,
            Err(e) => {
                records.settle(&p.name, &slot, None, Some(&e.to_string()))?;
                anyhow::bail!("{e}");
            }
        };
        match tokio.block_on(runtime.run_shared(std::sync::Arc::new(plan), RunOptions::default())) {
            Ok(report) => {
                records.settle(&p.name, &slot, Some(report.run.0), None)?;
                records.note_run(report.run.0, "backfill", None, &params)?;
                if report.state != RunState::Succeeded {
                    failed += 1;
                }
                println!("  {slot}  run {} {}", report.run, report.state);
            }
            Err(e) => {
                records.settle(&p.name, &slot, None, Some(&format!("{e:#}")))?;
                println!("  {slot}  could not start: {e:#}");
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
