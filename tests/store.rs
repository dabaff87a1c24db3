//! `weir store verify` and `weir inspect`, through the CLI.

mod common;

use common::*;

#[test]
fn store_verify_finds_corrupt_objects_and_damaged_references_and_cleans_leftovers() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("p.rhai");
    std::fs::write(
        &script,
        format!(
            "let p = pipeline(\"v\");\np.step(\"a\", {:?}).output(\"out\").params(#{{ note: \"x\" }});\n",
            fixture("echo").display().to_string()
        ),
    )
    .unwrap();
    assert!(
        weir()
            .arg("run")
            .arg(&script)
            .output()
            .unwrap()
            .status
            .success()
    );
    let store = tmp.path().join(".weir");
    let verify = || {
        weir()
            .args(["store", "verify", "--store"])
            .arg(&store)
            .output()
            .unwrap()
    };

    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(" 0 corrupt; 0 stray files;") && text.contains(": 0 missing or damaged;"),
        "{text}"
    );

    // A leftover of a dead process, and a corrupted object.
    std::fs::create_dir_all(store.join("tmp/out-999999999-7")).unwrap();
    let params = weir_runtime::Digest::of(br#"{"note":"x"}"#);
    let hex = params.to_hex();
    common::tamper_object(&store, &params, b"tampered");

    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(" 1 corrupt;") && text.contains("1 temporary leftovers removed"),
        "{text}"
    );
    assert!(text.contains(&format!("corrupt object {hex}")), "{text}");
    assert!(
        text.contains("run 1 step a output out: artifact")
            && text.contains("is missing or damaged"),
        "{text}"
    );
    assert!(!store.join("tmp/out-999999999-7").exists());

    // A re-run repairs it, and the store verifies clean again.
    assert!(
        weir()
            .arg("run")
            .arg(&script)
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn inspect_shows_the_world_imports_and_what_the_policy_would_grant() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join(".weir");
    let inspect = |wasm: &std::path::Path, extra: &[&str]| {
        let out = weir()
            .arg("inspect")
            .arg(wasm)
            .args(extra)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = inspect(&fixture("noop"), &[]);
    assert!(
        text.contains("world     weir:step/step\n")
            && text.contains("would grant the minimal sandbox"),
        "{text}"
    );
    assert!(
        text.contains("  weir:step/types@0.1.0\n") && text.contains("exports:\n  run\n"),
        "{text}"
    );
    let trainer = fixture("trainer");
    let digest = weir_runtime::Digest::of(&std::fs::read(&trainer).unwrap());
    let text = inspect(&trainer, &[]);
    assert!(
        text.contains("imports the gpu capability")
            && text.contains(&format!(
                "not trusted (weir run --trust {})",
                digest.short()
            )),
        "{text}"
    );
    let text = inspect(&trainer, &["--trust", &digest.to_hex()]);
    assert!(text.contains("would grant the gpu capability"), "{text}");
    let text = inspect(&fixture("wrong_world"), &[]);
    assert!(text.contains("not a weir step"), "{text}");
}

/// Issue 23: a tiny step's objects (its output tree and a few bytes of
/// value) cost a file, an inode and two syncs each. They are rows of the
/// store's pack now: a chain of real steps that each read and write a small
/// file leaves no object file, every artifact is still readable, verifiable
/// and laid out for the next step, and a re-run is all cache hits.
#[test]
fn small_objects_are_packed_and_still_read_verified_and_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join(".weir");
    let relay = fixture("relay").display().to_string();
    let mut script = format!(
        "let p = pipeline(\"tiny\");\nlet prev = p.step(\"s0\", {relay:?}).output(\"out\");\n"
    );
    for i in 1..20 {
        script.push_str(&format!(
            "prev = p.step(\"s{i}\", {relay:?}).input(\"in\", prev.out(\"out\")).output(\"out\").params(#{{ add: {i} }});\n"
        ));
    }
    let path = tmp.path().join("p.rhai");
    std::fs::write(&path, script).unwrap();
    succeeded(run_script(&path, &store));

    // 1 + (1 + ... + 19), computed step by step through 19 views.
    let (show, _) = succeeded(
        weir()
            .args(["show", "1", "--json", "--store"])
            .arg(&store)
            .output()
            .unwrap(),
    );
    let show: serde_json::Value = serde_json::from_str(&show).unwrap();
    let last = show["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "s19")
        .unwrap()["outputs"]["out"]
        .as_str()
        .unwrap()
        .to_string();
    let (cat, _) = succeeded(
        weir()
            .args(["cat", &last[..10], "value.txt", "--store"])
            .arg(&store)
            .output()
            .unwrap(),
    );
    assert_eq!(cat, "191");
    let files: usize = std::fs::read_dir(store.join("objects"))
        .unwrap()
        .map(|s| std::fs::read_dir(s.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(files, 0, "no object file for tiny objects");
    // 20 output trees and 20 values, all distinct.
    assert!(stored_objects(&store).len() >= 40);
    verifies_clean(&store);
    let (again, _) = succeeded(run_script(&path, &store));
    assert!(again.contains("0 executed, 20 cached"), "{again}");
    // The summary shows the result's folder, and the 19 intermediate
    // outputs by digest only (their folders are laid out when needed).
    assert!(
        again.contains("  s19.out = ") && again.contains("/views/"),
        "{again}"
    );
    let s3 = again
        .lines()
        .find(|l| l.trim_start().starts_with("s3.out = "))
        .unwrap();
    assert_eq!(
        s3.split_whitespace().count(),
        3,
        "no folder for an intermediate output: {s3}"
    );
    let views = |store: &std::path::Path| std::fs::read_dir(store.join("views")).unwrap().count();
    assert!(views(&store) >= 20);

    // `weir store gc` drops the views of tiny artifacts: every file of
    // theirs is in the pack, and a view is laid out again when needed.
    let (gc, _) = succeeded(
        weir()
            .args(["store", "gc", "--store"])
            .arg(&store)
            .output()
            .unwrap(),
    );
    assert!(gc.contains("20 views"), "{gc}");
    assert_eq!(views(&store), 0);
    verifies_clean(&store);
    // The last step changed: it runs on s18's output, laid out again.
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("add: 19 }", "add: 100 }");
    std::fs::write(&path, edited).unwrap();
    let (third, _) = succeeded(run_script(&path, &store));
    assert!(third.contains("1 executed, 19 cached"), "{third}");
    let line = third
        .lines()
        .find(|l| l.trim_start().starts_with("s19.out = "))
        .unwrap();
    let view = std::path::Path::new(line.split_whitespace().last().unwrap());
    assert_eq!(
        std::fs::read_to_string(view.join("value.txt")).unwrap(),
        "272"
    );
}

/// `weir store verify` passes on `store`: nothing corrupt, nothing missing.
fn verifies_clean(store: &std::path::Path) {
    let (verify, _) = succeeded(
        weir()
            .args(["store", "verify", "--store"])
            .arg(store)
            .output()
            .unwrap(),
    );
    assert!(
        verify.contains(" 0 corrupt;") && verify.contains(": 0 missing or damaged;"),
        "{verify}"
    );
}
