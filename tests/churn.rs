//! The flagship churn pipeline (examples/churn) end to end through the CLI,
//! on smaller data: sane metrics, the quality gate both ways, what re-runs
//! when params change, the model registry, lineage, experiment comparison,
//! and identical digests from two clean stores.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

const ROWS: &str = "rows=6000";

fn script() -> std::path::PathBuf {
    repo().join("examples/churn/pipeline.rhai")
}

/// `weir ARGS --store STORE`, which must succeed; returns stdout.
fn ok(store: &Path, args: &[&str]) -> String {
    let out = weir()
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "weir {args:?} failed\n{stdout}\n{stderr}"
    );
    stdout
}

fn run(store: &Path, params: &[&str]) -> String {
    let script = script();
    let mut args = vec!["run", script.to_str().unwrap(), "-p", ROWS];
    for p in params {
        args.extend(["-p", p]);
    }
    ok(store, &args)
}

fn json(store: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ok(store, &a)).unwrap()
}

/// The states of each step in a run, from `weir show`.
fn states(store: &Path, run: &str) -> String {
    ok(store, &["show", run])
}

#[test]
fn the_churn_pipeline_trains_gates_registers_and_caches_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");

    // 1. A first run trains and registers a model.
    let out = run(&a, &[]);
    assert!(
        out.contains("succeeded: 7 steps, 6 executed, 0 cached, 1 skipped"),
        "{out}"
    );
    assert!(out.contains("model churn@1 registered"), "{out}");
    assert!(out.contains("schedule: 0 2 * * *"), "{out}");
    let m = json(&a, &["metrics", "1"]);
    assert_eq!(m["params"]["rows"], 6000, "{m}");
    let ev = &m["metrics"]["evaluate_model"];
    let f1 = ev["f1"].as_f64().unwrap();
    let auc = ev["roc_auc"].as_f64().unwrap();
    let positives = m["metrics"]["validate_data"]["positive_rate"]
        .as_f64()
        .unwrap();
    // Predicting "churn" for everyone scores F1 = 2p / (1 + p).
    let trivial = 2.0 * positives / (1.0 + positives);
    assert!(
        (0.15..0.40).contains(&positives),
        "class imbalance: {positives}"
    );
    assert!(
        f1 > trivial + 0.1,
        "F1 {f1} not well above the trivial {trivial}"
    );
    assert!(auc > 0.75, "ROC AUC {auc}");
    let tp = ev["tp"].as_f64().unwrap();
    let fn_ = ev["fn"].as_f64().unwrap();
    assert!((ev["recall"].as_f64().unwrap() - tp / (tp + fn_)).abs() < 1e-9);
    assert_eq!(m["metrics"]["validate_data"]["rows"], 6000.0);

    // 2. The same run again: nothing executes, nothing new is registered.
    let out = run(&a, &[]);
    assert!(
        out.contains("succeeded: 7 steps, 0 executed, 6 cached, 1 skipped"),
        "{out}"
    );
    assert!(out.contains("model churn@1 already registered"), "{out}");

    // 3. Only the gate's threshold changes, and the gate fails: only its
    // dependants change (notify_failure runs, register_model is skipped).
    let out = run(&a, &["min_f1=0.99"]);
    assert!(
        out.contains("succeeded: 7 steps, 1 executed, 5 cached, 1 skipped"),
        "{out}"
    );
    let show = states(&a, "3");
    assert!(
        show.lines()
            .any(|l| l.contains("notify_failure") && l.contains("succeeded")),
        "{show}"
    );
    assert!(
        show.lines()
            .any(|l| l.contains("register_model") && l.contains("skipped")),
        "{show}"
    );
    let report_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("notify_failure.report"))
        .unwrap();
    let view = Path::new(report_line.split_whitespace().last().unwrap());
    let md = std::fs::read_to_string(view.join("rejected.md")).unwrap();
    assert!(md.contains("below the gate's min_f1 of 0.99"), "{md}");

    // 4. New hyper-parameters: train, evaluate and the gate's branch re-run;
    // data generation, validation and features stay cached.
    let out = run(&a, &["epochs=20"]);
    assert!(
        out.contains("succeeded: 7 steps, 3 executed, 3 cached, 1 skipped"),
        "{out}"
    );
    let show = states(&a, "4");
    for (step, state) in [
        ("generate_data", "cached"),
        ("validate_data", "cached"),
        ("compute_features", "cached"),
        ("train_model", "succeeded"),
        ("evaluate_model", "succeeded"),
        ("register_model", "succeeded"),
    ] {
        assert!(
            show.lines().any(|l| l.contains(step) && l.contains(state)),
            "{step} should be {state}:\n{show}"
        );
    }
    assert!(out.contains("model churn@2 registered"), "{out}");

    // The registry.
    let models = json(&a, &["models", "list"]);
    let versions = models.as_array().unwrap();
    assert_eq!(versions.len(), 2, "{models}");
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["run"], 1);
    assert_eq!(versions[0]["step"], "register_model");
    assert_eq!(versions[1]["run"], 4);
    assert_eq!(versions[0]["metrics"]["f1"].as_f64().unwrap(), f1);
    ok(&a, &["models", "promote", "churn@1", "production"]);
    let out = ok(&a, &["models", "promote", "churn@2", "production"]);
    assert!(
        out.contains("churn@1 moved from production to archived"),
        "{out}"
    );
    let models = json(&a, &["models", "list", "churn"]);
    assert_eq!(models[0]["stage"], "archived");
    assert_eq!(models[1]["stage"], "production");
    let bad = weir()
        .args(["models", "promote", "churn@9", "production", "--store"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("model 'churn' has no version 9 (versions 1 to 2)")
    );

    // Lineage: from the registered package back to the generated data,
    // through the validated copy (same bytes, different step).
    let show = json(&a, &["models", "show", "churn@1"]);
    let data = show["input_data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{show}");
    assert_eq!(data[0]["source"], "generate_data.data");
    let steps: Vec<&str> = show["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_str().unwrap())
        .collect();
    for s in [
        "register_model",
        "evaluate_model",
        "train_model",
        "compute_features",
        "validate_data",
        "generate_data",
    ] {
        assert!(steps.contains(&s), "{s} missing from {steps:?}");
    }
    let text = ok(&a, &["lineage", "churn@1"]);
    assert!(
        text.contains("└─ data: ") && text.contains("= generate_data.data (run 1"),
        "{text}"
    );
    // The lineage of the training set names its producer and params.
    let train = show["lineage"].to_string();
    assert!(train.contains("\"test_fraction\":0.2"), "{train}");

    // Experiment comparison.
    let cmp = json(&a, &["compare", "1", "3", "4"]);
    let row = |name: &str| {
        cmp["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row {name} in {cmp}"))
            .clone()
    };
    assert_eq!(row("min_f1")["differs"], true);
    assert_eq!(row("epochs")["differs"], true);
    assert_eq!(row("rows")["differs"], false);
    assert_eq!(row("validate_data.rows")["differs"], false);
    assert_eq!(
        row("evaluate_model.f1")["values"][0],
        row("evaluate_model.f1")["values"][1]
    );
    let text = ok(&a, &["compare", "1", "4"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with('*') && l.contains("param epochs")),
        "{text}"
    );

    // Two clean stores: identical digests, step by step, back to the data.
    let b = dir.path().join("b");
    run(&b, &[]);
    let la = json(&a, &["lineage", "churn@1"]);
    let lb = json(&b, &["lineage", "churn@1"]);
    assert_eq!(la, lb);
}

#[test]
fn bad_data_fails_validation_naming_every_violated_check() {
    let dir = tempfile::tempdir().unwrap();
    // Too few rows for the check's minimum (1000).
    let out = weir()
        .arg("run")
        .arg(script())
        .args(["-p", "rows=300", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("1 failed, 5 skipped"), "{stdout}");
    assert!(
        stderr.contains("data checks failed")
            && stderr.contains("row count: 300 rows, at least 1000 required"),
        "{stderr}"
    );
    let models = json(dir.path(), &["models", "list"]);
    assert_eq!(models, serde_json::json!([]));
}

/// A small deterministic generator (xorshift, Box-Muller) for test tables.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self, mean: f64) -> f64 {
        let (u, v) = (self.uniform().max(1e-12), self.uniform());
        mean + (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A project beside the flagship's: its pipeline, its step crates (linked,
/// so they are not built again) and a trust file granting them what the
/// flagship's does, with the tables a user would bring.
fn own_project(dir: &Path) {
    let churn = repo().join("examples/churn");
    std::fs::copy(churn.join("pipeline.rhai"), dir.join("pipeline.rhai")).unwrap();
    std::os::unix::fs::symlink(churn.join("steps"), dir.join("steps")).unwrap();
    std::fs::write(
        dir.join("weir.toml"),
        format!(
            "[build]\nroots = [{:?}]\n\n[[trust]]\nsource = \"steps/train_model\"\ncapabilities = [\"gpu\"]\n\n\
             [[trust]]\nsource = \"steps/evaluate_model\"\ncapabilities = [\"gpu\"]\n",
            churn.join("steps").canonicalize().unwrap()
        ),
    )
    .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Three species, named by text, four numeric measurements and a
    // categorical column; no id column.
    let mut three = String::from("a,b,c,d,color,species\n");
    let centres = [
        [0.0, 0.0, 1.0, 2.0],
        [2.0, 1.0, 0.0, 0.0],
        [1.0, 3.0, 2.0, 1.0],
    ];
    for i in 0..450 {
        let k = i % 3;
        let cells: Vec<String> = centres[k]
            .iter()
            .map(|m| format!("{:.3}", rng.normal(*m)))
            .collect();
        let color = ["red", "blue", "green"][(k + usize::from(rng.uniform() < 0.3)) % 3];
        let name = ["setosa", "versicolor", "virginica"][k];
        three.push_str(&format!("{},{color},{name}\n", cells.join(",")));
    }
    std::fs::create_dir(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/species.csv"), three).unwrap();
    // A 0/1 label, no id column.
    let mut two = String::from("x1,x2,plan,target\n");
    for _ in 0..600 {
        let y = rng.uniform() < 0.4;
        let shift = if y { 1.2 } else { 0.0 };
        let plan = if rng.uniform() < 0.5 { "basic" } else { "pro" };
        two.push_str(&format!(
            "{:.3},{:.3},{plan},{}\n",
            rng.normal(shift),
            rng.normal(shift / 2.0),
            u8::from(y)
        ));
    }
    std::fs::write(dir.join("data/binary.csv"), two).unwrap();
}

#[test]
fn the_flagship_runs_on_your_own_tables() {
    let dir = tempfile::tempdir().unwrap();
    own_project(dir.path());
    let store = dir.path().join(".weir");
    let script = dir.path().join("pipeline.rhai");
    let run = |params: &[&str]| {
        let mut args = vec!["run", script.to_str().unwrap()];
        for p in params {
            args.extend(["-p", p]);
        }
        ok(&store, &args)
    };

    // Multiclass, text labels, inferred columns, no id.
    let out = run(&["data=data/species.csv", "label=species"]);
    assert!(
        out.contains("succeeded: 6 steps, 5 executed, 0 cached, 1 skipped"),
        "{out}"
    );
    let m = json(&store, &["metrics", "1"]);
    let ev = &m["metrics"]["evaluate_model"];
    assert_eq!(ev["classes"], 3.0, "{m}");
    assert!(ev["accuracy"].as_f64().unwrap() > 0.85, "{m}");
    assert!(ev["f1"].as_f64().unwrap() > 0.85, "{m}");
    assert!(ev["roc_auc"].as_f64().unwrap() > 0.9, "{m}");
    assert_eq!(
        m["metrics"]["compute_features"]["features"], 7.0,
        "4 numeric + 3 colours: {m}"
    );
    let show = json(&store, &["show", "1"]);
    let evaluation = show["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "evaluate_model")
        .unwrap()["outputs"]["evaluation"]
        .as_str()
        .unwrap()
        .to_string();
    let report: Value =
        serde_json::from_str(&ok(&store, &["cat", &evaluation, "evaluation.json"])).unwrap();
    assert_eq!(report["average"], "macro", "{report}");
    assert_eq!(
        report["confusion_matrix"]["labels"],
        serde_json::json!(["setosa", "versicolor", "virginica"])
    );
    let cm = report["confusion_matrix"]["rows_actual_cols_predicted"]
        .as_array()
        .unwrap();
    assert_eq!(cm.len(), 3);
    let total: f64 = cm
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert_eq!(total, report["rows"].as_f64().unwrap());

    // Binary 0/1 label without an id column: the positive class at the threshold.
    let out = run(&["data=data/binary.csv", "label=target"]);
    assert!(out.contains("succeeded: 6 steps, 5 executed"), "{out}");
    let m = json(&store, &["metrics", "2"]);
    let ev = &m["metrics"]["evaluate_model"];
    assert_eq!(ev["classes"], 2.0, "{m}");
    let (tp, fn_) = (ev["tp"].as_f64().unwrap(), ev["fn"].as_f64().unwrap());
    assert!((ev["recall"].as_f64().unwrap() - tp / (tp + fn_)).abs() < 1e-9);
    assert!(ev["roc_auc"].as_f64().unwrap() > 0.7, "{m}");
    // The model's lineage reaches the file the data came from.
    let lineage = ok(&store, &["lineage", "churn@2"]);
    assert!(lineage.contains("= file data/binary.csv"), "{lineage}");
}
