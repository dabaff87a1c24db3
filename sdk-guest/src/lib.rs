//! weir-sdk: write a weir pipeline step as one Rust function.
//!
//! A step is a WebAssembly component (built for `wasm32-wasip2`, which
//! `weir build` does for you). You write a function taking a [`Context`] and
//! export it with [`step!`]:
//!
//! ```ignore
//! use weir_sdk::{Context, Result};
//!
//! #[derive(serde::Deserialize)]
//! struct Params { threshold: f64 }
//!
//! fn run(ctx: &mut Context<Params>) -> Result<()> {
//!     let table = weir_sdk::dataset::Table::read_csv(ctx.input_file("data")?)?;
//!     ctx.metric("rows", table.rows.len() as f64);
//!     std::fs::write(ctx.output("summary")?.join("rows.txt"), table.rows.len().to_string())?;
//!     Ok(())
//! }
//!
//! weir_sdk::step!(run);
//! ```
//!
//! Inside the sandbox a step sees only its inputs (read-only folders at
//! `/in/<name>`) and its outputs (empty writable folders at `/out/<name>`).
//! There is no network, no environment, the wall clock is fixed and
//! randomness is seeded from the step's cache key, so a step is a pure
//! function of its code, params and inputs.
#![deny(missing_docs)]

extern crate self as weir_sdk;

pub mod dataset;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use anyhow::{Context as ResultExt, Error, anyhow, bail};
pub use serde;
pub use serde_json;

/// The result type of step functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[doc(hidden)]
#[allow(clippy::too_many_arguments, missing_docs)]
#[cfg(not(feature = "gpu"))]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "step",
        pub_export_macro: true,
        export_macro_name: "__export_step",
        default_bindings_module: "::weir_sdk::wit",
        runtime_path: "::weir_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
#[allow(clippy::too_many_arguments, missing_docs)]
#[cfg(feature = "gpu")]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "trusted-step",
        pub_export_macro: true,
        export_macro_name: "__export_step",
        default_bindings_module: "::weir_sdk::wit",
        runtime_path: "::weir_sdk::__wit_bindgen::rt",
    });
}

/// The host's training kernels (feature `gpu`). A step built with this
/// feature imports the capability, so it runs only where the pipeline
/// requests it (`.requires("gpu")`) and the runtime's trust policy trusts
/// the component; tensors stay on the host.
///
/// ```ignore
/// use weir_sdk::gpu::{Tensor, LogisticConfig, train_logistic};
/// let x = Tensor::from_csv("data", "train.csv", &["x1".into(), "x2".into()])?;
/// let y = Tensor::from_csv("data", "train.csv", &["label".into()])?;
/// let cfg = LogisticConfig { epochs: 100, batch_size: 0, learning_rate: 0.05, l2: 1e-4, seed: 0 };
/// let trained = train_logistic(&x, &y, 2, cfg, "model")?;
/// ```
#[cfg(feature = "gpu")]
pub mod gpu {
    pub use crate::wit::weir::step::gpu::{
        LogisticConfig, MlpConfig, Tensor, Trained, backend, predict_proba, train_logistic,
        train_mlp,
    };
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Log levels, from most to least verbose.
pub use wit::weir::step::log::Level;

/// What a step attempt is given: its params, inputs and outputs.
pub struct Context<P> {
    step: String,
    attempt: u32,
    params: P,
    inputs: BTreeMap<String, PathBuf>,
    outputs: BTreeMap<String, PathBuf>,
}

impl<P> Context<P> {
    /// The step's name in the pipeline.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The step's params.
    pub fn params(&self) -> &P {
        &self.params
    }

    /// The folder holding input `name` (read-only).
    pub fn input(&self, name: &str) -> Result<&Path> {
        self.inputs.get(name).map(PathBuf::as_path).ok_or_else(|| {
            anyhow!(
                "step '{}' has no input named '{name}' (its inputs: {})",
                self.step,
                names(self.inputs.keys())
            )
        })
    }

    /// The names of all inputs, sorted.
    pub fn input_names(&self) -> impl Iterator<Item = &str> {
        self.inputs.keys().map(String::as_str)
    }

    /// The one file inside input `name`: an input given as a file (say
    /// `data.csv`) arrives as a folder holding just that file.
    pub fn input_file(&self, name: &str) -> Result<PathBuf> {
        let dir = self.input(name)?;
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading input '{name}'"))? {
            let e = e?;
            if e.file_type()?.is_file() {
                files.push(e.path());
            }
        }
        match files.len() {
            1 => Ok(files.remove(0)),
            0 => bail!("input '{name}' holds no file"),
            n => bail!("input '{name}' holds {n} files; use input() and pick one"),
        }
    }

    /// The empty folder to write output `name` into.
    pub fn output(&self, name: &str) -> Result<&Path> {
        self.outputs.get(name).map(PathBuf::as_path).ok_or_else(|| {
            anyhow!(
                "step '{}' declares no output named '{name}' (its outputs: {})",
                self.step,
                names(self.outputs.keys())
            )
        })
    }

    /// Records a log line.
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        wit::weir::step::log::write(level, message.as_ref());
    }

    /// Records an info line.
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(Level::Info, message)
    }

    /// Records a warning.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log(Level::Warn, message)
    }

    /// Records a metric value.
    pub fn metric(&self, name: &str, value: f64) {
        wit::weir::step::metrics::emit(name, value);
    }
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[doc(hidden)]
pub fn __run<P: serde::de::DeserializeOwned>(
    inv: wit::weir::step::types::Invocation,
    f: fn(&mut Context<P>) -> Result<()>,
) -> std::result::Result<(), String> {
    // A step without params (`Context<()>`) accepts a step given none (`{}`).
    let params: P = serde_json::from_str(&inv.params)
        .or_else(|e| {
            if inv.params.trim() == "{}" {
                serde_json::from_str("null").map_err(|_| e)
            } else {
                Err(e)
            }
        })
        .map_err(|e| {
            format!(
                "step '{}': params do not fit the step's params type: {e} (params were {})",
                inv.step, inv.params
            )
        })?;
    let mut ctx = Context {
        step: inv.step,
        attempt: inv.attempt,
        params,
        inputs: inv
            .inputs
            .into_iter()
            .map(|i| (i.name, PathBuf::from(i.path)))
            .collect(),
        outputs: inv
            .outputs
            .into_iter()
            .map(|o| (o.name, PathBuf::from(o.path)))
            .collect(),
    };
    f(&mut ctx).map_err(|e| format!("{e:#}"))
}

/// Exports `fn(&mut Context<P>) -> Result<()>` as the step's entry point.
/// `P` is any `serde::Deserialize` type (use `serde_json::Value` for "anything").
#[macro_export]
macro_rules! step {
    ($run:path) => {
        struct __WeirStep;
        impl $crate::wit::Guest for __WeirStep {
            fn run(
                invocation: $crate::wit::weir::step::types::Invocation,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__run(invocation, $run)
            }
        }
        $crate::wit::__export_step!(__WeirStep with_types_in $crate::wit);
    };
}
