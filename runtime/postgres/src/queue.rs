//! [`PgQueue`]: the cluster's queue of units in PostgreSQL (tables `units`
//! and `workers`, schema version 5).
//!
//! A unit is a row. Workers claim rows with `FOR UPDATE SKIP LOCKED` (two
//! workers never take the same row, and neither waits for the other), each
//! claim setting a fresh fencing token from a sequence and a lease expiry
//! computed by the server's clock (one clock for the whole cluster).
//! Completing, renewing and cancelling name the token, so only the current
//! holder can finish a unit. `NOTIFY weir_work` (on enqueue) and
//! `NOTIFY weir_finished` (on completion, cancellation, loss) wake waiters
//! through one listening connection per process; waiters also look at the
//! row every [`POLL`], so a notification lost to a dropped connection costs
//! latency, never a hang.
//!
//! Only completions are committed synchronously (durable when
//! [`UnitQueue::complete_many`] returns, several in one transaction). The
//! queue's other writes (enqueue, claim, renew, cancel) commit without
//! waiting for the log to reach disk (`synchronous_commit = off` on the
//! queue's sessions): a server crash can forget the last fraction of a
//! second of them, which costs a unit run again (a forgotten claim or
//! renewal) or a step failed with "not in the queue" (a forgotten enqueue),
//! never a wrong record.

use crate::PgRecords;
use anyhow::{Context as _, anyhow};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{AsyncMessage, NoTls};
use weir_core::queue::*;
use weir_core::records::RunId;

/// How often a waiter looks at the database without being woken.
const POLL: Duration = Duration::from_millis(500);

/// How long finished units stay in the table (for operators) before a
/// worker's renewal removes them.
const KEEP_FINISHED: &str = "1 hour";

/// The cluster's queue of units, in the records database.
///
/// A coordinator sends every attempt through it; a worker serves it:
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use std::sync::Arc;
/// use weir_runtime::cluster::{QueueDispatch, Worker, WorkerOptions};
/// let url = "postgres://weir@db.internal/weir";
/// // The coordinator: steps go to the queue instead of running here.
/// let mut config = weir_runtime::Config::new(".weir");
/// config
///     .records(Arc::new(weir_postgres::PgRecords::connect(url)?))
///     .dispatch(Arc::new(QueueDispatch::new(Arc::new(weir_postgres::PgQueue::connect(url)?))));
/// // A worker (another process or machine), until told to drain or stop.
/// let runtime = weir_runtime::Runtime::new(&weir_runtime::Config::new("/var/cache/weir"))?;
/// let worker = Worker::new(runtime, Arc::new(weir_postgres::PgQueue::connect(url)?), &WorkerOptions::new("gpu-1"));
/// let (drain, stop) = (Default::default(), Default::default());
/// worker.run(&drain, &stop)?;
/// # Ok(()) }
/// ```
pub struct PgQueue {
    db: PgRecords,
    heard: Arc<Heard>,
    last_purge: Mutex<Instant>,
    /// When claims last finished the units no worker could finish.
    last_sweep: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for PgQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgQueue")
            .field("database", &self.db.name)
            .finish()
    }
}

/// What the listening connection heard, for the threads waiting on it:
/// each unit waited for has a signal of its own (a completion wakes its
/// waiters, not every waiter), and work has one counter.
#[derive(Default)]
struct Heard {
    waiting: Mutex<HashMap<i64, (Arc<Signal>, usize)>>,
    work: Mutex<u64>,
    work_changed: Condvar,
}

/// Set when the unit may have finished (look at the database).
#[derive(Default)]
struct Signal {
    look: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    fn raise(&self) {
        *self.look.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Waits until raised or `until`; lowers it. `false` on timeout.
    fn wait(&self, until: Instant) -> bool {
        let mut look = self.look.lock().unwrap_or_else(|p| p.into_inner());
        while !*look {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            look = self
                .cv
                .wait_timeout(look, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *look = false;
        true
    }
}

impl Heard {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (Arc<Signal>, usize)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn work(&self) -> std::sync::MutexGuard<'_, u64> {
        self.work.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The signal of unit `id`, for one more waiter.
    fn register(&self, id: i64) -> Arc<Signal> {
        let mut w = self.waiting();
        let e = w.entry(id).or_insert_with(|| (Arc::default(), 0));
        e.1 += 1;
        e.0.clone()
    }

    fn unregister(&self, id: i64) {
        let mut w = self.waiting();
        if let Some(e) = w.get_mut(&id) {
            e.1 -= 1;
            if e.1 == 0 {
                w.remove(&id);
            }
        }
    }

    fn notified(&self, channel: &str, payload: &str) {
        if channel == "weir_finished" {
            if let Ok(id) = payload.parse::<i64>()
                && let Some((s, _)) = self.waiting().get(&id)
            {
                s.raise();
            }
            return;
        }
        *self.work() += 1;
        self.work_changed.notify_all();
    }

    /// Wakes every waiter (they look at the database).
    fn wake_all(&self) {
        for (s, _) in self.waiting().values() {
            s.raise();
        }
        *self.work() += 1;
        self.work_changed.notify_all();
    }
}

impl PgQueue {
    /// Connects to the records database at `url`, brings its schema up to
    /// date and starts listening for the queue's notifications.
    pub fn connect(url: &str) -> anyhow::Result<PgQueue> {
        let db = PgRecords::connect_with(url, |pg| {
            pg.options("-c synchronous_commit=off");
        })?;
        let pg = db.pg.clone();
        let heard = Arc::new(Heard::default());
        let rt = db
            .rt
            .as_ref()
            .ok_or_else(|| anyhow!("the records runtime has stopped"))?;
        rt.spawn(listen(pg, heard.clone(), db.name.clone()));
        Ok(PgQueue {
            db,
            heard,
            last_purge: Mutex::new(Instant::now()),
            last_sweep: Mutex::new(None),
        })
    }

    fn finished_row(&self, id: i64) -> anyhow::Result<Option<Finished>> {
        self.db.call(move |pool| async move {
            let c = pool.get().await?;
            let row = c
                .query_opt(
                    "SELECT state, outcome, error FROM units WHERE id = $1",
                    &[&id],
                )
                .await?;
            let Some(row) = row else {
                return Ok(Some(Finished::Lost(format!(
                    "unit {id} is not in the queue (removed by an operator?)"
                ))));
            };
            let state: String = row.get(0);
            Ok(match state.as_str() {
                "done" => Some(Finished::Done(
                    row.get::<_, Option<String>>(1).unwrap_or_default(),
                )),
                "cancelled" => Some(Finished::Cancelled),
                "lost" => Some(Finished::Lost(
                    row.get::<_, Option<String>>(2).unwrap_or_default(),
                )),
                _ => None,
            })
        })
    }

    /// Claims without waiting: first finishes units no worker could finish
    /// (leases expired [`MAX_DELIVERIES`] times, or expired after a cancel).
    fn claim_now(
        &self,
        worker: &WorkerInfo,
        max: usize,
        lease: Duration,
    ) -> anyhow::Result<Vec<Claim>> {
        let name = worker.name.clone();
        let tags = worker.tags.clone();
        let max = max as i64;
        let lease_ms = lease.as_millis() as i64;
        let deliveries = MAX_DELIVERIES as i32;
        // The sweep runs at most once a second (leases are seconds long).
        let sweep = {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        self.db.call(move |pool| async move {
            let c = pool.get().await?;
            if sweep {
            c.execute(
                "WITH gone AS (
                    UPDATE units SET
                        state = CASE WHEN cancel THEN 'cancelled' ELSE 'lost' END,
                        finished_at = now(),
                        error = format('handed out %s times, and each worker''s lease expired (the last was %s)', deliveries, worker)
                    WHERE state = 'leased' AND lease_until < now() AND (cancel OR deliveries >= $1)
                    RETURNING id)
                 SELECT pg_notify('weir_finished', id::text) FROM gone",
                &[&deliveries],
            )
            .await?;
            }
            let rows = c
                .query(
                    "WITH picked AS (
                        SELECT id FROM units
                        WHERE (state = 'queued'
                               OR (state = 'leased' AND lease_until < now()
                                   AND deliveries < $5 AND NOT cancel))
                          AND tags <@ $2::text[]
                        ORDER BY id LIMIT $3
                        FOR UPDATE SKIP LOCKED)
                     UPDATE units u SET
                        state = 'leased', token = nextval('unit_tokens'), worker = $1,
                        lease_until = now() + ($4::bigint * interval '1 millisecond'),
                        deliveries = u.deliveries + 1, started_at = now()
                     FROM picked WHERE u.id = picked.id
                     RETURNING u.id, u.token, u.spec, u.deliveries",
                    &[&name, &tags, &max, &lease_ms, &deliveries],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Claim {
                    id: r.get(0),
                    token: r.get(1),
                    spec: r.get(2),
                    deliveries: r.get::<_, i32>(3) as u32,
                })
                .collect())
        })
    }
}

/// Listens for `weir_work` and `weir_finished` on a connection of its own,
/// reconnecting after a second when it drops (waking every waiter, which
/// then looks at the database: what was missed meanwhile is found there).
async fn listen(pg: tokio_postgres::Config, heard: Arc<Heard>, name: String) {
    loop {
        match pg.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let listening = client.batch_execute("LISTEN weir_work; LISTEN weir_finished");
                let mut listening = std::pin::pin!(listening);
                let mut subscribed = false;
                loop {
                    tokio::select! {
                        r = &mut listening, if !subscribed => {
                            subscribed = true;
                            if let Err(e) = r {
                                tracing::warn!("queue listener on {name}: LISTEN failed: {e}");
                                break;
                            }
                            heard.wake_all();
                        }
                        m = std::future::poll_fn(|cx| conn.poll_message(cx)) => match m {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                heard.notified(n.channel(), n.payload());
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!("queue listener on {name}: {e}");
                                break;
                            }
                            None => break,
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("queue listener on {name}: cannot connect: {e}"),
        }
        heard.wake_all();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl UnitQueue for PgQueue {
    fn enqueue(&self, unit: &QueuedUnit) -> anyhow::Result<Ticket> {
        let key = unit.key.to_hex();
        let run = unit.run.map(|r| r.0);
        let step = unit.step.clone();
        let tags = unit.tags.clone();
        let spec = unit.spec.clone();
        self.db
            .call(move |pool| async move {
                let c = pool.get().await?;
                // A unit with the key may finish between the insert's conflict
                // and the select: then the next round inserts.
                for _ in 0..10 {
                    let row = c
                        .query_opt(
                            "WITH new AS (
                            INSERT INTO units (key, run_id, step, tags, spec, state)
                            VALUES ($1, $2, $3, $4, $5, 'queued')
                            ON CONFLICT (key) WHERE state IN ('queued', 'leased') DO NOTHING
                            RETURNING id),
                         woke AS (SELECT pg_notify('weir_work', '') FROM new)
                         SELECT id, false FROM new, woke
                         UNION ALL
                         SELECT id, true FROM units
                         WHERE key = $1 AND state IN ('queued', 'leased')
                           AND NOT EXISTS (SELECT 1 FROM new)",
                            &[&key, &run, &step, &tags, &spec],
                        )
                        .await?;
                    if let Some(row) = row {
                        return Ok(Ticket {
                            id: row.get(0),
                            joined: row.get(1),
                        });
                    }
                }
                Err(anyhow!(
                    "could not enqueue unit {key}: its key kept changing hands"
                ))
            })
            .with_context(|| format!("enqueueing {}", unit.step))
    }

    fn wait_finished(&self, id: i64, timeout: Duration) -> anyhow::Result<Option<Finished>> {
        let deadline = Instant::now() + timeout;
        // Registered before the first look, so a completion in between is
        // not missed.
        let signal = self.heard.register(id);
        let found = (|| loop {
            if let Some(f) = self.finished_row(id)? {
                return Ok(Some(f));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            signal.wait(deadline.min(now + POLL));
        })();
        self.heard.unregister(id);
        found
    }

    fn cancel(&self, id: i64) -> anyhow::Result<()> {
        self.db.call(move |pool| async move {
            let c = pool.get().await?;
            c.execute(
                "WITH c AS (
                    UPDATE units SET
                        cancel = true,
                        state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                        finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END
                    WHERE id = $1 AND state IN ('queued', 'leased')
                    RETURNING id, state)
                 SELECT pg_notify('weir_finished', id::text) FROM c WHERE state = 'cancelled'",
                &[&id],
            )
            .await?;
            Ok(())
        })
    }

    fn claim(
        &self,
        worker: &WorkerInfo,
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> anyhow::Result<Vec<Claim>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let seen = *self.heard.work();
        let got = self.claim_now(worker, max, lease)?;
        if !got.is_empty() {
            return Ok(got);
        }
        {
            let deadline = Instant::now() + wait;
            let mut work = self.heard.work();
            while *work == seen {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                work = self
                    .heard
                    .work_changed
                    .wait_timeout(work, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        self.claim_now(worker, max, lease)
    }

    fn renew(
        &self,
        worker: &WorkerInfo,
        state: &str,
        tokens: &[i64],
        lease: Duration,
    ) -> anyhow::Result<Renewal> {
        let name = worker.name.clone();
        let tags = worker.tags.clone();
        let jobs = worker.jobs as i32;
        let state = state.to_string();
        let held = tokens.to_vec();
        let lease_ms = lease.as_millis() as i64;
        let purge = {
            let mut last = self.last_purge.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.elapsed() > Duration::from_secs(60);
            if due {
                *last = Instant::now();
            }
            due
        };
        self.db.call(move |pool| async move {
            let c = pool.get().await?;
            c.execute(
                "INSERT INTO workers (name, tags, jobs, state) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET
                    tags = excluded.tags, jobs = excluded.jobs, state = excluded.state,
                    heartbeat_at = now()",
                &[&name, &tags, &jobs, &state],
            )
            .await?;
            let mut renewal = Renewal::default();
            if !held.is_empty() {
                let rows = c
                    .query(
                        "UPDATE units SET lease_until = now() + ($2::bigint * interval '1 millisecond')
                         WHERE token = ANY($1) AND state = 'leased'
                         RETURNING token, cancel",
                        &[&held, &lease_ms],
                    )
                    .await?;
                let kept: HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
                renewal.lost = held.iter().copied().filter(|t| !kept.contains(t)).collect();
                renewal.cancelled = rows
                    .iter()
                    .filter(|r| r.get::<_, bool>(1))
                    .map(|r| r.get(0))
                    .collect();
            }
            if purge {
                c.execute(
                    &format!(
                        "DELETE FROM units WHERE state NOT IN ('queued', 'leased')
                         AND finished_at < now() - interval '{KEEP_FINISHED}'"
                    ),
                    &[],
                )
                .await?;
            }
            Ok(renewal)
        })
    }

    fn complete(&self, id: i64, token: i64, outcome: &str) -> anyhow::Result<bool> {
        let accepted = self.complete_many(&[(id, token, outcome.to_string())])?;
        Ok(accepted.first() == Some(&true))
    }

    fn complete_many(&self, units: &[(i64, i64, String)]) -> anyhow::Result<Vec<bool>> {
        let ids: Vec<i64> = units.iter().map(|u| u.0).collect();
        let tokens: Vec<i64> = units.iter().map(|u| u.1).collect();
        let outcomes: Vec<String> = units.iter().map(|u| u.2.clone()).collect();
        let accepted: HashSet<i64> = self.db.call(move |pool| async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            // Durable when it returns, unlike the queue's other writes.
            tx.batch_execute("SET LOCAL synchronous_commit = on")
                .await?;
            let rows = tx
                .query(
                    "WITH d AS (
                        SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])
                            AS d(id, token, outcome)),
                     done AS (
                        UPDATE units u SET state = 'done', outcome = d.outcome,
                            finished_at = now(), lease_until = NULL
                        FROM d
                        WHERE u.id = d.id AND u.token = d.token AND u.state = 'leased'
                        RETURNING u.id)
                     SELECT id, pg_notify('weir_finished', id::text)::text FROM done",
                    &[&ids, &tokens, &outcomes],
                )
                .await?;
            tx.commit().await?;
            Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
        })?;
        Ok(units.iter().map(|u| accepted.contains(&u.0)).collect())
    }

    fn stopped(&self, worker: &WorkerInfo) -> anyhow::Result<()> {
        let name = worker.name.clone();
        self.db.call(move |pool| async move {
            let c = pool.get().await?;
            c.execute(
                "UPDATE workers SET state = 'stopped', heartbeat_at = now() WHERE name = $1",
                &[&name],
            )
            .await?;
            Ok(())
        })
    }

    fn workers(&self, within: Duration) -> anyhow::Result<Vec<WorkerStatus>> {
        let within_ms = within.as_millis() as i64;
        self.db.call(move |pool| async move {
            let c = pool.get().await?;
            let rows = c
                .query(
                    "SELECT name, tags, jobs, state,
                            (extract(epoch from started_at) * 1000)::bigint,
                            (extract(epoch from heartbeat_at) * 1000)::bigint
                     FROM workers
                     WHERE heartbeat_at > now() - ($1::bigint * interval '1 millisecond')
                     ORDER BY heartbeat_at DESC, name",
                    &[&within_ms],
                )
                .await?;
            let mut workers: Vec<WorkerStatus> = rows
                .iter()
                .map(|r| WorkerStatus {
                    name: r.get(0),
                    tags: r.get(1),
                    jobs: r.get::<_, i32>(2) as u32,
                    state: r.get(3),
                    started_ms: r.get(4),
                    heartbeat_ms: r.get(5),
                    running: Vec::new(),
                })
                .collect();
            let names: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
            let held = c
                .query(
                    "SELECT worker, run_id, step FROM units
                     WHERE state = 'leased' AND worker = ANY($1) ORDER BY id",
                    &[&names],
                )
                .await?;
            for r in &held {
                let name: String = r.get(0);
                if let Some(w) = workers.iter_mut().find(|w| w.name == name) {
                    w.running.push(HeldUnit {
                        run: r.get::<_, Option<i64>>(1).map(RunId),
                        step: r.get(2),
                    });
                }
            }
            Ok(workers)
        })
    }

    fn depth(&self) -> anyhow::Result<QueueDepth> {
        self.db.call(move |pool| async move {
            let c = pool.get().await?;
            let r = c
                .query_one(
                    "SELECT
                        count(*) FILTER (WHERE state = 'queued' OR lease_until < now()),
                        count(*) FILTER (WHERE state = 'leased' AND lease_until >= now())
                     FROM units WHERE state IN ('queued', 'leased')",
                    &[],
                )
                .await?;
            Ok(QueueDepth {
                queued: r.get::<_, i64>(0) as u64,
                leased: r.get::<_, i64>(1) as u64,
            })
        })
    }
}
