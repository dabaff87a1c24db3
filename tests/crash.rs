//! Crash safety: SIGKILL at many points, and concurrent runs on one store.
//! `tests/crash-harness.sh N` runs the kill loop at scale.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;

fn chain_script(dir: &Path, ms: u64) -> std::path::PathBuf {
    let path = dir.join("p.rhai");
    std::fs::write(
        &path,
        format!(
            r#"let sleep = {:?};
let p = pipeline("crash");
let prev = ();
for i in 0..8 {{
    let s = p.step(`s${{i}}`, sleep).output("out").params(#{{ ms: {ms}, i: i }});
    if i > 0 {{ s.input("prev", prev.out("out")); }}
    prev = s;
}}
"#,
            fixture("sleep").display().to_string()
        ),
    )
    .unwrap();
    path
}

fn outputs(store: &Path, run: &str) -> Vec<(String, String)> {
    let out = weir()
        .args(["show", run, "--json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut o: Vec<(String, String)> = v["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["step"].as_str().unwrap_or("").to_string(),
                        s["outputs"]["out"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    o.sort();
    o
}

fn verify(store: &Path) -> String {
    let out = weir()
        .args(["store", "verify", "--store"])
        .arg(store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "store damaged:\n{text}");
    text
}

#[test]
fn repeated_kills_never_damage_the_store_and_resume_finishes_identically() {
    let reference = tempfile::tempdir().unwrap();
    let script = chain_script(reference.path(), 120);
    let started = std::time::Instant::now();
    assert!(
        weir()
            .arg("run")
            .arg(&script)
            .output()
            .unwrap()
            .status
            .success()
    );
    // Kill points are fractions of an uninterrupted run (start-up included),
    // so they land mid-run however loaded the machine is.
    let whole = started.elapsed().as_millis() as u64;
    let want = outputs(&reference.path().join(".weir"), "1");
    assert_eq!(want.len(), 8);

    let tmp = tempfile::tempdir().unwrap();
    let script = chain_script(tmp.path(), 120);
    let store = tmp.path().join(".weir");
    let mut kills = 0;
    for (k, percent) in [15u64, 42, 26, 61, 33].into_iter().enumerate() {
        let delay = (whole * percent / 100).max(20);
        let mut cmd = weir();
        cmd.arg("run")
            .arg(&script)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if k > 0 && store.join("weir.db").exists() && !outputs(&store, "1").is_empty() {
            cmd.args(["--resume", "1"]);
        }
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        // SAFETY: kill(2) on our own child's pid.
        if unsafe { libc::kill(child.id() as i32, libc::SIGKILL) } == 0 {
            kills += 1;
        }
        child.wait().unwrap();
        if store.join("weir.db").exists() {
            verify(&store);
        }
    }
    assert!(kills >= 3);
    // Resume run 1 if a killed process got as far as recording it.
    let recorded = store.join("weir.db").exists()
        && weir()
            .args(["show", "1", "--store"])
            .arg(&store)
            .output()
            .unwrap()
            .status
            .success();
    let mut finish = weir();
    finish.arg("run").arg(&script);
    if recorded {
        finish.args(["--resume", "1"]);
    }
    let out = finish.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        outputs(&store, "1"),
        want,
        "resumed run differs from an uninterrupted one"
    );
    let text = verify(&store);
    assert!(text.contains(" 0 corrupt;"), "{text}");
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
}

#[test]
fn concurrent_runs_of_one_pipeline_share_a_store_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let script = chain_script(tmp.path(), 30);
    let spawn = || {
        weir()
            .arg("run")
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let store = tmp.path().join(".weir");
    assert_eq!(outputs(&store, "1"), outputs(&store, "2"));
    verify(&store);
}
