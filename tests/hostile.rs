//! Hostile guests get clear errors and bounded host resources.

mod common;

use common::*;
use weir_runtime::{RunState, StepState};

fn hostile(name: &str, params: serde_json::Value) -> weir_runtime::StepPlan {
    let mut s = step(name, &fixture("hostile"));
    s.params = params;
    s
}

#[test]
fn deep_recursion_traps_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let r = run(
        &rt,
        &plan(
            tmp.path(),
            vec![hostile("deep", serde_json::json!({ "mode": "recurse" }))],
        ),
    );
    assert_eq!(r.state, RunState::Failed);
    let e = r.step("deep").unwrap().error.clone().unwrap();
    // Rust's stack lives in linear memory: overflowing it is an out-of-bounds
    // access (or a call-stack exhaustion), a trap either way, never a host crash.
    assert!(
        e.starts_with("the step trapped")
            && (e.contains("out of bounds memory access") || e.to_lowercase().contains("stack")),
        "{e}"
    );
}

#[test]
fn each_instance_starts_from_pristine_memory() {
    // Instances' memories are reset for reuse (dirty pages copied back from
    // the module's image up to a limit, the rest released): a step must never
    // see what an earlier step wrote, in its statics or in grown memory.
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let steps: Vec<_> = (0..12)
        .map(|i| {
            // 4 MiB grown: more than the part of a memory kept resident.
            let mut s = hostile(
                &format!("p{i}"),
                serde_json::json!({ "mode": "pristine", "pages": 64, "i": i }),
            );
            if i > 0 {
                wire(&mut s, "prev", &format!("p{}", i - 1), "out");
            }
            s
        })
        .collect();
    let r = run(&rt, &plan(tmp.path(), steps));
    assert_eq!(r.state, RunState::Succeeded, "{r:?}");
    for s in &r.steps {
        let dirty = s.metrics.iter().find(|m| m.name == "dirty_bytes");
        assert_eq!(dirty.map(|m| m.value), Some(0.0), "step {}", s.name);
        let again = s.metrics.iter().find(|m| m.name == "dirty_bytes_again");
        assert_eq!(again.map(|m| m.value), Some((8192 + 65536) as f64));
    }
}

#[test]
fn stdout_floods_and_huge_log_lines_are_bounded_and_escapes_are_not_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let r = run(
        &rt,
        &plan(
            tmp.path(),
            vec![
                hostile("flood", serde_json::json!({ "mode": "flood" })),
                hostile("biglog", serde_json::json!({ "mode": "biglog" })),
            ],
        ),
    );
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    let logs = rt.records().logs(r.run, "flood").unwrap();
    let kept: usize = logs
        .iter()
        .filter(|(_, l)| l.level == "stdout")
        .map(|(_, l)| l.message.len())
        .sum();
    assert!(kept <= (1 << 20) + 64 * 1024, "kept {kept} bytes of stdout");
    assert!(
        logs.iter()
            .any(|(_, l)| l.message.contains("more bytes not kept")),
        "the drop is reported"
    );
    let big = rt.records().logs(r.run, "biglog").unwrap();
    assert!(big[0].1.message.len() <= (64 << 10) + 16 && big[0].1.message.ends_with("[truncated]"));
    // The CLI shows the flood with escapes neutralised.
    let out = weir()
        .args(["logs", &r.run.to_string(), "flood", "--store"])
        .arg(tmp.path().join(".weir"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\\u{1b}[31mRED") && !text.contains('\x1b') && !text.contains('\x07'),
        "raw escapes reached the terminal"
    );
}

#[test]
fn disk_and_inode_bombs_fail_at_the_quota_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut disk = hostile("disk", serde_json::json!({ "mode": "disk", "mb": 8 }));
    disk.limits.output_bytes = 1 << 20;
    let mut inodes = hostile(
        "inodes",
        serde_json::json!({ "mode": "inodes", "files": 3000 }),
    );
    inodes.limits.output_files = 1000;
    let objects_before = count_files(&tmp.path().join(".weir/objects"));
    let r = run(&rt, &plan(tmp.path(), vec![disk, inodes]));
    assert_eq!(r.step("disk").unwrap().state, StepState::Failed);
    // Caught while running (the output watch) or, for a step that finishes
    // between two looks, when its outputs are ingested.
    let e = r.step("disk").unwrap().error.clone().unwrap();
    assert!(
        e == "output 'out': outputs exceed the size limit of 1048576 bytes (at 'big.bin')"
            || e.contains("over its limit of 1048576 bytes, and was stopped"),
        "{e}"
    );
    let e = r.step("inodes").unwrap().error.clone().unwrap();
    assert!(
        e.starts_with("output 'out': outputs exceed the file count limit of 1000")
            || e.contains("over its limit of 1000 files, and was stopped"),
        "{e}"
    );
    assert_eq!(
        count_files(&tmp.path().join(".weir/objects")),
        objects_before,
        "no object from a failed step"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path().join(".weir/tmp"))
            .unwrap()
            .count(),
        0,
        "partial outputs discarded"
    );
}

#[test]
fn endless_disk_and_inode_bombs_are_stopped_while_running() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let mut disk = hostile("disk", serde_json::json!({ "mode": "disk_forever" }));
    disk.limits.output_bytes = 32 << 20;
    disk.limits.timeout_ms = 120_000;
    let mut inodes = hostile("inodes", serde_json::json!({ "mode": "inodes_forever" }));
    inodes.limits.output_files = 2000;
    inodes.limits.timeout_ms = 120_000;
    let started = std::time::Instant::now();
    let r = run(&rt, &plan(tmp.path(), vec![disk, inodes]));
    // Long before the timeout: the watch looks at least every 0.5 s.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let e = r.step("disk").unwrap().error.clone().unwrap();
    assert!(
        e.starts_with("the step wrote more than ") && e.contains("over its limit of 33554432 bytes, and was stopped; its partial output was discarded"),
        "{e}"
    );
    let e = r.step("inodes").unwrap().error.clone().unwrap();
    assert!(
        e.contains(
            "files and folders into its outputs while running, over its limit of 2000 files"
        ),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path().join(".weir/tmp"))
            .unwrap()
            .count(),
        0,
        "partial outputs discarded"
    );
}

fn count_files(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn a_script_declaring_a_million_steps_is_refused_with_bounded_memory() {
    let mut child = weir()
        .arg("check")
        .arg(repo().join("tests/ui/million_steps.rhai"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!child.wait().unwrap().success());
    assert!(
        err.contains(
            "million_steps.rhai:4:7: pipeline 'million' would have more than 100000 steps"
        ),
        "{err}"
    );
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(peak_mib < 512, "weir check peaked at {peak_mib} MiB");
}

/// The trust file caps every component's limits (`[limits]`) and raises
/// them for the components an entry names (`limits = { .. }`): a step may
/// ask for 1 GiB, but only a component the file names gets it.
#[test]
fn a_fuel_cap_from_the_trust_file_stops_a_step_that_set_no_budget() {
    // Steps without a fuel budget run on an engine that counts no fuel; a
    // cap that gives one a budget moves it to the engine that does.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("weir.toml");
    std::fs::write(&file, "[limits]\nfuel = 1000000\n").unwrap();
    let mut cfg = weir_runtime::Config::new(tmp.path().join(".weir"));
    cfg.jobs(1);
    cfg.trust(&weir_runtime::TrustPolicy::from_file(&file).unwrap());
    let rt = weir_runtime::Runtime::new(&cfg).unwrap();
    let mut spin = step("spin", &fixture("spin"));
    spin.limits.timeout_ms = 120_000;
    let started = std::time::Instant::now();
    let r = run(&rt, &plan(tmp.path(), vec![spin]));
    assert_eq!(r.state, RunState::Failed);
    let e = r.step("spin").unwrap().error.clone().unwrap();
    assert!(e.contains("used up its fuel budget of 1000000"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn the_trust_file_caps_limits_and_raises_them_for_named_components() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = fixture("membomb");
    let digest = weir_runtime::Digest::of(&std::fs::read(&wasm).unwrap());
    let bomb = || {
        let mut s = step("bomb", &wasm);
        s.params = serde_json::json!({ "bytes": 200u64 << 20 });
        s.limits.memory_bytes = 1 << 30;
        s.limits.timeout_ms = 600_000;
        s
    };
    let file = tmp.path().join("weir.toml");
    let with_policy = |text: &str, store: &str| {
        std::fs::write(&file, text).unwrap();
        let mut cfg = weir_runtime::Config::new(tmp.path().join(store));
        cfg.jobs(1);
        let policy = weir_runtime::TrustPolicy::from_file(&file).unwrap();
        let cap = policy.limits_for(&digest, None, Some(&wasm));
        cfg.trust(&policy);
        (weir_runtime::Runtime::new(&cfg).unwrap(), cap)
    };

    // Unnamed: capped at 64 MiB, so 200 MiB fails with the memory message,
    // and the recorded plan shows the capped limits.
    let (rt, cap) = with_policy("[limits]\nmemory = \"64MiB\"\ntimeout = \"1m\"\n", "a");
    assert_eq!(cap.unwrap().memory, Some(64 << 20));
    let r = run(&rt, &plan(tmp.path(), vec![bomb()]));
    assert_eq!(r.state, RunState::Failed);
    let e = r.step("bomb").unwrap().error.clone().unwrap();
    assert!(e.contains("memory limit"), "{e}");
    let recorded = rt.records().plan_json(r.run).unwrap().unwrap();
    let recorded: serde_json::Value = serde_json::from_str(&recorded).unwrap();
    let limits = &recorded["steps"][0]["limits"];
    assert_eq!(limits["memory_bytes"], 64u64 << 20, "{limits}");
    assert_eq!(limits["timeout_ms"], 60_000, "{limits}");

    // Named by digest with its own memory: the same step succeeds; the
    // timeout it does not set still comes from `[limits]`.
    let (rt, cap) = with_policy(
        &format!(
            "[limits]\nmemory = \"64MiB\"\ntimeout = \"1m\"\n\n[[trust]]\ndigest = \"{}\"\nlimits = {{ memory = \"1GiB\" }}\n",
            &digest.to_hex()[..16]
        ),
        "b",
    );
    let cap = cap.unwrap();
    assert_eq!((cap.memory, cap.timeout), (Some(1 << 30), Some(60_000)));
    let r = run(&rt, &plan(tmp.path(), vec![bomb()]));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.step("bomb"));

    // Bad caps name the file and the field.
    for (text, want) in [
        (
            "[limits]\nmemory = \"8GiB\"\n",
            "[limits]: limits.memory must be at most 4 GiB",
        ),
        (
            "[limits]\ntimeout = 0\n",
            "[limits]: limits.timeout must be above 0",
        ),
        ("[limits]\nmemory = \"lots\"\n", "expected a size"),
        ("[limits]\nram = 1\n", "unknown field `ram`"),
        (
            "[[trust]]\ndigest = \"0123456789abcdef\"\nlimits = { output = \"1 parsec\" }\n",
            "unknown size unit",
        ),
        (
            "[[trust]]\ndigest = \"0123456789abcdef\"\n",
            "entry 1: grants nothing",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let e = weir_runtime::TrustPolicy::from_file(&file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("weir.toml") && e.contains(want), "{text}: {e}");
    }
}

/// A plugin importing WASI's HTTP client (`wasi:http/outgoing-handler`) is
/// refused before anything runs: weir links no HTTP, for anyone.
#[test]
fn a_component_importing_wasi_http_is_refused_at_link_time() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("canary.txt");
    std::fs::write(&canary, "untouched").unwrap();
    for trust in [
        weir_runtime::TrustPolicy::default(),
        weir_runtime::TrustPolicy::default().trust_all().clone(),
    ] {
        let mut cfg = weir_runtime::Config::new(tmp.path().join(".weir"));
        cfg.jobs(1);
        cfg.trust(&trust);
        let rt = weir_runtime::Runtime::new(&cfg).unwrap();
        let e = format!(
            "{:#}",
            try_run(
                &rt,
                &plan(tmp.path(), vec![step("phone_home", &fixture("fetch"))])
            )
            .unwrap_err()
        );
        assert!(
            e.contains("step 'phone_home'")
                && e.contains("cannot run in the weir sandbox")
                && e.contains("wasi:http/"),
            "{e}"
        );
        assert!(
            rt.records().runs(10).unwrap().is_empty(),
            "nothing recorded"
        );
    }
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "untouched");
    // `weir inspect` says so before anyone tries.
    let out = weir()
        .args(["inspect", "--store"])
        .arg(tmp.path().join(".weir"))
        .arg(fixture("fetch"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("wasi:http/outgoing-handler")
            && text.contains("links     NO, it cannot run in weir"),
        "{text}"
    );
}

/// A guest asking the host for more random bytes in one call than the
/// fixed bound (16 MiB) traps instead of making the host allocate them.
#[test]
fn a_huge_request_for_random_bytes_traps() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let ok = hostile("small", serde_json::json!({ "mode": "bigrandom", "mb": 1 }));
    let huge = hostile(
        "huge",
        serde_json::json!({ "mode": "bigrandom", "mb": 1024 }),
    );
    let r = run(&rt, &plan(tmp.path(), vec![ok, huge]));
    assert_eq!(r.step("small").unwrap().state, StepState::Succeeded);
    let e = r.step("huge").unwrap().error.clone().unwrap();
    assert!(
        e.starts_with("the step trapped") && e.contains("exceeds limit 16777216"),
        "{e}"
    );
}
