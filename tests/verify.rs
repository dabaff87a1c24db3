//! `weir verify RUN` (issue 28): every step a run executed is executed
//! again from its recorded inputs and each output's digest compared with
//! the recorded one. Every example pipeline reproduces every step; so do a
//! list map's children (params rebuilt from the list), a step that
//! succeeded on its second attempt and a step drawing random bytes (the
//! sandbox's seed is the cache key); a record changed behind weir's back is
//! caught, with the first differing file.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

/// `weir verify RUN --json` on `store`: exit success and the report.
fn verify(store: &Path, run: &str) -> (bool, Value) {
    let out = weir()
        .args(["verify", run, "--json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn outcomes(v: &Value) -> Vec<(String, String)> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_example_pipeline_reproduces_every_step() {
    for (example, units) in [("hello", 3), ("flowers", 6), ("churn", 6)] {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let script = repo().join(format!("examples/{example}/pipeline.rhai"));
        succeeded(run_script(&script, &store));
        let (ok, v) = verify(&store, "1");
        let got = outcomes(&v);
        assert!(ok, "{example}: {v:#}");
        assert_eq!(got.len(), units, "{example}: {got:?}");
        assert!(
            got.iter().all(|(_, o)| o == "reproduced"),
            "{example}: {got:?}"
        );
        eprintln!(
            "{example}: verify {:.0} ms, the run {} ms",
            v["verify_ms"].as_f64().unwrap_or(0.0),
            v["run_ms"]
        );
        if example == "hello" {
            // A fully cached re-run executed nothing: nothing to re-execute,
            // and the report says where to look instead.
            succeeded(run_script(&script, &store));
            let (ok, v) = verify(&store, "2");
            assert!(ok && outcomes(&v).is_empty() && v["cached"] == 3, "{v:#}");
            let out = weir()
                .args(["verify", "2", "--store"])
                .arg(&store)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("3 cache hit(s) not (`weir why 2 STEP`"),
                "{text}"
            );
        }
    }
}

#[test]
fn list_map_children_retried_and_random_steps_reproduce_and_a_changed_record_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("v.rhai");
    std::fs::write(
        &script,
        format!(
            r#"let echo = {echo:?};
let p = pipeline("v");
let list = p.step("list", echo).output("out").params(#{{ bare: true, files: #{{ "items.json": "[1, \"two\", {{\"x\": 3}}]" }} }});
p.map_json("each", echo, list.out("out"), "items.json").output("out").params(#{{ random: true }});
p.step("flaky", {flaky:?}).output("out").retries(1);
"#,
            echo = fixture("echo").display().to_string(),
            flaky = fixture("flaky").display().to_string(),
        ),
    )
    .unwrap();
    let store = tmp.path().join("store");
    succeeded(run_script(&script, &store));
    let (ok, v) = verify(&store, "1");
    let mut got = outcomes(&v);
    got.sort();
    assert!(ok, "{v:#}");
    assert_eq!(
        got,
        ["each[0]", "each[1]", "each[2]", "flaky", "list"]
            .map(|s| (s.to_string(), "reproduced".to_string())),
        "{v:#}"
    );

    // A record changed behind weir's back: each[1]'s output said to be
    // each[0]'s. Verify catches it and names the first differing file.
    let db = store.join("weir.db");
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys\n\
c=sqlite3.connect(sys.argv[1])\n\
a=c.execute(\"SELECT outputs FROM steps WHERE step='each[0]'\").fetchone()[0]\n\
c.execute(\"UPDATE steps SET outputs=? WHERE step='each[1]'\",(a,))\n\
c.commit()\n",
        )
        .arg(&db)
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, v) = verify(&store, "1");
    assert!(!ok, "a changed record fails verification: {v:#}");
    let bad: Vec<&Value> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["outcome"] != "reproduced")
        .collect();
    assert_eq!(bad.len(), 1, "{v:#}");
    assert_eq!(bad[0]["step"], "each[1]");
    assert_eq!(bad[0]["outcome"], "differs");
    assert_eq!(bad[0]["detail"][0]["output"], "out");
    assert_eq!(
        bad[0]["detail"][0]["first_difference"], "params.json",
        "{v:#}"
    );

    // And the text report says so.
    let out = weir()
        .args(["verify", "1", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("DIFFERS  each[1]") && text.contains("first differing file: params.json"),
        "{text}"
    );
    assert!(
        text.contains("4 reproduced, 1 did not, 0 not checked"),
        "{text}"
    );
}
