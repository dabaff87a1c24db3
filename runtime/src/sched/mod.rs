//! The scheduler: runs a validated plan's steps as their inputs become ready.
//!
//! Units of work are steps and the children of map steps. The scheduler
//! runs on a thread of its own and decides what is ready ([`graph`]: a unit
//! is launched when every pool of its tags has room and, for a map child,
//! its map's parallelism bound allows). A cache hit is settled at once, on
//! the scheduler's thread. A miss that is the only unit that can run (each
//! step of a chain) runs right there; otherwise it becomes a `Work` item on
//! the `WorkQueue`, which worker threads of the caller's blocking pool take
//! from (up to the run's `jobs`): each runs the unit's attempts, with
//! retries and backoff, and sends the `StepReport` back. Finished units go
//! to a committer thread that batches them (a 2 ms window): the batch's new
//! objects are made durable ([`crate::store::Store::sync`]: `fdatasync` of
//! each object file and `fsync` of its folder, one transaction for the
//! packed ones, then the uploads to a remote), then one records
//! transaction, so no record ever references an object a crash could lose.
//!
//! Gates (`when`, [`gate`]) are evaluated when a step's dependencies are
//! done; a false condition skips the step and everything downstream of it,
//! recording the condition and its values. A map step's children are
//! expanded ([`map`]) when the output it maps over is known. A failed step
//! skips its dependants and lets independent branches finish (or, with
//! `fail_fast`, stops the run). `graph`, `gate` and `map` do no I/O and
//! have unit tests of their own.

mod gate;
mod graph;
pub(crate) mod map;

use crate::cache::{self, CacheKey};
use crate::digest::Digest;
use crate::events::{EventSink, RunEvent, RunOptions, StepReport};
use crate::exec::executor::LoadedComponent;
use crate::plan::{CacheMode, Condition, InputSource, Plan};
use crate::records::{
    FailureKind, LogLine, Metric, RecordOp, RunId, RunState, StepRecord, StepState, StepSummary,
    now_ms,
};
use crate::runtime::Runtime;
use crate::tree::{Entry, EntryKind, Tree};
use anyhow::anyhow;
use graph::{Graph, Unit};
use map::Child;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

type Commit = Sender<Vec<RecordOp>>;

/// How long the committer lets finished steps gather before one commit.
const COMMIT_WINDOW: Duration = Duration::from_millis(2);

struct MapState {
    children: Vec<Child>,
    reports: Vec<Option<StepReport>>,
    done: usize,
}

pub(crate) struct Scheduler {
    rt: Runtime,
    plan: Arc<Plan>,
    components: Vec<Arc<LoadedComponent>>,
    inputs: Vec<BTreeMap<String, Digest>>,
    run: RunId,
    previous: HashMap<String, StepSummary>,
    opts: RunOptions,
    /// Readiness, pools and map bounds (no I/O; see [`graph`]).
    graph: Graph,
    reports: Vec<Option<StepReport>>,
    children_done: Vec<StepReport>,
    maps: HashMap<usize, MapState>,
    first_error: Option<String>,
    commit: Option<Commit>,
    index: HashMap<String, usize>,
    /// Whether the pipeline ran before (else no step has earlier outputs).
    ran_before: bool,
    /// Artifacts first stored by this run's steps (see `cannot_hit`).
    created: HashSet<Digest>,
    /// Cache keys of the units that ran and succeeded in this run.
    ran_keys: HashSet<CacheKey>,
    /// Set by the committer when new objects could not be made durable.
    durability: Arc<Durability>,
}

/// What the committer tells the scheduler when the store cannot make new
/// objects durable (an I/O error on write or sync): the steps whose records
/// were turned into failures, and why. The run stops at once.
#[derive(Default)]
struct Durability {
    lost: std::sync::Mutex<Vec<(String, String)>>,
}

impl Durability {
    fn failure(&self) -> Option<String> {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.first().map(|(step, why)| {
            format!(
                "the outputs of {} step(s) could not be made durable (first: step '{step}': {why}); the run was stopped",
                lost.len()
            )
        })
    }

    /// Turns the successes in `ops` into failures that name `why` (their
    /// objects may not survive a crash, so no record may name them), drops
    /// their cache entries and model registrations, and ends the run failed.
    /// Every record of the batch also forgets the inputs it read from objects
    /// in `not_durable` (a dependant may have run on outputs whose flush
    /// then failed).
    fn downgrade(&self, ops: &mut Vec<RecordOp>, why: &str, not_durable: &HashSet<Digest>) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        ops.retain(|op| !matches!(op, RecordOp::Cache { .. } | RecordOp::RegisterModel { .. }));
        for op in ops.iter_mut() {
            let RecordOp::Step(r) = op else { continue };
            r.inputs.retain(|_, d| !not_durable.contains(d));
            if r.state == StepState::Succeeded {
                r.state = StepState::Failed;
                r.error = Some(why.to_string());
                r.failure = Some(FailureKind::Storage);
                r.outputs.clear();
                lost.push((r.step.clone(), why.to_string()));
            }
        }
    }

    /// The run's outcome as recorded: steps whose records were turned into
    /// failures are failures in the report too.
    fn apply(&self, (mut steps, mut children, mut state, mut error): Outcome) -> Outcome {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if lost.is_empty() {
            return (steps, children, state, error);
        }
        for r in steps.iter_mut().chain(children.iter_mut()) {
            if let Some((_, why)) = lost.iter().find(|(s, _)| *s == r.name) {
                r.state = StepState::Failed;
                r.error = Some(why.clone());
                r.failure = Some(FailureKind::Storage);
                r.outputs.clear();
            }
        }
        if state != RunState::Cancelled {
            state = RunState::Failed;
            if error.is_none() {
                error = self.failure();
            }
        }
        (steps, children, state, error)
    }

    /// A run's end, failed if anything was lost.
    fn end(&self, ops: &mut [RecordOp]) {
        let Some(why) = self.failure() else {
            return;
        };
        for op in ops.iter_mut() {
            if let RecordOp::RunEnded { state, error, .. } = op
                && *state != RunState::Cancelled
            {
                *state = RunState::Failed;
                error.get_or_insert(why.clone());
            }
        }
    }
}

type Outcome = (Vec<StepReport>, Vec<StepReport>, RunState, Option<String>);

impl Scheduler {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rt: Runtime,
        plan: Arc<Plan>,
        order: Vec<usize>,
        components: Vec<Arc<LoadedComponent>>,
        inputs: Vec<BTreeMap<String, Digest>>,
        run: RunId,
        previous: HashMap<String, StepSummary>,
        opts: RunOptions,
    ) -> anyhow::Result<Scheduler> {
        let n = plan.steps.len();
        // Each step's tags, plus `gpu` for steps granted the GPU.
        let tags = plan
            .steps
            .iter()
            .zip(&components)
            .map(|(s, c)| {
                let mut t: Vec<String> = s.tags.iter().cloned().collect();
                if c.capabilities.iter().any(|c| c.starts_with("gpu"))
                    && !t.iter().any(|x| x == "gpu")
                {
                    t.push("gpu".into());
                }
                t
            })
            .collect();
        // Pool sizes: the plan's, plus one GPU slot unless the plan sizes `gpu`.
        let mut pools: HashMap<String, u32> =
            plan.pools.iter().map(|(k, v)| (k.clone(), *v)).collect();
        pools.entry("gpu".into()).or_insert(1);
        let parallelism = plan
            .steps
            .iter()
            .map(|s| s.map.as_ref().map_or(0, |m| m.parallelism))
            .collect();
        let graph = Graph::new(&plan.dependencies(), &order, tags, pools, parallelism);
        let ran_before = rt.inner.records.ran_before(&plan.name, run).unwrap_or(true);
        let index = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Ok(Scheduler {
            graph,
            rt,
            plan,
            components,
            inputs,
            run,
            previous,
            opts,
            reports: vec![None; n],
            children_done: Vec::new(),
            maps: HashMap::new(),
            first_error: None,
            commit: None,
            index,
            ran_before,
            created: HashSet::new(),
            ran_keys: HashSet::new(),
            durability: Arc::default(),
        })
    }

    fn emit(&self, e: RunEvent) {
        if let Some(f) = &self.opts.on_event {
            f(&e)
        }
    }

    /// Tells watchers that the unit of `report` finished.
    fn emit_finished(&self, report: &StepReport) {
        self.emit(RunEvent::StepFinished {
            step: report.name.clone(),
            state: report.state,
            duration: report.duration,
            error: report.error.clone(),
        });
    }

    fn send(&self, ops: Vec<RecordOp>) {
        if let Some(c) = &self.commit {
            let _ = c.send(ops);
        }
    }

    fn name(&self, u: Unit) -> String {
        match u {
            Unit::Step(i) => self.plan.steps[i].name.clone(),
            Unit::Child(i, k) => crate::names::UnitName::child(
                &self.plan.steps[i].name,
                &self.maps[&i].children[k].label,
            ),
        }
    }

    /// Runs the plan on a thread of its own (with a small runtime), so a
    /// unit that is the only one that can run (each step of a chain) runs
    /// right there, without handing it to another thread and back. Other
    /// units run on the caller's blocking pool. Dropping the returned future
    /// cancels the run.
    pub(crate) async fn run(mut self) -> anyhow::Result<Outcome> {
        let pool = tokio::runtime::Handle::try_current().ok();
        let cancel = self.opts.cancel.clone().unwrap_or_default().child_token();
        self.opts.cancel = Some(cancel.clone());
        let _cancel_on_drop = cancel.drop_guard();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("weir-scheduler".into())
            .spawn(move || {
                let out = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(local) => {
                        let pool = pool.unwrap_or_else(|| local.handle().clone());
                        local.block_on(self.run_here(pool))
                    }
                    Err(e) => Err(anyhow!("starting the scheduler's runtime: {e}")),
                };
                let _ = tx.send(out);
            })
            .map_err(|e| anyhow!("starting the scheduler thread: {e}"))?;
        rx.await
            .map_err(|_| anyhow!("the scheduler thread panicked"))?
    }

    async fn run_here(mut self, pool: tokio::runtime::Handle) -> anyhow::Result<Outcome> {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<RecordOp>>();
        // Set once the run has sent its last records: no more windows.
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let committer = {
            let rt = self.rt.clone();
            let ended = ended.clone();
            let durability = self.durability.clone();
            std::thread::Builder::new()
                .name("weir-commit".into())
                .spawn(move || -> anyhow::Result<()> {
                    while let Ok(msg) = rx.recv() {
                        // Group commit: let a burst of finished steps gather,
                        // then one flush and one transaction for all of them.
                        // The end of the run cuts the window short (unpark);
                        // other wake-ups (the channel's own, spurious ones)
                        // do not.
                        let deadline = Instant::now() + COMMIT_WINDOW;
                        while !ended.load(std::sync::atomic::Ordering::Acquire) {
                            let now = Instant::now();
                            if now >= deadline {
                                break;
                            }
                            std::thread::park_timeout(deadline - now);
                        }
                        let mut ops = msg;
                        while let Ok(more) = rx.try_recv() {
                            ops.extend(more);
                        }
                        // Objects first, then the records that name them.
                        // A failed flush is tried once more; if it fails
                        // again, the batch's successes become failures.
                        let store = &rt.inner.units.store();
                        if let Err(e) = store.sync().or_else(|_| {
                            std::thread::sleep(Duration::from_millis(10));
                            store.sync()
                        }) {
                            tracing::error!("flushing new objects to disk: {e}");
                            durability.downgrade(
                                &mut ops,
                                &format!("its outputs could not be made durable: flushing new objects to disk: {e}"),
                                &store.not_durable(),
                            );
                        }
                        durability.end(&mut ops);
                        rt.inner.records.commit(&ops)?;
                    }
                    Ok(())
                })
                .map_err(|e| anyhow!("starting the commit thread: {e}"))?
        };
        self.commit = Some(tx);

        let result = self.schedule(&pool).await;

        let outcome = result.map(|cancelled| self.finish(cancelled));
        self.commit = None;
        // Everything is sent: the last batch commits without waiting out a
        // window (after a commit under way, what arrived meanwhile goes next).
        ended.store(true, std::sync::atomic::Ordering::Release);
        committer.thread().unpark();
        // This thread has nothing else to do while the last batch commits.
        committer
            .join()
            .map_err(|_| anyhow!("the commit thread panicked"))?
            .map_err(|e| anyhow!("recording the run: {e:#}"))?;
        outcome.map(|o| self.durability.apply(o))
    }

    /// Runs units until none are left; returns whether the run was stopped early.
    ///
    /// Long on purpose: the run's event loop (launch, run inline or queue,
    /// wait, settle, drain on stop), whose local state (units in flight,
    /// workers started) lives only here.
    async fn schedule(
        &mut self,
        pool: &tokio::runtime::Handle,
    ) -> anyhow::Result<Option<RunState>> {
        for i in self.graph.roots() {
            self.on_ready(i)?;
        }
        let jobs = self.rt.inner.config.jobs;
        let cancel = self.opts.cancel.clone().unwrap_or_default();
        let queue = Arc::new(WorkQueue::default());
        let _close = CloseOnDrop(queue.clone());
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
        let mut workers = 0;
        // Units handed to the workers (queued or running), with the token
        // that interrupts each. Up to `jobs` run while as many more wait, so
        // a worker that finishes one starts the next without waiting for
        // this thread to wake up and hand it over.
        let mut in_flight: HashMap<Unit, CancellationToken> = HashMap::new();
        let mut stopped = None;
        'run: loop {
            while in_flight.len() < 2 * jobs {
                let Some(u) = self.graph.next_launchable() else {
                    break;
                };
                let job = self.job(u);
                // A cache hit finishes here, without a worker.
                let begun = job.begin();
                let looked_up = if self.cannot_hit(&job, &begun.key) {
                    Err((job, begun))
                } else {
                    job.try_cached(begun)
                };
                let (job, begun) = match looked_up {
                    Ok(report) => {
                        self.emit(RunEvent::StepStarted {
                            step: report.name.clone(),
                        });
                        self.graph.release(u);
                        self.finished(u, report)?;
                        continue;
                    }
                    Err(back) => back,
                };
                if in_flight.is_empty() && (self.graph.nothing_ready() || jobs == 1) {
                    // The only unit that can run now (a chain's next step,
                    // or any unit with one job): run it on this thread.
                    self.emit(RunEvent::StepStarted {
                        step: job.name.clone(),
                    });
                    let report = job.run_attempts(begun, &cancel).await;
                    let was_cancelled = report.state == StepState::Cancelled;
                    self.settle(u, report)?;
                    if was_cancelled {
                        stopped = Some(RunState::Cancelled);
                        break 'run;
                    }
                    if self.failed_fast() {
                        stopped = Some(RunState::Failed);
                        break 'run;
                    }
                    continue;
                }
                if workers < jobs {
                    let (q, tx) = (queue.clone(), done_tx.clone());
                    let fail_fast = self.opts.fail_fast;
                    drop(pool.spawn_blocking(move || work(&q, &tx, fail_fast)));
                    workers += 1;
                }
                let stop = CancellationToken::new();
                in_flight.insert(u, stop.clone());
                queue.push(Work {
                    unit: u,
                    job,
                    begun,
                    stop,
                });
            }
            if in_flight.is_empty() {
                break;
            }
            let done = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    stopped = Some(RunState::Cancelled);
                    break;
                }
                d = done_rx.recv() => d,
            };
            let (u, report) = done.ok_or_else(|| anyhow!("internal: the step workers stopped"))?;
            in_flight.remove(&u);
            self.settle(u, report)?;
            if self.failed_fast() {
                stopped = Some(RunState::Failed);
                break;
            }
        }
        // Units still waiting for a worker never started: back to `ready`,
        // where the end of the run accounts for them like any unstarted unit.
        for w in queue.close().into_iter().rev() {
            in_flight.remove(&w.unit);
            self.graph.release(w.unit);
            self.graph.push_front(w.unit);
        }
        if stopped.is_some() {
            for stop in in_flight.values() {
                stop.cancel();
            }
        }
        while !in_flight.is_empty() {
            let Some((u, report)) = done_rx.recv().await else {
                break;
            };
            in_flight.remove(&u);
            self.settle(u, report)?;
        }
        Ok(stopped)
    }

    /// A unit that ran (or was interrupted) is over: its slot is free, and
    /// it is recorded as finished, or as cancelled while running.
    fn settle(&mut self, u: Unit, report: StepReport) -> anyhow::Result<()> {
        self.graph.release(u);
        if report.state == StepState::Cancelled && report.attempts > 0 {
            // Stopped during an attempt: recorded with its logs and duration.
            self.keep_stopped(u, report);
            return Ok(());
        }
        if report.state == StepState::Cancelled {
            let why = report
                .error
                .unwrap_or_else(|| "cancelled while running".into());
            self.record_not_run(
                u,
                &report.name,
                StepState::Cancelled,
                why,
                Some(FailureKind::Cancelled),
            );
            Ok(())
        } else {
            self.finished(u, report)
        }
    }

    /// Whether a cache lookup for `job` under `key` is sure to miss, so is
    /// not made: one of its inputs was first stored by a step of this run,
    /// and no unit of this run with that key has finished. A cache entry
    /// names its inputs in its key, and one naming that input could only
    /// have been written by this run. (At worst a lookup is skipped that
    /// would have found an entry another process wrote in between, and the
    /// unit runs; its outputs are the same.)
    fn cannot_hit(&self, job: &StepJob, key: &CacheKey) -> bool {
        !self.created.is_empty()
            && job.inputs.values().any(|d| self.created.contains(d))
            && !self.ran_keys.contains(key)
    }

    /// Whether the run must stop now: a step failed under `fail_fast`, or
    /// the store could not make finished steps' outputs durable.
    fn failed_fast(&mut self) -> bool {
        if let Some(why) = self.durability.failure() {
            if self.first_error.is_none() {
                self.first_error = Some(why);
            }
            return true;
        }
        self.opts.fail_fast && self.first_error.is_some()
    }

    fn job(&self, u: Unit) -> StepJob {
        let (i, name, inputs, params) = match u {
            Unit::Step(i) => (
                i,
                self.plan.steps[i].name.clone(),
                self.inputs[i].clone(),
                self.plan.steps[i].params.clone(),
            ),
            Unit::Child(i, k) => {
                let c = &self.maps[&i].children[k];
                (i, self.name(u), c.inputs.clone(), c.params.clone())
            }
        };
        StepJob {
            ran_before: self.ran_before,
            rt: self.rt.clone(),
            plan: self.plan.clone(),
            index: i,
            name,
            run: self.run,
            component: self.components[i].clone(),
            inputs,
            params,
            commit: self.commit.clone(),
            on_event: self.opts.on_event.clone(),
            host_data: self.opts.host_data.clone(),
        }
    }

    /// Step `i`'s dependencies are all done and succeeded.
    fn on_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let plan = self.plan.clone();
        let s = &plan.steps[i];
        // Upstream outputs are known now.
        for (name, src) in &s.inputs {
            if let InputSource::Step { step, output } = src {
                let d = self
                    .report_of(step)
                    .and_then(|r| r.outputs.get(output).copied())
                    .ok_or_else(|| anyhow!("internal: output '{output}' of '{step}' missing"))?;
                self.inputs[i].insert(name.clone(), d);
            }
        }
        // Resume: keep what the earlier run already did.
        if let Some(prev) = self.previous.get(&s.name)
            && matches!(prev.state, StepState::Succeeded | StepState::Cached)
            && prev.outputs.keys().eq(s.outputs.iter())
        {
            let mut valid = true;
            for d in prev.outputs.values() {
                valid &= self.rt.inner.units.store().is_valid_tree(d)?;
            }
            if valid {
                let mut r = StepReport::not_run(&s.name, prev.state, None);
                r.outputs = prev.outputs.clone();
                r.metrics = prev
                    .metrics
                    .iter()
                    .map(|(name, value)| Metric {
                        name: name.clone(),
                        value: *value,
                    })
                    .collect();
                r.cache_key = prev.cache_key;
                self.emit(RunEvent::StepFinished {
                    step: s.name.clone(),
                    state: r.state,
                    duration: Duration::ZERO,
                    error: None,
                });
                return self.step_done(i, r);
            }
        }
        if let Some(c) = &s.when {
            match self.evaluate(c) {
                Ok((true, _)) => {}
                Ok((false, why)) => {
                    let why = format!("condition not met: {why}");
                    self.record_not_run(
                        Unit::Step(i),
                        &s.name,
                        StepState::Skipped,
                        why.clone(),
                        None,
                    );
                    self.skip_downstream(i, &s.name);
                    return Ok(());
                }
                Err(e) => {
                    let e = format!("cannot evaluate its condition `{c}`: {e}");
                    let kind = Some(FailureKind::Condition);
                    self.record_not_run(Unit::Step(i), &s.name, StepState::Failed, e, kind);
                    self.failed(i);
                    return Ok(());
                }
            }
        }
        if let Some(m) = &s.map {
            let children = match self.map_children(i, m) {
                Ok(c) => c,
                Err(e) => {
                    let e = format!("cannot list the items to map over: {e:#}");
                    let kind = Some(FailureKind::Storage);
                    self.record_not_run(Unit::Step(i), &s.name, StepState::Failed, e, kind);
                    self.failed(i);
                    return Ok(());
                }
            };
            let n = children.len();
            self.maps.insert(
                i,
                MapState {
                    reports: vec![None; n],
                    children,
                    done: 0,
                },
            );
            if n == 0 {
                return self.collect(i);
            }
            for k in 0..n {
                self.graph.push(Unit::Child(i, k));
            }
            return Ok(());
        }
        self.graph.push(Unit::Step(i));
        Ok(())
    }

    fn report_of(&self, step: &str) -> Option<&StepReport> {
        let i = *self.index.get(step)?;
        self.reports[i].as_ref()
    }

    fn map_children(&self, i: usize, m: &crate::plan::MapSpec) -> anyhow::Result<Vec<Child>> {
        let s = &self.plan.steps[i];
        let store = &self.rt.inner.units.store();
        let src = self
            .report_of(&m.step)
            .and_then(|r| r.outputs.get(&m.output).copied())
            .ok_or_else(|| {
                anyhow!(
                    "output '{}' of step '{}' is not available",
                    m.output,
                    m.step
                )
            })?;
        if m.json_list.is_none() {
            let tree = store.read_tree(&src)?;
            return Ok(map::over_folder(
                tree.entries,
                &self.inputs[i],
                &s.params,
                |item| store.put_bytes(&item.encode()),
            )?);
        }
        let list = read_list(store, &src, m)?;
        Ok(map::over_list(list, &self.inputs[i], &s.params))
    }

    /// Folds a map's finished children into the map step's outputs.
    fn collect(&mut self, i: usize) -> anyhow::Result<()> {
        let s = self.plan.steps[i].clone();
        let m = self
            .maps
            .get(&i)
            .ok_or_else(|| anyhow!("internal: no map state"))?;
        let reports: Vec<&StepReport> = m.reports.iter().flatten().collect();
        if let Some(bad) = reports.iter().find(|r| !r.ok()) {
            let e = format!(
                "map item '{}' {}: {}",
                bad.name,
                bad.state,
                bad.error.as_deref().unwrap_or("no error recorded")
            );
            let kind = bad.failure;
            self.record_not_run(Unit::Step(i), &s.name, StepState::Failed, e, kind);
            self.failed(i);
            return Ok(());
        }
        let store = &self.rt.inner.units.store();
        let mut outputs = BTreeMap::new();
        for o in &s.outputs {
            let mut tree = Tree::default();
            for (c, r) in m.children.iter().zip(&m.reports) {
                let d = r
                    .as_ref()
                    .and_then(|r| r.outputs.get(o).copied())
                    .ok_or_else(|| anyhow!("internal: map child without output"))?;
                tree.entries.push(Entry {
                    name: c.label.clone(),
                    kind: EntryKind::Folder,
                    digest: d,
                    bytes: store.read_tree(&d)?.bytes(),
                });
            }
            tree.sort();
            outputs.insert(o.clone(), store.put_bytes(&tree.encode())?);
        }
        let all_cached = reports.iter().all(|r| r.state == StepState::Cached);
        let state = if all_cached {
            StepState::Cached
        } else {
            StepState::Succeeded
        };
        let mut r = StepReport::not_run(&s.name, state, None);
        r.outputs = outputs;
        let now = now_ms();
        self.send(vec![RecordOp::Step(Box::new(StepRecord {
            run: self.run,
            step: s.name.clone(),
            state,
            attempt: 0,
            cache_key: None,
            component: Some(self.components[i].digest),
            started_ms: now,
            ended_ms: now,
            error: None,
            failure: None,
            outputs: r.outputs.clone(),
            inputs: self.inputs[i].clone(),
            metrics: Vec::new(),
            logs: Vec::new(),
            attempts: Vec::new(),
        }))]);
        self.emit(RunEvent::StepFinished {
            step: s.name.clone(),
            state,
            duration: Duration::ZERO,
            error: None,
        });
        self.step_done(i, r)
    }

    fn finished(&mut self, u: Unit, report: StepReport) -> anyhow::Result<()> {
        if report.state == StepState::Succeeded
            && let Some(k) = report.cache_key
        {
            self.ran_keys.insert(k);
        }
        self.created.extend(report.created.iter().copied());
        for (output, digest) in &report.outputs {
            self.emit(RunEvent::Artifact {
                step: report.name.clone(),
                output: output.clone(),
                digest: *digest,
            });
        }
        self.emit_finished(&report);
        match u {
            Unit::Step(i) => self.step_done(i, report),
            Unit::Child(i, k) => {
                self.children_done.push(report.clone());
                let m = self
                    .maps
                    .get_mut(&i)
                    .ok_or_else(|| anyhow!("internal: no map state"))?;
                m.reports[k] = Some(report);
                m.done += 1;
                if m.done == m.children.len() {
                    self.collect(i)?;
                }
                Ok(())
            }
        }
    }

    fn step_done(&mut self, i: usize, report: StepReport) -> anyhow::Result<()> {
        let ok = report.ok();
        self.reports[i] = Some(report);
        if !ok {
            self.graph.settle(i);
            self.failed(i);
            return Ok(());
        }
        for d in self.graph.succeeded(i) {
            self.on_ready(d)?;
        }
        Ok(())
    }

    fn failed(&mut self, i: usize) {
        let name = self.plan.steps[i].name.clone();
        if self.first_error.is_none() {
            let e = self.reports[i]
                .as_ref()
                .and_then(|r| r.error.clone())
                .unwrap_or_else(|| "unknown error".into());
            self.first_error = Some(format!("step '{name}' failed: {e}"));
        }
        self.skip_downstream(i, &name);
    }

    fn skip_downstream(&mut self, i: usize, name: &str) {
        for d in self.graph.downstream(i) {
            let dn = self.plan.steps[d].name.clone();
            let why = format!("upstream step '{name}' did not succeed");
            self.record_not_run(Unit::Step(d), &dn, StepState::Skipped, why, None);
        }
    }

    /// Records a unit that ends without a successful attempt of its own.
    fn record_not_run(
        &mut self,
        u: Unit,
        name: &str,
        state: StepState,
        why: String,
        failure: Option<FailureKind>,
    ) {
        let i = match u {
            Unit::Step(i) | Unit::Child(i, _) => i,
        };
        let now = now_ms();
        self.send(vec![RecordOp::Step(Box::new(StepRecord {
            run: self.run,
            step: name.to_string(),
            state,
            attempt: 0,
            cache_key: None,
            component: Some(self.components[i].digest),
            started_ms: now,
            ended_ms: now,
            error: Some(why.clone()),
            failure,
            outputs: BTreeMap::new(),
            inputs: BTreeMap::new(),
            metrics: Vec::new(),
            logs: Vec::new(),
            attempts: Vec::new(),
        }))]);
        let mut report = StepReport::not_run(name, state, Some(why));
        report.failure = failure;
        self.keep_stopped(u, report);
    }

    /// Tells watchers that the unit `u` stopped, as `report` says, and keeps
    /// the report; nothing waits on a stopped unit.
    fn keep_stopped(&mut self, u: Unit, report: StepReport) {
        self.emit_finished(&report);
        match u {
            Unit::Step(i) => {
                self.reports[i] = Some(report);
                self.graph.settle(i);
            }
            Unit::Child(_, _) => self.children_done.push(report),
        }
    }

    fn finish(&mut self, stopped: Option<RunState>) -> Outcome {
        // Whatever never got to run was cancelled.
        for i in 0..self.plan.steps.len() {
            if self.reports[i].is_none() {
                let name = self.plan.steps[i].name.clone();
                self.record_not_run(
                    Unit::Step(i),
                    &name,
                    StepState::Cancelled,
                    "the run was stopped before it started".into(),
                    Some(FailureKind::Cancelled),
                );
            }
        }
        let state = match stopped {
            Some(RunState::Cancelled) => RunState::Cancelled,
            _ if self.first_error.is_some() => RunState::Failed,
            Some(s) => s,
            None => RunState::Succeeded,
        };
        let error = match state {
            RunState::Cancelled => Some("cancelled".to_string()),
            _ => self.first_error.clone(),
        };
        self.send(vec![RecordOp::RunEnded {
            run: self.run,
            state,
            error: error.clone(),
        }]);
        let steps = self
            .reports
            .iter_mut()
            .map(|r| {
                r.take()
                    .unwrap_or_else(|| StepReport::not_run("?", StepState::Cancelled, None))
            })
            .collect();
        (steps, std::mem::take(&mut self.children_done), state, error)
    }

    /// Evaluates a gate: whether it holds, and the condition with its values.
    fn evaluate(&self, c: &Condition) -> Result<(bool, String), String> {
        gate::evaluate(c, self)
    }
}

/// What gates read: the finished steps' metrics and upstream JSON files.
impl gate::Facts for Scheduler {
    fn metrics(&self, step: &str) -> Result<&[Metric], String> {
        self.report_of(step)
            .map(|r| r.metrics.as_slice())
            .ok_or_else(|| format!("step '{step}' has not run"))
    }

    fn json_file(&self, step: &str, output: &str, file: &str) -> Result<Vec<u8>, String> {
        let store = &self.rt.inner.units.store();
        let d = self
            .report_of(step)
            .and_then(|r| r.outputs.get(output).copied())
            .ok_or_else(|| format!("output '{output}' of step '{step}' is not available"))?;
        let tree = store.read_tree(&d).map_err(|e| e.to_string())?;
        let e = tree
            .entries
            .iter()
            .find(|e| e.name == file && e.kind == EntryKind::File)
            .ok_or_else(|| format!("output '{output}' of step '{step}' has no file '{file}'"))?;
        if e.bytes > gate::JSON_MAX {
            return Err(format!(
                "'{file}' is {} bytes; conditions read JSON files up to 1 MiB",
                e.bytes
            ));
        }
        store.read_object(&e.digest).map_err(|e| e.to_string())
    }
}

/// The report of a unit stopped while it ran.
/// The message of a panic's payload (`panic!("...")` gives a `&str` or a
/// `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn cancelled_while_running(name: &str) -> StepReport {
    StepReport::not_run(
        name,
        StepState::Cancelled,
        Some("cancelled while running".into()),
    )
}

/// A unit handed to a worker thread.
struct Work {
    unit: Unit,
    job: StepJob,
    begun: Begun,
    stop: CancellationToken,
}

/// A finished unit, back from a worker.
type Done = (Unit, StepReport);

/// Units waiting for a worker; closed when the run stops scheduling.
#[derive(Default)]
struct WorkQueue {
    items: std::sync::Mutex<(VecDeque<Work>, bool)>,
    ready: std::sync::Condvar,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Work>, bool)> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, w: Work) {
        self.lock().0.push_back(w);
        self.ready.notify_one();
    }

    /// The next unit, or `None` once closed (what is still queued then
    /// never starts: [`WorkQueue::close`] hands it back).
    fn pop(&self) -> Option<Work> {
        let mut q = self.lock();
        loop {
            if q.1 {
                return None;
            }
            if let Some(w) = q.0.pop_front() {
                return Some(w);
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Stops the workers taking more units, leaving them queued.
    fn stop_taking(&self) {
        self.lock().1 = true;
        self.ready.notify_all();
    }

    /// Stops the workers; returns the units that never started.
    fn close(&self) -> Vec<Work> {
        let mut q = self.lock();
        q.1 = true;
        let left = q.0.drain(..).collect();
        drop(q);
        self.ready.notify_all();
        left
    }
}

/// Closes the queue however scheduling ends, so no worker waits forever.
struct CloseOnDrop(Arc<WorkQueue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A worker thread: runs queued units until the queue closes. With
/// `fail_fast`, a failed unit stops every worker taking units at once, so no
/// queued unit starts before the scheduler has seen the failure (it hands
/// them back when it closes the queue).
fn work(queue: &WorkQueue, done: &tokio::sync::mpsc::UnboundedSender<Done>, fail_fast: bool) {
    while let Some(Work {
        unit,
        job,
        mut begun,
        stop,
    }) = queue.pop()
    {
        // The unit starts now, not when it was queued.
        begun.started = Instant::now();
        begun.record.started_ms = now_ms();
        if let Some(f) = &job.on_event {
            f(&RunEvent::StepStarted {
                step: job.name.clone(),
            });
        }
        let name = job.name.clone();
        let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job.run_blocking(begun, stop)
        }))
        .unwrap_or_else(|_| {
            let mut r = StepReport::not_run(
                &name,
                StepState::Failed,
                Some("internal error: the step's worker panicked".into()),
            );
            r.failure = Some(FailureKind::Internal);
            r
        });
        if fail_fast && report.state == StepState::Failed {
            queue.stop_taking();
        }
        if done.send((unit, report)).is_err() {
            return;
        }
    }
}

thread_local! {
    /// A small runtime per blocking-pool thread, for the async wasmtime API.
    static ATTEMPT_RT: Result<tokio::runtime::Runtime, String> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string());
}

/// What one attempt used (when its guest ran).
#[derive(Default)]
struct Usage {
    peak_memory_bytes: Option<u64>,
    fuel_used: Option<u64>,
}

/// What a unit has computed before it decides between cache and execution.
struct Begun {
    key: CacheKey,
    started: Instant,
    record: StepRecord,
}

/// One unit's work in a run: cache check, then attempts.
struct StepJob {
    /// Whether the pipeline ran before (for early cutoff).
    ran_before: bool,
    rt: Runtime,
    plan: Arc<Plan>,
    index: usize,
    name: String,
    run: RunId,
    component: Arc<LoadedComponent>,
    inputs: BTreeMap<String, Digest>,
    params: serde_json::Value,
    commit: Option<Commit>,
    on_event: Option<EventSink>,
    host_data: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl StepJob {
    /// The cache key and the record this unit will finish with.
    fn begin(&self) -> Begun {
        let s = &self.plan.steps[self.index];
        let outs: Vec<&str> = s.outputs.iter().map(String::as_str).collect();
        let key = crate::unit::unit_key(
            &self.component,
            &self.params,
            &self.inputs,
            &outs,
            &s.limits,
        );
        Begun {
            key,
            started: Instant::now(),
            record: StepRecord {
                run: self.run,
                step: self.name.clone(),
                state: StepState::Running,
                attempt: 0,
                cache_key: Some(key),
                component: Some(self.component.digest),
                started_ms: now_ms(),
                ended_ms: 0,
                error: None,
                failure: None,
                outputs: BTreeMap::new(),
                inputs: self.inputs.clone(),
                metrics: Vec::new(),
                logs: Vec::new(),
                attempts: Vec::new(),
            },
        }
    }

    /// Finishes the unit from the cache if its policy allows and a valid
    /// entry exists; otherwise hands the job back.
    #[allow(clippy::result_large_err)]
    fn try_cached(self, mut b: Begun) -> Result<StepReport, (StepJob, Begun)> {
        let s = &self.plan.steps[self.index];
        if s.cache.mode != CacheMode::Normal {
            return Err((self, b));
        }
        let outs: Vec<&str> = s.outputs.iter().map(String::as_str).collect();
        match self.cached(&b.key, &outs, s.cache.expiry_ms) {
            Ok(Some((outputs, metrics))) => {
                b.record.state = StepState::Cached;
                b.record.outputs = outputs;
                b.record.metrics = metrics;
                Ok(self.finish(b.record, None, b.started))
            }
            Ok(None) => Err((self, b)),
            Err(e) => {
                tracing::warn!(step = %self.name, "cache lookup failed, running the step: {e:#}");
                Err((self, b))
            }
        }
    }

    /// Runs the attempts on the calling blocking-pool thread, with a small
    /// runtime of its own for the async wasmtime API, so guest code and its
    /// WASI host calls never occupy the scheduler's async workers. Cancelling
    /// `stop` stops the guest at its next epoch tick or host call; its
    /// staging folders are removed and the unit reports `cancelled`.
    fn run_blocking(self, b: Begun, stop: CancellationToken) -> StepReport {
        let name = self.name.clone();
        let report = ATTEMPT_RT.with(|local| match local {
            Ok(local) => Some(local.block_on(self.run_attempts(b, &stop))),
            Err(e) => {
                tracing::error!("no runtime for the attempt thread: {e}");
                None
            }
        });
        report.unwrap_or_else(|| cancelled_while_running(&name))
    }

    /// The attempts, with retries. Cancelling `stop` ends the attempt under
    /// way (its logs and duration are kept in the record) or the wait for
    /// the next one; the unit then ends `cancelled`.
    ///
    /// Long on purpose: the retry loop owns the record it fills attempt by
    /// attempt (logs, metrics, usage, the last error), so its parts stay in
    /// one place.
    async fn run_attempts(self, b: Begun, stop: &CancellationToken) -> StepReport {
        let Begun {
            key,
            started,
            mut record,
        } = b;
        let s = &self.plan.steps[self.index];
        let attempts = 1 + s.retry.retries;
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                let delay = s.retry.delay_before(attempt);
                if let Some(f) = &self.on_event {
                    f(&RunEvent::StepRetrying {
                        step: self.name.clone(),
                        attempt: attempt - 1,
                        error: last_error.clone(),
                        delay,
                    });
                }
                record.logs.push((
                    attempt - 1,
                    LogLine {
                        level: "weir".into(),
                        message: format!(
                            "attempt {} failed: {last_error}; retrying in {delay:?}",
                            attempt - 1
                        ),
                    },
                ));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => break,
                }
            }
            record.attempt = attempt;
            let attempt_started = now_ms();
            let mut usage = Usage::default();
            let outcome = {
                // A panic during the attempt (in a host capability, say)
                // fails this attempt like any error, so the step still
                // gets its record and the run goes on.
                let mut fut = Box::pin(self.attempt(&key, attempt, &mut record, stop, &mut usage));
                std::future::poll_fn(|cx| {
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        fut.as_mut().poll(cx)
                    })) {
                        Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
                        Ok(std::task::Poll::Ready(r)) => std::task::Poll::Ready(r),
                        Err(panic) => std::task::Poll::Ready(Err((
                            FailureKind::Internal,
                            format!(
                                "internal error: a panic while the step ran: {}",
                                panic_message(panic.as_ref())
                            ),
                        ))),
                    }
                })
                .await
            };
            let mut done = crate::records::AttemptRecord {
                attempt,
                started_ms: attempt_started,
                ended_ms: now_ms(),
                error: outcome.as_ref().err().map(|(_, e)| e.clone()),
                peak_memory_bytes: usage.peak_memory_bytes,
                fuel_used: usage.fuel_used,
            };
            if stop.is_cancelled() && outcome.is_err() {
                done.error = Some("cancelled while running".into());
                record.attempts.push(done);
                break;
            }
            record.attempts.push(done);
            match outcome {
                Ok((outputs, created)) => {
                    record.state = StepState::Succeeded;
                    record.outputs = outputs;
                    record.error = None;
                    let cache_op = (s.cache.mode != CacheMode::Disabled).then(|| RecordOp::Cache {
                        key,
                        outputs: record.outputs.clone(),
                        metrics: record.metrics.clone(),
                        run: self.run,
                        step: self.name.clone(),
                    });
                    // Early cutoff: the same outputs as the step's last success.
                    let early = self.ran_before
                        && self
                            .rt
                            .inner
                            .records
                            .previous_outputs(&self.plan.name, self.run, &self.name)
                            .unwrap_or_else(|e| {
                                tracing::warn!(step = %self.name, "reading earlier outputs: {e:#}");
                                None
                            })
                            .is_some_and(|prev| prev == record.outputs);
                    let mut report = self.finish(record, cache_op, started);
                    report.early_cutoff = early;
                    report.created = created;
                    return report;
                }
                Err((kind, e)) => {
                    last_error = e.clone();
                    record.error = Some(e);
                    record.failure = Some(kind);
                }
            }
        }
        if stop.is_cancelled() {
            record.state = StepState::Cancelled;
            record.error = Some("cancelled while running".into());
            record.failure = Some(FailureKind::Cancelled);
            return self.finish(record, None, started);
        }
        record.state = StepState::Failed;
        if attempts > 1 {
            record.error = Some(format!("{} (after {attempts} attempts)", last_error));
        }
        self.finish(record, None, started)
    }

    /// A valid cache entry's outputs and metrics, if any.
    #[allow(clippy::type_complexity)]
    fn cached(
        &self,
        key: &CacheKey,
        outs: &[&str],
        expiry_ms: Option<u64>,
    ) -> anyhow::Result<Option<(BTreeMap<String, Digest>, Vec<Metric>)>> {
        let inner = &self.rt.inner;
        let Some(entry) = inner.records.cache_lookup(key)? else {
            return Ok(None);
        };
        if let Some(exp) = expiry_ms
            && now_ms().saturating_sub(entry.created_ms) > exp as i64
        {
            return Ok(None);
        }
        let names_match = entry.outputs.len() == outs.len()
            && outs.iter().all(|o| entry.outputs.contains_key(*o));
        let mut valid = names_match;
        if valid {
            for d in entry.outputs.values() {
                if !inner.units.store().is_valid_tree(d)? {
                    valid = false;
                    break;
                }
            }
        }
        if !valid {
            inner.records.cache_forget(key)?;
            return Ok(None);
        }
        Ok(Some((entry.outputs, entry.metrics)))
    }

    /// One attempt: the unit as data ([`crate::unit::UnitSpec`]), executed
    /// by the runtime; its logs, metrics and usage go into `record`.
    async fn attempt(
        &self,
        key: &CacheKey,
        attempt: u32,
        record: &mut StepRecord,
        stop: &CancellationToken,
        usage: &mut Usage,
    ) -> Result<(BTreeMap<String, Digest>, Vec<Digest>), (FailureKind, String)> {
        let s = &self.plan.steps[self.index];
        let spec = crate::unit::UnitSpec {
            step: self.name.clone(),
            run: Some(self.run),
            component: self.component.digest,
            capabilities: self.component.capabilities.clone(),
            params_json: cache::canonical_json(&self.params),
            inputs: self.inputs.clone(),
            outputs: s.outputs.iter().cloned().collect(),
            limits: s.limits,
            seed: *key,
            attempt,
            tags: self.plan.routing_tags(s),
        };
        let watch = self.on_event.clone().map(|sink| {
            let step = self.name.clone();
            Arc::new(move |o: crate::exec::executor::Observed<'_>| match o {
                crate::exec::executor::Observed::Log(line) => sink(&RunEvent::StepLog {
                    step: step.clone(),
                    attempt,
                    line: line.clone(),
                }),
                crate::exec::executor::Observed::Metric(m) => sink(&RunEvent::StepMetric {
                    step: step.clone(),
                    attempt,
                    metric: m.clone(),
                }),
            }) as crate::exec::executor::Watch
        });
        let outcome = self
            .rt
            .inner
            .config
            .dispatch
            .dispatch(
                &self.rt.inner.units,
                &spec,
                &self.component,
                stop,
                watch,
                self.host_data.clone(),
            )
            .await;
        if let Some(sink) = &self.on_event {
            for line in outcome
                .logs
                .iter()
                .filter(|l| l.level == "stdout" || l.level == "stderr")
            {
                sink(&RunEvent::StepLog {
                    step: self.name.clone(),
                    attempt,
                    line: line.clone(),
                });
            }
        }
        usage.peak_memory_bytes = outcome.peak_memory_bytes;
        usage.fuel_used = outcome.fuel_used;
        record
            .logs
            .extend(outcome.logs.into_iter().map(|l| (attempt, l)));
        record.metrics = outcome.metrics;
        outcome.result.map(|outputs| (outputs, outcome.created))
    }

    fn finish(
        &self,
        mut record: StepRecord,
        cache_op: Option<RecordOp>,
        started: Instant,
    ) -> StepReport {
        record.ended_ms = now_ms();
        let report = StepReport {
            name: record.step.clone(),
            state: record.state,
            outputs: record.outputs.clone(),
            cache_key: record.cache_key,
            error: record.error.clone(),
            failure: record.failure,
            duration: started.elapsed(),
            attempts: record.attempt,
            metrics: record.metrics.clone(),
            early_cutoff: false,
            created: Vec::new(),
        };
        let register = self.plan.steps[self.index]
            .register
            .as_ref()
            .filter(|_| matches!(record.state, StepState::Succeeded | StepState::Cached))
            .and_then(|name| {
                let output = self.plan.steps[self.index].registered_output().ok()?;
                Some(RecordOp::RegisterModel {
                    name: name.clone(),
                    digest: *record.outputs.get(output)?,
                    run: self.run,
                    step: self.name.clone(),
                    metrics: record.metrics.clone(),
                })
            });
        let mut ops = vec![RecordOp::Step(Box::new(record))];
        ops.extend(cache_op);
        ops.extend(register);
        if let Some(c) = &self.commit {
            let _ = c.send(ops);
        }
        report
    }
}

/// The items a map over a JSON list maps over: the list in file
/// `m.json_list` of the output `src` (of step `m.step`). Shared by the
/// scheduler and [`crate::verify`], which rebuilds a child's params.
pub(crate) fn read_list(
    store: &crate::store::Store,
    src: &Digest,
    m: &crate::plan::MapSpec,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let file = m.json_list.as_deref().unwrap_or_default();
    let tree = store.read_tree(src)?;
    let e = tree
        .entries
        .iter()
        .find(|e| e.name == file && e.kind == EntryKind::File)
        .ok_or_else(|| {
            anyhow!(
                "output '{}' of step '{}' has no file '{file}'",
                m.output,
                m.step
            )
        })?;
    let bytes = store.read_object(&e.digest)?;
    serde_json::from_slice(&bytes).map_err(|err| {
        anyhow!(
            "'{file}' in output '{}' of step '{}' is not a JSON list: {err}",
            m.output,
            m.step
        )
    })
}
