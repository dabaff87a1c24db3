//! One unit of work as data, and its execution without a scheduler.
//!
//! A [`UnitSpec`] holds everything one attempt of a step (or of a map's
//! child) needs and nothing of the run around it: the component's digest,
//! the canonical params, the input artifacts by digest, the output names,
//! the limits, the granted capabilities and the seed (its cache key). It is
//! serialisable, so it can cross a process. A [`UnitRunner`] (what a
//! runtime holds to run units here: its store, its engines and its step
//! slots) executes it: lays out the inputs, takes a step slot, runs the
//! component in its sandbox and stores the outputs, returning their digests
//! with the attempt's logs, metrics and usage. The scheduler hands every
//! attempt to the runtime's [`Dispatch`], whose default runs it here
//! ([`UnitRunner::execute`], also [`crate::Runtime::execute`]); a host may
//! put another in its place (one that sends units to other machines, or one
//! that wraps the local one).
//!
//! This module knows nothing of runs, plans or the scheduler: it sits below
//! them, beside the store and the executor.

use crate::digest::Digest;
use crate::exec::executor::{AttemptSpec, EngineConfig, Executor, LoadedComponent, Watch};
use crate::limits::Limits;
use crate::records::{FailureKind, LogLine, Metric};
use crate::store::{Quota, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// One attempt of a step, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitSpec {
    /// The step's name as shown (`train`, or `each[a.csv]` for a map's child).
    pub step: String,
    /// The run it belongs to, if any.
    #[serde(default)]
    pub run: Option<crate::records::RunId>,
    /// Digest of the component's wasm bytes.
    pub component: Digest,
    /// Capabilities granted beyond the `step` world (as in the cache key).
    pub capabilities: Vec<String>,
    /// The params as canonical JSON.
    pub params_json: String,
    /// Input name to artifact digest.
    pub inputs: BTreeMap<String, Digest>,
    /// Output names.
    pub outputs: Vec<String>,
    /// The limits the attempt runs under.
    pub limits: Limits,
    /// The seed of the sandbox's clocks and randomness: the cache key.
    pub seed: Digest,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The step's tags: a worker of a cluster runs it only if it serves all
    /// of them (not in the cache key: where a unit runs never changes its
    /// outputs).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The cache key of a unit of `component` with these params, inputs and
/// declared outputs under `limits`: the one place that says which of a
/// unit's parts its key covers (the scheduler before it runs a unit,
/// `weir verify` to check it rebuilt the unit that ran).
pub fn unit_key(
    component: &LoadedComponent,
    params: &serde_json::Value,
    inputs: &BTreeMap<String, Digest>,
    outputs: &[&str],
    limits: &Limits,
) -> crate::cache::CacheKey {
    crate::cache::cache_key(&crate::cache::KeyInputs {
        component: &component.digest,
        world: crate::cache::STEP_WORLD,
        capabilities: &component.capabilities,
        params,
        inputs,
        outputs,
        memory_bytes: limits.memory_bytes,
    })
}

/// What one executed unit produced (serialisable, so a worker can send it
/// back).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitOutcome {
    /// The outputs' digests, or why the attempt failed.
    pub result: Result<BTreeMap<String, Digest>, (FailureKind, String)>,
    /// Outputs stored for the first time by this attempt.
    pub created: Vec<Digest>,
    /// Log lines, then stdout and stderr lines.
    pub logs: Vec<LogLine>,
    /// Metrics in call order.
    pub metrics: Vec<Metric>,
    /// The most memory the attempt held, when it ran.
    pub peak_memory_bytes: Option<u64>,
    /// Fuel used, when counted.
    pub fuel_used: Option<u64>,
}

impl UnitOutcome {
    pub(crate) fn failed(kind: FailureKind, why: String) -> UnitOutcome {
        UnitOutcome {
            result: Err((kind, why)),
            created: Vec::new(),
            logs: Vec::new(),
            metrics: Vec::new(),
            peak_memory_bytes: None,
            fuel_used: None,
        }
    }
}

/// The future a [`Dispatch`] returns.
pub type UnitFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = UnitOutcome> + Send + 'a>>;

/// Where the scheduler sends each attempt: the seam between deciding what
/// runs and running it. The default, [`LocalDispatch`], runs it in this
/// process ([`UnitRunner::execute`]); set another with
/// [`crate::Config::dispatch`].
pub trait Dispatch: Send + Sync {
    /// Whether units leave this process, so a run must put each step's
    /// component bytes in the store as an object (named by the component's
    /// digest) for other machines to fetch. Default: no.
    fn ships_components(&self) -> bool {
        false
    }

    /// Runs one attempt and returns what it produced. `units` runs units in
    /// this process (what the default does with every one). `component` is the
    /// unit's component as this runtime loaded it (a remote implementation
    /// sends `spec.component`, its digest, instead); `watch` sees log lines
    /// and metrics as they come; `host_data` is the run's
    /// [`crate::RunOptions::host_data`].
    fn dispatch<'a>(
        &'a self,
        units: &'a UnitRunner,
        spec: &'a UnitSpec,
        component: &'a Arc<LoadedComponent>,
        cancel: &'a CancellationToken,
        watch: Option<Watch>,
        host_data: Option<Arc<dyn std::any::Any + Send + Sync>>,
    ) -> UnitFuture<'a>;
}

/// Runs every unit in this process, on the runtime's own engine and store.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalDispatch;

impl Dispatch for LocalDispatch {
    fn dispatch<'a>(
        &'a self,
        units: &'a UnitRunner,
        spec: &'a UnitSpec,
        component: &'a Arc<LoadedComponent>,
        cancel: &'a CancellationToken,
        watch: Option<Watch>,
        host_data: Option<Arc<dyn std::any::Any + Send + Sync>>,
    ) -> UnitFuture<'a> {
        Box::pin(units.execute(spec, component, cancel, watch, host_data))
    }
}

/// Removes staging folders when an attempt ends, however it ends (including
/// being dropped when the run is cancelled).
struct Staging(Vec<(String, PathBuf)>);

impl Drop for Staging {
    fn drop(&mut self) {
        for (_, dir) in &self.0 {
            if dir.exists() {
                crate::store::make_writable(dir);
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// What runs units in this process: the store their artifacts live in, the
/// engines (one that counts fuel, started by the first unit with a fuel
/// budget) and the step slots every run of a runtime shares.
pub struct UnitRunner {
    store: Store,
    /// Runs units without a fuel budget (counts no fuel).
    executor: Executor,
    /// The settings of the engine that counts fuel, and its compile cache;
    /// `None` refuses fuel budgets.
    fuel_engine: Option<(EngineConfig, PathBuf)>,
    /// Runs units with a fuel budget; started by the first such unit.
    fuel_executor: OnceLock<Result<Executor, String>>,
    /// Unit attempts that may run at once (the executors' instance pools
    /// are sized from it): an attempt waits for a slot, it never fails for
    /// lack of one.
    slots: tokio::sync::Semaphore,
}

impl UnitRunner {
    /// Runs units against `store` with `executor`, `jobs` at a time;
    /// `fuel_engine` (settings and compile cache) starts the engine for
    /// units with a fuel budget when one comes (`None`: refuse them).
    pub(crate) fn new(
        store: Store,
        executor: Executor,
        fuel_engine: Option<(EngineConfig, PathBuf)>,
        jobs: usize,
    ) -> UnitRunner {
        UnitRunner {
            store,
            executor,
            fuel_engine,
            fuel_executor: OnceLock::new(),
            slots: tokio::sync::Semaphore::new(jobs.max(1)),
        }
    }

    /// The store units read their inputs from and write their outputs to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The executor of units without a fuel budget.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// The executor for units with (`fuel`) or without a fuel budget.
    pub(crate) fn executor_for(&self, fuel: bool) -> anyhow::Result<&Executor> {
        if !fuel {
            return Ok(&self.executor);
        }
        let Some((config, compiled)) = &self.fuel_engine else {
            anyhow::bail!("a fuel budget is set but this runtime allows none (Config::fuel)");
        };
        self.fuel_executor
            .get_or_init(|| Executor::new(config, compiled).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("starting the fuel-counting engine: {e}"))
    }

    /// Runs one attempt of `spec` with `component` (loaded by this runner's
    /// executors; its digest must be `spec.component`): lays out the inputs from the
    /// store, waits for a step slot, runs the component, and stores its
    /// outputs within the spec's limits. `cancel` stops it; `watch` sees
    /// log lines and metrics as the guest records them; `host_data` is
    /// what host capabilities' state constructors see
    /// ([`crate::capability::AttemptContext`]).
    ///
    /// Long on purpose: each phase (views, staging, slot, attempt, ingest)
    /// ends the unit with its own failure kind, and reads best as one
    /// sequence of early returns.
    pub async fn execute(
        &self,
        spec: &UnitSpec,
        component: &Arc<LoadedComponent>,
        cancel: &CancellationToken,
        watch: Option<Watch>,
        host_data: Option<Arc<dyn std::any::Any + Send + Sync>>,
    ) -> UnitOutcome {
        if component.digest != spec.component {
            return UnitOutcome::failed(
                FailureKind::Setup,
                format!(
                    "the unit names component {}, but component {} was given",
                    spec.component.short(),
                    component.digest.short()
                ),
            );
        }
        let store: &Store = &self.store;
        let setup = |e: String| UnitOutcome::failed(FailureKind::Setup, e);
        // Inputs, laid out as read-only folders.
        let mut views = Vec::with_capacity(spec.inputs.len());
        for (name, d) in &spec.inputs {
            match store.view(d) {
                Ok(v) => views.push((name.clone(), v)),
                Err(e) => {
                    return UnitOutcome::failed(
                        FailureKind::Storage,
                        format!("cannot lay out input '{name}': {e}"),
                    );
                }
            }
        }
        // Empty output folders in the store's filesystem.
        let mut staging = Staging(Vec::with_capacity(spec.outputs.len()));
        for name in &spec.outputs {
            match store.staging_dir("out") {
                Ok(dir) => staging.0.push((name.clone(), dir)),
                Err(e) => return setup(format!("cannot create output folder: {e}")),
            }
        }
        // The engine the component was loaded on (a step with a fuel budget
        // was loaded on the one that counts fuel).
        let executor = match self.executor_for(component.counts_fuel()) {
            Ok(x) => x,
            Err(e) => return setup(format!("{e:#}")),
        };
        // A slot of the runtime's own: other runs' steps count too.
        let _slot = tokio::select! {
            slot = self.slots.acquire() => match slot {
                Ok(s) => s,
                Err(e) => return setup(format!("no step slot: {e}")),
            },
            _ = cancel.cancelled() => {
                return UnitOutcome::failed(
                    FailureKind::Cancelled,
                    "cancelled while waiting for a step slot".into(),
                );
            }
        };
        let result = executor
            .run(AttemptSpec {
                step: spec.step.clone(),
                run: spec.run,
                host_data,
                component: component.clone(),
                params_json: spec.params_json.clone(),
                inputs: views,
                outputs: staging.0.clone(),
                limits: spec.limits,
                seed: spec.seed,
                attempt: spec.attempt,
                cancel: Some(cancel.clone()),
                watch,
            })
            .await;
        let mut outcome = UnitOutcome {
            result: Ok(BTreeMap::new()),
            created: Vec::new(),
            logs: result.logs,
            metrics: result.metrics,
            peak_memory_bytes: Some(result.peak_memory_bytes),
            fuel_used: result.fuel_used,
        };
        if let Err(f) = result.outcome {
            outcome.result = Err((f.kind(), f.to_string()));
            return outcome;
        }
        // Outputs into the store, within the output limits together.
        let mut quota = Quota {
            bytes: spec.limits.output_bytes,
            files: spec.limits.output_files,
        };
        let mut outputs = BTreeMap::new();
        for (name, dir) in &staging.0 {
            let got = match store.ingest_output(dir, quota) {
                Ok(g) => g,
                Err(e) => {
                    let kind = match e {
                        crate::store::IngestError::Quota { .. } => FailureKind::OutputLimit,
                        _ => FailureKind::Storage,
                    };
                    outcome.result = Err((kind, format!("output '{name}': {e}")));
                    return outcome;
                }
            };
            quota.bytes = quota.bytes.saturating_sub(got.bytes);
            quota.files = quota.files.saturating_sub(got.files);
            outputs.insert(name.clone(), got.digest);
            if got.created {
                outcome.created.push(got.digest);
            }
        }
        // Every staging folder now belongs to the store (a view, or the pool).
        staging.0.clear();
        outcome.result = Ok(outputs);
        outcome
    }
}
