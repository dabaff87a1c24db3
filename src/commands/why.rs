//! `weir why RUN STEP`: why a step ran, or why it did not (a cache hit, a
//! skip), in terms of what its cache key covers.

use crate::StoreArg;
use std::process::ExitCode;
use weir_runtime::RunId;
use weir_runtime::records::{History, Records, StepState, StepSummary};

/// Arguments of `weir why`.
#[derive(clap::Args)]
pub struct Args {
    /// Run number (see `weir runs`)
    run: String,
    /// The step (a map's child as `step[item]`)
    step: String,
    #[command(flatten)]
    store: StoreArg,
}

/// How many earlier runs are searched for the step's previous execution.
const LOOK_BACK: usize = 1000;

/// Runs `weir why`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let records = super::open_records(&args.store.resolve())?;
    let id = super::parse_run(&args.run)?;
    let summary = super::need_run(&*records, id)?;
    let steps = records.steps(id)?;
    let Some(s) = steps.iter().find(|s| s.step == args.step) else {
        let names: Vec<&str> = steps.iter().map(|s| s.step.as_str()).collect();
        anyhow::bail!(
            "run {id} has no step '{}' (its steps: {})",
            args.step,
            names.join(", ")
        );
    };
    let name = super::one_line(&s.step).into_owned();
    match s.state {
        StepState::Cached => cached(&*records, id, s, &name)?,
        StepState::Skipped | StepState::Cancelled | StepState::Pending => {
            outln!(
                "step {name} did not run in run {id} ({}): {}",
                s.state,
                super::one_line(s.error.as_deref().unwrap_or("no reason recorded"))
            );
        }
        _ => {
            let before = previous(&*records, id, &summary.pipeline, &s.step)?;
            executed(&*records, id, s, &name, before, &steps)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A cache hit: where its outputs came from.
fn cached(records: &dyn Records, id: RunId, s: &StepSummary, name: &str) -> anyhow::Result<()> {
    let key = s.cache_key.map(|k| k.short()).unwrap_or_default();
    outln!(
        "step {name} did not run in run {id}: its cache key {key} was seen before, so its outputs were reused"
    );
    if let Some(k) = s.cache_key
        && let Some(e) = records.cache_entries()?.into_iter().find(|e| e.key == k)
    {
        outln!("  the execution that made them: run {}", e.run);
    }
    outln!(
        "  (the key covers the component's bytes, its params, its inputs' digests, its capabilities, its memory limit and the engine's semantics; none changed)"
    );
    Ok(())
}

/// The step's latest execution or cache hit in an earlier run of the pipeline.
fn previous(
    records: &dyn History,
    id: RunId,
    pipeline: &str,
    step: &str,
) -> anyhow::Result<Option<(RunId, StepSummary)>> {
    for r in records.runs(LOOK_BACK)? {
        if r.id.0 >= id.0 || r.pipeline != pipeline {
            continue;
        }
        if let Some(s) = records
            .steps(r.id)?
            .into_iter()
            .find(|s| s.step == step && matches!(s.state, StepState::Succeeded | StepState::Cached))
        {
            return Ok(Some((r.id, s)));
        }
    }
    Ok(None)
}

/// The step ran: what differs from its previous successful run.
fn executed(
    records: &dyn History,
    id: RunId,
    s: &StepSummary,
    name: &str,
    before: Option<(RunId, StepSummary)>,
    steps: &[StepSummary],
) -> anyhow::Result<()> {
    let Some((prev_id, prev)) = before else {
        outln!(
            "step {name} ran in run {id} ({}): no earlier run of this pipeline ran it successfully, so nothing could be reused",
            s.state
        );
        return Ok(());
    };
    outln!(
        "step {name} ran in run {id} ({}); against run {prev_id}, where it last {}:",
        s.state,
        prev.state
    );
    let mut reasons = 0;
    if s.component != prev.component {
        reasons += 1;
        let short = |d: Option<weir_runtime::Digest>| d.map(|d| d.short()).unwrap_or_default();
        outln!(
            "  its component changed: {} -> {}",
            short(prev.component),
            short(s.component)
        );
    }
    let base = weir_runtime::names::UnitName::parse(&s.step).step;
    let (now, then) = (
        super::step_params(records, id)?,
        super::step_params(records, prev_id)?,
    );
    if s.step == base && now.get(base) != then.get(base) {
        reasons += 1;
        let empty = serde_json::Map::new();
        let (a, b) = (
            then.get(base).and_then(|v| v.as_object()).unwrap_or(&empty),
            now.get(base).and_then(|v| v.as_object()).unwrap_or(&empty),
        );
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys.into_iter().filter(|k| a.get(*k) != b.get(*k)) {
            let show =
                |v: Option<&serde_json::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
            outln!(
                "  param '{}' changed: {} -> {}",
                super::one_line(k),
                super::one_line(&show(a.get(k))),
                super::one_line(&show(b.get(k)))
            );
        }
    }
    for (input, d) in &s.inputs {
        if prev.inputs.get(input) == Some(d) {
            continue;
        }
        reasons += 1;
        // Which step of this run produced the new input, if one did.
        let from = steps
            .iter()
            .find(|u| u.outputs.values().any(|o| o == d))
            .map(|u| {
                format!(
                    " (the output of step {} in this run, which {})",
                    super::one_line(&u.step),
                    u.state
                )
            })
            .unwrap_or_else(|| " (from the host or an artifact)".to_string());
        match prev.inputs.get(input) {
            Some(old) => outln!(
                "  input '{input}' changed: {} -> {}{from}",
                old.short(),
                d.short()
            ),
            None => outln!("  input '{input}' is new: {}{from}", d.short()),
        }
    }
    if reasons == 0 {
        outln!(
            "  its component, params and inputs are the same: something else its cache key covers changed (granted capabilities, the memory limit, the engine's semantics), or the outputs of run {prev_id} were no longer in the store"
        );
    }
    Ok(())
}
