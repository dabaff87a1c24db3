//! [`Config`]: how a [`crate::Runtime`] is set up (store, engine, trust,
//! records, remote, dispatch), with a default for every setting.

use crate::exec::executor::EngineConfig;
use crate::records::Records;
use crate::store::Store;
use crate::trust::TrustPolicy;
use std::path::PathBuf;
use std::sync::Arc;

/// How a [`Runtime`] is set up. Every field has a default; see [`Config::new`].
#[derive(Clone)]
pub struct Config {
    /// The store folder (objects, views, compile cache, `weir.db`).
    pub store_dir: PathBuf,
    /// Steps run at once, across all the runs of one [`Runtime`] (a step
    /// waits for a slot; the instance pool is sized from it). Default: the
    /// number of cores.
    pub jobs: usize,
    /// Allow per-step fuel budgets. Steps with a budget run on a second
    /// engine that counts fuel, started on first use; steps without one run
    /// on an engine that does not count (counting added 2-13% to the
    /// feature benchmark's step, BENCHMARKS.md). `false` refuses fuel budgets. Default: on.
    pub fuel: bool,
    /// Use wasmtime's pooling allocator. Default: on.
    pub pooling: bool,
    /// Which components may be granted capabilities (the GPU). Default: none.
    pub trust: TrustPolicy,
    /// Which backend serves the `gpu` capability. Default: CUDA when a
    /// device works, else the CPU.
    pub gpu: weir_host_gpu::BackendChoice,
    /// Capabilities the embedding host adds (see [`crate::capability`]).
    pub capabilities: Vec<crate::capability::Capability>,
    /// Where run records go. Default (`None`): the embedded SQLite file
    /// `weir.db` in the store folder. Another backend implements
    /// [`Records`] and is set with [`Config::records`].
    pub records: Option<Arc<dyn Records>>,
    /// A second, shared home for artifacts (see [`crate::remote`]). Default: none.
    pub remote: Option<Arc<dyn crate::remote::ObjectRemote>>,
    /// Where attempts run ([`crate::unit::Dispatch`]). Default: in this
    /// process ([`crate::unit::LocalDispatch`]).
    pub dispatch: Arc<dyn crate::unit::Dispatch>,
    /// Whether a step's component may be a crate that weir builds with
    /// cargo. A host that must never run cargo (components given as
    /// `.wasm` files) turns it off: a crate source is then an error.
    /// Default: on.
    pub build_crates: bool,
    /// Where compiled components are kept. Default (`None`): the store's
    /// `compiled/` folder. `weir` itself uses one folder per user, so a
    /// fresh store (a new project, a CI checkout) compiles nothing a run on
    /// the machine compiled before.
    pub compile_cache: Option<PathBuf>,
    /// At most this many bytes in the compile cache: the entries used least
    /// recently go first when a new one would pass it. Default: no bound.
    pub compile_cache_max_bytes: Option<u64>,
    /// Upper bounds on every step's limits in every run of this runtime
    /// (a run's [`RunOptions::max_limits`] can lower them further). Default: none.
    pub max_limits: Option<crate::limits::Limits>,
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
            .field("max_limits", &self.max_limits)
            .finish()
    }
}

impl Config {
    /// Defaults for a store at `store_dir`: `jobs` = cores, fuel budgets
    /// allowed, pooling on.
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
            dispatch: Arc::new(crate::unit::LocalDispatch),
            build_crates: true,
            compile_cache: None,
            compile_cache_max_bytes: None,
            max_limits: None,
        }
    }

    /// Sends every attempt to `dispatch` instead of running it in this
    /// process directly (see [`crate::unit::Dispatch`]).
    pub fn dispatch(mut self, dispatch: Arc<dyn crate::unit::Dispatch>) -> Config {
        self.dispatch = dispatch;
        self
    }

    /// Keeps compiled components in `dir` (shared by stores; see
    /// [`Config::compile_cache`]), at most `max_bytes` of them if given.
    pub fn compile_cache(mut self, dir: impl Into<PathBuf>, max_bytes: Option<u64>) -> Config {
        self.compile_cache = Some(dir.into());
        self.compile_cache_max_bytes = max_bytes;
        self
    }

    /// Pushes every new artifact to `remote` and fetches missing ones from it.
    pub fn remote(mut self, remote: Arc<dyn crate::remote::ObjectRemote>) -> Config {
        self.remote = Some(remote);
        self
    }

    /// Keeps run records in `records` instead of the store's SQLite file.
    pub fn records(mut self, records: Arc<dyn Records>) -> Config {
        self.records = Some(records);
        self
    }

    /// Adds a host-defined capability.
    pub fn capability(mut self, c: crate::capability::Capability) -> Config {
        self.capabilities.push(c);
        self
    }

    /// Sets how many steps run at once (at least 1).
    pub fn jobs(mut self, jobs: usize) -> Config {
        self.jobs = jobs.max(1);
        self
    }
}

impl Config {
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
