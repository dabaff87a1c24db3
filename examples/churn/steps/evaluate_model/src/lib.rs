//! Scores the model on the held-out split: accuracy, precision, recall, F1,
//! ROC AUC and the confusion matrix, as metrics and as `evaluation.json`.
//! A binary label is scored on its positive class at a threshold; more
//! classes by the likeliest class, with macro averages and one-vs-rest AUC.

use weir_sdk::gpu::{Tensor, predict_proba};
use weir_sdk::{Context, Result, ResultExt, anyhow, bail};

#[derive(serde::Deserialize)]
struct Params {
    label: String,
    /// Binary labels: the positive class is predicted when its probability
    /// is at least this.
    #[serde(default = "half")]
    threshold: f32,
}

fn half() -> f32 {
    0.5
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

/// Precision, recall and F1 of one class from a confusion matrix (rows
/// actual, columns predicted).
fn class_scores(cm: &[Vec<u64>], c: usize) -> (f64, f64, f64) {
    let tp = cm[c][c] as f64;
    let predicted: u64 = cm.iter().map(|r| r[c]).sum();
    let actual: u64 = cm[c].iter().sum();
    let ratio = |a: f64, b: u64| if b == 0 { 0.0 } else { a / b as f64 };
    let (precision, recall) = (ratio(tp, predicted), ratio(tp, actual));
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    (precision, recall, f1)
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let p = ctx.params();
    let model = ctx.input("model")?;
    let features: Vec<String> = serde_json::from_slice(
        &std::fs::read(model.join("features.json")).context("the model has no features.json")?,
    )?;
    // Models from before classes.json were binary.
    let classes: Vec<String> = match std::fs::read(model.join("classes.json")) {
        Ok(b) => serde_json::from_slice(&b)?,
        Err(_) => vec!["0".into(), "1".into()],
    };
    let k = classes.len();
    let x = Tensor::from_csv("test", "data.csv", &features).map_err(|e| anyhow!(e))?;
    let y = Tensor::from_csv("test", "data.csv", std::slice::from_ref(&p.label))
        .map_err(|e| anyhow!(e))?;
    let proba = predict_proba("model", &x).map_err(|e| anyhow!(e))?;
    if proba.cols() as usize != k {
        bail!(
            "the model scores {} classes, its classes.json names {k}",
            proba.cols()
        );
    }
    let values = proba.values();
    let rows: Vec<&[f32]> = values.chunks(k).collect();
    let actual: Vec<usize> = y.values().iter().map(|v| *v as usize).collect();
    // Binary: the positive class at the threshold; else the likeliest class.
    let predicted: Vec<usize> = rows
        .iter()
        .map(|r| {
            if k == 2 {
                usize::from(r[1] >= p.threshold)
            } else {
                (0..k).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap_or(0)
            }
        })
        .collect();
    let mut cm = vec![vec![0u64; k]; k];
    for (a, q) in actual.iter().zip(&predicted) {
        if *a < k {
            cm[*a][*q] += 1;
        }
    }
    let n = actual.len() as f64;
    let accuracy = (0..k).map(|c| cm[c][c]).sum::<u64>() as f64 / n.max(1.0);
    // One-vs-rest AUC per class (NaN where a class has no positives or no negatives).
    let aucs: Vec<f64> = (0..k)
        .map(|c| {
            let scores: Vec<f32> = rows.iter().map(|r| r[c]).collect();
            let labels: Vec<bool> = actual.iter().map(|a| *a == c).collect();
            roc_auc(&scores, &labels)
        })
        .collect();
    let per_class: Vec<(f64, f64, f64)> = (0..k).map(|c| class_scores(&cm, c)).collect();
    let mean =
        |f: &dyn Fn(&(f64, f64, f64)) -> f64| per_class.iter().map(f).sum::<f64>() / k as f64;
    let (macro_p, macro_r, macro_f1) = (mean(&|s| s.0), mean(&|s| s.1), mean(&|s| s.2));
    let defined: Vec<f64> = aucs.iter().copied().filter(|a| !a.is_nan()).collect();
    let macro_auc = defined.iter().sum::<f64>() / defined.len().max(1) as f64;
    // The headline numbers: the positive class for a binary label, macro
    // averages (and one-vs-rest AUC) for more classes.
    let (precision, recall, f1, auc, average) = if k == 2 {
        let (pr, re, f) = per_class[1];
        (
            pr,
            re,
            f,
            aucs[1],
            format!("binary (positive class {})", classes[1]),
        )
    } else {
        (macro_p, macro_r, macro_f1, macro_auc, "macro".to_string())
    };
    let report = serde_json::json!({
        "rows": n,
        "classes": classes,
        "average": average,
        "threshold": if k == 2 { Some(p.threshold) } else { None },
        "accuracy": accuracy,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": auc,
        "macro": { "precision": macro_p, "recall": macro_r, "f1": macro_f1, "roc_auc_ovr": macro_auc },
        "per_class": classes.iter().zip(&per_class).zip(&aucs).map(|((c, s), a)| serde_json::json!({
            "class": c, "precision": s.0, "recall": s.1, "f1": s.2, "roc_auc_ovr": a,
        })).collect::<Vec<_>>(),
        "confusion_matrix": { "labels": classes, "rows_actual_cols_predicted": cm },
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
        ("f1_macro", macro_f1),
        ("classes", k as f64),
    ] {
        ctx.metric(name, v);
    }
    if k == 2 {
        for (name, v) in [
            ("tn", cm[0][0]),
            ("fp", cm[0][1]),
            ("fn", cm[1][0]),
            ("tp", cm[1][1]),
        ] {
            ctx.metric(name, v as f64);
        }
    }
    ctx.info(format!(
        "test rows {n}, {k} classes ({average}): accuracy {accuracy:.3}, precision {precision:.3}, recall {recall:.3}, F1 {f1:.3}, ROC AUC {auc:.3}"
    ));
    Ok(())
}

weir_sdk::step!(run);
