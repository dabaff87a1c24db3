//! Host-defined capabilities: an embedding host adds its own WIT interface,
//! implemented in Rust, grants it through the same policy as the gpu, and
//! steps that are not granted it cannot link. Its identity is in the cache key.

mod common;

use common::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use weir_runtime::executor::HostState;
use weir_runtime::wasmtime::component::HasSelf;
use weir_runtime::{Capability, Config, RunState, Runtime, StepState, TrustPolicy};

weir_runtime::wasmtime::component::bindgen!({
    path: "tests/guests/kv/wit",
    world: "kv-client",
    wasmtime_crate: weir_runtime::wasmtime,
});

/// The per-attempt state: the table this host serves.
struct Table(Arc<HashMap<String, String>>);

impl acme::kv::lookup::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        let value = self
            .extension::<Table>()
            .and_then(|t| t.0.get(&key).cloned());
        // A host with a bug (see the panic test).
        if value.as_deref() == Some("PANIC") {
            panic!("the kv host has a bug");
        }
        value
    }
}

fn kv_capability(version: &str, made: Arc<AtomicUsize>) -> Capability {
    let table: Arc<HashMap<String, String>> = Arc::new(
        [("alpha", "1"), ("beta", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    Capability::new("kv", version)
        .interface("acme:kv/lookup@0.1.0")
        .linker(|l| acme::kv::lookup::add_to_linker::<HostState, HasSelf<HostState>>(l, |s| s))
        .state(move || {
            made.fetch_add(1, Ordering::Relaxed);
            Table(table.clone())
        })
}

fn kv_plan(base: &std::path::Path, request: bool) -> weir_runtime::Plan {
    let mut s = step("lookup", &fixture("kv"));
    s.outputs.insert("out".into());
    s.params = serde_json::json!({ "keys": ["alpha", "beta", "gamma"] });
    if request {
        s.capabilities.insert("kv".into());
    }
    plan(base, vec![s])
}

fn runtime_with(dir: &std::path::Path, cap: Capability, trust: &TrustPolicy) -> Runtime {
    let mut cfg = Config::new(dir);
    cfg.jobs(2).capability(cap);
    cfg.trust(trust);
    Runtime::new(&cfg).unwrap()
}

#[test]
fn a_granted_step_calls_the_host_capability_and_its_version_is_in_the_cache_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join(".weir");
    let made = Arc::new(AtomicUsize::new(0));
    let all = TrustPolicy::default().trust_all().clone();
    let rt = runtime_with(&store, kv_capability("1", made.clone()), &all);
    let r = run(&rt, &kv_plan(tmp.path(), true));
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    let out = r.output_path(rt.store(), "lookup", "out").unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("values.txt")).unwrap(),
        "alpha=1\nbeta=2\ngamma=-\n"
    );
    assert_eq!(made.load(Ordering::Relaxed), 1, "fresh state per attempt");

    // Same capability version: a cache hit. A new version: the step runs again.
    let r = run(&rt, &kv_plan(tmp.path(), true));
    assert_eq!(r.step("lookup").unwrap().state, StepState::Cached);
    drop(rt);
    let rt = runtime_with(&store, kv_capability("2", made.clone()), &all);
    let r = run(&rt, &kv_plan(tmp.path(), true));
    assert_eq!(r.step("lookup").unwrap().state, StepState::Succeeded);
    assert_eq!(made.load(Ordering::Relaxed), 2);
}

#[test]
fn a_step_that_is_not_granted_the_capability_cannot_link() {
    let tmp = tempfile::tempdir().unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    // Requested, but the policy trusts nothing.
    let rt = runtime_with(
        &tmp.path().join(".a"),
        kv_capability("1", made.clone()),
        &TrustPolicy::default(),
    );
    let e = format!(
        "{:#}",
        try_run(&rt, &kv_plan(tmp.path(), true)).unwrap_err()
    );
    assert!(
        e.contains("imports the 'kv' capability (acme:kv/lookup@0.1.0)")
            && e.contains("TrustPolicy::trust(")
            && !e.contains("weir run"),
        "{e}"
    );
    // Trusted, but the step does not request it.
    let rt = runtime_with(
        &tmp.path().join(".b"),
        kv_capability("1", made.clone()),
        TrustPolicy::default().trust_all(),
    );
    let e = format!(
        "{:#}",
        try_run(&rt, &kv_plan(tmp.path(), false)).unwrap_err()
    );
    assert!(e.contains("request it with .requires(\"kv\")"), "{e}");
    // A runtime without the capability: the import cannot be satisfied.
    let bare = Runtime::new(Config::new(tmp.path().join(".c")).jobs(2)).unwrap();
    let e = format!(
        "{:#}",
        try_run(&bare, &kv_plan(tmp.path(), true)).unwrap_err()
    );
    assert!(
        e.contains("requests capability 'kv', which does not exist"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        try_run(&bare, &kv_plan(tmp.path(), false)).unwrap_err()
    );
    assert!(
        e.contains("cannot run in the weir sandbox") && e.contains("acme:kv/lookup"),
        "{e}"
    );
    assert_eq!(made.load(Ordering::Relaxed), 0, "nothing ran");
    // Bad capability definitions are refused when the runtime is built.
    let bad = Capability::new("gpu", "1").interface("x:y/z");
    assert!(Runtime::new(Config::new(tmp.path().join(".d")).capability(bad)).is_err());
}

#[test]
fn trust_file_entries_grant_only_the_capabilities_they_list() {
    let tmp = tempfile::tempdir().unwrap();
    let digest = weir_runtime::Digest::of(&std::fs::read(fixture("kv")).unwrap()).to_hex();
    let file = tmp.path().join("weir.toml");
    let made = Arc::new(AtomicUsize::new(0));
    for (caps, ok) in [("[\"gpu\"]", false), ("[\"kv\"]", true)] {
        std::fs::write(
            &file,
            format!("[[trust]]\ndigest = \"{digest}\"\ncapabilities = {caps}\n"),
        )
        .unwrap();
        // Host capability names are known only to the embedding host.
        assert_eq!(TrustPolicy::from_file(&file).is_ok(), caps.contains("gpu"));
        let policy = TrustPolicy::default()
            .trust_file_for(&file, &["kv"])
            .unwrap()
            .clone();
        let rt = runtime_with(
            &tmp.path().join(format!(".{ok}")),
            kv_capability("1", made.clone()),
            &policy,
        );
        let r = try_run(&rt, &kv_plan(tmp.path(), true));
        assert_eq!(r.is_ok(), ok, "{caps}: {:?}", r.err());
    }
}

/// Issue 19, item 1, for host-defined capabilities: a capability that reads
/// its string arguments in place (`capability::read_str` over `WasmStr`)
/// refuses an oversized one without copying it, and the guest goes on.
#[test]
fn a_capability_reading_arguments_in_place_refuses_an_oversized_key() {
    use weir_runtime::wasmtime::StoreContextMut;
    use weir_runtime::wasmtime::component::WasmStr;
    let tmp = tempfile::tempdir().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let seen_in = seen.clone();
    let cap = Capability::new("kv", "bounded-1")
        .interface("acme:kv/lookup@0.1.0")
        .linker(move |l| {
            let seen = seen_in.clone();
            l.instance("acme:kv/lookup@0.1.0")?.func_wrap(
                "get",
                move |store: StoreContextMut<'_, HostState>, (key,): (WasmStr,)| {
                    let value = match weir_runtime::capability::read_str(&store, &key, 256)? {
                        Some(k) if k == "alpha" => Some("1".to_string()),
                        Some(_) => None,
                        None => {
                            seen.fetch_add(1, Ordering::Relaxed);
                            Some("refused".to_string())
                        }
                    };
                    Ok((value,))
                },
            )
        });
    let rt = runtime_with(
        &tmp.path().join(".weir"),
        cap,
        TrustPolicy::default().trust_all(),
    );
    let mut p = kv_plan(tmp.path(), true);
    p.steps[0].params = serde_json::json!({ "keys": ["alpha"], "big_mb": 32 });
    p.steps[0].limits.memory_bytes = 128 << 20;
    let r = run(&rt, &p);
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    assert_eq!(
        seen.load(Ordering::Relaxed),
        1,
        "the 32 MiB key was refused"
    );
    let out = r.output_path(rt.store(), "lookup", "out").unwrap();
    let text = std::fs::read_to_string(out.join("values.txt")).unwrap();
    assert_eq!(text, "alpha=1\nkkkkkkkkkkkkkkkkkkkk=refused\n");
}

/// A host capability that panics while a step calls it fails that step
/// with the panic's message, records it (kind `internal`), skips what
/// depends on it and ends the run with every record final (issue 29).
#[test]
fn a_panicking_host_capability_fails_its_step_and_every_record_is_final() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join(".weir");
    let table: Arc<HashMap<String, String>> =
        Arc::new([("beta".to_string(), "PANIC".to_string())].into());
    let cap = Capability::new("kv", "1")
        .interface("acme:kv/lookup@0.1.0")
        .linker(|l| acme::kv::lookup::add_to_linker::<HostState, HasSelf<HostState>>(l, |s| s))
        .state(move || Table(table.clone()));
    let rt = runtime_with(&store, cap, TrustPolicy::default().trust_all());
    let mut p = kv_plan(tmp.path(), true);
    let mut after = step("after", &fixture("echo"));
    wire(&mut after, "in", "lookup", "out");
    p.steps.push(after);
    let r = run(&rt, &p);
    assert_eq!(r.state, RunState::Failed, "{:?}", r.error);
    let lookup = r.step("lookup").unwrap();
    assert_eq!(lookup.state, StepState::Failed);
    assert!(
        lookup
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("the kv host has a bug"),
        "{:?}",
        lookup.error
    );
    let recorded = rt.records().runs(1).unwrap().remove(0);
    assert_eq!(recorded.state, RunState::Failed);
    let steps = rt.records().steps(recorded.id).unwrap();
    let state = |name: &str| {
        steps
            .iter()
            .find(|s| s.step == name)
            .map(|s| (s.state, s.failure))
    };
    assert_eq!(
        state("lookup"),
        Some((
            StepState::Failed,
            Some(weir_runtime::records::FailureKind::Internal)
        ))
    );
    assert_eq!(state("after").map(|s| s.0), Some(StepState::Skipped));
}

/// A capability's per-attempt state sees the attempt's run, step and
/// attempt number and the value the host attached to the run, so one
/// `Runtime` can keep per-tenant state (issue 29).
#[test]
fn capability_state_sees_the_run_the_step_and_the_hosts_value() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join(".weir");
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let cap = Capability::new("kv", "1")
        .interface("acme:kv/lookup@0.1.0")
        .linker(|l| acme::kv::lookup::add_to_linker::<HostState, HasSelf<HostState>>(l, |s| s))
        .state_with(move |cx| {
            let tenant = cx
                .host_data
                .and_then(|d| d.downcast_ref::<String>())
                .cloned()
                .unwrap_or_default();
            log.lock().unwrap().push(format!(
                "run {:?} step {} attempt {} tenant {tenant}",
                cx.run.map(|r| r.0),
                cx.step,
                cx.attempt
            ));
            Table(Arc::new([("alpha".to_string(), tenant)].into()))
        });
    let rt = runtime_with(&store, cap, TrustPolicy::default().trust_all());
    let opts = weir_runtime::RunOptions {
        host_data: Some(Arc::new("tenant-a".to_string())),
        ..Default::default()
    };
    let r = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rt.run(&kv_plan(tmp.path(), true), opts))
        .unwrap();
    assert_eq!(r.state, RunState::Succeeded, "{:?}", r.error);
    assert_eq!(
        *seen.lock().unwrap(),
        [format!(
            "run Some({}) step lookup attempt 1 tenant tenant-a",
            r.run.0
        )]
    );
    let out = r.output_path(rt.store(), "lookup", "out").unwrap();
    assert!(
        std::fs::read_to_string(out.join("values.txt"))
            .unwrap()
            .starts_with("alpha=tenant-a\n")
    );
}
