//! Object storage as the shared store (issue 24): machines with stores of
//! their own share one records database (PostgreSQL) and one S3 bucket
//! (moto's S3 server, from PyPI, started by the test). What one machine
//! computed, another reuses with the same digests, fetching and verifying
//! the artifacts; a corrupt copy in the bucket is never used, and heals;
//! a bucket that cannot be written fails the run with the URL named.

mod common;

use common::s3::*;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

/// `weir run` of the hello example on machine `store`: its stdout.
fn run_hello(s3: &S3, db: &str, remote: &str, store: &Path) -> String {
    let out = s3
        .weir()
        .args(["--records", db, "--remote", remote, "run", "--store"])
        .arg(store)
        .arg(repo().join("examples/hello/pipeline.rhai"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A run's steps: name to (state, outputs).
fn steps(db: &str, run: u32) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
    shown_steps(Some(db), None, &run.to_string())
        .iter()
        .map(|s| {
            let outputs = s["outputs"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (
                s["step"].as_str().unwrap().to_string(),
                (s["state"].as_str().unwrap().to_string(), outputs),
            )
        })
        .collect()
}

#[test]
fn machines_sharing_postgres_and_a_bucket_compute_each_step_once() {
    let s3 = S3::start("weir-shared");
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let remote = "s3://weir-shared/team/weir";

    // Machine A computes and pushes every artifact.
    run_hello(&s3, &db.url, remote, &tmp.path().join("a"));
    let first = steps(&db.url, 1);
    assert!(
        first.values().all(|(state, _)| state == "succeeded"),
        "{first:?}"
    );
    let keys = s3.keys("weir-shared", "team/weir/objects/");
    let digests: Vec<&String> = first.values().flat_map(|(_, o)| o.values()).collect();
    for d in &digests {
        assert!(
            keys.iter().any(|k| k.ends_with(d.as_str())),
            "output {d} is in the bucket: {keys:?}"
        );
    }

    // Machine B, with an empty store, reuses all of it, fetched and verified.
    let b = tmp.path().join("b");
    let text = run_hello(&s3, &db.url, remote, &b);
    assert!(text.contains(" 0 executed"), "{text}");
    let second = steps(&db.url, 2);
    assert!(
        second.values().all(|(state, _)| state == "cached"),
        "{second:?}"
    );
    let outputs = |s: &BTreeMap<String, (String, BTreeMap<String, String>)>| {
        s.iter()
            .map(|(k, (_, o))| (k.clone(), o.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(outputs(&first), outputs(&second), "the same digests");
    for d in &digests {
        assert!(holds_object(&b, d), "machine B fetched {d}");
    }

    // A corrupt copy in the bucket is refused: machine C computes that
    // artifact again (the same digest), and its push heals the copy.
    let victim = digests[0].as_str();
    let key = keys.iter().find(|k| k.ends_with(victim)).unwrap();
    s3.object("weir-shared", key, Some(b"not what was stored"));
    let text = run_hello(&s3, &db.url, remote, &tmp.path().join("c"));
    assert!(!text.contains(" 0 executed"), "a step ran again: {text}");
    let third = steps(&db.url, 3);
    assert_eq!(outputs(&first), outputs(&third), "the same digests again");
    let healed = s3.object("weir-shared", key, None);
    assert_eq!(
        weir_runtime::Digest::of(&healed).to_hex(),
        victim,
        "the bucket's copy healed"
    );
}

#[test]
fn a_bucket_that_cannot_be_written_fails_the_run_naming_it() {
    let s3 = S3::start("weir-present");
    let tmp = tempfile::tempdir().unwrap();
    let out = s3
        .weir()
        .args(["--remote", "s3://no-such-bucket/x", "run", "--store"])
        .arg(tmp.path().join("store"))
        .arg(repo().join("examples/hello/pipeline.rhai"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("s3://no-such-bucket/x"), "{text}");
    assert!(
        !text.contains("weir-test-secret"),
        "no credentials in messages: {text}"
    );

    let out = weir()
        .args(["--remote", "ftp://host/x", "runs"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--remote: expected object storage"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
