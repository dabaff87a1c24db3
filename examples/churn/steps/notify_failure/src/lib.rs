//! Runs when the model fails the quality gate: writes a report saying which
//! metric fell short (a sandboxed step has no network; a server hook can
//! forward this report).

use weir_sdk::{Context, Result};

#[derive(serde::Deserialize)]
struct Params {
    min_f1: f64,
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(
        ctx.input("evaluation")?.join("evaluation.json"),
    )?)?;
    let f1 = metrics["f1"].as_f64().unwrap_or(f64::NAN);
    let text = format!(
        "# Churn model rejected\n\nF1 on the held-out split was {f1:.4}, below the gate's min_f1 of {}.\n\
         Precision {:.4}, recall {:.4}, ROC AUC {:.4}. The model was not registered.\n",
        ctx.params().min_f1,
        metrics["precision"].as_f64().unwrap_or(f64::NAN),
        metrics["recall"].as_f64().unwrap_or(f64::NAN),
        metrics["roc_auc"].as_f64().unwrap_or(f64::NAN),
    );
    std::fs::write(ctx.output("report")?.join("rejected.md"), &text)?;
    ctx.warn(format!(
        "model rejected: F1 {f1:.4} < min_f1 {}",
        ctx.params().min_f1
    ));
    ctx.metric("f1", f1);
    Ok(())
}

weir_sdk::step!(run);
