//! `weir serve`: one process that discovers a project's pipelines, fires
//! their cron schedules, executes triggered and scheduled runs through the
//! same runtime API as `weir run`, and serves the REST API and the
//! dashboard. State lives in the store: runs in `weir.db`, schedule slots in
//! `serve.db`, the API token in `serve.token`.

mod api;
pub mod cli;
mod hooks;
pub mod metrics;
pub mod schedule;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_runtime::plan::ServeOptions;
use weir_runtime::records::LogLine;
use weir_runtime::{RunEvent, RunId, RunOptions, Runtime, TrustPolicy};

/// Arguments of `weir serve`.
#[derive(clap::Args)]
pub struct Args {
    /// The project folder: its pipeline scripts (*.rhai) are served [default: .]
    project: Option<PathBuf>,
    /// Address to listen on (loopback unless you say otherwise)
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Store folder [default: PROJECT/.weir]
    #[arg(long)]
    store: Option<PathBuf>,
    /// Steps to run at once
    #[arg(long, short)]
    jobs: Option<usize>,
    /// The API token [default: $WEIR_TOKEN, else the one in STORE/serve.token, made on first start]
    #[arg(long)]
    token: Option<String>,
    /// Another host name clients may use in Host/Origin (besides the bind address, localhost and 127.0.0.1)
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Send every step of the runs it starts to the cluster's workers
    /// (weir worker) through the queue in the --records database
    #[arg(long)]
    cluster: bool,
    /// Print the API's routes (method and path) and exit
    #[arg(long, hide = true)]
    list_routes: bool,
}

/// A pipeline script found in the project.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pipeline {
    /// The pipeline's name (from `pipeline("...")`), or the script's file
    /// name when it does not compile.
    pub name: String,
    /// The script, relative to the project folder.
    pub script: PathBuf,
    /// Its cron schedule.
    pub schedule: Option<String>,
    /// Time zone, catch-up, concurrency and hooks.
    pub serve: ServeOptions,
    /// Declared params and their defaults.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Number of steps.
    pub steps: usize,
    /// Models its steps register (to find circles of followers).
    #[serde(skip)]
    pub registers: Vec<String>,
    /// Why the script does not compile, if it does not.
    pub error: Option<String>,
}

/// A step's live state while its run is active.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveLog {
    /// Its position in the run's live log (for `?after=`).
    pub seq: u64,
    /// The step.
    pub step: String,
    /// The attempt.
    pub attempt: u32,
    /// The line.
    pub line: LogLine,
}

/// What the server knows of an active run beyond its records.
#[derive(Default)]
pub struct Live {
    /// Step name to state (`running`, or a final state's name).
    pub states: BTreeMap<String, String>,
    /// Log lines as they happen (the newest `MAX_LIVE_LINES`).
    pub logs: std::collections::VecDeque<LiveLog>,
    /// Lines seen in all.
    pub seq: u64,
    /// Bytes of message text in `logs`.
    pub bytes: usize,
    /// What the run is preparing (building or loading a component) before
    /// its first step starts.
    pub preparing: Option<String>,
    /// When each step started (ms since the epoch), for the timeline of
    /// steps still running.
    pub started: BTreeMap<String, i64>,
}

/// Lines of live log kept per active run (the records keep them all)...
const MAX_LIVE_LINES: usize = 20_000;
/// ...and bytes of their text: the oldest go first.
const MAX_LIVE_BYTES: usize = 8 << 20;

/// An active run.
pub struct ActiveRun {
    /// Cancels it.
    pub cancel: CancellationToken,
    /// Live states and logs.
    pub live: Mutex<Live>,
}

/// The server: long-lived, shared by the API handlers and the scheduler.
pub struct Server {
    /// The project folder (canonical).
    pub project: PathBuf,
    /// The runtime every run goes through.
    pub runtime: Runtime,
    /// The API token.
    pub token: String,
    /// Host names (with port) that requests may name in Host and Origin.
    pub allowed_hosts: Vec<String>,
    /// The base URL for links in notifications.
    pub base_url: String,
    pipelines: Mutex<BTreeMap<String, Pipeline>>,
    active: Mutex<HashMap<RunId, Arc<ActiveRun>>>,
    /// Runs admitted per pipeline and not yet over (preparing or running):
    /// `max_active_runs` is checked and counted under this one lock.
    admitted: Arc<Mutex<HashMap<String, usize>>>,
    /// Schedule slots fired (serve.db).
    pub slots: Arc<dyn schedule::SlotLog>,
    /// The cluster's queue, when the records are in PostgreSQL (its workers
    /// and depth are shown).
    pub queue: Option<Arc<dyn weir_runtime::cluster::UnitQueue>>,
    /// What `GET /metrics` reports.
    pub metrics: metrics::Metrics,
    /// What followers react to (successful runs, model versions)
    /// (by [`follow_ups`], a loop of its own: a run's task cannot start
    /// the next run itself without the futures naming each other).
    pub(crate) follow: tokio::sync::mpsc::UnboundedSender<FollowEvent>,
    tasks: TaskTracker,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

impl Server {
    /// Whether this server leads the scheduling among the servers sharing
    /// its records (always, with records of its own); an error counts as
    /// no, and is logged.
    pub async fn leads(&self) -> bool {
        let slots = self.slots.clone();
        match tokio::task::spawn_blocking(move || slots.lead()).await {
            Ok(Ok(lead)) => lead,
            Ok(Err(e)) => {
                tracing::warn!("taking the scheduling lead: {e:#}");
                false
            }
            Err(_) => false,
        }
    }
}

/// Why a request could not be served (status code and message).
#[derive(Debug)]
pub struct ApiError(pub axum::http::StatusCode, pub String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(axum::http::StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError(axum::http::StatusCode::NOT_FOUND, msg.into())
    }
    fn conflict(msg: impl Into<String>) -> ApiError {
        ApiError(axum::http::StatusCode::CONFLICT, msg.into())
    }
    fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e:#}"),
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::internal(e)
    }
}

/// Folders never searched for pipelines.
const SKIP_DIRS: &[&str] = &[".weir", "target", "node_modules", ".git"];

impl Server {
    /// Re-reads the project's scripts.
    pub fn rescan(&self) -> BTreeMap<String, Pipeline> {
        let mut found = discover(&self.project);
        for p in found.values_mut().filter(|p| p.error.is_none()) {
            p.error = match self.trust_for(&p.script) {
                Ok(trust) => hooks::problem(&p.serve, &trust),
                Err(e) => Some(format!("{e:#}")),
            };
        }
        *lock(&self.pipelines) = found.clone();
        found
    }

    /// The trust policy of the pipeline in `script` (relative to the
    /// served folder): its own project's `weir.toml` (the nearest one in
    /// its folder or above), read afresh, so an edited trust file counts
    /// from the next run; without one, the server's. A script reaches only
    /// its project (that file's folder, else the served folder).
    pub fn trust_for(&self, script: &Path) -> anyhow::Result<Arc<TrustPolicy>> {
        let dir = self
            .project
            .join(script)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.project.clone());
        match TrustPolicy::find_file(&dir) {
            Some(file) => Ok(Arc::new(TrustPolicy::from_file(&file)?)),
            None => Ok(self.runtime.trust().clone()),
        }
    }

    /// Runs `task` among the server's tasks (a graceful stop waits for it).
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// The pipelines as last scanned.
    pub fn pipelines(&self) -> BTreeMap<String, Pipeline> {
        lock(&self.pipelines).clone()
    }

    /// The active run `id`, if it is active.
    pub fn active(&self, id: RunId) -> Option<Arc<ActiveRun>> {
        lock(&self.active).get(&id).cloned()
    }

    /// Runs in progress and the steps running in them, for `/metrics`.
    pub fn activity(&self) -> metrics::Now {
        let active = lock(&self.active);
        let active_steps = active
            .values()
            .map(|a| {
                lock(&a.live)
                    .states
                    .values()
                    .filter(|s| matches!(s.as_str(), "running" | "retrying"))
                    .count()
            })
            .sum();
        metrics::Now {
            active_runs: active.len(),
            active_steps,
        }
    }

    /// Number of active runs of `pipeline` (admitted and not over,
    /// including those still preparing).
    pub fn active_count(&self, pipeline: &str) -> usize {
        lock(&self.admitted).get(pipeline).copied().unwrap_or(0)
    }

    /// Admits one more run of `pipeline` if fewer than `limit` are active,
    /// deciding and counting in one step; the admission lasts until the
    /// returned guard drops (when the run is over).
    fn admit(&self, pipeline: &str, limit: usize) -> Result<Admission, ApiError> {
        let mut admitted = lock(&self.admitted);
        let n = admitted.entry(pipeline.to_string()).or_insert(0);
        if *n >= limit {
            return Err(ApiError::conflict(format!(
                "pipeline '{pipeline}' already has {limit} active run(s) (max_active_runs {limit})"
            )));
        }
        *n += 1;
        Ok(Admission {
            admitted: Arc::clone(&self.admitted),
            pipeline: pipeline.to_string(),
        })
    }

    /// Starts a run of `pipeline` with `params` (`--param` text values),
    /// continuing run `resume` if given; a scheduled or backfilled run's
    /// slot (RFC 3339) is handed to a pipeline that declares a `slot` param.
    /// Returns when the run is recorded (or could not start).
    pub async fn trigger(
        self: &Arc<Self>,
        pipeline: &str,
        mut params: BTreeMap<String, String>,
        resume: Option<RunId>,
        origin: Origin,
    ) -> Result<RunId, ApiError> {
        let p = self
            .pipelines()
            .get(pipeline)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("there is no pipeline '{pipeline}'")))?;
        if let Some(e) = &p.error {
            return Err(ApiError::bad(format!(
                "pipeline '{pipeline}' cannot run: {e}"
            )));
        }
        if let Some(slot) = origin.slot()
            && p.params.contains_key("slot")
        {
            params.entry("slot".into()).or_insert(slot.to_string());
        }
        let given = params.clone();
        let trust = self
            .trust_for(&p.script)
            .map_err(|e| ApiError::bad(format!("{e:#}")))?;
        let script = self.project.join(&p.script);
        let plan =
            tokio::task::spawn_blocking(move || weir_dsl::compile_file_with(&script, &params))
                .await
                .map_err(ApiError::internal)?
                .map_err(|e| ApiError::bad(e.to_string()))?;
        let admission = self.admit(&plan.name, plan.serve.max_active_runs as usize)?;
        let run = Arc::new(ActiveRun {
            cancel: self.shutdown.child_token(),
            live: Mutex::new(Live::default()),
        });
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Result<RunId, String>>();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));
        let on_event = {
            let server = Arc::clone(self);
            let run = Arc::clone(&run);
            let pipeline = plan.name.clone();
            let started_tx = Arc::clone(&started_tx);
            Arc::new(move |e: &RunEvent| {
                if let RunEvent::RunStarted { run: id, .. } = e {
                    lock(&run.live).preparing = Some("preparing the run".into());
                    lock(&server.active).insert(*id, Arc::clone(&run));
                    if let Some(tx) = lock(&started_tx).take() {
                        let _ = tx.send(Ok(*id));
                    }
                    return;
                }
                let mut live = lock(&run.live);
                match e {
                    RunEvent::Preparing { what } => live.preparing = Some(what.clone()),
                    RunEvent::StepStarted { step } => {
                        live.preparing = None;
                        live.started
                            .insert(step.clone(), chrono::Utc::now().timestamp_millis());
                        live.states.insert(step.clone(), "running".into());
                    }
                    RunEvent::StepRetrying { step, .. } => {
                        live.states.insert(step.clone(), "retrying".into());
                    }
                    RunEvent::StepFinished {
                        step,
                        state,
                        duration,
                        ..
                    } => {
                        live.states.insert(step.clone(), state.to_string());
                        server.metrics.step_finished(&pipeline, *state, *duration);
                    }
                    RunEvent::StepLog {
                        step,
                        attempt,
                        line,
                    } => {
                        live.seq += 1;
                        let seq = live.seq;
                        live.bytes += line.message.len();
                        live.logs.push_back(LiveLog {
                            seq,
                            step: step.clone(),
                            attempt: *attempt,
                            line: line.clone(),
                        });
                        while live.logs.len() > MAX_LIVE_LINES || live.bytes > MAX_LIVE_BYTES {
                            let Some(old) = live.logs.pop_front() else {
                                break;
                            };
                            live.bytes -= old.line.message.len();
                        }
                    }
                    _ => {}
                }
            })
        };
        let opts = RunOptions {
            on_event: Some(on_event),
            cancel: Some(run.cancel.clone()),
            resume,
            trust: Some(trust.clone()),
            // The trigger answers with the run's number at once; building
            // and loading show as the run's `preparing` phase.
            record_first: true,
            ..RunOptions::default()
        };
        let server = Arc::clone(self);
        let run_handle = Arc::clone(&run);
        self.tasks.spawn(async move {
            let _admission = admission;
            let run = run_handle;
            let plan = Arc::new(plan);
            let result = server.runtime.run_shared(plan.clone(), opts).await;
            match result {
                Ok(report) => {
                    lock(&server.active).remove(&report.run);
                    server.metrics.run_finished(&plan.name, report.state);
                    if report.state == weir_runtime::RunState::Succeeded {
                        let registers = plan.steps.iter().filter_map(|s| s.register.clone());
                        let _ = server.follow.send(FollowEvent::Succeeded {
                            pipeline: plan.name.clone(),
                            run: report.run,
                            registers: registers.collect(),
                        });
                    }
                    tracing::info!(run = %report.run, state = %report.state, "run finished");
                    hooks::after_run(&server, &plan, &report, &trust).await;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::warn!("run of '{}' could not start: {msg}", plan.name);
                    // If it was recorded before failing, it is not active any more.
                    lock(&server.active).retain(|_, a| !Arc::ptr_eq(a, &run));
                    if let Some(tx) = lock(&started_tx).take() {
                        let _ = tx.send(Err(msg));
                    }
                }
            }
        });
        match started_rx.await {
            Ok(Ok(id)) => {
                let trigger = origin.trigger();
                if let Err(e) =
                    self.slots
                        .note_run(id.0, origin.source(), trigger.as_deref(), &given)
                {
                    tracing::warn!(run = %id, "noting the run's source: {e:#}");
                }
                Ok(id)
            }
            Ok(Err(msg)) => Err(ApiError::bad(msg)),
            Err(_) => Err(ApiError::internal("the run ended before it was recorded")),
        }
    }
}

/// What starts a run.
pub enum Origin {
    /// A person or a program, through the API (a trigger or a retry).
    Manual,
    /// The schedule, for the slot (RFC 3339) the run fills.
    Schedule(String),
    /// A backfill, for the slot the run fills.
    Backfill(String),
    /// A successful run (`RunId`) of a pipeline this one follows
    /// (`p.after_success`).
    Upstream(String, RunId),
    /// A model event this one follows (`p.after_model`), as text
    /// (`churn v3 registered by run 12`).
    Model(String),
    /// A folder it watches changed (`p.after_change`), as text
    /// (`data/incoming changed (content 1a2b3c4d5e6f)`).
    Watch(String),
}

impl Origin {
    /// The names [`Origin::source`] gives, as the runs list filters by them.
    pub const SOURCES: [&'static str; 6] = [
        "manual", "schedule", "backfill", "upstream", "model", "watch",
    ];

    /// The slot the run fills, if it fills one.
    fn slot(&self) -> Option<&str> {
        match self {
            Origin::Manual | Origin::Upstream(..) | Origin::Model(_) | Origin::Watch(_) => None,
            Origin::Schedule(slot) | Origin::Backfill(slot) => Some(slot),
        }
    }

    /// What started the run, as the API shows it (`source`).
    fn source(&self) -> &'static str {
        match self {
            Origin::Manual => Self::SOURCES[0],
            Origin::Schedule(_) => Self::SOURCES[1],
            Origin::Backfill(_) => Self::SOURCES[2],
            Origin::Upstream(..) => Self::SOURCES[3],
            Origin::Model(_) => Self::SOURCES[4],
            Origin::Watch(_) => Self::SOURCES[5],
        }
    }

    /// What exactly started the run, beyond its source.
    fn trigger(&self) -> Option<String> {
        match self {
            Origin::Upstream(pipeline, run) => Some(format!("{pipeline} run {run}")),
            Origin::Model(what) | Origin::Watch(what) => Some(what.clone()),
            _ => None,
        }
    }
}

/// One admitted run of a pipeline; dropping it ends the admission.
struct Admission {
    admitted: Arc<Mutex<HashMap<String, usize>>>,
    pipeline: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut admitted = lock(&self.admitted);
        if let Some(n) = admitted.get_mut(&self.pipeline) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                admitted.remove(&self.pipeline);
            }
        }
    }
}

/// What followers react to.
pub(crate) enum FollowEvent {
    /// A run of `pipeline` succeeded; its steps register `registers`.
    Succeeded {
        pipeline: String,
        run: RunId,
        registers: Vec<String>,
    },
    /// Version `version` of `model` was promoted to `stage`.
    Promoted {
        model: String,
        version: u32,
        stage: String,
    },
}

/// Starts the followers of each event: for a successful run, every
/// pipeline whose `after_success` names its pipeline (noted `upstream`),
/// and every pipeline whose `after_model` names a model the run registered
/// a new version of; for a promotion, those whose `after_model` names the
/// model and that stage (noted `model`). A follower at its
/// `max_active_runs` is not started (logged): like a manual trigger, it is
/// refused, not queued.
async fn follow_ups(
    server: Arc<Server>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<FollowEvent>,
) {
    while let Some(event) = events.recv().await {
        let starts = match event {
            FollowEvent::Succeeded {
                pipeline,
                run,
                registers,
            } => {
                let mut starts: Vec<(String, Origin)> =
                    followers(&server, |p| p.serve.after_success.contains(&pipeline))
                        .into_iter()
                        .map(|name| (name, Origin::Upstream(pipeline.clone(), run)))
                        .collect();
                for (model, version) in new_versions(&server, run, registers).await {
                    let what = format!("{model} v{version} registered by run {run}");
                    let picked = followers(&server, |p| {
                        p.serve
                            .after_model
                            .iter()
                            .any(|t| t.model == model && t.stage.is_none())
                    });
                    starts.extend(
                        picked
                            .into_iter()
                            .map(|name| (name, Origin::Model(what.clone()))),
                    );
                }
                starts
            }
            FollowEvent::Promoted {
                model,
                version,
                stage,
            } => {
                let what = format!("{model} v{version} promoted to {stage}");
                followers(&server, |p| {
                    p.serve
                        .after_model
                        .iter()
                        .any(|t| t.model == model && t.stage.as_deref() == Some(stage.as_str()))
                })
                .into_iter()
                .map(|name| (name, Origin::Model(what.clone())))
                .collect()
            }
        };
        for (name, origin) in starts {
            let why = origin.trigger().unwrap_or_default();
            match server.trigger(&name, BTreeMap::new(), None, origin).await {
                Ok(id) => {
                    tracing::info!(pipeline = %name, trigger = %why, run = %id, "follower started")
                }
                Err(e) => {
                    tracing::warn!(pipeline = %name, trigger = %why, "follower not started: {}", e.1)
                }
            }
        }
    }
}

/// The runnable pipelines `follows` picks.
fn followers(server: &Server, follows: impl Fn(&Pipeline) -> bool) -> Vec<String> {
    server
        .pipelines()
        .into_values()
        .filter(|p| p.error.is_none() && follows(p))
        .map(|p| p.name)
        .collect()
}

/// The model versions run `run` registered (a model whose version it
/// registered before, same digest, gets none).
async fn new_versions(server: &Server, run: RunId, models: Vec<String>) -> Vec<(String, u32)> {
    if models.is_empty() {
        return Vec::new();
    }
    let read = server.runtime.read_records(move |r| {
        let mut out = Vec::new();
        for m in models {
            for v in r.models(Some(&m))? {
                if v.run == run {
                    out.push((v.name, v.version));
                }
            }
        }
        Ok(out)
    });
    read.await.unwrap_or_else(|e| {
        tracing::warn!(%run, "reading the model versions a run registered: {e:#}");
        Vec::new()
    })
}

/// Marks pipelines whose `after_success` names no pipeline of the project,
/// or that follow each other in a circle (which would never stop).
fn check_followers(found: &mut BTreeMap<String, Pipeline>) {
    let names: Vec<String> = found.keys().cloned().collect();
    let found_names: std::collections::BTreeSet<String> = names.iter().cloned().collect();
    // p follows u: u's success starts p, or u registers a model whose new
    // versions p follows.
    let follows: BTreeMap<String, Vec<String>> = found
        .values()
        .map(|p| {
            let mut ups = p.serve.after_success.clone();
            for t in p.serve.after_model.iter().filter(|t| t.stage.is_none()) {
                ups.extend(
                    found
                        .values()
                        .filter(|u| u.registers.contains(&t.model))
                        .map(|u| u.name.clone()),
                );
            }
            (p.name.clone(), ups)
        })
        .collect();
    for p in found.values_mut().filter(|p| p.error.is_none()) {
        if let Some(missing) = p
            .serve
            .after_success
            .iter()
            .find(|u| !found_names.contains(*u))
        {
            p.error = Some(format!(
                "after_success names '{missing}', which is not a pipeline of this project (pipelines: {})",
                names.join(", ")
            ));
            continue;
        }
        // A circle through p: p follows u, u follows ..., ... follows p.
        let mut path = vec![p.name.clone()];
        if let Some(circle) = circle_from(&p.name, &p.name, &follows, &mut path, 0) {
            p.error = Some(format!(
                "after_success/after_model make a circle: {} (each run would start the next forever)",
                circle.join(" after ")
            ));
        }
    }
}

/// A path of `after_success` edges from `at` back to `start`, if any.
fn circle_from(
    start: &str,
    at: &str,
    follows: &BTreeMap<String, Vec<String>>,
    path: &mut Vec<String>,
    depth: usize,
) -> Option<Vec<String>> {
    if depth > follows.len() {
        return None;
    }
    for u in follows.get(at).into_iter().flatten() {
        if u == start {
            let mut circle = path.clone();
            circle.push(u.clone());
            return Some(circle);
        }
        if path.contains(u) {
            continue;
        }
        path.push(u.clone());
        if let Some(c) = circle_from(start, u, follows, path, depth + 1) {
            return Some(c);
        }
        path.pop();
    }
    None
}

/// Finds the project's pipeline scripts (up to 4 folders deep) and
/// compiles each to learn its name, schedule and params. A script that
/// declares no pipeline (a module other scripts import) is left out.
pub fn discover(project: &Path) -> BTreeMap<String, Pipeline> {
    let mut found = BTreeMap::new();
    let mut scripts = Vec::new();
    find_scripts(project, 0, &mut scripts);
    scripts.sort();
    for path in scripts {
        let rel = path.strip_prefix(project).unwrap_or(&path).to_path_buf();
        let p = match weir_dsl::compile_file(&path) {
            Ok(plan) => Pipeline {
                name: plan.name.clone(),
                script: rel,
                schedule: plan.schedule.clone(),
                serve: plan.serve.clone(),
                params: plan.params.clone(),
                steps: plan.steps.len(),
                registers: plan
                    .steps
                    .iter()
                    .filter_map(|s| s.register.clone())
                    .collect(),
                error: plan.schedule.as_deref().and_then(|c| {
                    schedule::Schedule::parse(c, plan.serve.timezone.as_deref())
                        .err()
                        .map(|e| e.to_string())
                }),
            },
            Err(e) => {
                let msg = e.to_string();
                if msg.contains("declares no pipeline") {
                    continue;
                }
                Pipeline {
                    name: rel.to_string_lossy().into_owned(),
                    script: rel,
                    schedule: None,
                    serve: ServeOptions::default(),
                    params: BTreeMap::new(),
                    steps: 0,
                    registers: Vec::new(),
                    error: Some(msg),
                }
            }
        };
        if let Some(other) = found.get(&p.name) {
            let other: &Pipeline = other;
            let msg = format!(
                "pipeline '{}' is declared by both {} and {}",
                p.name,
                other.script.display(),
                p.script.display()
            );
            found.insert(
                p.name.clone(),
                Pipeline {
                    error: Some(msg),
                    ..p
                },
            );
        } else {
            found.insert(p.name.clone(), p);
        }
    }
    check_followers(&mut found);
    for p in found.values_mut().filter(|p| p.error.is_none()) {
        if let Some(bad) = p.serve.after_change.iter().find(|d| {
            Path::new(d).components().any(|c| {
                !matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            })
        }) {
            p.error = Some(format!(
                "after_change: the folder must be inside the project, below the script's folder (no '..'), found {bad:?}"
            ));
        }
    }
    found
}

fn find_scripts(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if depth < 4 && !name.starts_with('.') && !SKIP_DIRS.contains(&name.as_ref()) {
                find_scripts(&path, depth + 1, out);
            }
        } else if ft.is_file() && name.ends_with(".rhai") {
            out.push(path);
        }
    }
}

/// The project folder (canonical; default `.`) and its store (default
/// `PROJECT/.weir`), for `weir serve`, `weir schedules` and `weir backfill`.
pub fn project_and_store(
    project: Option<PathBuf>,
    store: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let project = project
        .unwrap_or_else(|| PathBuf::from("."))
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("project folder: {e}"))?;
    let store = store.unwrap_or_else(|| project.join(".weir"));
    Ok((project, store))
}

/// Locks a mutex, going on with the data if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The token: `--token`, `$WEIR_TOKEN`, or the one kept in the store
/// (made on first start, 32 random bytes as hex, file mode 0600).
fn load_token(flag: Option<String>, store: &Path) -> anyhow::Result<(String, bool)> {
    if let Some(t) = flag.or_else(|| std::env::var("WEIR_TOKEN").ok()) {
        if t.len() < 16 {
            anyhow::bail!(
                "the API token must have at least 16 characters, found {}",
                t.len()
            );
        }
        return Ok((t, false));
    }
    let file = store.join("serve.token");
    if let Ok(t) = std::fs::read_to_string(&file) {
        let t = t.trim().to_string();
        if t.len() >= 16 {
            return Ok((t, false));
        }
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(store)?;
    let tmp = store.join(".serve.token.tmp");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(t.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &file)?;
    Ok((t, true))
}

/// Runs `weir serve`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.list_routes {
        for (method, path) in api::ROUTES {
            println!("{method} {path}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (project, store) = project_and_store(args.project.clone(), args.store.clone())?;
    let mut config = crate::commands::runtime_config(&project, &store, args.jobs, |_| Ok(()))?;
    if args.cluster {
        crate::commands::cluster_config(&mut config, args.jobs)?;
    }
    let runtime = Runtime::new(&config)?;
    // With records in PostgreSQL, the cluster's workers are shown.
    let queue = match crate::commands::records_url() {
        Some(_) => Some(crate::commands::cluster_queue("weir serve")?),
        None => None,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime.jobs().max(2))
        .enable_all()
        .build()?;
    let (token, made) = load_token(args.token.clone(), &store)?;
    let slots = schedule::open_slots(&store)?;

    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.bind))?;
        let addr = listener.local_addr()?;
        let mut allowed_hosts = vec![
            addr.to_string(),
            format!("localhost:{}", addr.port()),
            format!("127.0.0.1:{}", addr.port()),
            format!("[::1]:{}", addr.port()),
        ];
        allowed_hosts.extend(args.allow_hosts.iter().map(|h| {
            if h.contains(':') {
                h.clone()
            } else {
                format!("{h}:{}", addr.port())
            }
        }));
        let (follow, follow_rx) = tokio::sync::mpsc::unbounded_channel();
        let server = Arc::new(Server {
            project: project.clone(),
            runtime,
            token: token.clone(),
            allowed_hosts,
            base_url: format!("http://{addr}"),
            pipelines: Mutex::new(BTreeMap::new()),
            active: Mutex::new(HashMap::new()),
            admitted: Arc::default(),
            slots,
            queue,
            metrics: metrics::Metrics::new(&store),
            follow,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        });
        // Runs a killed server (or `weir run`) left `running` never end on
        // their own: they are marked interrupted, to be retried or cancelled.
        let rt = server.runtime.clone();
        match tokio::task::spawn_blocking(move || rt.records().interrupt_orphans()).await {
            Ok(Ok(gone)) if !gone.is_empty() => {
                let ids: Vec<String> = gone.iter().map(|r| r.to_string()).collect();
                println!(
                    "interrupted runs (their process ended without finishing them; retry or cancel them): {}",
                    ids.join(", ")
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("looking for interrupted runs: {e:#}"),
            Err(e) => tracing::warn!("looking for interrupted runs: {e}"),
        }
        let found = server.rescan();
        println!(
            "weir serve: {} pipeline(s) in {}, store {}",
            found.len(),
            project.display(),
            store.display()
        );
        for p in found.values() {
            match (&p.error, &p.schedule) {
                (Some(e), _) => println!(
                    "  {:<20} ERROR {}",
                    p.name,
                    weir_runtime::names::inert(&e.to_string(), true)
                ),
                (None, Some(s)) => println!("  {:<20} schedule {s}", p.name),
                (None, None) => println!("  {:<20} manual", p.name),
            }
        }
        println!("listening on http://{addr}");
        if made {
            println!(
                "a new API token was made and saved in {}",
                store.join("serve.token").display()
            );
        }
        println!("dashboard: http://{addr}/?token={token}");
        let scheduler = tokio::spawn(schedule::run_scheduler(Arc::clone(&server)));
        let followers = tokio::spawn(follow_ups(Arc::clone(&server), follow_rx));
        let watcher = tokio::spawn(watch::run_watcher(Arc::clone(&server)));

        let app = api::router(Arc::clone(&server));
        let shutdown = server.shutdown.clone();
        let signals = async move {
            let ctrl_c = tokio::signal::ctrl_c();
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
                _ = shutdown.cancelled() => {},
            }
            anyhow::Ok(())
        };
        // No Nagle delay: a small response written in two parts (headers,
        // then a streamed body) would otherwise wait for the client's
        // delayed ACK (about 40 ms).
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
        });
        let srv = axum::serve(listener, app).with_graceful_shutdown({
            let server = Arc::clone(&server);
            async move {
                let _ = signals.await;
                println!("shutting down: cancelling active runs");
                server.shutdown.cancel();
            }
        });
        srv.await?;
        // Running steps are cancelled (child tokens of `shutdown`); wait for
        // their runs to record it.
        scheduler.abort();
        followers.abort();
        watcher.abort();
        server.tasks.close();
        server.tasks.wait().await;
        println!("stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
