//! Trains the churn classifier through the host's training kernels (the
//! `gpu` capability: CUDA where the host has a GPU, its CPU backend
//! otherwise). Logistic regression or an MLP, hyper-parameters from params.
//! Any number of classes (named in the train split's `classes.json`).
//! Writes the model (`model.safetensors`, `model.json`) plus the feature
//! names it expects (`features.json`) and its classes (`classes.json`).

use weir_sdk::gpu::{LogisticConfig, MlpConfig, Tensor, train_logistic, train_mlp};
use weir_sdk::{Context, Result, ResultExt, anyhow, bail};

#[derive(serde::Deserialize)]
struct Params {
    label: String,
    /// `logistic` or `mlp`.
    model: String,
    #[serde(default)]
    hidden: Vec<u32>,
    epochs: u32,
    batch_size: u32,
    learning_rate: f32,
    l2: f32,
    seed: u64,
}

/// The header of a CSV file: its feature columns.
pub fn header(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    let first = text.lines().next().unwrap_or_default();
    Ok(first.split(',').map(|c| c.trim().to_string()).collect())
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let p = ctx.params();
    let mut features = header(&ctx.input("train")?.join("data.csv"))?;
    features.retain(|c| *c != p.label);
    let x = Tensor::from_csv("train", "data.csv", &features).map_err(|e| anyhow!(e))?;
    let y = Tensor::from_csv("train", "data.csv", std::slice::from_ref(&p.label))
        .map_err(|e| anyhow!(e))?;
    let classes: Vec<String> = serde_json::from_slice(
        &std::fs::read(ctx.input("train")?.join("classes.json"))
            .context("the train split has no classes.json")?,
    )?;
    if classes.len() < 2 {
        bail!(
            "the label has {} class(es); at least two are needed",
            classes.len()
        );
    }
    let k = classes.len() as u32;
    let trained = match p.model.as_str() {
        "logistic" => train_logistic(
            &x,
            &y,
            k,
            LogisticConfig {
                epochs: p.epochs,
                batch_size: p.batch_size,
                learning_rate: p.learning_rate,
                l2: p.l2,
                seed: p.seed,
            },
            "model",
        ),
        "mlp" => train_mlp(
            &x,
            &y,
            k,
            &MlpConfig {
                hidden: p.hidden.clone(),
                epochs: p.epochs,
                batch_size: p.batch_size,
                learning_rate: p.learning_rate,
                l2: p.l2,
                seed: p.seed,
            },
            "model",
        ),
        other => bail!("param 'model' must be \"logistic\" or \"mlp\", found {other:?}"),
    }
    .map_err(|e| anyhow!(e))?;
    let out = ctx.output("model")?;
    std::fs::write(
        out.join("features.json"),
        serde_json::to_vec_pretty(&features)?,
    )?;
    std::fs::write(
        out.join("classes.json"),
        serde_json::to_vec_pretty(&classes)?,
    )?;
    ctx.info(format!(
        "trained a {} on {} rows x {} features, {k} classes, with backend {}",
        p.model,
        x.rows(),
        x.cols(),
        trained.backend
    ));
    ctx.metric("train_accuracy", trained.train_accuracy as f64);
    ctx.metric("final_loss", trained.final_loss as f64);
    Ok(())
}

weir_sdk::step!(run);
