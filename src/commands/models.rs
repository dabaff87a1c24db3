//! `weir models`: the model registry. A step declared with
//! `.register("name")` adds its `Model` output as a new version when it
//! succeeds; these commands list, show and promote versions.

use crate::StoreArg;
use serde_json::json;
use std::process::ExitCode;
use weir_runtime::lineage::lineage;
use weir_runtime::records::{ModelRegistry, ModelStage, ModelVersion};

/// What `weir models` does.
#[derive(clap::Subcommand)]
pub enum What {
    /// List registered models and their versions
    List {
        /// Only this model
        name: Option<String>,
        /// Print JSON for tools
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Show one version (the newest when no @VERSION is given), its metrics and lineage
    Show {
        /// NAME or NAME@VERSION
        model: String,
        /// Print JSON for tools
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Move a version to a stage (none, staging, production, archived)
    Promote {
        /// NAME@VERSION
        model: String,
        /// The stage
        stage: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

/// Parses `NAME` or `NAME@VERSION`.
fn parse_model(s: &str) -> anyhow::Result<(&str, Option<u32>)> {
    match s.split_once('@') {
        None => Ok((s, None)),
        Some((name, v)) => {
            let v = v.trim_start_matches('v').parse::<u32>().map_err(|_| {
                anyhow::anyhow!("expected NAME@VERSION such as churn@3, found {s:?}")
            })?;
            Ok((name, Some(v)))
        }
    }
}

/// The version `spec` names, or a clear error.
pub fn find(records: &dyn ModelRegistry, spec: &str) -> anyhow::Result<ModelVersion> {
    let (name, version) = parse_model(spec)?;
    let versions = records.models(Some(name))?;
    if versions.is_empty() {
        // Versions come sorted by name, so duplicates are adjacent.
        let mut names: Vec<String> = records.models(None)?.into_iter().map(|v| v.name).collect();
        names.dedup();
        anyhow::bail!(
            "there is no model '{name}' in the registry{}",
            if names.is_empty() {
                " (it is empty: a step with .register(\"name\") adds versions)".to_string()
            } else {
                format!(" (models: {})", names.join(", "))
            }
        );
    }
    let last = versions.len();
    match version {
        None => Ok(versions.into_iter().next_back().expect("not empty")),
        Some(v) => versions
            .into_iter()
            .find(|m| m.version == v)
            .ok_or_else(|| {
                anyhow::anyhow!("model '{name}' has no version {v} (versions 1 to {last})")
            }),
    }
}

fn metrics_line(v: &ModelVersion) -> String {
    v.metrics
        .iter()
        .map(|(k, x)| format!("{}={}", super::one_line(k), super::fmt_metric(*x)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `weir models ...`.
pub fn run(what: What) -> anyhow::Result<ExitCode> {
    match what {
        What::List { name, json, store } => {
            let dir = store.resolve();
            let records = super::open_records(&dir)?;
            let versions = records.models(name.as_deref())?;
            if json {
                jsonln!("{}", serde_json::to_string_pretty(&versions)?);
                return Ok(ExitCode::SUCCESS);
            }
            if versions.is_empty() {
                outln!(
                    "no models registered in the store {} (a step with .register(\"name\") adds versions; another store: --store)",
                    dir.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "{:<20} {:>7} {:<10} {:<12} {:>5}  metrics",
                "model",
                "version",
                "stage",
                "artifact",
                "run"
            );
            for v in &versions {
                outln!(
                    "{:<20} {:>7} {:<10} {:<12} {:>5}  {}",
                    v.name,
                    v.version,
                    v.stage.as_str(),
                    v.digest.short(),
                    v.run.0,
                    metrics_line(v)
                );
            }
        }
        What::Show { model, json, store } => {
            let dir = store.resolve();
            let records = super::open_records(&dir)?;
            // Which registry was read: from another folder it is another store.
            let v = find(&*records, &model).map_err(|e| {
                anyhow::anyhow!("{e} (store {}; pick one with --store)", dir.display())
            })?;
            let tree = lineage(&*records, &v.digest, 64)?;
            let (data, components) = tree.roots();
            if json {
                let out = json!({
                    "model": v,
                    "input_data": data.iter().map(|(w, d)| json!({"source": w, "digest": d})).collect::<Vec<_>>(),
                    "components": components.iter().map(|(s, d)| json!({"step": s, "digest": d})).collect::<Vec<_>>(),
                    "lineage": tree,
                });
                jsonln!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(ExitCode::SUCCESS);
            }
            outln!("model     {}@{}", v.name, v.version);
            outln!("stage     {}", v.stage);
            outln!("artifact  {}", v.digest);
            outln!("made by   run {} step {}", v.run, v.step);
            outln!("metrics   {}", metrics_line(&v));
            for (what, d) in &data {
                outln!("data      {} {what}", d.short());
            }
            for (step, d) in &components {
                outln!("component {} {step}", d.short());
            }
            outln!("(full tree: weir lineage {}@{})", v.name, v.version);
        }
        What::Promote {
            model,
            stage,
            store,
        } => {
            let records = super::open_records(&store.resolve())?;
            let (name, version) = parse_model(&model)?;
            let Some(version) = version else {
                anyhow::bail!(
                    "promote needs a version: {name}@VERSION (see `weir models list {name}`)"
                );
            };
            let Some(st) = ModelStage::parse(&stage.to_ascii_lowercase()) else {
                let all: Vec<&str> = ModelStage::ALL.iter().map(|s| s.as_str()).collect();
                anyhow::bail!("unknown stage {stage:?} (stages: {})", all.join(", "));
            };
            let archived = records.promote(name, version, st)?;
            outln!("{name}@{version} is now {st}");
            for a in archived {
                outln!("{name}@{a} moved from {st} to archived");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
