//! The embedded backend: one SQLite file in WAL mode (`weir.db` in the
//! store), a writer connection for batched commits and a read-only one for
//! lookups, the schema and its migrations.

use super::*;
use crate::digest::Digest;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// Version 2 added the model registry (`models`); version 3 stores each
/// distinct plan once (`plans`, named by the blake3 of its JSON; a run's
/// `plan_key` names it, and `plan_json` is empty). Older files gain the
/// table and column on open; their runs keep their own `plan_json`.
const SCHEMA_VERSION: i64 = 3;

/// Whether a file already holds what [`SCHEMA`] makes: every table and
/// index it creates, none it drops (read from `SCHEMA` itself), and the
/// column older files gain by `ALTER`. (A weir from before the steps-by-name
/// index was dropped re-creates it on open without changing the version.)
fn schema_current(conn: &Connection) -> rusqlite::Result<bool> {
    let mut have = std::collections::HashSet::new();
    let mut st = conn.prepare("SELECT name FROM sqlite_master")?;
    for name in st.query_map([], |r| r.get::<_, String>(0))? {
        have.insert(name?);
    }
    for statement in SCHEMA.split(';') {
        let words: Vec<&str> = statement
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .flat_map(str::split_whitespace)
            .collect();
        let ok = match words.as_slice() {
            [] => true,
            ["CREATE", "TABLE" | "INDEX", "IF", "NOT", "EXISTS", name, ..] => have.contains(*name),
            ["DROP", "INDEX", "IF", "EXISTS", name] => !have.contains(*name),
            // A statement of another form: run the script to be sure.
            _ => false,
        };
        if !ok {
            return Ok(false);
        }
    }
    has_plan_key(conn)
}

/// Adds the columns later versions added to a file made before them: the
/// attempts' resources, the steps' failure kind.
fn add_attempt_resources(conn: &Connection) -> rusqlite::Result<()> {
    for (table, col, ty) in [
        ("attempts", "peak_memory", "INTEGER"),
        ("attempts", "fuel_used", "INTEGER"),
        ("steps", "failure", "TEXT"),
    ] {
        let has = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([col])?;
        if !has {
            conn.execute(&format!("ALTER TABLE {table} ADD COLUMN {col} {ty}"), [])?;
        }
    }
    Ok(())
}

/// Whether `runs` has the column files before schema version 3 lack.
fn has_plan_key(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = 'plan_key'")?
        .exists([])
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS plans (
    key TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS run_owners (
    run_id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    plan_digest TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    plan_key TEXT,
    state TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    error TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    cache_key TEXT,
    component TEXT,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER NOT NULL,
    error TEXT,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    failure TEXT,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, step);
-- An index of steps by name took one page write per step record (its
-- entries spread over a page per name), and grew with every run: gone.
DROP INDEX IF EXISTS steps_by_name;
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, id);
CREATE TABLE IF NOT EXISTS logs (
    run_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_step ON logs (run_id, step);
CREATE TABLE IF NOT EXISTS attempts (
    run_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER NOT NULL,
    error TEXT,
    peak_memory INTEGER,
    fuel_used INTEGER,
    PRIMARY KEY (run_id, step, attempt)
);
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    metrics TEXT NOT NULL,
    stage TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, digest)
);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    outputs TEXT NOT NULL,
    metrics TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
"#;

/// The embedded SQLite backend.
pub struct SqliteRecords {
    /// Every write, and reads that must not interleave with writes (gc).
    conn: Mutex<Connection>,
    /// Plain reads (cache lookups, listings): WAL readers never wait for a
    /// writer, so a step's cache lookup does not queue behind a commit.
    reader: Mutex<Connection>,
}

fn lock(m: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves SQLite itself consistent
    // (transactions roll back), so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteRecords {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<SqliteRecords> {
        // Another process opening the same file at the same moment can make
        // the journal-mode switch or the schema check fail at once with
        // SQLITE_BUSY (the busy handler does not cover every case), so the
        // whole opening is retried for as long as the busy timeout.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match Self::open_once(path) {
                Err(e)
                    if std::time::Instant::now() < deadline
                        && e.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
                            matches!(
                                e.sqlite_error_code(),
                                Some(
                                    rusqlite::ErrorCode::DatabaseBusy
                                        | rusqlite::ErrorCode::DatabaseLocked
                                )
                            )
                        }) =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// A connection to the records at `path`, as both of ours are set up.
    fn connect(path: &Path) -> anyhow::Result<Connection> {
        let c = Connection::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open run records {}: {e}", path.display()))?;
        c.busy_timeout(std::time::Duration::from_secs(30))?;
        // Closing does not copy the log into the file (3-5 ms of every
        // `weir` command): the log stays beside it, durable, bounded by the
        // autocheckpoint, which copies it during a later commit instead.
        c.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        Ok(c)
    }

    fn open_once(path: &Path) -> anyhow::Result<SqliteRecords> {
        let conn = Self::connect(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Every commit is durable once it returns (the WAL is synced); the
        // committer batches finished steps, so this costs one sync per batch.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // A large batch can grow the log past the autocheckpoint's ~4 MB;
        // once checkpointed it is cut back to this instead of keeping its size.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            anyhow::bail!(
                "run records {} have schema version {version}, newer than this weir's {SCHEMA_VERSION}; upgrade weir",
                path.display()
            );
        }
        // Brought up to date only when it is not: the check writes nothing
        // (setting the version on every open took a write lock and a sync).
        let current = version == SCHEMA_VERSION && schema_current(&conn)?;
        if !current {
            conn.execute_batch(SCHEMA)?;
            if !has_plan_key(&conn)?
                && let Err(e) = conn.execute("ALTER TABLE runs ADD COLUMN plan_key TEXT", [])
                && !e.to_string().contains("duplicate column")
            {
                return Err(e.into());
            }
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        // (Columns SCHEMA's statements name are not seen by the check above.)
        add_attempt_resources(&conn)?;
        let reader = Self::connect(path)?;
        reader.pragma_update(None, "query_only", "ON")?;
        reader.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
        Ok(SqliteRecords {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
        })
    }
}

/// The outputs of step ?1 in the newest run of pipeline ?3 before run ?2 in
/// which it succeeded or was cached.
const PREVIOUS_OUTPUTS: &str =
    "SELECT s.outputs FROM runs r JOIN steps s ON s.run_id = r.id AND s.step = ?1
     WHERE r.pipeline = ?3 AND r.id < ?2 AND s.state IN ('succeeded', 'cached')
     ORDER BY r.id DESC LIMIT 1";

/// The size SQLite's log is cut back to after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 8 << 20;

/// How much of the records file the read connection reads through a memory
/// map instead of a system call per page: the committer's writes empty its
/// page cache, so every cache lookup reads its pages again.
const READER_MMAP_BYTES: i64 = 256 << 20;

fn digest_col(s: Option<String>) -> Option<Digest> {
    s.and_then(|s| s.parse().ok())
}

fn json_map(s: &str) -> BTreeMap<String, Digest> {
    serde_json::from_str(s).unwrap_or_default()
}

/// The attempt in the six columns of `r` from `at` on: attempt,
/// started_ms, ended_ms, error, peak_memory, fuel_used.
fn attempt_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        attempt: r.get(at)?,
        started_ms: r.get(at + 1)?,
        ended_ms: r.get(at + 2)?,
        error: r.get(at + 3)?,
        peak_memory_bytes: r.get::<_, Option<i64>>(at + 4)?.map(|b| b as u64),
        fuel_used: r.get::<_, Option<i64>>(at + 5)?.map(|f| f as u64),
    })
}

/// Stores `plan_json` once, named by its blake3, and returns that name.
fn store_plan(c: &Connection, plan_json: &str) -> rusqlite::Result<blake3::Hash> {
    let key = blake3::hash(plan_json.as_bytes());
    let stored = c
        .prepare_cached("SELECT 1 FROM plans WHERE key = ?1")?
        .exists([key.to_hex().as_str()])?;
    if !stored {
        c.prepare_cached("INSERT OR IGNORE INTO plans (key, json) VALUES (?1, ?2)")?
            .execute(params![key.to_hex().as_str(), plan_json])?;
    }
    Ok(key)
}

/// Records that this process runs run `id`, so a later one can tell it was
/// left behind ([`RunLog::interrupt_orphans`]).
fn record_owner(c: &Connection, id: i64) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR REPLACE INTO run_owners (run_id, owner) VALUES (?1, ?2)")?
        .execute(params![id, crate::owner::Owner::current().to_string()])?;
    Ok(())
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    let state: String = r.get(3)?;
    Ok(RunSummary {
        id: RunId(r.get(0)?),
        pipeline: r.get(1)?,
        plan_digest: digest_col(r.get(2)?).unwrap_or_else(|| Digest::from_bytes([0; 32])),
        state: RunState::parse(&state).unwrap_or(RunState::Failed),
        started_ms: r.get(4)?,
        ended_ms: r.get(5)?,
        error: r.get(6)?,
    })
}

impl RunLog for SqliteRecords {
    fn begin_run(
        &self,
        pipeline: &str,
        plan_digest: &Digest,
        plan_json: &str,
    ) -> anyhow::Result<RunId> {
        let c = lock(&self.conn);
        // The new run's row needs no sync of its own: the WAL is written in
        // order, so the sync of the run's first commit covers it, and until
        // then the run has recorded nothing that a power cut could lose.
        c.pragma_update(None, "synchronous", "NORMAL")?;
        let inserted = (|| -> rusqlite::Result<i64> {
            let key = store_plan(&c, plan_json)?.to_hex();
            c.prepare_cached(
                "INSERT INTO runs (pipeline, plan_digest, plan_json, plan_key, state, started_ms) VALUES (?1, ?2, '', ?3, ?4, ?5)",
            )?
            .execute(params![
                pipeline,
                plan_digest.to_hex(),
                key.as_str(),
                RunState::Running.as_str(),
                now_ms()
            ])?;
            let id = c.last_insert_rowid();
            record_owner(&c, id)?;
            Ok(id)
        })();
        c.pragma_update(None, "synchronous", "FULL")?;
        Ok(RunId(inserted?))
    }

    fn commit(&self, ops: &[RecordOp]) -> anyhow::Result<()> {
        let mut c = lock(&self.conn);
        let tx = c.transaction()?;
        for op in ops {
            match op {
                RecordOp::Step(s) => write_step(&tx, s)?,
                RecordOp::Cache {
                    key,
                    outputs,
                    metrics,
                    run,
                    step,
                } => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO cache (key, outputs, metrics, run_id, step, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        key.to_hex(),
                        serde_json::to_string(outputs)?,
                        serde_json::to_string(metrics)?,
                        run.0,
                        step,
                        now_ms()
                    ])?;
                }
                RecordOp::RegisterModel {
                    name,
                    digest,
                    run,
                    step,
                    metrics,
                } => register_model(&tx, name, digest, *run, step, metrics)?,
                RecordOp::RunPrepared {
                    run,
                    plan_digest,
                    plan_json,
                } => {
                    let key = store_plan(&tx, plan_json)?.to_hex();
                    tx.prepare_cached(
                        "UPDATE runs SET plan_digest = ?2, plan_key = ?3, plan_json = '' WHERE id = ?1",
                    )?
                    .execute(params![run.0, plan_digest.to_hex(), key.as_str()])?;
                }
                RecordOp::RunEnded { run, state, error } => {
                    tx.prepare_cached(
                        "UPDATE runs SET state = ?2, ended_ms = ?3, error = ?4 WHERE id = ?1",
                    )?
                    .execute(params![
                        run.0,
                        state.as_str(),
                        now_ms(),
                        error
                    ])?;
                    tx.prepare_cached("DELETE FROM run_owners WHERE run_id = ?1")?
                        .execute([run.0])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn reopen_run(&self, id: RunId) -> anyhow::Result<()> {
        let c = lock(&self.conn);
        c.execute(
            "UPDATE runs SET state = ?2, started_ms = ?3, ended_ms = NULL, error = NULL WHERE id = ?1",
            params![id.0, RunState::Running.as_str(), now_ms()],
        )?;
        record_owner(&c, id.0)?;
        Ok(())
    }

    fn interrupt_orphans(&self) -> anyhow::Result<Vec<RunId>> {
        let running: Vec<(i64, Option<String>)> = {
            let c = lock(&self.reader);
            let mut st = c.prepare(
                "SELECT r.id, o.owner FROM runs r LEFT JOIN run_owners o ON o.run_id = r.id WHERE r.state = 'running'",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut gone = Vec::new();
        for (id, owner) in running {
            // A run from before owners were recorded counts as gone.
            let owner = owner.and_then(|o| o.parse::<crate::owner::Owner>().ok());
            if owner.as_ref().is_some_and(crate::owner::Owner::is_alive) {
                continue;
            }
            let why = match &owner {
                Some(o) => format!(
                    "interrupted: the process that ran it (pid {}) ended without finishing it; retry it to go on, or cancel it",
                    o.pid
                ),
                None => "interrupted: the process that ran it ended without finishing it; retry it to go on, or cancel it".to_string(),
            };
            let c = lock(&self.conn);
            // Only if still running: its process cannot end it any more,
            // but another reconciler may have got there first.
            let n = c.execute(
                "UPDATE runs SET state = ?2, ended_ms = ?3, error = ?4 WHERE id = ?1 AND state = 'running'",
                params![id, RunState::Interrupted.as_str(), now_ms(), why],
            )?;
            c.execute("DELETE FROM run_owners WHERE run_id = ?1", [id])?;
            if n > 0 {
                gone.push(RunId(id));
            }
        }
        Ok(gone)
    }
}

impl CacheIndex for SqliteRecords {
    fn cache_lookup(&self, key: &Digest) -> anyhow::Result<Option<CacheEntry>> {
        let c = lock(&self.reader);
        let row: Option<(String, String, i64)> = c
            .prepare_cached("SELECT outputs, metrics, created_ms FROM cache WHERE key = ?1")?
            .query_row([key.to_hex()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(row.map(|(o, m, created_ms)| CacheEntry {
            outputs: json_map(&o),
            metrics: serde_json::from_str(&m).unwrap_or_default(),
            created_ms,
        }))
    }

    fn cache_forget(&self, key: &Digest) -> anyhow::Result<()> {
        let c = lock(&self.conn);
        c.execute("DELETE FROM cache WHERE key = ?1", [key.to_hex()])?;
        Ok(())
    }

    fn cache_entries(&self) -> anyhow::Result<Vec<CachedOutputs>> {
        let c = lock(&self.reader);
        let mut st = c.prepare("SELECT key, run_id, outputs FROM cache")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, run, outputs) = row?;
            let Ok(key) = key.parse() else { continue };
            out.push(CachedOutputs {
                key,
                run: RunId(run),
                outputs: json_map(&outputs),
            });
        }
        Ok(out)
    }

    fn previous_outputs(
        &self,
        pipeline: &str,
        before: RunId,
        step: &str,
    ) -> anyhow::Result<Option<BTreeMap<String, Digest>>> {
        // Walks the pipeline's runs backwards from `before` (`runs_by_pipeline`)
        // with one probe of the steps' primary key each, back to the step's
        // last success: one probe when that was the run before.
        let c = lock(&self.reader);
        let mut st = c.prepare_cached(PREVIOUS_OUTPUTS)?;
        Ok(st
            .query_row(params![step, before.0, pipeline], |r| r.get::<_, String>(0))
            .optional()?
            .map(|o| json_map(&o)))
    }

    fn ran_before(&self, pipeline: &str, before: RunId) -> anyhow::Result<bool> {
        let c = lock(&self.reader);
        let mut st =
            c.prepare_cached("SELECT 1 FROM runs WHERE pipeline = ?1 AND id < ?2 LIMIT 1")?;
        Ok(st.exists(params![pipeline, before.0])?)
    }
}

impl History for SqliteRecords {
    fn plan_json(&self, id: RunId) -> anyhow::Result<Option<String>> {
        let c = lock(&self.reader);
        Ok(
            c.query_row(
                "SELECT COALESCE(p.json, r.plan_json) FROM runs r LEFT JOIN plans p ON p.key = r.plan_key WHERE r.id = ?1",
                [id.0],
                |r| r.get(0),
            )
            .optional()?,
        )
    }

    fn runs(&self, limit: usize) -> anyhow::Result<Vec<RunSummary>> {
        let c = lock(&self.reader);
        let mut st = c.prepare(
            "SELECT id, pipeline, plan_digest, state, started_ms, ended_ms, error FROM runs ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], run_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn run(&self, id: RunId) -> anyhow::Result<Option<RunSummary>> {
        let c = lock(&self.reader);
        Ok(c
            .query_row(
                "SELECT id, pipeline, plan_digest, state, started_ms, ended_ms, error FROM runs WHERE id = ?1",
                [id.0],
                run_row,
            )
            .optional()?)
    }

    fn steps(&self, id: RunId) -> anyhow::Result<Vec<StepSummary>> {
        let c = lock(&self.reader);
        let mut st = c.prepare(
            "SELECT step, state, attempts, cache_key, component, started_ms, ended_ms, error, outputs, inputs, failure FROM steps WHERE run_id = ?1 ORDER BY ended_ms, rowid",
        )?;
        let mut steps: Vec<StepSummary> = st
            .query_map([id.0], |r| {
                let state: String = r.get(1)?;
                let outputs: String = r.get(8)?;
                let inputs: String = r.get(9)?;
                Ok(StepSummary {
                    step: r.get(0)?,
                    state: StepState::parse(&state).unwrap_or(StepState::Failed),
                    attempts: r.get(2)?,
                    cache_key: digest_col(r.get(3)?),
                    component: digest_col(r.get(4)?),
                    started_ms: r.get(5)?,
                    ended_ms: r.get(6)?,
                    error: r.get(7)?,
                    failure: r
                        .get::<_, Option<String>>(10)?
                        .and_then(|f| FailureKind::parse(&f)),
                    inputs: json_map(&inputs),
                    outputs: json_map(&outputs),
                    metrics: BTreeMap::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut mt = c.prepare(
            "SELECT step, name, value FROM metrics WHERE run_id = ?1 ORDER BY step, seq",
        )?;
        let rows = mt.query_map([id.0], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })?;
        for row in rows {
            let (step, name, value) = row?;
            if let Some(s) = steps.iter_mut().find(|s| s.step == step) {
                s.metrics.insert(name, value);
            }
        }
        Ok(steps)
    }

    fn logs(&self, id: RunId, step: &str) -> anyhow::Result<Vec<(u32, LogLine)>> {
        let c = lock(&self.reader);
        let mut st = c.prepare(
            "SELECT attempt, level, message FROM logs WHERE run_id = ?1 AND step = ?2 ORDER BY attempt, seq",
        )?;
        let rows = st.query_map(params![id.0, step], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                LogLine {
                    level: r.get(1)?,
                    message: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn logs_page(
        &self,
        id: RunId,
        step: &str,
        skip: u64,
        limit: usize,
        max_bytes: usize,
    ) -> anyhow::Result<LogPage> {
        let c = lock(&self.reader);
        let mut st = c.prepare(
            "SELECT attempt, level, message FROM logs WHERE run_id = ?1 AND step = ?2 ORDER BY attempt, seq LIMIT ?3 OFFSET ?4",
        )?;
        let rows = st.query_map(
            params![id.0, step, limit.max(1) as i64 + 1, skip as i64],
            |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    LogLine {
                        level: r.get(1)?,
                        message: r.get(2)?,
                    },
                ))
            },
        )?;
        // Rows are read one at a time: a page stops before its bytes run over.
        let mut failed = None;
        let page = LogPage::take(
            rows.map_while(|r| r.map_err(|e| failed = Some(e)).ok()),
            limit,
            max_bytes,
        );
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(page),
        }
    }

    fn attempts(&self, id: RunId, step: &str) -> anyhow::Result<Vec<AttemptRecord>> {
        let c = lock(&self.reader);
        let mut st = c.prepare(
            "SELECT attempt, started_ms, ended_ms, error, peak_memory, fuel_used FROM attempts WHERE run_id = ?1 AND step = ?2 ORDER BY attempt",
        )?;
        let rows = st.query_map(params![id.0, step], |r| attempt_row(r, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn run_attempts(&self, id: RunId) -> anyhow::Result<BTreeMap<String, Vec<AttemptRecord>>> {
        let c = lock(&self.reader);
        let mut st = c.prepare(
            "SELECT step, attempt, started_ms, ended_ms, error, peak_memory, fuel_used FROM attempts WHERE run_id = ?1 ORDER BY step, attempt",
        )?;
        let rows = st.query_map([id.0], |r| Ok((r.get::<_, String>(0)?, attempt_row(r, 1)?)))?;
        let mut out: BTreeMap<String, Vec<AttemptRecord>> = BTreeMap::new();
        for row in rows {
            let (step, a) = row?;
            out.entry(step).or_default().push(a);
        }
        Ok(out)
    }

    fn references(&self) -> anyhow::Result<Vec<(String, Digest)>> {
        let c = lock(&self.conn);
        let mut out = Vec::new();
        let mut st = c.prepare("SELECT run_id, step, inputs, outputs FROM steps")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (run, step, inputs, outputs) = row?;
            for (name, d) in json_map(&inputs) {
                out.push((format!("run {run} step {step} input {name}"), d));
            }
            for (name, d) in json_map(&outputs) {
                out.push((format!("run {run} step {step} output {name}"), d));
            }
        }
        let mut st = c.prepare("SELECT name, version, digest FROM models")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (name, version, d) = row?;
            if let Some(d) = digest_col(Some(d)) {
                out.push((format!("model {name} version {version}"), d));
            }
        }
        let mut st = c.prepare("SELECT key, outputs FROM cache")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (key, outputs) = row?;
            for (name, d) in json_map(&outputs) {
                out.push((
                    format!("cache entry {} output {name}", &key[..12.min(key.len())]),
                    d,
                ));
            }
        }
        Ok(out)
    }

    fn producer(
        &self,
        digest: &Digest,
        step: Option<&str>,
    ) -> anyhow::Result<Option<(RunId, StepSummary)>> {
        let c = lock(&self.reader);
        // Outputs are stored as JSON text; a full hex digest is unique in it.
        let pattern = format!("%\"{}\"%", digest.to_hex());
        let row = c
            .query_row(
                "SELECT run_id, step, state, attempts, cache_key, component, started_ms, ended_ms, error, outputs, inputs
                 FROM steps WHERE outputs LIKE ?1 AND state IN ('succeeded', 'cached')
                 ORDER BY step = ?2 DESC, state = 'succeeded' DESC, run_id LIMIT 1",
                params![pattern, step.unwrap_or("")],
                |r| {
                    let state: String = r.get(2)?;
                    let outputs: String = r.get(9)?;
                    let inputs: String = r.get(10)?;
                    Ok((
                        RunId(r.get(0)?),
                        StepSummary {
                            step: r.get(1)?,
                            state: StepState::parse(&state).unwrap_or(StepState::Failed),
                            attempts: r.get(3)?,
                            cache_key: digest_col(r.get(4)?),
                            component: digest_col(r.get(5)?),
                            started_ms: r.get(6)?,
                            ended_ms: r.get(7)?,
                            error: r.get(8)?,
                            failure: None,
                            inputs: json_map(&inputs),
                            outputs: json_map(&outputs),
                            metrics: BTreeMap::new(),
                        },
                    ))
                },
            )
            .optional()?;
        Ok(row)
    }

    fn delete_runs(&self, runs: &[RunId]) -> anyhow::Result<usize> {
        let mut c = lock(&self.conn);
        let tx = c.transaction()?;
        let mut deleted = 0;
        for run in runs {
            for table in ["steps", "metrics", "logs", "attempts", "run_owners"] {
                tx.execute(&format!("DELETE FROM {table} WHERE run_id = ?1"), [run.0])?;
            }
            deleted += tx.execute("DELETE FROM runs WHERE id = ?1", [run.0])?;
        }
        // Plans no run names any more.
        tx.execute(
            "DELETE FROM plans WHERE key NOT IN (SELECT plan_key FROM runs WHERE plan_key IS NOT NULL)",
            [],
        )?;
        tx.commit()?;
        Ok(deleted)
    }
}

impl ModelRegistry for SqliteRecords {
    fn models(&self, name: Option<&str>) -> anyhow::Result<Vec<ModelVersion>> {
        let c = lock(&self.reader);
        let mut st = c.prepare(
            "SELECT name, version, digest, run_id, step, metrics, stage, created_ms FROM models
             WHERE ?1 IS NULL OR name = ?1 ORDER BY name, version",
        )?;
        let rows = st.query_map([name], |r| {
            let digest: String = r.get(2)?;
            let metrics: String = r.get(5)?;
            let stage: String = r.get(6)?;
            Ok(ModelVersion {
                name: r.get(0)?,
                version: r.get(1)?,
                digest: digest_col(Some(digest)).unwrap_or_else(|| Digest::from_bytes([0; 32])),
                run: RunId(r.get(3)?),
                step: r.get(4)?,
                metrics: serde_json::from_str(&metrics).unwrap_or_default(),
                stage: ModelStage::parse(&stage).unwrap_or(ModelStage::None),
                created_ms: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn promote(&self, name: &str, version: u32, stage: ModelStage) -> anyhow::Result<Vec<u32>> {
        let mut c = lock(&self.conn);
        let tx = c.transaction()?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT version FROM models WHERE name = ?1 AND version = ?2",
                params![name, version],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            let latest: Option<i64> = tx.query_row(
                "SELECT MAX(version) FROM models WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?;
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
            let mut st = tx.prepare(
                "SELECT version FROM models WHERE name = ?1 AND stage = ?2 AND version != ?3",
            )?;
            archived = st
                .query_map(params![name, stage.as_str(), version], |r| {
                    r.get::<_, u32>(0)
                })?
                .collect::<Result<_, _>>()?;
            drop(st);
            tx.execute(
                "UPDATE models SET stage = ?4 WHERE name = ?1 AND stage = ?2 AND version != ?3",
                params![name, stage.as_str(), version, ModelStage::Archived.as_str()],
            )?;
        }
        tx.execute(
            "UPDATE models SET stage = ?3 WHERE name = ?1 AND version = ?2",
            params![name, version, stage.as_str()],
        )?;
        tx.commit()?;
        Ok(archived)
    }
}

/// Writes a step's record: its row, metrics, attempts and log lines.
fn write_step(tx: &rusqlite::Transaction<'_>, s: &StepRecord) -> anyhow::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO steps (run_id, step, state, attempts, cache_key, component, started_ms, ended_ms, error, inputs, outputs, failure)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        s.run.0,
        s.step,
        s.state.as_str(),
        s.attempt,
        s.cache_key.map(|k| k.to_hex()),
        s.component.map(|k| k.to_hex()),
        s.started_ms,
        s.ended_ms,
        s.error,
        serde_json::to_string(&s.inputs)?,
        serde_json::to_string(&s.outputs)?,
        s.failure.map(FailureKind::as_str),
    ])?;
    let mut metrics = tx.prepare_cached(
        "INSERT INTO metrics (run_id, step, seq, name, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (i, metric) in s.metrics.iter().enumerate() {
        metrics.execute(params![
            s.run.0,
            s.step,
            i as i64,
            metric.name,
            metric.value
        ])?;
    }
    let mut attempts = tx.prepare_cached(
        "INSERT OR REPLACE INTO attempts (run_id, step, attempt, started_ms, ended_ms, error, peak_memory, fuel_used) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for at in &s.attempts {
        attempts.execute(params![
            s.run.0,
            s.step,
            at.attempt,
            at.started_ms,
            at.ended_ms,
            at.error,
            at.peak_memory_bytes.map(|b| b as i64),
            at.fuel_used.map(|f| f as i64)
        ])?;
    }
    let mut logs = tx.prepare_cached(
        "INSERT INTO logs (run_id, step, attempt, seq, level, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (i, (attempt, line)) in s.logs.iter().enumerate() {
        logs.execute(params![
            s.run.0,
            s.step,
            attempt,
            i as i64,
            line.level,
            line.message
        ])?;
    }
    Ok(())
}

/// Registers `digest` as the next version of model `name`, unless that
/// model already has this digest.
fn register_model(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    digest: &Digest,
    run: RunId,
    step: &str,
    metrics: &[Metric],
) -> anyhow::Result<()> {
    let metrics: BTreeMap<&str, f64> = metrics.iter().map(|m| (m.name.as_str(), m.value)).collect();
    tx.prepare_cached(
        "INSERT INTO models (name, version, digest, run_id, step, metrics, stage, created_ms)
         SELECT ?1, COALESCE((SELECT MAX(version) FROM models WHERE name = ?1), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7
         WHERE NOT EXISTS (SELECT 1 FROM models WHERE name = ?1 AND digest = ?2)",
    )?
    .execute(params![
        name,
        digest.to_hex(),
        run.0,
        step,
        serde_json::to_string(&metrics)?,
        ModelStage::None.as_str(),
        now_ms()
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21, bug 10: a retried run's duration counted from its first
    /// start (72 ms of work shown as 2 m 32 s).
    #[test]
    fn a_reopened_run_starts_again_now() {
        let dir = tempfile::tempdir().unwrap();
        let r = SqliteRecords::open(&dir.path().join("weir.db")).unwrap();
        let id = r.begin_run("p", &Digest::of(b"plan"), "{}").unwrap();
        r.commit(&[RecordOp::RunEnded {
            run: id,
            state: RunState::Failed,
            error: Some("boom".into()),
        }])
        .unwrap();
        let first = r.run(id).unwrap().unwrap().started_ms;
        std::thread::sleep(std::time::Duration::from_millis(30));
        let before = now_ms();
        r.reopen_run(id).unwrap();
        let again = r.run(id).unwrap().unwrap();
        assert!(again.started_ms >= before && again.started_ms > first);
        assert_eq!(again.state, RunState::Running);
        assert_eq!(again.ended_ms, None);
    }

    #[test]
    fn previous_outputs_are_the_newest_earlier_success_of_the_same_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.db");
        // A file of this schema version on which a weir from before this
        // change re-created the old index (it does so on every open).
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute_batch("CREATE INDEX steps_by_name ON steps (step, run_id);")
                .unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION)
                .unwrap();
        }
        {
            let c = Connection::open(&path).unwrap();
            assert!(!schema_current(&c).unwrap(), "the old index is seen");
            let empty = Connection::open_in_memory().unwrap();
            assert!(!schema_current(&empty).unwrap(), "missing tables are seen");
        }
        let r = SqliteRecords::open(&path).unwrap();
        assert!(
            schema_current(&lock(&r.conn)).unwrap(),
            "every statement of SCHEMA is one schema_current reads, and holds after open"
        );
        let plan: Vec<String> = lock(&r.reader)
            .prepare(&format!("EXPLAIN QUERY PLAN {PREVIOUS_OUTPUTS}"))
            .unwrap()
            .query_map(params!["a", 1, "p"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|l| l.contains("runs_by_pipeline"))
                && plan.iter().any(|l| l.contains("sqlite_autoindex_steps_1")),
            "early cutoff walks runs by pipeline and probes steps by key: {plan:?}"
        );
        let d = Digest::of(b"plan");
        let out = |b: &[u8]| BTreeMap::from([("out".to_string(), Digest::of(b))]);
        let record = |run: RunId, state: StepState, o: &BTreeMap<String, Digest>| {
            RecordOp::Step(Box::new(StepRecord {
                run,
                step: "a".into(),
                state,
                attempt: 1,
                cache_key: None,
                component: None,
                started_ms: 0,
                ended_ms: 0,
                error: None,
                failure: None,
                outputs: o.clone(),
                inputs: BTreeMap::new(),
                metrics: Vec::new(),
                logs: Vec::new(),
                attempts: Vec::new(),
            }))
        };
        // A run of `pipeline` in which step "a" ended in `state` with `o`.
        let ran = |pipeline: &str, state: StepState, o: &[u8]| {
            let run = r.begin_run(pipeline, &d, "{}").unwrap();
            r.commit(&[record(run, state, &out(o))]).unwrap();
            run
        };
        let r1 = ran("p", StepState::Succeeded, b"1");
        let r2 = ran("p", StepState::Cached, b"2");
        // Newer, but another pipeline, or failed: neither counts.
        ran("q", StepState::Succeeded, b"q");
        let r3 = ran("p", StepState::Failed, b"3");
        let r4 = ran("p", StepState::Succeeded, b"4");

        let prev = |before: RunId, step: &str| r.previous_outputs("p", before, step).unwrap();
        assert_eq!(prev(r4, "a"), Some(out(b"2")), "skips r3 (failed) and q");
        assert_eq!(prev(r3, "a"), Some(out(b"2")));
        assert_eq!(prev(r2, "a"), Some(out(b"1")));
        assert_eq!(prev(r1, "a"), None, "nothing before the first run");
        assert_eq!(prev(RunId(r4.0 + 1), "a"), Some(out(b"4")));
        assert_eq!(prev(RunId(r4.0 + 1), "b"), None, "no such step");
        assert_eq!(
            r.previous_outputs("q", RunId(r4.0 + 1), "a").unwrap(),
            Some(out(b"q"))
        );
        let conn = lock(&r.conn);
        let old: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'steps_by_name'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0, "the old index is dropped when the file is opened");
    }

    #[test]
    fn a_plan_is_stored_once_and_older_files_keep_their_plans() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.db");
        // A version-2 file: runs hold their plan JSON themselves.
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL,
                 plan_digest TEXT NOT NULL, plan_json TEXT NOT NULL, state TEXT NOT NULL,
                 started_ms INTEGER NOT NULL, ended_ms INTEGER, error TEXT);
                 INSERT INTO runs (pipeline, plan_digest, plan_json, state, started_ms)
                 VALUES ('p', 'x', '{\"old\":1}', 'succeeded', 1);
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let r = SqliteRecords::open(&path).unwrap();
        assert_eq!(r.plan_json(RunId(1)).unwrap().unwrap(), r#"{"old":1}"#);
        let d = Digest::of(b"plan");
        let a = r.begin_run("p", &d, r#"{"new":2}"#).unwrap();
        let b = r.begin_run("p", &d, r#"{"new":2}"#).unwrap();
        let c = r.begin_run("p", &d, r#"{"new":3}"#).unwrap();
        assert_eq!(r.plan_json(a).unwrap().unwrap(), r#"{"new":2}"#);
        assert_eq!(r.plan_json(b).unwrap().unwrap(), r#"{"new":2}"#);
        assert_eq!(r.plan_json(c).unwrap().unwrap(), r#"{"new":3}"#);
        let conn = lock(&r.conn);
        let plans: i64 = conn
            .query_row("SELECT COUNT(*) FROM plans", [], |r| r.get(0))
            .unwrap();
        assert_eq!(plans, 2, "two distinct plans, three runs");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(r.runs(10).unwrap().len(), 4);
    }

    fn step(
        run: RunId,
        name: &str,
        inputs: &[(&str, Digest)],
        outputs: &[(&str, Digest)],
    ) -> RecordOp {
        RecordOp::Step(Box::new(StepRecord {
            run,
            step: name.into(),
            state: StepState::Succeeded,
            attempt: 1,
            cache_key: None,
            component: Some(Digest::of(name.as_bytes())),
            started_ms: 0,
            ended_ms: 0,
            error: None,
            failure: None,
            outputs: outputs.iter().map(|(k, d)| (k.to_string(), *d)).collect(),
            inputs: inputs.iter().map(|(k, d)| (k.to_string(), *d)).collect(),
            metrics: Vec::new(),
            logs: Vec::new(),
            attempts: Vec::new(),
        }))
    }

    fn register(run: RunId, d: Digest, f1: f64) -> RecordOp {
        RecordOp::RegisterModel {
            name: "churn".into(),
            digest: d,
            run,
            step: "register".into(),
            metrics: vec![Metric {
                name: "f1".into(),
                value: f1,
            }],
        }
    }

    #[test]
    fn registering_is_idempotent_and_promotion_archives_the_previous_holder() {
        let dir = tempfile::tempdir().unwrap();
        let r = SqliteRecords::open(&dir.path().join("weir.db")).unwrap();
        let run = r.begin_run("p", &Digest::of(b"plan"), "{}").unwrap();
        let (a, b) = (Digest::of(b"model a"), Digest::of(b"model b"));
        r.commit(&[register(run, a, 0.7)]).unwrap();
        r.commit(&[register(run, a, 0.7)]).unwrap();
        r.commit(&[register(run, b, 0.8)]).unwrap();
        let v = r.models(Some("churn")).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].version, v[0].digest), (1, a));
        assert_eq!((v[1].version, v[1].digest), (2, b));
        assert_eq!(v[1].metrics["f1"], 0.8);
        assert_eq!(v[0].stage, ModelStage::None);
        assert!(r.models(Some("other")).unwrap().is_empty());

        assert_eq!(
            r.promote("churn", 1, ModelStage::Production).unwrap(),
            Vec::<u32>::new()
        );
        assert_eq!(
            r.promote("churn", 2, ModelStage::Production).unwrap(),
            vec![1]
        );
        let v = r.models(None).unwrap();
        assert_eq!(v[0].stage, ModelStage::Archived);
        assert_eq!(v[1].stage, ModelStage::Production);
        let e = r
            .promote("churn", 3, ModelStage::Staging)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no version 3 (versions 1 to 2)"), "{e}");
        let e = r
            .promote("nope", 1, ModelStage::Staging)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no model 'nope'"), "{e}");
        // Registered artifacts are references the store must keep.
        assert!(
            r.references()
                .unwrap()
                .iter()
                .any(|(w, d)| w == "model churn version 2" && *d == b)
        );
    }

    #[test]
    fn the_producer_of_an_artifact_prefers_the_named_upstream_step() {
        let dir = tempfile::tempdir().unwrap();
        let r = SqliteRecords::open(&dir.path().join("weir.db")).unwrap();
        let run = r.begin_run("p", &Digest::of(b"plan"), "{}").unwrap();
        let data = Digest::of(b"data");
        r.commit(&[
            step(run, "generate", &[], &[("data", data)]),
            step(run, "validate", &[("data", data)], &[("data", data)]),
        ])
        .unwrap();
        let (_, by) = r.producer(&data, None).unwrap().unwrap();
        assert_eq!(by.step, "generate");
        let (_, by) = r.producer(&data, Some("validate")).unwrap().unwrap();
        assert_eq!(by.step, "validate");
        assert!(r.producer(&Digest::of(b"unknown"), None).unwrap().is_none());
    }
}
