//! One module per subcommand.

pub mod build;
pub mod cat;
pub mod diff;
pub mod inspect;
pub mod lineage;
pub mod logs;
pub mod metrics;
pub mod models;
pub mod new;
pub mod plan;
pub mod run;
pub mod runs;
pub mod show;
pub mod store;
pub mod trust;

use std::path::Path;
use weir_runtime::records::{Records, SqliteRecords};

/// Opens the records of the store at `store` for reading.
pub fn open_records(store: &Path) -> anyhow::Result<SqliteRecords> {
    let db = store.join("weir.db");
    if !db.exists() {
        anyhow::bail!(
            "no weir store at {} (run a pipeline first, or point to its store with --store DIR)",
            store.display()
        );
    }
    SqliteRecords::open(&db)
}

/// Guest or script text shown on one line: control characters, line breaks
/// and tabs escaped, so it cannot start a line of its own.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    weir_runtime::names::inert(text, false)
}

/// Formats a duration in ms for tables.
pub fn fmt_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Formats a metric value: integers plainly, others with 4 significant decimals.
pub fn fmt_metric(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else if x.abs() >= 1e-3 && x.abs() < 1e6 {
        format!("{x:.4}")
    } else {
        format!("{x:.4e}")
    }
}

/// Parses a run number, accepting `12` or `#12`.
pub fn parse_run(s: &str) -> anyhow::Result<weir_runtime::RunId> {
    s.trim_start_matches('#')
        .parse::<i64>()
        .map(weir_runtime::RunId)
        .map_err(|_| anyhow::anyhow!("expected a run number such as 12, found {s:?}"))
}

/// Gets `records.run(id)` or a clear error.
pub fn need_run(
    records: &dyn Records,
    id: weir_runtime::RunId,
) -> anyhow::Result<weir_runtime::records::RunSummary> {
    records
        .run(id)?
        .ok_or_else(|| anyhow::anyhow!("there is no run {id} in this store (see `weir runs`)"))
}
