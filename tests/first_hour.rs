//! A new user's first hour (issue 20): errors that point at the cause,
//! commands that say what they did, and output that survives a pipe. Each
//! test failed before its fix.

mod common;

use common::*;
use std::path::Path;

fn script(dir: &Path, body: &str) -> std::path::PathBuf {
    let f = dir.join("p.rhai");
    std::fs::write(&f, format!("let p = pipeline(\"first\");\n{body}\n")).unwrap();
    f
}

/// A panicking step was reported as "the step trapped: wasm trap: wasm
/// `unreachable` instruction executed (at 0: 0x1ebd1 - <unknown>!<wasm
/// function 377>)"; the panic message was only in `weir logs`. The error
/// now carries the message and names the function.
#[test]
fn a_panicking_step_reports_its_panic_message_and_function() {
    let tmp = tempfile::tempdir().unwrap();
    let f = script(
        tmp.path(),
        &format!(
            "p.step(\"boom\", \"{}\").output(\"out\").params(#{{ panic: true }});",
            fixture("echo").display()
        ),
    );
    let store = tmp.path().join(".weir");
    let out = run_script(&f, &store);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("panicked at echo/src/lib.rs") && said.contains("asked to panic"),
        "{said}"
    );
    assert!(!said.contains("<unknown>"), "the function is named: {said}");
    let show = weir()
        .args(["show", "1", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&show.stdout).contains("asked to panic"));
}

/// `weir check` printed only counts (the docs promised names) and accepted
/// `s3://` inputs that then failed at run time.
#[test]
fn check_names_what_it_found_and_refuses_urls() {
    let out = weir()
        .arg("check")
        .arg(repo().join("examples/flowers/pipeline.rhai"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    for want in [
        "steps:  load, split, summarize, report, too_few_rows",
        "maps:   summarize",
        "gated:  report, too_few_rows",
        "params: min_rows = 100",
    ] {
        assert!(said.contains(want), "{want:?} in {said}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let f = script(
        tmp.path(),
        "p.step(\"a\", \"a.wasm\").input(\"data\", \"s3://data/latest.parquet\").output(\"out\");",
    );
    let out = weir().arg("check").arg(&f).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("p.rhai:2:") && said.contains("input 'data' is a s3:// URL"),
        "{said}"
    );
}

/// `weir show 1 | head` panicked with "failed printing to stdout: Broken
/// pipe". Every command stops quietly on a closed pipe.
#[test]
fn no_command_panics_on_a_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let mut body = String::new();
    for i in 0..40 {
        body.push_str(&format!(
            "p.step(\"s{i}\", \"{}\").output(\"out\");\n",
            fixture("noop").display()
        ));
    }
    let f = script(tmp.path(), &body);
    let store = tmp.path().join(".weir");
    let out = run_script(&f, &store);
    assert!(out.status.success());
    for args in [vec!["show", "1"], vec!["runs"], vec!["metrics", "1"]] {
        let mut child = weir()
            .args(&args)
            .arg("--store")
            .arg(&store)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away at once, as `| head -0` would.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!said.contains("panicked"), "weir {args:?}: {said}");
        assert!(out.status.success(), "weir {args:?}: {said}");
    }
}

/// `weir models show NAME` from another folder said the registry was empty
/// without saying which store it had read.
#[test]
fn the_model_commands_name_the_store_they_read() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("elsewhere");
    let f = script(
        tmp.path(),
        &format!(
            "p.step(\"a\", \"{}\").output(\"out\");",
            fixture("noop").display()
        ),
    );
    assert!(run_script(&f, &store).status.success());
    let out = weir()
        .args(["models", "show", "churn", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("there is no model 'churn'") && said.contains(&store.display().to_string()),
        "{said}"
    );
    let out = weir()
        .args(["models", "list", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&store.display().to_string()), "{said}");
}

/// A param that did not fit the step's type was reported at run time
/// without the script position; the failure now names where the step is
/// declared.
#[test]
fn a_run_time_failure_names_where_the_step_is_declared() {
    let tmp = tempfile::tempdir().unwrap();
    let f = script(
        tmp.path(),
        &format!(
            "p.step(\"train\", \"{}\").output(\"out\").params(#{{ mode: 5 }}).requires(\"gpu\");",
            fixture("trainer").display()
        ),
    );
    let out = weir()
        .arg("run")
        .arg(&f)
        .arg("--trust-all")
        .arg("--store")
        .arg(tmp.path().join(".weir"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("params do not fit"), "{said}");
    assert!(
        said.contains("(step 'train' is declared at ") && said.contains("p.rhai:2:"),
        "{said}"
    );
}

/// `weir lineage` stopped at the first step that had output the same bytes
/// as a host file, instead of reaching the file the data came from.
#[test]
fn lineage_reaches_the_host_file_the_data_came_from() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("x.csv"), "a,b\n1,2\n").unwrap();
    let echo = fixture("echo").display().to_string();
    // `make` outputs the very bytes of x.csv; `use` reads x.csv from disk.
    let f = script(
        tmp.path(),
        &format!(
            "p.step(\"make\", \"{echo}\").output(\"out\").params(#{{ bare: true, files: #{{ \"x.csv\": \"a,b\\n1,2\\n\" }} }});\n\
             p.step(\"use\", \"{echo}\").input(\"raw\", \"x.csv\").output(\"out\").params(#{{ note: \"reads the file\" }});"
        ),
    );
    let store = tmp.path().join(".weir");
    let out = run_script(&f, &store);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = weir()
        .args(["show", "1", "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let used = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "use")
        .unwrap()["outputs"]["out"]
        .as_str()
        .unwrap()
        .to_string();
    let made = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "make")
        .unwrap()["outputs"]["out"]
        .as_str()
        .unwrap()
        .to_string();
    let lineage = weir()
        .args(["lineage", &used, "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&lineage.stdout);
    assert!(
        said.contains("raw: ") && said.contains("file x.csv"),
        "{said}"
    );
    assert!(!said.contains("step make"), "{said}");
    // The file's bytes really were a step's output too (the case that
    // misled the walk).
    let raw = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "use")
        .unwrap()["inputs"]["raw"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(raw, made);
}

/// `weir runs --json` called the run number `id` and `weir show --json`
/// nested the run under `run`: one name, `run`, in both.
#[test]
fn json_outputs_call_the_run_number_run() {
    let tmp = tempfile::tempdir().unwrap();
    let f = script(
        tmp.path(),
        &format!(
            "p.step(\"a\", \"{}\").output(\"out\");",
            fixture("noop").display()
        ),
    );
    let store = tmp.path().join(".weir");
    let run = run_script(&f, &store);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json = |args: &[&str]| -> serde_json::Value {
        let out = weir()
            .args(args)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let runs = json(&["runs", "--json"]);
    assert_eq!(runs[0]["run"], 1, "{runs}");
    assert!(runs[0].get("id").is_none(), "{runs}");
    let show = json(&["show", "1", "--json"]);
    assert_eq!(show["run"], 1, "{show}");
    assert_eq!(show["state"], "succeeded", "{show}");
    assert_eq!(show["steps"][0]["step"], "a", "{show}");
}

/// `weir inspect` and `weir build` compiled a component under another
/// engine fingerprint than `weir run`: one component, two compile-cache
/// entries. They now compile on the engine a run uses, into one compile
/// cache per user, so a second, fresh store compiles nothing again (issue 23).
#[test]
fn build_inspect_and_run_share_one_compiled_component() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("compile-cache");
    let noop = fixture("noop");
    let compiled = || std::fs::read_dir(&cache).map_or(0, |d| d.count());
    let weir_cc = || {
        let mut c = weir();
        c.env("WEIR_COMPILE_CACHE", &cache);
        c
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // `weir build` opens no store when the compile cache is its own.
    ok(weir_cc()
        .arg("build")
        .arg(repo().join("tests/guests/noop"))
        .current_dir(tmp.path())
        .output()
        .unwrap());
    assert!(
        !tmp.path().join(".weir").exists(),
        "weir build made a store"
    );
    assert_eq!(compiled(), 1);
    ok(weir_cc()
        .arg("inspect")
        .arg(&noop)
        .current_dir(tmp.path())
        .output()
        .unwrap());
    assert_eq!(compiled(), 1, "weir inspect compiled the component again");
    let f = script(
        tmp.path(),
        &format!("p.step(\"a\", \"{}\").output(\"out\");", noop.display()),
    );
    for store in ["one", "two"] {
        let store = tmp.path().join(store);
        ok(weir_cc()
            .arg("run")
            .arg(&f)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap());
        assert_eq!(compiled(), 1, "weir run compiled the component again");
        assert_eq!(
            std::fs::read_dir(store.join("compiled")).unwrap().count(),
            0
        );
    }
}

/// Serve settings (schedule, time zone, hooks) were part of the hashed
/// plan: changing a webhook URL made the pipeline another pipeline. A
/// plan's digest no longer covers them.
#[test]
fn serve_settings_do_not_change_a_pipelines_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join(".weir");
    let step = format!(
        "p.step(\"a\", \"{}\").output(\"out\");",
        fixture("noop").display()
    );
    let variants = [
        step.clone(),
        format!(
            "{step}\np.schedule(\"0 2 * * *\");\np.on_failure(#{{ webhook: \"http://127.0.0.1:9000/a\" }});"
        ),
        format!(
            "{step}\np.schedule(\"0 3 * * *\", #{{ timezone: \"Europe/Paris\" }});\np.on_failure(#{{ webhook: \"http://127.0.0.1:9000/b\" }});"
        ),
    ];
    for body in &variants {
        let f = script(tmp.path(), body);
        let out = run_script(&f, &store);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = weir()
        .args(["runs", "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digests: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["plan_digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 3);
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
}

/// The runtime's errors speak its API (`TrustPolicy::trust`); `weir run`
/// adds the flag that does the same (issue 29).
#[test]
fn an_untrusted_capability_gets_the_cli_hint_on_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let trainer = fixture("trainer");
    let digest = weir_runtime::Digest::of(&std::fs::read(&trainer).unwrap());
    let f = script(
        tmp.path(),
        &format!(
            "p.step(\"train\", \"{}\").output(\"out\").requires(\"gpu\");",
            trainer.display()
        ),
    );
    let out = run_script(&f, &tmp.path().join(".weir"));
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("TrustPolicy::trust("), "{said}");
    assert!(
        said.contains(&format!("hint: weir run --trust {}", digest.short())),
        "{said}"
    );
}
