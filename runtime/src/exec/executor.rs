//! Runs one step attempt in a fresh wasmtime sandbox.
//!
//! The [`Executor`] is long-lived: it owns the wasmtime `Engine` (pooling
//! allocator, epoch interruption, fuel), the `Linker` with WASI preview 2 and
//! weir's imports, an epoch ticker thread, and the components loaded so far
//! (as `InstancePre`s). Each attempt gets a new `Store` and instance, so no
//! state leaks between steps.
//!
//! The sandbox denies by default: no environment, no arguments, no stdin,
//! no network (sockets and name lookup are linked but refuse everything), no
//! preopens but `/in/<name>` (read-only) per input and `/out/<name>`
//! (read-write) per output. The wall clock is fixed at 2020-01-01T00:00:00Z,
//! the monotonic clock advances 1 µs per read, and all randomness is seeded
//! from the step's cache key, so equal keys see equal sandboxes.

use crate::digest::Digest;
use crate::exec::bindings::trusted::{TrustedStep, TrustedStepPre};
use crate::exec::bindings::{self, Step, StepPre};
pub use crate::exec::host_state::{HostState, Observed, OverMemoryLimit, StepFailure, Watch};
use crate::exec::host_state::{MemoryLimiter, Mounts, OutputWatch};
use crate::limits::Limits;
use crate::records::{LogLine, Metric};
use anyhow::{Context as _, anyhow};
use rand_chacha::ChaCha12Rng;
use rand_chacha::rand_core::SeedableRng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// How often the epoch ticks while guests run; a spinning guest notices its
/// deadline within one tick (the kernel's timer may round the sleep up).
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Drives an engine's epoch while any guest runs, and sleeps otherwise, so an
/// idle host (`weir serve` between runs) is not woken every tick.
struct Ticker {
    /// Guest calls under way ([`Ticker::keep_ticking`] guards).
    running: std::sync::atomic::AtomicUsize,
    stop: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Ticker {
    /// Starts the ticker thread for `engine`.
    fn start(engine: Engine) -> anyhow::Result<Arc<Ticker>> {
        let t = Arc::new(Ticker {
            running: Default::default(),
            stop: AtomicBool::new(false),
            thread: std::sync::OnceLock::new(),
        });
        let me = t.clone();
        let handle = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !me.stop.load(Ordering::Acquire) {
                    if me.running.load(Ordering::Acquire) == 0 {
                        // Woken by the next guest (or the executor's drop); a
                        // wake-up that came before this park returns at once.
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .context("starting the epoch ticker thread")?;
        let _ = t.thread.set(handle.thread().clone());
        Ok(t)
    }

    /// Keeps the epoch ticking until the guard drops: hold it while a guest
    /// runs, or its deadline never comes.
    fn keep_ticking(self: &Arc<Self>) -> Ticking {
        if self.running.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
        Ticking(self.clone())
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// A guest call under way (see [`Ticker::keep_ticking`]).
struct Ticking(Arc<Ticker>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How much of each linear memory stays resident when an instance's slot is
/// reset for the next one: its dirty pages (found with Linux's `PAGEMAP_SCAN`,
/// kernel 6.7+) are copied back from the module's image or zeroed in place,
/// up to this much; the rest is released with `madvise`. Kept pages spare the
/// next instance its page faults, and on a VM a copy-on-write fault costs a
/// TLB shootdown of the other cores (BENCHMARKS.md: ~30% of a no-op step).
/// `tests/hostile.rs` checks that instances still start from pristine memory.
/// Used only where the kernel has `PAGEMAP_SCAN`.
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
/// The same for tables.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// The fixed wall-clock time steps see: 2020-01-01T00:00:00Z.
pub const SANDBOX_WALL_CLOCK_SECS: u64 = 1_577_836_800;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Steps that may run at once (sizes the instance pool).
    pub max_concurrent: u32,
    /// Count fuel so steps can have a fuel budget (costs some speed).
    pub fuel: bool,
    /// Use the pooling instance allocator (falls back to on-demand if the
    /// host refuses the address-space reservation).
    pub pooling: bool,
    /// Which backend serves the `gpu` capability (chosen on first use).
    pub gpu: weir_host_gpu::BackendChoice,
    /// Capabilities the embedding host adds.
    pub capabilities: Vec<crate::capability::Capability>,
    /// At most this many bytes in the compile cache (least recently used
    /// entries evicted); `None`: no bound.
    pub compile_cache_max_bytes: Option<u64>,
}

impl Default for EngineConfig {
    /// One step at a time, no pooling (for tools that load a component or
    /// two, like `weir build`), the default GPU choice and no host
    /// capabilities. Fuel is not counted, as on the engine a run uses for
    /// steps without a fuel budget: what a tool compiles, a run reuses from
    /// the compile cache.
    fn default() -> EngineConfig {
        EngineConfig {
            max_concurrent: 1,
            fuel: false,
            pooling: false,
            gpu: weir_host_gpu::BackendChoice::default(),
            capabilities: Vec::new(),
            compile_cache_max_bytes: None,
        }
    }
}

/// A component ready to instantiate.
pub struct LoadedComponent {
    /// blake3 of the component's wasm bytes.
    pub digest: Digest,
    /// Capabilities it was linked with beyond the `step` world, with the
    /// backend that serves them (e.g. `gpu:cpu`) or the version of a host
    /// capability (`kv@1`); part of the cache key.
    pub capabilities: Vec<String>,
    /// Indices of the host capabilities it was linked with.
    host_caps: Vec<usize>,
    /// Loaded on an engine that counts fuel.
    fuel: bool,
    pre: Pre,
}

impl LoadedComponent {
    /// Whether it runs on an engine that counts fuel (for fuel budgets).
    pub fn counts_fuel(&self) -> bool {
        self.fuel
    }
}

enum Pre {
    Step(StepPre<HostState>),
    Trusted(TrustedStepPre<HostState>),
}

/// The WIT interface of the GPU capability.
pub const GPU_INTERFACE: &str = "weir:step/gpu@0.1.0";

/// Why a component could not be loaded for a step.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It imports a capability the trust policy does not grant it.
    #[error(
        "{what} imports the '{capability}' capability ({interface}), which is granted only to components the trust policy names"
    )]
    NotGranted {
        /// The component, as shown.
        what: String,
        /// Its digest.
        digest: Digest,
        /// The capability's name.
        capability: String,
        /// Its WIT interface.
        interface: String,
    },
}

/// Everything one attempt needs.
pub struct AttemptSpec {
    /// Step name (passed to the guest and used in messages).
    pub step: String,
    /// The run it belongs to, if any (for host capabilities' state).
    pub run: Option<crate::records::RunId>,
    /// The value the host attached to the run (for host capabilities' state).
    pub host_data: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// The component.
    pub component: Arc<LoadedComponent>,
    /// Canonical JSON params.
    pub params_json: String,
    /// Input name to host folder (mounted read-only at `/in/<name>`).
    pub inputs: Vec<(String, PathBuf)>,
    /// Output name to empty host folder (mounted read-write at `/out/<name>`).
    pub outputs: Vec<(String, PathBuf)>,
    /// Limits.
    pub limits: Limits,
    /// Seed for the sandbox's randomness (the cache key).
    pub seed: Digest,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Sees each log line and metric as the guest records it.
    pub watch: Option<Watch>,
    /// Cancelling it stops the attempt (with what it logged so far kept):
    /// the outcome is [`StepFailure::Cancelled`].
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

/// How an attempt ended, with what it logged.
pub struct AttemptResult {
    /// `Ok` if `run` returned success.
    pub outcome: Result<(), StepFailure>,

    /// Log lines, then stdout and stderr lines.
    pub logs: Vec<LogLine>,
    /// Metrics in call order.
    pub metrics: Vec<Metric>,
    /// The most memory the attempt held (linear memory plus what the host
    /// kept for it), in bytes.
    pub peak_memory_bytes: u64,
    /// Fuel used, when the engine counts it.
    pub fuel_used: Option<u64>,
}

impl AttemptResult {
    /// An attempt that failed before or outside the guest.
    pub fn failed(f: StepFailure) -> AttemptResult {
        AttemptResult {
            outcome: Err(f),
            logs: Vec::new(),
            metrics: Vec::new(),
            peak_memory_bytes: 0,
            fuel_used: None,
        }
    }
}

/// Below this many free bytes, a failed step's filesystem counts as full.
const DISK_FULL_BYTES: u64 = 1 << 20;

/// Captured stdout or stderr: keeps the first `cap` bytes, counts the rest.
#[derive(Clone)]
struct Capture {
    inner: Arc<Mutex<(Vec<u8>, u64)>>,
    cap: usize,
}

impl Capture {
    fn new(cap: u64) -> Capture {
        Capture {
            inner: Arc::new(Mutex::new((Vec::new(), 0))),
            cap: cap as usize,
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.cap.saturating_sub(g.0.len());
        let take = room.min(bytes.len());
        g.0.extend_from_slice(&bytes[..take]);
        g.1 += (bytes.len() - take) as u64;
    }

    /// The last few lines written (a panic message), on one line: at most
    /// 6 lines and 1 KiB, without Rust's `RUST_BACKTRACE` hint.
    fn last_words(&self) -> Option<String> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&g.0);
        let mut lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .collect();
        lines = lines.split_off(lines.len().saturating_sub(6));
        let said = crate::exec::bounded::cut(&lines.join(" "), 1024);
        (!said.is_empty()).then_some(said)
    }

    fn lines(&self, level: &str, out: &mut Vec<LogLine>) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&g.0);
        for line in text.lines() {
            out.push(LogLine {
                level: level.to_string(),
                message: line.to_string(),
            });
        }
        if g.1 > 0 {
            out.push(LogLine {
                level: level.to_string(),
                message: format!("[{} more bytes not kept]", g.1),
            });
        }
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

struct FixedWallClock;

impl wasmtime_wasi::HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(SANDBOX_WALL_CLOCK_SECS)
    }
}

struct VirtualMonotonicClock(AtomicU64);

impl wasmtime_wasi::HostMonotonicClock for VirtualMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::Relaxed)
    }
}

/// Indices of host capabilities, and whether the gpu is linked too.
type CapSet = (Vec<usize>, bool);
/// A component's digest and the capabilities granted to it.
type LoadKey = (Digest, Vec<String>);

/// The long-lived engine that runs step attempts.
pub struct Executor {
    engine: Engine,
    linker: Linker<HostState>,
    trusted_linker: Linker<HostState>,
    host_caps: Vec<crate::capability::Capability>,
    /// Linkers for sets of host capabilities (with or without gpu), by the
    /// sorted indices of the host capabilities and the gpu flag.
    cap_linkers: Mutex<HashMap<CapSet, Linker<HostState>>>,
    gpu_choice: weir_host_gpu::BackendChoice,
    gpu: std::sync::OnceLock<
        std::result::Result<Arc<dyn weir_host_gpu::Backend>, weir_host_gpu::BackendError>,
    >,
    engine_tag: String,
    compiled_dir: PathBuf,
    compile_cache_max_bytes: Option<u64>,
    loaded: Mutex<HashMap<LoadKey, Arc<LoadedComponent>>>,
    /// One lock per component being loaded: concurrent loads of the same
    /// component (300 runs triggered at once) wait for the first instead
    /// of each compiling it (each compilation takes tens of MiB).
    loading: Mutex<HashMap<LoadKey, Arc<Mutex<()>>>>,
    ticker: Arc<Ticker>,
    fuel: bool,
    /// The most entries one instance's resource table may hold.
    max_handles: usize,
}

/// The most handles (open files and folders, streams, pollables) one
/// instance may hold at once: [`crate::limits::MAX_HANDLES`], or less where
/// the process's descriptor limit could not otherwise serve `concurrent`
/// instances at their maximum and still keep
/// [`crate::limits::HOST_RESERVED_DESCRIPTORS`] for the host's own work
/// (the store, the records, the server). Raises the process's soft
/// descriptor limit to its hard limit first, as servers do.
fn handles_per_instance(concurrent: u32) -> usize {
    use crate::limits::{HOST_RESERVED_DESCRIPTORS, MAX_HANDLES, MIN_HANDLES};
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return MAX_HANDLES;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    let for_guests = soft.saturating_sub(HOST_RESERVED_DESCRIPTORS);
    let each = (for_guests / u64::from(concurrent.max(1))) as usize;
    each.clamp(MIN_HANDLES, MAX_HANDLES)
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// Removes the least recently used entries of the compile cache in `dir`
/// (by modification time, which a load refreshes) until it holds at most
/// `max` bytes, never `keep` (the entry just written). Best effort: another
/// process may be evicting too.
fn evict(dir: &Path, max: u64, keep: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= max {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

fn wasmtime_config(cfg: &EngineConfig, pooling: bool) -> wasmtime::Config {
    let mut c = wasmtime::Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.consume_fuel(cfg.fuel);
    c.parallel_compilation(true);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // The same bits on every CPU (crate::cache::ENGINE_SEMANTICS, part of
    // every cache key).
    c.cranelift_nan_canonicalization(true);
    c.relaxed_simd_deterministic(true);
    if pooling {
        let n = cfg.max_concurrent.max(1) + 2;
        let mut p = wasmtime::PoolingAllocationConfig::new();
        p.total_component_instances(n * 2)
            .total_core_instances(n * 32)
            .total_memories(n * 4)
            .total_tables(n * 32)
            .total_stacks(n * 2)
            .max_memories_per_component(4)
            .max_core_instances_per_component(32)
            .max_tables_per_component(32)
            .max_memory_size(crate::limits::MAX_MEMORY_BYTES as usize)
            .table_elements(crate::limits::MAX_TABLE_ELEMENTS)
            // Reset finished instances' memory, tables and stacks eight at a
            // time: each reset is an madvise whose TLB shootdown interrupts
            // the other cores (costly on a VM); batched, steps run ~10% faster
            // (BENCHMARKS.md). A slot is reused only after its reset.
            .decommit_batch_size(8);
        // Reset dirty pages in place instead (see KEEP_RESIDENT_MEMORY). Only
        // where the kernel can say which pages are dirty: without
        // PAGEMAP_SCAN, keeping pages resident means zeroing all of them on
        // every reset, which costs more than the faults it saves.
        if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
            p.pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                .table_keep_resident(KEEP_RESIDENT_TABLE);
        }
        c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// A `Hasher` feeding blake3, for stable engine-configuration tags.
struct Blake3Hasher(blake3::Hasher);

impl std::hash::Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let b = self.0.finalize();
        u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl Executor {
    /// Builds the engine and linker; compiled components are cached in `compiled_dir`.
    pub fn new(cfg: &EngineConfig, compiled_dir: &Path) -> anyhow::Result<Executor> {
        let engine = if cfg.pooling {
            match Engine::new(&wasmtime_config(cfg, true)) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(
                        "pooling allocator unavailable ({e}); using on-demand allocation"
                    );
                    Engine::new(&wasmtime_config(cfg, false))
                        .map_err(|e| anyhow!("cannot create the wasm engine: {e}"))?
                }
            }
        } else {
            Engine::new(&wasmtime_config(cfg, false))
                .map_err(|e| anyhow!("cannot create the wasm engine: {e}"))?
        };
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow!("linking WASI: {e}"))?;
        Step::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| anyhow!("linking weir imports: {e}"))?;
        let mut trusted_linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut trusted_linker)
            .map_err(|e| anyhow!("linking WASI: {e}"))?;
        TrustedStep::add_to_linker::<HostState, HasSelf<HostState>>(&mut trusted_linker, |s| s)
            .map_err(|e| anyhow!("linking weir trusted imports: {e}"))?;
        crate::exec::bounded::shadow_step_imports(&mut linker)
            .and_then(|()| crate::exec::bounded::shadow_step_imports(&mut trusted_linker))
            .and_then(|()| crate::exec::bounded::shadow_gpu_imports(&mut trusted_linker))
            .map_err(|e| anyhow!("linking weir's bounded imports: {e}"))?;
        let max_handles = handles_per_instance(cfg.max_concurrent);
        let engine_tag = {
            use std::hash::Hash;
            let mut h = Blake3Hasher(blake3::Hasher::new());
            engine.precompile_compatibility_hash().hash(&mut h);
            let bytes = h.0.finalize();
            bytes.to_hex()[..16].to_string()
        };
        std::fs::create_dir_all(compiled_dir)?;
        for c in &cfg.capabilities {
            c.check().map_err(|e| anyhow!(e))?;
        }
        // Last: nothing after it can fail and leave its thread behind.
        let ticker = Ticker::start(engine.clone())?;
        Ok(Executor {
            engine,
            linker,
            trusted_linker,
            host_caps: cfg.capabilities.clone(),
            cap_linkers: Mutex::new(HashMap::new()),
            gpu_choice: cfg.gpu,
            gpu: std::sync::OnceLock::new(),
            engine_tag,
            compiled_dir: compiled_dir.to_path_buf(),
            loaded: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            ticker,
            fuel: cfg.fuel,
            compile_cache_max_bytes: cfg.compile_cache_max_bytes,
            max_handles,
        })
    }

    /// The backend serving the `gpu` capability, chosen on first use (so a
    /// run without trusted steps never touches CUDA).
    pub fn gpu_backend(
        &self,
    ) -> std::result::Result<Arc<dyn weir_host_gpu::Backend>, weir_host_gpu::BackendError> {
        self.gpu
            .get_or_init(|| {
                weir_host_gpu::select_backend(self.gpu_choice).map(|(b, why)| {
                    if let Some(why) = why {
                        tracing::info!("training kernels on the CPU: {why}");
                    }
                    b
                })
            })
            .clone()
    }

    /// The linker for the step world plus the host capabilities `caps`
    /// (and the gpu when `gpu`), built once per set.
    fn cap_linker(&self, caps: &[usize], gpu: bool) -> anyhow::Result<Linker<HostState>> {
        let mut map = self.cap_linkers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get(&(caps.to_vec(), gpu)) {
            return Ok(l.clone());
        }
        let mut l = if gpu {
            self.trusted_linker.clone()
        } else {
            self.linker.clone()
        };
        for &i in caps {
            let c = &self.host_caps[i];
            if let Some(f) = &c.link {
                f(&mut l).map_err(|e| anyhow!("linking capability '{}': {e:#}", c.name))?;
            }
        }
        map.insert((caps.to_vec(), gpu), l.clone());
        Ok(l)
    }

    /// Loads a component file: from memory if seen before, else from the
    /// on-disk compile cache, else compiles it (and caches the result).
    /// Errors say whether the file is not wasm, a core module rather than a
    /// component, or a component of another world.
    ///
    /// A component that imports a capability (the gpu, or one the host
    /// added) links only when `grant` says yes for its digest and that
    /// capability's name; otherwise loading fails with
    /// [`LoadError::NotGranted`].
    pub fn load(
        &self,
        path: &Path,
        grant: &dyn Fn(&Digest, &str) -> bool,
    ) -> anyhow::Result<Arc<LoadedComponent>> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read component {}", path.display()))?;
        self.load_bytes(&bytes, &path.display().to_string(), grant)
    }

    /// What a component file imports and exports, and its digest, without
    /// linking it (for `weir inspect`).
    pub fn describe(&self, path: &Path) -> anyhow::Result<(Digest, Vec<String>, Vec<String>)> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read component {}", path.display()))?;
        let digest = Digest::of(&bytes);
        let component = Component::new(&self.engine, &bytes)
            .map_err(|e| anyhow!("{} is not a valid component: {e:#}", path.display()))?;
        let ty = component.component_type();
        let imports = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        Ok((digest, imports, exports))
    }

    /// Like [`Executor::load`], from bytes; `what` names them in errors.
    pub fn load_bytes(
        &self,
        bytes: &[u8],
        what: &str,
        grant: &dyn Fn(&Digest, &str) -> bool,
    ) -> anyhow::Result<Arc<LoadedComponent>> {
        let digest = Digest::of(bytes);
        let granted: Vec<String> = std::iter::once("gpu")
            .chain(self.host_caps.iter().map(|c| c.name.as_str()))
            .filter(|c| grant(&digest, c))
            .map(str::to_string)
            .collect();
        let key = (digest, granted.clone());
        let cached = || {
            self.loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned()
        };
        if let Some(c) = cached() {
            return Ok(c);
        }
        // One loader per component at a time; the others then find it loaded.
        let gate = self
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _one_at_a_time = gate.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached() {
            return Ok(c);
        }
        let loaded = self.load_uncached(bytes, what, digest, granted);
        self.loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        loaded
    }

    /// [`Executor::load_bytes`] past the in-memory cache.
    fn load_uncached(
        &self,
        bytes: &[u8],
        what: &str,
        digest: Digest,
        granted: Vec<String>,
    ) -> anyhow::Result<Arc<LoadedComponent>> {
        check_magic(bytes, what)?;
        let component = self.compile(bytes, what, digest)?;
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        check_contract(what, &imports)?;
        let (wants_gpu, host_caps) = self.requested(&imports, what, digest, &granted)?;
        let mut capabilities = Vec::new();
        if wants_gpu {
            capabilities.push(format!(
                "gpu:{}",
                self.gpu_backend()
                    .map_err(|e| anyhow!("{what}: {e}"))?
                    .kind()
            ));
        }
        capabilities.extend(host_caps.iter().map(|&i| self.host_caps[i].identity()));
        let pre = self.link(&component, what, wants_gpu, &host_caps)?;
        let loaded = Arc::new(LoadedComponent {
            digest,
            capabilities,
            host_caps,
            fuel: self.fuel,
            pre,
        });
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((digest, granted), loaded.clone());
        Ok(loaded)
    }

    /// The component compiled for this engine: from the compile cache, or
    /// by Cranelift (then written to the cache, evicting the least recently
    /// used entries past its size bound).
    fn compile(&self, bytes: &[u8], what: &str, digest: Digest) -> anyhow::Result<Component> {
        let cached =
            self.compiled_dir
                .join(format!("{}-{}.cwasm", digest.to_hex(), self.engine_tag));
        if cached.exists() {
            // SAFETY: files in the compile cache are written only by `Component::serialize`
            // below, by this engine configuration (the tag in the name), via rename.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(c) => {
                    // Recently used: the last to be evicted.
                    let _ = std::fs::File::options()
                        .write(true)
                        .open(&cached)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    return Ok(c);
                }
                Err(e) => tracing::warn!(
                    "ignoring unusable compile cache entry {}: {e}",
                    cached.display()
                ),
            }
        }
        let c = Component::new(&self.engine, bytes)
            .map_err(|e| anyhow!("{what} is not a valid component: {e:#}"))?;
        if let Ok(ser) = c.serialize() {
            let tmp =
                self.compiled_dir
                    .join(format!(".tmp-{}-{}", std::process::id(), digest.to_hex()));
            if std::fs::write(&tmp, ser).is_ok()
                && std::fs::rename(&tmp, &cached).is_ok()
                && let Some(max) = self.compile_cache_max_bytes
            {
                evict(&self.compiled_dir, max, &cached);
            }
        }
        Ok(c)
    }

    /// What a component with `imports` asks for: the GPU, and which host
    /// capabilities (by index); refused unless `granted` grants each.
    fn requested(
        &self,
        imports: &[String],
        what: &str,
        digest: Digest,
        granted: &[String],
    ) -> anyhow::Result<(bool, Vec<usize>)> {
        let wants_gpu = imports.iter().any(|name| name == GPU_INTERFACE);
        let is_granted = |c: &str| granted.iter().any(|g| g == c);
        if wants_gpu && !is_granted("gpu") {
            return Err(LoadError::NotGranted {
                what: what.to_string(),
                digest,
                capability: "gpu".into(),
                interface: GPU_INTERFACE.into(),
            }
            .into());
        }
        let mut host_caps = Vec::new();
        for (i, c) in self.host_caps.iter().enumerate() {
            if let Some(iface) = c.interfaces.iter().find(|i| imports.contains(i)) {
                if !is_granted(&c.name) {
                    return Err(LoadError::NotGranted {
                        what: what.to_string(),
                        digest,
                        capability: c.name.clone(),
                        interface: iface.clone(),
                    }
                    .into());
                }
                host_caps.push(i);
            }
        }
        Ok((wants_gpu, host_caps))
    }

    /// Links `component` against the sandbox (plus the GPU and the host
    /// capabilities it was granted) and checks it exports the step world.
    fn link(
        &self,
        component: &Component,
        what: &str,
        wants_gpu: bool,
        host_caps: &[usize],
    ) -> anyhow::Result<Pre> {
        let not_step = |e: wasmtime::Error| {
            anyhow!(
                "{what} does not implement the weir step world ({}): {e:#}; build it with weir-sdk's `step!` macro",
                crate::cache::STEP_WORLD
            )
        };
        let allowed = || {
            let mut names = vec!["WASI preview 2", "weir:step interfaces"];
            if wants_gpu {
                names.push("the gpu capability");
            }
            names.extend(host_caps.iter().map(|&i| self.host_caps[i].name.as_str()));
            names.join(", ")
        };
        let link_err = |e: wasmtime::Error| {
            anyhow!(
                "{what} cannot run in the weir sandbox: {e:#} (it may import only {})",
                allowed()
            )
        };
        Ok(if host_caps.is_empty() {
            if wants_gpu {
                let pre = self
                    .trusted_linker
                    .instantiate_pre(component)
                    .map_err(link_err)?;
                Pre::Trusted(TrustedStepPre::new(pre).map_err(not_step)?)
            } else {
                let pre = self.linker.instantiate_pre(component).map_err(link_err)?;
                Pre::Step(StepPre::new(pre).map_err(not_step)?)
            }
        } else {
            let linker = self.cap_linker(host_caps, wants_gpu)?;
            let pre = linker.instantiate_pre(component).map_err(link_err)?;
            if wants_gpu {
                Pre::Trusted(TrustedStepPre::new(pre).map_err(not_step)?)
            } else {
                Pre::Step(StepPre::new(pre).map_err(not_step)?)
            }
        })
    }

    /// Runs one attempt to completion, failure or timeout.
    pub async fn run(&self, spec: AttemptSpec) -> AttemptResult {
        let stdout = Capture::new(spec.limits.stdio_bytes);
        let stderr = Capture::new(spec.limits.stdio_bytes);
        let mut result = self.run_inner(&spec, &stdout, &stderr).await;
        // A trap after a panic: the panic's message (the guest's last lines
        // on stderr) says what went wrong, the trap only where.
        if let Err(StepFailure::Trapped(trap)) = &mut result.outcome
            && let Some(said) = stderr.last_words()
        {
            *trap = format!("{said} ({trap})");
        }
        stdout.lines("stdout", &mut result.logs);
        stderr.lines("stderr", &mut result.logs);
        result
    }

    fn wasi_ctx(spec: &AttemptSpec, stdout: &Capture, stderr: &Capture) -> anyhow::Result<WasiCtx> {
        let seed = *spec.seed.as_bytes();
        let derive =
            |what: &str| -> [u8; 32] { *blake3::keyed_hash(&seed, what.as_bytes()).as_bytes() };
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_blocking_current_thread(true)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FixedWallClock)
            .monotonic_clock(VirtualMonotonicClock(AtomicU64::new(0)))
            .secure_random(ChaCha12Rng::from_seed(derive("secure")))
            .insecure_random(ChaCha12Rng::from_seed(derive("insecure")))
            .insecure_random_seed(u128::from_le_bytes(
                derive("seed")[..16].try_into().unwrap_or([0; 16]),
            ))
            .max_random_size(crate::limits::MAX_RANDOM_BYTES_PER_CALL);
        for (name, dir) in &spec.inputs {
            b.preopened_dir(dir, format!("/in/{name}"), FsPerms::ReadOnly)
                .map_err(|e| anyhow!("mounting input '{name}' from {}: {e}", dir.display()))?;
        }
        for (name, dir) in &spec.outputs {
            b.preopened_dir(dir, format!("/out/{name}"), FsPerms::ReadWrite)
                .map_err(|e| anyhow!("mounting output '{name}' at {}: {e}", dir.display()))?;
        }
        Ok(b.build())
    }

    async fn run_inner(
        &self,
        spec: &AttemptSpec,
        stdout: &Capture,
        stderr: &Capture,
    ) -> AttemptResult {
        let fail = AttemptResult::failed;
        let state = match self.host_state(spec, stdout, stderr) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let timeout = spec.limits.timeout();
        let mut store = match self.guest_store(spec, state) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        // The epoch ticks while this guest may run (until this returns).
        let _ticking = self.ticker.keep_ticking();
        let invocation = invocation(spec);
        let call = async {
            match &spec.component.pre {
                Pre::Step(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance.call_run(&mut store, &invocation).await
                }
                Pre::Trusted(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance.call_run(&mut store, &invocation).await
                }
            }
        };
        // The outer timeout also stops a guest that is blocked in a host call
        // (where epoch checks cannot run); the grace lets the epoch check fire first.
        let timed = tokio::time::timeout(timeout + Duration::from_millis(100), call);
        // Cancelling stops the guest at its next epoch tick or host call;
        // the store, and so what it logged, stays.
        let cancelled = async {
            match &spec.cancel {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            biased;
            _ = cancelled => None,
            r = timed => Some(r),
        };
        let outcome = match ended {
            None => Err(StepFailure::Cancelled),
            Some(Err(_)) => Err(StepFailure::Timeout(timeout)),
            Some(Ok(Ok(Ok(())))) => Ok(()),
            Some(Ok(Ok(Err(msg)))) => Err(StepFailure::Returned(msg)),
            Some(Ok(Err(e))) => Err(self.why_it_stopped(store.data_mut(), &e, spec)),
        };
        self.attempt_result(store, outcome.map_err(|f| disk_full_or(f, spec)), spec)
    }

    /// The host side of one attempt: WASI with the step's mounts, its limits,
    /// its capabilities' states.
    fn host_state(
        &self,
        spec: &AttemptSpec,
        stdout: &Capture,
        stderr: &Capture,
    ) -> Result<HostState, StepFailure> {
        let wasi = Self::wasi_ctx(spec, stdout, stderr)
            .map_err(|e| StepFailure::Setup(format!("{e:#}")))?;
        let timeout = spec.limits.timeout();
        Ok(HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: spec.limits.memory_bytes,
                used: 0,
                host: 0,
                peak: 0,
                refused: None,
            },
            logs: Vec::new(),
            log_cap: spec.limits.log_lines as usize,
            watch: spec.watch.clone(),
            logs_dropped: 0,
            log_bytes: 0,
            metrics: Vec::new(),
            deadline: Instant::now() + timeout,
            timed_out: false,
            quota: OutputWatch {
                max_bytes: spec.limits.output_bytes,
                max_files: spec.limits.output_files,
                next: Instant::now() + OutputWatch::FIRST,
                over: None,
            },
            mounts: Mounts {
                inputs: spec.inputs.clone(),
                outputs: spec.outputs.clone(),
            },
            gpu: match spec.component.pre {
                Pre::Trusted(_) => self.gpu.get().and_then(|b| b.as_ref().ok()).cloned(),
                Pre::Step(_) => None,
            },
            extensions: spec
                .component
                .host_caps
                .iter()
                .filter_map(|&i| {
                    let cx = crate::capability::AttemptContext {
                        run: spec.run,
                        step: &spec.step,
                        attempt: spec.attempt,
                        host_data: spec.host_data.as_deref(),
                    };
                    self.host_caps[i].state.as_ref().map(|f| f(&cx))
                })
                .collect(),
        })
    }

    /// A wasmtime store for one attempt: the memory limiter, the handle
    /// cap, the fuel budget, and the epoch check of the deadline and the
    /// output quota.
    fn guest_store(
        &self,
        spec: &AttemptSpec,
        mut state: HostState,
    ) -> Result<Store<HostState>, StepFailure> {
        state.table.set_max_capacity(self.max_handles);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        if self.fuel {
            store
                .set_fuel(spec.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| StepFailure::Setup(e.to_string()))?;
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            let now = Instant::now();
            if now >= s.deadline {
                s.timed_out = true;
                return Err(Trap::Interrupt.into());
            }
            if !s.quota.check(now, &s.mounts.outputs) {
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        Ok(store)
    }

    /// Why a guest call that ended in an error stopped: the deadline, the
    /// output quota, the memory limit, fuel, the handle cap, or a trap.
    fn why_it_stopped(
        &self,
        s: &mut HostState,
        e: &wasmtime::Error,
        spec: &AttemptSpec,
    ) -> StepFailure {
        let timeout = spec.limits.timeout();
        if s.timed_out {
            StepFailure::Timeout(timeout)
        } else if let Some(over) = s.quota.over.take() {
            over
        } else if let Some(wanted) = s.limiter.refused {
            StepFailure::Memory {
                limit: s.limiter.limit,
                wanted,
            }
        } else if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
            StepFailure::Fuel(spec.limits.fuel.unwrap_or(u64::MAX))
        } else if e.chain().any(|c| {
            matches!(
                c.downcast_ref::<wasmtime::component::ResourceTableError>(),
                Some(wasmtime::component::ResourceTableError::Full)
            )
        }) {
            StepFailure::Handles(self.max_handles)
        } else {
            StepFailure::Trapped(trap_message(e))
        }
    }

    /// The attempt's result: its outcome, with the logs, metrics, peak
    /// memory and fuel its store holds.
    fn attempt_result(
        &self,
        store: Store<HostState>,
        outcome: Result<(), StepFailure>,
        spec: &AttemptSpec,
    ) -> AttemptResult {
        let budget = spec.limits.fuel.unwrap_or(u64::MAX);
        let fuel_used = if self.fuel {
            store
                .get_fuel()
                .ok()
                .map(|left| budget.saturating_sub(left))
        } else {
            None
        };
        let s = store.into_data();
        let peak_memory_bytes = s.limiter.peak;
        let mut logs = s.logs;
        if s.logs_dropped > 0 {
            logs.push(LogLine {
                level: "warn".into(),
                message: format!(
                    "[{} log lines or metrics over the limit were dropped]",
                    s.logs_dropped
                ),
            });
        }
        AttemptResult {
            outcome,
            logs,
            metrics: s.metrics,
            peak_memory_bytes,
            fuel_used,
        }
    }
}

/// A guest's own error or trap, as a disk-full failure when an output's
/// filesystem is nearly full (the guest's message is kept).
fn disk_full_or(f: StepFailure, spec: &AttemptSpec) -> StepFailure {
    let (StepFailure::Returned(said) | StepFailure::Trapped(said)) = &f else {
        return f;
    };
    match spec.outputs.iter().find_map(|(_, dir)| {
        crate::store::free_bytes(dir)
            .filter(|free| *free < DISK_FULL_BYTES)
            .map(|free| (free, dir))
    }) {
        Some((free, dir)) => StepFailure::DiskFull {
            said: said.clone(),
            free,
            at: dir.display().to_string(),
        },
        None => f,
    }
}

/// What the guest's `run` is called with: its step, params and mounts.
fn invocation(spec: &AttemptSpec) -> bindings::types::Invocation {
    bindings::types::Invocation {
        step: spec.step.clone(),
        params: spec.params_json.clone(),
        inputs: spec
            .inputs
            .iter()
            .map(|(n, _)| bindings::types::Input {
                name: n.clone(),
                path: format!("/in/{n}"),
            })
            .collect(),
        outputs: spec
            .outputs
            .iter()
            .map(|(n, _)| bindings::types::Output {
                name: n.clone(),
                path: format!("/out/{n}"),
            })
            .collect(),
        attempt: spec.attempt,
    }
}

/// Refuses bytes that are not a WebAssembly component, saying what they are.
fn check_magic(bytes: &[u8], what: &str) -> anyhow::Result<()> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => anyhow::bail!(
            "{what} is a core WebAssembly module, not a component; build steps for the wasm32-wasip2 target (`weir build`) so they come out as components"
        ),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        _ => anyhow::bail!(
            "{what} is not a WebAssembly component (it does not start with the wasm magic bytes)"
        ),
    }
}

/// Refuses a component built against another version of weir's contract
/// (`weir:step@X` imports with X not this weir's): its exports may match
/// structurally, but what they mean may not.
fn check_contract(what: &str, imports: &[String]) -> anyhow::Result<()> {
    let ours = crate::cache::STEP_WORLD
        .split_once('@')
        .map_or("", |(_, v)| v);
    let other = imports.iter().find_map(|i| {
        let (iface, version) = i.strip_prefix("weir:step/")?.split_once('@')?;
        (version != ours).then(|| (iface.to_string(), version.to_string()))
    });
    if let Some((iface, version)) = other {
        anyhow::bail!(
            "{what} was built for weir:step@{version} (it imports weir:step/{iface}@{version}), but this weir supports weir:step@{ours} only; rebuild it with the weir-sdk of this weir (`weir build`)"
        );
    }
    Ok(())
}

/// The reason of a trap in one paragraph: the trap kind, then where: the
/// first frame of the guest's backtrace that is its own code (named when
/// the component keeps its name section, as weir's step crates do), not the
/// panic and abort machinery of its standard library.
fn trap_message(e: &wasmtime::Error) -> String {
    let mut msg = match e.downcast_ref::<Trap>() {
        Some(t) => t.to_string(),
        // A host call that failed (a refused request): its own message,
        // not the backtrace context wasmtime wraps it in.
        None => e.root_cause().to_string(),
    };
    let chain = format!("{e:?}");
    let frames: Vec<&str> = chain
        .lines()
        .skip_while(|l| !l.contains("wasm backtrace"))
        .skip(1)
        .map(str::trim)
        .filter(|l| l.contains(" - "))
        .collect();
    let machinery = |f: &str| {
        // `std[d123b7a1]::sys::...`: the crate hash is not part of the name.
        let mut name = String::new();
        let mut depth = 0;
        let func = f.split_once(" - ").map_or(f, |(_, r)| r);
        let func = func.split_once('!').map_or(func, |(_, f)| f);
        for c in func.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                c if depth == 0 => name.push(c),
                _ => {}
            }
        }
        [
            "abort",
            "std::",
            "core::",
            "alloc::",
            "__rust",
            "rust_panic",
            "panic_abort",
            "<std::",
            "<core::",
            "<alloc::",
            "__wasm_call_dtors",
            "__wasi",
        ]
        .iter()
        .any(|p| name.starts_with(p))
    };
    if let Some(f) = frames.iter().find(|f| !machinery(f)).or(frames.first()) {
        msg.push_str(&format!(" (at {f})"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::evict;
    use std::time::{Duration, SystemTime};

    #[test]
    fn the_compile_cache_evicts_the_least_recently_used_first() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let entry = |name: &str, age_s: u64| {
            let p = tmp.path().join(format!("{name}.cwasm"));
            std::fs::write(&p, [0u8; 100]).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(now - Duration::from_secs(age_s))
                .unwrap();
            p
        };
        let (old, mid, new) = (entry("old", 300), entry("mid", 200), entry("new", 100));
        // The one just written stays even if it is the oldest.
        let kept = entry("kept", 400);
        evict(tmp.path(), 250, &kept);
        assert!(!old.exists() && !mid.exists());
        assert!(new.exists() && kept.exists());
    }
}
