//! Distributed execution (issue 24): `weir run --cluster` sends every unit
//! through the queue in PostgreSQL to `weir worker` processes, each with a
//! store of its own, sharing objects through a remote (moto's S3 server or
//! a folder). The flagship gives the digests and the model of a local
//! run; a worker killed mid-step, or stalled with its connection cut, loses
//! its unit to another worker and cannot complete it; tags route units;
//! the queue itself fences stale claims, runs one unit per key, routes by
//! tags and gives up on poison.

mod common;

use common::s3::*;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir_runtime::cluster::*;

/// A `weir worker` process, killed on drop; its stderr goes to a file.
struct WorkerProc {
    child: Child,
    log: PathBuf,
}

impl WorkerProc {
    fn start(mut cmd: Command, dir: &Path, name: &str, extra: &[&str]) -> WorkerProc {
        let log = dir.join(format!("{name}.log"));
        let child = cmd
            .args(["worker", "--name", name, "--store"])
            .arg(dir.join(name))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting weir worker");
        WorkerProc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `text`.
    fn wait_for(&self, text: &str, secs: u64) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "the worker never logged {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        // Continued first if the test stopped it (it may be gone already).
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weir` with the cluster's records and a folder remote.
fn weir_on(db: &str, remote: &Path) -> Command {
    let mut c = weir();
    c.args(["--records", db, "--remote"]).arg(remote);
    c
}

/// The output digests of every step of run `run`, from `weir show --json`.
fn outputs_of(records: Option<&str>, store: &Path, run: &str) -> BTreeMap<String, Value> {
    shown_steps(records, Some(store), run)
        .into_iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["outputs"].clone(),
            )
        })
        .collect()
}

/// A pipeline of one slow step (the sleep fixture) and one after it.
fn slow_pipeline(dir: &Path, ms: u64) -> PathBuf {
    let sleep = fixture("sleep").display().to_string();
    let script = dir.join("slow.rhai");
    std::fs::write(
        &script,
        format!(
            r#"let p = pipeline("slow");
let s = p.step("slow", {sleep:?}).output("out").params(#{{ ms: {ms} }});
p.step("after", {sleep:?}).input("x", s.out("out")).output("out").params(#{{ ms: 1 }});
"#
        ),
    )
    .unwrap();
    script
}

/// The slow pipeline (its first step `ms` long) started with `weir run
/// --cluster` on the database `db`, once worker "a" (reaching the database
/// at `a_db`, started with `a_args`) holds its slow step: the worker, the
/// coordinator's store and the coordinator's process. The remote is the
/// folder `remote` under `dir`.
fn slow_step_held_by_a(
    dir: &Path,
    db: &str,
    a_db: &str,
    ms: u64,
    a_args: &[&str],
) -> (WorkerProc, PathBuf, Child) {
    let remote = dir.join("remote");
    let script = slow_pipeline(dir, ms);
    let a = WorkerProc::start(weir_on(a_db, &remote), dir, "a", a_args);
    let store = dir.join("coordinator");
    let coordinator = weir_on(db, &remote)
        .args(["run", "--cluster", "--store"])
        .arg(&store)
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    a.wait_for("start  slow", 60);
    (a, store, coordinator)
}

/// Waits for the coordinator of the slow pipeline to succeed.
fn slow_run_succeeds(coordinator: Child) {
    let (stdout, stderr) = succeeded(coordinator.wait_with_output().unwrap());
    assert!(
        stdout.contains("succeeded: 2 steps, 2 executed"),
        "{stdout}{stderr}"
    );
}

#[test]
fn the_flagship_on_three_workers_gives_the_digests_and_model_of_a_local_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let s3 = S3::start("weir-cluster");
    let remote = "s3://weir-cluster/store";
    let script = repo().join("examples/churn/pipeline.rhai");
    let script = script.to_str().unwrap();

    // The same pipeline on one machine, with records of its own.
    let local = dir.path().join("local");
    let out = weir()
        .args(["run", script, "-p", "rows=6000", "--store"])
        .arg(&local)
        .output()
        .unwrap();
    let (stdout, _) = succeeded(out);
    assert!(stdout.contains("model churn@1 registered"), "{stdout}");

    let workers: Vec<WorkerProc> = (1..=3)
        .map(|i| {
            let mut c = s3.weir();
            c.args(["--records", &db.url, "--remote", remote]);
            WorkerProc::start(c, dir.path(), &format!("w{i}"), &["--jobs", "1"])
        })
        .collect();
    let coordinator = dir.path().join("coordinator");
    let out = s3
        .weir()
        .args(["--records", &db.url, "--remote", remote])
        .args(["run", "--cluster", script, "-p", "rows=6000", "--store"])
        .arg(&coordinator)
        .output()
        .unwrap();
    let (stdout, stderr) = succeeded(out);
    assert!(
        stdout.contains("succeeded: 7 steps, 6 executed, 0 cached, 1 skipped"),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("model churn@1 registered"), "{stdout}");

    // Same digests, step by step, and the same model.
    assert_eq!(
        outputs_of(Some(&db.url), &coordinator, "1"),
        outputs_of(None, &local, "1")
    );
    let model = |records: Option<&str>, store: &Path| -> Value {
        let mut c = weir();
        if let Some(r) = records {
            c.args(["--records", r]);
        }
        let out = c
            .args(["models", "list", "--json", "--store"])
            .arg(store)
            .output()
            .unwrap();
        let v: Value = serde_json::from_str(&succeeded(out).0).unwrap();
        v[0]["digest"].clone()
    };
    assert_eq!(model(Some(&db.url), &coordinator), model(None, &local));

    // Every executed step ran on a worker, none on the coordinator.
    let ran: usize = workers
        .iter()
        .map(|w| w.log().matches("  ok     ").count())
        .sum();
    assert_eq!(
        ran,
        6,
        "{:?}",
        workers.iter().map(|w| w.log()).collect::<Vec<_>>()
    );
    // The workers fetched what they read from the bucket, and pushed what
    // they made: the bucket holds every output.
    let keys = s3.keys("weir-cluster", "store/");
    for outputs in outputs_of(Some(&db.url), &coordinator, "1").values() {
        for d in outputs.as_object().unwrap().values() {
            let d = d.as_str().unwrap();
            assert!(
                keys.iter().any(|k| k.contains(d)),
                "output {d} is not in the bucket"
            );
        }
    }
}

#[test]
fn a_worker_killed_mid_step_loses_its_unit_to_another_and_the_step_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let remote = dir.path().join("remote");
    let (a, store, coordinator) =
        slow_step_held_by_a(dir.path(), &db.url, &db.url, 3000, &["--lease", "1"]);
    a.signal("-KILL");
    let b = WorkerProc::start(
        weir_on(&db.url, &remote),
        dir.path(),
        "b",
        &["--lease", "1"],
    );
    slow_run_succeeds(coordinator);
    let log = b.log();
    assert!(
        log.contains("start  slow of run 1 (delivery 2"),
        "the second worker took the unit again:\n{log}"
    );
    let steps = shown_steps(Some(&db.url), Some(&store), "1");
    let slow: Vec<&Value> = steps.iter().filter(|s| s["step"] == "slow").collect();
    assert_eq!(slow.len(), 1, "{steps:?}");
    assert_eq!(slow[0]["state"], "succeeded");
    assert_eq!(slow[0]["attempts"], 1, "a lost lease is no failed attempt");
}

#[test]
fn a_worker_told_to_stop_finishes_what_it_runs_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let remote = dir.path().join("remote");
    let (mut a, _, coordinator) = slow_step_held_by_a(dir.path(), &db.url, &db.url, 1500, &[]);
    a.signal("-TERM");
    // It drains: the step it holds ends well, then it claims nothing more.
    let status = a.child.wait().unwrap();
    assert!(status.success(), "{}", a.log());
    let log = a.log();
    assert!(
        log.contains("ok     slow") && log.contains("draining"),
        "{log}"
    );
    assert!(!log.contains("start  after"), "{log}");
    let out = weir_on(&db.url, &remote)
        .args(["workers", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&succeeded(out).0).unwrap();
    assert_eq!(v["workers"][0]["state"], "stopped", "{v}");
    // The next step waits for a worker, and gets one.
    let _b = WorkerProc::start(weir_on(&db.url, &remote), dir.path(), "b", &[]);
    slow_run_succeeds(coordinator);
}

#[test]
fn a_stalled_worker_whose_connection_was_cut_cannot_complete_its_unit() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let remote = dir.path().join("remote");
    // Its connections carry a name, so the test can find and cut them.
    let named = format!("{}?application_name=weir-stalled", db.url);
    let (a, store, coordinator) =
        slow_step_held_by_a(dir.path(), &db.url, &named, 1500, &["--lease", "1"]);
    a.signal("-STOP");
    db.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'weir-stalled'",
    );
    let b = WorkerProc::start(weir_on(&db.url, &remote), dir.path(), "b", &[]);
    slow_run_succeeds(coordinator);
    b.wait_for("ok     slow", 5);
    // Woken, the stalled worker finds its lease gone: its outcome is dropped.
    a.signal("-CONT");
    a.wait_for("outcome dropped", 30);
    let steps = shown_steps(Some(&db.url), Some(&store), "1");
    assert_eq!(
        steps.iter().filter(|s| s["step"] == "slow").count(),
        1,
        "{steps:?}"
    );
}

#[test]
fn a_tagged_step_runs_only_on_a_worker_with_its_tag() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let remote = dir.path().join("remote");
    let sleep = fixture("sleep").display().to_string();
    let script = dir.path().join("tags.rhai");
    // A tag naming a pool bounds concurrency and routes nothing: no worker
    // has the tag "slots", and the step runs.
    let mut text = format!(
        "let p = pipeline(\"tags\");\np.pool(\"slots\", 1);\n\
         p.step(\"pooled\", {sleep:?}).output(\"out\").params(#{{ ms: 1, pooled: true }}).tag(\"slots\");\n"
    );
    for i in 0..4 {
        text += &format!(
            "p.step(\"plain{i}\", {sleep:?}).output(\"out\").params(#{{ ms: 200, i: {i} }});\n\
             p.step(\"gpu{i}\", {sleep:?}).output(\"out\").params(#{{ ms: 200, i: {i}, gpu: true }}).tag(\"gpu\");\n"
        );
    }
    std::fs::write(&script, text).unwrap();
    let plain = WorkerProc::start(weir_on(&db.url, &remote), dir.path(), "plain", &[]);
    let gpu = WorkerProc::start(
        weir_on(&db.url, &remote),
        dir.path(),
        "gpu",
        &["--tags", "gpu"],
    );
    let out = weir_on(&db.url, &remote)
        .args(["run", "--cluster", "--store"])
        .arg(dir.path().join("coordinator"))
        .arg(&script)
        .output()
        .unwrap();
    let (stdout, _) = succeeded(out);
    assert!(
        stdout.contains("succeeded: 9 steps, 9 executed"),
        "{stdout}"
    );
    let (p, g) = (plain.log(), gpu.log());
    assert!(
        !p.contains("start  gpu"),
        "an untagged worker ran a gpu step:\n{p}"
    );
    for i in 0..4 {
        assert!(g.contains(&format!("ok     gpu{i}")), "{g}");
    }
    // `weir workers` shows both, with their tags.
    let out = weir_on(&db.url, &remote)
        .args(["workers", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&succeeded(out).0).unwrap();
    let tags: BTreeMap<String, Value> = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_string(), w["tags"].clone()))
        .collect();
    assert_eq!(tags["gpu"], serde_json::json!(["gpu"]));
    assert_eq!(tags["plain"], serde_json::json!([]));
}

#[test]
fn weir_serve_on_a_cluster_sends_its_runs_to_the_workers_and_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let remote = dir.path().join("remote");
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let sleep = fixture("sleep").display().to_string();
    std::fs::write(
        project.join("slow.rhai"),
        format!(
            "let p = pipeline(\"slow\");\np.step(\"slow\", {sleep:?}).output(\"out\").params(#{{ ms: 1500 }}).tag(\"big\");\n"
        ),
    )
    .unwrap();
    let w = WorkerProc::start(
        weir_on(&db.url, &remote),
        dir.path(),
        "w",
        &["--tags", "big"],
    );
    let remote_arg = remote.display().to_string();
    let server = Served::start_with(
        &project,
        &dir.path().join("serve-store"),
        &["--cluster", "--records", &db.url, "--remote", &remote_arg],
    );
    let (status, v) = server.post("/api/pipelines/slow/runs", serde_json::json!({}));
    assert_eq!(status, 201, "{v}");
    let id = v["run"].as_i64().unwrap();
    w.wait_for("start  slow", 30);
    // While it runs, the server shows the worker running it.
    let (status, v) = server.get("/api/workers");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["cluster"], true);
    let shown = &v["workers"][0];
    assert_eq!(shown["name"], "w");
    assert_eq!(shown["tags"], serde_json::json!(["big"]));
    assert_eq!(shown["running"][0]["step"], "slow", "{v}");
    assert_eq!(shown["running"][0]["run"], id, "{v}");
    let (_, _, metrics) = server.raw(
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    assert!(
        metrics.contains("weir_queue_units{state=\"running\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_workers{state=\"running\"} 1"),
        "{metrics}"
    );
    let run = server.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "succeeded", "{run}");
    w.wait_for("ok     slow", 5);
}

#[test]
fn one_of_two_servers_fires_the_schedule_and_the_other_takes_over_when_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let echo = fixture("echo").display().to_string();
    std::fs::write(
        project.join("ticker.rhai"),
        format!(
            r#"let slot = param("slot", "");
let p = pipeline("ticker");
p.schedule("* * * * * *");
p.step("tick", {echo:?}).output("out").params(#{{ note: slot }});
"#
        ),
    )
    .unwrap();
    let fired = |s: &Served| {
        s.output
            .lock()
            .unwrap()
            .matches("scheduled run started")
            .count()
    };
    let leader = |s: &Served| s.get("/api/schedules").1["leader"].clone();
    let mut a = Served::start_with(&project, &dir.path().join("a"), &["--records", &db.url]);
    let start = Instant::now();
    while fired(&a) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            a.output.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let b = Served::start_with(&project, &dir.path().join("b"), &["--records", &db.url]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(leader(&a), true);
    assert_eq!(leader(&b), false);
    assert_eq!(fired(&b), 0, "{}", b.output.lock().unwrap());
    assert!(fired(&a) >= 4, "{}", a.output.lock().unwrap());

    // The leader dies: the other takes the lead within a few seconds.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let start = Instant::now();
    while fired(&b) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the second server never took over:\n{}",
            b.output.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(leader(&b), true);

    // Every slot ran once between them.
    let out = weir()
        .args(["--records", &db.url, "runs", "--limit", "1000", "--json"])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_str(&succeeded(out).0).unwrap();
    let mut slots = Vec::new();
    for r in runs.as_array().unwrap() {
        let id = r["run"].as_i64().unwrap().to_string();
        let out = weir()
            .args(["--records", &db.url, "metrics", &id, "--json"])
            .output()
            .unwrap();
        let m: Value = serde_json::from_str(&succeeded(out).0).unwrap();
        slots.push(m["params"]["slot"].as_str().unwrap().to_string());
    }
    let distinct: std::collections::BTreeSet<&String> = slots.iter().collect();
    assert_eq!(distinct.len(), slots.len(), "a slot ran twice: {slots:?}");
    assert!(slots.len() >= 6, "{slots:?}");
}

fn unit(key: &str, tags: &[&str]) -> QueuedUnit {
    QueuedUnit {
        key: weir_runtime::Digest::of(key.as_bytes()),
        run: None,
        step: key.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        spec: format!("spec of {key}"),
    }
}

fn worker(name: &str, tags: &[&str]) -> WorkerInfo {
    WorkerInfo {
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        jobs: 1,
    }
}

#[test]
fn the_queue_fences_stale_claims_joins_equal_keys_routes_tags_and_gives_up_on_poison() {
    let db = TestDb::new();
    let q = weir_postgres::PgQueue::connect(&db.url).unwrap();
    let short = Duration::from_millis(300);
    let no_wait = Duration::ZERO;
    let (a, b) = (worker("a", &[]), worker("b", &["gpu"]));

    // Single flight: the same key joins the unit already queued.
    let first = q.enqueue(&unit("k1", &[])).unwrap();
    let again = q.enqueue(&unit("k1", &[])).unwrap();
    assert!(!first.joined);
    assert_eq!(
        again,
        Ticket {
            id: first.id,
            joined: true
        }
    );

    // Tags: a gpu unit is not for a worker without the tag.
    let tagged = q.enqueue(&unit("k2", &["gpu"])).unwrap();
    let got = q.claim(&a, 10, short, no_wait).unwrap();
    assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), [first.id]);
    let got_b = q.claim(&b, 10, Duration::from_secs(30), no_wait).unwrap();
    assert_eq!(got_b.iter().map(|c| c.id).collect::<Vec<_>>(), [tagged.id]);

    // Fencing: a's lease expires, b takes the unit with a new token; a
    // cannot complete it, b can, and the waiter sees b's outcome.
    std::thread::sleep(Duration::from_millis(500));
    let b_all = worker("b", &[]);
    let retaken = q
        .claim(&b_all, 10, Duration::from_secs(30), no_wait)
        .unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].id, first.id);
    assert_eq!(retaken[0].deliveries, 2);
    assert_ne!(retaken[0].token, got[0].token);
    let renewal = q.renew(&a, "running", &[got[0].token], short).unwrap();
    assert_eq!(renewal.lost, [got[0].token]);
    assert!(!q.complete(first.id, got[0].token, "from a").unwrap());
    assert!(q.complete(first.id, retaken[0].token, "from b").unwrap());
    assert!(!q.complete(first.id, retaken[0].token, "twice").unwrap());
    assert_eq!(
        q.wait_finished(first.id, Duration::from_secs(5)).unwrap(),
        Some(Finished::Done("from b".into()))
    );
    // Once finished, the key is free again: a new unit, not a join.
    let later = q.enqueue(&unit("k1", &[])).unwrap();
    assert!(!later.joined);
    assert_ne!(later.id, first.id);

    // A coordinator's cancel: a queued unit ends now; a running one is
    // told to its worker at the next renewal.
    q.cancel(later.id).unwrap();
    assert_eq!(
        q.wait_finished(later.id, Duration::from_secs(5)).unwrap(),
        Some(Finished::Cancelled)
    );
    q.cancel(tagged.id).unwrap();
    let renewal = q
        .renew(&b, "running", &[got_b[0].token], Duration::from_secs(30))
        .unwrap();
    assert_eq!(renewal.cancelled, [got_b[0].token]);

    // Poison: handed out MAX_DELIVERIES times, each lease expired: lost.
    let poison = q.enqueue(&unit("k3", &[])).unwrap();
    for _ in 0..MAX_DELIVERIES {
        let c = q.claim(&a, 1, short, no_wait).unwrap();
        assert_eq!(c.len(), 1);
        std::thread::sleep(Duration::from_millis(400));
    }
    // Not handed out again; the next sweep (claims make one a second at
    // most) finishes it as lost.
    assert!(q.claim(&a, 1, short, no_wait).unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(1100));
    assert!(q.claim(&a, 1, short, no_wait).unwrap().is_empty());
    match q.wait_finished(poison.id, Duration::from_secs(5)).unwrap() {
        Some(Finished::Lost(why)) => assert!(why.contains("handed out 3 times"), "{why}"),
        other => panic!("expected the unit lost, found {other:?}"),
    }

    // A waiting claim wakes on an enqueue (LISTEN/NOTIFY), well before its
    // timeout.
    std::thread::scope(|s| {
        let q = &q;
        let waiter = s.spawn(move || {
            let t = Instant::now();
            let c = q
                .claim(&worker("c", &[]), 1, short, Duration::from_secs(20))
                .unwrap();
            (c.len(), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        q.enqueue(&unit("k4", &[])).unwrap();
        let (n, waited) = waiter.join().unwrap();
        assert_eq!(n, 1);
        assert!(waited < Duration::from_secs(10), "woken after {waited:?}");
    });
    let depth = q.depth().unwrap();
    assert_eq!(depth.leased + depth.queued, 2, "{depth:?}");
}
