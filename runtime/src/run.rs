//! The [`Runtime`]: executes plans, step by step, in parallel where the DAG allows.
//!
//! One run: validate the plan; build and load every component (before any
//! record is written, so a compile error costs nothing); ingest host inputs;
//! open a run record; then schedule. A step whose inputs are ready computes
//! its [`CacheKey`]; a valid cache entry is reused without instantiating
//! anything, otherwise the step runs in a fresh sandbox and its output
//! folders become artifacts. Finished steps go to a committer thread that
//! batches them: one `syncfs` for all new objects, then one database
//! transaction, so no record ever references an object a crash could lose.

use crate::cache::{self, CacheKey, KeyInputs, STEP_WORLD};
use crate::digest::Digest;
use crate::executor::{AttemptSpec, EngineConfig, Executor, LoadedComponent};
use crate::plan::{ComponentSource, InputSource, Plan};
use crate::records::{
    LogLine, RecordOp, Records, RunId, RunState, SqliteRecords, StepRecord, StepState, now_ms,
};
use crate::store::{Quota, Store};
use anyhow::{Context as _, anyhow};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How a [`Runtime`] is set up. Every field has a default; see [`Config::new`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The store folder (objects, views, compile cache, `weir.db`).
    pub store_dir: PathBuf,
    /// Steps run at once. Default: the number of cores.
    pub jobs: usize,
    /// Count fuel so per-step fuel budgets work. Default: on.
    pub fuel: bool,
    /// Use wasmtime's pooling allocator. Default: on.
    pub pooling: bool,
}

impl Config {
    /// Defaults for a store at `store_dir`: `jobs` = cores, fuel on, pooling on.
    pub fn new(store_dir: impl Into<PathBuf>) -> Config {
        Config {
            store_dir: store_dir.into(),
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            fuel: true,
            pooling: true,
        }
    }

    /// Sets how many steps run at once (at least 1).
    pub fn jobs(mut self, jobs: usize) -> Config {
        self.jobs = jobs.max(1);
        self
    }
}

/// Something that happened during a run, for progress displays.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run record exists; `steps` steps will be scheduled.
    RunStarted {
        /// The run.
        run: RunId,
        /// Number of steps.
        steps: usize,
    },
    /// A component is being built or loaded.
    Preparing {
        /// What is being prepared.
        what: String,
    },
    /// A step started (cache check, then execution if needed).
    StepStarted {
        /// The step.
        step: String,
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
    /// Called for every [`RunEvent`], from the scheduler's task.
    pub on_event: Option<EventSink>,
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
    /// Wall time of the step.
    pub duration: Duration,
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
    /// The first failing step and its error, when the run failed.
    pub error: Option<String>,
    /// The plan's identity (its JSON plus every component's digest).
    pub plan_digest: Digest,
}

impl RunReport {
    /// The report of step `name`.
    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The folder in `store` holding output `output` of step `step`, if it succeeded.
    pub fn output_path(&self, store: &Store, step: &str, output: &str) -> Option<PathBuf> {
        let d = self.step(step)?.outputs.get(output)?;
        store.view(d).ok()
    }
}

struct Inner {
    store: Store,
    records: Arc<dyn Records>,
    executor: Executor,
    config: Config,
}

/// The long-lived object that runs plans. Cheap to clone; clones share the
/// store, records and engine.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    /// Opens the store and records and builds the engine.
    pub fn new(config: Config) -> anyhow::Result<Runtime> {
        let store = Store::open(&config.store_dir)
            .with_context(|| format!("cannot open the store at {}", config.store_dir.display()))?;
        let _ = store.clean_tmp();
        let records = Arc::new(SqliteRecords::open(&config.store_dir.join("weir.db"))?);
        let executor = Executor::new(
            &EngineConfig {
                max_concurrent: config.jobs as u32,
                fuel: config.fuel,
                pooling: config.pooling,
            },
            &store.compiled_dir(),
        )?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                store,
                records,
                executor,
                config,
            }),
        })
    }

    /// The content-addressed store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The run records.
    pub fn records(&self) -> &dyn Records {
        &*self.inner.records
    }

    /// The executor (for loading components directly).
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// Builds (if a crate) and loads the component of a source, resolved against `base`.
    pub fn load_component(
        &self,
        source: &ComponentSource,
        base: &Path,
    ) -> anyhow::Result<Arc<LoadedComponent>> {
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let wasm = match source {
            ComponentSource::Crate(dir) => crate::builder::build_crate(&resolve(dir))?,
            ComponentSource::Wasm(p) => resolve(p),
        };
        self.inner.executor.load(&wasm)
    }

    /// Runs `plan` to the end and returns what every step did. An `Err` means
    /// the run could not start (invalid plan, a component that does not build
    /// or load, an unreadable input); step failures are in the report.
    pub async fn run(&self, plan: &Plan, opts: RunOptions) -> anyhow::Result<RunReport> {
        let emit = |e: RunEvent| {
            if let Some(f) = &opts.on_event {
                f(&e)
            }
        };
        let order = plan.validate()?;
        let n = plan.steps.len();

        // Components, before anything is recorded.
        let mut by_source: HashMap<&ComponentSource, Arc<LoadedComponent>> = HashMap::new();
        let mut components = Vec::with_capacity(n);
        for s in &plan.steps {
            let c = match by_source.get(&s.component) {
                Some(c) => c.clone(),
                None => {
                    emit(RunEvent::Preparing {
                        what: match &s.component {
                            ComponentSource::Crate(p) => format!("building {}", p.display()),
                            ComponentSource::Wasm(p) => format!("loading {}", p.display()),
                        },
                    });
                    let this = self.clone();
                    let source = s.component.clone();
                    let base = plan.base_dir.clone();
                    let c =
                        tokio::task::spawn_blocking(move || this.load_component(&source, &base))
                            .await
                            .map_err(|e| anyhow!("component loader panicked: {e}"))?
                            .with_context(|| step_at(s))?;
                    by_source.insert(&s.component, c.clone());
                    c
                }
            };
            if s.limits.fuel.is_some() && !self.inner.executor.fuel_enabled() {
                anyhow::bail!(
                    "{}a fuel budget is set but this runtime counts no fuel (Config::fuel)",
                    step_at(s)
                );
            }
            components.push(c);
        }

        // Host inputs.
        let mut input_digests: Vec<BTreeMap<String, Digest>> = vec![BTreeMap::new(); n];
        let mut ingested: HashMap<PathBuf, Digest> = HashMap::new();
        for (i, s) in plan.steps.iter().enumerate() {
            for (name, src) in &s.inputs {
                match src {
                    InputSource::Path(p) => {
                        let p = plan.resolve(p);
                        let d = match ingested.get(&p) {
                            Some(d) => *d,
                            None => {
                                let d = self.inner.store.ingest_path(&p).map_err(|e| {
                                    anyhow!("{}input '{name}' cannot be read: {e}", step_at(s))
                                })?;
                                ingested.insert(p, d);
                                d
                            }
                        };
                        input_digests[i].insert(name.clone(), d);
                    }
                    InputSource::Artifact(d) => {
                        if !self.inner.store.is_valid_tree(d)? {
                            anyhow::bail!(
                                "{}input '{name}' names artifact {d}, which is not in the store (or is corrupt)",
                                step_at(s)
                            );
                        }
                        input_digests[i].insert(name.clone(), *d);
                    }
                    InputSource::Step { .. } => {}
                }
            }
        }

        let plan_digest = {
            let mut h = blake3::Hasher::new();
            h.update(cache::canonical_json(&serde_json::to_value(plan)?).as_bytes());
            for c in &components {
                h.update(c.digest.as_bytes());
            }
            Digest::from(h.finalize())
        };
        let records = self.inner.records.clone();
        let run_id = records.begin_run(&plan.name, &plan_digest, &plan.to_json())?;
        emit(RunEvent::RunStarted {
            run: run_id,
            steps: n,
        });

        // Committer: batches of finished steps, one sync and one transaction each.
        let (tx, rx) = std::sync::mpsc::channel::<(bool, Vec<RecordOp>)>();
        let committer = {
            let this = self.clone();
            std::thread::Builder::new()
                .name("weir-commit".into())
                .spawn(move || -> anyhow::Result<()> {
                    let mut first = true;
                    while let Ok(msg) = rx.recv() {
                        let mut needs_sync = msg.0 || first;
                        let mut ops = msg.1;
                        while let Ok((s, more)) = rx.try_recv() {
                            needs_sync |= s;
                            ops.extend(more);
                        }
                        if needs_sync {
                            this.inner
                                .store
                                .sync()
                                .context("flushing the store to disk")?;
                        }
                        first = false;
                        this.inner.records.commit(&ops)?;
                    }
                    Ok(())
                })
                .context("starting the commit thread")?
        };

        let deps = plan.dependencies();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        let mut position = vec![0usize; n];
        for (pos, &i) in order.iter().enumerate() {
            position[i] = pos;
        }
        let mut ready: VecDeque<usize> =
            order.iter().copied().filter(|&i| waiting[i] == 0).collect();
        let mut reports: Vec<Option<StepReport>> = vec![None; n];
        let mut outputs: Vec<Option<BTreeMap<String, Digest>>> = vec![None; n];
        let mut first_error: Option<String> = None;
        let mut tasks = tokio::task::JoinSet::new();
        let plan = Arc::new(plan.clone());
        let jobs = self.inner.config.jobs;

        loop {
            while tasks.len() < jobs {
                let Some(i) = ready.pop_front() else { break };
                let s = &plan.steps[i];
                // Upstream outputs are known now.
                for (name, src) in &s.inputs {
                    if let InputSource::Step { step, output } = src {
                        let up = plan.steps.iter().position(|x| &x.name == step);
                        if let Some(d) = up
                            .and_then(|u| outputs[u].as_ref())
                            .and_then(|o| o.get(output))
                        {
                            input_digests[i].insert(name.clone(), *d);
                        }
                    }
                }
                emit(RunEvent::StepStarted {
                    step: s.name.clone(),
                });
                let job = StepJob {
                    rt: self.clone(),
                    plan: plan.clone(),
                    index: i,
                    run: run_id,
                    component: components[i].clone(),
                    inputs: std::mem::take(&mut input_digests[i]),
                    commit: tx.clone(),
                };
                tasks.spawn(async move { (i, job.execute().await) });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (i, report) = joined.map_err(|e| anyhow!("a step task panicked: {e}"))?;
            emit(RunEvent::StepFinished {
                step: report.name.clone(),
                state: report.state,
                duration: report.duration,
                error: report.error.clone(),
            });
            if matches!(report.state, StepState::Succeeded | StepState::Cached) {
                outputs[i] = Some(report.outputs.clone());
                let mut newly: Vec<usize> = Vec::new();
                for &d in &dependents[i] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 {
                        newly.push(d);
                    }
                }
                newly.sort_by_key(|&d| position[d]);
                ready.extend(newly);
            } else {
                if first_error.is_none() {
                    first_error = Some(format!(
                        "step '{}' failed: {}",
                        report.name,
                        report.error.as_deref().unwrap_or("unknown error")
                    ));
                }
                // Skip everything downstream; independent branches go on.
                let mut stack = dependents[i].clone();
                while let Some(d) = stack.pop() {
                    if reports[d].is_some() {
                        continue;
                    }
                    let now = now_ms();
                    let why = format!("upstream step '{}' did not succeed", report.name);
                    let skipped = StepReport {
                        name: plan.steps[d].name.clone(),
                        state: StepState::Skipped,
                        outputs: BTreeMap::new(),
                        cache_key: None,
                        error: Some(why.clone()),
                        duration: Duration::ZERO,
                    };
                    let _ = tx.send((
                        false,
                        vec![RecordOp::Step(Box::new(StepRecord {
                            run: run_id,
                            step: skipped.name.clone(),
                            state: StepState::Skipped,
                            attempt: 0,
                            cache_key: None,
                            component: Some(components[d].digest),
                            started_ms: now,
                            ended_ms: now,
                            error: Some(why.clone()),
                            outputs: BTreeMap::new(),
                            inputs: BTreeMap::new(),
                            metrics: Vec::new(),
                            logs: Vec::new(),
                        }))],
                    ));
                    emit(RunEvent::StepFinished {
                        step: skipped.name.clone(),
                        state: StepState::Skipped,
                        duration: Duration::ZERO,
                        error: Some(why),
                    });
                    reports[d] = Some(skipped);
                    stack.extend(dependents[d].iter().copied());
                }
            }
            reports[i] = Some(report);
        }

        let state = if first_error.is_some() {
            RunState::Failed
        } else {
            RunState::Succeeded
        };
        let _ = tx.send((
            false,
            vec![RecordOp::RunEnded {
                run: run_id,
                state,
                error: first_error.clone(),
            }],
        ));
        drop(tx);
        tokio::task::spawn_blocking(move || committer.join())
            .await
            .map_err(|e| anyhow!("commit thread lost: {e}"))?
            .map_err(|_| anyhow!("the commit thread panicked"))?
            .context("recording the run")?;

        let steps = reports
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| StepReport {
                    name: plan.steps[i].name.clone(),
                    state: StepState::Pending,
                    outputs: BTreeMap::new(),
                    cache_key: None,
                    error: None,
                    duration: Duration::ZERO,
                })
            })
            .collect();
        Ok(RunReport {
            run: run_id,
            state,
            steps,
            error: first_error,
            plan_digest,
        })
    }
}

fn step_at(s: &crate::plan::StepPlan) -> String {
    match &s.origin {
        Some(o) => format!("step '{}' ({o}): ", s.name),
        None => format!("step '{}': ", s.name),
    }
}

/// One step's work in a run: cache check, then (if needed) one attempt.
struct StepJob {
    rt: Runtime,
    plan: Arc<Plan>,
    index: usize,
    run: RunId,
    component: Arc<LoadedComponent>,
    inputs: BTreeMap<String, Digest>,
    commit: std::sync::mpsc::Sender<(bool, Vec<RecordOp>)>,
}

impl StepJob {
    async fn execute(self) -> StepReport {
        let started = std::time::Instant::now();
        let started_ms = now_ms();
        let s = &self.plan.steps[self.index];
        let outs: Vec<&str> = s.outputs.iter().map(String::as_str).collect();
        let key = cache::cache_key(&KeyInputs {
            component: &self.component.digest,
            world: STEP_WORLD,
            capabilities: &[],
            params: &s.params,
            inputs: &self.inputs,
            outputs: &outs,
            memory_bytes: s.limits.memory_bytes,
        });
        let mut record = StepRecord {
            run: self.run,
            step: s.name.clone(),
            state: StepState::Running,
            attempt: 0,
            cache_key: Some(key),
            component: Some(self.component.digest),
            started_ms,
            ended_ms: 0,
            error: None,
            outputs: BTreeMap::new(),
            inputs: self.inputs.clone(),
            metrics: Vec::new(),
            logs: Vec::new(),
        };

        // Cache: a hit needs every output present and valid.
        match self.cached_outputs(&key, &outs) {
            Ok(Some(outputs)) => {
                record.state = StepState::Cached;
                record.outputs = outputs;
                return self.finish(record, None, started);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(step = %s.name, "cache lookup failed, running the step: {e:#}")
            }
        }

        record.attempt = 1;
        let mut new_objects = false;
        let outcome = self.attempt(&key, &mut record).await;
        match outcome {
            Ok(outputs) => {
                record.state = StepState::Succeeded;
                record.outputs = outputs;
                new_objects = true;
            }
            Err(e) => {
                record.state = StepState::Failed;
                record.error = Some(e);
            }
        }
        let cache_op = (record.state == StepState::Succeeded).then(|| RecordOp::Cache {
            key,
            outputs: record.outputs.clone(),
            run: self.run,
            step: s.name.clone(),
        });
        self.finish_with(record, cache_op, new_objects, started)
    }

    fn cached_outputs(
        &self,
        key: &CacheKey,
        outs: &[&str],
    ) -> anyhow::Result<Option<BTreeMap<String, Digest>>> {
        let inner = &self.rt.inner;
        let Some(outputs) = inner.records.cache_lookup(key)? else {
            return Ok(None);
        };
        let names_match =
            outputs.len() == outs.len() && outs.iter().all(|o| outputs.contains_key(*o));
        let mut valid = names_match;
        if valid {
            for d in outputs.values() {
                if !inner.store.is_valid_tree(d)? {
                    valid = false;
                    break;
                }
            }
        }
        if !valid {
            inner.records.cache_forget(key)?;
            return Ok(None);
        }
        Ok(Some(outputs))
    }

    /// One attempt; on success the output digests, else the error text.
    async fn attempt(
        &self,
        key: &CacheKey,
        record: &mut StepRecord,
    ) -> Result<BTreeMap<String, Digest>, String> {
        let s = &self.plan.steps[self.index];
        let store = &self.rt.inner.store;
        let mut views = Vec::with_capacity(self.inputs.len());
        for (name, d) in &self.inputs {
            let v = store
                .view(d)
                .map_err(|e| format!("cannot lay out input '{name}': {e}"))?;
            views.push((name.clone(), v));
        }
        let mut staging = Vec::with_capacity(s.outputs.len());
        for name in &s.outputs {
            let dir = store.temp_path(&format!("out-{}-{name}", s.name));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create output folder {}: {e}", dir.display()))?;
            staging.push((name.clone(), dir));
        }
        let result = self
            .rt
            .inner
            .executor
            .run(AttemptSpec {
                step: &s.name,
                component: &self.component,
                params_json: cache::canonical_json(&s.params),
                inputs: views,
                outputs: staging.clone(),
                limits: s.limits,
                seed: *key,
                attempt: record.attempt,
            })
            .await;
        record.logs = result.logs;
        record.metrics = result.metrics;
        let cleanup = |staging: &[(String, PathBuf)]| {
            for (_, dir) in staging {
                if dir.exists() {
                    crate::store::make_writable(dir);
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        };
        if let Err(f) = result.outcome {
            cleanup(&staging);
            return Err(f.to_string());
        }
        let mut quota = Quota {
            bytes: s.limits.output_bytes,
            files: s.limits.output_files,
        };
        let mut outputs = BTreeMap::new();
        for (name, dir) in &staging {
            match store.ingest_output(dir, quota) {
                Ok(d) => {
                    let tree = store.read_tree(&d).map_err(|e| e.to_string())?;
                    quota.bytes = quota.bytes.saturating_sub(tree.bytes());
                    quota.files = quota.files.saturating_sub(tree.entries.len() as u64);
                    outputs.insert(name.clone(), d);
                }
                Err(e) => {
                    cleanup(&staging);
                    return Err(format!("output '{name}': {e}"));
                }
            }
        }
        Ok(outputs)
    }

    fn finish(
        &self,
        record: StepRecord,
        cache_op: Option<RecordOp>,
        started: std::time::Instant,
    ) -> StepReport {
        self.finish_with(record, cache_op, false, started)
    }

    fn finish_with(
        &self,
        mut record: StepRecord,
        cache_op: Option<RecordOp>,
        new_objects: bool,
        started: std::time::Instant,
    ) -> StepReport {
        record.ended_ms = now_ms();
        let report = StepReport {
            name: record.step.clone(),
            state: record.state,
            outputs: record.outputs.clone(),
            cache_key: record.cache_key,
            error: record.error.clone(),
            duration: started.elapsed(),
        };
        let mut ops = vec![RecordOp::Step(Box::new(record))];
        ops.extend(cache_op);
        let _ = self.commit.send((new_objects, ops));
        report
    }
}

/// Log lines of a failed attempt, for messages.
pub fn last_lines(logs: &[LogLine], n: usize) -> String {
    logs[logs.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("[{}] {}", l.level, l.message))
        .collect::<Vec<_>>()
        .join("\n")
}
