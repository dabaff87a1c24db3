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

/// Disk full while a step writes its output: the store lives on a 24 MiB
/// tmpfs (mounted in a private user and mount namespace with `unshare`), a
/// step writes 64 MiB, well under its output quota. The step fails with the
/// filesystem's error, its partial output is discarded, the store verifies,
/// and once the step asks for less the pipeline finishes with the earlier
/// step cached. Everything happens inside the namespace (the tmpfs dies with
/// it), so one shell script runs the steps and prints markers to check.
#[test]
fn disk_full_while_writing_an_artifact_fails_the_step_and_leaves_the_store_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("p.rhai");
    std::fs::write(
        &script,
        format!(
            r#"let bomb = {:?};
let mb = param("mb", 64);
let p = pipeline("disk_full");
let small = p.step("small", bomb).output("out").params(#{{ mode: "disk", mb: 1 }});
p.step("fill", bomb).output("out").input("prev", small.out("out")).params(#{{ mode: "disk", mb: mb }});
"#,
            fixture("hostile").display().to_string()
        ),
    )
    .unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let sh = r#"set -u
mount -t tmpfs -o size=24m tmpfs "$MNT" || { echo "MOUNT FAILED"; exit 3; }
S="$MNT/.weir"
"$WEIR" run --store "$S" "$SCRIPT"; echo "FIRST rc=$?"
echo "TMP $(ls -A "$S/tmp" | wc -l)"
"$WEIR" store verify --store "$S"; echo "VERIFY rc=$?"
"$WEIR" run --store "$S" "$SCRIPT" --param mb=2; echo "SECOND rc=$?"
"$WEIR" store verify --store "$S"; echo "VERIFY2 rc=$?"
"#;
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", sh])
        .env("MNT", &mnt)
        .env("WEIR", env!("CARGO_BIN_EXE_weir"))
        .env("SCRIPT", &script)
        .output()
        .expect("unshare (util-linux) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("MOUNT FAILED") && out.status.success(),
        "this test needs unprivileged user and mount namespaces (unshare -rm): {text}"
    );
    // The step failed with the filesystem's error; the first step committed.
    assert!(text.contains("FIRST rc=1"), "{text}");
    assert!(
        text.contains("the disk holding the store is full"),
        "the error names the full disk: {text}"
    );
    assert!(text.contains("TMP 0"), "partial output discarded: {text}");
    assert!(text.contains("VERIFY rc=0"), "{text}");
    assert!(text.contains("SECOND rc=0"), "{text}");
    assert!(text.contains("1 executed, 1 cached"), "{text}");
    assert!(text.contains("VERIFY2 rc=0"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}
