//! The state of one attempt's wasmtime `Store` ([`HostState`]): its WASI
//! context, resource table, memory limiter (the guest's linear memory and
//! what the host keeps for it), captured logs and metrics, the output
//! watch, its mounts, and the state of granted host capabilities. Weir's
//! own imports (`log`, `metrics`) are implemented on it here; host
//! capabilities and the `gpu` import reach it through this module, not
//! through the executor.

use crate::exec::bindings;
use crate::records::{LogLine, Metric};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Something a guest recorded, shown to a [`Watch`] as it happens.
#[derive(Debug)]
pub enum Observed<'a> {
    /// A log line.
    Log(&'a LogLine),
    /// A metric value.
    Metric(&'a Metric),
}

/// A callback that sees a guest's log lines and metrics live.
pub type Watch = Arc<dyn Fn(Observed<'_>) + Send + Sync>;

/// Name to host folder, for a step's inputs and for its outputs.
#[derive(Default)]
pub(crate) struct Mounts {
    pub(crate) inputs: Vec<(String, PathBuf)>,
    pub(crate) outputs: Vec<(String, PathBuf)>,
}

/// Per-store host state.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) log_cap: usize,
    pub(crate) watch: Option<Watch>,
    pub(crate) logs_dropped: u64,
    /// Bytes of log text and metric names kept.
    pub(crate) log_bytes: usize,
    pub(crate) metrics: Vec<Metric>,
    pub(crate) deadline: Instant,
    pub(crate) timed_out: bool,
    pub(crate) quota: OutputWatch,
    /// The step's inputs and outputs: name to host folder.
    pub(crate) mounts: Mounts,
    /// The training backend, when the gpu capability is granted.
    pub(crate) gpu: Option<Arc<dyn weir_host_gpu::Backend>>,
    /// Per-attempt state of granted host capabilities.
    pub(crate) extensions: Vec<Box<dyn std::any::Any + Send>>,
}

/// The host was asked to hold more for a guest than its step's memory
/// limit leaves (see [`HostState::charge`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "over the step's memory limit of {limit} bytes: the guest's memory holds {guest} bytes and the host {host} bytes for it, and {asked} more were asked for"
)]
pub struct OverMemoryLimit {
    /// The step's memory limit.
    pub limit: u64,
    /// The guest's linear memory.
    pub guest: u64,
    /// What the host already holds for it.
    pub host: u64,
    /// What was asked for.
    pub asked: u64,
}

/// What the host counts for one kept log line or metric beyond its text.
const RECORD_OVERHEAD: u64 = 64;

impl HostState {
    /// The per-attempt state of type `T` that a host capability granted to
    /// this step declared with [`crate::capability::Capability::state`].
    pub fn extension<T: std::any::Any>(&mut self) -> Option<&mut T> {
        self.extensions
            .iter_mut()
            .find_map(|e| e.downcast_mut::<T>())
    }

    /// Counts `bytes` that the host keeps on this guest's behalf (a
    /// capability's buffers or results) against the step's memory limit,
    /// which the guest's linear memory shares: the guest and everything the
    /// host holds for it stay within the one limit. Refused (and nothing
    /// counted) when they would not; give it back with
    /// [`HostState::release`] when the host lets go of it.
    pub fn charge(&mut self, bytes: u64) -> Result<(), OverMemoryLimit> {
        self.limiter.charge(bytes)
    }

    /// Gives back `bytes` counted by [`HostState::charge`].
    pub fn release(&mut self, bytes: u64) {
        self.limiter.host = self.limiter.host.saturating_sub(bytes);
    }

    /// Bytes the guest may still take, in linear memory or held by the host.
    pub fn room(&self) -> u64 {
        self.limiter
            .limit
            .saturating_sub(self.limiter.used + self.limiter.host)
    }

    /// Keeps one log line (already cut to its limit) if the line limit and
    /// the memory budget allow, else counts it as dropped.
    pub(crate) fn log_line(&mut self, level: bindings::log::Level, message: String) {
        use bindings::log::Level;
        if self.logs.len() >= self.log_cap
            || self.log_bytes + message.len() > crate::limits::MAX_LOG_BYTES
            || self.charge(message.len() as u64 + RECORD_OVERHEAD).is_err()
        {
            self.logs_dropped += 1;
            return;
        }
        self.log_bytes += message.len();
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let line = LogLine {
            level: level.to_string(),
            message,
        };
        if let Some(w) = &self.watch {
            w(Observed::Log(&line));
        }
        self.logs.push(line);
    }

    /// Keeps one metric value (its name already cut) like [`HostState::log_line`].
    pub(crate) fn metric(&mut self, name: String, value: f64) {
        if self.metrics.len() >= self.log_cap
            || self.log_bytes + name.len() > crate::limits::MAX_LOG_BYTES
            || self.charge(name.len() as u64 + RECORD_OVERHEAD).is_err()
        {
            self.logs_dropped += 1;
            return;
        }
        self.log_bytes += name.len();
        let metric = Metric { name, value };
        if let Some(w) = &self.watch {
            w(Observed::Metric(&metric));
        }
        self.metrics.push(metric);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::types::Host for HostState {}

// Both are shadowed in the linker by `bounded`, which reads the guest's text
// in place and copies only what is kept; these serve bindgen's signatures.
impl bindings::log::Host for HostState {
    fn write(&mut self, level: bindings::log::Level, message: String) {
        let kept = crate::exec::bounded::cut(&message, crate::limits::MAX_LOG_MESSAGE_BYTES);
        drop(message);
        self.log_line(level, kept);
    }
}

impl bindings::metrics::Host for HostState {
    fn emit(&mut self, name: String, value: f64) {
        let kept = crate::exec::bounded::cut(&name, crate::limits::MAX_METRIC_NAME_BYTES);
        drop(name);
        self.metric(kept, value);
    }
}

/// Measures a running step's output folders now and then (from the epoch
/// callback), so a disk or inode bomb is stopped while it runs rather than
/// when it returns. The first look is after [`OutputWatch::FIRST`], so
/// short steps never pay for it; later looks are spaced by several times
/// the cost of the last walk, so a huge output tree cannot eat the step's
/// time. Between looks a step can overshoot by what it writes in that
/// interval (and by one host call's worth: at most its memory limit).
pub(crate) struct OutputWatch {
    pub(crate) max_bytes: u64,
    pub(crate) max_files: u64,
    pub(crate) next: Instant,
    pub(crate) over: Option<StepFailure>,
}

impl OutputWatch {
    pub(crate) const FIRST: Duration = Duration::from_millis(20);
    const MAX_GAP: Duration = Duration::from_millis(500);

    /// Checks the output folders `outputs` (name, host folder) if due;
    /// `false` when the step must stop.
    pub(crate) fn check(&mut self, now: Instant, outputs: &[(String, PathBuf)]) -> bool {
        if now < self.next || outputs.is_empty() {
            return true;
        }
        let (mut bytes, mut files) = (0u64, 0u64);
        let mut stack: Vec<PathBuf> = outputs.iter().map(|(_, p)| p.clone()).collect();
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                files += 1;
                if let Ok(m) = e.metadata() {
                    if m.is_dir() {
                        stack.push(e.path());
                    } else {
                        bytes = bytes.saturating_add(m.len());
                    }
                }
                if bytes > self.max_bytes {
                    self.over = Some(StepFailure::OutputQuota {
                        found: format!("more than {bytes} bytes"),
                        limit: format!("{} bytes", self.max_bytes),
                    });
                    return false;
                }
                if files > self.max_files {
                    self.over = Some(StepFailure::OutputQuota {
                        found: format!("more than {files} files and folders"),
                        limit: format!("{} files", self.max_files),
                    });
                    return false;
                }
            }
        }
        let cost = now.elapsed();
        self.next = Instant::now() + (cost * 8).clamp(Duration::from_millis(10), Self::MAX_GAP);
        true
    }
}

/// Caps the total linear memory of one instance, together with what the
/// host holds on its behalf, and remembers a refusal.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: u64,
    /// Linear memory.
    pub(crate) used: u64,
    /// Held by the host for the guest ([`HostState::charge`]).
    pub(crate) host: u64,
    /// The most of both together, so far.
    pub(crate) peak: u64,
    pub(crate) refused: Option<u64>,
}

impl MemoryLimiter {
    fn charge(&mut self, bytes: u64) -> Result<(), OverMemoryLimit> {
        if self.used + self.host + bytes > self.limit {
            return Err(OverMemoryLimit {
                limit: self.limit,
                guest: self.used,
                host: self.host,
                asked: bytes,
            });
        }
        self.host += bytes;
        self.peak = self.peak.max(self.used + self.host);
        Ok(())
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = (desired - current.min(desired)) as u64;
        if self.used + self.host + grow > self.limit {
            self.refused = Some(self.used + self.host + grow);
            return Ok(false);
        }
        self.used += grow;
        self.peak = self.peak.max(self.used + self.host);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= crate::limits::MAX_TABLE_ELEMENTS)
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepFailure {
    /// The step returned an error.
    #[error("the step returned an error: {0}")]
    Returned(String),
    /// The guest trapped (panic, abort, unreachable, ...).
    #[error("the step trapped: {0}")]
    Trapped(String),
    /// Over the wall-clock limit.
    #[error("the step exceeded its timeout of {0:?} and was stopped")]
    Timeout(Duration),
    /// Over the memory limit.
    #[error(
        "the step exceeded its memory limit of {limit} bytes (it asked for {wanted} bytes) and was stopped"
    )]
    Memory {
        /// The cap.
        limit: u64,
        /// What it tried to grow to.
        wanted: u64,
    },
    /// Out of fuel.
    #[error("the step used up its fuel budget of {0} and was stopped")]
    Fuel(u64),
    /// Held more open files, streams and other handles than one instance may.
    #[error(
        "the step held more than {0} open files, folders, streams or other handles at once, over its handle limit, and was stopped"
    )]
    Handles(usize),
    /// Failed while the filesystem holding its outputs (the store's) was
    /// full: the guest sees only a failed write, the host says why.
    #[error(
        "the disk holding the store is full ({free} bytes free at {at}), so the step's outputs could not be written; it failed with: {said}"
    )]
    DiskFull {
        /// What the step reported (its error or trap).
        said: String,
        /// Bytes free for unprivileged writers.
        free: u64,
        /// The output folder whose filesystem is full.
        at: String,
    },
    /// Wrote more into its outputs than the limits allow (found while it ran).
    #[error(
        "the step wrote {found} into its outputs while running, over its limit of {limit}, and was stopped; its partial output was discarded"
    )]
    OutputQuota {
        /// What it had written (`N bytes` or `N files and folders`).
        found: String,
        /// The limit it broke.
        limit: String,
    },
    /// The sandbox could not be set up (host problem, not the guest's).
    #[error("the sandbox could not be set up: {0}")]
    Setup(String),
    /// Stopped because the run was cancelled.
    #[error("cancelled while running")]
    Cancelled,
}

impl StepFailure {
    /// The kind recorded beside the message.
    pub fn kind(&self) -> crate::records::FailureKind {
        use crate::records::FailureKind as K;
        match self {
            StepFailure::Returned(_) => K::Returned,
            StepFailure::Trapped(_) => K::Trapped,
            StepFailure::Timeout(_) => K::Timeout,
            StepFailure::Memory { .. } => K::Memory,
            StepFailure::Fuel(_) => K::Fuel,
            StepFailure::Handles(_) => K::Handles,
            StepFailure::DiskFull { .. } => K::DiskFull,
            StepFailure::OutputQuota { .. } => K::OutputLimit,
            StepFailure::Setup(_) => K::Setup,
            StepFailure::Cancelled => K::Cancelled,
        }
    }
}
