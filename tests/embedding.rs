//! Embedding through the public API only: runtimes side by side, the event
//! stream, and cancellation by token.

mod common;

use std::future::Future as _;

use common::*;
use std::sync::{Arc, Mutex};
use weir_runtime::{RunEvent, RunOptions, RunState, StepState};

#[test]
fn two_runtimes_with_different_stores_coexist_in_one_process() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ra, rb) = (runtime(a.path()), runtime(b.path()));
    let echo = fixture("echo");
    let pa = plan(a.path(), vec![step("x", &echo)]);
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let (x, y) = tokio.block_on(async {
        tokio::join!(
            ra.run(&pa, RunOptions::default()),
            rb.run(&pa, RunOptions::default())
        )
    });
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(
        (x.state, y.state),
        (RunState::Succeeded, RunState::Succeeded)
    );
    assert_eq!(x.run, y.run, "each store numbers its own runs");
    assert_eq!(
        x.steps[0].outputs, y.steps[0].outputs,
        "same key, same outputs"
    );
    assert_eq!(ra.records().runs(10).unwrap().len(), 1);
    assert_eq!(rb.records().runs(10).unwrap().len(), 1);
    assert!(a.path().join(".weir/weir.db").exists() && b.path().join(".weir/weir.db").exists());
}

#[test]
fn the_event_stream_is_ordered_and_complete_for_a_run_with_a_retry_and_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut flaky = step("flaky", &fixture("flaky"));
    flaky.retry.retries = 1;
    flaky.retry.delay_ms = 1;
    let mut bad = step("bad", &fixture("echo"));
    bad.params = serde_json::json!({ "fail": "nope" });
    let mut after = step("after", &fixture("echo"));
    wire(&mut after, "a", "bad", "out");
    let mut good = step("good", &fixture("echo"));
    good.params = serde_json::json!({ "metrics": { "m": 1.5 } });
    let p = plan(tmp.path(), vec![flaky, bad, after, good]);

    let events: Arc<Mutex<Vec<RunEvent>>> = Arc::default();
    let sink = events.clone();
    let opts = RunOptions {
        on_event: Some(Arc::new(move |e: &RunEvent| {
            sink.lock().unwrap().push(e.clone())
        })),
        ..Default::default()
    };
    let report = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rt.run(&p, opts))
        .unwrap();
    assert_eq!(report.state, RunState::Failed);
    let events = events.lock().unwrap();
    let pos = |f: &dyn Fn(&RunEvent) -> bool| {
        events
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("missing event in {events:#?}"))
    };
    let started = |n: &'static str| move |e: &RunEvent| matches!(e, RunEvent::StepStarted { step } if step == n);
    let finished = |n: &'static str, st: StepState| move |e: &RunEvent| matches!(e, RunEvent::StepFinished { step, state, .. } if step == n && *state == st);

    assert!(matches!(events[0], RunEvent::Preparing { .. }));
    let run_started = pos(&|e| matches!(e, RunEvent::RunStarted { steps: 4, .. }));
    for n in ["flaky", "bad", "good"] {
        assert!(run_started < pos(&started(n)));
    }
    let retry =
        pos(&|e| matches!(e, RunEvent::StepRetrying { step, attempt: 1, .. } if step == "flaky"));
    assert!(
        pos(&started("flaky")) < retry && retry < pos(&finished("flaky", StepState::Succeeded))
    );
    assert!(
        pos(
            &|e| matches!(e, RunEvent::Artifact { step, output, .. } if step == "flaky" && output == "out")
        ) < pos(&finished("flaky", StepState::Succeeded))
    );
    assert!(pos(&started("bad")) < pos(&finished("bad", StepState::Failed)));
    assert!(pos(&finished("bad", StepState::Failed)) < pos(&finished("after", StepState::Skipped)));
    let metric = pos(
        &|e| matches!(e, RunEvent::StepMetric { step, metric, .. } if step == "good" && metric.name == "m" && metric.value == 1.5),
    );
    let log = pos(
        &|e| matches!(e, RunEvent::StepLog { step, line, .. } if step == "good" && line.message == "echo done"),
    );
    let stdout = pos(
        &|e| matches!(e, RunEvent::StepLog { step, line, .. } if step == "good" && line.level == "stdout"),
    );
    assert!(log < pos(&finished("good", StepState::Succeeded)));
    assert!(
        metric < pos(&finished("good", StepState::Succeeded))
            && stdout < pos(&finished("good", StepState::Succeeded))
    );
    // Every step ends exactly once, and nothing follows the last step's end but nothing at all.
    for n in ["flaky", "bad", "after", "good"] {
        let ends = events
            .iter()
            .filter(|e| matches!(e, RunEvent::StepFinished { step, .. } if step == n))
            .count();
        assert_eq!(ends, 1, "{n} finished {ends} times");
    }
}

/// A step that sleeps `ms` milliseconds in a host call.
fn sleeping(name: &str, ms: u64) -> weir_runtime::StepPlan {
    let mut s = step(name, &fixture("sleep"));
    s.params = serde_json::json!({ "ms": ms });
    s
}

/// Attempt staging folders left in the store's `tmp/`.
fn staging_folders(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join(".weir/tmp")).unwrap().count()
}

#[test]
fn a_run_is_cancelled_through_its_token() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let slow = sleeping("slow", 60000);
    let mut next = step("next", &fixture("noop"));
    wire(&mut next, "x", "slow", "out");
    let p = plan(tmp.path(), vec![slow, next]);
    let cancel = tokio_util::sync::CancellationToken::new();
    let opts = RunOptions {
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let report = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            c.cancel();
        });
        rt.run(&p, opts).await
    });
    let report = report.unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(report.state, RunState::Cancelled);
    assert_eq!(report.step("slow").unwrap().state, StepState::Cancelled);
    assert_eq!(report.step("next").unwrap().state, StepState::Cancelled);
    assert_eq!(
        rt.records().run(report.run).unwrap().unwrap().state,
        RunState::Cancelled
    );
    let leftovers = staging_folders(tmp.path());
    assert_eq!(
        leftovers, 0,
        "the cancelled attempt's staging folder was removed"
    );
}

#[test]
fn a_run_works_from_a_current_thread_runtime() {
    // Independent steps go to worker threads of the caller's blocking pool;
    // a current-thread runtime has one too.
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let echo = fixture("echo");
    let steps = (0..4)
        .map(|i| {
            let mut s = step(&format!("s{i}"), &echo);
            s.params = serde_json::json!({ "i": i });
            s
        })
        .collect();
    let p = plan(tmp.path(), steps);
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = local.block_on(rt.run(&p, RunOptions::default())).unwrap();
    assert_eq!(report.state, RunState::Succeeded);
    assert!(report.steps.iter().all(|s| s.state == StepState::Succeeded));
    let again = local.block_on(rt.run(&p, RunOptions::default())).unwrap();
    assert!(again.steps.iter().all(|s| s.state == StepState::Cached));
}

/// Awaited outside any tokio runtime (here: polled by hand), a run says
/// what it needs instead of panicking (issue 29).
#[test]
fn a_run_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let p = plan(tmp.path(), vec![step("a", &fixture("echo"))]);
    let mut fut = std::pin::pin!(rt.run(&p, RunOptions::default()));
    let waker = std::task::Waker::noop();
    let polled = fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker));
    let std::task::Poll::Ready(Err(e)) = polled else {
        panic!("expected an error at once");
    };
    assert!(format!("{e}").contains("inside a tokio runtime"), "{e}");
    assert!(
        rt.records().runs(10).unwrap().is_empty(),
        "nothing is recorded"
    );
}

/// Issue 29: records can be read without blocking an async worker; the
/// same answers as the blocking calls, and an error outside tokio.
#[test]
fn records_read_off_the_async_workers_give_the_blocking_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let p = plan(tmp.path(), vec![step("a", &fixture("echo"))]);
    let report = run(&rt, &p);
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = report.run;
    let (runs, steps) = local
        .block_on(async {
            let runs = rt.read_records(|r| r.runs(10)).await?;
            let steps = rt.read_records(move |r| r.steps(id)).await?;
            anyhow::Ok((runs, steps))
        })
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, id);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].outputs, report.steps[0].outputs);
    let mut fut = std::pin::pin!(rt.read_records(|r| r.runs(1)));
    let polled = fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    let std::task::Poll::Ready(Err(e)) = polled else {
        panic!("expected an error at once");
    };
    assert!(format!("{e}").contains("inside a tokio runtime"), "{e}");
}

#[test]
fn dropping_the_run_future_cancels_the_run() {
    // Two independent slow steps: they run on worker threads, not on the
    // scheduler's own, and the caller gives up once both have started.
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let (a, b) = (sleeping("a", 60000), sleeping("b", 60001));
    let p = plan(tmp.path(), vec![a, b]);
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let sink = started.clone();
    let opts = RunOptions {
        on_event: Some(Arc::new(move |e: &RunEvent| {
            if let RunEvent::StepStarted { .. } = e {
                sink.add_permits(1);
            }
        })),
        ..Default::default()
    };
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let finished = tokio.block_on(async {
        tokio::select! {
            r = rt.run(&p, opts) => Some(r),
            _ = async {
                let _ = started.acquire_many(2).await;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            } => None,
        }
    });
    assert!(
        finished.is_none(),
        "the run cannot finish: its steps sleep a minute"
    );
    let t = std::time::Instant::now();
    // The run goes on being recorded in the background, as cancelled.
    let recorded = loop {
        let runs = rt.records().runs(1).unwrap();
        if let Some(r) = runs.first().filter(|r| r.state != RunState::Running) {
            break r.clone();
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "the run was not stopped: {runs:?} {:?}",
            runs.first().map(|r| rt.records().steps(r.id))
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(recorded.state, RunState::Cancelled);
    let steps = rt.records().steps(recorded.id).unwrap();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(
        steps.iter().all(|s| s.state == StepState::Cancelled),
        "{steps:?}"
    );
    let leftovers = staging_folders(tmp.path());
    assert_eq!(leftovers, 0, "the attempts' staging folders were removed");
}

#[test]
fn per_run_limit_caps_bound_every_step_and_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut spin = step("spin", &fixture("spin"));
    spin.limits.timeout_ms = 600_000;
    // Shared with the run (`run_shared`): capping copies it, the caller's
    // plan stays as it was.
    let p = Arc::new(plan(tmp.path(), vec![spin]));
    let cap = weir_runtime::Limits {
        timeout_ms: 300,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let report = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rt.run_shared(
            p.clone(),
            RunOptions {
                max_limits: Some(cap),
                ..Default::default()
            },
        ))
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let e = report.step("spin").unwrap().error.clone().unwrap();
    assert!(e.contains("exceeded its timeout of 300ms"), "{e}");
    // The recorded plan is the capped one.
    let json = rt.records().plan_json(report.run).unwrap().unwrap();
    assert!(json.contains("\"timeout_ms\":300"), "{json}");
    assert_eq!(p.steps[0].limits.timeout_ms, 600_000);
    assert_eq!(Arc::strong_count(&p), 1, "the run let go of the plan");
    // An unusable cap is refused before anything runs.
    let bad = weir_runtime::Limits {
        memory_bytes: 0,
        ..Default::default()
    };
    let err = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rt.run(
            &p,
            RunOptions {
                max_limits: Some(bad),
                ..Default::default()
            },
        ))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("max_limits (Config or RunOptions): memory limit"),
        "{err}"
    );
}

#[test]
fn runtime_wide_limit_caps_apply_to_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = weir_runtime::Config::new(tmp.path().join(".weir"));
    cfg.jobs(2);
    cfg.max_limits(weir_runtime::Limits {
        timeout_ms: 250,
        ..Default::default()
    });
    let rt = weir_runtime::Runtime::new(&cfg).unwrap();
    let p = plan(tmp.path(), vec![step("spin", &fixture("spin"))]);
    let r = run(&rt, &p);
    let e = r.step("spin").unwrap().error.clone().unwrap();
    assert!(e.contains("exceeded its timeout of 250ms"), "{e}");
}

/// A records backend of the host's own: here it delegates to SQLite and
/// counts what it is asked to do, as a PostgreSQL backend would sit in.
struct Counting {
    inner: weir_runtime::records::SqliteRecords,
    commits: std::sync::atomic::AtomicUsize,
}

// A backend implements the four audiences of `Records`; it has `Records`
// with them.
use weir_runtime::records::{
    AttemptRecord, CacheEntry, CacheIndex, History, LogLine, ModelRegistry, ModelStage,
    ModelVersion, RecordOp, RunLog, RunSummary, StepSummary,
};
use weir_runtime::{Digest, RunId};

impl RunLog for Counting {
    fn begin_run(&self, p: &str, d: &Digest, j: &str) -> anyhow::Result<RunId> {
        self.inner.begin_run(p, d, j)
    }
    fn commit(&self, ops: &[RecordOp]) -> anyhow::Result<()> {
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.commit(ops)
    }
    fn reopen_run(&self, id: RunId) -> anyhow::Result<()> {
        self.inner.reopen_run(id)
    }
}

impl CacheIndex for Counting {
    fn cache_lookup(&self, k: &Digest) -> anyhow::Result<Option<CacheEntry>> {
        self.inner.cache_lookup(k)
    }
    fn cache_forget(&self, k: &Digest) -> anyhow::Result<()> {
        self.inner.cache_forget(k)
    }
    fn previous_outputs(
        &self,
        p: &str,
        before: RunId,
        step: &str,
    ) -> anyhow::Result<Option<std::collections::BTreeMap<String, Digest>>> {
        self.inner.previous_outputs(p, before, step)
    }
}

impl History for Counting {
    fn plan_json(&self, id: RunId) -> anyhow::Result<Option<String>> {
        self.inner.plan_json(id)
    }
    fn references(&self) -> anyhow::Result<Vec<(String, Digest)>> {
        self.inner.references()
    }
    fn runs(&self, limit: usize) -> anyhow::Result<Vec<RunSummary>> {
        self.inner.runs(limit)
    }
    fn run(&self, id: RunId) -> anyhow::Result<Option<RunSummary>> {
        self.inner.run(id)
    }
    fn steps(&self, id: RunId) -> anyhow::Result<Vec<StepSummary>> {
        self.inner.steps(id)
    }
    fn logs(&self, id: RunId, s: &str) -> anyhow::Result<Vec<(u32, LogLine)>> {
        self.inner.logs(id, s)
    }
    fn attempts(&self, id: RunId, s: &str) -> anyhow::Result<Vec<AttemptRecord>> {
        self.inner.attempts(id, s)
    }
    fn producer(
        &self,
        d: &Digest,
        s: Option<&str>,
    ) -> anyhow::Result<Option<(RunId, StepSummary)>> {
        self.inner.producer(d, s)
    }
}

impl ModelRegistry for Counting {
    fn models(&self, name: Option<&str>) -> anyhow::Result<Vec<ModelVersion>> {
        self.inner.models(name)
    }
    fn promote(&self, n: &str, v: u32, s: ModelStage) -> anyhow::Result<Vec<u32>> {
        self.inner.promote(n, v, s)
    }
}

#[test]
fn a_host_supplied_records_backend_receives_every_write() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Arc::new(Counting {
        inner: weir_runtime::records::SqliteRecords::open(&tmp.path().join("elsewhere.db"))
            .unwrap(),
        commits: Default::default(),
    });
    let rt = weir_runtime::Runtime::new(
        weir_runtime::Config::new(tmp.path().join(".weir"))
            .jobs(2)
            .records(backend.clone()),
    )
    .unwrap();
    let p = plan(
        tmp.path(),
        vec![step("a", &fixture("noop")), step("b", &fixture("noop"))],
    );
    let r = run(&rt, &p);
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    assert!(backend.commits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(
        !tmp.path().join(".weir/weir.db").exists(),
        "the default file is not used"
    );
    assert_eq!(rt.records().steps(r.run).unwrap().len(), 2);
}

#[test]
fn two_hosts_sharing_records_and_a_remote_reuse_each_others_results() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = Arc::new(
        weir_runtime::records::SqliteRecords::open(&tmp.path().join("shared.db")).unwrap(),
    );
    let remote =
        Arc::new(weir_runtime::remote::FolderRemote::new(tmp.path().join("bucket")).unwrap());
    let host = |name: &str| {
        weir_runtime::Runtime::new(
            weir_runtime::Config::new(tmp.path().join(name))
                .jobs(2)
                .records(shared.clone())
                .remote(remote.clone()),
        )
        .unwrap()
    };
    let mut a = step("a", &fixture("echo"));
    a.params = serde_json::json!({ "bare": true, "files": { "x.txt": "from host A" } });
    let mut b = step("b", &fixture("echo"));
    wire(&mut b, "in", "a", "out");
    let p = plan(tmp.path(), vec![a, b]);

    let first = host("store-a");
    let r = run(&first, &p);
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    assert_eq!(r.step("a").unwrap().state, StepState::Succeeded);

    // Another host, its own empty local store: every step is a cache hit,
    // and the artifacts come down from the remote, verified.
    let second = host("store-b");
    let r2 = run(&second, &p);
    assert_eq!(r2.step("a").unwrap().state, StepState::Cached);
    assert_eq!(r2.step("b").unwrap().state, StepState::Cached);
    let out = r2.output_path(second.store(), "a", "out").unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("x.txt")).unwrap(),
        "from host A"
    );

    // A corrupt copy in the remote is never used: the step runs again.
    let bucket = tmp.path().join("bucket/objects");
    for dir in std::fs::read_dir(&bucket).unwrap().flatten() {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let mut perms = f.metadata().unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(f.path(), perms).unwrap();
            std::fs::write(f.path(), b"garbage").unwrap();
        }
    }
    let third = host("store-c");
    let r3 = run(&third, &p);
    assert_eq!(r3.state, RunState::Succeeded, "{:?}", r3.error);
    assert_eq!(r3.step("a").unwrap().state, StepState::Succeeded);
    let out = r3.output_path(third.store(), "a", "out").unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("x.txt")).unwrap(),
        "from host A"
    );
}

/// Issues 21 and 29: 32 concurrent runs on one `Runtime` with `jobs = 2`
/// lost runs to "maximum concurrent limit of 8 for component instances
/// reached" (`jobs` bounded steps per run but sized the instance pool of the
/// whole runtime). Steps now wait for one of the runtime's slots, and no run
/// fails for lack of one.
#[test]
fn many_concurrent_runs_on_one_runtime_all_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path()); // jobs = 2
    let plans: Vec<weir_runtime::Plan> = (0..32)
        .map(|r| {
            let steps = (0..4)
                .map(|i| {
                    let mut s = sleeping(&format!("s{i}"), 20);
                    // A different key per run: nothing comes from the cache.
                    s.params["run"] = serde_json::json!(r);
                    s
                })
                .collect();
            plan(tmp.path(), steps)
        })
        .collect();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    // All 32 at once, through run handles.
    let reports = tokio.block_on(async {
        let mut handles = Vec::new();
        for p in plans {
            let h = rt
                .start(std::sync::Arc::new(p), RunOptions::default())
                .await;
            handles.push(h.expect("the run started"));
        }
        let mut reports = Vec::new();
        for h in handles {
            reports.push(h.finish().await);
        }
        reports
    });
    assert_eq!(reports.len(), 32);
    for r in reports {
        let r = r.expect("the run ended");
        assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
        assert!(r.steps.iter().all(|s| s.state == StepState::Succeeded));
    }
}

/// 300 runs triggered at once took `weir serve` to 2.1 GB: every run that
/// found a component not yet loaded compiled it again, all at once. Loads
/// of one component now wait for the first, and all share what it loaded.
#[test]
fn concurrent_loads_of_one_component_compile_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let wasm = fixture("echo");
    let loaded: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| rt.executor().load(&wasm, &|_, _| false).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for c in &loaded[1..] {
        assert!(
            Arc::ptr_eq(c, &loaded[0]),
            "every concurrent load got the one loaded component"
        );
    }
}

/// Issue 21, the timeline's resource figures: each attempt records the most
/// memory it held and, when counted, the fuel it used.
#[test]
fn each_attempt_records_its_peak_memory_and_fuel() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut counted = step("counted", &fixture("echo"));
    counted.limits.fuel = Some(50_000_000);
    let plain = step("plain", &fixture("echo"));
    let p = plan(tmp.path(), vec![counted, plain]);
    let r = run(&rt, &p);
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    let all = rt.records().run_attempts(r.run).unwrap();
    let counted = &all["counted"][0];
    assert!(
        counted.peak_memory_bytes.unwrap() >= 64 << 10,
        "{counted:?}"
    );
    assert!(counted.fuel_used.unwrap() > 0, "{counted:?}");
    let plain = &all["plain"][0];
    assert!(plain.peak_memory_bytes.unwrap() > 0, "{plain:?}");
    assert_eq!(plain.fuel_used, None, "no fuel is counted without a budget");
    assert_eq!(
        rt.records().attempts(r.run, "counted").unwrap()[0],
        *counted
    );
}

/// A unit of work is data (issue 22): a `UnitSpec` survives JSON and runs
/// through `Runtime::execute` with no plan, run or scheduler, giving the
/// same outputs for the same spec; a spec naming another component is
/// refused.
#[test]
fn a_unit_spec_runs_without_a_scheduler() {
    use weir_runtime::unit::UnitSpec;
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let echo = fixture("echo");
    let c = rt
        .load_component(
            &weir_runtime::ComponentSource::Wasm(echo.clone()),
            tmp.path(),
            &Default::default(),
            false,
        )
        .unwrap();
    std::fs::write(tmp.path().join("x.csv"), "a\n1\n").unwrap();
    let data = rt.store().ingest_path(&tmp.path().join("x.csv")).unwrap();
    let spec = UnitSpec {
        step: "solo".into(),
        run: None,
        component: c.digest,
        capabilities: c.capabilities.clone(),
        params_json: r#"{"random":true}"#.into(),
        inputs: [("data".to_string(), data)].into(),
        outputs: vec!["out".into()],
        limits: weir_runtime::Limits::default(),
        seed: weir_runtime::Digest::of(b"seed"),
        attempt: 1,
        tags: Vec::new(),
    };
    let again: UnitSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(again, spec);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let execute = |s: &UnitSpec| tokio.block_on(rt.execute(s, &c, &cancel, None, None));
    let first = execute(&spec);
    let outputs = first.result.clone().unwrap();
    let view = rt.store().view(&outputs["out"]).unwrap();
    assert_eq!(
        std::fs::read_to_string(view.join("inputs.txt")).unwrap(),
        "data/x.csv: a\n1\n"
    );
    assert!(first.peak_memory_bytes.is_some());
    // The seed fixes the sandbox's clocks and randomness: same spec, same digests.
    assert_eq!(execute(&again).result.unwrap(), outputs);
    let mut other = spec.clone();
    other.component = weir_runtime::Digest::of(b"another component");
    let refused = execute(&other);
    let (kind, why) = refused.result.unwrap_err();
    assert_eq!(kind, weir_runtime::records::FailureKind::Setup);
    assert!(why.contains("names component"), "{why}");
}

/// `Runtime::start` gives a handle: the run's number at once (recorded),
/// its events as a stream in order, cancellation, and a final report once
/// every record is final (issue 29).
#[test]
fn a_run_handle_gives_the_id_events_cancel_and_the_final_report() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let echo = fixture("echo");
    let p = std::sync::Arc::new(plan(
        tmp.path(),
        vec![step("a", &echo), {
            let mut b = step("b", &echo);
            wire(&mut b, "in", "a", "out");
            b
        }],
    ));
    let (id, events, report) = tokio.block_on(async {
        let mut h = rt.start(p.clone(), RunOptions::default()).await.unwrap();
        let id = h.id();
        assert!(rt.records().run(id).unwrap().is_some(), "recorded at once");
        let mut events = Vec::new();
        while let Some(e) = h.next_event().await {
            events.push(e);
        }
        (id, events, h.finish().await.unwrap())
    });
    assert_eq!(report.run, id);
    assert_eq!(report.state, RunState::Succeeded);
    assert!(
        matches!(events.first(), Some(weir_runtime::RunEvent::RunStarted { run, .. }) if *run == id),
        "{events:?}"
    );
    let finished: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            weir_runtime::RunEvent::StepFinished { step, .. } => Some(step.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(finished, ["a", "b"]);
    assert_eq!(
        rt.records().run(id).unwrap().unwrap().state,
        RunState::Succeeded
    );

    // Cancelled through the handle: the report and the records say so.
    let slow = std::sync::Arc::new(plan(tmp.path(), vec![sleeping("slow", 60_000)]));
    let (id, report) = tokio.block_on(async {
        let mut h = rt.start(slow, RunOptions::default()).await.unwrap();
        while let Some(e) = h.next_event().await {
            if matches!(e, weir_runtime::RunEvent::StepStarted { .. }) {
                break;
            }
        }
        h.cancel();
        (h.id(), h.finish().await.unwrap())
    });
    assert_eq!(report.state, RunState::Cancelled);
    assert_eq!(
        rt.records().run(id).unwrap().unwrap().state,
        RunState::Cancelled
    );

    // A plan that cannot start is an error, not a handle.
    let mut bad = plan(tmp.path(), vec![step("a", &echo)]);
    bad.steps[0].name = "not a name".into();
    let err = tokio
        .block_on(rt.start(std::sync::Arc::new(bad), RunOptions::default()))
        .err()
        .expect("an invalid plan starts no run");
    assert!(format!("{err:#}").contains("not a name"), "{err:#}");
}

/// An event callback that panics does not stop the run or leave its record
/// `running` (issue 29): the panic is contained and logged, the run ends
/// and is recorded as it would have been.
#[test]
fn a_panicking_event_callback_leaves_every_record_final() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let echo = fixture("echo");
    let mut b = step("b", &echo);
    wire(&mut b, "in", "a", "out");
    let mut c = step("c", &echo);
    c.params = serde_json::json!({ "note": "independent" });
    let p = plan(tmp.path(), vec![step("a", &echo), b, c]);
    let opts = RunOptions {
        on_event: Some(std::sync::Arc::new(|e: &weir_runtime::RunEvent| {
            if matches!(e, weir_runtime::RunEvent::StepFinished { .. }) {
                panic!("the host's callback has a bug");
            }
        })),
        ..RunOptions::default()
    };
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(rt.run(&p, opts))
        .expect("the run ends normally");
    assert_eq!(report.state, RunState::Succeeded);
    let run = rt.records().runs(1).unwrap().remove(0);
    assert_eq!(run.state, RunState::Succeeded);
    let steps = rt.records().steps(run.id).unwrap();
    assert_eq!(steps.len(), 3);
    assert!(
        steps.iter().all(|s| s.state == StepState::Succeeded),
        "{steps:?}"
    );
}

/// A host that must never run cargo turns crate builds off: a crate source
/// is refused with a message naming the step, a `.wasm` source runs (issue 29).
#[test]
fn a_runtime_that_builds_no_crates_refuses_a_crate_source() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = weir_runtime::Config::new(tmp.path().join(".weir"));
    cfg.jobs(2);
    cfg.build_crates(false);
    let rt = weir_runtime::Runtime::new(&cfg).unwrap();
    let crate_step = weir_runtime::StepPlan::new(
        "built",
        weir_runtime::ComponentSource::Crate(repo().join("tests/guests/noop")),
    );
    let e = format!(
        "{:#}",
        try_run(&rt, &plan(tmp.path(), vec![crate_step])).unwrap_err()
    );
    assert!(
        e.contains("step 'built'") && e.contains("builds no crates"),
        "{e}"
    );
    assert!(rt.records().runs(10).unwrap().is_empty());
    let r = run(&rt, &plan(tmp.path(), vec![step("file", &fixture("noop"))]));
    assert_eq!(r.state, RunState::Succeeded);
}

/// Every attempt goes through the runtime's `Dispatch` (issue 22): a host's
/// own dispatch sees each unit as data and decides where it runs; this one
/// counts and hands over to the local one, then refuses one step's units.
#[test]
fn every_attempt_goes_through_the_configured_dispatch() {
    use weir_runtime::unit::{Dispatch, LocalDispatch, UnitFuture, UnitOutcome, UnitSpec};
    struct Counting(std::sync::Mutex<Vec<String>>);
    impl Dispatch for Counting {
        fn dispatch<'a>(
            &'a self,
            units: &'a weir_runtime::unit::UnitRunner,
            spec: &'a UnitSpec,
            component: &'a std::sync::Arc<weir_runtime::executor::LoadedComponent>,
            cancel: &'a tokio_util::sync::CancellationToken,
            watch: Option<weir_runtime::executor::Watch>,
            host_data: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
        ) -> UnitFuture<'a> {
            self.0.lock().unwrap().push(spec.step.clone());
            if spec.step == "refused" {
                return Box::pin(async {
                    UnitOutcome {
                        result: Err((
                            weir_runtime::records::FailureKind::Setup,
                            "no worker takes this unit".into(),
                        )),
                        created: Vec::new(),
                        logs: Vec::new(),
                        metrics: Vec::new(),
                        peak_memory_bytes: None,
                        fuel_used: None,
                    }
                });
            }
            LocalDispatch.dispatch(units, spec, component, cancel, watch, host_data)
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let counting = std::sync::Arc::new(Counting(Default::default()));
    let mut cfg = weir_runtime::Config::new(tmp.path().join(".weir"));
    cfg.jobs(2).dispatch(counting.clone());
    let rt = weir_runtime::Runtime::new(&cfg).unwrap();
    let echo = fixture("echo");
    let mut b = step("b", &echo);
    wire(&mut b, "in", "a", "out");
    let mut refused = step("refused", &echo);
    refused.params = serde_json::json!({ "note": 1 });
    let r = run(&rt, &plan(tmp.path(), vec![step("a", &echo), b, refused]));
    let mut seen = counting.0.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["a", "b", "refused"]);
    assert_eq!(r.step("a").unwrap().state, StepState::Succeeded);
    assert_eq!(r.step("b").unwrap().state, StepState::Succeeded);
    let no = r.step("refused").unwrap();
    assert_eq!(no.state, StepState::Failed);
    assert_eq!(no.error.as_deref(), Some("no worker takes this unit"));
    // A re-run is all cache hits: nothing is dispatched.
    run(&rt, &plan(tmp.path(), vec![step("a", &echo)]));
    assert_eq!(counting.0.lock().unwrap().len(), 3);
}

/// The scheduler over a dispatch that executes nothing (issue 22): what it
/// decides is visible in the units it hands out. Order follows the graph, a
/// dependant's inputs are exactly its upstream's reported outputs, a
/// failure skips its dependants and nothing else, retries come back as new
/// attempts of the same unit, and the records hold what the dispatch said.
#[test]
fn the_scheduler_over_a_fake_dispatch_hands_out_units_in_graph_order() {
    use weir_runtime::records::FailureKind;
    use weir_runtime::unit::{Dispatch, UnitFuture, UnitOutcome, UnitSpec};
    /// Made-up output digests (nothing is stored), failing `bad` always
    /// and `flaky` on its first attempt.
    #[derive(Default)]
    struct Fake(std::sync::Mutex<Vec<UnitSpec>>);
    impl Dispatch for Fake {
        fn dispatch<'a>(
            &'a self,
            _: &'a weir_runtime::unit::UnitRunner,
            spec: &'a UnitSpec,
            _: &'a std::sync::Arc<weir_runtime::executor::LoadedComponent>,
            _: &'a tokio_util::sync::CancellationToken,
            _: Option<weir_runtime::executor::Watch>,
            _: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
        ) -> UnitFuture<'a> {
            self.0.lock().unwrap().push(spec.clone());
            let fails = spec.step == "bad" || (spec.step == "flaky" && spec.attempt == 1);
            let result = if fails {
                Err((FailureKind::Returned, format!("{} says no", spec.step)))
            } else {
                Ok(spec
                    .outputs
                    .iter()
                    .map(|o| {
                        let d = weir_runtime::Digest::of(format!("{}/{o}", spec.step).as_bytes());
                        (o.clone(), d)
                    })
                    .collect())
            };
            Box::pin(async move {
                UnitOutcome {
                    result,
                    created: Vec::new(),
                    logs: Vec::new(),
                    metrics: vec![weir_runtime::records::Metric {
                        name: "attempt".into(),
                        value: f64::from(spec.attempt),
                    }],
                    peak_memory_bytes: None,
                    fuel_used: None,
                }
            })
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let fake = std::sync::Arc::new(Fake::default());
    let mut cfg = weir_runtime::Config::new(tmp.path().join(".weir"));
    cfg.jobs(2).dispatch(fake.clone());
    let rt = weir_runtime::Runtime::new(&cfg).unwrap();
    let noop = fixture("echo");
    let mut b = step("b", &noop);
    wire(&mut b, "in", "a", "out");
    let mut c = step("c", &noop);
    wire(&mut c, "x", "a", "out");
    wire(&mut c, "y", "b", "out");
    let mut flaky = step("flaky", &noop);
    flaky.retry.retries = 1;
    flaky.retry.delay_ms = 1;
    let mut after = step("after", &noop);
    wire(&mut after, "in", "bad", "out");
    let p = plan(
        tmp.path(),
        vec![step("a", &noop), b, c, step("bad", &noop), after, flaky],
    );
    let r = run(&rt, &p);

    let seen = fake.0.lock().unwrap().clone();
    let at = |name: &str| seen.iter().position(|s| s.step == name).unwrap();
    assert!(at("a") < at("b") && at("b") < at("c"), "{seen:?}");
    assert!(
        seen.iter().all(|s| s.step != "after"),
        "a skipped unit is never dispatched"
    );
    let out = |name: &str| weir_runtime::Digest::of(format!("{name}/out").as_bytes());
    let c_spec = &seen[at("c")];
    assert_eq!(c_spec.inputs["x"], out("a"));
    assert_eq!(c_spec.inputs["y"], out("b"));
    let flaky: Vec<u32> = seen
        .iter()
        .filter(|s| s.step == "flaky")
        .map(|s| s.attempt)
        .collect();
    assert_eq!(flaky, [1, 2]);
    assert_eq!(r.state, RunState::Failed);
    assert!(
        r.error.as_deref().unwrap_or("").contains("bad"),
        "{:?}",
        r.error
    );
    assert_eq!(r.step("after").unwrap().state, StepState::Skipped);
    assert_eq!(r.step("flaky").unwrap().state, StepState::Succeeded);
    let steps = rt.records().steps(r.run).unwrap();
    let c_rec = steps.iter().find(|s| s.step == "c").unwrap();
    assert_eq!(c_rec.outputs["out"], out("c"));
    assert_eq!(c_rec.inputs["y"], out("b"));
    let bad = steps.iter().find(|s| s.step == "bad").unwrap();
    assert_eq!(bad.failure, Some(FailureKind::Returned));
    assert_eq!(bad.error.as_deref(), Some("bad says no"));
}
