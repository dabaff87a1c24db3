//! The pipeline language and the scheduler: params, retries, cache policies,
//! gates, maps, pools, failure modes, cancellation, crash and resume.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weir_runtime::{RunOptions, RunState, StepState};

/// Writes a script whose first lines bind `echo`, `flaky`, `sleep` and `noop`
/// to fixture components, followed by `body`.
fn script(dir: &Path, body: &str) -> PathBuf {
    let mut s = String::new();
    for (name, wasm) in [
        ("echo", fixture("echo")),
        ("flaky", fixture("flaky")),
        ("sleep", fixture("sleep")),
        ("noop", fixture("noop")),
    ] {
        s.push_str(&format!("let {name} = {:?};\n", wasm.display().to_string()));
    }
    s.push_str(body);
    let path = dir.join("pipeline.rhai");
    std::fs::write(&path, s).unwrap();
    path
}

fn compile(path: &Path, overrides: &[(&str, &str)]) -> weir_runtime::Plan {
    let o: BTreeMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    weir_dsl::compile_file_with(path, &o).unwrap_or_else(|e| panic!("{e}"))
}

fn compile_err(dir: &Path, body: &str) -> String {
    weir_dsl::compile_file(&script(dir, body))
        .unwrap_err()
        .to_string()
}

#[test]
fn a_flaky_step_is_retried_until_it_succeeds_and_retries_can_run_out() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let path = script(
        tmp.path(),
        r#"
let p = pipeline("retry");
p.step("ok_on_third", flaky).output("out").params(#{ succeed_on: 3 }).retries(3).retry_delay("10ms").backoff(2.0);
p.step("gives_up", flaky).output("out").params(#{ succeed_on: 5 }).retries(1).retry_delay("10ms");
"#,
    );
    let r = run(&rt, &compile(&path, &[]));
    let ok = r.step("ok_on_third").unwrap();
    assert_eq!(ok.state, StepState::Succeeded, "{:?}", ok.error);
    assert_eq!(ok.attempts, 3);
    let logs = rt.records().logs(r.run, "ok_on_third").unwrap();
    assert!(
        logs.iter().any(|(a, l)| *a == 1
            && l.message.contains(
                "attempt 1 failed: the step returned an error: flaky failure on attempt 1"
            )),
        "{logs:?}"
    );
    let bad = r.step("gives_up").unwrap();
    assert_eq!(bad.state, StepState::Failed);
    assert_eq!(bad.attempts, 2);
    assert_eq!(
        bad.error.as_deref(),
        Some("the step returned an error: flaky failure on attempt 2 (after 2 attempts)")
    );
    let attempts = rt.records().attempts(r.run, "ok_on_third").unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("the step returned an error: flaky failure on attempt 1")
    );
    assert!(attempts[2].error.is_none());
    assert!(
        attempts
            .windows(2)
            .all(|w| w[0].ended_ms <= w[1].started_ms),
        "attempts in order"
    );
    let shown = rt.records().steps(r.run).unwrap();
    assert_eq!(
        shown
            .iter()
            .find(|s| s.step == "ok_on_third")
            .unwrap()
            .attempts,
        3
    );
}

#[test]
fn a_timeout_set_in_the_script_stops_the_step_and_each_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let path = script(
        tmp.path(),
        r#"let p = pipeline("t"); p.step("slow", sleep).output("out").timeout("200ms").retries(1).retry_delay("1ms");"#,
    );
    let t = std::time::Instant::now();
    let r = run(&rt, &compile(&path, &[]));
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    let s = r.step("slow").unwrap();
    assert_eq!(s.attempts, 2);
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .contains("exceeded its timeout of 200ms"),
        "{:?}",
        s.error
    );
}

#[test]
fn a_gate_runs_its_branch_only_when_the_condition_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let path = script(
        tmp.path(),
        r#"
let min_f1 = param("min_f1", 0.8);
let p = pipeline("gate");
let evaluate = p.step("evaluate", echo).output("out").params(#{ metrics: #{ f1: 0.9, auc: 0.95 } });
let good = evaluate.metric("f1") >= min_f1;
let register = p.step("register", echo).output("out").input("model", evaluate.out("out")).when(good).params(#{ id: 1 });
p.step("after_register", echo).output("out").input("r", register.out("out")).params(#{ id: 2 });
p.step("notify", echo).output("out").unless(good).params(#{ id: 3 });
p.step("json_gate", echo).output("out").params(#{ id: 4 }).when(evaluate.json("out", "metrics.json", "/auc") > 0.9 & evaluate.metric("auc") < 1);
"#,
    );
    let r = run(&rt, &compile(&path, &[]));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    assert_eq!(r.step("register").unwrap().state, StepState::Succeeded);
    assert_eq!(
        r.step("after_register").unwrap().state,
        StepState::Succeeded
    );
    assert_eq!(r.step("json_gate").unwrap().state, StepState::Succeeded);
    let notify = r.step("notify").unwrap();
    assert_eq!(notify.state, StepState::Skipped);
    assert_eq!(
        notify.error.as_deref(),
        Some(
            "condition not met: `not(evaluate.metric(\"f1\") >= 0.8)` is false (evaluate.metric(\"f1\") = 0.9)"
        )
    );

    // The other way: a stricter threshold from the command line.
    let r = run(&rt, &compile(&path, &[("min_f1", "0.95")]));
    assert_eq!(
        r.state,
        RunState::Succeeded,
        "a gate not taken is not a failure"
    );
    let reg = r.step("register").unwrap();
    assert_eq!(reg.state, StepState::Skipped);
    assert!(
        reg.error
            .as_deref()
            .unwrap()
            .contains("`evaluate.metric(\"f1\") >= 0.95` is false (evaluate.metric(\"f1\") = 0.9)"),
        "{:?}",
        reg.error
    );
    assert_eq!(r.step("after_register").unwrap().state, StepState::Skipped);
    assert_eq!(r.step("notify").unwrap().state, StepState::Succeeded);
    // The evaluate step was a cache hit, and its metrics were replayed for the gate.
    assert_eq!(r.step("evaluate").unwrap().state, StepState::Cached);
}

#[test]
fn params_are_typed_and_unknown_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = script(
        tmp.path(),
        r#"
let n = param("n", 3);
let name = param("name", "x");
let p = pipeline("params");
p.step("a", echo).output("out").params(#{ n: n * 2, name: name });
"#,
    );
    let plan = compile(&path, &[("n", "5"), ("name", "hello")]);
    assert_eq!(
        plan.steps[0].params,
        serde_json::json!({"n": 10, "name": "hello"})
    );
    assert_eq!(plan.params["n"], serde_json::json!(5));
    let e = weir_dsl::compile_file_with(&path, &[("n".to_string(), "five".to_string())].into())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--param n=five: expected an integer"), "{e}");
    let e = weir_dsl::compile_file_with(&path, &[("nn".to_string(), "1".to_string())].into())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--param nn: the script declares no such param; did you mean 'n'?"),
        "{e}"
    );
}

#[test]
fn a_map_fans_out_over_a_runtime_folder_collects_and_nests_with_children_cached_individually() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let body = |b_text: &str| {
        format!(
            r#"
let p = pipeline("maps");
let list = p.step("list", echo).output("out").params(#{{ bare: true, files: #{{ "a.txt": "A", "b.txt": "{b_text}", "c.txt": "C", "items.json": "[10, 20]" }} }});
let each = p.map("each", echo, list.out("out")).output("out").parallelism(2);
let nested = p.map("nested", echo, each.out("out")).output("out");
p.map_json("numbers", echo, list.out("out"), "items.json").output("out");
p.step("summary", echo).input("a", nested.out("out")).output("out");
"#
        )
    };
    let path = script(tmp.path(), &body("B"));
    let r = run(&rt, &compile(&path, &[]));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    let children: Vec<&str> = r.children.iter().map(|c| c.name.as_str()).collect();
    for c in [
        "each[a.txt]",
        "each[b.txt]",
        "each[c.txt]",
        "each[items.json]",
        "nested[a.txt]",
        "numbers[0]",
        "numbers[1]",
    ] {
        assert!(children.contains(&c), "{c} missing from {children:?}");
    }
    assert_eq!(children.len(), 4 + 4 + 2);
    // Collected: one folder per item, holding that child's output.
    let each = r.output_path(rt.store(), "each", "out").unwrap();
    let inputs = std::fs::read_to_string(each.join("b.txt/inputs.txt")).unwrap();
    assert_eq!(inputs, "item/b.txt: B\n");
    let numbers = r.output_path(rt.store(), "numbers", "out").unwrap();
    let params = std::fs::read_to_string(numbers.join("1/params.json")).unwrap();
    assert!(
        params.contains("\"item\":20") && params.contains("\"index\":1"),
        "{params}"
    );
    let summary = r.output_path(rt.store(), "summary", "out").unwrap();
    let listing = std::fs::read_to_string(summary.join("inputs.txt")).unwrap();
    assert!(
        listing.contains("a/c.txt/inputs.txt: item/c.txt/inputs.txt: item/c.txt: C"),
        "{listing}"
    );

    // Change one file: only its children re-run; the rest are cache hits.
    let path = script(tmp.path(), &body("B2"));
    let r2 = run(&rt, &compile(&path, &[]));
    let state = |n: &str| r2.step(n).unwrap().state;
    assert_eq!(state("list"), StepState::Succeeded);
    assert_eq!(state("each[b.txt]"), StepState::Succeeded);
    assert_eq!(state("nested[b.txt]"), StepState::Succeeded);
    for n in [
        "each[a.txt]",
        "each[c.txt]",
        "nested[a.txt]",
        "numbers[0]",
        "numbers[1]",
    ] {
        assert_eq!(state(n), StepState::Cached, "{n}");
    }
    assert_eq!(state("numbers"), StepState::Cached);
    assert_eq!(state("summary"), StepState::Succeeded);
}

#[test]
fn a_pool_bounds_how_many_tagged_steps_run_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let rt =
        weir_runtime::Runtime::new(weir_runtime::Config::new(tmp.path().join(".weir")).jobs(4))
            .unwrap();
    let path = script(
        tmp.path(),
        r#"
let p = pipeline("pools");
p.pool("db", 1);
for i in 0..4 { p.step(`db${i}`, sleep).output("out").params(#{ ms: 150, i: i }).tag("db"); }
for i in 0..2 { p.step(`free${i}`, sleep).output("out").params(#{ ms: 300, i: i }); }
"#,
    );
    let r = run(&rt, &compile(&path, &[]));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    let steps = rt.records().steps(r.run).unwrap();
    let spans = |prefix: &str| -> Vec<(i64, i64)> {
        steps
            .iter()
            .filter(|s| s.step.starts_with(prefix))
            .map(|s| (s.started_ms, s.ended_ms))
            .collect()
    };
    let db = spans("db");
    assert_eq!(db.len(), 4);
    for (i, a) in db.iter().enumerate() {
        for b in &db[i + 1..] {
            assert!(
                a.1 <= b.0 || b.1 <= a.0,
                "tagged steps overlapped: {a:?} {b:?}"
            );
        }
    }
    // Untagged steps are not bound by the pool: they overlap each other (4 jobs).
    let free = spans("free");
    assert!(
        free[0].0 < free[1].1 && free[1].0 < free[0].1,
        "untagged steps ran serially: {free:?}"
    );
}

#[test]
fn a_map_parallelism_bound_is_respected() {
    let tmp = tempfile::tempdir().unwrap();
    let rt =
        weir_runtime::Runtime::new(weir_runtime::Config::new(tmp.path().join(".weir")).jobs(4))
            .unwrap();
    let path = script(
        tmp.path(),
        r#"
let p = pipeline("bounded");
let list = p.step("list", echo).output("out").params(#{ bare: true, files: #{ a: "1", b: "2", c: "3" } });
p.map("one_at_a_time", sleep, list.out("out")).output("out").params(#{ ms: 150 }).parallelism(1);
"#,
    );
    let r = run(&rt, &compile(&path, &[]));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    let steps = rt.records().steps(r.run).unwrap();
    let spans: Vec<(i64, i64)> = steps
        .iter()
        .filter(|s| s.step.starts_with("one_at_a_time["))
        .map(|s| (s.started_ms, s.ended_ms))
        .collect();
    assert_eq!(spans.len(), 3);
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            assert!(
                a.1 <= b.0 || b.1 <= a.0,
                "map children overlapped: {a:?} {b:?}"
            );
        }
    }
}

#[test]
fn a_fuel_budget_stops_a_step_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let path = script(
        tmp.path(),
        &format!(
            "let spin = {:?};\nlet p = pipeline(\"fuel\");\np.step(\"spin\", spin).output(\"out\").fuel(1000000);\n",
            fixture("spin").display().to_string()
        ),
    );
    let r = run(&rt, &compile(&path, &[]));
    let e = r.step("spin").unwrap().error.clone().unwrap();
    assert_eq!(
        e,
        "the step used up its fuel budget of 1000000 and was stopped"
    );
}

#[test]
fn a_capability_request_is_refused_when_the_policy_does_not_trust_the_component() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let path = script(
        tmp.path(),
        r#"let p = pipeline("caps"); p.step("train", echo).output("out").requires("gpu");"#,
    );
    let e = format!("{:#}", try_run(&rt, &compile(&path, &[])).unwrap_err());
    assert!(
        e.starts_with("step 'train' (")
            && e.contains(
                "requests capability 'gpu', which the trust policy does not grant to its component"
            ),
        "{e}"
    );
    assert!(rt.records().runs(5).unwrap().is_empty());
}

#[test]
fn fail_fast_stops_at_the_first_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let path = script(
        tmp.path(),
        r#"
let p = pipeline("ff");
p.step("bad", echo).output("out").params(#{ fail: "boom" });
p.step("slow", sleep).output("out").params(#{ ms: 5000 });
for i in 0..6 { p.step(`later${i}`, noop).output("out").params(#{ x: i }); }
"#,
    );
    let plan = compile(&path, &[]);
    let started = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = started.clone();
    let t = std::time::Instant::now();
    let r = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rt.run(
            &plan,
            RunOptions {
                fail_fast: true,
                on_event: Some(std::sync::Arc::new(move |e: &weir_runtime::RunEvent| {
                    if let weir_runtime::RunEvent::StepStarted { step } = e {
                        sink.lock().unwrap().push(step.clone());
                    }
                })),
                ..Default::default()
            },
        ))
        .unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "fail-fast waited for the slow step"
    );
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(r.step("slow").unwrap().state, StepState::Cancelled);
    // Steps waiting for a worker when `bad` failed never start.
    for i in 0..6 {
        let later = r.step(&format!("later{i}")).unwrap();
        assert_eq!(later.state, StepState::Cancelled, "later{i}: {later:?}");
    }
    let started = started.lock().unwrap().clone();
    assert!(
        started.iter().all(|s| !s.starts_with("later")),
        "started after the failure: {started:?}"
    );
    assert_eq!(
        r.error.as_deref(),
        Some("step 'bad' failed: the step returned an error: asked to fail: boom")
    );
}

#[test]
fn cache_policies_no_cache_refresh_and_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let path = script(
        tmp.path(),
        r#"
let p = pipeline("policies");
p.step("always", echo).output("out").no_cache();
p.step("refreshed", echo).output("out").params(#{ r: 1 }).refresh();
p.step("expiring", echo).output("out").params(#{ e: 1 }).cache("50ms");
p.step("normal", echo).output("out").params(#{ n: 1 });
"#,
    );
    let plan = compile(&path, &[]);
    run(&rt, &plan);
    std::thread::sleep(std::time::Duration::from_millis(120));
    let r = run(&rt, &plan);
    assert_eq!(r.step("always").unwrap().state, StepState::Succeeded);
    assert_eq!(r.step("refreshed").unwrap().state, StepState::Succeeded);
    assert_eq!(r.step("expiring").unwrap().state, StepState::Succeeded);
    assert_eq!(r.step("normal").unwrap().state, StepState::Cached);
    // A refreshed step's result serves a later run of the same step without the policy.
    let plain = script(
        tmp.path(),
        r#"let p = pipeline("policies"); p.step("refreshed", echo).output("out").params(#{ r: 1 });"#,
    );
    let r = run(&rt, &compile(&plain, &[]));
    assert_eq!(r.step("refreshed").unwrap().state, StepState::Cached);
}

#[test]
fn plan_errors_name_the_problem_types_cycles_and_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let e = compile_err(
        tmp.path(),
        r#"
let p = pipeline("types");
let train = p.step("train", echo).output("model", Model);
p.step("report", echo).input("data", train.out("model"), Dataset);
"#,
    );
    assert!(
        e.contains("step 'report' (")
            && e.contains(
                "input 'data' expects a Dataset, but output 'model' of step 'train' is a Model"
            ),
        "{e}"
    );
    let e = compile_err(
        tmp.path(),
        r#"
let p = pipeline("cycle");
let a = p.step("a", echo).output("out");
let b = p.step("b", echo).output("out").input("x", a.out("out"));
let c = p.step("c", echo).output("out").input("x", b.out("out"));
a.input("x", c.out("out"));
"#,
    );
    assert!(
        e.ends_with("the steps form a cycle: a -> b -> c -> a"),
        "{e}"
    );
    std::fs::write(tmp.path().join("helpers.rhai"), "fn threshold() { 0.75 }\n").unwrap();
    let ok = weir_dsl::compile_file(&script(
        tmp.path(),
        "import \"helpers\" as h;\nlet p = pipeline(\"imp\");\np.step(\"a\", echo).output(\"out\").params(#{ t: h::threshold() });\n",
    ))
    .unwrap();
    assert_eq!(ok.steps[0].params["t"], serde_json::json!(0.75));
    let e = compile_err(tmp.path(), "import \"../../etc/passwd\" as x;\n");
    assert!(
        e.contains("a pipeline may import only .rhai files inside its own folder"),
        "{e}"
    );
    let e = compile_err(tmp.path(), "let t = timestamp();\n");
    assert!(e.contains("time functions are disabled"), "{e}");
}

fn count_rows(store: &Path) -> usize {
    let out = weir()
        .args(["runs", "--store"])
        .arg(store)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count() - 1
}

#[test]
fn a_killed_run_resumes_to_the_same_digests_as_an_uninterrupted_one() {
    let body = r#"
let p = pipeline("long");
let prev = ();
for i in 0..6 {
    let s = p.step(`s${i}`, sleep).output("out").params(#{ ms: 250, i: i });
    if i > 0 { s.input("prev", prev.out("out")); }
    prev = s;
}
"#;
    // Reference: uninterrupted.
    let clean = tempfile::tempdir().unwrap();
    let path = script(clean.path(), body);
    let out = weir().arg("run").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = |dir: &Path, run: &str| {
        let out = weir()
            .args(["show", run, "--json", "--store"])
            .arg(dir.join(".weir"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut outs: Vec<(String, String)> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["step"].as_str().unwrap().to_string(),
                    s["outputs"]["out"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        outs.sort();
        (v["state"].as_str().unwrap().to_string(), outs)
    };
    let reference = show(clean.path(), "1");

    // Killed mid-run with SIGKILL, then resumed.
    let tmp = tempfile::tempdir().unwrap();
    let path = script(tmp.path(), body);
    let mut child = weir()
        .arg("run")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once two steps are recorded (so mid-run, whatever the machine's speed).
    let db = tmp.path().join(".weir/weir.db");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        if !db.exists() {
            continue;
        }
        let out = weir()
            .args(["show", "1", "--json", "--store"])
            .arg(tmp.path().join(".weir"))
            .output()
            .unwrap();
        let done = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .map(|v| v["steps"].as_array().map(Vec::len).unwrap_or(0))
            .unwrap_or(0);
        if done >= 2 {
            break;
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let (state, partial) = show(tmp.path(), "1");
    assert_eq!(state, "running", "the killed run is left running");
    assert!(partial.len() < 6, "killed too late: {partial:?}");
    let out = weir()
        .arg("run")
        .arg(&path)
        .args(["--resume", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming run 1"));
    let resumed = show(tmp.path(), "1");
    assert_eq!(resumed, reference);
    assert_eq!(
        count_rows(&tmp.path().join(".weir")),
        1,
        "resume continues run 1"
    );
    let leftovers = std::fs::read_dir(tmp.path().join(".weir/tmp"))
        .unwrap()
        .count();
    assert_eq!(
        leftovers, 0,
        "temporary files of the killed process were cleaned up"
    );
}

#[test]
fn ctrl_c_cancels_the_run_and_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = script(
        tmp.path(),
        r#"let p = pipeline("cc"); let a = p.step("forever", sleep).output("out"); p.step("next", noop).output("out").input("x", a.out("out"));"#,
    );
    let child = weir()
        .arg("run")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = weir()
        .args(["show", "1", "--json", "--store"])
        .arg(tmp.path().join(".weir"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "cancelled");
    let states: BTreeMap<String, String> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().into(),
                s["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(states["forever"], "cancelled");
    assert_eq!(states["next"], "cancelled");
}

#[test]
fn check_plan_graph_and_diff_describe_pipelines_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let body = |v: i64| {
        format!(
            r#"
let p = pipeline("desc");
p.schedule("0 2 * * *");
let a = p.step("a", echo).output("out").params(#{{ v: {v} }});
let b = p.step("b", echo).output("out").input("x", a.out("out")).when(a.metric("m") > 0 | a.metric("m") <= 0);
p.map("each", echo, a.out("out")).output("out");
"#
        )
    };
    let path = script(tmp.path(), &body(1));
    let out = weir().arg("check").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "pipeline 'desc' is valid: 3 steps (1 maps, 1 gated), 0 params, schedule \"0 2 * * *\""
        ),
        "{text}"
    );
    let out = weir().arg("graph").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("flowchart TD\n")
            && text.contains("    a --> b\n")
            && text.contains("each[[\"each (map)\"]]"),
        "{text}"
    );
    let out = weir()
        .args(["graph", "--format", "dot"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"a\" -> \"each\";"));
    let out = weir().arg("plan").arg(&path).output().unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["schedule"], "0 2 * * *");
    assert!(plan["steps"][1]["when"].is_object());

    let store = tmp.path().join(".weir");
    // The gate reads a metric that `a` does not record: b fails with a clear error.
    let out = weir().arg("run").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = weir()
        .args(["show", "1", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cannot evaluate its condition")
            && text.contains("step 'a' recorded no metric 'm'"),
        "{text}"
    );
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("v: 1", "v: 2"),
    )
    .unwrap();
    weir().arg("run").arg(&path).output().unwrap();
    let out = weir()
        .args(["diff", "1", "2", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("a "))
        .unwrap_or_default();
    assert!(
        line.contains("same") && line.contains("CHANGED") && line.contains("out differs"),
        "{text}"
    );
}
