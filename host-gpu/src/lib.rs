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
//! shuffling). The CUDA backend (cudarc) and the WIT `trusted-step` world are
//! not written yet.
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
mod matrix;
pub mod model_io;
pub mod trainers;

pub use backend::{Backend, BackendKind, CpuBackend, Optimizer};
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
