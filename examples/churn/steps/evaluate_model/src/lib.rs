//! Scores the model on the held-out split: accuracy, precision, recall, F1,
//! ROC AUC and the confusion matrix, as metrics and as `evaluation.json`.

use weir_sdk::gpu::{Tensor, predict_proba};
use weir_sdk::{Context, Result, ResultExt, anyhow, bail};

#[derive(serde::Deserialize)]
struct Params {
    label: String,
    /// Churn is predicted when its probability is at least this.
    threshold: f32,
}

/// Area under the ROC curve: the probability that a random positive scores
/// above a random negative (ties count half), from average ranks.
fn roc_auc(scores: &[f32], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0f64; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = rank;
        }
        i = j + 1;
    }
    let pos = labels.iter().filter(|l| **l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    let sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l)
        .map(|(r, _)| r)
        .sum();
    (sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let p = ctx.params();
    let features: Vec<String> = serde_json::from_slice(
        &std::fs::read(ctx.input("model")?.join("features.json"))
            .context("the model has no features.json")?,
    )?;
    let x = Tensor::from_csv("test", "data.csv", &features).map_err(|e| anyhow!(e))?;
    let y = Tensor::from_csv("test", "data.csv", std::slice::from_ref(&p.label))
        .map_err(|e| anyhow!(e))?;
    let proba = predict_proba("model", &x).map_err(|e| anyhow!(e))?;
    if proba.cols() != 2 {
        bail!(
            "expected a binary model (2 classes), found {}",
            proba.cols()
        );
    }
    let scores: Vec<f32> = proba.values().chunks(2).map(|r| r[1]).collect();
    let labels: Vec<bool> = y.values().iter().map(|v| *v == 1.0).collect();
    let (mut tp, mut fp, mut tn, mut fn_) = (0u64, 0u64, 0u64, 0u64);
    for (s, l) in scores.iter().zip(&labels) {
        match (*s >= p.threshold, *l) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
    }
    let n = (tp + fp + tn + fn_) as f64;
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    let accuracy = (tp + tn) as f64 / n;
    let auc = roc_auc(&scores, &labels);
    let report = serde_json::json!({
        "rows": n,
        "threshold": p.threshold,
        "accuracy": accuracy,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": auc,
        "confusion_matrix": { "labels": ["stayed", "churned"], "rows_actual_cols_predicted": [[tn, fp], [fn_, tp]] },
    });
    std::fs::write(
        ctx.output("evaluation")?.join("evaluation.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    for (name, v) in [
        ("accuracy", accuracy),
        ("precision", precision),
        ("recall", recall),
        ("f1", f1),
        ("roc_auc", auc),
        ("tp", tp as f64),
        ("fp", fp as f64),
        ("tn", tn as f64),
        ("fn", fn_ as f64),
    ] {
        ctx.metric(name, v);
    }
    ctx.info(format!(
        "test rows {n}: accuracy {accuracy:.3}, precision {precision:.3}, recall {recall:.3}, F1 {f1:.3}, ROC AUC {auc:.3}"
    ));
    Ok(())
}

weir_sdk::step!(run);
