//! Run records: runs, step attempts, cache entries, logs and metrics.
//!
//! The record types, and the traits a backend implements, one per audience:
//! [`RunLog`] (the write path), [`CacheIndex`] (what the scheduler asks),
//! [`History`] (what the CLI and the server read) and [`ModelRegistry`];
//! [`Records`] is all four. [`SlotLog`] holds `weir serve`'s schedule
//! slots. The embedded backend, `SqliteRecords` (one SQLite file in WAL
//! mode), is in `weir-runtime`; another (PostgreSQL, `weir-postgres`)
//! implements the same traits. Writes arrive in
//! batches ([`RunLog::commit`]), one transaction each, so the per-step cost
//! is shared by every step that finished meanwhile.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A run's number in its store (1, 2, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

macro_rules! state_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),* }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            /// The name stored in records and shown to users.
            pub fn as_str(self) -> &'static str { match self { $($name::$v => $s),* } }
            /// Parses a stored name.
            pub fn parse(s: &str) -> Option<$name> { match s { $($s => Some($name::$v),)* _ => None } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

state_enum! {
    /// The state of a run.
    RunState {
        /// Steps are running.
        Running = "running",
        /// Every step succeeded or was a cache hit.
        Succeeded = "succeeded",
        /// A step failed.
        Failed = "failed",
        /// Stopped by the user.
        Cancelled = "cancelled",
        /// The process running it ended without finishing it (a crash, a
        /// kill); found so by [`RunLog::interrupt_orphans`]. It can be
        /// resumed (retried) or cancelled.
        Interrupted = "interrupted",
    }
}

state_enum! {
    /// Why a step failed: the kind, beside its message (`error`), so tools
    /// can tell a timeout from a bug without reading text.
    FailureKind {
        /// The step returned an error.
        Returned = "returned",
        /// The guest trapped (a panic, an abort).
        Trapped = "trapped",
        /// Over its timeout.
        Timeout = "timeout",
        /// Over its memory limit.
        Memory = "memory",
        /// Out of fuel.
        Fuel = "fuel",
        /// Over its limit of open handles.
        Handles = "handles",
        /// Over its output size or file-count limit.
        OutputLimit = "output_limit",
        /// The disk holding the store was full.
        DiskFull = "disk_full",
        /// Its outputs could not be stored or made durable.
        Storage = "storage",
        /// The host could not set up its sandbox.
        Setup = "setup",
        /// A gate's condition could not be evaluated.
        Condition = "condition",
        /// Stopped by a cancellation.
        Cancelled = "cancelled",
        /// An error inside weir (a panic caught around the step).
        Internal = "internal",
    }
}

state_enum! {
    /// The state of a step in a run.
    StepState {
        /// Waiting for its inputs.
        Pending = "pending",
        /// An attempt is running.
        Running = "running",
        /// Ran and succeeded.
        Succeeded = "succeeded",
        /// Outputs reused from the cache; nothing ran.
        Cached = "cached",
        /// Failed (after any retries).
        Failed = "failed",
        /// Not run because an upstream step failed.
        Skipped = "skipped",
        /// Stopped by the user.
        Cancelled = "cancelled",
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One log line from a step (a `log` call, or a line of stdout/stderr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn`, `error`, `stdout` or `stderr`.
    pub level: String,
    /// The text.
    pub message: String,
}

/// One metric value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Metric name.
    pub name: String,
    /// Value.
    pub value: f64,
}

/// The record of one finished step (attempt or cache hit), written in a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The run.
    pub run: RunId,
    /// Step name.
    pub step: String,
    /// Final state of this step in this run.
    pub state: StepState,
    /// Attempts made (0 for cache hits and skipped steps).
    pub attempt: u32,
    /// The cache key, when it was computed.
    pub cache_key: Option<Digest>,
    /// Component digest, when known.
    pub component: Option<Digest>,
    /// Start and end, ms since the epoch.
    pub started_ms: i64,
    /// End, ms since the epoch.
    pub ended_ms: i64,
    /// Error message of a failed step, or why a step was skipped.
    pub error: Option<String>,
    /// What kind of failure, for a failed (or cancelled) step.
    pub failure: Option<FailureKind>,
    /// Output name to artifact digest.
    pub outputs: BTreeMap<String, Digest>,
    /// Input name to artifact digest.
    pub inputs: BTreeMap<String, Digest>,
    /// Metrics recorded by the step.
    pub metrics: Vec<Metric>,
    /// Log lines, stdout and stderr, each with its attempt number.
    pub logs: Vec<(u32, LogLine)>,
    /// Each attempt made, in order.
    pub attempts: Vec<AttemptRecord>,
}

/// One attempt of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Start, ms since the epoch.
    pub started_ms: i64,
    /// End, ms since the epoch.
    pub ended_ms: i64,
    /// Why it failed; `None` if it succeeded.
    pub error: Option<String>,
    /// The most memory the attempt held: the guest's linear memory plus
    /// what the host kept for it, in bytes.
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    /// Fuel (about one unit per wasm instruction) it used, when counted
    /// (steps with a fuel budget).
    #[serde(default)]
    pub fuel_used: Option<u64>,
}

/// What the cache holds for a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Output name to artifact digest.
    pub outputs: BTreeMap<String, Digest>,
    /// The metrics the producing execution recorded (replayed on a hit).
    pub metrics: Vec<Metric>,
    /// When it was recorded, ms since the epoch.
    pub created_ms: i64,
}

/// A write to the records.
#[derive(Debug, Clone)]
pub enum RecordOp {
    /// A step finished (any final state).
    Step(Box<StepRecord>),
    /// A cache entry for a successful execution.
    Cache {
        /// The key.
        key: Digest,
        /// Output digests.
        outputs: BTreeMap<String, Digest>,
        /// Metrics of the execution.
        metrics: Vec<Metric>,
        /// Who produced it.
        run: RunId,
        /// The producing step.
        step: String,
    },
    /// Adds a model version to the registry, unless this artifact is
    /// already a version of that model (registering is idempotent, so a
    /// cached re-run adds nothing).
    RegisterModel {
        /// Model name.
        name: String,
        /// The model artifact.
        digest: Digest,
        /// The run that registered it.
        run: RunId,
        /// The registering step.
        step: String,
        /// Metrics stored with the version (the registering step's).
        metrics: Vec<Metric>,
    },
    /// A run recorded before its preparation (`RunOptions::record_first`)
    /// is prepared: the plan it runs (limits capped) and its digest (with
    /// every component's).
    RunPrepared {
        /// The run.
        run: RunId,
        /// The plan's identity, components included.
        plan_digest: Digest,
        /// The plan as it runs.
        plan_json: String,
    },
    /// The run ended.
    RunEnded {
        /// The run.
        run: RunId,
        /// Final state.
        state: RunState,
        /// A one-line summary of what failed, if anything.
        error: Option<String>,
    },
}

state_enum! {
    /// The stage of a model version in the registry.
    ModelStage {
        /// Registered, not promoted.
        None = "none",
        /// Being tried out.
        Staging = "staging",
        /// Serving. At most one version of a model is here at a time.
        Production = "production",
        /// Retired.
        Archived = "archived",
    }
}

/// One version of a model in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// Model name (from `.register("name")`).
    pub name: String,
    /// Version number, from 1, per name.
    pub version: u32,
    /// The model artifact.
    pub digest: Digest,
    /// The run that registered it.
    pub run: RunId,
    /// The step that registered it.
    pub step: String,
    /// The registering step's metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Current stage.
    pub stage: ModelStage,
    /// When it was registered, ms since the epoch.
    pub created_ms: i64,
}

/// A row of `weir runs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run number (`run` in JSON, as everywhere a run number is written).
    #[serde(rename = "run")]
    pub id: RunId,
    /// Pipeline name.
    pub pipeline: String,
    /// Digest of the plan that ran.
    pub plan_digest: Digest,
    /// State.
    pub state: RunState,
    /// Start, ms since the epoch.
    pub started_ms: i64,
    /// End, if ended.
    pub ended_ms: Option<i64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// A cache entry's key, maker and outputs, as [`CacheIndex::cache_entries`] lists it.
#[derive(Debug, Clone)]
pub struct CachedOutputs {
    /// The cache key.
    pub key: Digest,
    /// The run whose step made it.
    pub run: RunId,
    /// Its outputs.
    pub outputs: BTreeMap<String, Digest>,
}

/// A step of `weir show`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSummary {
    /// Step name.
    pub step: String,
    /// State.
    pub state: StepState,
    /// Attempts made.
    pub attempts: u32,
    /// Cache key.
    pub cache_key: Option<Digest>,
    /// Component digest.
    pub component: Option<Digest>,
    /// Start.
    pub started_ms: i64,
    /// End.
    pub ended_ms: i64,
    /// Error or skip reason.
    pub error: Option<String>,
    /// What kind of failure, for a failed (or cancelled) step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    /// Inputs.
    pub inputs: BTreeMap<String, Digest>,
    /// Outputs.
    pub outputs: BTreeMap<String, Digest>,
    /// Last value of each metric.
    pub metrics: BTreeMap<String, f64>,
}

/// The write path: what a run records as it goes (a run's row, then
/// batches of step, attempt, cache and model writes). Implementations must
/// make each [`commit`](RunLog::commit) atomic.
pub trait RunLog: Send + Sync {
    /// Starts a run and returns its number.
    fn begin_run(
        &self,
        pipeline: &str,
        plan_digest: &Digest,
        plan_json: &str,
    ) -> anyhow::Result<RunId>;
    /// Applies a batch of writes atomically.
    fn commit(&self, ops: &[RecordOp]) -> anyhow::Result<()>;
    /// Marks an existing run as running again (`weir run --resume`, a
    /// retry from the server), started now: its duration counts from the
    /// retry, as a cleared run's does in Airflow (its steps keep their times).
    fn reopen_run(&self, id: RunId) -> anyhow::Result<()>;
    /// Marks as [`RunState::Interrupted`] every run left `running` by a
    /// process that is gone (killed or crashed: the run will never end on
    /// its own), and returns them. Safe to call from any process at any
    /// time: a run whose process is alive is left alone. The default finds
    /// none.
    fn interrupt_orphans(&self) -> anyhow::Result<Vec<RunId>> {
        Ok(Vec::new())
    }
}

/// What the scheduler asks before it runs a step: the cache, and the
/// previous outputs early cutoff compares with.
pub trait CacheIndex: Send + Sync {
    /// The entry cached under `key`, if any.
    fn cache_lookup(&self, key: &Digest) -> anyhow::Result<Option<CacheEntry>>;
    /// Drops a cache entry whose objects turned out missing or corrupt.
    fn cache_forget(&self, key: &Digest) -> anyhow::Result<()>;
    /// Every cache entry: its key, the run that made it and its outputs (for
    /// garbage collection). The default says the backend cannot list them.
    fn cache_entries(&self) -> anyhow::Result<Vec<CachedOutputs>> {
        anyhow::bail!(
            "this records backend cannot list its cache entries (needed by `weir store gc`)"
        )
    }
    /// The outputs `step` had in the newest run of `pipeline` before
    /// `before` in which it succeeded or was cached (for early cutoff).
    fn previous_outputs(
        &self,
        pipeline: &str,
        before: RunId,
        step: &str,
    ) -> anyhow::Result<Option<BTreeMap<String, Digest>>>;
    /// Whether `pipeline` has any run before `before` (when it has none,
    /// no step asks for [`CacheIndex::previous_outputs`]).
    fn ran_before(&self, pipeline: &str, before: RunId) -> anyhow::Result<bool> {
        let _ = (pipeline, before);
        Ok(true)
    }
}

/// What the CLI, the server and `weir store gc` read back (runs, steps,
/// attempts, logs, lineage) and prune.
pub trait History: Send + Sync {
    /// The plan a run executed, as recorded (JSON).
    fn plan_json(&self, id: RunId) -> anyhow::Result<Option<String>>;
    /// The newest runs first.
    fn runs(&self, limit: usize) -> anyhow::Result<Vec<RunSummary>>;
    /// One run.
    fn run(&self, id: RunId) -> anyhow::Result<Option<RunSummary>>;
    /// The steps of a run, in the order they finished.
    fn steps(&self, id: RunId) -> anyhow::Result<Vec<StepSummary>>;
    /// The log lines of every attempt of a step, with attempt numbers.
    fn logs(&self, id: RunId, step: &str) -> anyhow::Result<Vec<(u32, LogLine)>>;
    /// A page of a step's log lines, in the order of [`History::logs`]: up
    /// to `limit` lines after the first `skip`, fewer where they would pass
    /// `max_bytes` of message text (never none while lines remain), and
    /// whether more follow. The default reads them all and slices them; a
    /// backend pages in its query.
    fn logs_page(
        &self,
        id: RunId,
        step: &str,
        skip: u64,
        limit: usize,
        max_bytes: usize,
    ) -> anyhow::Result<LogPage> {
        let all = self.logs(id, step)?;
        Ok(LogPage::take(
            all.into_iter().skip(skip as usize),
            limit,
            max_bytes,
        ))
    }
    /// The attempts of a step in a run, in order.
    fn attempts(&self, id: RunId, step: &str) -> anyhow::Result<Vec<AttemptRecord>>;
    /// Every attempt of a run, by step (a backend answers in one query; the
    /// default asks step by step).
    fn run_attempts(&self, id: RunId) -> anyhow::Result<BTreeMap<String, Vec<AttemptRecord>>> {
        let mut out = BTreeMap::new();
        for s in self.steps(id)? {
            let a = self.attempts(id, &s.step)?;
            out.insert(s.step, a);
        }
        Ok(out)
    }
    /// Every artifact digest the records point at, with where (`run 3 step
    /// load output table`, `cache entry <key>`), for store verification.
    fn references(&self) -> anyhow::Result<Vec<(String, Digest)>>;
    /// The step that produced the artifact `digest`: the first run in which
    /// a step executed and output it (or, failing that, reused it from the
    /// cache), with that run's number. With `step`, a record of that step is
    /// preferred (two steps can output identical bytes).
    fn producer(
        &self,
        digest: &Digest,
        step: Option<&str>,
    ) -> anyhow::Result<Option<(RunId, StepSummary)>>;
    /// Removes runs with everything recorded about them (steps, attempts,
    /// logs, metrics), in one transaction, and returns how many there were.
    /// Model versions and cache entries are not touched. The default says
    /// the backend cannot.
    fn delete_runs(&self, runs: &[RunId]) -> anyhow::Result<usize> {
        let _ = runs;
        anyhow::bail!("this records backend cannot delete runs (needed by `weir store gc`)")
    }
}

/// The model registry: versions registered by steps, and their stages.
pub trait ModelRegistry: Send + Sync {
    /// Versions of the model `name` (or of every model), oldest first.
    fn models(&self, name: Option<&str>) -> anyhow::Result<Vec<ModelVersion>>;
    /// Moves a model version to `stage`. Promoting to staging or production
    /// archives the version that held that stage before. Returns the
    /// versions that were archived. Fails for an unknown name or version.
    fn promote(&self, name: &str, version: u32, stage: ModelStage) -> anyhow::Result<Vec<u32>>;
}

/// One recorded slot of a pipeline's schedule (`weir serve`, `weir backfill`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// The pipeline.
    pub pipeline: String,
    /// The slot (RFC 3339, UTC).
    pub slot: String,
    /// `fired`, `skipped`, or `claimed` (being started).
    pub state: String,
    /// The run it started.
    pub run: Option<i64>,
    /// Why it was skipped.
    pub reason: Option<String>,
}

/// What started a run, and the params it was given ([`SlotLog::note_run`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSource {
    /// `manual`, `schedule`, `backfill` or `upstream`.
    pub source: String,
    /// What exactly started it, where there is more to say than the
    /// source: for `upstream`, the pipeline and run (`train run 12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The params, as given (text).
    pub params: BTreeMap<String, String>,
}

/// The schedule's slots: which slots of which pipeline fired, were skipped
/// or are being started, where slot-taking resumes, which schedules are
/// paused, and what started each run. Slots are RFC 3339 UTC text. A
/// backend shared by several servers must make [`SlotLog::claim`] atomic:
/// a slot is claimed once, whoever asks.
pub trait SlotLog: Send + Sync {
    /// The newest recorded slot of `pipeline`, if any, and when its schedule
    /// was first seen (`now`, recorded, the first time it is asked).
    fn cursor(&self, pipeline: &str, now: &str) -> anyhow::Result<(Option<String>, String)>;
    /// Claims a slot to run it; `false` if it already ran or is being run
    /// (by this or another process, before or after a restart). A slot
    /// passed over earlier (skipped) can be claimed, by `weir backfill`.
    fn claim(&self, pipeline: &str, slot: &str) -> anyhow::Result<bool>;
    /// Records what became of a claimed slot: the run it started, or why
    /// none (then it is skipped).
    fn settle(
        &self,
        pipeline: &str,
        slot: &str,
        run: Option<i64>,
        reason: Option<&str>,
    ) -> anyhow::Result<()>;
    /// Records a slot that was passed over (missed while down, say), unless
    /// it is recorded already.
    fn skip(&self, pipeline: &str, slot: &str, reason: &str) -> anyhow::Result<()>;
    /// Pauses (`true`) or resumes a pipeline's schedule.
    fn set_paused(&self, pipeline: &str, paused: bool) -> anyhow::Result<()>;
    /// Whether a pipeline's schedule is paused.
    fn is_paused(&self, pipeline: &str) -> anyhow::Result<bool>;
    /// Notes what started run `run` and the params it was given; the first
    /// note of a run stays (a retry continues the run its source started).
    fn note_run(
        &self,
        run: i64,
        source: &str,
        trigger: Option<&str>,
        params: &BTreeMap<String, String>,
    ) -> anyhow::Result<()>;
    /// What started each of `runs`, and its params, where noted.
    fn run_sources(&self, runs: &[i64]) -> anyhow::Result<BTreeMap<i64, RunSource>>;
    /// The newest `limit` slots of `pipeline` (all pipelines if `None`),
    /// newest first.
    fn recent(&self, pipeline: Option<&str>, limit: usize) -> anyhow::Result<Vec<SlotRecord>>;
    /// The content digest last seen of folder `dir` that `pipeline` watches
    /// (`p.after_change`), if any.
    fn watched(&self, pipeline: &str, dir: &str) -> anyhow::Result<Option<String>>;
    /// Records the content digest of a watched folder that `pipeline` has
    /// reacted to.
    fn set_watched(&self, pipeline: &str, dir: &str, digest: &str) -> anyhow::Result<()>;
    /// Whether this process leads the scheduling (fires slots and watches
    /// folders) among the servers sharing these records: one at a time; a
    /// server that dies hands the lead to the next that asks. Default: yes
    /// (records of one machine).
    fn lead(&self) -> anyhow::Result<bool> {
        Ok(true)
    }
}

/// Storage for run records, for every audience at once: what a runtime is
/// given. A backend implements the four traits it is made of ([`RunLog`],
/// [`CacheIndex`], [`History`], [`ModelRegistry`]) and has `Records` with
/// them; callers import the one they use.
pub trait Records: RunLog + CacheIndex + History + ModelRegistry {}

impl<T: RunLog + CacheIndex + History + ModelRegistry + ?Sized> Records for T {}

/// A page of log lines ([`History::logs_page`]).
#[derive(Debug, Default)]
pub struct LogPage {
    /// Attempt and line, in order.
    pub lines: Vec<(u32, LogLine)>,
    /// Whether lines follow this page.
    pub more: bool,
}

impl LogPage {
    /// Up to `limit` lines of `lines` within `max_bytes` of message text
    /// (at least one while any remain).
    pub fn take(
        lines: impl Iterator<Item = (u32, LogLine)>,
        limit: usize,
        max_bytes: usize,
    ) -> LogPage {
        let mut page = LogPage::default();
        let mut bytes = 0usize;
        for (a, l) in lines {
            let n = l.message.len() + l.level.len();
            if page.lines.len() >= limit.max(1) || (!page.lines.is_empty() && bytes + n > max_bytes)
            {
                page.more = true;
                break;
            }
            bytes += n;
            page.lines.push((a, l));
        }
        page
    }
}
