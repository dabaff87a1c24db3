//! The compiled pipeline: pure data, stable JSON, hashable.
//!
//! The DSL produces a [`Plan`]; embedding hosts may build one in Rust. The
//! runtime executes nothing but plans. Paths in a plan are as written; they
//! are resolved against [`Plan::base_dir`] when the plan runs.

use crate::digest::Digest;
use crate::limits::Limits;
use crate::names::check_name;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A whole pipeline, ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The pipeline's name.
    pub name: String,
    /// Folder that relative paths in the plan are resolved against (the
    /// script's folder for plans built from a script).
    pub base_dir: PathBuf,
    /// The steps, in the order they were declared.
    pub steps: Vec<StepPlan>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepPlan {
    /// The step's name, unique in the plan.
    pub name: String,
    /// Where the step's component comes from.
    pub component: ComponentSource,
    /// Params, a JSON object handed to the step as canonical JSON.
    #[serde(default = "empty_object")]
    pub params: serde_json::Value,
    /// Named inputs.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSource>,
    /// Names of the outputs the step writes.
    #[serde(default)]
    pub outputs: BTreeSet<String>,
    /// Resource limits of each attempt.
    #[serde(default)]
    pub limits: Limits,
    /// Where the step was declared (for example `pipeline.rhai:12:5`), for error messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Where a step's component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ComponentSource {
    /// A step crate (folder with `Cargo.toml`), built for `wasm32-wasip2` when stale.
    Crate(PathBuf),
    /// A compiled component file.
    Wasm(PathBuf),
}

/// What feeds an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum InputSource {
    /// A file or folder on the host, ingested into the store when the run starts.
    Path(PathBuf),
    /// An output of an upstream step.
    Step {
        /// The upstream step.
        step: String,
        /// Its output.
        output: String,
    },
    /// An artifact already in the store.
    Artifact(Digest),
}

/// A plan that breaks a structural rule.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A name that breaks the naming rule.
    #[error("{at}{source}")]
    Name {
        /// Where, as a prefix ("step 'x' (pipeline.rhai:3:1): ").
        at: String,
        /// The rule that was broken.
        source: crate::names::NameError,
    },
    /// Two steps with one name.
    #[error("step '{0}' is declared twice")]
    DuplicateStep(String),
    /// An input that names a missing step or output.
    #[error("{0}")]
    Reference(String),
    /// A dependency cycle, shown as `a -> b -> a`.
    #[error("the steps form a cycle: {0}")]
    Cycle(String),
    /// Bad params or limits.
    #[error("{0}")]
    Invalid(String),
}

impl StepPlan {
    /// A step with no inputs, outputs or params and default limits.
    pub fn new(name: impl Into<String>, component: ComponentSource) -> StepPlan {
        StepPlan {
            name: name.into(),
            component,
            params: empty_object(),
            inputs: BTreeMap::new(),
            outputs: BTreeSet::new(),
            limits: Limits::default(),
            origin: None,
        }
    }

    fn at(&self) -> String {
        match &self.origin {
            Some(o) => format!("step '{}' ({o}): ", self.name),
            None => format!("step '{}': ", self.name),
        }
    }
}

impl Plan {
    /// An empty plan named `name` whose paths resolve against `base_dir`.
    pub fn new(name: impl Into<String>, base_dir: impl Into<PathBuf>) -> Plan {
        Plan {
            name: name.into(),
            base_dir: base_dir.into(),
            steps: Vec::new(),
        }
    }

    /// Resolves a path written in the plan.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The plan as stable, pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks names, references, params and limits, and that the steps form a
    /// DAG. Returns the steps' indices in a topological order.
    pub fn validate(&self) -> Result<Vec<usize>, PlanError> {
        check_name("pipeline", &self.name).map_err(|source| PlanError::Name {
            at: String::new(),
            source,
        })?;
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            check_name("step", &s.name).map_err(|source| PlanError::Name {
                at: s
                    .origin
                    .as_ref()
                    .map(|o| format!("{o}: "))
                    .unwrap_or_default(),
                source,
            })?;
            if index.insert(&s.name, i).is_some() {
                return Err(PlanError::DuplicateStep(s.name.clone()));
            }
            for o in &s.outputs {
                check_name("output", o).map_err(|source| PlanError::Name { at: s.at(), source })?;
            }
            for i in s.inputs.keys() {
                check_name("input", i).map_err(|source| PlanError::Name { at: s.at(), source })?;
            }
            if !s.params.is_object() {
                return Err(PlanError::Invalid(format!(
                    "{}params must be an object (a map), found {}",
                    s.at(),
                    json_kind(&s.params)
                )));
            }
            s.limits
                .validate()
                .map_err(|e| PlanError::Invalid(format!("{}{e}", s.at())))?;
        }
        // References.
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (i, s) in self.steps.iter().enumerate() {
            for (input, src) in &s.inputs {
                if let InputSource::Step { step, output } = src {
                    let Some(&j) = index.get(step.as_str()) else {
                        return Err(PlanError::Reference(format!(
                            "{}input '{input}' reads from step '{step}', which does not exist{}",
                            s.at(),
                            suggest(step, index.keys().copied())
                        )));
                    };
                    let up = &self.steps[j];
                    if !up.outputs.contains(output) {
                        return Err(PlanError::Reference(format!(
                            "{}input '{input}' reads output '{output}' of step '{step}', which declares no such output{}",
                            s.at(),
                            if up.outputs.is_empty() {
                                String::from(" (it declares none)")
                            } else {
                                suggest(output, up.outputs.iter().map(String::as_str))
                            }
                        )));
                    }
                    if !deps[i].contains(&j) {
                        deps[i].push(j);
                    }
                }
            }
        }
        topo_order(&self.steps, &deps)
    }

    /// For each step, the indices of the steps it reads from.
    pub fn dependencies(&self) -> Vec<Vec<usize>> {
        let index: BTreeMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        self.steps
            .iter()
            .map(|s| {
                let mut d: Vec<usize> = s
                    .inputs
                    .values()
                    .filter_map(|src| match src {
                        InputSource::Step { step, .. } => index.get(step.as_str()).copied(),
                        _ => None,
                    })
                    .collect();
                d.sort_unstable();
                d.dedup();
                d
            })
            .collect()
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing (null)",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Kahn's algorithm; on a cycle, reports one cycle by name.
fn topo_order(steps: &[StepPlan], deps: &[Vec<usize>]) -> Result<Vec<usize>, PlanError> {
    let n = steps.len();
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).rev().filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(j);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk dependencies from a step left with a positive in-degree until a step repeats.
    let mut at = (0..n).find(|&i| indegree[i] > 0).unwrap_or(0);
    let mut seen: Vec<usize> = Vec::new();
    while !seen.contains(&at) {
        seen.push(at);
        at = deps[at]
            .iter()
            .copied()
            .find(|&d| indegree[d] > 0)
            .unwrap_or(at);
    }
    let start = seen.iter().position(|&s| s == at).unwrap_or(0);
    let mut cycle: Vec<&str> = seen[start..]
        .iter()
        .rev()
        .map(|&i| steps[i].name.as_str())
        .collect();
    cycle.push(cycle[0]);
    Err(PlanError::Cycle(cycle.join(" -> ")))
}

/// ", did you mean 'x'?" for the nearest candidate by edit distance, if close.
pub fn suggest<'a>(wanted: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|c| (edit_distance(wanted, c), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= wanted.len().max(3) / 2 + 1 => format!("; did you mean '{c}'?"),
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, reads: &[(&str, &str)]) -> StepPlan {
        let mut s = StepPlan::new(name, ComponentSource::Wasm("x.wasm".into()));
        s.outputs.insert("out".into());
        for (i, (st, o)) in reads.iter().enumerate() {
            s.inputs.insert(
                format!("in{i}"),
                InputSource::Step {
                    step: st.to_string(),
                    output: o.to_string(),
                },
            );
        }
        s
    }

    #[test]
    fn orders_a_dag() {
        let mut p = Plan::new("p", ".");
        p.steps = vec![
            step("c", &[("b", "out")]),
            step("a", &[]),
            step("b", &[("a", "out")]),
        ];
        let order = p.validate().unwrap();
        let names: Vec<&str> = order.iter().map(|&i| p.steps[i].name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn reports_the_cycle() {
        let mut p = Plan::new("p", ".");
        p.steps = vec![
            step("a", &[("c", "out")]),
            step("b", &[("a", "out")]),
            step("c", &[("b", "out")]),
            step("d", &[]),
        ];
        let e = p.validate().unwrap_err().to_string();
        assert!(
            e == "the steps form a cycle: a -> b -> c -> a"
                || e == "the steps form a cycle: b -> c -> a -> b"
                || e == "the steps form a cycle: c -> a -> b -> c",
            "{e}"
        );
    }

    #[test]
    fn suggests_near_names() {
        let mut p = Plan::new("p", ".");
        p.steps = vec![step("train", &[]), step("eval", &[("trian", "out")])];
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("did you mean 'train'?"), "{e}");
        p.steps = vec![step("train", &[]), step("eval", &[("train", "otu")])];
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("did you mean 'out'?"), "{e}");
    }
}
