//! A failed step's kind is recorded beside its message (issue 22): tools
//! tell a timeout from a bug or a memory limit without reading text.

mod common;

use common::*;
use std::collections::BTreeMap;

#[test]
fn each_failure_is_recorded_with_its_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let (echo, sleep, membomb) = (fixture("echo"), fixture("sleep"), fixture("membomb"));
    let f = tmp.path().join("p.rhai");
    std::fs::write(
        &f,
        format!(
            "let p = pipeline(\"kinds\");\n\
             p.step(\"returns\", \"{e}\").output(\"out\").params(#{{ fail: \"no\" }});\n\
             p.step(\"panics\", \"{e}\").output(\"out\").params(#{{ panic: true }});\n\
             p.step(\"sleeps\", \"{s}\").output(\"out\").params(#{{ ms: 20000 }}).timeout(\"300ms\");\n\
             p.step(\"grows\", \"{m}\").params(#{{ chunk_mb: 8 }}).memory(\"64MiB\");\n\
             p.step(\"fine\", \"{e}\").output(\"out\");\n",
            e = echo.display(),
            s = sleep.display(),
            m = membomb.display(),
        ),
    )
    .unwrap();
    let store = tmp.path().join(".weir");
    let out = run_script(&f, &store);
    assert!(!out.status.success());
    let show = weir()
        .args(["show", "1", "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let kinds: BTreeMap<String, serde_json::Value> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["failure"].clone(),
            )
        })
        .collect();
    assert_eq!(kinds["returns"], "returned", "{v}");
    assert_eq!(kinds["panics"], "trapped", "{v}");
    assert_eq!(kinds["sleeps"], "timeout", "{v}");
    assert_eq!(kinds["grows"], "memory", "{v}");
    assert!(kinds["fine"].is_null(), "{v}");
    // The table shows the kind beside the message.
    let table = weir()
        .args(["show", "1", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("error (timeout): "), "{table}");
}

/// The REST API documents exactly the kinds the records know.
#[test]
fn the_api_documents_every_failure_kind() {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap())
            .unwrap();
    let documented: Vec<&str> = doc["components"]["schemas"]["StepRecord"]["properties"]["failure"]
        ["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let known: Vec<&str> = weir_runtime::records::FailureKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(documented, known);
}
