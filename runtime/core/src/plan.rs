//! The compiled pipeline: pure data, stable JSON, hashable.
//!
//! The DSL produces a [`Plan`]; embedding hosts may build one in Rust. The
//! runtime executes nothing but plans. Paths in a plan are as written; they
//! are resolved against [`Plan::base_dir`] when the plan runs.

use crate::digest::Digest;
use crate::limits::Limits;
use crate::names::check_name;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Pipeline params after command-line overrides (name to value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Concurrency limit per tag: at most this many steps with the tag run at once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, u32>,
    /// A cron schedule (`"0 2 * * *"`), for `weir serve`; `weir run` ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How `weir serve` runs the pipeline: schedule time zone, catch-up,
    /// concurrency and notification hooks. `weir run` ignores it.
    #[serde(default, skip_serializing_if = "ServeOptions::is_default")]
    pub serve: ServeOptions,
}

/// What `weir serve` does with slots of a schedule that passed while it
/// was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    /// Missed slots are recorded as skipped; only on-time slots run.
    Skip,
    /// Only the most recent missed slot runs (the default).
    #[default]
    Latest,
    /// Every missed slot runs, oldest first, up to `catchup_limit`.
    All,
}

/// A notification hook: an HTTP webhook that gets a JSON body, or a local
/// command that gets the same JSON on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Hook {
    /// `POST`s the JSON to this `http://` URL (retried, with a timeout).
    Webhook(String),
    /// Runs this program with these arguments (no shell), JSON on stdin.
    /// Written in a script, refused by `weir serve`: a script may come from
    /// someone else, so the commands weir runs are declared in the
    /// project's `weir.toml` and named ([`Hook::Named`]).
    Command(Vec<String>),
    /// Runs the command the project's `weir.toml` declares as
    /// `[hooks.NAME]`, JSON on stdin.
    Named(String),
}

/// Pipeline options for `weir serve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeOptions {
    /// IANA time zone the schedule is read in (default UTC).
    pub timezone: Option<String>,
    /// Missed slots after downtime.
    pub catchup: Catchup,
    /// With `Catchup::All`, at most this many missed slots run.
    pub catchup_limit: u32,
    /// At most this many runs of the pipeline at once; a slot that finds
    /// the pipeline at the limit is recorded as skipped.
    pub max_active_runs: u32,
    /// Hooks called when a run fails.
    pub on_failure: Vec<Hook>,
    /// Hooks called when a run succeeds.
    pub on_success: Vec<Hook>,
    /// Pipelines of the same project whose successful runs start a run of
    /// this one (`p.after_success("name")`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_success: Vec<String>,
    /// Models of the registry whose new versions (or promotions to a
    /// stage) start a run of this one (`p.after_model("churn")`,
    /// `p.after_model("churn", "production")`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_model: Vec<ModelTrigger>,
    /// Folders (relative to the script's folder, inside the project) whose
    /// contents changing starts a run of this one (`p.after_change(dir)`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_change: Vec<String>,
}

/// A model event that starts a pipeline's run in `weir serve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTrigger {
    /// The model's name in the registry.
    pub model: String,
    /// `None`: a new version is registered; a stage (`staging`,
    /// `production`, `archived`): a version is promoted to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            timezone: None,
            catchup: Catchup::Latest,
            catchup_limit: 10,
            max_active_runs: 1,
            on_failure: Vec::new(),
            on_success: Vec::new(),
            after_success: Vec::new(),
            after_model: Vec::new(),
            after_change: Vec::new(),
        }
    }
}

impl ServeOptions {
    fn is_default(&self) -> bool {
        *self == ServeOptions::default()
    }
}

/// The path (`a.b[2]`) of the first number in `v` that is not finite.
/// (serde_json keeps no NaN or infinity, but a plan read from elsewhere
/// could hold one as a float it parsed from a string: checked anyway.)
fn non_finite(v: &serde_json::Value, at: String) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().filter(|f| !f.is_finite()).map(|_| {
            if at.is_empty() {
                "the value".into()
            } else {
                at
            }
        }),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| non_finite(x, format!("{at}[{i}]"))),
        serde_json::Value::Object(o) => o.iter().find_map(|(k, x)| {
            non_finite(
                x,
                if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                },
            )
        }),
        _ => None,
    }
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
    /// Declared artifact types of outputs (an output without one is a plain folder).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_types: BTreeMap<String, ArtifactType>,
    /// Expected artifact types of inputs, checked against what feeds them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_types: BTreeMap<String, ArtifactType>,
    /// Retries after a failed attempt.
    #[serde(default, skip_serializing_if = "RetryPolicy::is_none")]
    pub retry: RetryPolicy,
    /// How the cache is used.
    #[serde(default, skip_serializing_if = "CachePolicy::is_default")]
    pub cache: CachePolicy,
    /// Tags; a tag with a pool limits how many such steps run at once.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tags: BTreeSet<String>,
    /// Capabilities requested beyond the `step` world (granted by the runtime's trust policy).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub capabilities: BTreeSet<String>,
    /// Run only when this condition holds; otherwise the step is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    /// Run once per item of a list known only at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<MapSpec>,
    /// Add the step's `Model` output to the model registry under this name
    /// whenever the step succeeds or is a cache hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<String>,
}

/// What an artifact holds, declared on outputs and expected on inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactType {
    /// A table (CSV or Parquet files).
    Dataset,
    /// A trained model.
    Model,
    /// Metrics (small JSON).
    Metrics,
    /// A tensor (`.npy`, safetensors).
    Tensor,
    /// One file.
    File,
    /// Any folder; an input of this type accepts every artifact.
    Folder,
}

impl ArtifactType {
    /// Every type, with the name scripts use.
    pub const ALL: [(ArtifactType, &'static str); 6] = [
        (ArtifactType::Dataset, "Dataset"),
        (ArtifactType::Model, "Model"),
        (ArtifactType::Metrics, "Metrics"),
        (ArtifactType::Tensor, "Tensor"),
        (ArtifactType::File, "File"),
        (ArtifactType::Folder, "Folder"),
    ];

    /// The name scripts use.
    pub fn name(self) -> &'static str {
        ArtifactType::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, n)| *n)
            .unwrap_or("Folder")
    }

    /// Whether an input expecting `self` accepts an output declared as `given`.
    pub fn accepts(self, given: ArtifactType) -> bool {
        self == ArtifactType::Folder || self == given
    }
}

/// Retries with exponential backoff: attempt `k+1` waits `delay_ms * backoff^(k-1)`, at most `max_delay_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Extra attempts after the first failure.
    pub retries: u32,
    /// Wait before the first retry, in ms.
    pub delay_ms: u64,
    /// Factor applied to the wait after each retry.
    pub backoff: f64,
    /// Longest wait, in ms.
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            retries: 0,
            delay_ms: 1_000,
            backoff: 2.0,
            max_delay_ms: 300_000,
        }
    }
}

impl RetryPolicy {
    fn is_none(&self) -> bool {
        *self == RetryPolicy::default()
    }

    /// Checks the policy against [`crate::limits::MAX_RETRIES`] and
    /// [`crate::limits::MAX_RETRY_DELAY`], naming the bad field.
    pub fn validate(&self) -> Result<(), crate::limits::LimitError> {
        use crate::limits::{LimitError, MAX_RETRIES, MAX_RETRY_DELAY};
        if self.retries > MAX_RETRIES {
            return Err(LimitError::out_of_range(
                "retries",
                format!("at most {MAX_RETRIES}"),
                self.retries.to_string(),
            ));
        }
        let max = MAX_RETRY_DELAY.as_millis() as u64;
        for (what, ms) in [
            ("retry_delay", self.delay_ms),
            ("max_delay", self.max_delay_ms),
        ] {
            if ms > max {
                return Err(LimitError::out_of_range(
                    what,
                    format!("at most 1 day ({max} ms)"),
                    format!("{ms} ms"),
                ));
            }
        }
        if !(1.0..=100.0).contains(&self.backoff) {
            return Err(LimitError::out_of_range(
                "backoff",
                "between 1.0 and 100.0",
                self.backoff.to_string(),
            ));
        }
        Ok(())
    }

    /// The wait before attempt `attempt` (2 for the first retry).
    pub fn delay_before(&self, attempt: u32) -> std::time::Duration {
        let k = attempt.saturating_sub(2) as i32;
        let ms = (self.delay_ms as f64 * self.backoff.powi(k)).min(self.max_delay_ms as f64);
        std::time::Duration::from_millis(ms.max(0.0) as u64)
    }
}

/// How a step uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CachePolicy {
    /// Use and fill the cache (the default), or not.
    pub mode: CacheMode,
    /// Entries older than this (ms) are ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_ms: Option<u64>,
}

impl CachePolicy {
    fn is_default(&self) -> bool {
        *self == CachePolicy::default()
    }
}

/// Cache modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Reuse a valid entry; record a new one after success.
    #[default]
    Normal,
    /// Always run; record nothing in the cache.
    Disabled,
    /// Always run; record the result for later runs.
    Refresh,
}

/// A condition on upstream results, evaluated when its steps are done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// `left op right`.
    Compare {
        /// Left operand.
        left: Operand,
        /// Operator.
        op: CmpOp,
        /// Right operand.
        right: Operand,
    },
    /// All hold.
    All(Vec<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
    /// Does not hold.
    Not(Box<Condition>),
}

/// A value in a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Operand {
    /// The last value of metric `name` of step `step`.
    Metric {
        /// The step.
        step: String,
        /// The metric.
        name: String,
    },
    /// A value in a JSON file of an upstream output, by JSON pointer (`/f1`).
    Json {
        /// The step.
        step: String,
        /// Its output.
        output: String,
        /// File inside the output folder.
        file: String,
        /// JSON pointer into the file.
        pointer: String,
    },
    /// A constant.
    Value(serde_json::Value),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

impl Operand {
    /// The step this operand reads from, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Operand::Metric { step, .. } | Operand::Json { step, .. } => Some(step),
            Operand::Value(_) => None,
        }
    }
}

impl Condition {
    /// Every step the condition reads from.
    pub fn steps(&self) -> Vec<&str> {
        let mut v = Vec::new();
        self.collect_steps(&mut v);
        v
    }

    /// Every (step, output) whose files the condition reads.
    pub fn outputs(&self) -> Vec<(&str, &str)> {
        match self {
            Condition::Compare { left, right, .. } => [left, right]
                .into_iter()
                .filter_map(|o| match o {
                    Operand::Json { step, output, .. } => Some((step.as_str(), output.as_str())),
                    _ => None,
                })
                .collect(),
            Condition::All(cs) | Condition::Any(cs) => {
                cs.iter().flat_map(|c| c.outputs()).collect()
            }
            Condition::Not(c) => c.outputs(),
        }
    }

    fn collect_steps<'a>(&'a self, v: &mut Vec<&'a str>) {
        match self {
            Condition::Compare { left, right, .. } => {
                v.extend(left.step().into_iter().chain(right.step()))
            }
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.collect_steps(v)),
            Condition::Not(c) => c.collect_steps(v),
        }
    }
}

impl std::fmt::Display for Operand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operand::Metric { step, name } => write!(f, "{step}.metric({name:?})"),
            Operand::Json {
                step,
                output,
                file,
                pointer,
            } => write!(f, "{step}.json({output:?}, {file:?}, {pointer:?})"),
            Operand::Value(v) => write!(f, "{v}"),
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |f: &mut std::fmt::Formatter<'_>, name: &str, cs: &[Condition]| {
            write!(f, "{name}(")?;
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, ")")
        };
        match self {
            Condition::Compare { left, op, right } => write!(f, "{left} {} {right}", op.symbol()),
            Condition::All(cs) => join(f, "all", cs),
            Condition::Any(cs) => join(f, "any", cs),
            Condition::Not(c) => write!(f, "not({c})"),
        }
    }
}

/// Dynamic fan-out: one child execution per item, collected into one folder per output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSpec {
    /// The upstream step whose output lists the items.
    pub step: String,
    /// That step's output.
    pub output: String,
    /// Items: the entries of the output folder, or the elements of a JSON list in this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_list: Option<String>,
    /// At most this many children run at once (0: no bound beyond `jobs`).
    #[serde(default)]
    pub parallelism: u32,
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
    /// An input fed by an output of an incompatible declared type.
    #[error("{0}")]
    Type(String),
    /// Stored plan JSON that does not parse.
    #[error("a stored plan that does not parse: {0}")]
    StoredJson(String),
    /// A stored plan that parses but does not validate.
    #[error("a stored plan that does not validate: {0}")]
    Stored(Box<PlanError>),
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
            output_types: BTreeMap::new(),
            input_types: BTreeMap::new(),
            retry: RetryPolicy::default(),
            cache: CachePolicy::default(),
            tags: BTreeSet::new(),
            capabilities: BTreeSet::new(),
            when: None,
            map: None,
            register: None,
        }
    }

    /// The output that `.register(...)` adds to the model registry: the one
    /// output declared `Model`.
    pub fn registered_output(&self) -> Result<&str, PlanError> {
        let models: Vec<&str> = self
            .output_types
            .iter()
            .filter(|(_, t)| **t == ArtifactType::Model)
            .map(|(o, _)| o.as_str())
            .collect();
        match models.as_slice() {
            [one] => Ok(one),
            [] => Err(PlanError::Invalid(format!(
                "{}registers a model, so it needs one output declared Model (for example .output(\"model\", Model)); it has none",
                self.at()
            ))),
            many => Err(PlanError::Invalid(format!(
                "{}registers a model but has {} outputs declared Model ({}); keep one",
                self.at(),
                many.len(),
                many.join(", ")
            ))),
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
    /// The tags a cluster routes `step` by (a worker runs it only if it
    /// serves them all): its tags that name no pool (a pool's tag bounds
    /// how many of its steps run at once, wherever they run).
    pub fn routing_tags(&self, step: &StepPlan) -> Vec<String> {
        step.tags
            .iter()
            .filter(|t| !self.pools.contains_key(*t))
            .cloned()
            .collect()
    }

    /// An empty plan named `name` whose paths resolve against `base_dir`.
    pub fn new(name: impl Into<String>, base_dir: impl Into<PathBuf>) -> Plan {
        Plan {
            name: name.into(),
            base_dir: base_dir.into(),
            steps: Vec::new(),
            params: BTreeMap::new(),
            pools: BTreeMap::new(),
            schedule: None,
            serve: ServeOptions::default(),
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

    /// The plan as stable, compact JSON: what a run records (its plan
    /// digest hashes [`Plan::identity_json`]).
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The JSON a plan's identity is made of: [`Plan::to_json`] without how
    /// `weir serve` runs it (`schedule`, `serve`: time zone, catch-up,
    /// concurrency, hooks), so changing a webhook or a schedule leaves the
    /// pipeline the same pipeline. Equal to [`Plan::to_json`] for a plan
    /// without serve settings.
    pub fn identity_json(&self) -> String {
        if !self.has_serve_settings() {
            return self.to_json();
        }
        /// [`Plan`]'s fields but the serve settings, in its order.
        #[derive(Serialize)]
        struct Identity<'a> {
            name: &'a str,
            base_dir: &'a Path,
            steps: &'a [StepPlan],
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            params: &'a BTreeMap<String, serde_json::Value>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            pools: &'a BTreeMap<String, u32>,
        }
        serde_json::to_string(&Identity {
            name: &self.name,
            base_dir: &self.base_dir,
            steps: &self.steps,
            params: &self.params,
            pools: &self.pools,
        })
        .unwrap_or_default()
    }

    /// Whether the plan says how `weir serve` runs it (a schedule, or serve
    /// options other than the defaults).
    pub fn has_serve_settings(&self) -> bool {
        self.schedule.is_some() || !self.serve.is_default()
    }

    /// The same JSON, indented for people (`weir plan`).
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a plan stored by [`Plan::to_json`] (a run's recorded plan):
    /// the JSON must have the plan's shape and the plan must validate.
    pub fn from_json(json: &str) -> Result<Plan, PlanError> {
        let plan: Plan =
            serde_json::from_str(json).map_err(|e| PlanError::StoredJson(e.to_string()))?;
        plan.validate()
            .map_err(|e| PlanError::Stored(Box::new(e)))?;
        Ok(plan)
    }

    /// Checks names, references, params and limits, and that the steps form a
    /// DAG. Returns the steps' indices in a topological order.
    pub fn validate(&self) -> Result<Vec<usize>, PlanError> {
        check_name("pipeline", &self.name).map_err(|source| PlanError::Name {
            at: String::new(),
            source,
        })?;
        if self.steps.len() > crate::limits::MAX_STEPS {
            return Err(PlanError::Invalid(format!(
                "pipeline '{}' has {} steps; a pipeline has at most {}",
                self.name,
                self.steps.len(),
                crate::limits::MAX_STEPS
            )));
        }
        let index = self.check_steps()?;
        self.check_pools()?;
        self.check_references(&index)?;
        let deps = self.dependencies();
        topo_order(&self.steps, &deps)
    }

    /// Each step alone: names, no duplicate, params an object of finite
    /// numbers, limits and retry policy. Returns the steps by name.
    fn check_steps(&self) -> Result<HashMap<&str, usize>, PlanError> {
        // Hashed, not ordered: a 10,000-step plan's lookups stay O(1).
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(self.steps.len());
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
            s.retry
                .validate()
                .map_err(|e| PlanError::Invalid(format!("{}{e}", s.at())))?;
            if let Some(path) = non_finite(&s.params, String::new()) {
                return Err(PlanError::Invalid(format!(
                    "{}params: {path} is not a finite number (NaN and infinities cannot be passed to a step)",
                    s.at()
                )));
            }
        }
        Ok(index)
    }

    /// Pool names, and sizes of at least 1.
    fn check_pools(&self) -> Result<(), PlanError> {
        for (name, size) in &self.pools {
            check_name("pool", name).map_err(|source| PlanError::Name {
                at: String::new(),
                source,
            })?;
            if *size == 0 {
                return Err(PlanError::Invalid(format!(
                    "pool '{name}' has size 0; a pool allows at least 1 step at a time"
                )));
            }
        }
        Ok(())
    }

    /// What steps refer to: upstream steps and outputs that exist, input
    /// and output types that agree, maps, conditions, tags and model names.
    fn check_references(&self, index: &HashMap<&str, usize>) -> Result<(), PlanError> {
        let find_output = |s: &StepPlan,
                           what: &str,
                           step: &str,
                           output: &str|
         -> Result<&StepPlan, PlanError> {
            let Some(&j) = index.get(step) else {
                return Err(PlanError::Reference(format!(
                    "{}{what} reads from step '{step}', which does not exist{}",
                    s.at(),
                    suggest(step, self.steps.iter().map(|s| s.name.as_str()))
                )));
            };
            let up = &self.steps[j];
            if !output.is_empty() && !up.outputs.contains(output) {
                return Err(PlanError::Reference(format!(
                    "{}{what} reads output '{output}' of step '{step}', which declares no such output{}",
                    s.at(),
                    if up.outputs.is_empty() {
                        String::from(" (it declares none)")
                    } else {
                        suggest(output, up.outputs.iter().map(String::as_str))
                    }
                )));
            }
            if up.name == s.name {
                return Err(PlanError::Cycle(format!("{} -> {}", s.name, s.name)));
            }
            Ok(up)
        };
        for s in &self.steps {
            for o in s.output_types.keys() {
                if !s.outputs.contains(o) {
                    return Err(PlanError::Invalid(format!(
                        "{}a type is declared for output '{o}', which is not an output",
                        s.at()
                    )));
                }
            }
            for (input, src) in &s.inputs {
                if let InputSource::Step { step, output } = src {
                    let up = find_output(s, &format!("input '{input}'"), step, output)?;
                    let given = if up.map.is_some() {
                        Some(ArtifactType::Folder)
                    } else {
                        up.output_types.get(output).copied()
                    };
                    if let (Some(want), Some(given)) = (s.input_types.get(input), given)
                        && !want.accepts(given)
                    {
                        return Err(PlanError::Type(format!(
                            "{}input '{input}' expects a {}, but output '{output}' of step '{step}' is a {}",
                            s.at(),
                            want.name(),
                            given.name()
                        )));
                    }
                }
            }
            if let Some(m) = &s.map {
                find_output(s, "map", &m.step, &m.output)?;
                if m.json_list.is_none() && s.inputs.contains_key("item") {
                    return Err(PlanError::Invalid(format!(
                        "{}a map over a folder passes each item as input 'item'; rename the step's own input 'item'",
                        s.at()
                    )));
                }
            }
            if let Some(c) = &s.when {
                check_condition(s, c, &find_output)?;
            }
            for t in &s.tags {
                check_name("tag", t).map_err(|source| PlanError::Name { at: s.at(), source })?;
            }
            if let Some(model) = &s.register {
                check_name("model", model)
                    .map_err(|source| PlanError::Name { at: s.at(), source })?;
                if s.map.is_some() {
                    return Err(PlanError::Invalid(format!(
                        "{}a map step cannot register a model; register from a step after the collect",
                        s.at()
                    )));
                }
                s.registered_output()?;
            }
        }
        Ok(())
    }

    /// Every (step, output) some step reads: as an input, as what a map maps
    /// over, or in a condition's JSON operand. The others are the
    /// pipeline's results.
    pub fn read_outputs(&self) -> std::collections::HashSet<(&str, &str)> {
        let mut read = std::collections::HashSet::new();
        for s in &self.steps {
            for src in s.inputs.values() {
                if let InputSource::Step { step, output } = src {
                    read.insert((step.as_str(), output.as_str()));
                }
            }
            if let Some(m) = &s.map {
                read.insert((m.step.as_str(), m.output.as_str()));
            }
            if let Some(c) = &s.when {
                read.extend(c.outputs());
            }
        }
        read
    }

    /// For each step, the indices of the steps it waits for: those it reads
    /// inputs from, maps over, or whose results its condition reads.
    pub fn dependencies(&self) -> Vec<Vec<usize>> {
        let index: HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        self.steps
            .iter()
            .map(|s| {
                let mut names: Vec<&str> = s
                    .inputs
                    .values()
                    .filter_map(|src| match src {
                        InputSource::Step { step, .. } => Some(step.as_str()),
                        _ => None,
                    })
                    .collect();
                if let Some(m) = &s.map {
                    names.push(&m.step);
                }
                if let Some(c) = &s.when {
                    names.extend(c.steps());
                }
                let mut d: Vec<usize> =
                    names.iter().filter_map(|n| index.get(n).copied()).collect();
                d.sort_unstable();
                d.dedup();
                d
            })
            .collect()
    }
}

/// Looks up `step` (and its `output`, unless empty) for an error about `what` in a step.
type FindOutput<'f, 'a> =
    &'f dyn Fn(&StepPlan, &str, &str, &str) -> Result<&'a StepPlan, PlanError>;

fn check_condition<'a>(
    s: &StepPlan,
    c: &Condition,
    find: FindOutput<'_, 'a>,
) -> Result<(), PlanError> {
    match c {
        Condition::Compare { left, right, .. } => {
            for o in [left, right] {
                match o {
                    Operand::Metric { step, .. } => {
                        find(s, "the condition", step, "")?;
                    }
                    Operand::Json { step, output, .. } => {
                        find(s, "the condition", step, output)?;
                    }
                    Operand::Value(_) => {}
                }
            }
            Ok(())
        }
        Condition::All(cs) | Condition::Any(cs) => {
            cs.iter().try_for_each(|c| check_condition(s, c, find))
        }
        Condition::Not(c) => check_condition(s, c, find),
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
    let mut ring: Vec<usize> = seen[start..].iter().rev().copied().collect();
    // Start at the step declared first, so the message is stable.
    if let Some(first) = ring
        .iter()
        .enumerate()
        .min_by_key(|(_, i)| **i)
        .map(|(k, _)| k)
    {
        ring.rotate_left(first);
    }
    let mut cycle: Vec<&str> = ring.iter().map(|&i| steps[i].name.as_str()).collect();
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

    #[test]
    fn stored_json_does_not_depend_on_insertion_order() {
        // The plan digest hashes `to_json`; if serde_json's `preserve_order`
        // feature were ever switched on (by any crate in the build), params
        // would keep insertion order and equal plans would differ.
        let mut a = Plan::new("p", "/tmp");
        let mut s = StepPlan::new("s", ComponentSource::Wasm("x.wasm".into()));
        s.params = serde_json::json!({"b": 1, "a": 2});
        a.steps.push(s.clone());
        let mut b = Plan::new("p", "/tmp");
        let mut m = serde_json::Map::new();
        m.insert("a".into(), 2.into());
        m.insert("b".into(), 1.into());
        s.params = serde_json::Value::Object(m);
        b.steps.push(s);
        assert_eq!(a.to_json(), b.to_json());
    }

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
    fn read_outputs_are_inputs_map_sources_and_json_conditions() {
        let mut p = Plan::new("p", ".");
        let mut gated = step("gated", &[]);
        gated.when = Some(Condition::All(vec![
            Condition::Compare {
                left: Operand::Json {
                    step: "a".into(),
                    output: "report".into(),
                    file: "r.json".into(),
                    pointer: "/ok".into(),
                },
                op: CmpOp::Eq,
                right: Operand::Value(true.into()),
            },
            Condition::Compare {
                left: Operand::Metric {
                    step: "b".into(),
                    name: "f1".into(),
                },
                op: CmpOp::Gt,
                right: Operand::Value(0.5.into()),
            },
        ]));
        let mut each = step("each", &[]);
        each.map = Some(MapSpec {
            step: "b".into(),
            output: "out".into(),
            parallelism: 0,
            json_list: None,
        });
        p.steps = vec![step("a", &[]), step("b", &[("a", "out")]), gated, each];
        let read = p.read_outputs();
        let mut read: Vec<_> = read.into_iter().collect();
        read.sort();
        // b's metric is not an output; gated's and each's outputs are results.
        assert_eq!(read, vec![("a", "out"), ("a", "report"), ("b", "out")]);
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
