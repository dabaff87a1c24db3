//! The CUDA backend (feature `cuda`, on by default): cuBLAS for GEMM and
//! NVRTC-compiled kernels for the row-wise operations, through cudarc with
//! runtime dynamic loading, so the crate builds and runs where CUDA is
//! absent. [`CudaBackend::new`] checks that the driver, NVRTC and cuBLAS
//! libraries can be loaded *before* touching them (cudarc panics when they
//! are missing) and contains any panic that still escapes, so a machine
//! without a GPU gets an error, never an abort; [`crate::select_backend`]
//! then picks the CPU.
//!
//! Operands arrive as host [`Matrix`] values (the [`Backend`] contract), so
//! each call copies its operands to the device and its results back. Every
//! kernel is deterministic: one thread per element, or one thread per row or
//! column for reductions, each summing in a fixed order; losses are summed
//! on the host in row order.

use crate::backend::{Backend, BackendKind, OptState, Optimizer, check};
use crate::{KernelError, Matrix, Result};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

const KERNELS: &str = r#"
extern "C" __global__ void add_row_vector(float* m, const float* v, int rows, int cols) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows * cols) m[i] += v[i % cols];
}
extern "C" __global__ void relu(float* m, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) m[i] = fmaxf(m[i], 0.0f);
}
extern "C" __global__ void relu_backward(float* grad, const float* activated, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && activated[i] <= 0.0f) grad[i] = 0.0f;
}
extern "C" __global__ void sigmoid(float* m, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) m[i] = 1.0f / (1.0f + expf(-m[i]));
}
extern "C" __global__ void softmax_rows(float* m, int rows, int cols) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float* row = m + (long)r * cols;
    float mx = -INFINITY;
    for (int j = 0; j < cols; j++) mx = fmaxf(mx, row[j]);
    float sum = 0.0f;
    for (int j = 0; j < cols; j++) { row[j] = expf(row[j] - mx); sum += row[j]; }
    for (int j = 0; j < cols; j++) row[j] /= sum;
}
// grad = (p - onehot(labels)) / n; loss[r] = -ln(max(p[r, y], 1e-12)).
extern "C" __global__ void cross_entropy(const float* p, const int* labels, float* grad, float* loss, int rows, int cols) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float n = (float)(rows > 0 ? rows : 1);
    int y = labels[r];
    for (int j = 0; j < cols; j++) {
        float g = p[(long)r * cols + j] - (j == y ? 1.0f : 0.0f);
        grad[(long)r * cols + j] = g / n;
    }
    loss[r] = -logf(fmaxf(p[(long)r * cols + y], 1e-12f));
}
extern "C" __global__ void binary_cross_entropy(const float* p, const int* labels, float* grad, float* loss, int rows) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float n = (float)(rows > 0 ? rows : 1);
    float q = fminf(fmaxf(p[r], 1e-7f), 1.0f - 1e-7f);
    loss[r] = labels[r] == 1 ? -logf(q) : -logf(1.0f - q);
    grad[r] = (p[r] - (float)labels[r]) / n;
}
extern "C" __global__ void column_sums(const float* m, float* out, int rows, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int r = 0; r < rows; r++) s += m[(long)r * cols + c];
    out[c] = s;
}
extern "C" __global__ void sgd(float* p, const float* g, float* m, int n, float lr, float momentum, float l2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    m[i] = momentum * m[i] + g[i] + l2 * p[i];
    p[i] -= lr * m[i];
}
extern "C" __global__ void adam(float* p, const float* g, float* m, float* v, int n, float lr, float beta1, float beta2, float eps, float c1, float c2, float l2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i] + l2 * p[i];
    m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
    v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    p[i] -= lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
}
"#;

const NAMES: [&str; 10] = [
    "add_row_vector",
    "relu",
    "relu_backward",
    "sigmoid",
    "softmax_rows",
    "cross_entropy",
    "binary_cross_entropy",
    "column_sums",
    "sgd",
    "adam",
];

struct Device {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    funcs: Vec<CudaFunction>,
}

/// Training kernels on a CUDA device.
pub struct CudaBackend {
    arch: String,
    name: String,
    device: Mutex<Device>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend({}, {})", self.name, self.arch)
    }
}

fn cuda_err(what: &str, e: impl std::fmt::Display) -> KernelError {
    KernelError::Invalid(format!("CUDA {what}: {e}"))
}

/// Runs `f`, turning a panic inside cudarc into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(KernelError::Invalid(format!("CUDA {what} failed: {msg}")))
        }
    }
}

fn launch_cfg(n: usize) -> LaunchConfig {
    LaunchConfig::for_num_elems(n.max(1) as u32)
}

fn dim(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n)
        .map_err(|_| KernelError::Invalid(format!("{what} {n} is too large for the CUDA kernels")))
}

impl CudaBackend {
    /// The CUDA device `ordinal`, or why it cannot be used (no driver
    /// library, no device, no NVRTC or cuBLAS, a kernel that does not
    /// compile). Never panics.
    pub fn new(ordinal: usize) -> std::result::Result<CudaBackend, crate::BackendError> {
        use crate::BackendError;
        // SAFETY: these only try to dlopen the libraries.
        let (driver, nvrtc, cublas) = unsafe {
            (
                cudarc::driver::sys::is_culib_present(),
                cudarc::nvrtc::sys::is_culib_present(),
                cudarc::cublas::sys::is_culib_present(),
            )
        };
        if !driver {
            return Err(BackendError::NoDriver);
        }
        if !nvrtc {
            return Err(BackendError::MissingLibrary("NVRTC (libnvrtc)"));
        }
        if !cublas {
            return Err(BackendError::MissingLibrary("cuBLAS (libcublas)"));
        }
        Ok(guarded("initialisation", || Self::init(ordinal))?)
    }

    fn init(ordinal: usize) -> Result<CudaBackend> {
        let count = CudaContext::device_count().map_err(|e| cuda_err("device count", e))?;
        if count <= 0 {
            return Err(KernelError::Invalid(
                "the CUDA driver reports no device".into(),
            ));
        }
        if ordinal >= count as usize {
            return Err(KernelError::Invalid(format!(
                "no CUDA device {ordinal} (this machine has {count})"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err("context", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| cuda_err("compute capability", e))?;
        let name = ctx.name().map_err(|e| cuda_err("device name", e))?;
        let ptx =
            cudarc::nvrtc::compile_ptx(KERNELS).map_err(|e| cuda_err("kernel compilation", e))?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| cuda_err("module load", e))?;
        let funcs = NAMES
            .iter()
            .map(|n| module.load_function(n).map_err(|e| cuda_err(n, e)))
            .collect::<Result<Vec<_>>>()?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| cuda_err("cuBLAS", e))?;
        Ok(CudaBackend {
            arch: format!("sm_{major}{minor}"),
            name,
            device: Mutex::new(Device {
                stream,
                blas,
                funcs,
            }),
        })
    }

    /// The device's name, e.g. `NVIDIA H200`.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    fn with<T>(&self, what: &str, f: impl FnOnce(&Device) -> Result<T>) -> Result<T> {
        let d = self.device.lock().unwrap_or_else(|p| p.into_inner());
        guarded(what, || f(&d))
    }
}

impl Device {
    fn func(&self, name: &str) -> &CudaFunction {
        // NAMES and funcs are built together.
        &self.funcs[NAMES.iter().position(|n| *n == name).unwrap_or(0)]
    }
    fn up<T: cudarc::driver::DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(v)
            .map_err(|e| cuda_err("copy to device", e))
    }
    fn down(&self, s: &CudaSlice<f32>, out: &mut [f32]) -> Result<()> {
        self.stream
            .memcpy_dtoh(s, out)
            .map_err(|e| cuda_err("copy from device", e))?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronize", e))
    }
    fn labels(&self, labels: &[usize], limit: usize, what: &str) -> Result<CudaSlice<i32>> {
        let mut v = Vec::with_capacity(labels.len());
        for (i, &y) in labels.iter().enumerate() {
            if y >= limit {
                return Err(KernelError::Invalid(if limit == 2 && what == "binary" {
                    format!("label {y} of row {i} is not 0 or 1")
                } else {
                    format!("label {y} of row {i} is not below the class count {limit}")
                }));
            }
            v.push(y as i32);
        }
        self.up(&v)
    }
    /// Elementwise in-place kernel `name(m, n)`.
    fn map(&self, name: &str, m: &mut Matrix) -> Result<()> {
        let n = dim(m.as_slice().len(), "matrix size")?;
        let mut dm = self.up(m.as_slice())?;
        let mut b = self.stream.launch_builder(self.func(name));
        b.arg(&mut dm).arg(&n);
        // SAFETY: the kernel's signature is (float*, int) and n is dm's length.
        unsafe { b.launch(launch_cfg(n as usize)) }.map_err(|e| cuda_err(name, e))?;
        self.down(&dm, m.as_mut_slice())
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda {
            arch: self.arch.clone(),
        }
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
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            for x in c.as_mut_slice() {
                *x *= beta;
            }
            return Ok(());
        }
        self.with("gemm", |d| {
            let da = d.up(a.as_slice())?;
            let db = d.up(b.as_slice())?;
            let mut dc = d.up(c.as_slice())?;
            // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T,
            // and a row-major buffer read column-major is the transpose.
            let op = |t: bool| {
                if t {
                    cublasOperation_t::CUBLAS_OP_T
                } else {
                    cublasOperation_t::CUBLAS_OP_N
                }
            };
            let cfg = GemmConfig {
                transa: op(trans_b),
                transb: op(trans_a),
                m: dim(n, "gemm n")?,
                n: dim(m, "gemm m")?,
                k: dim(k, "gemm k")?,
                alpha,
                lda: dim(b.cols().max(1), "ldb")?,
                ldb: dim(a.cols().max(1), "lda")?,
                beta,
                ldc: dim(n, "ldc")?,
            };
            // SAFETY: the shapes were checked above; the leading dimensions are
            // the row lengths of the row-major buffers.
            unsafe { d.blas.gemm(cfg, &db, &da, &mut dc) }.map_err(|e| cuda_err("sgemm", e))?;
            d.down(&dc, c.as_mut_slice())
        })
    }

    fn add_row_vector(&self, m: &mut Matrix, v: &[f32]) -> Result<()> {
        check::row_vector(m, v)?;
        self.with("add_row_vector", |d| {
            let (rows, cols) = (dim(m.rows(), "rows")?, dim(m.cols(), "cols")?);
            let mut dm = d.up(m.as_slice())?;
            let dv = d.up(v)?;
            let mut b = d.stream.launch_builder(d.func("add_row_vector"));
            b.arg(&mut dm).arg(&dv).arg(&rows).arg(&cols);
            // SAFETY: (float*, const float*, int, int) with rows*cols elements in dm and cols in dv.
            unsafe { b.launch(launch_cfg(m.as_slice().len())) }
                .map_err(|e| cuda_err("add_row_vector", e))?;
            d.down(&dm, m.as_mut_slice())
        })
    }

    fn relu(&self, m: &mut Matrix) -> Result<()> {
        self.with("relu", |d| d.map("relu", m))
    }

    fn relu_backward(&self, grad: &mut Matrix, activated: &Matrix) -> Result<()> {
        check::relu_backward(grad, activated)?;
        self.with("relu_backward", |d| {
            let n = dim(grad.as_slice().len(), "matrix size")?;
            let mut dg = d.up(grad.as_slice())?;
            let da = d.up(activated.as_slice())?;
            let mut b = d.stream.launch_builder(d.func("relu_backward"));
            b.arg(&mut dg).arg(&da).arg(&n);
            // SAFETY: (float*, const float*, int), both of n elements.
            unsafe { b.launch(launch_cfg(n as usize)) }
                .map_err(|e| cuda_err("relu_backward", e))?;
            d.down(&dg, grad.as_mut_slice())
        })
    }

    fn sigmoid(&self, m: &mut Matrix) -> Result<()> {
        self.with("sigmoid", |d| d.map("sigmoid", m))
    }

    fn softmax_rows(&self, m: &mut Matrix) -> Result<()> {
        self.with("softmax_rows", |d| {
            let (rows, cols) = (dim(m.rows(), "rows")?, dim(m.cols(), "cols")?);
            let mut dm = d.up(m.as_slice())?;
            let mut b = d.stream.launch_builder(d.func("softmax_rows"));
            b.arg(&mut dm).arg(&rows).arg(&cols);
            // SAFETY: (float*, int, int) over rows*cols elements.
            unsafe { b.launch(launch_cfg(m.rows())) }.map_err(|e| cuda_err("softmax_rows", e))?;
            d.down(&dm, m.as_mut_slice())
        })
    }

    fn cross_entropy(&self, p: &Matrix, labels: &[usize], grad: &mut Matrix) -> Result<f32> {
        check::cross_entropy(p, labels, grad)?;
        self.with("cross_entropy", |d| {
            let (rows, cols) = (dim(p.rows(), "rows")?, dim(p.cols(), "cols")?);
            let dl = d.labels(labels, p.cols(), "class")?;
            let dp = d.up(p.as_slice())?;
            let mut dg = d.up(grad.as_slice())?;
            let mut dloss = d.up(&vec![0.0f32; p.rows()])?;
            let mut b = d.stream.launch_builder(d.func("cross_entropy"));
            b.arg(&dp)
                .arg(&dl)
                .arg(&mut dg)
                .arg(&mut dloss)
                .arg(&rows)
                .arg(&cols);
            // SAFETY: buffers sized rows*cols, rows, rows*cols and rows.
            unsafe { b.launch(launch_cfg(p.rows())) }.map_err(|e| cuda_err("cross_entropy", e))?;
            let mut loss = vec![0.0f32; p.rows()];
            d.down(&dloss, &mut loss)?;
            d.down(&dg, grad.as_mut_slice())?;
            let total: f64 = loss.iter().map(|&l| l as f64).sum();
            Ok((total / p.rows().max(1) as f64) as f32)
        })
    }

    fn binary_cross_entropy(&self, p: &Matrix, labels: &[usize], grad: &mut Matrix) -> Result<f32> {
        check::binary_cross_entropy(p, labels, grad)?;
        self.with("binary_cross_entropy", |d| {
            let rows = dim(p.rows(), "rows")?;
            let dl = d.labels(labels, 2, "binary")?;
            let dp = d.up(p.as_slice())?;
            let mut dg = d.up(grad.as_slice())?;
            let mut dloss = d.up(&vec![0.0f32; p.rows()])?;
            let mut b = d.stream.launch_builder(d.func("binary_cross_entropy"));
            b.arg(&dp).arg(&dl).arg(&mut dg).arg(&mut dloss).arg(&rows);
            // SAFETY: four buffers of rows elements.
            unsafe { b.launch(launch_cfg(p.rows())) }
                .map_err(|e| cuda_err("binary_cross_entropy", e))?;
            let mut loss = vec![0.0f32; p.rows()];
            d.down(&dloss, &mut loss)?;
            d.down(&dg, grad.as_mut_slice())?;
            let total: f64 = loss.iter().map(|&l| l as f64).sum();
            Ok((total / p.rows().max(1) as f64) as f32)
        })
    }

    fn column_sums(&self, m: &Matrix, out: &mut [f32]) -> Result<()> {
        check::column_sums(m, out)?;
        self.with("column_sums", |d| {
            let (rows, cols) = (dim(m.rows(), "rows")?, dim(m.cols(), "cols")?);
            let dm = d.up(m.as_slice())?;
            let mut dout = d.up(&vec![0.0f32; m.cols()])?;
            let mut b = d.stream.launch_builder(d.func("column_sums"));
            b.arg(&dm).arg(&mut dout).arg(&rows).arg(&cols);
            // SAFETY: (const float* rows*cols, float* cols, int, int).
            unsafe { b.launch(launch_cfg(m.cols())) }.map_err(|e| cuda_err("column_sums", e))?;
            d.down(&dout, out)
        })
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
        self.with("update", |d| {
            let n = dim(params.len(), "parameter count")?;
            let mut dp = d.up(params)?;
            let dg = d.up(grads)?;
            let mut dm = d.up(&state.m)?;
            match *opt {
                Optimizer::Sgd { lr, momentum } => {
                    let mut b = d.stream.launch_builder(d.func("sgd"));
                    b.arg(&mut dp)
                        .arg(&dg)
                        .arg(&mut dm)
                        .arg(&n)
                        .arg(&lr)
                        .arg(&momentum)
                        .arg(&l2);
                    // SAFETY: three buffers of n elements, then scalars.
                    unsafe { b.launch(launch_cfg(params.len())) }
                        .map_err(|e| cuda_err("sgd", e))?;
                }
                Optimizer::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                } => {
                    let c1 = 1.0 - beta1.powi(state.t);
                    let c2 = 1.0 - beta2.powi(state.t);
                    let mut dv = d.up(&state.v)?;
                    let mut b = d.stream.launch_builder(d.func("adam"));
                    b.arg(&mut dp)
                        .arg(&dg)
                        .arg(&mut dm)
                        .arg(&mut dv)
                        .arg(&n)
                        .arg(&lr)
                        .arg(&beta1)
                        .arg(&beta2)
                        .arg(&eps)
                        .arg(&c1)
                        .arg(&c2)
                        .arg(&l2);
                    // SAFETY: four buffers of n elements, then scalars.
                    unsafe { b.launch(launch_cfg(params.len())) }
                        .map_err(|e| cuda_err("adam", e))?;
                    d.down(&dv, &mut state.v)?;
                }
            }
            d.down(&dm, &mut state.m)?;
            d.down(&dp, params)
        })
    }
}
