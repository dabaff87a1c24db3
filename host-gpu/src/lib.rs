//! weir-host-gpu: training kernels that trusted steps reach through a host
//! capability, behind a [`Backend`] trait.
//!
//! This crate has no wasmtime dependency; the runtime adapts it to a WIT
//! interface. Today it holds the [`CpuBackend`] (multi-threaded GEMM from
//! `matrixmultiply`, deterministic: no reduction depends on thread timing),
//! which is also the reference that accelerated backends are tested against,
//! and two trainers built only from backend kernels:
//! [`trainers::logistic_regression`] (binary and multinomial, L2) and
//! [`trainers::mlp`] (ReLU hidden layers, minibatches with seeded
//! shuffling). With the `cuda` feature (default) it also holds
//! `CudaBackend` (cuBLAS + NVRTC kernels through cudarc, loaded at run time,
//! so the crate builds and runs without CUDA); [`select_backend`] picks one.
//!
//! ```
//! use weir_host_gpu::{CpuBackend, Matrix, trainers};
//! // Two separable blobs.
//! let x = Matrix::from_rows(&[&[0.0, 0.1], &[0.2, 0.0], &[3.0, 3.1], &[3.2, 2.9]]);
//! let y = vec![0, 0, 1, 1];
//! let cfg = trainers::LogisticConfig { epochs: 200, ..Default::default() };
//! let model = trainers::logistic_regression(&CpuBackend::new(), &x, &y, 2, &cfg).unwrap();
//! assert_eq!(model.predict(&CpuBackend::new(), &x).unwrap(), y);
//! ```
#![deny(missing_docs)]

mod backend;
#[cfg(feature = "cuda")]
mod cuda;
mod matrix;
pub mod model_io;
pub mod npy;
pub mod trainers;

pub use backend::{Backend, BackendKind, CpuBackend, OptState, Optimizer};
#[cfg(feature = "cuda")]
pub use cuda::CudaBackend;

use std::sync::Arc;

/// Which backend serves the training kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// CUDA device 0 when one works, else the CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// CUDA device 0, or an error.
    Cuda,
}

impl std::str::FromStr for BackendChoice {
    type Err = BackendError;
    fn from_str(s: &str) -> std::result::Result<BackendChoice, BackendError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "cuda" | "gpu" => Ok(BackendChoice::Cuda),
            other => Err(BackendError::UnknownChoice(other.to_string())),
        }
    }
}

/// Why a backend cannot be had: CUDA unusable on this machine, or a
/// backend name that is not one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// A name that is not a backend.
    #[error("unknown training backend {0:?} (expected auto, cpu or cuda)")]
    UnknownChoice(String),
    /// This build has no CUDA support.
    #[error("weir-host-gpu was built without the `cuda` feature")]
    NotBuilt,
    /// No CUDA driver library.
    #[error("no CUDA driver library (libcuda) on this machine")]
    NoDriver,
    /// The driver is there, a library CUDA kernels need is not.
    #[error("the CUDA driver is present but {0} is not")]
    MissingLibrary(&'static str),
    /// The device could not be set up (no device, a context or a kernel
    /// that failed).
    #[error(transparent)]
    Device(#[from] KernelError),
    /// CUDA was asked for ([`BackendChoice::Cuda`]) and cannot be used.
    #[error("CUDA was required but cannot be used: {0}")]
    Required(Box<BackendError>),
}

/// The backend for `choice`, and for [`BackendChoice::Auto`] on a machine
/// where CUDA does not work, why the CPU was chosen. An error only when
/// CUDA was required and does not work. Never panics.
pub fn select_backend(
    choice: BackendChoice,
) -> std::result::Result<(Arc<dyn Backend>, Option<BackendError>), BackendError> {
    let cpu = || -> Arc<dyn Backend> { Arc::new(CpuBackend::new()) };
    match choice {
        BackendChoice::Cpu => Ok((cpu(), None)),
        BackendChoice::Auto | BackendChoice::Cuda => match cuda_backend() {
            Ok(b) => Ok((b, None)),
            Err(why) if choice == BackendChoice::Auto => Ok((cpu(), Some(why))),
            Err(why) => Err(BackendError::Required(Box::new(why))),
        },
    }
}

#[cfg(feature = "cuda")]
fn cuda_backend() -> std::result::Result<Arc<dyn Backend>, BackendError> {
    CudaBackend::new(0).map(|b| Arc::new(b) as Arc<dyn Backend>)
}

#[cfg(not(feature = "cuda"))]
fn cuda_backend() -> std::result::Result<Arc<dyn Backend>, BackendError> {
    Err(BackendError::NotBuilt)
}
pub use matrix::Matrix;

/// An error from a kernel or trainer, naming what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// Operand shapes that do not fit together.
    #[error("shape mismatch in {op}: expected {expected}, found {found}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What was expected.
        expected: String,
        /// What was given.
        found: String,
    },
    /// A bad argument (labels out of range, empty data, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Results of kernels and trainers.
pub type Result<T> = std::result::Result<T, KernelError>;
