//! Times GEMM and both trainers on the CPU and CUDA backends and checks the
//! GPU results against the CPU reference. Run by `gpu-check.sh`; prints one
//! table (medians of 5). Exits non-zero when no CUDA device works.

use std::time::Instant;
use weir_host_gpu::{Backend, CpuBackend, CudaBackend, Matrix, trainers};

fn random(rows: usize, cols: usize, seed: u32) -> Matrix {
    let mut s = seed.wrapping_mul(2654435761).max(1);
    let v = (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Matrix::from_vec(rows, cols, v).expect("sizes match")
}

fn median(mut f: impl FnMut() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..5).map(|_| f()).collect();
    v.sort_by(f64::total_cmp);
    v[2]
}

fn time(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1.0))
        .fold(0.0, f32::max)
}

fn main() {
    let gpu = match CudaBackend::new(0) {
        Ok(g) => g,
        Err(why) => {
            eprintln!("gpu_check: no usable CUDA device: {why}");
            std::process::exit(2);
        }
    };
    let cpu = CpuBackend::new();
    println!("device: {} ({})", gpu.device_name(), gpu.kind());
    println!(
        "{:<34} {:>12} {:>12} {:>9} {:>12}",
        "kernel", "cpu", "cuda", "cpu/cuda", "max rel err"
    );
    for n in [256usize, 1024, 4096] {
        let a = random(n, n, 1);
        let b = random(n, n, 2);
        let mut c_cpu = Matrix::zeros(n, n);
        let mut c_gpu = Matrix::zeros(n, n);
        let tc = median(|| {
            time(|| {
                cpu.gemm(1.0, &a, false, &b, false, 0.0, &mut c_cpu)
                    .expect("cpu gemm")
            })
        });
        let tg = median(|| {
            time(|| {
                gpu.gemm(1.0, &a, false, &b, false, 0.0, &mut c_gpu)
                    .expect("gpu gemm")
            })
        });
        println!(
            "{:<34} {:>10.2}ms {:>10.2}ms {:>9.1} {:>12.2e}",
            format!("gemm {n}x{n}x{n} (incl. copies)"),
            tc * 1e3,
            tg * 1e3,
            tc / tg,
            max_rel(c_gpu.as_slice(), c_cpu.as_slice())
        );
    }
    let rows = 20_000;
    let x = random(rows, 20, 3);
    let y: Vec<usize> = (0..rows)
        .map(|i| {
            let r = x.row(i);
            usize::from(r[0] * r[1] + r[2].sin() * 1.5 + 0.5 * r[3] - 0.3 * r[4] * r[4] > 0.0)
        })
        .collect();
    let lr = trainers::LogisticConfig {
        epochs: 100,
        ..Default::default()
    };
    let mlp = trainers::MlpConfig {
        hidden: vec![64, 64],
        epochs: 20,
        batch_size: 128,
        ..Default::default()
    };
    for name in ["logistic regression 20000x20", "mlp 64-64 20000x20"] {
        let train = |b: &dyn Backend| {
            if name.starts_with("logistic") {
                trainers::logistic_regression(b, &x, &y, 2, &lr)
            } else {
                trainers::mlp(b, &x, &y, 2, &mlp)
            }
            .expect("training")
        };
        let tc = median(|| time(|| drop(train(&cpu))));
        let tg = median(|| time(|| drop(train(&gpu))));
        let (mc, mg) = (train(&cpu), train(&gpu));
        let ac = trainers::accuracy(&mc.predict(&cpu, &x).expect("predict"), &y);
        let ag = trainers::accuracy(&mg.predict(&gpu, &x).expect("predict"), &y);
        println!(
            "{:<34} {:>11.3}s {:>11.3}s {:>9.2} {:>12}",
            name,
            tc,
            tg,
            tc / tg,
            format!("acc {ac:.4}/{ag:.4}")
        );
    }
}
