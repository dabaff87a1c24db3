//! weir's engine: runs a [`Plan`] of WebAssembly component steps in sandboxes,
//! names every artifact by its content, skips steps whose [`CacheKey`] was
//! seen before, and records runs in a database.
//!
//! Entry points: build a [`Runtime`] from a [`Config`], then
//! [`Runtime::run`] a plan. The CLI and the DSL are thin users of this crate.
//!
//! ```no_run
//! use weir_runtime::{ComponentSource, Config, Plan, RunOptions, Runtime, StepPlan};
//! # async fn demo() -> anyhow::Result<()> {
//! let rt = Runtime::new(Config::new("/var/lib/myapp/weir").jobs(4))?; // long-lived
//! let mut plan = Plan::new("embedded", "/srv/pipelines/demo");
//! let mut step = StepPlan::new("make", ComponentSource::Wasm("make.wasm".into()));
//! step.outputs.insert("table".into());
//! plan.steps.push(step);
//! let report = rt.run(&plan, RunOptions::default()).await?;                // one run
//! println!("run {} {}", report.run, report.state);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod builder;
pub mod cluster;
mod config;
mod events;
mod exec;
mod faults;
pub mod gc;
pub mod lineage;
pub mod records;
pub mod remote;
pub mod run;
mod runtime;
mod sched;
pub mod store;
pub mod trust;
pub mod unit;
pub mod verify;

pub use exec::{capability, executor};
pub use trust::signing;

// The plain data every part agrees on lives in `weir-core` (no wasmtime,
// SQLite or tokio); re-exported under the names it has always had here.
pub use weir_core::{cache, digest, limits, names, owner, plan, tree};

pub use cache::{CacheKey, cache_key};
pub use capability::Capability;
pub use digest::Digest;
pub use limits::Limits;
pub use plan::{ComponentSource, InputSource, Plan, StepPlan};
pub use records::{RunId, RunState, StepState};
pub use run::{
    Config, NotTrusted, RunEvent, RunHandle, RunOptions, RunReport, Runtime, TrustPolicy,
};
/// The wasmtime this runtime uses, for hosts that generate bindings for
/// their own capabilities (`bindgen!({ ..., wasmtime_crate: weir_runtime::wasmtime })`).
pub use wasmtime;
