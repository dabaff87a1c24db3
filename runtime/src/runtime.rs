//! The [`Runtime`]: the long-lived object a host keeps, made from a
//! [`Config`]: the store and the engines (a [`UnitRunner`]), the records,
//! the trust policy. Runs start from it (`run.rs`); the scheduler holds a
//! clone for each run.

use crate::config::Config;
use crate::exec::executor::{Executor, LoadedComponent, Watch};
use crate::records::{Records, SqliteRecords};
use crate::store::Store;
use crate::trust::TrustPolicy;
use crate::unit::{UnitOutcome, UnitRunner, UnitSpec};
use anyhow::Context as _;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct Inner {
    /// The store, the engines and the step slots: what runs units here.
    pub(crate) units: UnitRunner,
    pub(crate) records: Arc<dyn Records>,
    pub(crate) config: Config,
    /// `config.trust`, shared by the runs that have no policy of their own.
    pub(crate) trust: Arc<TrustPolicy>,
}

/// The long-lived object that runs plans. Cheap to clone; clones share the
/// store, records and engine.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl Runtime {
    /// Opens the store and records and builds the engine, as `config` says
    /// (the runtime keeps a copy).
    pub fn new(config: &Config) -> anyhow::Result<Runtime> {
        let config = config.clone();
        let store = Store::open(&config.store_dir)
            .with_context(|| format!("cannot open the store at {}", config.store_dir.display()))?;
        let store = match &config.remote {
            Some(r) => store.with_remote(r.clone()),
            None => store,
        };
        let _ = store.clean_tmp();
        let records: Arc<dyn Records> = match &config.records {
            Some(r) => r.clone(),
            None => Arc::new(SqliteRecords::open(&config.store_dir.join("weir.db"))?),
        };
        let compiled = config.compiled_dir(&store);
        let executor = Executor::new(&config.engine_config(false), &compiled)?;
        let fuel_engine = config
            .fuel
            .then(|| (config.engine_config(true), compiled.clone()));
        Ok(Runtime {
            inner: Arc::new(Inner {
                units: UnitRunner::new(store, executor, fuel_engine, config.jobs),
                records,
                trust: Arc::new(config.trust.clone()),
                config,
            }),
        })
    }

    /// The content-addressed store.
    pub fn store(&self) -> &Store {
        self.inner.units.store()
    }

    /// The trust policy runs are checked against (unless a run brings its
    /// own, [`crate::RunOptions::trust`]).
    pub fn trust(&self) -> &Arc<TrustPolicy> {
        &self.inner.trust
    }

    /// The run records.
    pub fn records(&self) -> &dyn Records {
        &*self.inner.records
    }

    /// Reads the records without blocking an async worker: `read` runs on
    /// tokio's blocking pool with the records, and its answer is awaited.
    /// (The [`Runtime::records`] calls block their caller for as long as the
    /// backend takes: a SQLite page read, a PostgreSQL round trip, longer
    /// for a long run's steps or logs.) An error outside a tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo(rt: weir_runtime::Runtime) -> anyhow::Result<()> {
    /// let runs = rt.read_records(|r| r.runs(20)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_records<T, F>(&self, read: F) -> anyhow::Result<T>
    where
        F: FnOnce(&dyn Records) -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            anyhow::anyhow!("Runtime::read_records must be awaited inside a tokio runtime")
        })?;
        let records = self.inner.records.clone();
        handle
            .spawn_blocking(move || read(&*records))
            .await
            .map_err(|e| anyhow::anyhow!("a records read panicked: {e}"))?
    }

    /// The executor of steps without a fuel budget (for loading components
    /// directly).
    pub fn executor(&self) -> &Executor {
        self.inner.units.executor()
    }

    /// Steps that run at once across this runtime's runs
    /// ([`Config::jobs`]); a host sizes its async runtime from it.
    pub fn jobs(&self) -> usize {
        self.inner.config.jobs
    }

    /// What runs units in this process (the store, the engines and the
    /// step slots).
    pub fn units(&self) -> &UnitRunner {
        &self.inner.units
    }

    /// Runs one attempt of `spec` here ([`UnitRunner::execute`]), bypassing
    /// the configured dispatch.
    pub async fn execute(
        &self,
        spec: &UnitSpec,
        component: &Arc<LoadedComponent>,
        cancel: &CancellationToken,
        watch: Option<Watch>,
        host_data: Option<Arc<dyn std::any::Any + Send + Sync>>,
    ) -> UnitOutcome {
        self.inner
            .units
            .execute(spec, component, cancel, watch, host_data)
            .await
    }
}
