//! Lineage: where an artifact came from, step by step, back to the files
//! that entered the store from the host.
//!
//! Built from the run records alone: each step record names its inputs' and
//! outputs' digests and its component, and each run keeps the plan it ran
//! (for params and for which inputs were host files).

use crate::digest::Digest;
use crate::plan::{InputSource, Plan};
use crate::records::{Records, RunId};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// One artifact in a lineage tree.
#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    /// The artifact.
    pub digest: Digest,
    /// Where it came from.
    pub origin: Origin,
    /// What the producing step read, by input name (empty for sources and
    /// for artifacts already shown higher in the tree).
    pub inputs: Vec<(String, Lineage)>,
}

/// How an artifact entered the store.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Output `output` of a step that ran.
    Step {
        /// The first run that produced it.
        run: RunId,
        /// The step (a map child is `name[item]`).
        step: String,
        /// Which of its outputs.
        output: String,
        /// The step's component.
        component: Option<Digest>,
        /// The step's params in that run.
        params: serde_json::Value,
    },
    /// A host file or folder named in a pipeline.
    File {
        /// The path as the pipeline wrote it.
        path: PathBuf,
    },
    /// Neither produced by a recorded step nor a known host file.
    Unknown,
    /// Already shown in this tree (a diamond in the DAG).
    SeeAbove,
}

/// The lineage of `digest`, at most `max_depth` steps deep.
pub fn lineage(
    records: &dyn Records,
    digest: &Digest,
    max_depth: usize,
) -> anyhow::Result<Lineage> {
    let mut walk = Walk {
        records,
        plans: HashMap::new(),
        seen: HashSet::new(),
    };
    walk.node(digest, Hint::None, max_depth)
}

/// What the consuming step's plan says an input was.
#[derive(Clone)]
enum Hint {
    None,
    File(PathBuf),
    Step(String),
}

struct Walk<'a> {
    records: &'a dyn Records,
    plans: HashMap<RunId, Option<Plan>>,
    /// Artifacts shown so far, with the step shown producing them.
    seen: HashSet<(Digest, String)>,
}

impl Walk<'_> {
    fn plan(&mut self, run: RunId) -> anyhow::Result<Option<&Plan>> {
        if !self.plans.contains_key(&run) {
            let plan = self
                .records
                .plan_json(run)?
                .and_then(|j| Plan::from_json(&j).ok());
            self.plans.insert(run, plan);
        }
        Ok(self.plans.get(&run).and_then(Option::as_ref))
    }

    fn node(&mut self, digest: &Digest, hint: Hint, depth: usize) -> anyhow::Result<Lineage> {
        // The consuming step read a host file: that is where it came from,
        // even when some step once output the same bytes.
        if let Hint::File(path) = &hint {
            return Ok(Lineage {
                digest: *digest,
                origin: Origin::File { path: path.clone() },
                inputs: Vec::new(),
            });
        }
        let upstream = match &hint {
            Hint::Step(s) => Some(s.as_str()),
            _ => None,
        };
        let found = self.records.producer(digest, upstream)?;
        let by = found
            .as_ref()
            .map(|(_, s)| s.step.clone())
            .unwrap_or_default();
        if !self.seen.insert((*digest, by)) {
            return Ok(Lineage {
                digest: *digest,
                origin: Origin::SeeAbove,
                inputs: Vec::new(),
            });
        }
        let Some((run, step)) = found else {
            return Ok(Lineage {
                digest: *digest,
                origin: match hint {
                    Hint::File(path) => Origin::File { path },
                    _ => Origin::Unknown,
                },
                inputs: Vec::new(),
            });
        };
        let output = step
            .outputs
            .iter()
            .find(|(_, d)| *d == digest)
            .map(|(o, _)| o.clone())
            .unwrap_or_default();
        let base = crate::names::UnitName::parse(&step.step).step.to_string();
        let (params, hints) = match self
            .plan(run)?
            .and_then(|p| p.steps.iter().find(|s| s.name == base))
        {
            Some(s) => (
                s.params.clone(),
                s.inputs
                    .iter()
                    .map(|(name, src)| {
                        let h = match src {
                            InputSource::Path(p) => Hint::File(p.clone()),
                            InputSource::Step { step, .. } => Hint::Step(step.clone()),
                            InputSource::Artifact(_) => Hint::None,
                        };
                        (name.clone(), h)
                    })
                    .collect::<HashMap<_, _>>(),
            ),
            None => (serde_json::Value::Null, HashMap::new()),
        };
        let mut inputs = Vec::new();
        if depth > 0 {
            for (name, d) in &step.inputs {
                let hint = hints.get(name).cloned().unwrap_or(Hint::None);
                inputs.push((name.clone(), self.node(d, hint, depth - 1)?));
            }
        }
        Ok(Lineage {
            digest: *digest,
            origin: Origin::Step {
                run,
                step: step.step,
                output,
                component: step.component,
                params,
            },
            inputs,
        })
    }
}

/// A digest with what it is (`generate_data.data`, `file data.csv`, a step name).
pub type Labelled = (String, Digest);

impl Lineage {
    /// What this artifact depends on: the input data (the tree's leaves:
    /// host files, and outputs of steps that read nothing, such as a data
    /// generator or loader), described as `file PATH` or `STEP.OUTPUT`, and
    /// each producing step's component, each listed once.
    pub fn roots(&self) -> (Vec<Labelled>, Vec<Labelled>) {
        let mut data = Vec::new();
        let mut components = Vec::new();
        self.collect(&mut data, &mut components);
        (data, components)
    }

    fn collect(&self, data: &mut Vec<Labelled>, components: &mut Vec<Labelled>) {
        let leaf = match &self.origin {
            Origin::File { path } => Some(format!("file {}", path.display())),
            Origin::Step { step, output, .. } if self.inputs.is_empty() => {
                Some(format!("{step}.{output}"))
            }
            _ => None,
        };
        if let Some(what) = leaf
            && !data.iter().any(|(_, d)| *d == self.digest)
        {
            data.push((what, self.digest));
        }
        if let Origin::Step {
            step,
            component: Some(c),
            ..
        } = &self.origin
            && !components.iter().any(|(s, d)| s == step && d == c)
        {
            components.push((step.clone(), *c));
        }
        for (_, i) in &self.inputs {
            i.collect(data, components);
        }
    }
}
