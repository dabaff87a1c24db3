//! `weir store gc` (issue 20): removes what no kept run needs, keeps what
//! the policy keeps (the newest runs, registered models), leaves a store
//! that `weir store verify` passes, and waits for a run in progress in
//! another process instead of removing what it uses.

mod common;

use common::*;
use std::path::Path;

/// The stdout of a command that must succeed.
fn stdout_of(out: std::process::Output) -> String {
    succeeded(out).0
}

/// `weir store gc` keeping only the last run of each pipeline, with `extra`.
fn gc_keeping_last_run(store: &Path, extra: &[&str]) -> std::process::Output {
    weir()
        .args([
            "store",
            "gc",
            "--keep-days",
            "0",
            "--keep-last",
            "1",
            "--store",
        ])
        .arg(store)
        .args(extra)
        .output()
        .unwrap()
}

fn run_ids(store: &Path) -> Vec<i64> {
    let out = stdout_of(
        weir()
            .args(["runs", "--json", "--store"])
            .arg(store)
            .output()
            .unwrap(),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_i64().unwrap())
        .collect()
}

fn objects(store: &Path) -> usize {
    common::stored_objects(store).len()
}

#[test]
fn gc_removes_what_no_kept_run_needs_and_verify_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join(".weir");
    let script = tmp.path().join("p.rhai");
    // Run 1 registers a model; runs 2-4 do not.
    std::fs::write(
        &script,
        format!(
            "let n = param(\"n\", 0);\nlet p = pipeline(\"gc\");\n\
             let s = p.step(\"a\", \"{}\").output(\"out\", Model).params(#{{ note: n }});\n\
             if n == 0 {{ s.register(\"m\"); }}\n",
            fixture("echo").display()
        ),
    )
    .unwrap();
    let run = |n: i64| {
        stdout_of(
            weir()
                .arg("run")
                .arg(&script)
                .args(["--param", &format!("n={n}"), "--store"])
                .arg(&store)
                .output()
                .unwrap(),
        )
    };
    for n in 0..4 {
        run(n);
    }
    assert_eq!(run_ids(&store), [4, 3, 2, 1]);
    let before = objects(&store);

    let gc = |extra: &[&str]| stdout_of(gc_keeping_last_run(&store, extra));
    let dry = gc(&["--dry-run"]);
    assert!(dry.starts_with("would remove 2 runs (kept 2"), "{dry}");
    assert!(dry.contains("runs: 3 2"), "{dry}");
    assert_eq!(run_ids(&store), [4, 3, 2, 1], "a dry run removed runs");
    assert_eq!(objects(&store), before, "a dry run removed objects");

    let done = gc(&[]);
    assert!(done.starts_with("removed 2 runs"), "{done}");
    // The newest run and the run that registered the model are kept.
    assert_eq!(run_ids(&store), [4, 1]);
    assert!(objects(&store) < before, "{done}");
    stdout_of(
        weir()
            .args(["store", "verify", "--store"])
            .arg(&store)
            .output()
            .unwrap(),
    );
    let model = stdout_of(
        weir()
            .args(["models", "show", "m", "--json", "--store"])
            .arg(&store)
            .output()
            .unwrap(),
    );
    let model: serde_json::Value = serde_json::from_str(&model).unwrap();
    let digest = model["model"]["digest"].as_str().unwrap().to_string();
    stdout_of(
        weir()
            .args(["cat", &digest, "--store"])
            .arg(&store)
            .output()
            .unwrap(),
    );
    // What was kept is still a cache hit; what went runs again.
    assert!(run(3).contains("0 executed, 1 cached"));
    assert!(run(1).contains("1 executed, 0 cached"));
}

#[test]
fn gc_waits_for_a_run_in_progress_in_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join(".weir");
    let script = tmp.path().join("p.rhai");
    std::fs::write(
        &script,
        format!(
            "let p = pipeline(\"slow\");\np.step(\"s\", \"{}\").output(\"out\").params(#{{ ms: 3000 }});\n",
            fixture("sleep").display()
        ),
    )
    .unwrap();
    let child = weir()
        .arg("run")
        .arg(&script)
        .arg("--store")
        .arg(&store)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the run is recorded as running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = weir()
            .args(["runs", "--json", "--store"])
            .arg(&store)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("\"running\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, said) = succeeded(gc_keeping_last_run(&store, &[]));
    assert!(said.contains("waiting for the runs in progress"), "{said}");
    // The run had finished, whole, before the collection began.
    let run = child.wait_with_output().unwrap();
    stdout_of(run);
    stdout_of(
        weir()
            .args(["store", "verify", "--store"])
            .arg(&store)
            .output()
            .unwrap(),
    );
    let again = stdout_of(
        weir()
            .arg("run")
            .arg(&script)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap(),
    );
    assert!(again.contains("0 executed, 1 cached"), "{again}");
}
