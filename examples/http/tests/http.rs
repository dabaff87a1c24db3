//! Starts the real HTTP service on a loopback port and posts the hello
//! pipeline to it over a plain TCP connection.

use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_example_http::{Service, app};
use weir_runtime::{Config, Runtime};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// POSTs `body` to `/runs`; returns the status code and the de-chunked body.
async fn post(addr: std::net::SocketAddr, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /runs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut r = rest;
        loop {
            let (size, tail) = r.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            r = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_script_runs_and_its_events_stream_back() {
    let store = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(Config::new(store.path()).jobs(2)).unwrap();
    let service = Service::new(runtime, repo().join("examples/hello"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(service)).await });

    let script = std::fs::read_to_string(repo().join("examples/hello/pipeline.rhai")).unwrap();
    let body = serde_json::json!({ "script": script }).to_string();
    let (status, text) = post(addr, &body).await;
    assert_eq!(status, 200, "{text}");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(at("run_started") < at("step_finished"));
    assert_eq!(*kinds.last().unwrap(), "run_finished", "{kinds:?}");
    assert_eq!(events.last().unwrap()["state"], "succeeded");
    for step in ["load", "stats", "report"] {
        assert!(
            events.iter().any(|e| e["event"] == "step_finished"
                && e["step"] == step
                && e["state"] == "succeeded"),
            "{step}: {text}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "artifact" && e["step"] == "report")
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "metric" && e["step"] == "load"),
        "{text}"
    );

    // The same script again: every step is a cache hit.
    let (_, text) = post(addr, &body).await;
    assert_eq!(text.matches("\"state\":\"cached\"").count(), 3, "{text}");

    // A script error is a 400 naming the line; a bad body says what was expected.
    let bad =
        serde_json::json!({ "script": "let p = pipeline(\"x\");\np.step(\"a\", 5);" }).to_string();
    let (status, text) = post(addr, &bad).await;
    assert_eq!(status, 400);
    assert!(text.contains("request.rhai:2"), "{text}");
    let (status, text) = post(addr, "not json").await;
    assert_eq!(status, 400);
    assert!(text.contains("expected JSON"), "{text}");
    // An unknown param is refused the same way.
    let body = serde_json::json!({ "script": script, "params": { "nope": "1" } }).to_string();
    let (status, text) = post(addr, &body).await;
    assert_eq!(status, 400, "{text}");
}
