//! CPU trainers against scikit-learn on the same generated data:
//! `bash host-gpu/bench-vs-sklearn.sh` (installs scikit-learn in a venv), or
//! `cargo bench -p weir-host-gpu --bench trainers` for weir's side alone.
//!
//! Data: 20,000 rows x 20 features, two classes from a noisy non-linear rule
//! (seeded), split 80/20. Both sides train logistic regression (L2) and an
//! MLP (two hidden layers of 64, Adam, minibatch 128, 20 epochs) and report
//! training time, accuracy and F1 on the held-out rows.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::io::Write;
use std::time::Instant;
use weir_host_gpu::trainers::{self, LogisticConfig, MlpConfig};
use weir_host_gpu::{CpuBackend, Matrix, Optimizer};

fn data(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut u = || (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let row: Vec<f32> = (0..d).map(|_| u() * 2.0).collect();
        let score =
            row[0] * row[1] + row[2].sin() * 1.5 + 0.5 * row[3] - 0.3 * row[4] * row[4] + 0.4 * u();
        y.push(usize::from(score > 0.0));
        x.extend(row);
    }
    (x, y)
}

fn f1(pred: &[usize], truth: &[usize]) -> f32 {
    let tp = pred
        .iter()
        .zip(truth)
        .filter(|(p, t)| **p == 1 && **t == 1)
        .count() as f32;
    let fp = pred
        .iter()
        .zip(truth)
        .filter(|(p, t)| **p == 1 && **t == 0)
        .count() as f32;
    let fn_ = pred
        .iter()
        .zip(truth)
        .filter(|(p, t)| **p == 0 && **t == 1)
        .count() as f32;
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fn_)
    }
}

fn main() {
    let (n, d) = (20_000, 20);
    let (x, y) = data(n, d, 7);
    let split = n * 8 / 10;
    let xtr = Matrix::from_vec(split, d, x[..split * d].to_vec()).expect("train");
    let xte = Matrix::from_vec(n - split, d, x[split * d..].to_vec()).expect("test");
    let (ytr, yte) = (&y[..split], &y[split..]);
    let be = CpuBackend::new();

    let mut rows: Vec<(String, f64, f32, f32)> = Vec::new();
    let t = Instant::now();
    let lr = trainers::logistic_regression(
        &be,
        &xtr,
        ytr,
        2,
        &LogisticConfig {
            epochs: 100,
            batch_size: 0,
            optimizer: Optimizer::adam(0.1),
            l2: 1e-4,
            seed: 0,
        },
    )
    .expect("lr");
    let secs = t.elapsed().as_secs_f64();
    let p = lr.predict(&be, &xte).expect("predict");
    rows.push((
        "weir logistic regression".into(),
        secs,
        trainers::accuracy(&p, yte),
        f1(&p, yte),
    ));

    let t = Instant::now();
    let net = trainers::mlp(
        &be,
        &xtr,
        ytr,
        2,
        &MlpConfig {
            hidden: vec![64, 64],
            epochs: 20,
            batch_size: 128,
            optimizer: Optimizer::adam(1e-3),
            l2: 1e-4,
            seed: 0,
        },
    )
    .expect("mlp");
    let secs = t.elapsed().as_secs_f64();
    let p = net.predict(&be, &xte).expect("predict");
    rows.push((
        "weir MLP 64-64".into(),
        secs,
        trainers::accuracy(&p, yte),
        f1(&p, yte),
    ));

    if let Some(python) = std::env::var_os("WEIR_SKLEARN_PYTHON") {
        let dir = std::env::temp_dir().join(format!("weir-trainer-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let csv = dir.join("data.csv");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).expect("csv"));
        for i in 0..n {
            let cells: Vec<String> = x[i * d..(i + 1) * d]
                .iter()
                .map(|v| format!("{v}"))
                .collect();
            writeln!(f, "{},{}", cells.join(","), y[i]).expect("write");
        }
        drop(f);
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sklearn_side.py");
        let out = std::process::Command::new(python)
            .arg(&script)
            .arg(&csv)
            .arg(split.to_string())
            .output()
            .expect("run python");
        if !out.status.success() {
            eprintln!(
                "scikit-learn side failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let parts: Vec<&str> = line.split('\t').collect();
            if let [name, secs, acc, f1] = parts[..] {
                rows.push((
                    name.to_string(),
                    secs.parse().unwrap_or(f64::NAN),
                    acc.parse().unwrap_or(f32::NAN),
                    f1.parse().unwrap_or(f32::NAN),
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!(
            "set WEIR_SKLEARN_PYTHON (or run host-gpu/bench-vs-sklearn.sh) to compare with scikit-learn"
        );
    }
    println!("\n| trainer | train time | test accuracy | test F1 |\n|---|---|---|---|");
    for (name, secs, acc, f1) in &rows {
        println!("| {name} | {:.3} s | {acc:.4} | {f1:.4} |", secs);
    }
    let find = |k: &str| rows.iter().find(|r| r.0 == k).map(|r| r.1);
    for (w, s) in [
        ("weir logistic regression", "sklearn LogisticRegression"),
        ("weir MLP 64-64", "sklearn MLPClassifier 64-64"),
    ] {
        if let (Some(a), Some(b)) = (find(w), find(s)) {
            println!("{w} / {s} time ratio: {:.2}x", a / b);
        }
    }
}
