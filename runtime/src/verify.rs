//! Verifying a run: every step the run executed is executed again from its
//! recorded inputs, and each output's digest is compared with the recorded
//! one. This is the check that "same key, same outputs" holds for a run.
//!
//! A step's unit is rebuilt from the run's recorded plan and the step's
//! record (component digest, inputs, attempt); the rebuilt cache key must
//! equal the recorded key, so what runs is exactly what ran (otherwise the
//! step is reported not checked, with why). Re-executed outputs go into the
//! store like any output: identical ones add nothing (the store is content
//! addressed); differing ones stay, to be inspected with `weir cat`, until
//! `weir store gc`. Nothing is recorded.

use crate::cache;
use crate::digest::Digest;
use crate::exec::executor::LoadedComponent;
use crate::names::UnitName;
use crate::plan::{Plan, StepPlan};
use crate::records::{RunId, StepState, StepSummary};
use crate::runtime::Runtime;
use crate::store::Store;
use crate::tree::EntryKind;
use crate::unit::UnitSpec;
use anyhow::{Context as _, anyhow};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What verifying a run found, step by step.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The run.
    pub run: RunId,
    /// Each unit the run executed (steps, and map children rather than
    /// the map steps that fold them), in the order it finished.
    pub steps: Vec<StepCheck>,
    /// How long the run itself took (its record's start to end), if it ended.
    pub run_duration: Option<Duration>,
    /// Units that were cache hits in this run (not executed again: the
    /// runs that produced their entries are the ones to verify).
    pub cached: usize,
}

impl Verification {
    /// Whether every executed step reproduced its outputs.
    pub fn all_reproduced(&self) -> bool {
        self.steps
            .iter()
            .all(|s| matches!(s.outcome, CheckOutcome::Reproduced))
    }
}

/// One step's check.
#[derive(Debug, Clone)]
pub struct StepCheck {
    /// The step (or map child) as recorded.
    pub step: String,
    /// What re-executing it gave.
    pub outcome: CheckOutcome,
    /// How long the check took (loading the component included).
    pub duration: Duration,
}

/// What re-executing a step gave.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckOutcome {
    /// Every output has its recorded digest.
    Reproduced,
    /// Some outputs differ.
    Differs(Vec<OutputDiff>),
    /// The re-execution failed.
    Failed(String),
    /// The step could not be re-executed as it ran, and why.
    NotChecked(String),
}

/// An output whose digest differs from the recorded one.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputDiff {
    /// The output's name.
    pub output: String,
    /// Its recorded digest (`None`: not recorded).
    pub recorded: Option<Digest>,
    /// Its digest now (`None`: not written).
    pub now: Option<Digest>,
    /// The first file (path inside the output) that differs, when both exist.
    pub first_difference: Option<String>,
}

impl Runtime {
    /// Re-executes every step run `run` executed and compares its outputs
    /// with the recorded ones (see the module docs). Steps that were cache
    /// hits, skipped or failed are not re-executed (a cache hit's producing
    /// run is the one to verify).
    pub async fn verify(&self, run: RunId) -> anyhow::Result<Verification> {
        let (summary, plan_json, steps) = self
            .read_records(move |r| Ok((r.run(run)?, r.plan_json(run)?, r.steps(run)?)))
            .await?;
        let summary = summary.ok_or_else(|| anyhow!("there is no run {run}"))?;
        let plan_json = plan_json.ok_or_else(|| anyhow!("run {run} has no recorded plan"))?;
        let plan: Plan = serde_json::from_str(&plan_json)
            .with_context(|| format!("run {run}'s recorded plan"))?;
        let mut components = HashMap::new();
        let mut checks = Vec::new();
        // A map step's own record folds its children's outputs: the
        // children are the executed units.
        let maps: std::collections::HashSet<&str> = plan
            .steps
            .iter()
            .filter(|p| p.map.is_some())
            .map(|p| p.name.as_str())
            .collect();
        let is_map = |s: &StepSummary| maps.contains(s.step.as_str());
        for s in steps
            .iter()
            .filter(|s| s.state == StepState::Succeeded && !is_map(s))
        {
            let started = Instant::now();
            let outcome = match self.check(&plan, &steps, s, &mut components).await {
                Ok(o) => o,
                Err(e) => CheckOutcome::NotChecked(format!("{e:#}")),
            };
            checks.push(StepCheck {
                step: s.step.clone(),
                outcome,
                duration: started.elapsed(),
            });
        }
        Ok(Verification {
            run,
            steps: checks,
            cached: steps
                .iter()
                .filter(|s| s.state == StepState::Cached && !is_map(s))
                .count(),
            run_duration: summary
                .ended_ms
                .map(|end| Duration::from_millis((end - summary.started_ms).max(0) as u64)),
        })
    }

    /// Rebuilds step `s`'s unit, checks its key, executes it and compares.
    async fn check(
        &self,
        plan: &Plan,
        steps: &[StepSummary],
        s: &StepSummary,
        components: &mut HashMap<String, Arc<LoadedComponent>>,
    ) -> anyhow::Result<CheckOutcome> {
        let name = UnitName::parse(&s.step);
        let Some(ps) = plan.steps.iter().find(|p| p.name == name.step) else {
            return Ok(CheckOutcome::NotChecked(format!(
                "the recorded plan has no step '{}'",
                name.step
            )));
        };
        let params = self.params_of(ps, name.child, steps)?;
        let component = match components.get(&ps.name) {
            Some(c) => c.clone(),
            None => {
                let (this, source, base, caps) = (
                    self.clone(),
                    ps.component.clone(),
                    plan.base_dir.clone(),
                    ps.capabilities.clone(),
                );
                let fuel = ps.limits.fuel.is_some();
                let c = tokio::task::spawn_blocking(move || {
                    this.load_component(&source, &base, &caps, fuel)
                })
                .await
                .map_err(|e| anyhow!("the component loader panicked: {e}"))??;
                components.insert(ps.name.clone(), c.clone());
                c
            }
        };
        if s.component != Some(component.digest) {
            return Ok(CheckOutcome::NotChecked(format!(
                "its component changed since the run (recorded {}, now {})",
                s.component.map_or("none".into(), |d| d.short()),
                component.digest.short()
            )));
        }
        let outputs: Vec<&str> = ps.outputs.iter().map(String::as_str).collect();
        let key = crate::unit::unit_key(&component, &params, &s.inputs, &outputs, &ps.limits);
        if s.cache_key != Some(key) {
            return Ok(CheckOutcome::NotChecked(format!(
                "its cache key cannot be rebuilt from the recorded plan (recorded {}, rebuilt {}): its params, granted capabilities or limits differ from the run's",
                s.cache_key.map_or("none".into(), |d| d.short()),
                key.short()
            )));
        }
        let store = self.store();
        for (input, d) in &s.inputs {
            if !store.is_valid_tree(d)? {
                return Ok(CheckOutcome::NotChecked(format!(
                    "its input '{input}' ({}) is no longer in the store",
                    d.short()
                )));
            }
        }
        let spec = UnitSpec {
            step: s.step.clone(),
            run: None,
            component: component.digest,
            capabilities: component.capabilities.clone(),
            params_json: cache::canonical_json(&params),
            inputs: s.inputs.clone(),
            outputs: outputs.iter().map(|o| o.to_string()).collect(),
            limits: ps.limits,
            seed: key,
            attempt: s.attempts.max(1),
            tags: plan.routing_tags(ps),
        };
        let outcome = self
            .execute(&spec, &component, &CancellationToken::new(), None, None)
            .await;
        let now = match outcome.result {
            Ok(now) => now,
            Err((kind, e)) => {
                return Ok(CheckOutcome::Failed(format!("{}: {e}", kind.as_str())));
            }
        };
        Ok(compare(store, &s.outputs, &now))
    }

    /// The params a unit ran with: its step's, plus `item` and `index` for
    /// a child of a map over a JSON list (read from the list, as the
    /// scheduler does).
    fn params_of(
        &self,
        ps: &StepPlan,
        child: Option<&str>,
        steps: &[StepSummary],
    ) -> anyhow::Result<serde_json::Value> {
        let (Some(label), Some(m)) = (child, &ps.map) else {
            return Ok(ps.params.clone());
        };
        if m.json_list.is_none() {
            return Ok(ps.params.clone());
        }
        let index: usize = label
            .parse()
            .map_err(|_| anyhow!("map child label '{label}' is not an index"))?;
        let src = steps
            .iter()
            .find(|u| u.step == m.step)
            .and_then(|u| u.outputs.get(&m.output))
            .ok_or_else(|| anyhow!("output '{}' of step '{}' is not recorded", m.output, m.step))?;
        let list = crate::sched::read_list(self.store(), src, m)?;
        let item = list
            .get(index)
            .cloned()
            .ok_or_else(|| anyhow!("the list has no item {index}"))?;
        Ok(crate::sched::map::list_params(&ps.params, item, index))
    }
}

/// The recorded outputs against the re-executed ones.
fn compare(
    store: &Store,
    recorded: &BTreeMap<String, Digest>,
    now: &BTreeMap<String, Digest>,
) -> CheckOutcome {
    let mut names: Vec<&String> = recorded.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    let diffs: Vec<OutputDiff> = names
        .into_iter()
        .filter_map(|n| {
            let (a, b) = (recorded.get(n).copied(), now.get(n).copied());
            (a != b).then(|| OutputDiff {
                output: n.clone(),
                recorded: a,
                now: b,
                first_difference: match (a, b) {
                    (Some(a), Some(b)) => first_difference(store, &a, &b, ""),
                    _ => None,
                },
            })
        })
        .collect();
    if diffs.is_empty() {
        CheckOutcome::Reproduced
    } else {
        CheckOutcome::Differs(diffs)
    }
}

/// The first path (in name order) at which trees `a` and `b` differ.
fn first_difference(store: &Store, a: &Digest, b: &Digest, at: &str) -> Option<String> {
    let (Ok(ta), Ok(tb)) = (store.read_tree(a), store.read_tree(b)) else {
        return Some(if at.is_empty() { ".".into() } else { at.into() });
    };
    let path = |name: &str| {
        if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}/{name}")
        }
    };
    let (mut i, mut j) = (0, 0);
    while i < ta.entries.len() || j < tb.entries.len() {
        match (ta.entries.get(i), tb.entries.get(j)) {
            (Some(x), Some(y)) if x.name == y.name => {
                if x.digest != y.digest || x.kind != y.kind {
                    if x.kind == EntryKind::Folder && y.kind == EntryKind::Folder {
                        return first_difference(store, &x.digest, &y.digest, &path(&x.name));
                    }
                    return Some(path(&x.name));
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) => {
                return Some(path(if x.name < y.name { &x.name } else { &y.name }));
            }
            (Some(x), None) => return Some(path(&x.name)),
            (None, Some(y)) => return Some(path(&y.name)),
            (None, None) => break,
        }
    }
    None
}
