//! Units on other machines: [`QueueDispatch`], the [`Dispatch`] that sends
//! every attempt to a [`UnitQueue`] and waits for its outcome, and
//! [`Worker`], what `weir worker` runs: it claims units from the queue and
//! executes them with a runtime of its own.
//!
//! The machines share three things and nothing else: the queue, the
//! records (both in PostgreSQL for `weir`) and the objects (a shared
//! remote, [`crate::remote`], or one store folder). A coordinator makes
//! everything a unit reads durable and pushes it to the remote before it
//! enqueues the unit (its component's bytes are an object too); a worker
//! fetches what its own store lacks, verifying each object, makes the
//! outputs durable and pushes them before it completes the unit; only the
//! coordinator writes step records. So a record still never names an
//! object a crash could lose, and a unit run twice (a worker that lost its
//! lease) is recorded once: the queue takes one completion per unit.
//!
//! A worker links a component with exactly the capabilities its unit
//! names (the coordinator applied the trust policy): whoever can write to
//! the queue can run code with those capabilities on the workers, so the
//! queue's database is as trusted as `weir.toml`.

use crate::exec::executor::{LoadedComponent, Observed, Watch};
use crate::records::FailureKind;
use crate::runtime::Runtime;
use crate::unit::{Dispatch, UnitFuture, UnitOutcome, UnitRunner, UnitSpec};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
pub use weir_core::queue::*;

/// How long a coordinator waits in one call (a cancellation does not wait
/// for it to return).
const WAIT_STEP: Duration = Duration::from_secs(2);

/// How long a coordinator keeps trying to reach the queue before it fails
/// the unit.
const QUEUE_PATIENCE: Duration = Duration::from_secs(30);

/// Sends every attempt to a [`UnitQueue`] for a [`Worker`] to run, and
/// waits for its outcome (set it with [`crate::Config::dispatch`]).
pub struct QueueDispatch {
    queue: Arc<dyn UnitQueue>,
}

impl QueueDispatch {
    /// Dispatches through `queue`.
    pub fn new(queue: Arc<dyn UnitQueue>) -> QueueDispatch {
        QueueDispatch { queue }
    }
}

impl Dispatch for QueueDispatch {
    fn ships_components(&self) -> bool {
        true
    }

    fn dispatch<'a>(
        &'a self,
        units: &'a UnitRunner,
        spec: &'a UnitSpec,
        _component: &'a Arc<LoadedComponent>,
        cancel: &'a CancellationToken,
        watch: Option<Watch>,
        _host_data: Option<Arc<dyn std::any::Any + Send + Sync>>,
    ) -> UnitFuture<'a> {
        Box::pin(async move {
            let outcome = self.send_and_wait(units, spec, cancel).await;
            // What a local attempt shows as it happens, shown as it arrives.
            if let Some(watch) = &watch {
                for line in outcome
                    .logs
                    .iter()
                    .filter(|l| l.level != "stdout" && l.level != "stderr")
                {
                    watch(Observed::Log(line));
                }
                for m in &outcome.metrics {
                    watch(Observed::Metric(m));
                }
            }
            outcome
        })
    }
}

impl QueueDispatch {
    async fn send_and_wait(
        &self,
        units: &UnitRunner,
        spec: &UnitSpec,
        cancel: &CancellationToken,
    ) -> UnitOutcome {
        // Everything the unit reads (inputs, the component) is durable and
        // on the remote before a worker looks for it.
        if let Err(e) = units.store().sync() {
            return UnitOutcome::failed(
                FailureKind::Storage,
                format!("cannot make the unit's inputs durable before sending it: {e}"),
            );
        }
        let unit = match serde_json::to_string(spec) {
            Ok(json) => QueuedUnit {
                key: spec.seed,
                run: spec.run,
                step: spec.step.clone(),
                tags: spec.tags.clone(),
                spec: json,
            },
            Err(e) => return UnitOutcome::failed(FailureKind::Internal, format!("{e}")),
        };
        let unit = Arc::new(unit);
        loop {
            let u = unit.clone();
            let ticket = match self.patiently(cancel, move |q| q.enqueue(&u)).await {
                Ok(t) => t,
                Err(o) => return o,
            };
            let finished = loop {
                let id = ticket.id;
                let waited = tokio::select! {
                    w = self.patiently(cancel, move |q| q.wait_finished(id, WAIT_STEP)) => w,
                    _ = cancel.cancelled() => Ok(None),
                };
                if cancel.is_cancelled() {
                    // A unit another run joined stays for that run.
                    if !ticket.joined {
                        let _ = self.patiently(cancel, move |q| q.cancel(id)).await;
                    }
                    return UnitOutcome::failed(
                        FailureKind::Cancelled,
                        "cancelled while a worker had it".into(),
                    );
                }
                match waited {
                    Ok(Some(f)) => break f,
                    Ok(None) => continue,
                    Err(o) => return o,
                }
            };
            return match finished {
                Finished::Done(json) => serde_json::from_str(&json).unwrap_or_else(|e| {
                    UnitOutcome::failed(
                        FailureKind::Internal,
                        format!("a worker sent an outcome this weir cannot read: {e}"),
                    )
                }),
                // The run this one joined was cancelled, not this one: again.
                Finished::Cancelled if ticket.joined => continue,
                Finished::Cancelled => {
                    UnitOutcome::failed(FailureKind::Cancelled, "cancelled in the queue".into())
                }
                Finished::Lost(why) => UnitOutcome::failed(
                    FailureKind::Internal,
                    format!("no worker finished it: {why}"),
                ),
            };
        }
    }

    /// Calls `f` on the queue off the async threads, retrying for
    /// [`QUEUE_PATIENCE`] while the queue cannot be reached (a database
    /// restarting), unless `cancel` fires.
    async fn patiently<T: Send + 'static>(
        &self,
        cancel: &CancellationToken,
        f: impl Fn(&dyn UnitQueue) -> anyhow::Result<T> + Send + Sync + Clone + 'static,
    ) -> Result<T, UnitOutcome> {
        let started = Instant::now();
        loop {
            let queue = self.queue.clone();
            let call = f.clone();
            let got = tokio::task::spawn_blocking(move || call(&*queue)).await;
            let e = match got {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => format!("the queue call panicked: {e}"),
            };
            if started.elapsed() > QUEUE_PATIENCE || cancel.is_cancelled() {
                return Err(UnitOutcome::failed(
                    FailureKind::Setup,
                    format!("lost the queue: {e}"),
                ));
            }
            tracing::warn!("the queue: {e}; trying again");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// What a [`Worker`] tells its host about each unit it runs.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    /// It claimed a unit and starts it.
    Started {
        /// The run the unit belongs to.
        run: Option<crate::records::RunId>,
        /// The step (or map child) as shown.
        step: String,
        /// How many times the unit was handed out, this time included.
        delivery: u32,
    },
    /// A unit ended here.
    Finished {
        /// The run the unit belongs to.
        run: Option<crate::records::RunId>,
        /// The step (or map child) as shown.
        step: String,
        /// `None` if it succeeded, else how it failed.
        failure: Option<FailureKind>,
        /// How long it ran here.
        duration: Duration,
        /// Whether the queue took its completion (`false`: the lease was
        /// lost and another worker has the unit).
        accepted: bool,
    },
}

/// Where a worker's host sees its [`WorkerEvent`]s.
pub type WorkerSink = Arc<dyn Fn(&WorkerEvent) + Send + Sync>;

/// How a [`Worker`] serves the queue.
#[derive(Clone)]
pub struct WorkerOptions {
    /// Its name in the cluster (unique; host and process id by default).
    pub name: String,
    /// The tags it serves: it claims units whose tags are all among these.
    pub tags: Vec<String>,
    /// Units it runs at once.
    pub jobs: usize,
    /// How long a claim lasts without a renewal; renewed every third of it.
    pub lease: Duration,
    /// Sees each unit start and end.
    pub on_event: Option<WorkerSink>,
}

impl std::fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("jobs", &self.jobs)
            .field("lease", &self.lease)
            .finish()
    }
}

impl WorkerOptions {
    /// A worker named `name` with no tags, one unit per core and a 30 s
    /// lease.
    pub fn new(name: impl Into<String>) -> WorkerOptions {
        WorkerOptions {
            name: name.into(),
            tags: Vec::new(),
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            lease: Duration::from_secs(30),
            on_event: None,
        }
    }
}

/// What a worker did, when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Units it ran and completed.
    pub completed: u64,
    /// Units it ran whose completion the queue refused (the lease was lost).
    pub lost: u64,
}

/// Claims units from a [`UnitQueue`] and runs them on its runtime's store
/// and engines.
pub struct Worker {
    runtime: Runtime,
    queue: Arc<dyn UnitQueue>,
    info: WorkerInfo,
    lease: Duration,
    on_event: Option<WorkerSink>,
    held: Mutex<Held>,
    /// Components loaded here, by digest, capabilities and engine (a unit
    /// of a component seen before neither reads nor hashes its bytes).
    loaded: Mutex<HashMap<ComponentKey, Arc<LoadedComponent>>>,
    /// Signalled when a unit stops running (a slot is free) or is completed.
    changed: Condvar,
    completed: AtomicU64,
    lost: AtomicU64,
}

/// A component as a worker loads it: digest, capabilities, fuel engine.
type ComponentKey = (crate::Digest, Vec<String>, bool);

/// The claims a worker holds.
#[derive(Default)]
struct Held {
    /// Every claim held (running, or ended and waiting to be completed):
    /// token to its cancellation. Their leases are renewed.
    tokens: HashMap<i64, CancellationToken>,
    /// How many of them are running (taking a slot).
    running: usize,
}

/// A unit that ended here, on its way to the completer.
struct Ended {
    claim: Claim,
    outcome: String,
    run: Option<crate::records::RunId>,
    step: String,
    failure: Option<FailureKind>,
    duration: Duration,
}

/// Completions sent in one transaction at most.
const COMPLETE_BATCH: usize = 256;

impl Worker {
    /// A worker running units with `runtime` (its store is the worker's
    /// read-through cache of the shared objects) from `queue`.
    pub fn new(runtime: Runtime, queue: Arc<dyn UnitQueue>, options: &WorkerOptions) -> Worker {
        let mut tags = options.tags.clone();
        tags.sort();
        tags.dedup();
        Worker {
            runtime,
            queue,
            info: WorkerInfo {
                name: options.name.clone(),
                tags,
                jobs: options.jobs.max(1) as u32,
            },
            lease: options.lease.max(Duration::from_millis(300)),
            on_event: options.on_event.clone(),
            held: Mutex::new(Held::default()),
            loaded: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            completed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, e: WorkerEvent) {
        if let Some(f) = &self.on_event {
            f(&e);
        }
    }

    /// Serves the queue until `drain` fires (then claims nothing more and
    /// returns once the units it holds have ended and are completed) or
    /// `stop` fires (then cancels them). Blocks the calling thread; each
    /// unit runs on a thread of its own, and one more completes ended units
    /// in batches (one transaction for all that ended meanwhile), so a slot
    /// is free again as soon as its unit ends.
    pub fn run(
        &self,
        drain: &CancellationToken,
        stop: &CancellationToken,
    ) -> anyhow::Result<WorkerReport> {
        self.queue
            .renew(&self.info, "running", &[], self.lease)
            .map_err(|e| e.context("registering with the queue"))?;
        let done = CancellationToken::new();
        let (ended, completions) = std::sync::mpsc::channel::<Ended>();
        std::thread::scope(|scope| {
            scope.spawn(|| self.heartbeat(drain, &done));
            scope.spawn(|| self.complete_ended(completions));
            let served = self.serve(scope, drain, stop, &ended);
            drop(ended);
            // Wait for the units held, cancelling them on `stop`.
            let mut held = self.held();
            while !held.tokens.is_empty() {
                if stop.is_cancelled() {
                    for c in held.tokens.values() {
                        c.cancel();
                    }
                }
                held = self
                    .changed
                    .wait_timeout(held, Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            drop(held);
            done.cancel();
            served
        })?;
        let _ = self.queue.stopped(&self.info);
        Ok(WorkerReport {
            completed: self.completed.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        })
    }

    /// The claim loop: waits for a free slot, claims as many units as there
    /// are free slots, and runs each on a thread.
    fn serve<'s>(
        &'s self,
        scope: &'s std::thread::Scope<'s, '_>,
        drain: &CancellationToken,
        stop: &CancellationToken,
        ended: &std::sync::mpsc::Sender<Ended>,
    ) -> anyhow::Result<()> {
        let jobs = self.info.jobs as usize;
        let over = || drain.is_cancelled() || stop.is_cancelled();
        let mut failing_since: Option<Instant> = None;
        while !over() {
            let free = {
                let mut held = self.held();
                while held.running >= jobs && !over() {
                    held = self
                        .changed
                        .wait_timeout(held, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                jobs.saturating_sub(held.running)
            };
            if over() {
                break;
            }
            let claims =
                match self
                    .queue
                    .claim(&self.info, free, self.lease, Duration::from_millis(500))
                {
                    Ok(c) => {
                        failing_since = None;
                        c
                    }
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        tracing::warn!("worker {}: claiming: {e:#}", self.info.name);
                        if since.elapsed() > Duration::from_secs(300) {
                            return Err(e.context("the queue has been unreachable for 5 minutes"));
                        }
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                };
            for claim in claims {
                let cancel = CancellationToken::new();
                {
                    let mut held = self.held();
                    held.tokens.insert(claim.token, cancel.clone());
                    held.running += 1;
                }
                let ended = ended.clone();
                scope.spawn(move || self.run_claim(claim, cancel, ended));
            }
        }
        Ok(())
    }

    /// Renews the held leases every third of the lease until `done`; a unit
    /// whose lease is lost or whose coordinator cancelled it is cancelled
    /// here, and every unit is cancelled once the queue has been
    /// unreachable for a whole lease (another worker may have them by now).
    fn heartbeat(&self, drain: &CancellationToken, done: &CancellationToken) {
        let every = self.lease / 3;
        let mut renewed = Instant::now();
        while !done.is_cancelled() {
            let tokens: Vec<i64> = self.held().tokens.keys().copied().collect();
            let state = if drain.is_cancelled() {
                "draining"
            } else {
                "running"
            };
            match self.queue.renew(&self.info, state, &tokens, self.lease) {
                Ok(r) => {
                    renewed = Instant::now();
                    let held = self.held();
                    for t in r.lost.iter().chain(&r.cancelled) {
                        if let Some(c) = held.tokens.get(t) {
                            c.cancel();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("worker {}: renewing leases: {e:#}", self.info.name);
                    if renewed.elapsed() >= self.lease {
                        for c in self.held().tokens.values() {
                            c.cancel();
                        }
                    }
                }
            }
            let until = Instant::now() + every;
            while Instant::now() < until && !done.is_cancelled() {
                std::thread::sleep(Duration::from_millis(20).min(every));
            }
        }
    }

    /// Runs one claimed unit, frees its slot, and hands it to the completer.
    fn run_claim(
        &self,
        claim: Claim,
        cancel: CancellationToken,
        ended: std::sync::mpsc::Sender<Ended>,
    ) {
        let started = Instant::now();
        let spec = serde_json::from_str::<UnitSpec>(&claim.spec);
        let (run, step) = match &spec {
            Ok(s) => (s.run, s.step.clone()),
            Err(_) => (None, format!("unit {}", claim.id)),
        };
        self.emit(WorkerEvent::Started {
            run,
            step: step.clone(),
            delivery: claim.deliveries,
        });
        let outcome = match spec {
            Ok(spec) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(self.execute(&spec, &cancel)),
                    Err(e) => UnitOutcome::failed(FailureKind::Setup, format!("{e}")),
                }
            }
            Err(e) => UnitOutcome::failed(
                FailureKind::Internal,
                format!("this worker cannot read the unit (another weir version?): {e}"),
            ),
        };
        let done = Ended {
            outcome: serde_json::to_string(&outcome).unwrap_or_default(),
            failure: outcome.result.as_ref().err().map(|(k, _)| *k),
            duration: started.elapsed(),
            claim,
            run,
            step,
        };
        self.held().running -= 1;
        self.changed.notify_all();
        if let Err(std::sync::mpsc::SendError(done)) = ended.send(done) {
            // No completer (it cannot happen while units run): give it up.
            self.held().tokens.remove(&done.claim.token);
            self.changed.notify_all();
        }
    }

    /// Completes ended units, all those waiting in one call, until every
    /// sender is gone.
    fn complete_ended(&self, ended: std::sync::mpsc::Receiver<Ended>) {
        while let Ok(first) = ended.recv() {
            let mut batch = vec![first];
            while batch.len() < COMPLETE_BATCH {
                match ended.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let items: Vec<(i64, i64, String)> = batch
                .iter()
                .map(|e| (e.claim.id, e.claim.token, e.outcome.clone()))
                .collect();
            let accepted = self.queue.complete_many(&items);
            if let Err(e) = &accepted {
                tracing::warn!(
                    "worker {}: completing {} unit(s): {e:#}",
                    self.info.name,
                    batch.len()
                );
            }
            for (i, e) in batch.into_iter().enumerate() {
                let ok = accepted.as_ref().is_ok_and(|a| a.get(i) == Some(&true));
                if ok {
                    self.completed.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                }
                self.emit(WorkerEvent::Finished {
                    run: e.run,
                    step: e.step,
                    failure: e.failure,
                    duration: e.duration,
                    accepted: ok,
                });
                self.held().tokens.remove(&e.claim.token);
            }
            self.changed.notify_all();
        }
    }

    /// Loads the unit's component (fetched by digest) with the capabilities
    /// the unit names, runs it, and makes its outputs durable (and pushes
    /// them to the remote).
    async fn execute(&self, spec: &UnitSpec, cancel: &CancellationToken) -> UnitOutcome {
        let units = self.runtime.units();
        let component = match self.load(spec) {
            Ok(c) => c,
            Err(e) => return UnitOutcome::failed(FailureKind::Setup, format!("{e:#}")),
        };
        // Inputs this worker's store lacks come from the remote, verified.
        for (name, d) in &spec.inputs {
            match units.store().is_valid_tree(d) {
                Ok(true) => {}
                Ok(false) => {
                    return UnitOutcome::failed(
                        FailureKind::Storage,
                        format!(
                            "input '{name}' ({}) is neither in this worker's store nor on the remote",
                            d.short()
                        ),
                    );
                }
                Err(e) => {
                    return UnitOutcome::failed(
                        FailureKind::Storage,
                        format!("input '{name}' ({}): {e}", d.short()),
                    );
                }
            }
        }
        let mut outcome = units.execute(spec, &component, cancel, None, None).await;
        if outcome.result.is_ok()
            && let Err(e) = units.store().sync()
        {
            outcome.result = Err((
                FailureKind::Storage,
                format!("its outputs could not be made durable: {e}"),
            ));
        }
        outcome
    }

    fn load(&self, spec: &UnitSpec) -> anyhow::Result<Arc<LoadedComponent>> {
        let key = (
            spec.component,
            spec.capabilities.clone(),
            spec.limits.fuel.is_some(),
        );
        let known = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(c) = known {
            return Ok(c);
        }
        let c = self.load_new(spec)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a long-lived worker sees many components.
        if loaded.len() >= 256 {
            loaded.clear();
        }
        loaded.insert(key, c.clone());
        Ok(c)
    }

    fn load_new(&self, spec: &UnitSpec) -> anyhow::Result<Arc<LoadedComponent>> {
        let units = self.runtime.units();
        let store = units.store();
        let d = spec.component;
        if !store.is_valid(&d)? {
            anyhow::bail!(
                "component {} is neither in this worker's store nor on the remote",
                d.short()
            );
        }
        let bytes = store.read_object(&d)?;
        let granted: BTreeSet<&str> = spec
            .capabilities
            .iter()
            .map(|c| c.split([':', '@']).next().unwrap_or(c))
            .collect();
        let executor = units.executor_for(spec.limits.fuel.is_some())?;
        let component =
            executor.load_bytes(&bytes, &format!("component {}", d.short()), &|_, cap| {
                granted.contains(cap)
            })?;
        if component.capabilities != spec.capabilities {
            anyhow::bail!(
                "the unit was planned with capabilities {:?}, and this worker links {:?} (another GPU backend?): it would not give the same outputs",
                spec.capabilities,
                component.capabilities
            );
        }
        Ok(component)
    }
}
