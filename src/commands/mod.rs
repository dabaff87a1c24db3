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
pub mod verify;
pub mod why;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use weir_runtime::records::{History, Records, SqliteRecords};

/// The compile cache's default bound: the least recently used components
/// go first beyond it.
pub const COMPILE_CACHE_MAX_BYTES: u64 = 4 << 30;

/// Where `weir` keeps compiled components: `$WEIR_COMPILE_CACHE` (a folder,
/// or `store` for each store's own `compiled/`), else one folder per user
/// (`$XDG_CACHE_HOME/weir/compiled` or `~/.cache/weir/compiled`), so that a
/// fresh store compiles nothing this machine compiled before. `None`: the
/// store's own folder.
pub fn compile_cache() -> Option<PathBuf> {
    match std::env::var_os("WEIR_COMPILE_CACHE") {
        Some(v) if v == "store" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => user_cache().map(|c| c.join("compiled")),
    }
}

/// weir's folder in the user's cache: `$XDG_CACHE_HOME/weir`, else
/// `~/.cache/weir`; `None` without either variable.
pub fn user_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("weir"))
}

/// An executor for tools that load a component or two (`weir build`,
/// `weir inspect`), on the engine `weir run` uses, compiling into the
/// compile cache; the store (opened, so created, only when the compile
/// cache is the store's own) is `store`'s.
pub fn tool_executor(store: &crate::StoreArg) -> anyhow::Result<weir_runtime::executor::Executor> {
    use weir_runtime::executor::{EngineConfig, Executor};
    let (dir, max) = match compile_cache() {
        Some(dir) => (dir, Some(COMPILE_CACHE_MAX_BYTES)),
        None => (
            weir_runtime::store::Store::open(store.resolve())?.compiled_dir(),
            None,
        ),
    };
    let cfg = EngineConfig {
        compile_cache_max_bytes: max,
        ..EngineConfig::default()
    };
    Executor::new(&cfg, &dir)
}

/// The runtime configuration every command that runs pipelines uses
/// (`weir run`, `weir serve`, `weir backfill`): the store, `jobs` if given,
/// the trust file of the project at `project` (scripts reach only that
/// project) refined by `trust` (a command's own flags), the GPU backend from
/// `$WEIR_GPU`, and the compile cache.
pub fn runtime_config(
    project: &Path,
    store: &Path,
    jobs: Option<usize>,
    trust: impl FnOnce(&mut weir_runtime::TrustPolicy) -> anyhow::Result<()>,
) -> anyhow::Result<weir_runtime::Config> {
    let mut config = weir_runtime::Config::new(store);
    if let Some(j) = jobs {
        config.jobs(j);
    }
    let mut policy = weir_runtime::TrustPolicy::default();
    if let Some(file) = weir_runtime::TrustPolicy::find_file(project) {
        policy.trust_file(&file)?;
    }
    // Scripts may come from someone else: they reach only their project.
    policy.confine_to(project);
    trust(&mut policy)?;
    config.trust(&policy);
    if let Some(v) = std::env::var_os("WEIR_GPU") {
        config.gpu(
            v.to_string_lossy()
                .parse()
                .map_err(|e| anyhow::anyhow!("WEIR_GPU: {e}"))?,
        );
    }
    if let Some(dir) = compile_cache() {
        config.compile_cache(dir, Some(COMPILE_CACHE_MAX_BYTES));
    }
    if let Some(records) = shared_records()? {
        config.records(records);
    }
    if let Some(remote) = shared_remote()? {
        config.remote(remote);
    }
    Ok(config)
}

static REMOTE: OnceLock<Option<String>> = OnceLock::new();

/// Sets the shared remote (`main`, from `--remote`/`$WEIR_REMOTE`): object
/// storage or a folder; an empty value means none.
pub fn set_remote(remote: Option<String>) -> anyhow::Result<()> {
    let remote = remote.filter(|u| !u.is_empty());
    if let Some(r) = &remote
        && r.contains("://")
        && !weir_object_store::is_url(r)
        && !r.starts_with("file://")
    {
        anyhow::bail!(
            "--remote: expected object storage ({}://...) or a folder, found {r:?}",
            weir_object_store::SCHEMES.join("://, ")
        );
    }
    let _ = REMOTE.set(remote);
    Ok(())
}

/// Whether a shared remote was given (`--remote`, `$WEIR_REMOTE`).
pub fn has_remote() -> bool {
    REMOTE.get().is_some_and(|r| r.is_some())
}

/// Opens the remote set by [`set_remote`], if any.
fn shared_remote() -> anyhow::Result<Option<Arc<dyn weir_runtime::remote::ObjectRemote>>> {
    let Some(r) = REMOTE.get().and_then(|r| r.as_deref()) else {
        return Ok(None);
    };
    if weir_object_store::is_url(r) {
        return Ok(Some(Arc::new(weir_object_store::BucketRemote::connect(r)?)));
    }
    let folder = r.strip_prefix("file://").unwrap_or(r);
    Ok(Some(Arc::new(weir_runtime::remote::FolderRemote::new(
        folder,
    )?)))
}

/// The records database every command uses instead of the store's
/// `weir.db`: `--records URL` or `$WEIR_RECORDS` (`postgres://...`), set
/// once by `main`.
static RECORDS_URL: OnceLock<Option<String>> = OnceLock::new();

/// Sets the records database (`main`, from `--records`/`$WEIR_RECORDS`);
/// an empty value means the store's own file.
pub fn set_records_url(url: Option<String>) -> anyhow::Result<()> {
    let url = url.filter(|u| !u.is_empty());
    if let Some(u) = &url
        && !weir_postgres::is_url(u)
    {
        anyhow::bail!(
            "--records: expected a PostgreSQL URL (postgres://user@host/db), found {:?}",
            weir_postgres::redacted(u)
        );
    }
    let _ = RECORDS_URL.set(url);
    Ok(())
}

/// The records database set by [`set_records_url`], if any.
pub fn records_url() -> Option<&'static str> {
    RECORDS_URL.get().and_then(|u| u.as_deref())
}

/// Connects to the records database named by `--records`, if one is.
fn shared_records() -> anyhow::Result<Option<Arc<dyn Records>>> {
    match records_url() {
        Some(url) => Ok(Some(Arc::new(weir_postgres::PgRecords::connect(url)?))),
        None => Ok(None),
    }
}

/// The cluster's queue of units, in the records database `--records`
/// names; `what` (the command or flag that needs it) names it in errors.
pub fn cluster_queue(what: &str) -> anyhow::Result<Arc<dyn weir_runtime::cluster::UnitQueue>> {
    let Some(url) = records_url() else {
        anyhow::bail!(
            "{what} needs the cluster's database: give --records postgres://... (or $WEIR_RECORDS)"
        );
    };
    Ok(Arc::new(weir_postgres::PgQueue::connect(url)?))
}

/// Makes `config` send every unit to the cluster's queue instead of running
/// it here (`weir run --cluster`): units in flight bounded by `jobs` if
/// given, else [`CLUSTER_JOBS`]; no instance pool (nothing runs here).
pub fn cluster_config(
    config: &mut weir_runtime::Config,
    jobs: Option<usize>,
) -> anyhow::Result<()> {
    let queue = cluster_queue("--cluster")?;
    if !has_remote() {
        tracing::warn!(
            "--cluster without --remote: the workers must use this store folder (weir worker --store)"
        );
    }
    config
        .dispatch(Arc::new(weir_runtime::cluster::QueueDispatch::new(queue)))
        .jobs(jobs.unwrap_or(CLUSTER_JOBS))
        .pooling(false);
    Ok(())
}

/// Units a coordinator keeps in flight by default (the workers' `--jobs`
/// bound what runs at once).
pub const CLUSTER_JOBS: usize = 64;

/// Opens the records of the store at `store` for reading: the database
/// `--records` names, else the store's own `weir.db`.
pub fn open_records(store: &Path) -> anyhow::Result<Arc<dyn Records>> {
    if let Some(r) = shared_records()? {
        return Ok(r);
    }
    let db = store.join("weir.db");
    if !db.exists() {
        anyhow::bail!(
            "no weir store at {} (run a pipeline first, or point to its store with --store DIR)",
            store.display()
        );
    }
    Ok(Arc::new(SqliteRecords::open(&db)?))
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

/// The params of each step of a run, from its recorded plan.
pub fn step_params(
    records: &dyn History,
    run: weir_runtime::RunId,
) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let json = records.plan_json(run)?.unwrap_or_default();
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    Ok(plan["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["params"].clone())))
        .collect())
}

/// Gets `records.run(id)` or a clear error.
pub fn need_run(
    records: &dyn History,
    id: weir_runtime::RunId,
) -> anyhow::Result<weir_runtime::records::RunSummary> {
    records
        .run(id)?
        .ok_or_else(|| anyhow::anyhow!("there is no run {id} in this store (see `weir runs`)"))
}
