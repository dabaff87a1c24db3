//! Cron schedules: parsing (5 fields, or 6 with seconds first; an IANA
//! time zone), the slots a schedule has between two instants, and the
//! record of fired slots in `serve.db` that makes every slot run at most
//! once, across restarts and across servers sharing a store.

use super::{Server, lock};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension as _, params};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_runtime::plan::Catchup;

/// A slot fired at most this late still counts as on time; older missed
/// slots are handled by the pipeline's catch-up policy.
pub const GRACE: Duration = Duration::from_secs(30);

/// How often the scheduler looks at the clock.
const TICK: Duration = Duration::from_millis(250);

/// How often the scheduler re-reads the project's scripts.
const RESCAN: Duration = Duration::from_secs(10);

/// The most slots walked between two instants (a one-second schedule
/// missed for eleven days); older ones are not looked at.
const MAX_WALK: usize = 1_000_000;

/// Why a schedule is not one.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The time zone is not an IANA name.
    #[error("schedule: unknown time zone {0:?} (use an IANA name such as \"Europe/Paris\")")]
    UnknownTimeZone(String),
    /// The cron expression does not parse.
    #[error("schedule {expr:?}: {error}")]
    Cron {
        /// The expression.
        expr: String,
        /// What the parser said.
        error: croner::errors::CronError,
    },
}

/// A parsed schedule.
pub struct Schedule {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl Schedule {
    /// Parses a cron expression (`"0 2 * * *"`, or with seconds first,
    /// `"*/5 * * * * *"`) read in time zone `tz` (IANA name, default UTC).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Schedule, ScheduleError> {
        let tz: chrono_tz::Tz = match tz {
            None => chrono_tz::UTC,
            Some(name) => name
                .parse()
                .map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))?,
        };
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|error| ScheduleError::Cron {
                expr: expr.to_string(),
                error,
            })?;
        Ok(Schedule { cron, tz })
    }

    /// The first slot after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The next `n` slots after `t`.
    pub fn next_n(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = t;
        while out.len() < n {
            let Some(next) = self.next_after(t) else {
                break;
            };
            out.push(next);
            t = next;
        }
        out
    }

    /// `t` in the schedule's time zone, for people.
    pub fn local(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    /// The slots in `(after, until]`: how many there are (up to
    /// [`MAX_WALK`]) and the newest `keep` of them, oldest first.
    pub fn slots(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        keep: usize,
    ) -> (usize, Vec<DateTime<Utc>>) {
        let mut newest = std::collections::VecDeque::with_capacity(keep.min(1024));
        let mut count = 0;
        let mut t = after;
        while count < MAX_WALK {
            let Some(next) = self.next_after(t) else {
                break;
            };
            if next > until {
                break;
            }
            count += 1;
            if keep > 0 {
                if newest.len() == keep {
                    newest.pop_front();
                }
                newest.push_back(next);
            }
            t = next;
        }
        (count, newest.into())
    }
}

/// A slot as RFC 3339 UTC text, the form stored and handed to pipelines.
pub fn slot_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub use weir_runtime::records::{RunSource, SlotLog, SlotRecord};

/// Where slot-taking resumes for `pipeline`: the newest recorded slot, or
/// when its schedule was first seen (recorded now if never).
pub fn cursor(
    slots: &dyn SlotLog,
    pipeline: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<DateTime<Utc>> {
    let (newest, since) = slots.cursor(pipeline, &slot_text(now))?;
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc));
    let since = parse(&since)?;
    Ok(match newest {
        Some(n) => parse(&n)?.max(since),
        None => since,
    })
}

/// The schedule slots of a project's server: in the PostgreSQL database
/// that `--records` names, else in `serve.db` in the store.
pub fn open_slots(store: &Path) -> anyhow::Result<Arc<dyn SlotLog>> {
    if let Some(url) = crate::commands::records_url() {
        return Ok(Arc::new(weir_postgres::PgRecords::connect(url)?));
    }
    Ok(Arc::new(SqliteSlots::open(&store.join("serve.db"))?))
}

/// The embedded slot records (`serve.db` in the store).
pub struct SqliteSlots {
    db: Mutex<rusqlite::Connection>,
}

impl SqliteSlots {
    /// Opens (or creates) the slot records.
    pub fn open(path: &Path) -> anyhow::Result<SqliteSlots> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = rusqlite::Connection::open(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        db.busy_timeout(Duration::from_secs(10))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS slots (
               pipeline TEXT NOT NULL, slot TEXT NOT NULL, state TEXT NOT NULL,
               run INTEGER, reason TEXT, at_ms INTEGER NOT NULL,
               PRIMARY KEY (pipeline, slot));
             CREATE TABLE IF NOT EXISTS cursors (
               pipeline TEXT PRIMARY KEY, since TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS paused (
               pipeline TEXT PRIMARY KEY, at_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS watched (
               pipeline TEXT NOT NULL, dir TEXT NOT NULL, digest TEXT NOT NULL,
               at_ms INTEGER NOT NULL, PRIMARY KEY (pipeline, dir));
             CREATE TABLE IF NOT EXISTS run_sources (
               run INTEGER PRIMARY KEY, source TEXT NOT NULL, params TEXT NOT NULL,
               trigger TEXT);",
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // A serve.db from before triggers were noted.
        let has_trigger = db
            .prepare("SELECT 1 FROM pragma_table_info('run_sources') WHERE name = 'trigger'")?
            .exists([])?;
        if !has_trigger {
            db.execute_batch("ALTER TABLE run_sources ADD COLUMN trigger TEXT")
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        Ok(SqliteSlots { db: Mutex::new(db) })
    }
}

impl SlotLog for SqliteSlots {
    fn cursor(&self, pipeline: &str, now: &str) -> anyhow::Result<(Option<String>, String)> {
        let db = lock(&self.db);
        let newest: Option<String> = db
            .query_row(
                "SELECT max(slot) FROM slots WHERE pipeline = ?1",
                params![pipeline],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        db.execute(
            "INSERT OR IGNORE INTO cursors (pipeline, since) VALUES (?1, ?2)",
            params![pipeline, now],
        )?;
        let since: String = db.query_row(
            "SELECT since FROM cursors WHERE pipeline = ?1",
            params![pipeline],
            |r| r.get(0),
        )?;
        Ok((newest, since))
    }

    fn claim(&self, pipeline: &str, slot: &str) -> anyhow::Result<bool> {
        let n = lock(&self.db).execute(
            "INSERT INTO slots (pipeline, slot, state, at_ms) VALUES (?1, ?2, 'claimed', ?3)
             ON CONFLICT (pipeline, slot) DO UPDATE SET state = 'claimed', reason = NULL, at_ms = ?3
             WHERE slots.state = 'skipped'",
            params![pipeline, slot, Utc::now().timestamp_millis()],
        )?;
        Ok(n == 1)
    }

    fn settle(
        &self,
        pipeline: &str,
        slot: &str,
        run: Option<i64>,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        let state = if run.is_some() { "fired" } else { "skipped" };
        lock(&self.db).execute(
            "UPDATE slots SET state = ?3, run = ?4, reason = ?5 WHERE pipeline = ?1 AND slot = ?2",
            params![pipeline, slot, state, run, reason],
        )?;
        Ok(())
    }

    fn skip(&self, pipeline: &str, slot: &str, reason: &str) -> anyhow::Result<()> {
        lock(&self.db).execute(
            "INSERT OR IGNORE INTO slots (pipeline, slot, state, reason, at_ms) VALUES (?1, ?2, 'skipped', ?3, ?4)",
            params![pipeline, slot, reason, Utc::now().timestamp_millis()],
        )?;
        Ok(())
    }

    fn set_paused(&self, pipeline: &str, paused: bool) -> anyhow::Result<()> {
        let db = lock(&self.db);
        if paused {
            db.execute(
                "INSERT OR IGNORE INTO paused (pipeline, at_ms) VALUES (?1, ?2)",
                params![pipeline, Utc::now().timestamp_millis()],
            )?;
        } else {
            db.execute("DELETE FROM paused WHERE pipeline = ?1", params![pipeline])?;
        }
        Ok(())
    }

    fn is_paused(&self, pipeline: &str) -> anyhow::Result<bool> {
        Ok(lock(&self.db)
            .query_row(
                "SELECT 1 FROM paused WHERE pipeline = ?1",
                params![pipeline],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn note_run(
        &self,
        run: i64,
        source: &str,
        trigger: Option<&str>,
        params: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        lock(&self.db).execute(
            "INSERT OR IGNORE INTO run_sources (run, source, params, trigger) VALUES (?1, ?2, ?3, ?4)",
            params![run, source, serde_json::to_string(params)?, trigger],
        )?;
        Ok(())
    }

    fn run_sources(&self, runs: &[i64]) -> anyhow::Result<BTreeMap<i64, RunSource>> {
        let db = lock(&self.db);
        let mut st =
            db.prepare_cached("SELECT source, params, trigger FROM run_sources WHERE run = ?1")?;
        let mut out = BTreeMap::new();
        for &r in runs {
            if let Some((source, params, trigger)) = st
                .query_row(params![r], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<String>>(2)?,
                    ))
                })
                .optional()?
            {
                out.insert(
                    r,
                    RunSource {
                        source,
                        trigger,
                        params: serde_json::from_str(&params).unwrap_or_default(),
                    },
                );
            }
        }
        Ok(out)
    }

    fn watched(&self, pipeline: &str, dir: &str) -> anyhow::Result<Option<String>> {
        Ok(lock(&self.db)
            .query_row(
                "SELECT digest FROM watched WHERE pipeline = ?1 AND dir = ?2",
                params![pipeline, dir],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn set_watched(&self, pipeline: &str, dir: &str, digest: &str) -> anyhow::Result<()> {
        lock(&self.db).execute(
            "INSERT INTO watched (pipeline, dir, digest, at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (pipeline, dir) DO UPDATE SET digest = ?3, at_ms = ?4",
            params![pipeline, dir, digest, Utc::now().timestamp_millis()],
        )?;
        Ok(())
    }

    fn recent(&self, pipeline: Option<&str>, limit: usize) -> anyhow::Result<Vec<SlotRecord>> {
        let db = lock(&self.db);
        let mut st = db.prepare(
            "SELECT pipeline, slot, state, run, reason FROM slots
             WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY slot DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![pipeline, limit as i64], |r| {
            Ok(SlotRecord {
                pipeline: r.get(0)?,
                slot: r.get(1)?,
                state: r.get(2)?,
                run: r.get(3)?,
                reason: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Fires due slots of every scheduled pipeline, forever (until aborted).
pub async fn run_scheduler(server: Arc<Server>) {
    let mut last_scan = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = server.shutdown.cancelled() => return,
        }
        if last_scan.elapsed() >= RESCAN {
            let s = Arc::clone(&server);
            let _ = tokio::task::spawn_blocking(move || s.rescan()).await;
            last_scan = tokio::time::Instant::now();
        }
        if let Err(e) = tick(&server, Utc::now()).await {
            tracing::warn!("scheduler: {e:#}");
        }
    }
}

/// One look at the clock: decides and fires the due slots of every
/// scheduled pipeline.
pub async fn tick(server: &Arc<Server>, now: DateTime<Utc>) -> anyhow::Result<()> {
    // Among servers sharing the records, only the leader fires slots.
    if !server.leads().await {
        return Ok(());
    }
    for p in server.pipelines().into_values() {
        let (Some(expr), None) = (&p.schedule, &p.error) else {
            continue;
        };
        let Ok(schedule) = Schedule::parse(expr, p.serve.timezone.as_deref()) else {
            continue;
        };
        let cursor = cursor(&*server.slots, &p.name, now)?;
        // The newest 1,024 due slots are each recorded (fired or skipped);
        // older ones, after a long downtime, are only counted in the log.
        let (count, newest) = schedule.slots(cursor, now, 1024);
        if count == 0 {
            continue;
        }
        if server.slots.is_paused(&p.name)? {
            for t in &newest {
                server
                    .slots
                    .skip(&p.name, &slot_text(*t), "the schedule was paused")?;
            }
            continue;
        }
        let on_time =
            |t: &DateTime<Utc>| now - *t <= chrono::Duration::from_std(GRACE).unwrap_or_default();
        let fire: Vec<DateTime<Utc>> = match p.serve.catchup {
            Catchup::Skip => newest.iter().copied().filter(on_time).collect(),
            Catchup::Latest => newest.last().copied().into_iter().collect(),
            Catchup::All => {
                let limit = p.serve.catchup_limit as usize;
                newest[newest.len().saturating_sub(limit)..].to_vec()
            }
        };
        // Record the slots passed over (the newest ones individually; a
        // count for the rest, which only the log keeps).
        let passed = count - fire.len();
        if passed > 0 {
            tracing::info!(
                pipeline = %p.name,
                "{passed} slot(s) missed while the server was down are skipped (catch-up {:?})",
                p.serve.catchup
            );
            for t in newest.iter().filter(|t| !fire.contains(t)) {
                server.slots.skip(
                    &p.name,
                    &slot_text(*t),
                    "missed while the server was down or busy",
                )?;
            }
        }
        for t in fire {
            let slot = slot_text(t);
            // At the pipeline's concurrency limit: `skip` passes the slot
            // over; `latest` and `all` leave it due, to fire on a later
            // tick once a run has ended (slots queue, oldest first).
            if server.active_count(&p.name) >= p.serve.max_active_runs as usize {
                if p.serve.catchup == Catchup::Skip {
                    server
                        .slots
                        .skip(&p.name, &slot, "the pipeline was at max_active_runs")?;
                    continue;
                }
                break;
            }
            if !server.slots.claim(&p.name, &slot)? {
                continue;
            }
            match server
                .trigger(
                    &p.name,
                    Default::default(),
                    None,
                    super::Origin::Schedule(slot.clone()),
                )
                .await
            {
                Ok(run) => {
                    tracing::info!(pipeline = %p.name, %slot, %run, "scheduled run started");
                    let lag = (Utc::now() - t).to_std().unwrap_or_default();
                    server.metrics.slot_started(&p.name, lag);
                    server.slots.settle(&p.name, &slot, Some(run.0), None)?;
                }
                Err(e) => {
                    tracing::warn!(pipeline = %p.name, %slot, "slot skipped: {}", e.1);
                    server.slots.settle(&p.name, &slot, None, Some(&e.1))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serve_db_from_before_triggers_gains_the_column_and_keeps_its_notes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("serve.db");
        {
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE run_sources (run INTEGER PRIMARY KEY, source TEXT NOT NULL, params TEXT NOT NULL);
                 INSERT INTO run_sources VALUES (1, 'manual', '{\"rows\":\"6\"}');",
            )
            .unwrap();
        }
        let slots = SqliteSlots::open(&path).unwrap();
        slots
            .note_run(2, "upstream", Some("train run 1"), &BTreeMap::new())
            .unwrap();
        let got = slots.run_sources(&[1, 2]).unwrap();
        assert_eq!(got[&1].source, "manual");
        assert_eq!(got[&1].trigger, None);
        assert_eq!(got[&1].params["rows"], "6");
        assert_eq!(got[&2].trigger.as_deref(), Some("train run 1"));
        drop(slots);
        // Opening again finds the column there.
        SqliteSlots::open(&path).unwrap();
    }
}
