//! Replays the fuzz targets' seeds and saved findings (`fuzz/seeds/<target>`)
//! through the same checks the targets make, so every regression the fuzzer
//! ever found stays fixed without cargo-fuzz installed. `bash fuzz/run.sh`
//! runs the real fuzzers.

use std::path::{Path, PathBuf};

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "{}: too few seeds", dir.display());
    out
}

#[test]
fn dsl_seeds_compile_or_are_refused_and_plans_round_trip() {
    let mut compiled = 0;
    for (path, bytes) in seeds("dsl") {
        let Ok(source) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(plan) = weir_dsl::compile_str(source, "fuzz.rhai", Path::new("/nonexistent")) {
            plan.validate().unwrap();
            let back = weir_runtime::Plan::from_json(&plan.to_json())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(back, plan, "{}", path.display());
            compiled += 1;
        }
    }
    assert!(compiled >= 3, "the seeds include working pipelines");
}

#[test]
fn stored_plan_seeds_load_or_are_refused_and_round_trip() {
    let mut loaded = 0;
    for (path, bytes) in seeds("stored_plan") {
        let Ok(json) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(plan) = weir_runtime::Plan::from_json(json) {
            let again = weir_runtime::Plan::from_json(&plan.to_json())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(again, plan, "{}", path.display());
            loaded += 1;
        }
    }
    assert!(loaded >= 3);
    // Damaged stored plans are errors, not panics.
    assert!(weir_runtime::Plan::from_json("{").is_err());
    assert!(weir_runtime::Plan::from_json(r#"{"name":"x"}"#).is_err());
}

#[test]
fn tree_seeds_decode_canonically() {
    let mut decoded = 0;
    for (path, bytes) in seeds("tree") {
        if let Ok(tree) = weir_runtime::tree::Tree::decode(&bytes) {
            assert_eq!(tree.encode(), bytes, "{}", path.display());
            decoded += 1;
        }
    }
    assert!(decoded >= 3);
    // Non-canonical forms of a valid tree are refused.
    let (_, good) = &seeds("tree")[0];
    let text = String::from_utf8(good.clone()).unwrap();
    for bad in [
        text.replace('\n', "\r\n"),
        text.trim_end().to_string(),
        text.replacen(" 4", " 04", 1),
    ] {
        if bad != text {
            assert!(
                weir_runtime::tree::Tree::decode(bad.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
    }
}
