//! The kernel interface and its CPU reference implementation.

use crate::{KernelError, Matrix, Result};
use std::fmt;

/// Which kind of device produced a result (part of a step's cache key,
/// since float results differ between devices).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// The CPU reference backend.
    Cpu,
    /// A CUDA device of the given architecture (e.g. `sm_90`).
    Cuda {
        /// Compute architecture.
        arch: String,
    },
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendKind::Cpu => f.write_str("cpu"),
            BackendKind::Cuda { arch } => write!(f, "cuda:{arch}"),
        }
    }
}

/// Parameter update rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// Stochastic gradient descent with momentum.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum (0 for plain SGD).
        momentum: f32,
    },
    /// Adam.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator guard.
        eps: f32,
    },
}

impl Optimizer {
    /// Adam with the usual defaults and learning rate `lr`.
    pub fn adam(lr: f32) -> Optimizer {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Per-tensor optimizer state (momenta), created by [`OptState::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct OptState {
    pub(crate) m: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) t: i32,
}

impl OptState {
    /// State for a tensor of `len` parameters.
    pub fn new(len: usize) -> OptState {
        OptState {
            m: vec![0.0; len],
            v: vec![0.0; len],
            t: 0,
        }
    }
}

fn shape_err(op: &'static str, expected: String, found: String) -> KernelError {
    KernelError::Shape {
        op,
        expected,
        found,
    }
}

/// The kernels trainers are built from. Implementations must be
/// deterministic for equal inputs (no reduction order that depends on thread
/// timing).
pub trait Backend: Send + Sync {
    /// The device kind.
    fn kind(&self) -> BackendKind;

    /// `c = alpha * op(a) * op(b) + beta * c`, where `op` transposes when asked.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        alpha: f32,
        a: &Matrix,
        trans_a: bool,
        b: &Matrix,
        trans_b: bool,
        beta: f32,
        c: &mut Matrix,
    ) -> Result<()>;

    /// Adds `v` to every row of `m`.
    fn add_row_vector(&self, m: &mut Matrix, v: &[f32]) -> Result<()>;

    /// `max(0, x)` in place.
    fn relu(&self, m: &mut Matrix) -> Result<()>;

    /// Zeroes `grad` where the ReLU output `activated` is not positive.
    fn relu_backward(&self, grad: &mut Matrix, activated: &Matrix) -> Result<()>;

    /// Logistic sigmoid in place.
    fn sigmoid(&self, m: &mut Matrix) -> Result<()>;

    /// Softmax of each row in place (numerically stable).
    fn softmax_rows(&self, m: &mut Matrix) -> Result<()>;

    /// Mean cross-entropy of row probabilities `p` against `labels`; writes
    /// the gradient with respect to the logits, `(p - onehot) / n`, into `grad`.
    fn cross_entropy(&self, p: &Matrix, labels: &[usize], grad: &mut Matrix) -> Result<f32>;

    /// Mean binary cross-entropy of probabilities `p` (n x 1) against 0/1
    /// `labels`; writes `(p - y) / n` into `grad`.
    fn binary_cross_entropy(&self, p: &Matrix, labels: &[usize], grad: &mut Matrix) -> Result<f32>;

    /// Sum of each column of `m` into `out`.
    fn column_sums(&self, m: &Matrix, out: &mut [f32]) -> Result<()>;

    /// One optimizer step on `params` with `grads` plus L2 decay `l2 * params`.
    fn update(
        &self,
        opt: &Optimizer,
        state: &mut OptState,
        params: &mut [f32],
        grads: &[f32],
        l2: f32,
    ) -> Result<()>;
}

/// The CPU reference backend.
#[derive(Debug, Default, Clone)]
pub struct CpuBackend;

impl CpuBackend {
    /// A CPU backend (GEMM uses all cores).
    pub fn new() -> CpuBackend {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn gemm(
        &self,
        alpha: f32,
        a: &Matrix,
        trans_a: bool,
        b: &Matrix,
        trans_b: bool,
        beta: f32,
        c: &mut Matrix,
    ) -> Result<()> {
        let (m, k, n) = check::gemm(a, trans_a, b, trans_b, c)?;
        // Row-major strides; a transpose swaps them.
        let (rsa, csa) = if trans_a {
            (1, a.cols() as isize)
        } else {
            (a.cols() as isize, 1)
        };
        let (rsb, csb) = if trans_b {
            (1, b.cols() as isize)
        } else {
            (b.cols() as isize, 1)
        };
        let ldc = c.cols() as isize;
        if m == 0 || n == 0 {
            return Ok(());
        }
        // SAFETY: the shapes were checked above, so every index matrixmultiply
        // computes from (m, k, n) and the strides stays inside the three buffers.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                alpha,
                a.as_slice().as_ptr(),
                rsa,
                csa,
                b.as_slice().as_ptr(),
                rsb,
                csb,
                beta,
                c.as_mut_slice().as_mut_ptr(),
                ldc,
                1,
            );
        }
        Ok(())
    }

    fn add_row_vector(&self, m: &mut Matrix, v: &[f32]) -> Result<()> {
        check::row_vector(m, v)?;
        let cols = m.cols();
        for row in m.as_mut_slice().chunks_exact_mut(cols.max(1)) {
            for (x, b) in row.iter_mut().zip(v) {
                *x += b;
            }
        }
        Ok(())
    }

    fn relu(&self, m: &mut Matrix) -> Result<()> {
        for x in m.as_mut_slice() {
            *x = x.max(0.0);
        }
        Ok(())
    }

    fn relu_backward(&self, grad: &mut Matrix, activated: &Matrix) -> Result<()> {
        check::relu_backward(grad, activated)?;
        for (g, a) in grad.as_mut_slice().iter_mut().zip(activated.as_slice()) {
            if *a <= 0.0 {
                *g = 0.0;
            }
        }
        Ok(())
    }

    fn sigmoid(&self, m: &mut Matrix) -> Result<()> {
        for x in m.as_mut_slice() {
            *x = 1.0 / (1.0 + (-*x).exp());
        }
        Ok(())
    }

    fn softmax_rows(&self, m: &mut Matrix) -> Result<()> {
        let cols = m.cols().max(1);
        for row in m.as_mut_slice().chunks_exact_mut(cols) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for x in row.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            for x in row.iter_mut() {
                *x /= sum;
            }
        }
        Ok(())
    }

    fn cross_entropy(&self, p: &Matrix, labels: &[usize], grad: &mut Matrix) -> Result<f32> {
        check::cross_entropy(p, labels, grad)?;
        let n = p.rows().max(1) as f32;
        let k = p.cols();
        let mut loss = 0.0f64;
        grad.as_mut_slice().copy_from_slice(p.as_slice());
        for (i, &y) in labels.iter().enumerate() {
            if y >= k {
                return Err(KernelError::Invalid(format!(
                    "label {y} of row {i} is not below the class count {k}"
                )));
            }
            loss -= (p.row(i)[y].max(1e-12) as f64).ln();
            grad.as_mut_slice()[i * k + y] -= 1.0;
        }
        for g in grad.as_mut_slice() {
            *g /= n;
        }
        Ok((loss / n as f64) as f32)
    }

    fn binary_cross_entropy(&self, p: &Matrix, labels: &[usize], grad: &mut Matrix) -> Result<f32> {
        check::binary_cross_entropy(p, labels, grad)?;
        let n = p.rows().max(1) as f32;
        let mut loss = 0.0f64;
        for (i, &y) in labels.iter().enumerate() {
            if y > 1 {
                return Err(KernelError::Invalid(format!(
                    "label {y} of row {i} is not 0 or 1"
                )));
            }
            let q = p.as_slice()[i].clamp(1e-7, 1.0 - 1e-7) as f64;
            loss -= if y == 1 { q.ln() } else { (1.0 - q).ln() };
            grad.as_mut_slice()[i] = (p.as_slice()[i] - y as f32) / n;
        }
        Ok((loss / n as f64) as f32)
    }

    fn column_sums(&self, m: &Matrix, out: &mut [f32]) -> Result<()> {
        check::column_sums(m, out)?;
        out.fill(0.0);
        for i in 0..m.rows() {
            for (o, x) in out.iter_mut().zip(m.row(i)) {
                *o += x;
            }
        }
        Ok(())
    }

    fn update(
        &self,
        opt: &Optimizer,
        state: &mut OptState,
        params: &mut [f32],
        grads: &[f32],
        l2: f32,
    ) -> Result<()> {
        check::update(state, params, grads)?;
        state.t += 1;
        match *opt {
            Optimizer::Sgd { lr, momentum } => {
                for ((p, g), m) in params.iter_mut().zip(grads).zip(state.m.iter_mut()) {
                    *m = momentum * *m + g + l2 * *p;
                    *p -= lr * *m;
                }
            }
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let c1 = 1.0 - beta1.powi(state.t);
                let c2 = 1.0 - beta2.powi(state.t);
                for (((p, g), m), v) in params
                    .iter_mut()
                    .zip(grads)
                    .zip(state.m.iter_mut())
                    .zip(state.v.iter_mut())
                {
                    let g = g + l2 * *p;
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                }
            }
        }
        Ok(())
    }
}

/// Operand checks shared by every backend, so they all refuse the same
/// shapes with the same messages.
pub(crate) mod check {
    use super::{OptState, shape_err};
    use crate::{Matrix, Result};

    /// `(m, k, n)` of `op(a) * op(b)` into `c`, or why they do not fit.
    pub(crate) fn gemm(
        a: &Matrix,
        trans_a: bool,
        b: &Matrix,
        trans_b: bool,
        c: &Matrix,
    ) -> Result<(usize, usize, usize)> {
        let (m, k) = if trans_a {
            (a.cols(), a.rows())
        } else {
            (a.rows(), a.cols())
        };
        let (k2, n) = if trans_b {
            (b.cols(), b.rows())
        } else {
            (b.rows(), b.cols())
        };
        if k != k2 || c.rows() != m || c.cols() != n {
            return Err(shape_err(
                "gemm",
                format!("op(a) m x k, op(b) k x n, c m x n with m={m} k={k} n={n}"),
                format!(
                    "a {}{}, b {}{}, c {}",
                    a.shape(),
                    if trans_a { "^T" } else { "" },
                    b.shape(),
                    if trans_b { "^T" } else { "" },
                    c.shape()
                ),
            ));
        }
        Ok((m, k, n))
    }

    pub(crate) fn row_vector(m: &Matrix, v: &[f32]) -> Result<()> {
        if v.len() != m.cols() {
            return Err(shape_err(
                "add_row_vector",
                format!("{} values", m.cols()),
                format!("{} values", v.len()),
            ));
        }
        Ok(())
    }

    pub(crate) fn relu_backward(grad: &Matrix, activated: &Matrix) -> Result<()> {
        if grad.shape() != activated.shape() {
            return Err(shape_err("relu_backward", activated.shape(), grad.shape()));
        }
        Ok(())
    }

    pub(crate) fn cross_entropy(p: &Matrix, labels: &[usize], grad: &Matrix) -> Result<()> {
        if labels.len() != p.rows() || grad.shape() != p.shape() {
            return Err(shape_err(
                "cross_entropy",
                format!("{} labels and grad {}", p.rows(), p.shape()),
                format!("{} labels and grad {}", labels.len(), grad.shape()),
            ));
        }
        Ok(())
    }

    pub(crate) fn binary_cross_entropy(p: &Matrix, labels: &[usize], grad: &Matrix) -> Result<()> {
        if p.cols() != 1 || labels.len() != p.rows() || grad.shape() != p.shape() {
            return Err(shape_err(
                "binary_cross_entropy",
                format!("p {}x1 and {} labels", labels.len(), labels.len()),
                format!("p {} and {} labels", p.shape(), labels.len()),
            ));
        }
        Ok(())
    }

    pub(crate) fn column_sums(m: &Matrix, out: &[f32]) -> Result<()> {
        if out.len() != m.cols() {
            return Err(shape_err(
                "column_sums",
                format!("{} outputs", m.cols()),
                format!("{} outputs", out.len()),
            ));
        }
        Ok(())
    }

    pub(crate) fn update(state: &OptState, params: &[f32], grads: &[f32]) -> Result<()> {
        if params.len() != grads.len() || state.m.len() != params.len() {
            return Err(shape_err(
                "update",
                format!("{} grads and state", params.len()),
                format!("{} grads, state {}", grads.len(), state.m.len()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_a_naive_product_with_transposes() {
        let be = CpuBackend::new();
        let a = Matrix::from_rows(&[&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]]); // 2x3
        let b = Matrix::from_rows(&[&[1.0, 0.5], &[0.0, 1.0], &[2.0, -1.0]]); // 3x2
        let mut c = Matrix::zeros(2, 2);
        be.gemm(1.0, &a, false, &b, false, 0.0, &mut c).unwrap();
        assert_eq!(c.as_slice(), &[7.0, -0.5, 16.0, 1.0]);
        // a^T (3x2) * a (2x3) = 3x3
        let mut d = Matrix::zeros(3, 3);
        be.gemm(1.0, &a, true, &a, false, 0.0, &mut d).unwrap();
        assert_eq!(d.row(0), &[17.0, 22.0, 27.0]);
        // a * a^T = 2x2, accumulated onto c with beta = 1
        be.gemm(1.0, &a, false, &a, true, 1.0, &mut c).unwrap();
        assert_eq!(c.as_slice(), &[21.0, 31.5, 48.0, 78.0]);
        let err = be
            .gemm(1.0, &a, false, &a, false, 0.0, &mut c)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("shape mismatch in gemm"), "{err}");
    }

    #[test]
    fn softmax_and_cross_entropy_gradient() {
        let be = CpuBackend::new();
        let mut p = Matrix::from_rows(&[&[1.0, 2.0, 3.0], &[1000.0, 0.0, 0.0]]);
        be.softmax_rows(&mut p).unwrap();
        assert!((p.row(0).iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p.row(1)[0] - 1.0).abs() < 1e-6, "stable for large logits");
        let mut g = Matrix::zeros(2, 3);
        let loss = be.cross_entropy(&p, &[2, 0], &mut g).unwrap();
        assert!(loss > 0.0 && loss < 1.0);
        assert!((g.row(0)[2] - (p.row(0)[2] - 1.0) / 2.0).abs() < 1e-7);
        assert!(be.cross_entropy(&p, &[3, 0], &mut g).is_err());
    }
}
