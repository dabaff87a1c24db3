//! `weir serve` against a real server process on a free loopback port:
//! the API (trigger, watch, logs, artifacts, metrics, cancel, retry), its
//! guard (token on every route, Host/Origin, bounded bodies, traversal),
//! the OpenAPI file, and the cron scheduler across a restart.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// A project with three pipelines built from the test fixtures.
fn project(dir: &Path) {
    let echo = fixture("echo").display().to_string();
    let sleep = fixture("sleep").display().to_string();
    std::fs::write(
        dir.join("quick.rhai"),
        format!(
            r#"let greeting = param("greeting", "hello");
let p = pipeline("quick");
let a = p.step("a", {echo:?}).output("out")
    .params(#{{ files: #{{ "data.csv": "x,y\n1,2\n3,4\n" }}, metrics: #{{ f1: 0.75, auc: 0.8 }}, note: greeting }});
p.step("b", {echo:?}).output("out").input("prev", a.out("out")).params(#{{ note: "<script>alert(1)</script>" }});
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("slow.rhai"),
        format!(
            r#"let p = pipeline("slow");
p.step("wait", {sleep:?}).output("out").params(#{{ ms: 3600000 }}).timeout("2h");
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("flaky.rhai"),
        format!(
            r#"let fail = param("fail", "yes");
let p = pipeline("flaky");
let a = p.step("first", {echo:?}).output("out").params(#{{ note: "ok" }});
p.step("second", {echo:?}).output("out").input("prev", a.out("out")).params(#{{ fail: fail }});
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("ticker.rhai"),
        format!(
            r#"let n = param("n", 0);
let p = pipeline("ticker");
p.step("ticks", {sleep:?}).output("out").params(#{{ ms: 2400, ticks: 6, n: n }});
"#
        ),
    )
    .unwrap();
    // A module other scripts could import: not a pipeline, not listed.
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("lib/helpers.rhai"), "fn twice(x) { x * 2 }\n").unwrap();
}

fn routes() -> Vec<(String, String)> {
    let out = weir().args(["serve", "--list-routes"]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (m, p) = l.split_once(' ').unwrap();
            (m.to_string(), p.to_string())
        })
        .collect()
}

fn sample(path: &str) -> String {
    path.replace("{name}", "quick")
        .replace("{id}", "1")
        .replace("{step}", "a")
        .replace("{digest}", &"0".repeat(64))
        .replace("{*path}", "x.csv")
        .replace("{version}", "1")
}

/// Checks `value` against the OpenAPI schema `schema` (`type`, `required`,
/// `properties`, `items`, `$ref` into components), naming where it fails.
fn check_schema(doc: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(all) = schema["allOf"].as_array() {
        if schema["nullable"] == true && value.is_null() {
            return;
        }
        for s in all {
            check_schema(doc, s, value, at);
        }
        return;
    }
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check_schema(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(t) = schema["type"].as_str() {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        } || (schema["nullable"] == true && value.is_null());
        assert!(ok, "{at}: expected {t}, found {value}");
    }
    if let Some(req) = schema["required"].as_array() {
        for k in req {
            let k = k.as_str().unwrap();
            assert!(
                value.get(k).is_some(),
                "{at}: missing required '{k}' in {value}"
            );
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
        for (k, s) in props {
            if let Some(v) = obj.get(k)
                && !v.is_null()
            {
                check_schema(doc, s, v, &format!("{at}.{k}"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check_schema(doc, items, v, &format!("{at}[{i}]"));
        }
    }
}

fn openapi() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap())
        .unwrap()
}

/// Validates a 2xx response body against the OpenAPI document.
fn conforms(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(
        op.is_object(),
        "{method} {path} is not in docs/openapi.json"
    );
    let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path}: no schema for {status}"
    );
    check_schema(doc, schema, body, &format!("{method} {path}"));
}

#[test]
fn the_api_triggers_watches_cancels_and_retries_runs_and_guards_every_route() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    project(&proj);
    let mut srv = Served::start(&proj, &tmp.path().join("store"));
    let doc = openapi();

    // Every route is documented, and every documented route exists.
    let routes = routes();
    assert!(routes.len() >= 15, "{routes:?}");
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            documented.push((m.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut listed = routes.clone();
    listed.sort();
    assert_eq!(
        listed, documented,
        "docs/openapi.json and the router disagree"
    );

    // The health check and the page's static files need no token (the page
    // asks for it); every other route answers 401 without one.
    let (s, _, body) = srv.raw("GET", "/api/health", &[]);
    assert_eq!((s, body.as_slice()), (200, &br#"{"ok":true}"#[..]));
    for p in ["/", "/app.js", "/app.css"] {
        let (s, _, _) = srv.raw("GET", p, &[]);
        assert_eq!(s, 200, "{p} without a token");
    }
    for (m, p) in &routes {
        if matches!(p.as_str(), "/api/health" | "/" | "/app.js" | "/app.css") {
            continue;
        }
        let (s, _, body) = srv.raw(m, &sample(p), &[]);
        assert_eq!(s, 401, "{m} {p} without a token");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
        let (s, _, _) = srv.raw(
            m,
            &sample(p),
            &[("Authorization", "Bearer wrong-token-0000000000")],
        );
        assert_eq!(s, 401, "{m} {p} with a wrong token");
    }
    // DNS rebinding and cross-site requests are refused.
    let auth = format!("Bearer {TOKEN}");
    let (s, _, _) = srv.raw(
        "GET",
        "/api/runs",
        &[("Authorization", &auth), ("Host", "evil.example:80")],
    );
    assert_eq!(s, 421);
    let (s, _, _) = srv.raw(
        "POST",
        "/api/pipelines/quick/runs",
        &[("Authorization", &auth), ("Origin", "http://evil.example")],
    );
    assert_eq!(s, 403);

    // Pipelines: the three scripts (the module is not one).
    let (s, v) = srv.get("/api/pipelines");
    assert_eq!(s, 200);
    conforms(&doc, "GET", "/api/pipelines", s, &v);
    let names: Vec<&str> = v["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["flaky", "quick", "slow", "ticker"]);

    // Trigger with params, watch to completion.
    let (s, v) = srv.post(
        "/api/pipelines/quick/runs",
        json!({ "params": { "greeting": "bonjour" } }),
    );
    assert_eq!(s, 201, "{v}");
    conforms(&doc, "POST", "/api/pipelines/{name}/runs", s, &v);
    let id = v["run"].as_i64().unwrap();
    let detail = srv.wait_run(id, 120);
    assert_eq!(detail["run"]["state"], "succeeded", "{detail}");
    conforms(&doc, "GET", "/api/runs/{id}", 200, &detail);
    assert_eq!(detail["run"]["params"]["greeting"], "bonjour");
    let nodes = detail["graph"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(detail["graph"]["edges"][0]["from"], "a");
    assert_eq!(detail["graph"]["edges"][0]["to"], "b");
    let (s, v) = srv.get("/api/runs?pipeline=quick&state=succeeded");
    conforms(&doc, "GET", "/api/runs", s, &v);
    assert_eq!(v["runs"][0]["run"], id);
    assert!(v["runs"][0]["duration_ms"].as_i64().unwrap() >= 0);

    // Step detail, logs, metrics.
    let (s, v) = srv.get(&format!("/api/runs/{id}/steps/a"));
    conforms(&doc, "GET", "/api/runs/{id}/steps/{step}", s, &v);
    assert_eq!(v["state"], "succeeded");
    assert!(v["record"]["cache_key"].as_str().unwrap().len() == 64);
    assert_eq!(v["params"]["note"], "bonjour");
    let (s, v) = srv.get(&format!("/api/runs/{id}/steps/a/logs"));
    conforms(&doc, "GET", "/api/runs/{id}/steps/{step}/logs", s, &v);
    assert!(
        v["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"] == "echo done"),
        "{v}"
    );
    let (s, v) = srv.get(&format!("/api/runs/{id}/metrics"));
    conforms(&doc, "GET", "/api/runs/{id}/metrics", s, &v);
    assert_eq!(v["metrics"]["a"]["f1"], 0.75);

    // Artifacts: metadata, download as an attachment, preview; traversal names nothing.
    let out = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "a")
        .unwrap()["outputs"]["out"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = srv.get(&format!("/api/artifacts/{out}"));
    conforms(&doc, "GET", "/api/artifacts/{digest}", s, &v);
    assert!(
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "data.csv")
    );
    assert_eq!(v["producer"]["run"], id);
    let (s, hs, body) = srv.raw(
        "GET",
        &format!("/api/artifacts/{out}/files/data.csv"),
        &[("Authorization", &auth)],
    );
    assert_eq!(s, 200);
    assert_eq!(body, b"x,y\n1,2\n3,4\n");
    let header = |n: &str| {
        hs.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        header("content-disposition"),
        "attachment; filename=\"data.csv\""
    );
    assert_eq!(header("content-type"), "application/octet-stream");
    assert_eq!(header("x-content-type-options"), "nosniff");
    let (s, v) = srv.get(&format!("/api/artifacts/{}/preview/data.csv", &out[..12]));
    conforms(
        &doc,
        "GET",
        "/api/artifacts/{digest}/preview/{*path}",
        s,
        &v,
    );
    assert_eq!(
        v["rows"],
        json!([["x", "y"], ["1", "2"], ["3", "4"]]),
        "{v}"
    );
    for bad in [
        format!("/api/artifacts/{out}/files/../../weir.db"),
        format!("/api/artifacts/{out}/files/%2e%2e/%2e%2e/weir.db"),
        format!("/api/artifacts/{out}/files/..%2f..%2fweir.db"),
        format!("/api/artifacts/{out}/files//etc/passwd"),
        format!("/api/artifacts/{out}/files/data.csv/../../../weir.db"),
        "/api/artifacts/..%2f..%2fweir.db/files/x".to_string(),
        "/api/artifacts/zzzzzzzz/files/x".to_string(),
    ] {
        let (s, _, body) = srv.raw("GET", &bad, &[("Authorization", &auth)]);
        assert!(matches!(s, 400 | 404), "{bad}: {s}");
        assert!(
            !String::from_utf8_lossy(&body).contains("SQLite"),
            "{bad} leaked the database"
        );
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert!(v["error"].is_string() || s == 404, "{bad}: errors are JSON");
    }

    // Logs stream while the step runs: polling with `after` gets each new
    // line once, before the run ends.
    let (_, v) = srv.post("/api/pipelines/ticker/runs", json!({}));
    let ticker = v["run"].as_i64().unwrap();
    let (mut after, mut seen, mut live_seen) = (0u64, Vec::new(), 0);
    let t = Instant::now();
    loop {
        let (s, v) = srv.get(&format!(
            "/api/runs/{ticker}/steps/ticks/logs?after={after}"
        ));
        assert_eq!(s, 200, "{v}");
        for l in v["lines"].as_array().unwrap() {
            seen.push(l["message"].as_str().unwrap().to_string());
        }
        if v["live"] == true {
            live_seen = seen.len();
            after = v["next"].as_u64().unwrap();
        } else {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the ticker never ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        live_seen >= 3,
        "lines arrived while running: {live_seen} of {seen:?}"
    );
    let ticks: Vec<String> = (0..6).map(|i| format!("tick {i}")).collect();
    assert_eq!(
        &seen[..live_seen],
        &ticks[..live_seen],
        "each live line once, in order"
    );
    assert!(
        seen.ends_with(&ticks),
        "the records have them all: {seen:?}"
    );

    // Or streamed: `follow=true` sends NDJSON lines as they happen, then
    // the step's final state.
    let (_, v) = srv.post(
        "/api/pipelines/ticker/runs",
        json!({ "params": { "n": 1 } }),
    );
    let ticker = v["run"].as_i64().unwrap();
    let resp = ureq::get(&format!(
        "{}/api/runs/{ticker}/steps/ticks/logs?follow=true",
        srv.base
    ))
    .header("Authorization", &auth)
    .call()
    .unwrap();
    assert_eq!(
        resp.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap(),
        "application/x-ndjson"
    );
    let t = Instant::now();
    let mut got: Vec<(Duration, Value)> = Vec::new();
    let reader = std::io::BufReader::new(resp.into_body().into_reader());
    for line in std::io::BufRead::lines(reader) {
        got.push((t.elapsed(), serde_json::from_str(&line.unwrap()).unwrap()));
    }
    let (last_at, last) = got.last().unwrap().clone();
    assert_eq!(last, json!({"done": true, "state": "succeeded"}), "{got:?}");
    let msgs: Vec<&str> = got[..got.len() - 1]
        .iter()
        .map(|(_, v)| v["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        ["tick 0", "tick 1", "tick 2", "tick 3", "tick 4", "tick 5"]
    );
    assert!(
        last_at - got[0].0 >= Duration::from_secs(1),
        "the first line came while the step ran, not with the end: {got:?}"
    );

    // A long run is cancelled: the step is interrupted and recorded.
    let (s, v) = srv.post("/api/pipelines/slow/runs", json!({}));
    assert_eq!(s, 201, "{v}");
    let slow = v["run"].as_i64().unwrap();
    let t = Instant::now();
    loop {
        let (_, v) = srv.get(&format!("/api/runs/{slow}"));
        if v["live"]["wait"] == "running" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the slow step never started: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Only one active run per pipeline by default.
    let (s, v) = srv.post("/api/pipelines/slow/runs", json!({}));
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max_active_runs"));
    let (s, v) = srv.post(&format!("/api/runs/{slow}/cancel"), json!({}));
    assert_eq!(s, 202, "{v}");
    let cancelled = srv.wait_run(slow, 30);
    assert_eq!(cancelled["run"]["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["steps"][0]["state"], "cancelled");
    let (s, _) = srv.post(&format!("/api/runs/{slow}/cancel"), json!({}));
    assert_eq!(s, 409, "an ended run cannot be cancelled");

    // A failed run is retried in place: the failed step runs again with the
    // run's params, the succeeded one is kept.
    let (_, v) = srv.post("/api/pipelines/flaky/runs", json!({}));
    let flaky = v["run"].as_i64().unwrap();
    let d = srv.wait_run(flaky, 60);
    assert_eq!(d["run"]["state"], "failed");
    let (s, v) = srv.post(&format!("/api/runs/{flaky}/retry"), json!({}));
    assert_eq!((s, v["run"].as_i64()), (202, Some(flaky)), "{v}");
    let d = srv.wait_run(flaky, 60);
    assert_eq!(
        d["run"]["state"], "failed",
        "fail=yes is the run's param, so it fails again"
    );
    let (s, _) = srv.post(&format!("/api/runs/{id}/retry"), json!({}));
    assert_eq!(s, 409, "a succeeded run has nothing to retry");

    // Compare, models, schedules.
    let (_, v) = srv.post(
        "/api/pipelines/quick/runs",
        json!({ "params": { "greeting": "hi" } }),
    );
    let id2 = v["run"].as_i64().unwrap();
    srv.wait_run(id2, 60);
    let (s, v) = srv.get(&format!("/api/compare?runs={id},{id2}"));
    conforms(&doc, "GET", "/api/compare", s, &v);
    let greeting = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "greeting")
        .unwrap();
    assert_eq!(greeting["values"], json!(["bonjour", "hi"]));
    assert_eq!(greeting["differs"], true);
    let (s, v) = srv.get("/api/models");
    conforms(&doc, "GET", "/api/models", s, &v);
    let (s, v) = srv.get("/api/schedules");
    conforms(&doc, "GET", "/api/schedules", s, &v);

    // Bad requests get JSON errors: bad params, unknown things, big bodies.
    let (s, v) = srv.post(
        "/api/pipelines/quick/runs",
        json!({ "params": { "nope": 1 } }),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    let (s, v) = srv.post("/api/pipelines/missing/runs", json!({}));
    assert_eq!(s, 404, "{v}");
    let (s, v) = srv.get("/api/runs/999");
    assert_eq!(s, 404, "{v}");
    let (s, v) = srv.get("/api/runs/abc");
    assert_eq!(s, 400, "{v}");
    let big = json!({ "params": { "greeting": "x".repeat(100_000) } });
    let (s, v) = srv.post("/api/pipelines/quick/runs", big);
    assert_eq!(s, 413);
    assert!(v["error"].is_string(), "413 is JSON too: {v}");
    // Issue 21, bug 9: every error is JSON, the framework's own included,
    // and a body that is not an object starts nothing.
    let auth = format!("Bearer {TOKEN}");
    for (method, path, want) in [
        ("GET", "/api/runs/1/steps/x/logs?after=abc", 400),
        ("GET", "/api/runs?limit=-5", 400),
        ("POST", "/api/runs", 405),
    ] {
        let (s, hs, body) = srv.raw(method, path, &[("Authorization", auth.as_str())]);
        assert_eq!(s, want, "{method} {path}");
        let ct = hs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(ct.starts_with("application/json"), "{method} {path}: {ct}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (s, v) = srv.post("/api/pipelines/quick/runs", json!([null, null]));
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("JSON object"), "{v}");
    // Issue 19, item 6: a body declared over the cap is refused at once,
    // without waiting for (or reading) it.
    {
        use std::io::{Read as _, Write as _};
        let addr = srv.base.trim_start_matches("http://").to_string();
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            c,
            "POST /api/pipelines/quick/runs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{{"
        )
        .unwrap();
        let started = Instant::now();
        let mut got = [0u8; 256];
        let n = c.read(&mut got).expect("an answer before the body");
        let head = String::from_utf8_lossy(&got[..n]);
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    // The dashboard: served with a strict CSP; ?token= sets a cookie.
    let (s, hs, body) = srv.raw("GET", &format!("/?token={TOKEN}"), &[]);
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&body).contains("<script src=\"/app.js\">"));
    let csp = hs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-security-policy"))
        .unwrap();
    assert!(csp.1.contains("script-src 'self'"));
    let cookie = hs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .unwrap();
    assert!(cookie.1.contains("HttpOnly") && cookie.1.contains("SameSite=Strict"));
    let (s, _, _) = srv.raw(
        "GET",
        "/app.js",
        &[("Cookie", &format!("weir_token={TOKEN}"))],
    );
    assert_eq!(s, 200);

    // Graceful shutdown with an active run: it is cancelled and recorded.
    let (_, v) = srv.post("/api/pipelines/slow/runs", json!({}));
    let last = v["run"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status = srv.stop();
    assert!(status.success(), "{}", srv.output.lock().unwrap());
    let out = weir()
        .args(["show", &last.to_string(), "--json", "--store"])
        .arg(tmp.path().join("store"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "cancelled", "{v}");
    let verify = weir()
        .args(["store", "verify", "--store"])
        .arg(tmp.path().join("store"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// Runs of the scheduled pipeline: (slot param, started_ms), oldest first.
fn scheduled_runs(store: &Path, pipeline: &str) -> Vec<(String, i64)> {
    let out = weir()
        .args(["runs", "--limit", "1000", "--json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut v = Vec::new();
    for r in runs.as_array().into_iter().flatten() {
        if r["pipeline"] != pipeline {
            continue;
        }
        let id = r["run"].as_i64().unwrap();
        let out = weir()
            .args(["metrics", &id.to_string(), "--json", "--store"])
            .arg(store)
            .output()
            .unwrap();
        let m: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.push((
            m["params"]["slot"].as_str().unwrap_or("").to_string(),
            r["started_ms"].as_i64().unwrap(),
        ));
    }
    v.sort();
    v
}

/// Sleeps until the wall clock is just past a multiple of `period` seconds
/// (a slot boundary), so that a server started now sees no slot come due
/// during its start.
fn align(period: i64) {
    loop {
        let ms = chrono::Utc::now().timestamp_millis() % (period * 1000);
        if (200..500).contains(&ms) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_scheduler_fires_on_time_catches_up_after_a_restart_and_never_runs_a_slot_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let echo = fixture("echo").display().to_string();
    for (name, opts) in [
        ("every_all", r#"#{ catchup: "all", catchup_limit: 2 }"#),
        ("every_latest", r#"#{ timezone: "Europe/Paris" }"#),
    ] {
        std::fs::write(
            proj.join(format!("{name}.rhai")),
            format!(
                r#"let slot = param("slot", "");
let p = pipeline("{name}");
p.schedule("*/4 * * * * *", {opts});
p.step("tick", {echo:?}).output("out").params(#{{ note: slot }});
"#
            ),
        )
        .unwrap();
    }
    let store = tmp.path().join("store");

    // On time: slots every 4 s start within a second of their time (the
    // first may also compile the step's component).
    align(4);
    let mut srv = Served::start(&proj, &store);
    std::thread::sleep(Duration::from_secs(9));
    let (_, sched) = srv.get("/api/schedules");
    assert_eq!(sched["schedules"].as_array().unwrap().len(), 2, "{sched}");
    assert_eq!(sched["schedules"][1]["timezone"], "Europe/Paris");
    assert_eq!(sched["schedules"][0]["next"].as_array().unwrap().len(), 3);
    assert!(srv.stop().success());
    let first = scheduled_runs(&store, "every_all");
    assert!(
        first.len() >= 2,
        "{first:?}\n{}",
        srv.output.lock().unwrap()
    );
    for (i, (slot, started)) in first.iter().enumerate() {
        let slot_ms = chrono::DateTime::parse_from_rfc3339(slot)
            .unwrap()
            .timestamp_millis();
        let late = started - slot_ms;
        let bound = if i == 0 { 5000 } else { 1000 };
        assert!(
            (0..bound).contains(&late),
            "slot {slot} started {late} ms after its time"
        );
    }

    // Down for three or four slots, then up again just after a slot
    // boundary: `all` runs the newest two missed slots (catchup_limit 2) and
    // skips the rest, `latest` runs only the newest one.
    std::thread::sleep(Duration::from_secs(12));
    align(4);
    let up = chrono::Utc::now().timestamp_millis();
    let mut srv = Served::start(&proj, &store);
    std::thread::sleep(Duration::from_millis(2500));
    let (_, sched) = srv.get("/api/schedules");
    assert!(srv.stop().success());
    let all = scheduled_runs(&store, "every_all");
    let latest = scheduled_runs(&store, "every_latest");
    let after = |runs: &[(String, i64)]| -> Vec<String> {
        runs.iter()
            .filter(|(_, started)| *started >= up)
            .map(|(s, _)| s.clone())
            .collect()
    };
    let (caught_all, caught_latest) = (after(&all), after(&latest));
    assert_eq!(caught_all.len(), 2, "catch-up all, limit 2: {all:?}");
    assert_eq!(caught_latest.len(), 1, "catch-up latest: {latest:?}");
    // They are the newest missed slots: the last one is the boundary just before `up`.
    let newest = chrono::DateTime::from_timestamp_millis(up - up % 4000).unwrap();
    let newest = newest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(caught_all.last(), Some(&newest));
    assert_eq!(caught_latest.last(), Some(&newest));
    // The passed-over slots are recorded as skipped, with why.
    let recent = sched["schedules"][0]["recent"].as_array().unwrap();
    assert!(
        recent.iter().any(|r| r["state"] == "skipped"
            && r["reason"] == "missed while the server was down or busy"),
        "{sched}"
    );

    // No slot ran twice, in either pipeline, across the restart.
    for runs in [&all, &latest] {
        let mut slots: Vec<&String> = runs.iter().map(|(s, _)| s).collect();
        let n = slots.len();
        slots.dedup();
        assert_eq!(slots.len(), n, "a slot ran twice: {runs:?}");
    }

    // `weir schedules` shows the next fire times and the recent slots.
    let out = weir()
        .arg("schedules")
        .arg(&proj)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("every_all  */4 * * * * *  (UTC, catch-up All up to 2"),
        "{text}"
    );
    assert!(
        text.contains("every_latest  */4 * * * * *  (Europe/Paris"),
        "{text}"
    );
    assert_eq!(text.matches("  next  ").count(), 6, "{text}");
    assert!(text.contains("  past  "), "{text}");

    // `weir backfill` runs the slots that were passed over and none that ran.
    let (from, to) = (all[0].0.clone(), newest.clone());
    let backfill = || {
        weir()
            .args([
                "backfill",
                "every_all",
                "--from",
                &from,
                "--to",
                &to,
                "--project",
            ])
            .arg(&proj)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap()
    };
    let out = backfill();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("already ran or was passed over; skipped"),
        "{text}"
    );
    let all = scheduled_runs(&store, "every_all");
    let span = chrono::DateTime::parse_from_rfc3339(&to)
        .unwrap()
        .timestamp()
        - chrono::DateTime::parse_from_rfc3339(&from)
            .unwrap()
            .timestamp();
    let slots: std::collections::BTreeSet<&String> = all.iter().map(|(s, _)| s).collect();
    assert_eq!(slots.len(), all.len(), "a slot ran twice: {all:?}");
    assert_eq!(
        all.len() as i64,
        span / 4 + 1,
        "every slot from {from} to {to} ran once: {all:?}"
    );
    // A second backfill of the same range runs nothing.
    assert!(backfill().status.success());
    assert_eq!(scheduled_runs(&store, "every_all").len(), all.len());
}

/// A one-shot HTTP server that records the body of each POST it gets.
fn webhook_sink() -> (u16, std::sync::mpsc::Receiver<Value>) {
    use std::io::{BufRead as _, Read as _, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = std::io::BufReader::new(c.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = c.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
        }
    });
    (port, rx)
}

/// Issue 19, item 5: a downloaded script registered a command hook that
/// `weir serve` then ran as the server's user. Commands are now declared in
/// the project's weir.toml and named by scripts; an inline command, or a
/// name the file does not declare, makes the pipeline an error that says
/// which lines to add, and nothing runs.
#[test]
fn a_script_cannot_make_the_server_run_a_command_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let echo = fixture("echo").display().to_string();
    let pwned = tmp.path().join("pwned");
    std::fs::write(
        proj.join("inline.rhai"),
        format!(
            "let p = pipeline(\"inline\");\np.on_success(#{{ command: [\"touch\", {:?}] }});\np.step(\"only\", {echo:?}).output(\"out\");\n",
            pwned.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        proj.join("named.rhai"),
        format!(
            "let p = pipeline(\"named\");\np.on_success(#{{ command: \"deploy\" }});\np.step(\"only\", {echo:?}).output(\"out\");\n"
        ),
    )
    .unwrap();
    let srv = Served::start(&proj, &tmp.path().join("store"));
    let (s, v) = srv.get("/api/pipelines");
    assert_eq!(s, 200);
    let error = |name: &str| {
        v["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["error"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let inline = error("inline");
    assert!(
        inline.contains("command hooks written in a pipeline script are refused")
            && inline.contains("[hooks.NAME]"),
        "{v}"
    );
    let named = error("named");
    assert!(
        named.contains("the hook 'deploy' is not declared") && named.contains("[hooks.deploy]"),
        "{v}"
    );
    let (s, v) = srv.post("/api/pipelines/inline/runs", json!({}));
    assert!(s >= 400, "{s} {v}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!pwned.exists(), "the script's command ran");
}

#[test]
fn failure_and_success_hooks_are_called_and_a_broken_one_is_only_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let (port, bodies) = webhook_sink();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let echo = fixture("echo").display().to_string();
    let note = tmp.path().join("success.json");
    std::fs::write(
        proj.join("hooked.rhai"),
        format!(
            r#"let fail = param("fail", "");
let p = pipeline("hooked");
p.on_failure(#{{ webhook: "http://127.0.0.1:{dead}/gone" }});
p.on_failure(#{{ webhook: "http://127.0.0.1:{port}/hook" }});
p.on_success(#{{ command: "note" }});
let params = if fail == "" {{ #{{}} }} else {{ #{{ fail: fail }} }};
p.step("only", {echo:?}).output("out").params(params);
"#
        ),
    )
    .unwrap();
    // The command is the project's to declare, the script's to name.
    std::fs::write(
        proj.join("weir.toml"),
        format!(
            "[hooks.note]\ncommand = [\"sh\", \"-c\", \"cat > {}\"]\n",
            note.display()
        ),
    )
    .unwrap();
    let mut srv = Served::start(&proj, &tmp.path().join("store"));

    // A failing run: the broken hook is tried and logged, the next one is called.
    let (s, v) = srv.post(
        "/api/pipelines/hooked/runs",
        json!({ "params": { "fail": "boom" } }),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["run"].as_i64().unwrap();
    let body = bodies
        .recv_timeout(Duration::from_secs(60))
        .expect("the webhook was called");
    assert_eq!(body["event"], "run_failed");
    assert_eq!(body["pipeline"], "hooked");
    assert_eq!(body["run"], id);
    assert_eq!(body["failing_step"], "only");
    assert!(body["error"].as_str().unwrap().contains("boom"), "{body}");
    assert_eq!(body["link"], format!("{}/#/runs/{id}", srv.base));

    // A succeeding run: the command gets the same JSON on stdin.
    let (_, v) = srv.post("/api/pipelines/hooked/runs", json!({}));
    let ok = v["run"].as_i64().unwrap();
    let t = Instant::now();
    while !note.exists() || std::fs::read_to_string(&note).unwrap().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the command hook did not run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&note).unwrap()).unwrap();
    assert_eq!(
        (v["event"].as_str(), v["run"].as_i64()),
        (Some("run_succeeded"), Some(ok))
    );

    // The server is fine and says what broke.
    let (s, _) = srv.get("/api/runs");
    assert_eq!(s, 200);
    assert!(srv.stop().success());
    let log = srv.output.lock().unwrap().clone();
    assert!(
        log.contains("hook failed") && log.contains(&format!("127.0.0.1:{dead}")),
        "{log}"
    );

    // Bad hooks are script errors naming the line.
    std::fs::write(
        proj.join("hooked.rhai"),
        "let p = pipeline(\"x\");\np.on_failure(#{ webhook: \"https://example.com\" });\n",
    )
    .unwrap();
    let out = weir()
        .arg("check")
        .arg(proj.join("hooked.rhai"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hooked.rhai:2") && err.contains("webhook must be an http:// URL"),
        "{err}"
    );
}

/// How many times the `weir-epoch` thread of process `pid` has gone to sleep
/// and woken (its voluntary context switches). The process must have exactly
/// one such thread (one engine: no step here has a fuel budget).
fn epoch_wakeups(pid: u32) -> u64 {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        // Other threads come and go: one gone since the listing is skipped.
        let Ok(task) = task else { continue };
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim() != "weir-epoch" {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        found.push(
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap(),
        );
    }
    assert_eq!(found.len(), 1, "weir-epoch threads: {found:?}");
    found[0]
}

#[test]
fn an_idle_server_leaves_the_epoch_asleep_and_a_spinning_step_still_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let spin = fixture("spin").display().to_string();
    std::fs::write(
        proj.join("spin.rhai"),
        format!("let p = pipeline(\"spin\");\np.step(\"forever\", {spin:?}).output(\"out\").timeout(\"300ms\");\n"),
    )
    .unwrap();
    let mut srv = Served::start(&proj, &tmp.path().join("store"));
    let pid = srv.child.id();
    let idle = |what: &str| {
        std::thread::sleep(Duration::from_millis(200));
        let before = epoch_wakeups(pid);
        std::thread::sleep(Duration::from_secs(1));
        let woke = epoch_wakeups(pid) - before;
        // Ticking, it would wake every millisecond (every few on a coarse
        // kernel timer): hundreds of times a second.
        assert!(
            woke <= 5,
            "{what}: the idle epoch thread woke {woke} times in 1 s"
        );
    };
    idle("before any run");

    // A guest that never returns is still stopped at its timeout: the epoch
    // ticks while it runs.
    let (s, v) = srv.post("/api/pipelines/spin/runs", json!({}));
    assert!(s == 200 || s == 201 || s == 202, "{s} {v}");
    let id = v["run"].as_i64().unwrap();
    let detail = srv.wait_run(id, 60);
    assert_eq!(detail["steps"][0]["state"], "failed", "{detail}");
    let error = detail["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("exceeded its timeout of 300ms"), "{detail}");

    idle("after the run");
    srv.stop();
}

/// Issue 21, bugs 1 and 2, with real concurrent HTTP clients on loopback:
/// with 8 long runs active, concurrent triggers failed with "maximum
/// concurrent limit of 8 for component instances reached"; and 10
/// simultaneous triggers of a `max_active_runs(1)` pipeline admitted three.
/// Now steps wait for the server's step slots, and admission is decided and
/// counted in one step.
#[test]
fn concurrent_triggers_all_run_and_admission_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let sleep = fixture("sleep").display().to_string();
    std::fs::write(
        proj.join("wide.rhai"),
        format!(
            "let n = param(\"n\", 0);\nlet p = pipeline(\"wide\");\np.max_active_runs(50);\nfor i in 0..4 {{ p.step(`s${{i}}`, {sleep:?}).output(\"out\").params(#{{ ms: 100, n: n }}); }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        proj.join("single.rhai"),
        format!(
            "let n = param(\"n\", 0);\nlet p = pipeline(\"single\");\np.max_active_runs(1);\np.step(\"s\", {sleep:?}).output(\"out\").params(#{{ ms: 2000, n: n }});\n"
        ),
    )
    .unwrap();
    let srv = Served::start(&proj, &tmp.path().join("store"));
    let burst = |pipeline: &str, n: usize| -> Vec<(u16, Value)> {
        let barrier = std::sync::Barrier::new(n);
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let (srv, barrier) = (&srv, &barrier);
                    sc.spawn(move || {
                        barrier.wait();
                        srv.post(
                            &format!("/api/pipelines/{pipeline}/runs"),
                            json!({ "params": { "n": i } }),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let wide = burst("wide", 20);
    for (s, v) in &wide {
        assert_eq!(*s, 201, "{v}");
    }
    for (_, v) in &wide {
        let detail = srv.wait_run(v["run"].as_i64().unwrap(), 120);
        assert_eq!(detail["run"]["state"], "succeeded", "{detail}");
    }
    let single = burst("single", 10);
    let admitted = single.iter().filter(|(s, _)| *s == 201).count();
    let refused = single.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!((admitted, refused), (1, 9), "{single:?}");
}

/// The server process's peak resident set size, in bytes.
fn peak_rss(srv: &Served) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", srv.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Issue 21, bug 5: one run logging 3,000 lines of 60 KB took the server
/// from 124 to 525 MB, and fetching that log returned 206 MB in one
/// response. Now an attempt keeps at most 16 MiB of log text, the live
/// buffer is bounded in bytes, and the logs route pages (`limit`, `after`).
#[test]
fn a_log_flood_is_bounded_in_memory_and_the_logs_route_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let hostile = fixture("hostile").display().to_string();
    std::fs::write(
        proj.join("flood.rhai"),
        format!(
            "let n = param(\"n\", 3000);\nlet p = pipeline(\"flood\");\np.step(\"f\", {hostile:?}).output(\"out\").params(#{{ mode: \"logflood\", lines: n, kb: 60 }});\n"
        ),
    )
    .unwrap();
    let srv = Served::start(&proj, &tmp.path().join("store"));
    // A small run first: the server's own peak with a run behind it.
    let (s, v) = srv.post(
        "/api/pipelines/flood/runs",
        json!({ "params": { "n": 10 } }),
    );
    assert_eq!(s, 201, "{v}");
    srv.wait_run(v["run"].as_i64().unwrap(), 120);
    let before = peak_rss(&srv);
    let (s, v) = srv.post("/api/pipelines/flood/runs", json!({}));
    assert_eq!(s, 201, "{v}");
    let id = v["run"].as_i64().unwrap();
    srv.wait_run(id, 300);
    let grew = peak_rss(&srv).saturating_sub(before);
    eprintln!("server peak RSS grew {} MiB under the flood", grew >> 20);
    assert!(grew < 96 << 20, "the server grew {} MiB", grew >> 20);
    // Paged: each page at most ~1 MiB; all pages hold every kept line.
    let (mut after, mut pages, mut lines, mut biggest) = (0u64, 0, 0usize, 0usize);
    loop {
        let (s, hs, body) = srv.raw(
            "GET",
            &format!("/api/runs/{id}/steps/f/logs?after={after}&limit=1000"),
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        );
        assert_eq!(s, 200, "{hs:?}");
        biggest = biggest.max(body.len());
        let page: Value = serde_json::from_slice(&body).unwrap();
        lines += page["lines"].as_array().unwrap().len();
        after = page["next"].as_u64().unwrap();
        pages += 1;
        if page["more"] != true {
            break;
        }
        assert!(pages < 1000);
    }
    assert!(
        biggest < (1 << 20) + (128 << 10),
        "a page of {biggest} bytes"
    );
    // 16 MiB of 60 KiB lines kept (about 270), and the note of what was dropped.
    assert!(
        (250..=300).contains(&lines),
        "{lines} lines in {pages} pages"
    );
}

/// Issue 21, bug 4: cancelling a run discarded its running step's logs
/// (lines seen live were gone; the step showed 0 attempts, 0 ms). The step
/// is now recorded `cancelled` with its attempt, its duration and the lines
/// it logged.
#[test]
fn cancel_keeps_the_running_steps_logs_attempt_and_duration() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    project(&proj);
    let srv = Served::start(&proj, &tmp.path().join("store"));
    let (s, v) = srv.post(
        "/api/pipelines/ticker/runs",
        json!({ "params": { "n": 77 } }),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["run"].as_i64().unwrap();
    let t = Instant::now();
    loop {
        let (_, v) = srv.get(&format!("/api/runs/{id}/steps/ticks/logs"));
        if v["lines"].as_array().is_some_and(|l| l.len() >= 2) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no ticks: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (s, v) = srv.post(&format!("/api/runs/{id}/cancel"), json!({}));
    assert_eq!(s, 202, "{v}");
    let d = srv.wait_run(id, 30);
    let step = &d["steps"][0];
    assert_eq!(step["state"], "cancelled", "{d}");
    assert_eq!(step["attempts"], 1, "{d}");
    let took = step["ended_ms"].as_i64().unwrap() - step["started_ms"].as_i64().unwrap();
    assert!(
        took >= 400,
        "the step ran {took} ms before it was cancelled: {d}"
    );
    let (_, logs) = srv.get(&format!("/api/runs/{id}/steps/ticks/logs"));
    assert_eq!(logs["live"], false);
    let text = logs.to_string();
    assert!(text.contains("tick 0") && text.contains("tick 1"), "{logs}");
}

/// Issue 21, bug 3: after kill -9 of the server, its active run stayed
/// `running` forever (its duration grew, Cancel answered 409). On start the
/// server now marks such runs `interrupted`; one is retried to success,
/// another cancelled.
#[test]
fn runs_left_by_a_killed_server_are_interrupted_then_retried_or_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    project(&proj);
    let store = tmp.path().join("store");
    let mut srv = Served::start(&proj, &store);
    let started = |srv: &Served, pipeline: &str| {
        let (s, v) = srv.post(&format!("/api/pipelines/{pipeline}/runs"), json!({}));
        assert_eq!(s, 201, "{v}");
        let id = v["run"].as_i64().unwrap();
        let t = Instant::now();
        loop {
            let (_, v) = srv.get(&format!("/api/runs/{id}"));
            if v["live"]
                .as_object()
                .is_some_and(|l| l.values().any(|s| s == "running"))
            {
                return id;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let ticker = started(&srv, "ticker");
    let slow = started(&srv, "slow");
    srv.child.kill().unwrap(); // SIGKILL: nothing is recorded on the way out
    srv.child.wait().unwrap();
    let srv = Served::start(&proj, &store);
    for id in [ticker, slow] {
        let (_, v) = srv.get(&format!("/api/runs/{id}"));
        assert_eq!(v["run"]["state"], "interrupted", "{v}");
        assert_eq!(v["run"]["active"], false, "{v}");
        assert!(
            v["run"]["error"].as_str().unwrap().contains("retry it"),
            "{v}"
        );
    }
    let (s, v) = srv.post(&format!("/api/runs/{ticker}/retry"), json!({}));
    assert!(s == 201 || s == 202, "{s} {v}");
    let d = srv.wait_run(ticker, 60);
    assert_eq!(d["run"]["state"], "succeeded", "{d}");
    let (s, v) = srv.post(&format!("/api/runs/{slow}/cancel"), json!({}));
    assert_eq!(s, 200, "{v}");
    let (_, v) = srv.get(&format!("/api/runs/{slow}"));
    assert_eq!(v["run"]["state"], "cancelled", "{v}");
}

/// Issue 21, bug 7 and "at scale": the DAG lacked the edge into a map step
/// (`split -> summarize`), and `GET /api/runs/{id}` was quadratic in a
/// chain's length (4.3-4.7 s for 10,000 steps) and returned every map child
/// (5.1 MB for a 10,000-child fan-out). Now map and gate edges are drawn,
/// a map node carries its children's count by state and its first 100, the
/// rest come paged from the step's `children` route, and the route is
/// linear.
#[test]
fn the_run_route_stays_small_and_fast_for_10000_children_and_a_10000_step_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let echo = fixture("echo").display().to_string();
    let noop = fixture("noop").display().to_string();
    let items: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    std::fs::write(
        proj.join("fan.rhai"),
        format!(
            "let p = pipeline(\"fan\");\nlet list = p.step(\"list\", {echo:?}).output(\"out\").params(#{{ metrics: #{{ rows: 1 }}, files: #{{ \"items.json\": \"[{}]\" }} }});\nlet each = p.map_json(\"each\", {noop:?}, list.out(\"out\"), \"items.json\").output(\"out\");\np.step(\"after\", {noop:?}).input(\"all\", each.out(\"out\")).output(\"out\").when(list.metric(\"rows\") >= 0);\n",
            items.join(",")
        ),
    )
    .unwrap();
    std::fs::write(
        proj.join("chain.rhai"),
        format!(
            "let p = pipeline(\"chain\");\nlet prev = p.step(\"s0\", {noop:?}).output(\"out\");\nfor i in 1..10000 {{ prev = p.step(`s${{i}}`, {noop:?}).input(\"a\", prev.out(\"out\")).output(\"out\"); }}\n"
        ),
    )
    .unwrap();
    let srv = Served::start(&proj, &tmp.path().join("store"));
    let detail = |pipeline: &str| -> (Value, usize, Duration) {
        let (s, v) = srv.post(&format!("/api/pipelines/{pipeline}/runs"), json!({}));
        assert_eq!(s, 201, "{v}");
        let id = v["run"].as_i64().unwrap();
        srv.wait_run(id, 600);
        let t = Instant::now();
        let (s, _, body) = srv.raw(
            "GET",
            &format!("/api/runs/{id}"),
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        );
        let took = t.elapsed();
        assert_eq!(s, 200);
        (serde_json::from_slice(&body).unwrap(), body.len(), took)
    };
    let (fan, fan_bytes, fan_took) = detail("fan");
    let (chain, chain_bytes, chain_took) = detail("chain");
    eprintln!(
        "run route: fan-out of 10,000 children {fan_bytes} bytes in {fan_took:?}; chain of 10,000 steps {chain_bytes} bytes in {chain_took:?}"
    );
    assert_eq!(fan["run"]["state"], "succeeded", "{}", fan["run"]);
    let node = |d: &Value, name: &str| {
        d["graph"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap()
    };
    let each = node(&fan, "each");
    assert_eq!(each["children_total"], 10_000);
    assert_eq!(each["children_by_state"]["succeeded"], 10_000, "{each}");
    assert_eq!(each["children"].as_array().unwrap().len(), 100);
    let edges = fan["graph"]["edges"].as_array().unwrap();
    assert!(
        edges
            .iter()
            .any(|e| e["from"] == "list" && e["to"] == "each" && e["kind"] == "map"),
        "the edge into the map step: {edges:?}"
    );
    assert!(
        edges
            .iter()
            .any(|e| e["from"] == "list" && e["to"] == "after" && e["kind"] == "gate"),
        "the edge a gate reads: {edges:?}"
    );
    assert!(fan_bytes < 100_000, "{fan_bytes} bytes");
    assert!(fan_took < Duration::from_secs(2), "{fan_took:?}");
    // Every child, paged.
    let id = fan["run"]["run"].as_i64().unwrap();
    let (mut after, mut seen) = (0u64, 0usize);
    loop {
        let (s, page) = srv.get(&format!("/api/runs/{id}/steps/each/children?after={after}"));
        assert_eq!(s, 200, "{page}");
        seen += page["children"].as_array().unwrap().len();
        after = page["next"].as_u64().unwrap();
        if page["more"] != true {
            break;
        }
    }
    assert_eq!(seen, 10_000);
    assert_eq!(chain["graph"]["nodes"].as_array().unwrap().len(), 10_000);
    // Its records come a page at a time.
    assert_eq!(chain["steps"].as_array().unwrap().len(), 1000);
    assert_eq!(
        (chain["steps_total"].as_u64(), chain["steps_next"].as_u64()),
        (Some(10_000), Some(1000))
    );
    let id = chain["run"]["run"].as_i64().unwrap();
    let (_, last) = srv.get(&format!("/api/runs/{id}?steps_after=9500&steps_limit=1000"));
    assert_eq!(last["steps"].as_array().unwrap().len(), 500);
    assert!(last["steps_next"].is_null(), "{}", last["steps_next"]);
    assert!(chain_took < Duration::from_secs(3), "{chain_took:?}");
    assert!(chain_bytes < 16 << 20, "{chain_bytes} bytes");
}

/// Issue 21, bug 8: serving a folder of projects ignored each project's
/// weir.toml (churn failed on its gpu grant when served from examples/),
/// and the trust file was read only at start-up. Each pipeline now runs
/// under its nearest project's trust file, read afresh for every run.
#[test]
fn each_served_project_runs_under_its_own_trust_file_reread_when_it_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("projects");
    let trainer = fixture("trainer");
    let digest = weir_runtime::Digest::of(&std::fs::read(&trainer).unwrap()).to_hex();
    for name in ["alpha", "beta"] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("p.rhai"),
            format!(
                "let p = pipeline(\"{name}\");\np.step(\"t\", {:?}).output(\"out\").params(#{{ mode: \"bigtensor\", cells: 4, times: 1 }}).requires(\"gpu\");\n",
                trainer.display().to_string()
            ),
        )
        .unwrap();
    }
    let grant = format!("[[trust]]\ndigest = \"{digest}\"\ncapabilities = [\"gpu\"]\n");
    std::fs::write(root.join("alpha/weir.toml"), &grant).unwrap();
    let srv = Served::start(&root, &tmp.path().join("store"));
    let (s, v) = srv.post("/api/pipelines/alpha/runs", json!({}));
    assert_eq!(s, 201, "alpha's own weir.toml grants the gpu: {v}");
    let d = srv.wait_run(v["run"].as_i64().unwrap(), 120);
    assert_eq!(d["run"]["state"], "succeeded", "{d}");
    let (s, v) = srv.post("/api/pipelines/beta/runs", json!({}));
    assert_eq!(s, 201, "{v}");
    let d = srv.wait_run(v["run"].as_i64().unwrap(), 120);
    assert_eq!(d["run"]["state"], "failed", "beta has no grant: {d}");
    assert!(d["run"]["error"].as_str().unwrap().contains("gpu"), "{d}");
    // Granted while the server runs: the next trigger reads it.
    std::fs::write(root.join("beta/weir.toml"), &grant).unwrap();
    let (s, v) = srv.post("/api/pipelines/beta/runs", json!({}));
    assert_eq!(s, 201, "{v}");
    let d = srv.wait_run(v["run"].as_i64().unwrap(), 120);
    assert_eq!(d["run"]["state"], "succeeded", "{d}");
}

/// Issue 21, bug 6: a trigger blocked while the pipeline's step crates
/// built (54 s for churn, with no feedback). It now answers with the run's
/// number at once; the run shows what it is preparing, and a build that
/// fails is the run's recorded error.
#[test]
fn a_trigger_answers_at_once_while_the_run_prepares() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    let krate = proj.join("steps/slow");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"slow\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[lib]\ncrate-type = [\"cdylib\"]\n[workspace]\n",
    )
    .unwrap();
    // Its build takes seconds, then fails.
    std::fs::write(
        krate.join("build.rs"),
        "fn main() { std::thread::sleep(std::time::Duration::from_secs(4)); }\n",
    )
    .unwrap();
    std::fs::write(krate.join("src/lib.rs"), "this is not rust\n").unwrap();
    std::fs::write(
        proj.join("p.rhai"),
        "let p = pipeline(\"slowbuild\");\np.step(\"s\", \"steps/slow\").output(\"out\");\n",
    )
    .unwrap();
    let srv = Served::start(&proj, &tmp.path().join("store"));
    let t = Instant::now();
    let (s, v) = srv.post("/api/pipelines/slowbuild/runs", json!({}));
    let answered = t.elapsed();
    assert_eq!(s, 201, "{v}");
    assert!(
        answered < Duration::from_secs(2),
        "the trigger took {answered:?}"
    );
    let id = v["run"].as_i64().unwrap();
    let (_, d) = srv.get(&format!("/api/runs/{id}"));
    let preparing = d["run"]["preparing"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        preparing.contains("building") || preparing.contains("preparing"),
        "{d}"
    );
    let d = srv.wait_run(id, 300);
    assert_eq!(d["run"]["state"], "failed", "{d}");
    let error = d["run"]["error"].as_str().unwrap();
    assert!(
        error.contains("steps/slow") || error.contains("slow"),
        "{error}"
    );
}

/// Issue 21, the dashboard's schedules: a schedule can be paused (its due
/// slots are recorded skipped, the pause kept across restarts) and resumed.
#[test]
fn a_paused_schedule_skips_its_slots_until_it_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let echo = fixture("echo").display().to_string();
    std::fs::write(
        proj.join("every.rhai"),
        format!(
            "let slot = param(\"slot\", \"\");\nlet p = pipeline(\"every\");\np.schedule(\"* * * * * *\", #{{ catchup: \"skip\" }});\np.max_active_runs(5);\np.step(\"s\", {echo:?}).output(\"out\").params(#{{ note: slot }});\n"
        ),
    )
    .unwrap();
    let store = tmp.path().join("store");
    let srv = Served::start(&proj, &store);
    let (s, v) = srv.post("/api/schedules/every/pause", json!({}));
    assert_eq!((s, v["paused"].clone()), (200, json!(true)), "{v}");
    let runs = |srv: &Served| {
        let (_, v) = srv.get("/api/runs?pipeline=every&limit=1000");
        v["runs"].as_array().unwrap().len()
    };
    let before = runs(&srv);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs(&srv), before, "no slot fired while paused");
    let (_, v) = srv.get("/api/schedules");
    let sc = &v["schedules"][0];
    assert_eq!(sc["paused"], true, "{v}");
    assert!(
        sc["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "skipped" && r["reason"] == "the schedule was paused"),
        "{v}"
    );
    assert!(!sc["next_local"].as_array().unwrap().is_empty(), "{v}");
    let (s, _) = srv.post("/api/schedules/every/resume", json!({}));
    assert_eq!(s, 200);
    let t = Instant::now();
    while runs(&srv) == before {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no slot fired after resuming"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (s, _) = srv.post("/api/schedules/nope/pause", json!({}));
    assert_eq!(s, 404);
    // The runs list says what started each run, and with which params.
    let (_, v) = srv.get("/api/runs?pipeline=every&limit=1");
    let r = &v["runs"][0];
    assert_eq!(r["source"], "schedule", "{v}");
    assert!(
        r["params"]["slot"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    let (s, v) = srv.post(
        "/api/pipelines/every/runs",
        json!({ "params": { "slot": "by hand" } }),
    );
    assert_eq!(s, 201, "{v}");
    let (_, v) = srv.get("/api/runs?pipeline=every&limit=50");
    let mine = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["params"]["slot"] == "by hand")
        .cloned()
        .unwrap_or_default();
    assert_eq!(mine["source"], "manual", "{v}");
    // Filtered by what started them.
    let (_, v) = srv.get("/api/runs?pipeline=every&source=manual&limit=1000");
    let manual = v["runs"].as_array().unwrap();
    assert_eq!(manual.len(), 1, "{v}");
    let (_, v) = srv.get("/api/runs?pipeline=every&source=schedule&limit=1000");
    assert!(
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["source"] == "schedule"),
        "{v}"
    );
    let (s, _) = srv.get("/api/runs?source=nope");
    assert_eq!(s, 400);
}

/// Issue 21, metrics over time: a pipeline's metric across its runs (the
/// F1 of every nightly run), each run's state, whether its gate skipped a
/// step, and the gate's threshold to draw.
#[test]
fn a_pipelines_metrics_come_as_series_with_their_gate_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let echo = fixture("echo").display().to_string();
    std::fs::write(
        proj.join("scored.rhai"),
        format!(
            "let f1 = param(\"f1\", 0.9);\nlet p = pipeline(\"scored\");\np.max_active_runs(10);\nlet e = p.step(\"evaluate\", {echo:?}).output(\"out\").params(#{{ metrics: #{{ f1: f1 }} }});\np.step(\"register\", {echo:?}).input(\"m\", e.out(\"out\")).output(\"out\").when(e.metric(\"f1\") >= 0.8);\n"
        ),
    )
    .unwrap();
    let srv = Served::start(&proj, &tmp.path().join("store"));
    for f1 in [0.91, 0.75, 0.86] {
        let (s, v) = srv.post(
            "/api/pipelines/scored/runs",
            json!({ "params": { "f1": f1 } }),
        );
        assert_eq!(s, 201, "{v}");
        srv.wait_run(v["run"].as_i64().unwrap(), 60);
    }
    let (s, v) = srv.get("/api/pipelines/scored/metrics");
    assert_eq!(s, 200, "{v}");
    let values: Vec<f64> = v["series"]["evaluate.f1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [0.91, 0.75, 0.86], "oldest first: {v}");
    let gated: Vec<bool> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["gated"].as_bool().unwrap())
        .collect();
    assert_eq!(gated, [false, true, false], "{v}");
    assert_eq!(v["thresholds"][0]["metric"], "evaluate.f1", "{v}");
    assert_eq!(v["thresholds"][0]["value"], 0.8);
    assert_eq!(v["thresholds"][0]["gates"], "register");
    let (s, _) = srv.get("/api/pipelines/nope/metrics");
    assert_eq!(s, 404);
}

/// Issue 21, schedules: past slots are backfilled from the API (and the
/// page), oldest first, one run after another, each noted as a backfill;
/// a slot that already ran is left alone.
#[test]
fn past_slots_are_backfilled_from_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let echo = fixture("echo").display().to_string();
    std::fs::write(
        proj.join("hourly.rhai"),
        format!(
            "let slot = param(\"slot\", \"\");\nlet p = pipeline(\"hourly\");\np.schedule(\"0 * * * *\", #{{ catchup: \"skip\" }});\np.step(\"s\", {echo:?}).output(\"out\").params(#{{ note: slot }});\n"
        ),
    )
    .unwrap();
    let srv = Served::start(&proj, &tmp.path().join("store"));
    let body = json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:30:00Z" });
    let (s, v) = srv.post("/api/schedules/hourly/backfill", body.clone());
    assert_eq!(s, 202, "{v}");
    let slots: Vec<&str> = v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(
        slots,
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00Z",
            "2026-01-01T02:00:00Z"
        ]
    );
    let t = Instant::now();
    let runs = loop {
        let (_, v) = srv.get("/api/runs?pipeline=hourly");
        let runs = v["runs"].as_array().unwrap().clone();
        if runs.len() == 3 && runs.iter().all(|r| r["active"] == false) {
            break runs;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        runs.iter()
            .all(|r| r["source"] == "backfill" && r["state"] == "succeeded"),
        "{runs:?}"
    );
    // Again: every slot already ran, nothing more starts.
    let (s, _) = srv.post("/api/schedules/hourly/backfill", body);
    assert_eq!(s, 202);
    std::thread::sleep(Duration::from_secs(1));
    let (_, v) = srv.get("/api/runs?pipeline=hourly");
    assert_eq!(v["runs"].as_array().unwrap().len(), 3);
    let (s, _) = srv.post(
        "/api/schedules/hourly/backfill",
        json!({ "from": "2026-01-01", "to": "2999-01-01" }),
    );
    assert_eq!(s, 400, "the future is not backfilled");
}

/// `GET /metrics` with the token: Prometheus text.
fn scrape(srv: &Served) -> String {
    let (s, hs, body) = srv.raw(
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(s, 200);
    assert!(
        hs.iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type")
                && v.starts_with("text/plain; version=0.0.4")),
        "{hs:?}"
    );
    String::from_utf8(body).unwrap()
}

/// Issue 28, Prometheus: `GET /metrics` (behind the token) counts runs,
/// steps, cache hits and misses and step durations by pipeline, and shows
/// what is active; `promtool check metrics` (Debian's `prometheus`
/// package, installed by `.ci/run`) accepts it, and a real Prometheus
/// scrapes it with the token.
#[test]
fn prometheus_scrapes_the_servers_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    project(&proj);
    let store = tmp.path().join("store");
    let mut srv = Served::start(&proj, &store);
    for _ in 0..2 {
        let (s, v) = srv.post("/api/pipelines/quick/runs", json!({}));
        assert_eq!(s, 201, "{v}");
        srv.wait_run(v["run"].as_i64().unwrap(), 60);
    }
    let (_, v) = srv.post("/api/pipelines/slow/runs", json!({}));
    let slow = v["run"].as_i64().unwrap();
    let t = Instant::now();
    let text = loop {
        let text = scrape(&srv);
        if text.contains("weir_active_steps 1\n") || t.elapsed() > Duration::from_secs(30) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for line in [
        "weir_runs_total{pipeline=\"quick\",state=\"succeeded\"} 2",
        "weir_steps_total{pipeline=\"quick\",state=\"succeeded\"} 2",
        "weir_steps_total{pipeline=\"quick\",state=\"cached\"} 2",
        "weir_cache_lookups_total{pipeline=\"quick\",result=\"hit\"} 2",
        "weir_cache_lookups_total{pipeline=\"quick\",result=\"miss\"} 2",
        "weir_step_duration_seconds_bucket{pipeline=\"quick\",le=\"+Inf\"} 2",
        "weir_step_duration_seconds_count{pipeline=\"quick\"} 2",
        "weir_active_runs 1",
        "weir_active_steps 1",
    ] {
        assert!(text.contains(&format!("{line}\n")), "{line} in:\n{text}");
    }
    let bytes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("weir_store_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(bytes > 0, "{text}");

    // promtool accepts the exposition.
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian: apt-get install prometheus)");
    use std::io::Write as _;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes it, with the token.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = srv.base.trim_start_matches("http://").to_string();
    let conf = tmp.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: weir\n    authorization:\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut prom = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus (Debian: apt-get install prometheus)");
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=weir_runs_total%7Bpipeline%3D%22quick%22%7D"
    );
    let t = Instant::now();
    let found = loop {
        let got: Option<Value> = ureq::get(&query)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(v) = &got
            && v["data"]["result"][0]["value"][1] == "2"
        {
            break v.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "prometheus never scraped weir_runs_total: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(found["data"]["result"][0]["metric"]["job"], "weir");
    let _ = prom.kill();
    let _ = prom.wait();
    srv.post(&format!("/api/runs/{slow}/cancel"), json!({}));
    assert!(srv.stop().success());
}

/// Writes `NAME.rhai` for each (name, body): `let p = pipeline("NAME");`
/// then the body.
fn write_pipelines(proj: &Path, pipelines: &[(&str, String)]) {
    std::fs::create_dir_all(proj).unwrap();
    for (name, body) in pipelines {
        std::fs::write(
            proj.join(format!("{name}.rhai")),
            format!("let p = pipeline(\"{name}\");\n{body}\n"),
        )
        .unwrap();
    }
}

/// Pipeline `name`'s error as the server shows it ("" if none).
fn pipeline_error(srv: &Served, name: &str) -> String {
    let (_, v) = srv.get("/api/pipelines");
    v["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| p["error"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no pipeline {name}: {v}"))
}

/// The runs noted with `source`, newest first, once there are at least
/// `n` (or after 20 s, whatever there are).
fn runs_from(srv: &Served, source: &str, n: usize) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let (_, v) = srv.get(&format!("/api/runs?source={source}"));
        let runs = v["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() >= n || t.elapsed() > Duration::from_secs(20) {
            return runs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `weir check` of a script that must fail: its stderr.
fn check_fails(script: &Path, text: &str) -> String {
    std::fs::write(script, text).unwrap();
    let out = weir().arg("check").arg(script).output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Issue 28, triggers: a pipeline declared `p.after_success("up")` runs
/// when a run of `up` succeeds (and not when one fails), noted `upstream`
/// with the run that started it; a follower naming no pipeline, or
/// pipelines following each other in a circle, are errors the server
/// shows instead of running them.
#[test]
fn a_pipeline_runs_after_the_one_it_follows_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    let echo = format!("{:?}", fixture("echo").display().to_string());
    write_pipelines(
        &proj,
        &[
            ("up", format!("p.step(\"a\", {echo}).output(\"out\");")),
            (
                "down",
                format!(
                    "p.after_success(\"up\");\np.step(\"b\", {echo}).output(\"out\").params(#{{ note: \"down\" }});"
                ),
            ),
            (
                "broken",
                format!(
                    "p.step(\"a\", {echo}).output(\"out\").params(#{{ fail: \"on purpose\" }});"
                ),
            ),
            (
                "after_broken",
                format!("p.after_success(\"broken\");\np.step(\"b\", {echo}).output(\"out\");"),
            ),
            (
                "c1",
                format!("p.after_success(\"c2\");\np.step(\"a\", {echo}).output(\"out\");"),
            ),
            (
                "c2",
                format!("p.after_success(\"c1\");\np.step(\"a\", {echo}).output(\"out\");"),
            ),
            (
                "typo",
                format!("p.after_success(\"nope\");\np.step(\"a\", {echo}).output(\"out\");"),
            ),
        ],
    );
    let store = tmp.path().join("store");
    let mut srv = Served::start(&proj, &store);
    let error = |name: &str| pipeline_error(&srv, name);
    let c1 = error("c1");
    assert!(c1.contains("make a circle: c1 after c2 after c1"), "{c1}");
    assert!(error("c2").contains("circle"));
    let typo = error("typo");
    assert!(typo.contains("'nope', which is not a pipeline"), "{typo}");
    assert_eq!(error("down"), "");

    let (s, v) = srv.post("/api/pipelines/up/runs", json!({}));
    assert_eq!(s, 201, "{v}");
    let up = v["run"].as_i64().unwrap();
    srv.wait_run(up, 60);
    let follower = runs_from(&srv, "upstream", 1)
        .first()
        .cloned()
        .expect("no follower ran");
    assert_eq!(follower["pipeline"], "down", "{follower}");
    assert_eq!(follower["trigger"], format!("up run {up}"), "{follower}");
    let done = srv.wait_run(follower["run"].as_i64().unwrap(), 60);
    assert_eq!(done["run"]["state"], "succeeded", "{done}");

    // A failed run starts no follower.
    let (_, v) = srv.post("/api/pipelines/broken/runs", json!({}));
    let broken = srv.wait_run(v["run"].as_i64().unwrap(), 60);
    assert_eq!(broken["run"]["state"], "failed");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, v) = srv.get("/api/runs?pipeline=after_broken");
    assert_eq!(v["runs"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(runs_from(&srv, "upstream", 0).len(), 1);
    assert!(srv.stop().success());

    // A pipeline cannot follow itself: the script's error says so.
    let text = check_fails(
        &tmp.path().join("own.rhai"),
        &format!(
            "let p = pipeline(\"own\");\np.after_success(\"own\");\np.step(\"a\", {echo}).output(\"out\");\n"
        ),
    );
    assert!(
        text.contains("cannot follow itself") && text.contains("own.rhai:2"),
        "{text}"
    );
}

/// Issue 28, triggers on the registry: `p.after_model("m")` runs when a run
/// registers a new version of `m` (not when a run registers the same bytes
/// again), `p.after_model("m", "production")` when a version is promoted
/// to production; each noted `model` with what happened.
#[test]
fn a_pipeline_runs_after_a_model_is_registered_or_promoted() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    let echo = format!("{:?}", fixture("echo").display().to_string());
    write_pipelines(
        &proj,
        &[
            (
                "train",
                format!(
                    "let v = param(\"v\", 1);\np.step(\"fit\", {echo}).output(\"out\", Model).params(#{{ note: v }}).register(\"m\");"
                ),
            ),
            (
                "score",
                format!("p.after_model(\"m\");\np.step(\"s\", {echo}).output(\"out\");"),
            ),
            (
                "deploy",
                format!(
                    "p.after_model(\"m\", \"production\");\np.step(\"d\", {echo}).output(\"out\");"
                ),
            ),
            (
                "selfloop",
                format!(
                    "p.after_model(\"m2\");\np.step(\"a\", {echo}).output(\"out\", Model).register(\"m2\");"
                ),
            ),
        ],
    );
    let store = tmp.path().join("store");
    let mut srv = Served::start(&proj, &store);
    let selfloop = pipeline_error(&srv, "selfloop");
    assert!(
        selfloop.contains("circle: selfloop after selfloop"),
        "{selfloop}"
    );
    let model_runs = |srv: &Served, n: usize| runs_from(srv, "model", n);
    let (_, v) = srv.post("/api/pipelines/train/runs", json!({}));
    let first = v["run"].as_i64().unwrap();
    srv.wait_run(first, 60);
    let runs = model_runs(&srv, 1);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["pipeline"], "score");
    assert_eq!(
        runs[0]["trigger"],
        format!("m v1 registered by run {first}")
    );
    srv.wait_run(runs[0]["run"].as_i64().unwrap(), 60);

    // The same bytes again: a cache hit registers no new version.
    let (_, v) = srv.post("/api/pipelines/train/runs", json!({}));
    srv.wait_run(v["run"].as_i64().unwrap(), 60);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(model_runs(&srv, 0).len(), 1, "no new version, no follower");

    // A promotion to production starts `deploy`.
    let (s, v) = srv.post(
        "/api/models/m/versions/1/stage",
        json!({ "stage": "production" }),
    );
    assert_eq!(s, 200, "{v}");
    let runs = model_runs(&srv, 2);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["pipeline"], "deploy", "{runs:?}");
    assert_eq!(runs[0]["trigger"], "m v1 promoted to production");
    srv.wait_run(runs[0]["run"].as_i64().unwrap(), 60);
    assert!(srv.stop().success());

    // A stage that is no stage is the script's error, with file and line.
    let text = check_fails(
        &tmp.path().join("bad.rhai"),
        &format!(
            "let p = pipeline(\"bad\");\np.after_model(\"m\", \"prod\");\np.step(\"a\", {echo}).output(\"out\");\n"
        ),
    );
    assert!(
        text.contains("the stage must be") && text.contains("bad.rhai:2"),
        "{text}"
    );
}

/// Issue 28, watched folders: `p.after_change("incoming")` runs when the
/// folder's contents change, by content (the same bytes written again
/// start nothing), noted `watch`; a change made while the server was down
/// starts a run when it is back; a folder outside the project is refused.
#[test]
fn a_pipeline_runs_when_a_folder_it_watches_changes_by_content() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    let echo = format!("{:?}", fixture("echo").display().to_string());
    write_pipelines(
        &proj,
        &[
            (
                "ingest",
                format!("p.after_change(\"incoming\");\np.step(\"a\", {echo}).output(\"out\");"),
            ),
            (
                "escape",
                format!(
                    "p.after_change(\"../elsewhere\");\np.step(\"a\", {echo}).output(\"out\");"
                ),
            ),
        ],
    );
    let store = tmp.path().join("store");
    let mut srv = Served::start(&proj, &store);
    let escape = pipeline_error(&srv, "escape");
    assert!(escape.contains("must be inside the project"), "{escape}");
    let watch_runs = |srv: &Served| runs_from(srv, "watch", 0);
    let wait_for = |srv: &Served, n: usize| runs_from(srv, "watch", n);
    // The first sight (no folder yet) is the baseline: nothing runs.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(watch_runs(&srv).is_empty());
    let incoming = proj.join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    std::fs::write(incoming.join("a.csv"), "x\n1\n").unwrap();
    let runs = wait_for(&srv, 1);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        runs[0]["trigger"]
            .as_str()
            .unwrap()
            .starts_with("incoming changed (content "),
        "{runs:?}"
    );
    srv.wait_run(runs[0]["run"].as_i64().unwrap(), 60);

    // The same bytes again (a new modification time): no run.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(incoming.join("a.csv"), "x\n1\n").unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(watch_runs(&srv).len(), 1, "same bytes, no run");

    // New bytes: a run.
    std::fs::write(incoming.join("a.csv"), "x\n2\n").unwrap();
    let runs = wait_for(&srv, 2);
    assert_eq!(runs.len(), 2, "{runs:?}");
    srv.wait_run(runs[0]["run"].as_i64().unwrap(), 60);
    assert!(srv.stop().success());

    // Changed while the server was down: a run once it is back.
    std::fs::write(incoming.join("b.csv"), "y\n").unwrap();
    let srv = Served::start(&proj, &store);
    let runs = wait_for(&srv, 3);
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_ne!(runs[0]["trigger"], runs[1]["trigger"], "{runs:?}");
}
