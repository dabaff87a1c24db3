//! The records backends side by side: the same runs give the same records
//! on the embedded SQLite file and on PostgreSQL (the local service every
//! machine of this project runs; each test makes a database of its own),
//! and what only a shared database has to get right: several processes
//! migrating at once, runs of two runtimes in one database, and orphaned
//! runs judged only where their process could be seen.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_runtime::records::{History, ModelStage, Records, RunId, RunLog, SqliteRecords};
use weir_runtime::{Config, Digest, Plan, RunState, Runtime, StepState};

/// A plan with a bit of everything records hold: metrics, logs (stdout),
/// a retry, a failure and the skip it causes, an input from upstream and a
/// registered model.
fn varied_plan(base: &std::path::Path) -> Plan {
    let echo = fixture("echo");
    let mut a = step("a", &echo);
    a.params = serde_json::json!({ "metrics": { "f1": 0.91, "loss": 0.2 }, "note": "first" });
    a.register = Some("demo".into());
    a.output_types
        .insert("out".into(), weir_runtime::plan::ArtifactType::Model);
    let mut b = step("b", &echo);
    wire(&mut b, "in", "a", "out");
    let mut flaky = step("flaky", &fixture("flaky"));
    flaky.retry.retries = 1;
    flaky.retry.delay_ms = 1;
    let mut bad = step("bad", &echo);
    bad.params = serde_json::json!({ "fail": "no" });
    let mut after = step("after", &echo);
    wire(&mut after, "in", "bad", "out");
    plan(base, vec![a, b, flaky, bad, after])
}

/// What a run's records say, without the times (which differ run to run).
fn recorded(r: &dyn Records, run: RunId) -> String {
    let summary = r.run(run).unwrap().unwrap();
    let mut out = format!(
        "{} {} {:?}\n",
        summary.pipeline, summary.state, summary.error
    );
    let mut steps = r.steps(run).unwrap();
    steps.sort_by(|x, y| x.step.cmp(&y.step));
    for s in steps {
        out += &format!(
            "{} {} attempts={} key={:?} err={:?} failure={:?} in={:?} out={:?} metrics={:?}\n",
            s.step,
            s.state,
            s.attempts,
            s.cache_key.map(|k| k.to_hex()),
            s.error,
            s.failure,
            s.inputs,
            s.outputs,
            s.metrics
        );
        let logs = r.logs(run, &s.step).unwrap();
        out += &format!("  logs {logs:?}\n");
        let attempts: Vec<_> = r
            .attempts(run, &s.step)
            .unwrap()
            .into_iter()
            .map(|a| (a.attempt, a.error))
            .collect();
        out += &format!("  attempts {attempts:?}\n");
    }
    out
}

/// A model version as the comparison sees it: name, version, digest, stage, metrics.
type ModelRow = (String, u32, Digest, ModelStage, BTreeMap<String, f64>);

fn models(r: &dyn Records) -> Vec<ModelRow> {
    r.models(None)
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.version, m.digest, m.stage, m.metrics))
        .collect()
}

/// Runs the varied plan twice (the second run reuses the cache) on a
/// runtime over `records`, and returns the records' account of both runs.
fn two_runs(dir: &std::path::Path, records: Arc<dyn Records>) -> (String, String) {
    let mut cfg = Config::new(dir.join(".weir"));
    cfg.jobs(2).records(records.clone());
    let rt = Runtime::new(&cfg).unwrap();
    let p = varied_plan(dir);
    let first = run(&rt, &p);
    assert_eq!(first.state, RunState::Failed, "{:?}", first.error);
    let second = run(&rt, &p);
    assert_eq!(
        second.step("a").unwrap().state,
        StepState::Cached,
        "the second run reuses the cache"
    );
    (
        recorded(&*records, first.run),
        recorded(&*records, second.run),
    )
}

#[test]
fn the_same_runs_give_the_same_records_on_sqlite_and_postgres() {
    let db = TestDb::new();
    let (s, p) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sqlite: Arc<dyn Records> =
        Arc::new(SqliteRecords::open(&s.path().join("weir.db")).unwrap());
    let pg: Arc<dyn Records> = Arc::new(weir_postgres::PgRecords::connect(&db.url).unwrap());
    let on_sqlite = two_runs(s.path(), sqlite.clone());
    let on_pg = two_runs(p.path(), pg.clone());
    assert_eq!(on_sqlite.0, on_pg.0, "first run");
    assert_eq!(on_sqlite.1, on_pg.1, "second run");
    assert!(
        on_pg.0.contains("flaky succeeded attempts=2"),
        "{}",
        on_pg.0
    );
    assert!(on_pg.0.contains("after skipped"), "{}", on_pg.0);
    assert!(on_pg.1.contains("a cached"), "{}", on_pg.1);

    // The registry: one version (the cached re-run adds none), promotion
    // archiving the previous holder, errors naming what is missing.
    assert_eq!(models(&*sqlite), models(&*pg));
    assert_eq!(models(&*pg).len(), 1);
    for r in [&sqlite, &pg] {
        assert!(
            r.promote("demo", 1, ModelStage::Production)
                .unwrap()
                .is_empty()
        );
        let e = r.promote("demo", 7, ModelStage::Staging).unwrap_err();
        assert_eq!(
            e.to_string(),
            "model 'demo' has no version 7 (versions 1 to 1)"
        );
        let e = r.promote("nope", 1, ModelStage::Staging).unwrap_err();
        assert!(e.to_string().contains("no model 'nope'"), "{e}");
    }
    assert_eq!(models(&*sqlite), models(&*pg));

    // What the CLI and gc read: the same references, producers, cache
    // entries and early-cutoff answers.
    let refs = |r: &Arc<dyn Records>| {
        let mut v = r.references().unwrap();
        v.sort();
        v
    };
    assert_eq!(refs(&sqlite), refs(&pg));
    let d = *pg.steps(RunId(1)).unwrap()[0]
        .outputs
        .values()
        .next()
        .unwrap();
    let who = |r: &Arc<dyn Records>| r.producer(&d, None).unwrap().map(|(run, s)| (run, s.step));
    assert_eq!(who(&sqlite), who(&pg));
    let keys = |r: &Arc<dyn Records>| {
        let mut v: Vec<_> = r
            .cache_entries()
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        v.sort();
        v
    };
    assert_eq!(keys(&sqlite), keys(&pg));
    for r in [&sqlite, &pg] {
        assert!(r.ran_before("test", RunId(2)).unwrap());
        assert!(!r.ran_before("test", RunId(1)).unwrap());
        assert!(r.previous_outputs("test", RunId(2), "a").unwrap().is_some());
        assert_eq!(
            r.plan_json(RunId(1)).unwrap(),
            r.plan_json(RunId(2)).unwrap()
        );
    }
    assert_eq!(
        sqlite.plan_json(RunId(1)).unwrap(),
        pg.plan_json(RunId(1)).unwrap().map(|j| j.replace(
            &p.path().display().to_string(),
            &s.path().display().to_string()
        ))
    );

    // Deleting a run removes everything recorded about it.
    for r in [&sqlite, &pg] {
        assert_eq!(r.delete_runs(&[RunId(1)]).unwrap(), 1);
        assert!(r.run(RunId(1)).unwrap().is_none());
        assert!(r.steps(RunId(1)).unwrap().is_empty());
        assert!(r.logs(RunId(1), "a").unwrap().is_empty());
        assert_eq!(r.runs(10).unwrap().len(), 1);
    }
}

#[test]
fn processes_connecting_at_once_migrate_the_schema_once() {
    let db = TestDb::new();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || {
                weir_postgres::PgRecords::connect(&url).map(|r| r.schema_version())
            })
        })
        .collect();
    for h in handles {
        let v = h.join().unwrap().unwrap().unwrap();
        assert_eq!(v, weir_postgres::MIGRATIONS.len() as i32);
    }
}

#[test]
fn two_runtimes_sharing_a_database_number_runs_apart_and_share_one_cache_entry() {
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    // Two runtimes, as two machines would be: one records database, one
    // store (a shared folder here; object storage across machines).
    let runtimes: Vec<Runtime> = (0..2)
        .map(|_| {
            let mut cfg = Config::new(tmp.path().join(".weir"));
            cfg.jobs(2).records(Arc::new(
                weir_postgres::PgRecords::connect(&db.url).unwrap(),
            ));
            Runtime::new(&cfg).unwrap()
        })
        .collect();
    let p = plan(tmp.path(), vec![step("x", &fixture("echo"))]);
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = tokio.block_on(async {
        tokio::join!(
            runtimes[0].run(&p, Default::default()),
            runtimes[1].run(&p, Default::default())
        )
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.state, b.state),
        (RunState::Succeeded, RunState::Succeeded),
        "{:?} {:?}",
        (
            &a.error,
            a.steps.iter().map(|s| &s.error).collect::<Vec<_>>()
        ),
        (
            &b.error,
            b.steps.iter().map(|s| &s.error).collect::<Vec<_>>()
        )
    );
    assert_ne!(a.run, b.run, "one numbering for every process");
    assert_eq!(a.steps[0].outputs, b.steps[0].outputs);
    let records = runtimes[0].records();
    assert_eq!(
        records.cache_entries().unwrap().len(),
        1,
        "one entry per key"
    );
    // A third run, on either runtime, is a cache hit.
    let c = run(&runtimes[1], &p);
    assert_eq!(c.steps[0].state, StepState::Cached);
    assert_eq!(records.runs(10).unwrap().len(), 3);
}

#[test]
fn an_orphaned_run_is_interrupted_only_where_its_process_could_be_seen() {
    let db = TestDb::new();
    let r = weir_postgres::PgRecords::connect(&db.url).unwrap();
    let d = Digest::of(b"plan");
    let mine = r.begin_run("p", &d, "{}").unwrap();
    let dead_here = r.begin_run("p", &d, "{}").unwrap();
    let elsewhere = r.begin_run("p", &d, "{}").unwrap();
    let me = weir_runtime::owner::Owner::current();
    // A process of this machine that is gone: a child that has exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let gone = weir_runtime::owner::Owner {
        pid,
        start: 1,
        ..me.clone()
    };
    let other = weir_runtime::owner::Owner {
        boot: "another-machine".into(),
        ..me
    };
    db.exec(&format!(
        "UPDATE runs SET owner = '{gone}' WHERE id = {}; UPDATE runs SET owner = '{other}' WHERE id = {}",
        dead_here.0, elsewhere.0
    ));
    assert_eq!(r.interrupt_orphans().unwrap(), vec![dead_here]);
    let state = |id| r.run(id).unwrap().unwrap().state;
    assert_eq!(state(mine), RunState::Running);
    assert_eq!(state(dead_here), RunState::Interrupted);
    assert_eq!(
        state(elsewhere),
        RunState::Running,
        "cannot be judged from here"
    );
    assert!(
        r.run(dead_here)
            .unwrap()
            .unwrap()
            .error
            .unwrap()
            .contains(&format!("pid {pid}"))
    );
}

#[test]
fn a_bad_records_url_says_what_it_expected_and_hides_the_password() {
    let e = weir_postgres::PgRecords::connect("postgres://weir:s3cret@127.0.0.1:1/nowhere")
        .unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains("postgres://weir@127.0.0.1:1/nowhere"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");

    let out = weir()
        .args(["--records", "mysql://db/x", "runs"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected a PostgreSQL URL (postgres://user@host/db)"),
        "{err}"
    );
}

#[test]
fn weir_run_with_records_on_postgres_gives_the_digests_of_a_local_run() {
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let (local, shared) = (tmp.path().join("local"), tmp.path().join("shared"));
    let script = repo().join("examples/hello/pipeline.rhai");
    let first = weir()
        .args(["run", "--quiet", "--store"])
        .arg(&local)
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for _ in 0..2 {
        let out = weir()
            .env("WEIR_RECORDS", &db.url)
            .args(["run", "--quiet", "--store"])
            .arg(&shared)
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !shared.join("weir.db").exists(),
        "no records in the store's own file"
    );
    let show = |store: &std::path::Path, records: Option<&str>, run: &str| {
        shown_steps(records, Some(store), run)
            .iter()
            .map(|s| {
                (
                    s["step"].to_string(),
                    s["state"].to_string(),
                    s["outputs"].to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let local_steps = show(&local, None, "1");
    let pg_first = show(&shared, Some(&db.url), "1");
    let pg_second = show(&shared, Some(&db.url), "2");
    let outputs = |v: &[(String, String, String)]| {
        let mut o: Vec<_> = v.iter().map(|(s, _, o)| (s.clone(), o.clone())).collect();
        o.sort();
        o
    };
    assert_eq!(outputs(&local_steps), outputs(&pg_first), "same digests");
    assert_eq!(outputs(&pg_first), outputs(&pg_second));
    assert!(
        pg_second.iter().all(|(_, state, _)| state == "\"cached\""),
        "{pg_second:?}"
    );
    let runs = weir()
        .args(["--records", &db.url, "runs"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&runs.stdout);
    assert_eq!(text.matches("hello").count(), 2, "{text}");
}

/// Issue 24: schedule slots in PostgreSQL are claimed once, whoever asks:
/// two servers (two connections, each with its pool) and eight threads
/// each claim the same slots at once, and every slot goes to one claimer.
/// A slot passed over can be claimed later (a backfill); the cursor's
/// first sighting stays; the first note of a run stays.
#[test]
fn schedule_slots_on_postgres_are_claimed_once_by_servers_claiming_at_once() {
    use weir_runtime::records::SlotLog;
    let db = TestDb::new();
    let servers: Vec<Arc<weir_postgres::PgRecords>> = (0..2)
        .map(|_| Arc::new(weir_postgres::PgRecords::connect(&db.url).unwrap()))
        .collect();
    let slots: Vec<String> = (0..40)
        .map(|i| format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60))
        .collect();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let claimed: Vec<Vec<String>> = std::thread::scope(|s| {
        let hands: Vec<_> = (0..8)
            .map(|t| {
                let (server, slots, barrier) = (servers[t % 2].clone(), &slots, barrier.clone());
                s.spawn(move || {
                    barrier.wait();
                    slots
                        .iter()
                        .filter(|slot| server.claim("nightly", slot).unwrap())
                        .cloned()
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hands.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<String> = claimed.concat();
    all.sort();
    assert_eq!(all, slots, "each slot claimed exactly once: {claimed:?}");

    let (a, b) = (&servers[0], &servers[1]);
    a.settle("nightly", &slots[0], Some(7), None).unwrap();
    assert!(
        !b.claim("nightly", &slots[0]).unwrap(),
        "a fired slot stays fired"
    );
    // Passed over, then backfilled once.
    b.skip(
        "nightly",
        "2025-12-31T23:59:00Z",
        "missed while the server was down",
    )
    .unwrap();
    a.skip("nightly", &slots[1], "a claimed slot is not passed over")
        .unwrap();
    assert!(a.claim("nightly", "2025-12-31T23:59:00Z").unwrap());
    assert!(!b.claim("nightly", "2025-12-31T23:59:00Z").unwrap());
    let recent = b.recent(Some("nightly"), 3).unwrap();
    let got: Vec<(&str, &str, Option<i64>)> = recent
        .iter()
        .map(|r| (r.slot.as_str(), r.state.as_str(), r.run))
        .collect();
    assert_eq!(
        got,
        [
            (slots[39].as_str(), "claimed", None),
            (slots[38].as_str(), "claimed", None),
            (slots[37].as_str(), "claimed", None)
        ],
        "newest first"
    );
    assert_eq!(
        b.recent(None, 100)
            .unwrap()
            .iter()
            .find(|r| r.slot == slots[0])
            .map(|r| r.state.clone()),
        Some("fired".to_string())
    );
    assert!(a.recent(Some("other"), 10).unwrap().is_empty());

    // The cursor: the newest slot, and the first sighting, which stays.
    let (newest, since) = a.cursor("nightly", "2026-02-01T00:00:00Z").unwrap();
    assert_eq!(newest.as_deref(), Some(slots[39].as_str()));
    assert_eq!(since, "2026-02-01T00:00:00Z");
    let (_, since) = b.cursor("nightly", "2026-03-01T00:00:00Z").unwrap();
    assert_eq!(since, "2026-02-01T00:00:00Z", "the first sighting stays");
    assert_eq!(b.cursor("weekly", "2026-03-01T00:00:00Z").unwrap().0, None);

    // Pausing is seen by the other server.
    a.set_paused("nightly", true).unwrap();
    assert!(b.is_paused("nightly").unwrap());
    b.set_paused("nightly", false).unwrap();
    assert!(!a.is_paused("nightly").unwrap());

    // What started a run: the first note stays.
    let params = BTreeMap::from([("slot".to_string(), slots[0].clone())]);
    a.note_run(7, "schedule", None, &params).unwrap();
    b.note_run(7, "manual", Some("x"), &BTreeMap::new())
        .unwrap();
    a.note_run(8, "upstream", Some("train run 7"), &BTreeMap::new())
        .unwrap();
    let sources = b.run_sources(&[7, 8, 9]).unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[&7].source, "schedule");
    assert_eq!(sources[&7].trigger, None);
    assert_eq!(sources[&7].params, params);
    assert_eq!(sources[&8].trigger.as_deref(), Some("train run 7"));

    // A watched folder's digest, seen by the other server, replaced in place.
    assert_eq!(a.watched("ingest", "incoming").unwrap(), None);
    a.set_watched("ingest", "incoming", "d1").unwrap();
    assert_eq!(
        b.watched("ingest", "incoming").unwrap().as_deref(),
        Some("d1")
    );
    b.set_watched("ingest", "incoming", "d2").unwrap();
    assert_eq!(
        a.watched("ingest", "incoming").unwrap().as_deref(),
        Some("d2")
    );
    assert_eq!(a.watched("ingest", "other").unwrap(), None);
}

/// Issue 24: two machines (each with its own store) backfilling the same
/// slots at once through one PostgreSQL database run every slot once
/// between them; a third backfill runs none.
#[test]
fn two_backfills_sharing_postgres_run_each_slot_once() {
    use weir_runtime::records::{History, SlotLog};
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let echo = fixture("echo").display().to_string();
    std::fs::write(
        proj.join("every.rhai"),
        format!(
            r#"let slot = param("slot", "");
let p = pipeline("every");
p.schedule("*/4 * * * * *");
p.step("tick", {echo:?}).output("out").params(#{{ note: slot }});
"#
        ),
    )
    .unwrap();
    let (from, to) = ("2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z");
    let backfill = |machine: &str| {
        weir()
            .args([
                "--records",
                &db.url,
                "backfill",
                "every",
                "--from",
                from,
                "--to",
                to,
            ])
            .arg("--project")
            .arg(&proj)
            .arg("--store")
            .arg(tmp.path().join(machine))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let finished = |child: std::process::Child| {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let (a, b) = (backfill("a"), backfill("b"));
    let (a, b) = (finished(a), finished(b));
    assert_eq!(
        a.matches(" run ").count() + b.matches(" run ").count(),
        16,
        "{a}{b}"
    );
    let pg = weir_postgres::PgRecords::connect(&db.url).unwrap();
    let slots = pg.recent(Some("every"), 100).unwrap();
    assert_eq!(
        slots.len(),
        16,
        "every 4 s from 00:00:00 to 00:01:00: {slots:?}"
    );
    let mut runs: Vec<i64> = slots
        .iter()
        .map(|s| {
            assert_eq!(s.state, "fired", "{s:?}");
            s.run.unwrap()
        })
        .collect();
    runs.sort();
    runs.dedup();
    assert_eq!(runs.len(), 16, "one run per slot");
    let recorded = pg.runs(100).unwrap();
    assert_eq!(recorded.len(), 16, "no slot ran twice: {recorded:?}");
    let sources = pg.run_sources(&runs).unwrap();
    assert!(
        sources.values().all(|s| s.source == "backfill"),
        "{sources:?}"
    );
    let mut noted: Vec<&String> = sources.values().map(|s| &s.params["slot"]).collect();
    noted.sort();
    noted.dedup();
    assert_eq!(noted.len(), 16);

    let third = finished(backfill("a"));
    assert_eq!(third.matches("already ran").count(), 16, "{third}");
    assert_eq!(
        pg.runs(100).unwrap().len(),
        16,
        "a third backfill runs none"
    );
}
