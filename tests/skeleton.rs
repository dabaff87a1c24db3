//! End-to-end tests of the walking skeleton: real components built from
//! tests/guests and examples/hello, a real store and SQLite records.

mod common;

use common::*;
use std::path::Path;
use weir_runtime::{RunState, StepState};

fn hello_script(dir: &Path, title: &str) -> std::path::PathBuf {
    let hello = repo().join("examples/hello");
    let script = format!(
        r#"
let p = pipeline("hello");
let load = p.step("load", "{h}/steps/load_csv").input("raw", "{h}/data/flowers.csv").output("table").params(#{{ min_rows: 10 }});
let stats = p.step("stats", "{h}/steps/column_stats").input("table", load.out("table")).output("stats");
p.step("report", "{h}/steps/write_report").input("stats", stats.out("stats")).output("report").params(#{{ title: "{title}" }});
"#,
        h = hello.display()
    );
    let path = dir.join("pipeline.rhai");
    std::fs::write(&path, script).unwrap();
    // The script reads and builds from the hello example, outside its own
    // folder: the project's weir.toml allows it (docs/sandbox.md).
    std::fs::write(
        dir.join("weir.toml"),
        format!(
            "[inputs]\nroots = [{:?}]\n[build]\nroots = [{:?}]\n",
            hello.join("data").display().to_string(),
            hello.join("steps").display().to_string()
        ),
    )
    .unwrap();
    path
}

fn states(report: &weir_runtime::RunReport) -> Vec<(String, StepState)> {
    report
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.state))
        .collect()
}

#[test]
fn hello_runs_then_is_fully_cached_and_a_param_change_reruns_only_its_step() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let plan = weir_dsl::compile_file(&hello_script(tmp.path(), "First")).unwrap();

    let first = run(&rt, &plan);
    assert_eq!(first.state, RunState::Succeeded, "{:?}", first.error);
    assert!(first.steps.iter().all(|s| s.state == StepState::Succeeded));
    let report_dir = first.output_path(rt.store(), "report", "report").unwrap();
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(md.starts_with("# First"), "{md}");
    assert!(md.contains("| species | text | 150 | 0 |"), "{md}");

    // Second run: every step a cache hit, asserted through the records.
    let second = run(&rt, &plan);
    assert_eq!(second.state, RunState::Succeeded);
    let recorded = rt.records().steps(second.run).unwrap();
    assert_eq!(recorded.len(), 3);
    assert!(
        recorded
            .iter()
            .all(|s| s.state == StepState::Cached && s.attempts == 0),
        "{recorded:?}"
    );
    for (a, b) in first.steps.iter().zip(&second.steps) {
        assert_eq!(a.outputs, b.outputs);
        assert_eq!(a.cache_key, b.cache_key);
    }

    // Changing the report's title re-runs the report only.
    let changed = weir_dsl::compile_file(&hello_script(tmp.path(), "Second")).unwrap();
    let third = run(&rt, &changed);
    assert_eq!(
        states(&third),
        [
            ("load".to_string(), StepState::Cached),
            ("stats".to_string(), StepState::Cached),
            ("report".to_string(), StepState::Succeeded)
        ]
    );
    assert_ne!(
        third.step("report").unwrap().outputs,
        first.step("report").unwrap().outputs
    );
}

#[test]
fn changed_component_bytes_rerun_that_step_and_identical_outputs_cut_off_downstream() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let echo = fixture("echo");
    let mut b = step("b", &echo);
    wire(&mut b, "a", "a", "out");
    let p1 = plan(tmp.path(), vec![step("a", &echo), b.clone()]);
    let first = run(&rt, &p1);
    assert_eq!(first.state, RunState::Succeeded, "{:?}", first.error);

    // Same code with one extra custom section: different bytes, same behaviour.
    let mut bytes = std::fs::read(&echo).unwrap();
    bytes.extend_from_slice(&[0, 6, 5, b'w', b'e', b'i', b'r', b'x']);
    let changed = tmp.path().join("echo-changed.wasm");
    std::fs::write(&changed, &bytes).unwrap();
    let p2 = plan(tmp.path(), vec![step("a", &changed), b.clone()]);
    let second = run(&rt, &p2);
    assert_eq!(
        second.step("a").unwrap().state,
        StepState::Succeeded,
        "a's code changed"
    );
    assert_ne!(
        second.step("a").unwrap().cache_key,
        first.step("a").unwrap().cache_key
    );
    assert_eq!(
        second.step("a").unwrap().outputs,
        first.step("a").unwrap().outputs
    );
    assert_eq!(
        second.step("b").unwrap().state,
        StepState::Cached,
        "a's outputs are unchanged"
    );
    assert!(
        second.step("a").unwrap().early_cutoff,
        "reported as early cutoff"
    );
    assert!(!first.step("a").unwrap().early_cutoff);

    // A changed param changes a's outputs, so b re-runs too.
    let mut a = step("a", &echo);
    a.params = serde_json::json!({"note": "changed"});
    let third = run(&rt, &plan(tmp.path(), vec![a, b]));
    assert_eq!(third.step("a").unwrap().state, StepState::Succeeded);
    assert_eq!(third.step("b").unwrap().state, StepState::Succeeded);
}

#[test]
fn the_same_pipeline_gives_identical_digests_in_two_clean_stores() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("x.csv"), "a,b\n1,2\n").unwrap();
    let echo = fixture("echo");
    let mut digests = Vec::new();
    for _ in 0..2 {
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(tmp.path());
        let mut a = step("a", &echo);
        a.params = serde_json::json!({"random": true});
        a.inputs.insert(
            "data".into(),
            weir_runtime::InputSource::Path(data.path().join("x.csv")),
        );
        let mut b = step("b", &echo);
        wire(&mut b, "a", "a", "out");
        let r = run(&rt, &plan(tmp.path(), vec![a, b]));
        assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
        let view = r.output_path(rt.store(), "a", "out").unwrap();
        // The sandbox's clocks and randomness are fixed by the cache key.
        let clock = std::fs::read_to_string(view.join("sub/clock.txt")).unwrap();
        assert!(clock.starts_with("wall=1577836800 "), "{clock}");
        assert_eq!(
            std::fs::read_to_string(view.join("inputs.txt")).unwrap(),
            "data/x.csv: a,b\n1,2\n"
        );
        let random = std::fs::read(view.join("random.bin")).unwrap();
        assert_eq!(random.len(), 32);
        assert_ne!(random, [0u8; 32]);
        digests.push(
            r.steps
                .iter()
                .map(|s| s.outputs.clone())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(digests[0], digests[1]);
}

/// Hardware differs in the NaN an arithmetic instruction returns (x86 keeps
/// the payload, Arm does not); the engine canonicalises NaNs so a step
/// writes the same bits everywhere (`cache::ENGINE_SEMANTICS`).
#[test]
fn a_nan_comes_out_canonical_whatever_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut a = step("a", &fixture("echo"));
    a.params = serde_json::json!({"nan": true});
    let r = run(&rt, &plan(tmp.path(), vec![a]));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    let view = r.output_path(rt.store(), "a", "out").unwrap();
    assert_eq!(
        std::fs::read_to_string(view.join("nan.txt")).unwrap(),
        "7fc00000"
    );
}

#[test]
fn a_corrupted_store_object_is_detected_and_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let p = plan(tmp.path(), vec![step("a", &fixture("echo"))]);
    let first = run(&rt, &p);
    let out = first.step("a").unwrap().outputs["out"];
    let tree = rt.store().read_tree(&out).unwrap();
    let params = tree
        .entries
        .iter()
        .find(|e| e.name == "params.json")
        .unwrap();
    let digest = params.digest;
    drop(rt);
    common::tamper_object(&tmp.path().join(".weir"), &digest, b"{\"tampered\":1}");

    let rt = runtime(tmp.path());
    let second = run(&rt, &p);
    assert_eq!(
        second.step("a").unwrap().state,
        StepState::Succeeded,
        "the corrupt hit must be a miss"
    );
    assert_eq!(
        second.step("a").unwrap().outputs["out"],
        out,
        "recomputed to the same digest"
    );
    assert_eq!(
        common::stored_bytes(&tmp.path().join(".weir"), &digest),
        b"{}"
    );
    assert!(tmp.path().join(".weir/corrupt").read_dir().unwrap().count() >= 1);
    let third = run(&rt, &p);
    assert_eq!(third.step("a").unwrap().state, StepState::Cached);
}

#[test]
fn a_spinning_guest_is_stopped_by_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut s = step("spin", &fixture("spin"));
    s.limits.timeout_ms = 500;
    let t = std::time::Instant::now();
    let r = run(&rt, &plan(tmp.path(), vec![s]));
    let took = t.elapsed();
    assert_eq!(r.state, RunState::Failed);
    let err = r.step("spin").unwrap().error.clone().unwrap();
    assert!(err.contains("exceeded its timeout of 500ms"), "{err}");
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_guest_blocked_in_a_host_call_is_stopped_by_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut s = step("sleep", &fixture("sleep"));
    s.limits.timeout_ms = 500;
    let t = std::time::Instant::now();
    let r = run(&rt, &plan(tmp.path(), vec![s]));
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    let err = r.step("sleep").unwrap().error.clone().unwrap();
    assert!(err.contains("exceeded its timeout"), "{err}");
}

#[test]
fn a_guest_allocating_past_its_memory_limit_is_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut s = step("bomb", &fixture("membomb"));
    s.limits.memory_bytes = 64 << 20;
    let r = run(&rt, &plan(tmp.path(), vec![s]));
    assert_eq!(r.state, RunState::Failed);
    let err = r.step("bomb").unwrap().error.clone().unwrap();
    assert!(
        err.contains("exceeded its memory limit of 67108864 bytes"),
        "{err}"
    );

    // Growing 4 MiB at a time, touching every page: stopped at the limit too.
    let mut s = step("growing", &fixture("membomb"));
    s.params = serde_json::json!({"bytes": 256u64 << 20, "chunk_mb": 4});
    s.limits.memory_bytes = 64 << 20;
    let r = run(&rt, &plan(tmp.path(), vec![s]));
    let err = r.step("growing").unwrap().error.clone().unwrap();
    assert!(
        err.contains("exceeded its memory limit of 67108864 bytes"),
        "{err}"
    );

    // Under the limit it succeeds.
    let mut s = step("small", &fixture("membomb"));
    s.params = serde_json::json!({"bytes": 1 << 20});
    let r = run(&rt, &plan(tmp.path(), vec![s]));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
}

#[test]
fn a_guest_cannot_reach_outside_its_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = Path::new("/tmp/weir-canary.txt");
    std::fs::write(canary, "canary").unwrap();
    let input = tmp.path().join("data.csv");
    std::fs::write(&input, "x\n1\n").unwrap();
    let rt = runtime(tmp.path());
    let mut s = step("escape", &fixture("escape"));
    s.inputs.insert(
        "data".into(),
        weir_runtime::InputSource::Path(input.clone()),
    );
    let r = run(&rt, &plan(tmp.path(), vec![s]));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    let view = r.output_path(rt.store(), "escape", "out").unwrap();
    let report = std::fs::read_to_string(view.join("report.txt")).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines.len() >= 20, "{report}");
    for line in &lines {
        assert!(
            line.contains(": DENIED"),
            "sandbox escape: {line}\n{report}"
        );
        eprintln!("{line}");
    }
    // Nothing outside changed, and the stored input is byte-identical.
    assert_eq!(std::fs::read_to_string(canary).unwrap(), "canary");
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "x\n1\n");
    let in_digest = weir_runtime::Digest::of(b"x\n1\n");
    assert!(rt.store().is_valid(&in_digest).unwrap());
    assert_eq!(
        view.read_dir().unwrap().count(),
        1,
        "only report.txt left in the output"
    );
}

#[test]
fn a_symlink_left_in_an_output_fails_the_step_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("data.csv");
    std::fs::write(&input, "x\n1\n").unwrap();
    let rt = runtime(tmp.path());
    let mut s = step("escape", &fixture("escape"));
    s.inputs
        .insert("data".into(), weir_runtime::InputSource::Path(input));
    s.params = serde_json::json!({"symlink": true});
    let r = run(&rt, &plan(tmp.path(), vec![s]));
    assert_eq!(r.state, RunState::Failed);
    let err = r.step("escape").unwrap().error.clone().unwrap();
    // (the fixture removes the links it tried before leaving this one)
    assert_eq!(
        err,
        "output 'out': output path 'inner-link' is a symlink; outputs may hold only regular files and folders"
    );
    let leftovers: Vec<_> = tmp.path().join(".weir/tmp").read_dir().unwrap().collect();
    assert!(leftovers.is_empty(), "staging not cleaned: {leftovers:?}");
}

#[test]
fn a_failing_step_skips_its_dependants_and_lets_independent_steps_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let echo = fixture("echo");
    let mut bad = step("bad", &echo);
    bad.params = serde_json::json!({"fail": "no good"});
    let mut after = step("after", &echo);
    wire(&mut after, "a", "bad", "out");
    let mut panics = step("panics", &echo);
    panics.params = serde_json::json!({"panic": true});
    let fine = step("fine", &echo);
    let r = run(&rt, &plan(tmp.path(), vec![bad, after, panics, fine]));
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(r.step("bad").unwrap().state, StepState::Failed);
    assert_eq!(
        r.step("bad").unwrap().error.as_deref(),
        Some("the step returned an error: asked to fail: no good")
    );
    assert_eq!(r.step("after").unwrap().state, StepState::Skipped);
    let trap = r.step("panics").unwrap().error.clone().unwrap();
    assert!(trap.starts_with("the step trapped"), "{trap}");
    assert_eq!(r.step("fine").unwrap().state, StepState::Succeeded);
    assert!(
        r.error.as_deref().unwrap().starts_with("step '"),
        "{:?}",
        r.error
    );
    // The panic message is kept with the attempt's logs.
    let logs = rt.records().logs(r.run, "panics").unwrap();
    assert!(
        logs.iter()
            .any(|(_, l)| l.level == "stderr" && l.message.contains("asked to panic")),
        "{logs:?}"
    );
    // Failed steps leave no cache entry: a re-run tries them again.
    let again = run(
        &rt,
        &plan(
            tmp.path(),
            vec![{
                let mut b = step("bad", &echo);
                b.params = serde_json::json!({"fail": "no good"});
                b
            }],
        ),
    );
    assert_eq!(again.step("bad").unwrap().state, StepState::Failed);
}

#[test]
fn components_that_are_not_steps_are_refused_before_anything_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let core = tmp.path().join("core.wasm");
    std::fs::write(&core, [0, b'a', b's', b'm', 1, 0, 0, 0]).unwrap();
    let junk = tmp.path().join("junk.wasm");
    std::fs::write(&junk, "not wasm at all").unwrap();
    let cases = [
        (core, "is a core WebAssembly module, not a component"),
        (junk, "is not a WebAssembly component"),
        (
            fixture("wrong_world"),
            "does not implement the weir step world",
        ),
    ];
    for (wasm, expected) in cases {
        let err = try_run(&rt, &plan(tmp.path(), vec![step("s", &wasm)])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("step 's': "), "{msg}");
        assert!(msg.contains(expected), "{msg}");
    }
    assert!(
        rt.records().runs(10).unwrap().is_empty(),
        "no run may be recorded"
    );
}

#[test]
fn a_step_crate_that_does_not_compile_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("broken");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[lib]\ncrate-type = [\"cdylib\"]\n[dependencies]\nweir-sdk = {{ path = {:?} }}\n[workspace]\n",
            repo().join("sdk-guest")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "fn run( {").unwrap();
    let script = tmp.path().join("p.rhai");
    std::fs::write(
        &script,
        "let p = pipeline(\"p\");\np.step(\"b\", \"broken\");\n",
    )
    .unwrap();
    let out = weir()
        .arg("run")
        .arg(&script)
        .env("CARGO_TARGET_DIR", repo().join("tests/guests/target"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("step 'b' ("), "{err}");
    assert!(err.contains("p.rhai:2:3"), "{err}");
    assert!(err.contains("does not compile"), "{err}");
    assert!(err.contains("src/lib.rs"), "{err}");
}

#[test]
fn bad_scripts_and_missing_inputs_are_clear_errors_and_record_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("p.rhai");
    std::fs::write(
        &script,
        format!(
            "let p = pipeline(\"p\");\np.step(\"a\", {:?}).input(\"data\", \"missing.csv\").output(\"out\");\n",
            fixture("echo").display().to_string()
        ),
    )
    .unwrap();
    let out = weir().arg("run").arg(&script).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("step 'a' (") && err.contains("input 'data' cannot be read"),
        "{err}"
    );
    assert!(err.contains("missing.csv"), "{err}");
    let out = weir()
        .args(["runs", "--store"])
        .arg(tmp.path().join(".weir"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 1, "only the header: {listing}");

    std::fs::write(
        &script,
        "let p = pipeline(\"p\");\np.step(\"a\", \"x\").nonsense();\n",
    )
    .unwrap();
    let out = weir().arg("run").arg(&script).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("p.rhai:2:"), "{err}");
    assert!(err.contains("nonsense"), "{err}");
}

#[test]
fn the_cli_runs_shows_logs_and_cats_a_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let script = hello_script(tmp.path(), "CLI");
    let out = weir().arg("run").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("run 1 succeeded: 3 steps, 3 executed, 0 cached"),
        "{stdout}"
    );
    let store = tmp.path().join(".weir");
    let out = weir()
        .args(["show", "1", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("rows = 150"), "{shown}");
    let out = weir()
        .args(["logs", "1", "load", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("read 151 rows x 5 columns from /in/raw/flowers.csv"),
        "{logs}"
    );
    let out = weir()
        .args(["logs", "1", "lod", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean 'load'?"));

    let out = weir()
        .args(["show", "1", "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "report")
        .unwrap()["outputs"]["report"]
        .as_str()
        .unwrap()
        .to_string();
    let out = weir()
        .args(["cat", &digest, "report.md", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("# CLI"));

    let out = weir().arg("run").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("run 2 succeeded: 3 steps, 0 executed, 3 cached"),
        "{stdout}"
    );
}

#[test]
fn a_chain_and_a_fan_out_of_noop_steps_run_in_order_then_hit_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let noop = fixture("noop");
    // Distinct params: identical no-op steps would share one cache key.
    let numbered = |name: String, i: usize| {
        let mut s = step(&name, &noop);
        s.params = serde_json::json!({ "i": i });
        s
    };
    let mut steps = vec![numbered("s0".into(), 0)];
    for i in 1..20 {
        let mut s = numbered(format!("s{i}"), i);
        wire(&mut s, "prev", &format!("s{}", i - 1), "out");
        steps.push(s);
    }
    for i in 0..20 {
        let mut s = numbered(format!("fan{i}"), 100 + i);
        wire(&mut s, "root", "s0", "out");
        steps.push(s);
    }
    let p = plan(tmp.path(), steps);
    let first = run(&rt, &p);
    assert_eq!(first.state, RunState::Succeeded, "{:?}", first.error);
    assert!(first.steps.iter().all(|s| s.state == StepState::Succeeded));
    let recorded = rt.records().steps(first.run).unwrap();
    assert_eq!(recorded.len(), 40);
    let pos = |n: &str| recorded.iter().position(|s| s.step == n).unwrap();
    for i in 1..20 {
        assert!(
            pos(&format!("s{}", i - 1)) < pos(&format!("s{i}")),
            "chain order"
        );
        assert!(
            pos("s0") < pos(&format!("fan{i}")),
            "fan-out after its root"
        );
    }
    let second = run(&rt, &p);
    assert!(second.steps.iter().all(|s| s.state == StepState::Cached));
}

#[test]
fn a_feature_engineering_step_standardises_a_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("x.csv");
    std::fs::write(&data, "a,b\n1,10\n2,10\n3,10\n").unwrap();
    let rt = runtime(tmp.path());
    let mut s = step("std", &fixture("standardize"));
    s.inputs
        .insert("data".into(), weir_runtime::InputSource::Path(data));
    let r = run(&rt, &plan(tmp.path(), vec![s]));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    let out = r.output_path(rt.store(), "std", "out").unwrap();
    let csv = std::fs::read_to_string(out.join("standardized.csv")).unwrap();
    assert_eq!(
        csv,
        "a,b\n-1.224745,0.000000\n0.000000,0.000000\n1.224745,0.000000\n"
    );
    assert_eq!(r.step("std").unwrap().metrics[0].value, 3.0);
}
