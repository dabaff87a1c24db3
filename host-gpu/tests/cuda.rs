//! The CUDA backend against the CPU reference. Each test skips with a
//! message when no CUDA device works here, and fails instead when
//! `WEIR_REQUIRE_GPU=1` (as `gpu-check.sh` sets it), so a GPU machine can
//! never pass by skipping.

use weir_host_gpu::{
    Backend, BackendChoice, CpuBackend, Matrix, OptState, Optimizer, select_backend, trainers,
};

#[cfg(feature = "cuda")]
fn cuda() -> Option<weir_host_gpu::CudaBackend> {
    match weir_host_gpu::CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(why) => {
            if std::env::var("WEIR_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("WEIR_REQUIRE_GPU=1 but CUDA cannot be used: {why}");
            }
            eprintln!(
                "skipping: no usable CUDA device ({why}); WEIR_REQUIRE_GPU=1 makes this a failure"
            );
            None
        }
    }
}

/// Relative error bound for float32 kernels on the GPU against the CPU
/// (different summation order and fused multiply-adds).
const REL: f32 = 1e-4;

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = REL * x.abs().max(y.abs()).max(1.0);
        assert!((x - y).abs() <= tol, "{what}[{i}]: gpu {x} vs cpu {y}");
    }
}

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
    Matrix::from_vec(rows, cols, v).unwrap()
}

#[test]
fn choosing_a_backend_never_panics_and_explains_a_cpu_fallback() {
    let (auto, why) = select_backend(BackendChoice::Auto).unwrap();
    let (cpu, none) = select_backend(BackendChoice::Cpu).unwrap();
    assert_eq!(cpu.kind().to_string(), "cpu");
    assert!(none.is_none());
    match select_backend(BackendChoice::Cuda) {
        Ok((b, _)) => assert!(b.kind().to_string().starts_with("cuda:sm_"), "{}", b.kind()),
        Err(e) => {
            assert!(
                matches!(e, weir_host_gpu::BackendError::Required(_)),
                "{e:?}"
            );
            assert!(
                e.to_string()
                    .starts_with("CUDA was required but cannot be used: "),
                "{e}"
            );
            assert_eq!(auto.kind().to_string(), "cpu");
            assert!(why.is_some_and(|w| !w.to_string().is_empty()));
        }
    }
    assert!("cuda".parse::<BackendChoice>().is_ok());
    assert!(
        "tpu"
            .parse::<BackendChoice>()
            .unwrap_err()
            .to_string()
            .contains("auto, cpu or cuda")
    );
}

#[cfg(feature = "cuda")]
#[test]
fn every_kernel_matches_the_cpu_reference() {
    let Some(gpu) = cuda() else { return };
    let cpu = CpuBackend::new();
    for (m, k, n) in [(1, 1, 1), (7, 5, 3), (64, 33, 17), (300, 128, 65)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = if ta { random(k, m, 1) } else { random(m, k, 1) };
            let b = if tb { random(n, k, 2) } else { random(k, n, 2) };
            let c0 = random(m, n, 3);
            let (mut c1, mut c2) = (c0.clone(), c0.clone());
            gpu.gemm(0.7, &a, ta, &b, tb, 0.3, &mut c1).unwrap();
            cpu.gemm(0.7, &a, ta, &b, tb, 0.3, &mut c2).unwrap();
            close(
                c1.as_slice(),
                c2.as_slice(),
                &format!("gemm {m}x{k}x{n} {ta} {tb}"),
            );
        }
    }
    let x = random(50, 7, 4);
    let v: Vec<f32> = (0..7).map(|i| i as f32 * 0.1).collect();
    let (mut a, mut b) = (x.clone(), x.clone());
    gpu.add_row_vector(&mut a, &v).unwrap();
    cpu.add_row_vector(&mut b, &v).unwrap();
    close(a.as_slice(), b.as_slice(), "add_row_vector");
    for op in ["relu", "sigmoid", "softmax_rows"] {
        let (mut a, mut b) = (x.clone(), x.clone());
        match op {
            "relu" => (gpu.relu(&mut a).unwrap(), cpu.relu(&mut b).unwrap()),
            "sigmoid" => (gpu.sigmoid(&mut a).unwrap(), cpu.sigmoid(&mut b).unwrap()),
            _ => (
                gpu.softmax_rows(&mut a).unwrap(),
                cpu.softmax_rows(&mut b).unwrap(),
            ),
        };
        close(a.as_slice(), b.as_slice(), op);
    }
    let act = random(50, 7, 5);
    let (mut a, mut b) = (x.clone(), x.clone());
    gpu.relu_backward(&mut a, &act).unwrap();
    cpu.relu_backward(&mut b, &act).unwrap();
    close(a.as_slice(), b.as_slice(), "relu_backward");
    let mut p = x.clone();
    cpu.softmax_rows(&mut p).unwrap();
    let labels: Vec<usize> = (0..50).map(|i| i % 7).collect();
    let (mut ga, mut gb) = (Matrix::zeros(50, 7), Matrix::zeros(50, 7));
    let la = gpu.cross_entropy(&p, &labels, &mut ga).unwrap();
    let lb = cpu.cross_entropy(&p, &labels, &mut gb).unwrap();
    close(&[la], &[lb], "cross_entropy loss");
    close(ga.as_slice(), gb.as_slice(), "cross_entropy grad");
    let mut q = random(50, 1, 6);
    cpu.sigmoid(&mut q).unwrap();
    let bl: Vec<usize> = (0..50).map(|i| i % 2).collect();
    let (mut ga, mut gb) = (Matrix::zeros(50, 1), Matrix::zeros(50, 1));
    let la = gpu.binary_cross_entropy(&q, &bl, &mut ga).unwrap();
    let lb = cpu.binary_cross_entropy(&q, &bl, &mut gb).unwrap();
    close(&[la], &[lb], "bce loss");
    close(ga.as_slice(), gb.as_slice(), "bce grad");
    let (mut sa, mut sb) = (vec![0.0; 7], vec![0.0; 7]);
    gpu.column_sums(&x, &mut sa).unwrap();
    cpu.column_sums(&x, &mut sb).unwrap();
    close(&sa, &sb, "column_sums");
    for opt in [
        Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
        },
        Optimizer::adam(0.01),
    ] {
        let (mut pa, mut pb) = (x.as_slice().to_vec(), x.as_slice().to_vec());
        let g = random(50, 7, 7);
        let (mut oa, mut ob) = (OptState::new(350), OptState::new(350));
        for _ in 0..3 {
            gpu.update(&opt, &mut oa, &mut pa, g.as_slice(), 1e-3)
                .unwrap();
            cpu.update(&opt, &mut ob, &mut pb, g.as_slice(), 1e-3)
                .unwrap();
        }
        close(&pa, &pb, &format!("{opt:?}"));
    }
    // Bad input is an error, not a crash.
    assert!(
        gpu.cross_entropy(&p, &vec![9; 50], &mut ga.clone())
            .is_err()
    );
    assert!(
        gpu.gemm(1.0, &x, false, &x, false, 0.0, &mut Matrix::zeros(50, 7))
            .is_err()
    );
}

#[cfg(feature = "cuda")]
#[test]
fn both_trainers_reach_cpu_accuracy_on_the_gpu_and_repeat_exactly() {
    let Some(gpu) = cuda() else { return };
    let cpu = CpuBackend::new();
    let x = random(2000, 6, 11);
    let y: Vec<usize> = (0..2000)
        .map(|i| {
            let r = x.row(i);
            usize::from(r[0] * r[1] + 0.5 * r[2] - 0.3 * r[3] > 0.0)
        })
        .collect();
    let lr = trainers::LogisticConfig {
        epochs: 50,
        ..Default::default()
    };
    let mlp = trainers::MlpConfig {
        hidden: vec![16, 8],
        epochs: 20,
        batch_size: 64,
        ..Default::default()
    };
    for (name, train) in [
        (
            "logistic",
            Box::new(|b: &dyn Backend| trainers::logistic_regression(b, &x, &y, 2, &lr))
                as Box<dyn Fn(&dyn Backend) -> _>,
        ),
        (
            "mlp",
            Box::new(|b: &dyn Backend| trainers::mlp(b, &x, &y, 2, &mlp)),
        ),
    ] {
        let g = train(&gpu).unwrap();
        let c = train(&cpu).unwrap();
        let acc_g = trainers::accuracy(&g.predict(&gpu, &x).unwrap(), &y);
        let acc_c = trainers::accuracy(&c.predict(&cpu, &x).unwrap(), &y);
        assert!(
            (acc_g - acc_c).abs() <= 0.02,
            "{name}: gpu {acc_g} vs cpu {acc_c}"
        );
        let again = train(&gpu).unwrap();
        assert_eq!(
            g.predict_proba(&gpu, &x).unwrap(),
            again.predict_proba(&gpu, &x).unwrap(),
            "{name}: two GPU trainings with one seed differ"
        );
    }
}
