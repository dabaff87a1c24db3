//! What a run tells its host: [`RunEvent`]s as they happen, the
//! [`RunOptions`] it starts with, and the [`StepReport`]s and
//! [`RunReport`] it ends with.

use crate::cache::CacheKey;
use crate::digest::Digest;
use crate::records::{Metric, RunId, RunState, StepState};
use crate::store::Store;
use crate::trust::TrustPolicy;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Something that happened during a run, for progress displays and live
/// UIs. New kinds may be added, so match with a `_` arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RunEvent {
    /// The run record exists; `steps` steps will be scheduled.
    RunStarted {
        /// The run.
        run: RunId,
        /// Number of steps.
        steps: usize,
        /// Whether this continues an earlier run (`resume`).
        resumed: bool,
    },
    /// A component is being built or loaded (while step crates build: each
    /// of cargo's status lines).
    Preparing {
        /// What is being prepared.
        what: String,
    },
    /// Cargo starts building the stale step crates of one workspace (one
    /// invocation for all of them).
    Building {
        /// The workspace folder.
        workspace: PathBuf,
        /// The crates (package names).
        crates: Vec<String>,
    },
    /// Those crates are built.
    Built {
        /// The crates (package names).
        crates: Vec<String>,
        /// How long cargo took.
        took: Duration,
    },
    /// A step started (cache check, then execution if needed). Map
    /// children are named `step[item]`.
    StepStarted {
        /// The step.
        step: String,
    },
    /// An attempt failed and the step will be tried again after `delay`.
    StepRetrying {
        /// The step.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: String,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// A log line of a step attempt: a `log` call as it happens, or a line
    /// of stdout/stderr when the attempt ends.
    StepLog {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// The line.
        line: crate::records::LogLine,
    },
    /// A metric value recorded by a step attempt, as it happens.
    StepMetric {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// The metric.
        metric: Metric,
    },
    /// An output artifact of a step that succeeded or was cached, just
    /// before its `StepFinished`.
    Artifact {
        /// The step.
        step: String,
        /// The output's name.
        output: String,
        /// The artifact's digest.
        digest: Digest,
    },
    /// A step reached a final state.
    StepFinished {
        /// The step.
        step: String,
        /// Its state.
        state: StepState,
        /// How long it took.
        duration: Duration,
        /// The error, for failed and skipped steps.
        error: Option<String>,
    },
}

/// A callback that receives [`RunEvent`]s.
pub type EventSink = Arc<dyn Fn(&RunEvent) + Send + Sync>;

/// Per-run options.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Called for every [`RunEvent`].
    pub on_event: Option<EventSink>,
    /// Cancelling this token stops the run: nothing new starts, running
    /// steps are interrupted and recorded `cancelled`.
    pub cancel: Option<CancellationToken>,
    /// Stop at the first failure instead of letting independent branches finish.
    pub fail_fast: bool,
    /// Continue this earlier run (same run number): its succeeded steps are
    /// kept, the rest run (through the cache where possible).
    pub resume: Option<RunId>,
    /// Record the run before its components are built and loaded, so a
    /// caller (a server answering a trigger) has its number at once: a
    /// build or load that fails then ends the recorded run `failed` with
    /// that error (and still returns it). Default: off, so a compile error
    /// records nothing.
    pub record_first: bool,
    /// Upper bounds on every step's limits for this run (a platform running
    /// its users' pipelines caps memory, time, output and fuel). Each step
    /// keeps its own limit where that is stricter; the run records the
    /// capped plan, and memory caps enter cache keys as any memory limit does.
    pub max_limits: Option<crate::limits::Limits>,
    /// A value the host attaches to the run; host capabilities' state
    /// constructors see it ([`crate::capability::AttemptContext`]), so one
    /// `Runtime` can serve several tenants. Default: none.
    pub host_data: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// The trust policy of this run in place of [`crate::Config::trust`] (a
    /// server running the pipelines of several projects gives each run its
    /// own project's `weir.toml`).
    pub trust: Option<Arc<TrustPolicy>>,
}

/// What one step did in a run.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// Final state.
    pub state: StepState,
    /// Output name to artifact digest (empty unless succeeded or cached).
    pub outputs: BTreeMap<String, Digest>,
    /// The cache key, if computed.
    pub cache_key: Option<CacheKey>,
    /// Error or skip reason.
    pub error: Option<String>,
    /// What kind of failure, for a failed (or cancelled) step.
    pub failure: Option<crate::records::FailureKind>,
    /// Wall time of the step.
    pub duration: Duration,
    /// Attempts made (0 for cache hits and skipped steps).
    pub attempts: u32,
    /// Metrics the step recorded (replayed from the cache on a hit).
    pub metrics: Vec<Metric>,
    /// The step ran, and its outputs equal those of its previous run, so
    /// what depends on it stays cached.
    pub early_cutoff: bool,
    /// Outputs this attempt stored for the first time (see
    /// `Scheduler::cannot_hit`).
    pub(crate) created: Vec<Digest>,
}

impl StepReport {
    /// A report for a step that did not run.
    pub fn not_run(name: &str, state: StepState, why: Option<String>) -> StepReport {
        StepReport {
            name: name.to_string(),
            state,
            outputs: BTreeMap::new(),
            cache_key: None,
            error: why,
            failure: (state == StepState::Cancelled)
                .then_some(crate::records::FailureKind::Cancelled),
            duration: Duration::ZERO,
            attempts: 0,
            metrics: Vec::new(),
            early_cutoff: false,
            created: Vec::new(),
        }
    }

    /// Whether the step's outputs are available (succeeded or cached).
    pub fn ok(&self) -> bool {
        matches!(self.state, StepState::Succeeded | StepState::Cached)
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run's number.
    pub run: RunId,
    /// Final state.
    pub state: RunState,
    /// Steps in plan order.
    pub steps: Vec<StepReport>,
    /// Children of map steps (`step[item]`), in the order they finished.
    pub children: Vec<StepReport>,
    /// The first failing step and its error, when the run failed.
    pub error: Option<String>,
    /// The plan's identity (its JSON plus every component's digest).
    pub plan_digest: Digest,
}

impl RunReport {
    /// The report of step `name`.
    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps
            .iter()
            .chain(&self.children)
            .find(|s| s.name == name)
    }

    /// The folder in `store` holding output `output` of step `step`, if it succeeded.
    pub fn output_path(&self, store: &Store, step: &str, output: &str) -> Option<PathBuf> {
        let d = self.step(step)?.outputs.get(output)?;
        store.view(d).ok()
    }
}
