//! `weir metrics RUN` and `weir compare RUN...`: experiment tracking. Every
//! run keeps its pipeline params (in its recorded plan) and every step's
//! metrics; these commands put them side by side.

use crate::StoreArg;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use weir_runtime::RunId;
use weir_runtime::records::History;

/// Arguments of `weir metrics`.
#[derive(clap::Args)]
pub struct Args {
    /// The run
    run: String,
    /// Print JSON for tools
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

/// Arguments of `weir compare`.
#[derive(clap::Args)]
pub struct CompareArgs {
    /// Two or more runs
    #[arg(num_args = 2.., required = true)]
    runs: Vec<String>,
    /// Print JSON for tools
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

/// A run's params and metrics as recorded.
struct Tracked {
    run: RunId,
    pipeline: String,
    state: String,
    params: BTreeMap<String, Value>,
    /// step -> metric -> last value
    metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

fn tracked(records: &dyn History, run: RunId) -> anyhow::Result<Tracked> {
    let summary = super::need_run(records, run)?;
    let plan: Value = records
        .plan_json(run)?
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    let params = plan["params"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let metrics = records
        .steps(run)?
        .into_iter()
        .filter(|s| !s.metrics.is_empty())
        .map(|s| (s.step, s.metrics))
        .collect();
    Ok(Tracked {
        run,
        pipeline: summary.pipeline,
        state: summary.state.to_string(),
        params,
        metrics,
    })
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .filter(|_| !n.is_i64() && !n.is_u64())
            .map(super::fmt_metric)
            .unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

/// Runs `weir metrics`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let records = super::open_records(&args.store.resolve())?;
    let t = tracked(&*records, super::parse_run(&args.run)?)?;
    if args.json {
        let out = json!({
            "run": t.run.0,
            "pipeline": t.pipeline,
            "state": t.state,
            "params": t.params,
            "metrics": t.metrics,
        });
        jsonln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("run {} ({}, {})", t.run, t.pipeline, t.state);
    if t.params.is_empty() {
        outln!("params: none");
    } else {
        outln!("params:");
        let w = t.params.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in &t.params {
            outln!(
                "  {:<w$}  {}",
                super::one_line(k),
                super::one_line(&show(v))
            );
        }
    }
    if t.metrics.is_empty() {
        outln!("metrics: none");
    } else {
        outln!("metrics:");
        let w = t
            .metrics
            .iter()
            .flat_map(|(s, m)| m.keys().map(move |k| s.len() + 1 + k.len()))
            .max()
            .unwrap_or(0);
        for (step, m) in &t.metrics {
            for (k, v) in m {
                let name = format!("{step}.{}", super::one_line(k));
                outln!("  {name:<w$}  {}", super::fmt_metric(*v));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One row of a comparison.
struct Row {
    kind: &'static str,
    name: String,
    values: Vec<Option<Value>>,
}

impl Row {
    fn differs(&self) -> bool {
        self.values.windows(2).any(|w| w[0] != w[1])
    }
}

/// The comparison of `runs` (params and metrics side by side), for
/// `weir compare` and the server's `/api/compare`.
fn comparison(records: &dyn History, runs: &[RunId]) -> anyhow::Result<(Vec<Tracked>, Vec<Row>)> {
    let runs = runs
        .iter()
        .map(|r| tracked(records, *r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut rows = Vec::new();
    let mut params: Vec<&String> = runs.iter().flat_map(|t| t.params.keys()).collect();
    params.sort();
    params.dedup();
    for p in params {
        rows.push(Row {
            kind: "param",
            name: p.clone(),
            values: runs.iter().map(|t| t.params.get(p).cloned()).collect(),
        });
    }
    let mut metrics: Vec<(&String, &String)> = runs
        .iter()
        .flat_map(|t| {
            t.metrics
                .iter()
                .flat_map(|(s, m)| m.keys().map(move |k| (s, k)))
        })
        .collect();
    metrics.sort();
    metrics.dedup();
    for (s, k) in metrics {
        rows.push(Row {
            kind: "metric",
            name: format!("{s}.{k}"),
            values: runs
                .iter()
                .map(|t| t.metrics.get(s).and_then(|m| m.get(k)).map(|v| json!(v)))
                .collect(),
        });
    }
    Ok((runs, rows))
}

/// The comparison of `runs` as JSON: `{runs: [...], rows: [{kind, name, values, differs}]}`.
pub fn comparison_json(records: &dyn History, runs: &[RunId]) -> anyhow::Result<Value> {
    let (runs, rows) = comparison(records, runs)?;
    Ok(json!({
        "runs": runs.iter().map(|t| json!({"run": t.run.0, "pipeline": t.pipeline, "state": t.state})).collect::<Vec<_>>(),
        "rows": rows.iter().map(|r| json!({
            "kind": r.kind,
            "name": r.name,
            "values": r.values,
            "differs": r.differs(),
        })).collect::<Vec<_>>(),
    }))
}

/// Runs `weir compare`.
pub fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let records = super::open_records(&args.store.resolve())?;
    let ids = args
        .runs
        .iter()
        .map(|r| super::parse_run(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.json {
        let out = comparison_json(&*records, &ids)?;
        jsonln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (runs, rows) = comparison(&*records, &ids)?;
    let cell = |v: &Option<Value>| v.as_ref().map(show).unwrap_or_else(|| "-".into());
    let name_w = rows
        .iter()
        .map(|r| r.name.len() + 7)
        .max()
        .unwrap_or(10)
        .max(10);
    let col_w: Vec<usize> = (0..runs.len())
        .map(|i| {
            rows.iter()
                .map(|r| cell(&r.values[i]).len())
                .max()
                .unwrap_or(0)
                .max(format!("run {}", runs[i].run).len())
        })
        .collect();
    let mut head = format!("  {:<name_w$}", "");
    for (t, w) in runs.iter().zip(&col_w) {
        head.push_str(&format!("  {:>w$}", format!("run {}", t.run)));
    }
    outln!("{}", head.trim_end());
    for r in &rows {
        let mark = if r.differs() { "*" } else { " " };
        let mut line = format!("{mark} {:<name_w$}", format!("{} {}", r.kind, r.name));
        for (v, w) in r.values.iter().zip(&col_w) {
            line.push_str(&format!("  {:>w$}", cell(v)));
        }
        outln!("{}", line.trim_end());
    }
    let n = rows.iter().filter(|r| r.differs()).count();
    outln!("{n} of {} rows differ (marked *)", rows.len());
    Ok(ExitCode::SUCCESS)
}
