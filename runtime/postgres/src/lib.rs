//! `weir-postgres`: weir's run records on PostgreSQL, so several machines
//! (a coordinator, workers, a `weir serve`) share one history, one cache
//! index, one model registry and one schedule (which slots fired).
//!
//! [`PgRecords`] implements the four record traits of `weir-core`
//! ([`RunLog`], [`CacheIndex`], [`History`], [`ModelRegistry`]) with the
//! same meaning as the embedded SQLite backend; `tests/records.rs` runs the
//! same checks against both. It talks to the server through
//! `tokio-postgres` with a `deadpool-postgres` pool, on a small async
//! runtime of its own: the record traits are synchronous (the scheduler's
//! committer is a plain thread), so each call hands its query to that
//! runtime and waits for the answer. A call from an async task therefore
//! blocks its worker for one round trip, as a SQLite read blocks it for a
//! page read.
//!
//! The schema is versioned: [`MIGRATIONS`] are applied in order when a
//! process connects, each in a transaction under an advisory lock, so two
//! processes starting at once migrate once. Every commit is one
//! transaction with the server's default `synchronous_commit`: when
//! [`RunLog::commit`] returns, the batch is durable. Rows of a batch go in
//! one statement per table (`UNNEST` of arrays), so a batch of a thousand
//! step records costs a handful of round trips, not thousands.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let records = weir_postgres::PgRecords::connect("postgres://weir@db.internal/weir")?;
//! let mut config = weir_runtime::Config::new(".weir");
//! config.records(std::sync::Arc::new(records));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use anyhow::{Context as _, anyhow};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::collections::BTreeMap;
use std::future::Future;
use tokio_postgres::NoTls;
use weir_core::digest::Digest;
use weir_core::owner::Owner;
use weir_core::records::*;

mod queue;
pub use queue::PgQueue;

/// The schema, one migration per version (version = index + 1), applied in
/// order and never edited once released: a change is a new entry.
pub const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite backend has at its version 3.
    r#"
CREATE TABLE plans (
    key TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE runs (
    id BIGSERIAL PRIMARY KEY,
    pipeline TEXT NOT NULL,
    plan_digest TEXT NOT NULL,
    plan_key TEXT NOT NULL,
    state TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    error TEXT,
    owner TEXT
);
CREATE INDEX runs_by_pipeline ON runs (pipeline, id);
CREATE INDEX runs_running ON runs (id) WHERE state = 'running';
CREATE TABLE steps (
    run_id BIGINT NOT NULL,
    step TEXT NOT NULL,
    seq BIGSERIAL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    cache_key TEXT,
    component TEXT,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT NOT NULL,
    error TEXT,
    failure TEXT,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE metrics (
    run_id BIGINT NOT NULL,
    step TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL
);
CREATE INDEX metrics_by_run ON metrics (run_id, step);
CREATE TABLE logs (
    run_id BIGINT NOT NULL,
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX logs_by_step ON logs (run_id, step, attempt, seq);
CREATE TABLE attempts (
    run_id BIGINT NOT NULL,
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT NOT NULL,
    error TEXT,
    peak_memory BIGINT,
    fuel_used BIGINT,
    PRIMARY KEY (run_id, step, attempt)
);
CREATE TABLE models (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    step TEXT NOT NULL,
    metrics TEXT NOT NULL,
    stage TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, digest)
);
CREATE TABLE cache (
    key TEXT PRIMARY KEY,
    outputs TEXT NOT NULL,
    metrics TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    step TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
"#,
    // 2: `weir serve`'s schedule slots, so servers sharing the database
    // claim each slot once.
    r#"
CREATE TABLE schedule_slots (
    pipeline TEXT NOT NULL,
    slot TEXT NOT NULL,
    state TEXT NOT NULL,
    run BIGINT,
    reason TEXT,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (pipeline, slot)
);
CREATE TABLE schedule_cursors (
    pipeline TEXT PRIMARY KEY,
    since TEXT NOT NULL
);
CREATE TABLE schedule_paused (
    pipeline TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL
);
CREATE TABLE run_sources (
    run BIGINT PRIMARY KEY,
    source TEXT NOT NULL,
    params TEXT NOT NULL
);
"#,
    // 3: what exactly started a run (an upstream pipeline's run).
    r#"
ALTER TABLE run_sources ADD COLUMN trigger TEXT;
"#,
    // 4: the content last seen of the folders pipelines watch.
    r#"
CREATE TABLE watched (
    pipeline TEXT NOT NULL,
    dir TEXT NOT NULL,
    digest TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (pipeline, dir)
);
"#,
    // 5: the cluster's queue of units and its workers (`queue.rs`).
    r#"
CREATE SEQUENCE unit_tokens;
CREATE TABLE units (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL,
    run_id BIGINT,
    step TEXT NOT NULL,
    tags TEXT[] NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    token BIGINT,
    worker TEXT,
    lease_until TIMESTAMPTZ,
    deliveries INTEGER NOT NULL DEFAULT 0,
    cancel BOOLEAN NOT NULL DEFAULT FALSE,
    outcome TEXT,
    error TEXT,
    enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX units_one_per_key ON units (key) WHERE state IN ('queued', 'leased');
CREATE INDEX units_open ON units (id) WHERE state IN ('queued', 'leased');
CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    tags TEXT[] NOT NULL,
    jobs INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"#,
];

/// The advisory lock key migrations hold (`'weir'` in ASCII).
const MIGRATION_LOCK: i64 = 0x7765_6972;

/// The advisory lock the server leading the scheduling holds for as long
/// as its session lives (`'weirlead'` in ASCII).
const LEADER_LOCK: i64 = 0x7765_6972_6c65_6164;

/// How often a server that does not lead tries to take the lead.
const LEAD_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The scheduling lead's session, if held.
#[derive(Default)]
struct Leader {
    session: Option<tokio_postgres::Client>,
    tried: Option<std::time::Instant>,
}

/// Connections the pool keeps at most.
const POOL_SIZE: usize = 8;

/// Whether `s` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    match auth.map(|a| a.split_once(':').map_or(a, |(user, _)| user)) {
        Some(user) => format!("{scheme}://{user}@{host}"),
        None => format!("{scheme}://{host}"),
    }
}

/// Run records in a PostgreSQL database.
pub struct PgRecords {
    pool: Pool,
    /// How to open a session of its own (the scheduling lead's).
    pg: tokio_postgres::Config,
    /// The session holding [`LEADER_LOCK`] while this process leads the
    /// scheduling, and when it last tried to take it.
    leader: std::sync::Mutex<Leader>,
    /// Where the queries run; `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    /// The URL without its password, for messages.
    name: String,
}

impl std::fmt::Debug for PgRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRecords")
            .field("database", &self.name)
            .finish()
    }
}

impl Drop for PgRecords {
    fn drop(&mut self) {
        // May be dropped inside another async runtime, where a blocking
        // shutdown would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgRecords {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`)
    /// and brings its schema up to date. The error names the database
    /// (without the password) and what failed.
    pub fn connect(url: &str) -> anyhow::Result<PgRecords> {
        PgRecords::connect_with(url, |_| {})
    }

    /// [`PgRecords::connect`], with the connection settings changed by
    /// `tweak` (the queue's sessions commit asynchronously).
    pub(crate) fn connect_with(
        url: &str,
        tweak: impl FnOnce(&mut tokio_postgres::Config),
    ) -> anyhow::Result<PgRecords> {
        let name = redacted(url);
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow!("records database {name}: not a PostgreSQL URL: {e}"))?;
        tweak(&mut pg);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-records")
            .enable_all()
            .build()
            .context("starting the records runtime")?;
        let mgr = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| anyhow!("records database {name}: {e}"))?;
        let records = PgRecords {
            pool,
            pg,
            leader: std::sync::Mutex::new(Leader::default()),
            rt: Some(rt),
            name,
        };
        records
            .call(|pool| async move { migrate(&pool).await })
            .with_context(|| format!("records database {}", records.name))?;
        Ok(records)
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> anyhow::Result<i32> {
        self.call(|pool| async move {
            let c = pool.get().await?;
            let row = c
                .query_one("SELECT COALESCE(MAX(version), 0) FROM weir_migrations", &[])
                .await?;
            Ok(row.get(0))
        })
    }

    /// Runs `f` on the records runtime and waits for it: callable from any
    /// thread, including an async worker (which it blocks meanwhile).
    fn call<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| anyhow!("the records runtime has stopped"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.pool.clone());
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| anyhow!("a records query ended without an answer (a panic in it)"))?
            .map_err(|e| flatten(e, &self.name))
    }
}

/// An error with the database's own message (tokio-postgres's Display
/// says only "db error").
fn flatten(e: anyhow::Error, name: &str) -> anyhow::Error {
    if let Some(db) = e
        .chain()
        .find_map(|c| c.downcast_ref::<tokio_postgres::Error>())
        .and_then(|p| p.as_db_error())
    {
        return anyhow!(
            "records database {name}: {}: {}",
            db.code().code(),
            db.message()
        );
    }
    if e.chain()
        .any(|c| c.downcast_ref::<deadpool_postgres::PoolError>().is_some())
    {
        return anyhow!("records database {name}: cannot connect: {e:#}");
    }
    e
}

/// Applies the migrations the database lacks, each in its own transaction,
/// under [`MIGRATION_LOCK`].
async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS weir_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
    )
    .await?;
    let at: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM weir_migrations", &[])
        .await?
        .get(0);
    if at as usize > MIGRATIONS.len() {
        anyhow::bail!(
            "its schema is at version {at}, newer than this weir knows ({}): upgrade weir",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(at as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying schema version {version}"))?;
        tx.execute(
            "INSERT INTO weir_migrations (version, applied_ms) VALUES ($1, $2)",
            &[&version, &now_ms()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn digest_col(s: Option<String>) -> Option<Digest> {
    s.and_then(|s| s.parse().ok())
}

fn json_map(s: &str) -> BTreeMap<String, Digest> {
    serde_json::from_str(s).unwrap_or_default()
}

fn run_row(r: &tokio_postgres::Row) -> RunSummary {
    let state: String = r.get(3);
    RunSummary {
        id: RunId(r.get(0)),
        pipeline: r.get(1),
        plan_digest: digest_col(r.get(2)).unwrap_or_else(|| Digest::from_bytes([0; 32])),
        state: RunState::parse(&state).unwrap_or(RunState::Failed),
        started_ms: r.get(4),
        ended_ms: r.get(5),
        error: r.get(6),
    }
}

const RUN_COLUMNS: &str = "id, pipeline, plan_digest, state, started_ms, ended_ms, error";

/// The step in the columns of [`STEP_COLUMNS`] from `at` on.
fn step_row(r: &tokio_postgres::Row, at: usize) -> StepSummary {
    let state: String = r.get(at + 1);
    let outputs: String = r.get(at + 8);
    let inputs: String = r.get(at + 9);
    StepSummary {
        step: r.get(at),
        state: StepState::parse(&state).unwrap_or(StepState::Failed),
        attempts: r.get::<_, i32>(at + 2) as u32,
        cache_key: digest_col(r.get(at + 3)),
        component: digest_col(r.get(at + 4)),
        started_ms: r.get(at + 5),
        ended_ms: r.get(at + 6),
        error: r.get(at + 7),
        failure: r
            .get::<_, Option<String>>(at + 10)
            .and_then(|f| FailureKind::parse(&f)),
        inputs: json_map(&inputs),
        outputs: json_map(&outputs),
        metrics: BTreeMap::new(),
    }
}

const STEP_COLUMNS: &str = "step, state, attempts, cache_key, component, started_ms, ended_ms, error, outputs, inputs, failure";

/// The attempt in six columns from `at` on.
fn attempt_row(r: &tokio_postgres::Row, at: usize) -> AttemptRecord {
    AttemptRecord {
        attempt: r.get::<_, i32>(at) as u32,
        started_ms: r.get(at + 1),
        ended_ms: r.get(at + 2),
        error: r.get(at + 3),
        peak_memory_bytes: r.get::<_, Option<i64>>(at + 4).map(|b| b as u64),
        fuel_used: r.get::<_, Option<i64>>(at + 5).map(|f| f as u64),
    }
}

const ATTEMPT_COLUMNS: &str = "attempt, started_ms, ended_ms, error, peak_memory, fuel_used";

/// Stores `plan_json` once, named by its blake3, and returns that name.
async fn store_plan(
    tx: &deadpool_postgres::Transaction<'_>,
    plan_json: &str,
) -> anyhow::Result<String> {
    let key = blake3::hash(plan_json.as_bytes()).to_hex().to_string();
    let st = tx
        .prepare_cached(
            "INSERT INTO plans (key, json) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .await?;
    tx.execute(&st, &[&key, &plan_json]).await?;
    Ok(key)
}

impl RunLog for PgRecords {
    fn begin_run(
        &self,
        pipeline: &str,
        plan_digest: &Digest,
        plan_json: &str,
    ) -> anyhow::Result<RunId> {
        let (pipeline, digest, json) = (
            pipeline.to_string(),
            plan_digest.to_hex(),
            plan_json.to_string(),
        );
        self.call(|pool| async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let key = store_plan(&tx, &json).await?;
            let row = tx
                .query_one(
                    "INSERT INTO runs (pipeline, plan_digest, plan_key, state, started_ms, owner) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &pipeline,
                        &digest,
                        &key,
                        &RunState::Running.as_str(),
                        &now_ms(),
                        &Owner::current().to_string(),
                    ],
                )
                .await?;
            tx.commit().await?;
            Ok(RunId(row.get(0)))
        })
    }

    fn commit(&self, ops: &[RecordOp]) -> anyhow::Result<()> {
        let ops = ops.to_vec();
        self.call(|pool| async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            write_batch(&tx, &ops).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn reopen_run(&self, id: RunId) -> anyhow::Result<()> {
        self.call(move |pool| async move {
            let c = pool.get().await?;
            c.execute(
                "UPDATE runs SET state = $2, started_ms = $3, ended_ms = NULL, error = NULL, owner = $4 WHERE id = $1",
                &[&id.0, &RunState::Running.as_str(), &now_ms(), &Owner::current().to_string()],
            )
            .await?;
            Ok(())
        })
    }

    /// Runs left `running` by a process of this machine that is gone. A run
    /// owned by a process of another machine is left alone: from here it
    /// cannot be told whether that process lives.
    fn interrupt_orphans(&self) -> anyhow::Result<Vec<RunId>> {
        self.call(|pool| async move {
            let c = pool.get().await?;
            let running = c
                .query("SELECT id, owner FROM runs WHERE state = 'running'", &[])
                .await?;
            let mut gone = Vec::new();
            for row in running {
                let id: i64 = row.get(0);
                let owner = row
                    .get::<_, Option<String>>(1)
                    .and_then(|o| o.parse::<Owner>().ok());
                let why = match &owner {
                    Some(o) if !o.is_this_boot() || o.is_alive() => continue,
                    Some(o) => format!(
                        "interrupted: the process that ran it (pid {}) ended without finishing it; retry it to go on, or cancel it",
                        o.pid
                    ),
                    None => "interrupted: the process that ran it ended without finishing it; retry it to go on, or cancel it".to_string(),
                };
                let n = c
                    .execute(
                        "UPDATE runs SET state = $2, ended_ms = $3, error = $4, owner = NULL WHERE id = $1 AND state = 'running'",
                        &[&id, &RunState::Interrupted.as_str(), &now_ms(), &why],
                    )
                    .await?;
                if n > 0 {
                    gone.push(RunId(id));
                }
            }
            Ok(gone)
        })
    }
}

/// Writes a commit batch in `tx`: the rows of each table in one statement.
async fn write_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    ops: &[RecordOp],
) -> anyhow::Result<()> {
    let steps: Vec<&StepRecord> = ops
        .iter()
        .filter_map(|op| match op {
            RecordOp::Step(s) => Some(&**s),
            _ => None,
        })
        .collect();
    write_steps(tx, &steps).await?;
    for op in ops {
        match op {
            RecordOp::Step(_) => {}
            RecordOp::Cache {
                key,
                outputs,
                metrics,
                run,
                step,
            } => {
                let st = tx
                    .prepare_cached(
                        "INSERT INTO cache (key, outputs, metrics, run_id, step, created_ms) VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (key) DO UPDATE SET outputs = EXCLUDED.outputs, metrics = EXCLUDED.metrics,
                         run_id = EXCLUDED.run_id, step = EXCLUDED.step, created_ms = EXCLUDED.created_ms",
                    )
                    .await?;
                tx.execute(
                    &st,
                    &[
                        &key.to_hex(),
                        &serde_json::to_string(outputs)?,
                        &serde_json::to_string(metrics)?,
                        &run.0,
                        step,
                        &now_ms(),
                    ],
                )
                .await?;
            }
            RecordOp::RegisterModel {
                name,
                digest,
                run,
                step,
                metrics,
            } => register_model(tx, name, digest, *run, step, metrics).await?,
            RecordOp::RunPrepared {
                run,
                plan_digest,
                plan_json,
            } => {
                let key = store_plan(tx, plan_json).await?;
                tx.execute(
                    "UPDATE runs SET plan_digest = $2, plan_key = $3 WHERE id = $1",
                    &[&run.0, &plan_digest.to_hex(), &key],
                )
                .await?;
            }
            RecordOp::RunEnded { run, state, error } => {
                tx.execute(
                    "UPDATE runs SET state = $2, ended_ms = $3, error = $4, owner = NULL WHERE id = $1",
                    &[&run.0, &state.as_str(), &now_ms(), error],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// The step rows of a batch, with their metrics, attempts and log lines:
/// one statement per table. A step recorded twice in one batch keeps its
/// last record, as two commits would.
async fn write_steps(
    tx: &deadpool_postgres::Transaction<'_>,
    steps: &[&StepRecord],
) -> anyhow::Result<()> {
    if steps.is_empty() {
        return Ok(());
    }
    let mut last: BTreeMap<(i64, &str), usize> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        last.insert((s.run.0, s.step.as_str()), i);
    }
    let rows: Vec<&StepRecord> = steps
        .iter()
        .enumerate()
        .filter(|(i, s)| last.get(&(s.run.0, s.step.as_str())) == Some(i))
        .map(|(_, s)| *s)
        .collect();
    let mut cols = StepColumns::default();
    for s in &rows {
        cols.push(s)?;
    }
    let st = tx
        .prepare_cached(
            "INSERT INTO steps (run_id, step, state, attempts, cache_key, component, started_ms, ended_ms, error, inputs, outputs, failure)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[])
             ON CONFLICT (run_id, step) DO UPDATE SET state = EXCLUDED.state, attempts = EXCLUDED.attempts,
             cache_key = EXCLUDED.cache_key, component = EXCLUDED.component, started_ms = EXCLUDED.started_ms,
             ended_ms = EXCLUDED.ended_ms, error = EXCLUDED.error, inputs = EXCLUDED.inputs,
             outputs = EXCLUDED.outputs, failure = EXCLUDED.failure, seq = nextval('steps_seq_seq')",
        )
        .await?;
    tx.execute(
        &st,
        &[
            &cols.run,
            &cols.step,
            &cols.state,
            &cols.attempts,
            &cols.cache_key,
            &cols.component,
            &cols.started,
            &cols.ended,
            &cols.error,
            &cols.inputs,
            &cols.outputs,
            &cols.failure,
        ],
    )
    .await?;
    if !cols.m_run.is_empty() {
        let st = tx
            .prepare_cached(
                "INSERT INTO metrics (run_id, step, seq, name, value)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::text[], $5::float8[])",
            )
            .await?;
        tx.execute(
            &st,
            &[
                &cols.m_run,
                &cols.m_step,
                &cols.m_seq,
                &cols.m_name,
                &cols.m_value,
            ],
        )
        .await?;
    }
    if !cols.a_run.is_empty() {
        let st = tx
            .prepare_cached(
                "INSERT INTO attempts (run_id, step, attempt, started_ms, ended_ms, error, peak_memory, fuel_used)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[], $8::bigint[])
                 ON CONFLICT (run_id, step, attempt) DO UPDATE SET started_ms = EXCLUDED.started_ms,
                 ended_ms = EXCLUDED.ended_ms, error = EXCLUDED.error, peak_memory = EXCLUDED.peak_memory,
                 fuel_used = EXCLUDED.fuel_used",
            )
            .await?;
        tx.execute(
            &st,
            &[
                &cols.a_run,
                &cols.a_step,
                &cols.a_attempt,
                &cols.a_started,
                &cols.a_ended,
                &cols.a_error,
                &cols.a_memory,
                &cols.a_fuel,
            ],
        )
        .await?;
    }
    if !cols.l_run.is_empty() {
        let st = tx
            .prepare_cached(
                "INSERT INTO logs (run_id, step, attempt, seq, level, message)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::int[], $5::text[], $6::text[])",
            )
            .await?;
        tx.execute(
            &st,
            &[
                &cols.l_run,
                &cols.l_step,
                &cols.l_attempt,
                &cols.l_seq,
                &cols.l_level,
                &cols.l_message,
            ],
        )
        .await?;
    }
    Ok(())
}

/// A batch's step records as columns, for `UNNEST`.
#[derive(Default)]
struct StepColumns {
    run: Vec<i64>,
    step: Vec<String>,
    state: Vec<&'static str>,
    attempts: Vec<i32>,
    cache_key: Vec<Option<String>>,
    component: Vec<Option<String>>,
    started: Vec<i64>,
    ended: Vec<i64>,
    error: Vec<Option<String>>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    failure: Vec<Option<&'static str>>,
    m_run: Vec<i64>,
    m_step: Vec<String>,
    m_seq: Vec<i32>,
    m_name: Vec<String>,
    m_value: Vec<f64>,
    a_run: Vec<i64>,
    a_step: Vec<String>,
    a_attempt: Vec<i32>,
    a_started: Vec<i64>,
    a_ended: Vec<i64>,
    a_error: Vec<Option<String>>,
    a_memory: Vec<Option<i64>>,
    a_fuel: Vec<Option<i64>>,
    l_run: Vec<i64>,
    l_step: Vec<String>,
    l_attempt: Vec<i32>,
    l_seq: Vec<i32>,
    l_level: Vec<String>,
    l_message: Vec<String>,
}

impl StepColumns {
    fn push(&mut self, s: &StepRecord) -> anyhow::Result<()> {
        self.run.push(s.run.0);
        self.step.push(s.step.clone());
        self.state.push(s.state.as_str());
        self.attempts.push(s.attempt as i32);
        self.cache_key.push(s.cache_key.map(|k| k.to_hex()));
        self.component.push(s.component.map(|k| k.to_hex()));
        self.started.push(s.started_ms);
        self.ended.push(s.ended_ms);
        self.error.push(s.error.clone());
        self.inputs.push(serde_json::to_string(&s.inputs)?);
        self.outputs.push(serde_json::to_string(&s.outputs)?);
        self.failure.push(s.failure.map(FailureKind::as_str));
        for (i, m) in s.metrics.iter().enumerate() {
            self.m_run.push(s.run.0);
            self.m_step.push(s.step.clone());
            self.m_seq.push(i as i32);
            self.m_name.push(m.name.clone());
            self.m_value.push(m.value);
        }
        for a in &s.attempts {
            self.a_run.push(s.run.0);
            self.a_step.push(s.step.clone());
            self.a_attempt.push(a.attempt as i32);
            self.a_started.push(a.started_ms);
            self.a_ended.push(a.ended_ms);
            self.a_error.push(a.error.clone());
            self.a_memory.push(a.peak_memory_bytes.map(|b| b as i64));
            self.a_fuel.push(a.fuel_used.map(|f| f as i64));
        }
        for (i, (attempt, line)) in s.logs.iter().enumerate() {
            self.l_run.push(s.run.0);
            self.l_step.push(s.step.clone());
            self.l_attempt.push(*attempt as i32);
            self.l_seq.push(i as i32);
            self.l_level.push(line.level.clone());
            self.l_message.push(line.message.clone());
        }
        Ok(())
    }
}

/// Registers `digest` as the next version of model `name`, unless that
/// model already has this digest. Two processes registering the same name
/// at once take turns on an advisory lock of the name.
async fn register_model(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    digest: &Digest,
    run: RunId,
    step: &str,
    metrics: &[Metric],
) -> anyhow::Result<()> {
    let metrics: BTreeMap<&str, f64> = metrics.iter().map(|m| (m.name.as_str(), m.value)).collect();
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&name])
        .await?;
    tx.execute(
        "INSERT INTO models (name, version, digest, run_id, step, metrics, stage, created_ms)
         SELECT $1, COALESCE((SELECT MAX(version) FROM models WHERE name = $1), 0) + 1, $2, $3, $4, $5, $6, $7
         WHERE NOT EXISTS (SELECT 1 FROM models WHERE name = $1 AND digest = $2)",
        &[
            &name,
            &digest.to_hex(),
            &run.0,
            &step,
            &serde_json::to_string(&metrics)?,
            &ModelStage::None.as_str(),
            &now_ms(),
        ],
    )
    .await?;
    Ok(())
}

impl CacheIndex for PgRecords {
    fn cache_lookup(&self, key: &Digest) -> anyhow::Result<Option<CacheEntry>> {
        let key = key.to_hex();
        self.call(|pool| async move {
            let c = pool.get().await?;
            let st = c
                .prepare_cached("SELECT outputs, metrics, created_ms FROM cache WHERE key = $1")
                .await?;
            Ok(c.query_opt(&st, &[&key]).await?.map(|r| {
                let (o, m): (String, String) = (r.get(0), r.get(1));
                CacheEntry {
                    outputs: json_map(&o),
                    metrics: serde_json::from_str(&m).unwrap_or_default(),
                    created_ms: r.get(2),
                }
            }))
        })
    }

    fn cache_forget(&self, key: &Digest) -> anyhow::Result<()> {
        let key = key.to_hex();
        self.call(|pool| async move {
            let c = pool.get().await?;
            c.execute("DELETE FROM cache WHERE key = $1", &[&key])
                .await?;
            Ok(())
        })
    }

    fn cache_entries(&self) -> anyhow::Result<Vec<CachedOutputs>> {
        self.call(|pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query("SELECT key, run_id, outputs FROM cache", &[])
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let key: String = r.get(0);
                    let outputs: String = r.get(2);
                    Some(CachedOutputs {
                        key: key.parse().ok()?,
                        run: RunId(r.get(1)),
                        outputs: json_map(&outputs),
                    })
                })
                .collect())
        })
    }

    fn previous_outputs(
        &self,
        pipeline: &str,
        before: RunId,
        step: &str,
    ) -> anyhow::Result<Option<BTreeMap<String, Digest>>> {
        let (pipeline, step) = (pipeline.to_string(), step.to_string());
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let st = c
                .prepare_cached(
                    "SELECT s.outputs FROM runs r JOIN steps s ON s.run_id = r.id AND s.step = $1
                     WHERE r.pipeline = $3 AND r.id < $2 AND s.state IN ('succeeded', 'cached')
                     ORDER BY r.id DESC LIMIT 1",
                )
                .await?;
            Ok(c.query_opt(&st, &[&step, &before.0, &pipeline])
                .await?
                .map(|r| json_map(&r.get::<_, String>(0))))
        })
    }

    fn ran_before(&self, pipeline: &str, before: RunId) -> anyhow::Result<bool> {
        let pipeline = pipeline.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let st = c
                .prepare_cached("SELECT 1 FROM runs WHERE pipeline = $1 AND id < $2 LIMIT 1")
                .await?;
            Ok(c.query_opt(&st, &[&pipeline, &before.0]).await?.is_some())
        })
    }
}

impl History for PgRecords {
    fn plan_json(&self, id: RunId) -> anyhow::Result<Option<String>> {
        self.call(move |pool| async move {
            let c = pool.get().await?;
            Ok(c.query_opt(
                "SELECT p.json FROM runs r JOIN plans p ON p.key = r.plan_key WHERE r.id = $1",
                &[&id.0],
            )
            .await?
            .map(|r| r.get(0)))
        })
    }

    fn runs(&self, limit: usize) -> anyhow::Result<Vec<RunSummary>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    &format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT $1"),
                    &[&limit],
                )
                .await?;
            Ok(rows.iter().map(run_row).collect())
        })
    }

    fn run(&self, id: RunId) -> anyhow::Result<Option<RunSummary>> {
        self.call(move |pool| async move {
            let c = pool.get().await?;
            Ok(c.query_opt(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
                &[&id.0],
            )
            .await?
            .map(|r| run_row(&r)))
        })
    }

    fn steps(&self, id: RunId) -> anyhow::Result<Vec<StepSummary>> {
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {STEP_COLUMNS} FROM steps WHERE run_id = $1 ORDER BY ended_ms, seq"
                    ),
                    &[&id.0],
                )
                .await?;
            let mut steps: Vec<StepSummary> = rows.iter().map(|r| step_row(r, 0)).collect();
            let metrics = c
                .query(
                    "SELECT step, name, value FROM metrics WHERE run_id = $1 ORDER BY step, seq",
                    &[&id.0],
                )
                .await?;
            for r in metrics {
                let step: String = r.get(0);
                if let Some(s) = steps.iter_mut().find(|s| s.step == step) {
                    s.metrics.insert(r.get(1), r.get(2));
                }
            }
            Ok(steps)
        })
    }

    fn logs(&self, id: RunId, step: &str) -> anyhow::Result<Vec<(u32, LogLine)>> {
        let step = step.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT attempt, level, message FROM logs WHERE run_id = $1 AND step = $2 ORDER BY attempt, seq",
                    &[&id.0, &step],
                )
                .await?;
            Ok(rows.iter().map(log_row).collect())
        })
    }

    fn logs_page(
        &self,
        id: RunId,
        step: &str,
        skip: u64,
        limit: usize,
        max_bytes: usize,
    ) -> anyhow::Result<LogPage> {
        let step = step.to_string();
        let (take, skip) = (limit.max(1) as i64 + 1, skip.min(i64::MAX as u64) as i64);
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT attempt, level, message FROM logs WHERE run_id = $1 AND step = $2 ORDER BY attempt, seq LIMIT $3 OFFSET $4",
                    &[&id.0, &step, &take, &skip],
                )
                .await?;
            Ok(LogPage::take(rows.iter().map(log_row), limit, max_bytes))
        })
    }

    fn attempts(&self, id: RunId, step: &str) -> anyhow::Result<Vec<AttemptRecord>> {
        let step = step.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1 AND step = $2 ORDER BY attempt"),
                    &[&id.0, &step],
                )
                .await?;
            Ok(rows.iter().map(|r| attempt_row(r, 0)).collect())
        })
    }

    fn run_attempts(&self, id: RunId) -> anyhow::Result<BTreeMap<String, Vec<AttemptRecord>>> {
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    &format!("SELECT step, {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1 ORDER BY step, attempt"),
                    &[&id.0],
                )
                .await?;
            let mut out: BTreeMap<String, Vec<AttemptRecord>> = BTreeMap::new();
            for r in &rows {
                out.entry(r.get(0)).or_default().push(attempt_row(r, 1));
            }
            Ok(out)
        })
    }

    fn references(&self) -> anyhow::Result<Vec<(String, Digest)>> {
        self.call(|pool| async move {
            let c = pool.get().await?;
            let mut out = Vec::new();
            for r in c
                .query("SELECT run_id, step, inputs, outputs FROM steps", &[])
                .await?
            {
                let (run, step): (i64, String) = (r.get(0), r.get(1));
                for (name, d) in json_map(&r.get::<_, String>(2)) {
                    out.push((format!("run {run} step {step} input {name}"), d));
                }
                for (name, d) in json_map(&r.get::<_, String>(3)) {
                    out.push((format!("run {run} step {step} output {name}"), d));
                }
            }
            for r in c
                .query("SELECT name, version, digest FROM models", &[])
                .await?
            {
                let (name, version): (String, i32) = (r.get(0), r.get(1));
                if let Some(d) = digest_col(r.get(2)) {
                    out.push((format!("model {name} version {version}"), d));
                }
            }
            for r in c.query("SELECT key, outputs FROM cache", &[]).await? {
                let key: String = r.get(0);
                for (name, d) in json_map(&r.get::<_, String>(1)) {
                    out.push((
                        format!("cache entry {} output {name}", &key[..12.min(key.len())]),
                        d,
                    ));
                }
            }
            Ok(out)
        })
    }

    fn producer(
        &self,
        digest: &Digest,
        step: Option<&str>,
    ) -> anyhow::Result<Option<(RunId, StepSummary)>> {
        // Outputs are stored as JSON text; a full hex digest is unique in it.
        let pattern = format!("%\"{}\"%", digest.to_hex());
        let step = step.unwrap_or("").to_string();
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let row = c
                .query_opt(
                    &format!(
                        "SELECT run_id, {STEP_COLUMNS} FROM steps WHERE outputs LIKE $1 AND state IN ('succeeded', 'cached')
                         ORDER BY (step = $2) DESC, (state = 'succeeded') DESC, run_id LIMIT 1"
                    ),
                    &[&pattern, &step],
                )
                .await?;
            Ok(row.map(|r| {
                let mut s = step_row(&r, 1);
                s.failure = None;
                (RunId(r.get(0)), s)
            }))
        })
    }

    fn delete_runs(&self, runs: &[RunId]) -> anyhow::Result<usize> {
        let ids: Vec<i64> = runs.iter().map(|r| r.0).collect();
        self.call(move |pool| async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            for table in ["steps", "metrics", "logs", "attempts"] {
                tx.execute(&format!("DELETE FROM {table} WHERE run_id = ANY($1)"), &[&ids])
                    .await?;
            }
            let deleted = tx
                .execute("DELETE FROM runs WHERE id = ANY($1)", &[&ids])
                .await?;
            // Plans no run names any more.
            tx.execute(
                "DELETE FROM plans p WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.plan_key = p.key)",
                &[],
            )
            .await?;
            tx.commit().await?;
            Ok(deleted as usize)
        })
    }
}

fn log_row(r: &tokio_postgres::Row) -> (u32, LogLine) {
    (
        r.get::<_, i32>(0) as u32,
        LogLine {
            level: r.get(1),
            message: r.get(2),
        },
    )
}

impl ModelRegistry for PgRecords {
    fn models(&self, name: Option<&str>) -> anyhow::Result<Vec<ModelVersion>> {
        let name = name.map(str::to_string);
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT name, version, digest, run_id, step, metrics, stage, created_ms FROM models
                     WHERE $1::text IS NULL OR name = $1 ORDER BY name, version",
                    &[&name],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let (metrics, stage): (String, String) = (r.get(5), r.get(6));
                    ModelVersion {
                        name: r.get(0),
                        version: r.get::<_, i32>(1) as u32,
                        digest: digest_col(r.get(2)).unwrap_or_else(|| Digest::from_bytes([0; 32])),
                        run: RunId(r.get(3)),
                        step: r.get(4),
                        metrics: serde_json::from_str(&metrics).unwrap_or_default(),
                        stage: ModelStage::parse(&stage).unwrap_or(ModelStage::None),
                        created_ms: r.get(7),
                    }
                })
                .collect())
        })
    }

    fn promote(&self, name: &str, version: u32, stage: ModelStage) -> anyhow::Result<Vec<u32>> {
        let name = name.to_string();
        let v = version as i32;
        self.call(move |pool| async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&name])
                .await?;
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM models WHERE name = $1 AND version = $2",
                    &[&name, &v],
                )
                .await?
                .is_some();
            if !exists {
                let latest: Option<i32> = tx
                    .query_one("SELECT MAX(version) FROM models WHERE name = $1", &[&name])
                    .await?
                    .get(0);
                match latest {
                    None => anyhow::bail!(
                        "there is no model '{name}' in the registry (see `weir models list`)"
                    ),
                    Some(l) => {
                        anyhow::bail!("model '{name}' has no version {version} (versions 1 to {l})")
                    }
                }
            }
            let mut archived = Vec::new();
            if matches!(stage, ModelStage::Staging | ModelStage::Production) {
                archived = tx
                    .query(
                        "UPDATE models SET stage = $4 WHERE name = $1 AND stage = $2 AND version != $3 RETURNING version",
                        &[&name, &stage.as_str(), &v, &ModelStage::Archived.as_str()],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get::<_, i32>(0) as u32)
                    .collect();
                archived.sort_unstable();
            }
            tx.execute(
                "UPDATE models SET stage = $3 WHERE name = $1 AND version = $2",
                &[&name, &v, &stage.as_str()],
            )
            .await?;
            tx.commit().await?;
            Ok(archived)
        })
    }
}

impl PgRecords {
    /// Tries once to take [`LEADER_LOCK`] on a session of its own, kept
    /// while it holds the lock (the lock goes when the session ends: a
    /// process that dies or loses its connection hands the lead on).
    fn take_lead(&self) -> anyhow::Result<Option<tokio_postgres::Client>> {
        let pg = self.pg.clone();
        self.call(move |_| async move {
            let (client, conn) = pg.connect(NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                .await?
                .get(0);
            Ok(got.then_some(client))
        })
    }
}

impl SlotLog for PgRecords {
    fn lead(&self) -> anyhow::Result<bool> {
        let mut l = self.leader.lock().unwrap_or_else(|p| p.into_inner());
        if l.session.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(true);
        }
        if l.session.take().is_some() {
            tracing::warn!(
                "records database {}: lost the scheduling lead (its session ended)",
                self.name
            );
        }
        if l.tried.is_some_and(|t| t.elapsed() < LEAD_RETRY) {
            return Ok(false);
        }
        l.tried = Some(std::time::Instant::now());
        l.session = self.take_lead()?;
        Ok(l.session.is_some())
    }

    fn cursor(&self, pipeline: &str, now: &str) -> anyhow::Result<(Option<String>, String)> {
        let (pipeline, now) = (pipeline.to_string(), now.to_string());
        self.call(move |pool| async move {
            let c = pool.get().await?;
            c.execute(
                "INSERT INTO schedule_cursors (pipeline, since) VALUES ($1, $2) ON CONFLICT (pipeline) DO NOTHING",
                &[&pipeline, &now],
            )
            .await?;
            let row = c
                .query_one(
                    "SELECT (SELECT MAX(slot) FROM schedule_slots WHERE pipeline = $1),
                            (SELECT since FROM schedule_cursors WHERE pipeline = $1)",
                    &[&pipeline],
                )
                .await?;
            Ok((row.get(0), row.get(1)))
        })
    }

    fn claim(&self, pipeline: &str, slot: &str) -> anyhow::Result<bool> {
        let (pipeline, slot) = (pipeline.to_string(), slot.to_string());
        self.call(move |pool| async move {
            let c = pool.get().await?;
            // Atomic across servers: the row's lock makes a second claimer
            // wait, then see the slot taken.
            let n = c
                .execute(
                    "INSERT INTO schedule_slots (pipeline, slot, state, at_ms) VALUES ($1, $2, 'claimed', $3)
                     ON CONFLICT (pipeline, slot) DO UPDATE SET state = 'claimed', reason = NULL, at_ms = EXCLUDED.at_ms
                     WHERE schedule_slots.state = 'skipped'",
                    &[&pipeline, &slot, &now_ms()],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn settle(
        &self,
        pipeline: &str,
        slot: &str,
        run: Option<i64>,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        let (pipeline, slot, reason) = (
            pipeline.to_string(),
            slot.to_string(),
            reason.map(str::to_string),
        );
        let state = if run.is_some() { "fired" } else { "skipped" };
        self.call(move |pool| async move {
            let c = pool.get().await?;
            c.execute(
                "UPDATE schedule_slots SET state = $3, run = $4, reason = $5 WHERE pipeline = $1 AND slot = $2",
                &[&pipeline, &slot, &state, &run, &reason],
            )
            .await?;
            Ok(())
        })
    }

    fn skip(&self, pipeline: &str, slot: &str, reason: &str) -> anyhow::Result<()> {
        let (pipeline, slot, reason) = (pipeline.to_string(), slot.to_string(), reason.to_string());
        self.call(move |pool| async move {
            let c = pool.get().await?;
            c.execute(
                "INSERT INTO schedule_slots (pipeline, slot, state, reason, at_ms) VALUES ($1, $2, 'skipped', $3, $4)
                 ON CONFLICT (pipeline, slot) DO NOTHING",
                &[&pipeline, &slot, &reason, &now_ms()],
            )
            .await?;
            Ok(())
        })
    }

    fn set_paused(&self, pipeline: &str, paused: bool) -> anyhow::Result<()> {
        let pipeline = pipeline.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await?;
            if paused {
                c.execute(
                    "INSERT INTO schedule_paused (pipeline, at_ms) VALUES ($1, $2) ON CONFLICT (pipeline) DO NOTHING",
                    &[&pipeline, &now_ms()],
                )
                .await?;
            } else {
                c.execute("DELETE FROM schedule_paused WHERE pipeline = $1", &[&pipeline])
                    .await?;
            }
            Ok(())
        })
    }

    fn is_paused(&self, pipeline: &str) -> anyhow::Result<bool> {
        let pipeline = pipeline.to_string();
        self.call(move |pool| async move {
            let c = pool.get().await?;
            Ok(c.query_opt(
                "SELECT 1 FROM schedule_paused WHERE pipeline = $1",
                &[&pipeline],
            )
            .await?
            .is_some())
        })
    }

    fn note_run(
        &self,
        run: i64,
        source: &str,
        trigger: Option<&str>,
        params: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let (source, params) = (source.to_string(), serde_json::to_string(params)?);
        let trigger = trigger.map(str::to_string);
        self.call(move |pool| async move {
            let c = pool.get().await?;
            c.execute(
                "INSERT INTO run_sources (run, source, params, trigger) VALUES ($1, $2, $3, $4) ON CONFLICT (run) DO NOTHING",
                &[&run, &source, &params, &trigger],
            )
            .await?;
            Ok(())
        })
    }

    fn run_sources(&self, runs: &[i64]) -> anyhow::Result<BTreeMap<i64, RunSource>> {
        let runs = runs.to_vec();
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT run, source, params, trigger FROM run_sources WHERE run = ANY($1)",
                    &[&runs],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let params: String = r.get(2);
                    (
                        r.get(0),
                        RunSource {
                            source: r.get(1),
                            trigger: r.get(3),
                            params: serde_json::from_str(&params).unwrap_or_default(),
                        },
                    )
                })
                .collect())
        })
    }

    fn watched(&self, pipeline: &str, dir: &str) -> anyhow::Result<Option<String>> {
        let (pipeline, dir) = (pipeline.to_string(), dir.to_string());
        self.call(move |pool| async move {
            let c = pool.get().await?;
            Ok(c.query_opt(
                "SELECT digest FROM watched WHERE pipeline = $1 AND dir = $2",
                &[&pipeline, &dir],
            )
            .await?
            .map(|r| r.get(0)))
        })
    }

    fn set_watched(&self, pipeline: &str, dir: &str, digest: &str) -> anyhow::Result<()> {
        let (pipeline, dir, digest) = (pipeline.to_string(), dir.to_string(), digest.to_string());
        self.call(move |pool| async move {
            let c = pool.get().await?;
            c.execute(
                "INSERT INTO watched (pipeline, dir, digest, at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (pipeline, dir) DO UPDATE SET digest = EXCLUDED.digest, at_ms = EXCLUDED.at_ms",
                &[&pipeline, &dir, &digest, &now_ms()],
            )
            .await?;
            Ok(())
        })
    }

    fn recent(&self, pipeline: Option<&str>, limit: usize) -> anyhow::Result<Vec<SlotRecord>> {
        let pipeline = pipeline.map(str::to_string);
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT pipeline, slot, state, run, reason FROM schedule_slots
                     WHERE $1::text IS NULL OR pipeline = $1 ORDER BY slot DESC LIMIT $2",
                    &[&pipeline, &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| SlotRecord {
                    pipeline: r.get(0),
                    slot: r.get(1),
                    state: r.get(2),
                    run: r.get(3),
                    reason: r.get(4),
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            redacted("postgres://weir:s3cret@db:5432/weir"),
            "postgres://weir@db:5432/weir"
        );
        assert_eq!(redacted("postgres://db/weir"), "postgres://db/weir");
        assert_eq!(redacted("postgresql://u@db/x"), "postgresql://u@db/x");
    }
}
