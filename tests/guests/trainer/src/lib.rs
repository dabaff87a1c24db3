//! A trusted step using the gpu capability. Mode `train`: trains on the
//! CSV `data/<file>` (feature columns, one label column), or with a `.npy`
//! file, features from `data/<file>` and labels from `data/<label>`, and writes the model
//! to `out`. Mode `score`: reads the model from input `model`, predicts the
//! CSV and records `accuracy`. Mode `bigtensor`: asks the host to hold
//! `times` tensors of `cells` values (a hostile case).

use weir_sdk::gpu::{LogisticConfig, MlpConfig, Tensor, predict_proba, train_logistic, train_mlp};
use weir_sdk::{Context, Result, anyhow};

#[derive(serde::Deserialize)]
struct Params {
    mode: String,
    #[serde(default)]
    file: String,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    label: String,
    #[serde(default)]
    classes: u32,
    #[serde(default)]
    hidden: Vec<u32>,
    /// `bigtensor`: values per tensor, and tensors asked for.
    #[serde(default)]
    cells: u32,
    #[serde(default)]
    times: u32,
}

/// Asks the host to hold `times` tensors of `cells` values each, keeping
/// every one it gets; records how many it got and the first refusal.
fn big_tensors(ctx: &Context<Params>) {
    let p = ctx.params();
    let values = vec![0.5f32; p.cells as usize];
    let mut kept = Vec::new();
    for _ in 0..p.times {
        match Tensor::from_values(p.cells, 1, &values) {
            Ok(t) => kept.push(t),
            Err(e) => {
                ctx.info(format!("refused: {e}"));
                break;
            }
        }
    }
    ctx.metric("tensors_kept", kept.len() as f64);
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    if ctx.params().mode == "bigtensor" {
        big_tensors(ctx);
        return Ok(());
    }
    let p = ctx.params();
    let (x, y) = if p.file.ends_with(".npy") {
        (
            Tensor::from_npy("data", &p.file).map_err(|e| anyhow!(e))?,
            Tensor::from_npy("data", &p.label).map_err(|e| anyhow!(e))?,
        )
    } else {
        (
            Tensor::from_csv("data", &p.file, &p.features).map_err(|e| anyhow!(e))?,
            Tensor::from_csv("data", &p.file, std::slice::from_ref(&p.label))
                .map_err(|e| anyhow!(e))?,
        )
    };
    match p.mode.as_str() {
        "train" => {
            let trained = if p.hidden.is_empty() {
                let cfg = LogisticConfig {
                    epochs: 200,
                    batch_size: 0,
                    learning_rate: 0.05,
                    l2: 1e-4,
                    seed: 1,
                };
                train_logistic(&x, &y, p.classes, cfg, "out")
            } else {
                let cfg = MlpConfig {
                    hidden: p.hidden.clone(),
                    epochs: 200,
                    batch_size: 32,
                    learning_rate: 0.01,
                    l2: 1e-4,
                    seed: 1,
                };
                train_mlp(&x, &y, p.classes, &cfg, "out")
            }
            .map_err(|e| anyhow!(e))?;
            ctx.info(format!(
                "trained on {} rows with backend {}",
                x.rows(),
                trained.backend
            ));
            ctx.metric("train_accuracy", trained.train_accuracy as f64);
            ctx.metric("final_loss", trained.final_loss as f64);
        }
        "score" => {
            let proba = predict_proba("model", &x).map_err(|e| anyhow!(e))?;
            let (rows, cols) = (proba.rows() as usize, proba.cols() as usize);
            let values = proba.values();
            let labels = y.values();
            let correct = (0..rows)
                .filter(|&i| {
                    let row = &values[i * cols..(i + 1) * cols];
                    let best = (0..cols).fold(0, |b, k| if row[k] > row[b] { k } else { b });
                    best as f32 == labels[i]
                })
                .count();
            ctx.metric("accuracy", correct as f64 / rows as f64);
            std::fs::write(
                ctx.output("out")?.join("scored.txt"),
                format!("{correct}/{rows}"),
            )?;
        }
        other => weir_sdk::bail!("unknown mode {other:?}"),
    }
    Ok(())
}

weir_sdk::step!(run);
