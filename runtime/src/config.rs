//! [`Config`]: how a [`crate::Runtime`] is set up (store, engine, trust,
//! records, remote, dispatch), with a default for every setting.
//!
//! In wasmtime's style: [`Config::new`] gives the defaults, each setter
//! takes `&mut self` and returns `&mut Self` so calls chain, and
//! [`crate::Runtime::new`] takes the finished `&Config`:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let mut config = weir_runtime::Config::new(".weir");
//! config.jobs(4).fuel(false);
//! let rt = weir_runtime::Runtime::new(&config)?;
//! # Ok(()) }
//! ```

use crate::capability::Capability;
use crate::exec::executor::EngineConfig;
use crate::limits::Limits;
use crate::records::Records;
use crate::remote::ObjectRemote;
use crate::store::Store;
use crate::trust::TrustPolicy;
use crate::unit::{Dispatch, LocalDispatch};
use std::path::PathBuf;
use std::sync::Arc;

/// How a [`crate::Runtime`] is set up. Every setting has a default; see
/// [`Config::new`] and each setter.
#[derive(Clone)]
pub struct Config {
    pub(crate) store_dir: PathBuf,
    pub(crate) jobs: usize,
    pub(crate) fuel: bool,
    pub(crate) pooling: bool,
    pub(crate) trust: TrustPolicy,
    pub(crate) gpu: weir_host_gpu::BackendChoice,
    pub(crate) capabilities: Vec<Capability>,
    pub(crate) records: Option<Arc<dyn Records>>,
    pub(crate) remote: Option<Arc<dyn ObjectRemote>>,
    pub(crate) dispatch: Arc<dyn Dispatch>,
    pub(crate) build_crates: bool,
    pub(crate) compile_cache: Option<PathBuf>,
    pub(crate) compile_cache_max_bytes: Option<u64>,
    pub(crate) max_limits: Option<Limits>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("store_dir", &self.store_dir)
            .field("jobs", &self.jobs)
            .field("fuel", &self.fuel)
            .field("pooling", &self.pooling)
            .field("trust", &self.trust)
            .field("gpu", &self.gpu)
            .field("capabilities", &self.capabilities)
            .field("records", &self.records.as_ref().map(|_| "custom"))
            .field("remote", &self.remote.as_ref().map(|_| "custom"))
            .field("build_crates", &self.build_crates)
            .field("compile_cache", &self.compile_cache)
            .field("max_limits", &self.max_limits)
            .finish()
    }
}

impl Config {
    /// Defaults for a store at `store_dir` (objects, views, compile cache,
    /// `weir.db`): `jobs` = cores, fuel budgets allowed, pooling on, no
    /// capability trusted, the GPU backend chosen automatically, records in
    /// the store's SQLite file, no remote, units run in this process, crates
    /// built, the store's own compile cache, no cap on limits.
    pub fn new(store_dir: impl Into<PathBuf>) -> Config {
        Config {
            store_dir: store_dir.into(),
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            fuel: true,
            pooling: true,
            trust: TrustPolicy::default(),
            gpu: weir_host_gpu::BackendChoice::Auto,
            capabilities: Vec::new(),
            records: None,
            remote: None,
            dispatch: Arc::new(LocalDispatch),
            build_crates: true,
            compile_cache: None,
            compile_cache_max_bytes: None,
            max_limits: None,
        }
    }

    /// Steps run at once (at least 1), across all the runs of one
    /// [`crate::Runtime`]: a step waits for a slot; the instance pool is
    /// sized from it. Default: the number of cores.
    pub fn jobs(&mut self, jobs: usize) -> &mut Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Allows per-step fuel budgets. Steps with a budget run on a second
    /// engine that counts fuel, started on first use; steps without one run
    /// on an engine that does not count (counting added 2-13% to the
    /// feature benchmark's step, BENCHMARKS.md). `false` refuses fuel
    /// budgets. Default: on.
    pub fn fuel(&mut self, allowed: bool) -> &mut Self {
        self.fuel = allowed;
        self
    }

    /// Uses wasmtime's pooling allocator. Default: on.
    pub fn pooling(&mut self, on: bool) -> &mut Self {
        self.pooling = on;
        self
    }

    /// Which components may be granted capabilities (the GPU, the host's
    /// own), and the caps on their limits. Default: none trusted.
    /// The config keeps a copy of `policy`.
    pub fn trust(&mut self, policy: &TrustPolicy) -> &mut Self {
        self.trust = policy.clone();
        self
    }

    /// Which backend serves the `gpu` capability. Default: CUDA when a
    /// device works, else the CPU.
    pub fn gpu(&mut self, choice: weir_host_gpu::BackendChoice) -> &mut Self {
        self.gpu = choice;
        self
    }

    /// Adds a host-defined capability (see [`crate::capability`]).
    pub fn capability(&mut self, c: Capability) -> &mut Self {
        self.capabilities.push(c);
        self
    }

    /// Keeps run records in `records` instead of the store's SQLite file
    /// (`weir.db`).
    pub fn records(&mut self, records: Arc<dyn Records>) -> &mut Self {
        self.records = Some(records);
        self
    }

    /// Pushes every new artifact to `remote` and fetches missing ones from
    /// it (see [`crate::remote`]). Default: none.
    pub fn remote(&mut self, remote: Arc<dyn ObjectRemote>) -> &mut Self {
        self.remote = Some(remote);
        self
    }

    /// Sends every attempt to `dispatch` instead of running it in this
    /// process directly (see [`crate::unit::Dispatch`]). Default:
    /// [`LocalDispatch`].
    pub fn dispatch(&mut self, dispatch: Arc<dyn Dispatch>) -> &mut Self {
        self.dispatch = dispatch;
        self
    }

    /// Whether a step's component may be a crate that weir builds with
    /// cargo. A host that must never run cargo (components given as `.wasm`
    /// files) turns it off: a crate source is then an error. Default: on.
    pub fn build_crates(&mut self, allowed: bool) -> &mut Self {
        self.build_crates = allowed;
        self
    }

    /// Keeps compiled components in `dir`, at most `max_bytes` of them if
    /// given (the entries used least recently go first when a new one would
    /// pass it). Default: the store's `compiled/` folder, unbounded. `weir`
    /// itself uses one folder per user, so a fresh store (a new project, a
    /// CI checkout) compiles nothing a run on the machine compiled before.
    pub fn compile_cache(&mut self, dir: impl Into<PathBuf>, max_bytes: Option<u64>) -> &mut Self {
        self.compile_cache = Some(dir.into());
        self.compile_cache_max_bytes = max_bytes;
        self
    }

    /// Upper bounds on every step's limits in every run of this runtime (a
    /// run's [`crate::RunOptions::max_limits`] can lower them further).
    /// Default: none.
    pub fn max_limits(&mut self, caps: Limits) -> &mut Self {
        self.max_limits = Some(caps);
        self
    }

    /// Where compiled components are kept: the configured cache, else the store's.
    pub(crate) fn compiled_dir(&self, store: &Store) -> PathBuf {
        self.compile_cache
            .clone()
            .unwrap_or_else(|| store.compiled_dir())
    }

    /// The engine settings of a runtime's executors: `fuel` for the one that
    /// runs steps with a fuel budget.
    pub(crate) fn engine_config(&self, fuel: bool) -> EngineConfig {
        EngineConfig {
            compile_cache_max_bytes: self.compile_cache_max_bytes,
            max_concurrent: self.jobs as u32,
            fuel,
            pooling: self.pooling,
            gpu: self.gpu,
            capabilities: self.capabilities.clone(),
        }
    }
}
