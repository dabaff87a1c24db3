//! Packages a model that passed the quality gate for the registry: the
//! model files, its evaluation, and a model card. The pipeline's
//! `.register("churn")` adds this output to the registry as a new version
//! (an identical package is never registered twice).

use weir_sdk::{Context, Result, ResultExt};

#[derive(serde::Deserialize)]
struct Params {
    description: String,
}

fn run(ctx: &mut Context<Params>) -> Result<()> {
    let out = ctx.output("model")?.to_path_buf();
    let model = ctx.input("model")?.to_path_buf();
    for e in std::fs::read_dir(&model).context("reading the model")? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), out.join(e.file_name()))?;
        }
    }
    let evaluation = ctx.input("evaluation")?.join("evaluation.json");
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(&evaluation)?)?;
    std::fs::copy(&evaluation, out.join("evaluation.json"))?;
    let mut recorded = serde_json::Map::new();
    for name in ["accuracy", "precision", "recall", "f1", "roc_auc"] {
        if let Some(v) = metrics[name].as_f64() {
            ctx.metric(name, v);
            recorded.insert(name.into(), v.into());
        }
    }
    let card = serde_json::json!({
        "description": ctx.params().description,
        "files": ["model.safetensors", "model.json", "features.json", "classes.json", "evaluation.json"],
        "metrics": recorded,
    });
    std::fs::write(out.join("card.json"), serde_json::to_vec_pretty(&card)?)?;
    ctx.info(format!(
        "packaged the model with F1 {:.3}",
        metrics["f1"].as_f64().unwrap_or(f64::NAN)
    ));
    Ok(())
}

weir_sdk::step!(run);
