//! Runs: [`Runtime::start`], [`Runtime::run`] and what they do before the
//! scheduler takes over.
//!
//! One run: validate the plan; build and load every component (before any
//! record is written, so a compile error costs nothing); ingest host inputs;
//! open (or, with `resume`, reopen) a run record; then hand over to the
//! scheduler (`sched/`).

use crate::digest::Digest;
use crate::exec::executor::LoadedComponent;
use crate::limits::LimitsCap;
use crate::plan::{ComponentSource, InputSource, Plan};
use crate::records::{RecordOp, RunId, RunState};
use crate::sched::Scheduler;
// The types of a run's API, at the paths they have always had.
pub use crate::config::Config;
pub use crate::events::{EventSink, RunEvent, RunOptions, RunReport, StepReport};
pub use crate::runtime::Runtime;
pub use crate::trust::{CAPABILITIES, TRUST_FILE, TrustPolicy};
use anyhow::{Context as _, anyhow};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A run in progress, from [`Runtime::start`].
pub struct RunHandle {
    run: RunId,
    events: tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<RunReport>>,
}

impl RunHandle {
    /// The run's number (in the records at once).
    pub fn id(&self) -> RunId {
        self.run
    }

    /// The next event of the run, in order; `None` once the run has ended
    /// and every event was taken.
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        self.events.recv().await
    }

    /// Stops the run: nothing new starts, running steps are interrupted and
    /// recorded `cancelled`. [`RunHandle::finish`] resolves once that is recorded.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the run to end; resolves once its record and every step's
    /// are final, with what every step did.
    pub async fn finish(self) -> anyhow::Result<RunReport> {
        self.task
            .await
            .map_err(|e| anyhow!("the run's task ended abnormally: {e}"))?
    }
}

/// A step's component needs a capability the trust policy does not grant
/// it (or the step does not request): the run cannot start. The message says
/// what to do through the API; a front end adds its own way (`weir run
/// --trust DIGEST`).
#[derive(Debug, Clone)]
pub struct NotTrusted {
    /// "step 'x' (file:line:col): ".
    pub step: String,
    /// The capability.
    pub capability: String,
    /// The component.
    pub digest: Digest,
    /// Whether the step requests the capability (else it must, too).
    pub requested: bool,
    detail: String,
}

impl std::fmt::Display for NotTrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.digest.short();
        write!(f, "{}{}; ", self.step, self.detail)?;
        if self.requested {
            write!(
                f,
                "trust the component (TrustPolicy::trust(\"{short}\"), or a [[trust]] entry in {TRUST_FILE} naming its step crate)"
            )
        } else {
            write!(
                f,
                "request it with .requires(\"{}\") and trust the component (TrustPolicy::trust(\"{short}\"))",
                self.capability
            )
        }
    }
}

impl std::error::Error for NotTrusted {}

impl Runtime {
    /// Builds (if a crate) and loads the component of a source, resolved against `base`.
    /// `requested` are the capabilities its step asked for; each is linked
    /// only if the trust policy also grants it to the component. `fuel`: for
    /// a step with a fuel budget (loaded on the engine that counts fuel).
    pub fn load_component(
        &self,
        source: &ComponentSource,
        base: &Path,
        requested: &std::collections::BTreeSet<String>,
        fuel: bool,
    ) -> anyhow::Result<Arc<LoadedComponent>> {
        self.load_component_under(&self.inner.trust, source, base, requested, fuel, None)
    }

    /// [`Runtime::load_component`] under `trust`; `built`: a crate source's
    /// component, already built (and checked against `trust`) for this run.
    fn load_component_under(
        &self,
        trust: &TrustPolicy,
        source: &ComponentSource,
        base: &Path,
        requested: &std::collections::BTreeSet<String>,
        fuel: bool,
        built: Option<PathBuf>,
    ) -> anyhow::Result<Arc<LoadedComponent>> {
        let executor = self.inner.units.executor_for(fuel)?;
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let wasm = match source {
            ComponentSource::Crate(dir) if !self.inner.config.build_crates => {
                anyhow::bail!(
                    "its component is the crate {}, and this runtime builds no crates (Config::build_crates is off): give it a .wasm component file",
                    resolve(dir).display()
                )
            }
            ComponentSource::Crate(dir) => match built {
                Some(wasm) => wasm,
                None => {
                    let dir = resolve(dir);
                    // Before cargo runs the crate's build script.
                    trust.check_build(&dir).map_err(|e| anyhow!(e))?;
                    let stamps = self.inner.units.store().root().join("builds");
                    crate::builder::build_crate_cached(&dir, &stamps)?
                }
            },
            ComponentSource::Wasm(p) => resolve(p),
        };
        let (crate_dir, file) = match source {
            ComponentSource::Crate(dir) => (Some(resolve(dir)), None),
            ComponentSource::Wasm(p) => (None, Some(resolve(p))),
        };
        let component = executor.load(&wasm, &|d, cap| {
            requested.contains(cap) && trust.grants(cap, d, crate_dir.as_deref(), file.as_deref())
        })?;
        if self.inner.config.dispatch.ships_components() {
            self.ship_component(&wasm, &component.digest)?;
        }
        Ok(component)
    }

    /// Puts the component file `wasm` in the store as object `digest`, for
    /// workers on other machines to fetch.
    fn ship_component(&self, wasm: &Path, digest: &Digest) -> anyhow::Result<()> {
        let store = self.inner.units.store();
        if store.is_valid(digest)? {
            return Ok(());
        }
        let bytes = std::fs::read(wasm)
            .with_context(|| format!("cannot read component {}", wasm.display()))?;
        let stored = store.put_bytes(&bytes)?;
        anyhow::ensure!(
            stored == *digest,
            "component {} changed while it was loaded",
            wasm.display()
        );
        Ok(())
    }

    /// Loads step `s`'s component (off the async threads) for a step with
    /// (`fuel`) or without a fuel budget; errors name the step and, for a
    /// capability not granted, say how to grant it.
    async fn load_for(
        &self,
        trust: &Arc<TrustPolicy>,
        s: &crate::plan::StepPlan,
        plan: &Plan,
        built: &HashMap<PathBuf, PathBuf>,
        fuel: bool,
        emit: &(dyn Fn(RunEvent) + Sync),
    ) -> anyhow::Result<Arc<LoadedComponent>> {
        emit(RunEvent::Preparing {
            what: match &s.component {
                ComponentSource::Crate(p) => format!("building {}", p.display()),
                ComponentSource::Wasm(p) => format!("loading {}", p.display()),
            },
        });
        let this = self.clone();
        let source = s.component.clone();
        let base = plan.base_dir.clone();
        let req = s.capabilities.clone();
        let requested = &s.capabilities;
        let trust = trust.clone();
        let wasm = match &s.component {
            ComponentSource::Crate(dir) => built.get(&plan.resolve(dir)).cloned(),
            ComponentSource::Wasm(_) => None,
        };
        tokio::task::spawn_blocking(move || {
            this.load_component_under(&trust, &source, &base, &req, fuel, wasm)
        })
        .await
        .map_err(|e| anyhow!("component loader panicked: {e}"))?
        .map_err(
            |e| match e.downcast_ref::<crate::exec::executor::LoadError>() {
                Some(crate::exec::executor::LoadError::NotGranted {
                    digest, capability, ..
                }) => NotTrusted {
                    step: step_at(s),
                    capability: capability.clone(),
                    digest: *digest,
                    requested: requested.contains(capability),
                    detail: e.to_string(),
                }
                .into(),
                _ => e.context(step_at(s).trim_end_matches(": ").to_string()),
            },
        )
    }

    /// Builds the plan's stale step crates, one cargo invocation per
    /// workspace (off the async threads), reporting cargo's progress. Each
    /// crate is checked against the trust policy before any build script runs.
    /// Returns each crate's component by its resolved folder (empty where
    /// building together failed: each step then builds its own and reports
    /// its error).
    async fn build_stale_crates(
        &self,
        plan: &Plan,
        trust: &TrustPolicy,
        emit: &(dyn Fn(RunEvent) + Sync),
    ) -> anyhow::Result<HashMap<PathBuf, PathBuf>> {
        if !self.inner.config.build_crates {
            // Each crate source is refused when its component loads.
            return Ok(HashMap::new());
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        for s in &plan.steps {
            if let ComponentSource::Crate(dir) = &s.component {
                let dir = plan.resolve(dir);
                if !dirs.contains(&dir) {
                    trust
                        .check_build(&dir)
                        .map_err(|e| anyhow!("{}{e}", step_at(s)))?;
                    dirs.push(dir);
                }
            }
        }
        if dirs.is_empty() {
            return Ok(HashMap::new());
        }
        let stamps = self.inner.units.store().root().join("builds");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let build = tokio::task::spawn_blocking(move || {
            crate::builder::build_crates(&dirs, &stamps, &|e| {
                let event = match e {
                    crate::builder::BuildEvent::Started { workspace, crates } => {
                        RunEvent::Building {
                            workspace: workspace.to_path_buf(),
                            crates: crates.to_vec(),
                        }
                    }
                    crate::builder::BuildEvent::Progress(line) => RunEvent::Preparing {
                        what: format!("building: {line}"),
                    },
                    crate::builder::BuildEvent::Finished { crates, took } => RunEvent::Built {
                        crates: crates.to_vec(),
                        took,
                    },
                };
                let _ = tx.send(event);
            })
        });
        while let Some(e) = rx.recv().await {
            emit(e);
        }
        // A crate that fails to build is reported by the step that uses it.
        match build.await {
            Ok(result) => result.or_else(|e| {
                tracing::debug!("building the step crates together failed: {e:#}");
                Ok(HashMap::new())
            }),
            Err(e) => Err(anyhow!("the step builder panicked: {e}")),
        }
    }

    /// A shared hold on the store for a run, waiting (off the async
    /// threads) while `weir store gc` holds it.
    async fn lease(
        &self,
        emit: &(dyn Fn(RunEvent) + Sync),
    ) -> anyhow::Result<crate::store::StoreLease> {
        let held = |e: std::io::Error| anyhow!("cannot hold the store for the run: {e}");
        if let Some(lease) = self.inner.units.store().try_lease().map_err(held)? {
            return Ok(lease);
        }
        emit(RunEvent::Preparing {
            what: "waiting for `weir store gc` to finish".into(),
        });
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.inner.units.store().lease_blocking())
            .await
            .map_err(|e| anyhow!("waiting for the store panicked: {e}"))?
            .map_err(held)
    }

    /// Starts `plan` and returns at once with a [`RunHandle`]: the run's
    /// number (the run is recorded before its components are built, as with
    /// [`RunOptions::record_first`]), its events as a stream, cancellation,
    /// and its final report. The run goes on on the caller's tokio runtime
    /// whether the handle is kept or dropped. An `Err` means it could not
    /// start (no tokio runtime, an invalid plan, an unknown run to resume);
    /// a component that does not build is the recorded run's failure.
    pub async fn start(&self, plan: Arc<Plan>, mut opts: RunOptions) -> anyhow::Result<RunHandle> {
        tokio::runtime::Handle::try_current()
            .map_err(|e| anyhow!("Runtime::start must be awaited inside a tokio runtime: {e}"))?;
        opts.record_first = true;
        let cancel = opts
            .cancel
            .get_or_insert_with(CancellationToken::new)
            .clone();
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (id_tx, id_rx) = tokio::sync::oneshot::channel();
        let id_tx = std::sync::Mutex::new(Some(id_tx));
        let caller = opts.on_event.take();
        opts.on_event = Some(Arc::new(move |e: &RunEvent| {
            if let RunEvent::RunStarted { run, .. } = e
                && let Some(tx) = id_tx.lock().unwrap_or_else(|p| p.into_inner()).take()
            {
                let _ = tx.send(*run);
            }
            if let Some(f) = &caller {
                f(e);
            }
            let _ = events_tx.send(e.clone());
        }));
        let this = self.clone();
        let task = tokio::spawn(async move { this.run_shared(plan, opts).await });
        match id_rx.await {
            Ok(run) => Ok(RunHandle {
                run,
                events,
                cancel,
                task,
            }),
            // Ended before it was recorded: its error says why.
            Err(_) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(r)) => Err(anyhow!("run {} ended before it was announced", r.run)),
                Err(e) => Err(anyhow!("the run's task ended abnormally: {e}")),
            },
        }
    }

    /// Runs `plan` to the end and returns what every step did. An `Err` means
    /// the run could not start (invalid plan, a component that does not build
    /// or load, an unreadable input, an unknown run to resume); step failures
    /// are in the report.
    pub async fn run(&self, plan: &Plan, opts: RunOptions) -> anyhow::Result<RunReport> {
        self.run_shared(Arc::new(plan.clone()), opts).await
    }

    /// [`Runtime::run`] for a plan the caller keeps in an `Arc` (a host that
    /// runs the same plan again and again, or hands it over): the run shares
    /// it instead of copying it (a 10,000-step plan's copy takes tens of
    /// milliseconds). A copy is made only where limits must be capped.
    pub async fn run_shared(
        &self,
        plan: Arc<Plan>,
        mut opts: RunOptions,
    ) -> anyhow::Result<RunReport> {
        opts.on_event = opts.on_event.take().map(contained);
        // Steps run on tokio's blocking pool: say so instead of panicking.
        tokio::runtime::Handle::try_current().map_err(|e| {
            anyhow!(
                "Runtime::run must be awaited inside a tokio runtime (current-thread or multi-thread, with its timer enabled): {e}"
            )
        })?;
        let plan = self.capped(plan, &opts)?;
        let order = plan.validate()?;
        self.check_capability_names(&plan)?;
        let trust: Arc<TrustPolicy> = opts
            .trust
            .clone()
            .unwrap_or_else(|| self.inner.trust.clone());
        let emit = |e: RunEvent| {
            if let Some(f) = &opts.on_event {
                f(&e)
            }
        };
        // Held until the run ends: no garbage collection removes what it
        // reads or reuses.
        let _lease = self.lease(&emit).await?;
        let started = |run: RunId| {
            emit(RunEvent::RunStarted {
                run,
                steps: plan.steps.len(),
                resumed: opts.resume.is_some(),
            })
        };
        let (prepared, run_id, previous) = if opts.record_first {
            // Recorded first: the caller has a run number at once, and a
            // build or load that fails is the run's recorded error.
            let json = plan.to_json();
            let (run_id, previous) = self.open_run(
                &plan,
                &plan_digest(&plan.identity_json(), &[]),
                &json,
                opts.resume,
            )?;
            started(run_id);
            let prepared = match self.prepare(plan.clone(), &trust, &emit).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = self.inner.records.commit(&[RecordOp::RunEnded {
                        run: run_id,
                        state: RunState::Failed,
                        error: Some(format!("{e:#}")),
                    }]);
                    return Err(e);
                }
            };
            self.inner.records.commit(&[RecordOp::RunPrepared {
                run: run_id,
                plan_digest: prepared.digest,
                plan_json: prepared.json.clone(),
            }])?;
            (prepared, run_id, previous)
        } else {
            // Prepared first: a compile error records nothing.
            let prepared = self.prepare(plan.clone(), &trust, &emit).await?;
            let (run_id, previous) = self.open_run(
                &prepared.plan,
                &prepared.digest,
                &prepared.json,
                opts.resume,
            )?;
            started(run_id);
            (prepared, run_id, previous)
        };
        let plan_digest = prepared.digest;
        let sched = Scheduler::new(
            self.clone(),
            prepared.plan,
            order,
            prepared.components,
            prepared.host_inputs,
            run_id,
            previous,
            opts,
        )?;
        let (steps, children, state, error) = sched.run().await?;
        Ok(RunReport {
            run: run_id,
            state,
            steps,
            children,
            error,
            plan_digest,
        })
    }

    /// `plan` with every step's limits lowered to `max_limits` (the
    /// runtime's and the run's).
    fn capped(&self, mut plan: Arc<Plan>, opts: &RunOptions) -> anyhow::Result<Arc<Plan>> {
        let cap = match (&self.inner.config.max_limits, &opts.max_limits) {
            (Some(a), Some(b)) => Some(a.capped_by(b)),
            (a, b) => a.or(*b),
        };
        if let Some(cap) = &cap {
            cap.validate()
                .map_err(|e| anyhow!("max_limits (Config or RunOptions): {e}"))?;
            for s in &mut Arc::make_mut(&mut plan).steps {
                s.limits = s.limits.capped_by(cap);
            }
        }
        Ok(plan)
    }

    /// Refuses a step that requests a capability no one provides.
    fn check_capability_names(&self, plan: &Plan) -> anyhow::Result<()> {
        let known: Vec<&str> = CAPABILITIES
            .iter()
            .copied()
            .chain(self.inner.config.capabilities.iter().map(|c| c.name()))
            .collect();
        for s in &plan.steps {
            if let Some(cap) = s.capabilities.iter().find(|c| !known.contains(&c.as_str())) {
                anyhow::bail!(
                    "{}requests capability '{cap}', which does not exist (capabilities: {})",
                    step_at(s),
                    known.join(", ")
                );
            }
        }
        Ok(())
    }

    /// Builds and loads every component (granted what `trust` allows, with
    /// its limit caps applied to the plan) and stores the host inputs.
    ///
    /// Long on purpose: its phases (stale crates built, components loaded
    /// concurrently, trust checked, host inputs stored, the plan's record)
    /// share the progress events and the error context of one preparation.
    async fn prepare(
        &self,
        mut plan: Arc<Plan>,
        trust: &Arc<TrustPolicy>,
        emit: &(dyn Fn(RunEvent) + Sync),
    ) -> anyhow::Result<Prepared> {
        let n = plan.steps.len();
        let built = self.build_stale_crates(&plan, trust, emit).await?;
        // Components (before anything is recorded, unless `record_first`).
        type Requested<'a> = &'a std::collections::BTreeSet<String>;
        type Loaded = (Arc<LoadedComponent>, Option<LimitsCap>);
        let mut by_source: HashMap<(&ComponentSource, Requested<'_>, bool), Loaded> =
            HashMap::new();
        let mut components = Vec::with_capacity(n);
        let caps_limits = trust.caps_limits();
        let mut limit_caps: Vec<Option<LimitsCap>> = Vec::new();
        for s in &plan.steps {
            let requested = &s.capabilities;
            let fuel = s.limits.fuel.is_some();
            let (c, limit_cap) = match by_source.get(&(&s.component, requested, fuel)) {
                Some(c) => c.clone(),
                None => {
                    let c = self.load_for(trust, s, &plan, &built, fuel, emit).await?;
                    let limit_cap = if caps_limits {
                        let (crate_dir, file) = match &s.component {
                            ComponentSource::Crate(dir) => (Some(plan.resolve(dir)), None),
                            ComponentSource::Wasm(p) => (None, Some(plan.resolve(p))),
                        };
                        trust.limits_for(&c.digest, crate_dir.as_deref(), file.as_deref())
                    } else {
                        None
                    };
                    by_source.insert((&s.component, requested, fuel), (c.clone(), limit_cap));
                    (c, limit_cap)
                }
            };
            if caps_limits {
                limit_caps.push(limit_cap);
            }
            let (crate_dir, file) = match &s.component {
                ComponentSource::Crate(dir) => (Some(plan.resolve(dir)), None),
                ComponentSource::Wasm(p) => (None, Some(plan.resolve(p))),
            };
            if let Some(cap) = requested
                .iter()
                .find(|cap| !trust.grants(cap, &c.digest, crate_dir.as_deref(), file.as_deref()))
            {
                return Err(NotTrusted {
                    step: step_at(s),
                    capability: cap.clone(),
                    digest: c.digest,
                    requested: true,
                    detail: format!(
                        "requests capability '{cap}', which the trust policy does not grant to its component {}",
                        c.digest.short()
                    ),
                }
                .into());
            }
            components.push(c);
        }
        // The trust policy's caps on the limits of each step's component.
        if limit_caps.iter().any(Option::is_some) {
            let p = Arc::make_mut(&mut plan);
            for (s, cap) in p.steps.iter_mut().zip(&limit_caps) {
                if let Some(cap) = cap {
                    s.limits = cap.apply(&s.limits);
                }
            }
        }
        // A cap can give a step a fuel budget: such a step runs on the engine
        // that counts fuel, so load its component there too.
        let mut with_fuel: HashMap<(&ComponentSource, Requested<'_>), Arc<LoadedComponent>> =
            HashMap::new();
        for (s, c) in plan.steps.iter().zip(components.iter_mut()) {
            if s.limits.fuel.is_some() && !c.counts_fuel() {
                *c = match with_fuel.get(&(&s.component, &s.capabilities)) {
                    Some(c) => c.clone(),
                    None => {
                        let loaded = self.load_for(trust, s, &plan, &built, true, emit).await?;
                        with_fuel.insert((&s.component, &s.capabilities), loaded.clone());
                        loaded
                    }
                };
            }
        }

        // Host inputs.
        let mut host_inputs: Vec<BTreeMap<String, Digest>> = vec![BTreeMap::new(); n];
        let mut ingested: HashMap<PathBuf, Digest> = HashMap::new();
        for (i, s) in plan.steps.iter().enumerate() {
            for (name, src) in &s.inputs {
                match src {
                    InputSource::Path(p) => {
                        let p = plan.resolve(p);
                        trust
                            .check_input(&p)
                            .map_err(|e| anyhow!("{}input '{name}' {e}", step_at(s)))?;
                        let d = match ingested.get(&p) {
                            Some(d) => *d,
                            None => {
                                let d = self.inner.units.store().ingest_path(&p).map_err(|e| {
                                    anyhow!("{}input '{name}' cannot be read: {e}", step_at(s))
                                })?;
                                ingested.insert(p, d);
                                d
                            }
                        };
                        host_inputs[i].insert(name.clone(), d);
                    }
                    InputSource::Artifact(d) => {
                        if !self.inner.units.store().is_valid_tree(d)? {
                            anyhow::bail!(
                                "{}input '{name}' names artifact {d}, which is not in the store (or is corrupt)",
                                step_at(s)
                            );
                        }
                        host_inputs[i].insert(name.clone(), *d);
                    }
                    InputSource::Step { .. } => {}
                }
            }
        }

        let json = plan.to_json();
        let digest = if plan.has_serve_settings() {
            plan_digest(&plan.identity_json(), &components)
        } else {
            plan_digest(&json, &components)
        };
        Ok(Prepared {
            plan,
            components,
            host_inputs,
            json,
            digest,
        })
    }

    /// The run record: a new one, or `resume`'s reopened (with its steps).
    fn open_run(
        &self,
        plan: &Plan,
        plan_digest: &Digest,
        plan_json: &str,
        resume: Option<RunId>,
    ) -> anyhow::Result<(RunId, HashMap<String, crate::records::StepSummary>)> {
        let records = self.inner.records.clone();
        let mut previous = HashMap::new();
        let run_id = match resume {
            Some(id) => {
                let old = records
                    .run(id)?
                    .ok_or_else(|| anyhow!("there is no run {id} to resume (see `weir runs`)"))?;
                if old.pipeline != plan.name {
                    anyhow::bail!(
                        "run {id} is of pipeline '{}', not '{}'; resume it with its own script",
                        old.pipeline,
                        plan.name
                    );
                }
                for s in records.steps(id)? {
                    previous.insert(s.step.clone(), s);
                }
                records.reopen_run(id)?;
                id
            }
            None => records.begin_run(&plan.name, plan_digest, plan_json)?,
        };
        Ok((run_id, previous))
    }
}

/// A run's components and inputs, ready to schedule.
struct Prepared {
    plan: Arc<Plan>,
    components: Vec<Arc<LoadedComponent>>,
    host_inputs: Vec<BTreeMap<String, Digest>>,
    json: String,
    digest: Digest,
}

/// The host's event callback, with a panic inside it contained and logged:
/// a bug in the callback must not stop the run or leave its records
/// unfinished (the scheduler calls it from its own thread).
fn contained(f: EventSink) -> EventSink {
    Arc::new(move |e: &RunEvent| {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(e))).is_err() {
            tracing::error!("the run's event callback panicked; the run goes on");
        }
    })
}

/// A plan's identity: its JSON without serve settings
/// ([`Plan::identity_json`], deterministic: the plan holds no hash maps and
/// JSON objects keep their keys sorted) plus every step's component digest.
fn plan_digest(plan_json: &str, components: &[Arc<LoadedComponent>]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(plan_json.as_bytes());
    for c in components {
        h.update(c.digest.as_bytes());
    }
    Digest::from(h.finalize())
}

/// "step 'x' (file:line:col): ", the prefix of errors about a step.
pub(crate) fn step_at(s: &crate::plan::StepPlan) -> String {
    match &s.origin {
        Some(o) => format!("step '{}' ({o}): ", s.name),
        None => format!("step '{}': ", s.name),
    }
}
