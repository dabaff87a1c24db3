//! [`UnitQueue`]: units of work waiting for workers on other machines, the
//! boundary a cluster backend implements (`weir-postgres` has the one weir
//! ships).
//!
//! A coordinator (the scheduler of a run) enqueues each attempt it wants
//! run elsewhere and waits for its outcome; workers claim units, run them
//! and complete them. The queue holds units as opaque text (the runtime's
//! `UnitSpec` and `UnitOutcome` as JSON): this crate only says how they
//! move.
//!
//! The rules every implementation keeps:
//! - **A claim is a lease.** A claimed unit belongs to one worker until
//!   its lease expires; the worker renews it while the unit runs. A unit
//!   whose lease expired goes to the next worker that claims, with a new
//!   fencing token.
//! - **Only the current token completes.** A worker that lost its lease
//!   (it stalled, its connection was cut, another worker took the unit)
//!   cannot complete it: [`UnitQueue::complete`] answers `false` and the
//!   outcome is dropped. So a unit may *run* more than once, but it is
//!   *finished* once, and its coordinator records it once.
//! - **One unit per cache key at a time** (single flight): enqueueing a
//!   unit whose key is already queued or running joins that unit.
//! - **Tags route**: a unit runs only on a worker whose tags include all of
//!   the unit's.
//! - **Poison is bounded**: a unit whose workers keep disappearing (its
//!   lease expired [`MAX_DELIVERIES`] times) is finished as lost instead of
//!   being handed out forever.

use crate::digest::Digest;
use crate::records::RunId;
use std::time::Duration;

/// How many times a unit is handed out before its coordinator is told it
/// was lost (each time a worker claimed it and its lease expired).
pub const MAX_DELIVERIES: u32 = 3;

/// A unit for the queue.
#[derive(Debug, Clone)]
pub struct QueuedUnit {
    /// Its cache key: units with the same key are run once at a time.
    pub key: Digest,
    /// The run and step it belongs to (for operators: what workers run).
    pub run: Option<RunId>,
    /// The step's name as shown (`train`, `each[a.csv]`).
    pub step: String,
    /// Tags a worker must have to claim it.
    pub tags: Vec<String>,
    /// The unit itself (the runtime's `UnitSpec` as JSON).
    pub spec: String,
}

/// A unit in the queue, as [`UnitQueue::enqueue`] found or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The unit's number in the queue.
    pub id: i64,
    /// Whether it joined a unit another coordinator enqueued with the same
    /// key (single flight) rather than making one.
    pub joined: bool,
}

/// A unit a worker claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The unit's number in the queue.
    pub id: i64,
    /// The fencing token of this claim: completing and renewing need it.
    pub token: i64,
    /// The unit (as enqueued).
    pub spec: String,
    /// How many times it has been handed out, this time included.
    pub deliveries: u32,
}

/// How a unit ended, as its coordinator learns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    /// A worker completed it with this outcome (the runtime's `UnitOutcome`
    /// as JSON).
    Done(String),
    /// It was cancelled before a worker finished it.
    Cancelled,
    /// No worker could finish it (it was handed out [`MAX_DELIVERIES`]
    /// times and each lease expired); says why.
    Lost(String),
}

/// A worker, as it announces itself.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Its name, unique in the cluster (host and process by default).
    pub name: String,
    /// The tags it serves.
    pub tags: Vec<String>,
    /// Units it runs at once.
    pub jobs: u32,
}

/// How long after its last heartbeat a worker is still listed (`weir
/// workers`, `GET /api/workers`).
pub const WORKERS_LISTED: Duration = Duration::from_secs(3600);

/// A unit a worker holds, as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HeldUnit {
    /// The run it belongs to.
    pub run: Option<RunId>,
    /// The step (or map child) as shown.
    pub step: String,
}

/// A worker, as the queue last heard of it (serialised as `weir workers
/// --json` and `GET /api/workers` show it).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerStatus {
    /// Its name.
    pub name: String,
    /// The tags it serves.
    pub tags: Vec<String>,
    /// Units it runs at once.
    pub jobs: u32,
    /// `running`, `draining` (finishing what it holds, claiming nothing) or
    /// `stopped`.
    pub state: String,
    /// When it started (ms since the Unix epoch).
    pub started_ms: i64,
    /// Its last heartbeat (ms since the Unix epoch).
    pub heartbeat_ms: i64,
    /// The units it holds now.
    pub running: Vec<HeldUnit>,
}

/// What a renewal found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Renewal {
    /// Tokens whose lease is gone (expired and taken by another worker, or
    /// the unit ended): stop that work, it cannot be completed.
    pub lost: Vec<i64>,
    /// Tokens whose unit its coordinator cancelled: stop that work.
    pub cancelled: Vec<i64>,
}

/// Units waiting and running, for dashboards and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Units no worker holds.
    pub queued: u64,
    /// Units a worker holds under a live lease.
    pub leased: u64,
}

/// Units waiting for workers. Every call may block for a round trip to
/// the queue's server; the waiting calls block at most their timeout.
pub trait UnitQueue: Send + Sync {
    /// Enqueues `unit`, or joins the unit with the same key that is queued
    /// or running, and wakes workers.
    fn enqueue(&self, unit: &QueuedUnit) -> anyhow::Result<Ticket>;

    /// Waits up to `timeout` for unit `id` to end; `None` if it has not.
    fn wait_finished(&self, id: i64, timeout: Duration) -> anyhow::Result<Option<Finished>>;

    /// Cancels unit `id`: a queued one ends [`Finished::Cancelled`] now; the
    /// worker holding a running one is told at its next renewal.
    fn cancel(&self, id: i64) -> anyhow::Result<()>;

    /// Claims up to `max` units `worker` may run (its tags include theirs),
    /// each leased for `lease`; waits up to `wait` for one if none is there.
    fn claim(
        &self,
        worker: &WorkerInfo,
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> anyhow::Result<Vec<Claim>>;

    /// Extends the leases of the claims `tokens` by `lease` and records
    /// `worker`'s heartbeat (with `state`: `running` or `draining`).
    fn renew(
        &self,
        worker: &WorkerInfo,
        state: &str,
        tokens: &[i64],
        lease: Duration,
    ) -> anyhow::Result<Renewal>;

    /// Completes unit `id` under claim `token` with `outcome`; `false` if
    /// the claim is no longer current (the outcome is dropped).
    fn complete(&self, id: i64, token: i64, outcome: &str) -> anyhow::Result<bool>;

    /// Completes several units at once (`(id, token, outcome)` each, one
    /// transaction where the queue has them); whether each was accepted,
    /// in order. Default: one [`UnitQueue::complete`] each.
    fn complete_many(&self, units: &[(i64, i64, String)]) -> anyhow::Result<Vec<bool>> {
        units
            .iter()
            .map(|(id, token, outcome)| self.complete(*id, *token, outcome))
            .collect()
    }

    /// Records that `worker` stopped.
    fn stopped(&self, worker: &WorkerInfo) -> anyhow::Result<()>;

    /// The workers heard of within `within`, newest heartbeat first.
    fn workers(&self, within: Duration) -> anyhow::Result<Vec<WorkerStatus>>;

    /// Units waiting and running now.
    fn depth(&self) -> anyhow::Result<QueueDepth>;
}
