//! The dashboard in a real browser: headless Chromium, driven through
//! ChromeDriver's WebDriver protocol (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs), against `weir serve` on
//! the flagship churn project. Opens the runs list, triggers a run from the
//! form, watches it complete on the run page, sees its DAG and a step's
//! logs, and saves a screenshot of the run page under the test's output
//! folder (`target/tmp/weir-browser/run-page.png`).

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    fn start() -> Browser {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("the browser test needs Chromium: apt-get install chromium chromium-driver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the browser test needs ChromeDriver: apt-get install chromium-driver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        while agent.get(&format!("{base}/status")).call().is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100"]
            }
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("a session").to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut r = match method {
            "GET" => self.agent.get(&url).call().unwrap(),
            "DELETE" => self.agent.delete(&url).call().unwrap(),
            _ => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.unwrap_or(json!({})).to_string().as_bytes())
                .unwrap(),
        };
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The first element matching `css`, waiting up to `secs` for it.
    fn find(&self, css: &str, secs: u64) -> String {
        self.find_by("css selector", css, secs)
    }

    /// The first element matching an XPath expression, waiting up to `secs`.
    fn find_xpath(&self, xpath: &str, secs: u64) -> String {
        self.find_by("xpath", xpath, secs)
    }

    fn find_by(&self, using: &str, value: &str, secs: u64) -> String {
        let t = Instant::now();
        loop {
            let v = self.call(
                "POST",
                "/element",
                Some(json!({ "using": using, "value": value })),
            );
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "no element {value} after {secs} s; page: {}",
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn count(&self, css: &str) -> usize {
        let v = self.call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_array().map_or(0, Vec::len)
    }

    fn text(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        match v[ELEMENT].as_str() {
            Some(id) => self
                .call("GET", &format!("/element/{id}/text"), None)
                .as_str()
                .unwrap_or("")
                .to_string(),
            None => String::new(),
        }
    }

    fn click(&self, id: &str) {
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, id: &str, text: &str) {
        self.call("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Runs `script` in the page and returns its value.
    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn screenshot(&self, to: &std::path::Path) {
        let v = self.call("GET", "/screenshot", None);
        let png = base64_decode(v.as_str().unwrap());
        assert_eq!(&png[..4], b"\x89PNG");
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(&format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk.iter().fold(0u32, |acc, &c| {
            (acc << 6) | if c == b'=' { 0 } else { val(c) }
        });
        let n = n << (6 * (4 - chunk.len()));
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad.min(2)]);
    }
    out
}

#[test]
fn the_dashboard_triggers_the_flagship_pipeline_and_shows_its_run() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Served::start(&repo().join("examples/churn"), &tmp.path().join("store"));
    let b = Browser::start();

    // The runs list, opened with the token (which becomes a cookie).
    b.goto(&format!("{}/?token={TOKEN}#/", srv.base));
    b.find("table#runs", 30);
    assert!(
        !b.url().contains("token="),
        "the token is dropped from the address bar"
    );

    // The trigger form: a smaller data set, then run.
    b.goto(&format!("{}/#/pipelines", srv.base));
    let rows = b.find("form[data-pipeline=\"churn\"] input[name=\"rows\"]", 30);
    b.type_into(&rows, "6000");
    let submit = b.find("form[data-pipeline=\"churn\"] button[type=\"submit\"]", 5);
    b.click(&submit);

    // The run page: it goes live, then completes.
    let t = Instant::now();
    while !b.url().contains("#/runs/") {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no run page: {}",
            b.text("body")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let run: i64 = b.url().rsplit('/').next().unwrap().parse().unwrap();
    b.find("svg#dag g.node", 60);
    let t = Instant::now();
    loop {
        let state = b.text("h1 .state");
        if state == "succeeded" {
            break;
        }
        assert!(
            !matches!(state.as_str(), "failed" | "cancelled"),
            "the run {state}: {}\n{}",
            b.text("body"),
            srv.output.lock().unwrap()
        );
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "run {run} did not finish: {}",
            b.text("body")
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The DAG: seven steps; the gate's two branches show one ran and one did not.
    assert_eq!(b.count("svg#dag g.node"), 7, "{}", b.text("body"));
    assert!(b.count("svg#dag path.edge") >= 6);
    let states: Vec<String> = [
        "generate_data",
        "validate_data",
        "compute_features",
        "train_model",
        "evaluate_model",
    ]
    .iter()
    .map(|s| b.text(&format!("svg#dag g.node[data-step=\"{s}\"]")))
    .collect();
    assert!(states.iter().all(|s| s.contains("succeeded")), "{states:?}");
    let gated = b.count("svg#dag g.node[data-state=\"skipped\"]");
    assert_eq!(gated, 1, "one branch of the quality gate is skipped");

    // A step's detail: params, cache key and its logs.
    let node = b.find("svg#dag g.node[data-step=\"train_model\"]", 5);
    b.click(&node);
    b.find("#step-detail h2", 30);
    assert!(b.text("#step-detail h2").contains("train_model"));
    b.find("#logs", 10);
    let detail = b.text("#step-detail");
    assert!(
        detail.contains("cache key:") && detail.contains("epochs"),
        "{detail}"
    );

    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("weir-browser")
        .join("run-page.png");
    b.screenshot(&shot);
    println!("screenshot of the run page: {}", shot.display());

    // The generated data's artifact page previews the Parquet file as a table.
    let (_, detail) = srv.get(&format!("/api/runs/{run}"));
    let data = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "generate_data")
        .unwrap()["outputs"]["data"]
        .as_str()
        .unwrap()
        .to_string();
    b.goto(&format!("{}/#/artifacts/{data}", srv.base));
    let preview = b.find_xpath("//tr[td[text()='customers.parquet']]//button", 30);
    b.click(&preview);
    b.find("#preview table", 30);
    assert!(b.count("#preview th") >= 5, "{}", b.text("#preview"));
    assert!(
        b.count("#preview tr") >= 21,
        "a header and 20 rows: {}",
        b.text("#preview")
    );

    // The registry, grouped per model: promote the new version from the page.
    b.goto(&format!("{}/#/models", srv.base));
    let promote = b.find(
        "div.model[data-model=\"churn\"] button[data-version=\"1\"][data-stage=\"production\"]",
        30,
    );
    b.click(&promote);
    b.find(
        "div.model[data-model=\"churn\"] tr[data-version=\"1\"] .state[data-state=\"production\"]",
        30,
    );
    let (_, models) = srv.get("/api/models");
    assert_eq!(models["models"][0]["stage"], "production", "{models}");
    // Its lineage, as a tree down to the generated data.
    let lineage = b.find("button[data-lineage=\"churn@1\"]", 30);
    b.click(&lineage);
    b.find("ul.lineage li[data-kind=\"step\"]", 30);
    let text = b.text("#lineage");
    assert!(
        text.contains("train_model") && text.contains("generate_data"),
        "{text}"
    );

    // Back on the runs list, the run is there and succeeded.
    b.goto(&format!("{}/#/", srv.base));
    b.find(&format!("table#runs tr[data-run=\"{run}\"]"), 30);
    assert!(
        b.text(&format!("table#runs tr[data-run=\"{run}\"]"))
            .contains("succeeded")
    );
}

/// Issue 21, the dashboard: a page opened without the token says where it
/// is; the runs list filters, pages and picks runs to compare; a live run's
/// page shows its running step and a timeline, and updates in place (the
/// scroll position survives each refresh, where the whole page was rebuilt
/// every second before).
#[test]
fn the_dashboard_filters_pages_and_updates_a_live_run_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("project");
    std::fs::create_dir_all(&proj).unwrap();
    let echo = fixture("echo").display().to_string();
    let sleep = fixture("sleep").display().to_string();
    std::fs::write(
        proj.join("quick.rhai"),
        format!(
            "let n = param(\"n\", 0);\nlet fail = param(\"fail\", \"\");\nlet p = pipeline(\"quick\");\np.max_active_runs(100);\nlet params = if fail == \"\" {{ #{{ note: n }} }} else {{ #{{ note: n, fail: fail }} }};\np.step(\"only\", {echo:?}).output(\"out\").params(params);\n"
        ),
    )
    .unwrap();
    std::fs::write(
        proj.join("ticker.rhai"),
        format!(
            "let p = pipeline(\"ticker\");\nlet a = p.step(\"first\", {echo:?}).output(\"out\").params(#{{ note: \"t\" }});\np.step(\"ticks\", {sleep:?}).input(\"a\", a.out(\"out\")).output(\"out\").params(#{{ ms: 30000, ticks: 300 }});\n"
        ),
    )
    .unwrap();
    let rows: String = (0..25).map(|i| format!("{i},{}\\n", i * i)).collect();
    std::fs::write(
        proj.join("folders.rhai"),
        format!(
            "let p = pipeline(\"folders\");\np.step(\"make\", {echo:?}).output(\"out\").params(#{{ metrics: #{{ a_rather_long_metric_name_that_would_run_over_its_bar_in_the_chart: 0.87654321 }}, files: #{{ \"tables/squares.csv\": \"n,sq\\n{rows}\" }} }});\n"
        ),
    )
    .unwrap();
    std::fs::write(
        proj.join("scored.rhai"),
        format!(
            "let f1 = param(\"f1\", 0.9);\nlet p = pipeline(\"scored\");\np.max_active_runs(10);\nlet e = p.step(\"evaluate\", {echo:?}).output(\"out\").params(#{{ metrics: #{{ f1: f1 }} }});\np.step(\"register\", {echo:?}).input(\"m\", e.out(\"out\")).output(\"out\").when(e.metric(\"f1\") >= 0.8);\n"
        ),
    )
    .unwrap();
    std::fs::write(
        proj.join("nightly.rhai"),
        format!(
            "let p = pipeline(\"nightly\");\np.schedule(\"0 3 * * *\", #{{ timezone: \"Europe/Paris\" }});\np.step(\"s\", {echo:?}).output(\"out\");\n"
        ),
    )
    .unwrap();
    let noop = fixture("noop").display().to_string();
    std::fs::write(
        proj.join("chain.rhai"),
        format!(
            "let p = pipeline(\"chain\");\nlet prev = p.step(\"s0\", {noop:?}).output(\"out\");\nfor i in 1..10000 {{ prev = p.step(`s${{i}}`, {noop:?}).input(\"a\", prev.out(\"out\")).output(\"out\"); }}\n"
        ),
    )
    .unwrap();
    let srv = Served::start(&proj, &tmp.path().join("store"));
    let b = Browser::start();
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-browser");

    // Without the token: a page that says where it is, and takes it.
    b.goto(&format!("{}/#/", srv.base));
    b.find("#token-form", 30);
    assert!(b.text("main").contains("token"), "{}", b.text("main"));
    let input = b.find("#token", 5);
    b.type_into(&input, TOKEN);
    let open = b.find("#token-form button", 5);
    b.click(&open);
    b.find("table#runs", 30);

    // 55 runs, 3 of them failed: two pages, and a filter.
    for i in 0..55 {
        let params = if i % 20 == 7 {
            json!({ "params": { "n": i, "fail": "boom" } })
        } else {
            json!({ "params": { "n": i } })
        };
        let (s, v) = srv.post("/api/pipelines/quick/runs", params);
        assert_eq!(s, 201, "{v}");
        srv.wait_run(v["run"].as_i64().unwrap(), 60);
    }
    b.goto(&format!("{}/#/", srv.base));
    // (The list refreshes itself every few seconds.)
    let t = Instant::now();
    while b.count("table#runs tr[data-run]") != 50 {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", b.text("main"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let older = b.find("#runs-next", 5);
    b.click(&older);
    let t = Instant::now();
    while b.count("table#runs tr[data-run]") != 5 {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", b.text("main"));
        std::thread::sleep(Duration::from_millis(200));
    }
    b.goto(&format!("{}/#/?state=failed", srv.base));
    let t = Instant::now();
    while b.count("table#runs tr[data-run]") != 3 {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", b.text("main"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(b.text("table#runs").contains("failed"));
    b.screenshot(&shots.join("runs-filtered.png"));
    // Two runs picked from the list are compared.
    b.goto(&format!("{}/#/", srv.base));
    let t = Instant::now();
    while b.count("table#runs tr[data-run]") != 50 {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", b.text("main"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let picks = b.call(
        "POST",
        "/elements",
        Some(json!({ "using": "css selector", "value": "input.pick" })),
    );
    for p in picks.as_array().unwrap().iter().take(2) {
        b.click(p[ELEMENT].as_str().unwrap());
    }
    let compare = b.find("#compare-picked", 5);
    b.click(&compare);
    b.find("table#compare", 30);
    assert!(b.url().contains("#/compare?runs="), "{}", b.url());
    // Beside the numbers, a bar per run.
    b.find("table#compare td.compare-chart .bar", 30);

    // A live run: its running step shows, the timeline draws, and a live
    // update leaves the page where the reader scrolled it.
    let (s, v) = srv.post("/api/pipelines/ticker/runs", json!({}));
    assert_eq!(s, 201, "{v}");
    let run = v["run"].as_i64().unwrap();
    b.call(
        "POST",
        "/window/rect",
        Some(json!({ "width": 1200, "height": 600 })),
    );
    b.goto(&format!("{}/#/runs/{run}/steps/ticks", srv.base));
    b.find(
        "table#steps tr[data-step=\"ticks\"] .state[data-state=\"running\"]",
        60,
    );
    // Its recorded attempt: until the record is committed, a finished step
    // may still show as its live row, without attempts.
    b.find("svg#timeline g.bar[data-step=\"first\"] rect.attempt", 30);
    b.find(
        "svg#timeline g.bar[data-step=\"ticks\"][data-state=\"running\"]",
        30,
    );
    // The step's detail sits beside the graph.
    let beside = b.js(
        "const d = document.getElementById('step-detail').getBoundingClientRect();\n\
         const g = document.getElementById('dag-box').getBoundingClientRect();\n\
         return d.left >= g.right - 1 && d.top < g.bottom;",
    );
    assert_eq!(beside, json!(true), "the detail opens beside the graph");
    // A finished step's bar says what its attempt used.
    assert!(
        b.text("svg#timeline g.bar[data-step=\"first\"] text.usage")
            .contains("peak"),
        "{}",
        b.text("svg#timeline")
    );
    b.find("#logs", 30);
    let height = b
        .js("return document.documentElement.scrollHeight;")
        .as_i64()
        .unwrap();
    assert!(
        height > 900,
        "the page must scroll for this check: {height} px"
    );
    b.js("window.scrollTo(0, 300);");
    std::thread::sleep(Duration::from_millis(3500));
    let y = b.js("return window.scrollY;").as_f64().unwrap();
    assert!(
        (y - 300.0).abs() < 1.0,
        "after three live updates the page is at {y}, not where it was scrolled (300)"
    );
    assert_eq!(
        b.text("h1 .state"),
        "running",
        "the run was live throughout"
    );
    b.screenshot(&shots.join("live-run.png"));
    let (s, _) = srv.post(&format!("/api/runs/{run}/cancel"), json!({}));
    assert_eq!(s, 202);

    // An artifact's sub-folder opens; a preview says how many rows it shows
    // of how many; a long metric name wraps.
    let (s, v) = srv.post("/api/pipelines/folders/runs", json!({}));
    assert_eq!(s, 201, "{v}");
    let made = v["run"].as_i64().unwrap();
    let d = srv.wait_run(made, 60);
    assert_eq!(d["run"]["state"], "succeeded", "{d}");
    let out = d["steps"][0]["outputs"]["out"]
        .as_str()
        .unwrap()
        .to_string();
    b.goto(&format!("{}/#/artifacts/{out}", srv.base));
    let folder = b.find_xpath("//a[@class='folder' and text()='tables/']", 30);
    b.click(&folder);
    let preview = b.find_xpath("//tr[td[text()='squares.csv']]//button", 30);
    b.click(&preview);
    b.find("#preview-count", 30);
    assert_eq!(b.text("#preview-count"), "20 of 25 rows");
    b.goto(&format!("{}/#/runs/{made}/steps/make", srv.base));
    b.find("table.metrics td.metric-name", 30);
    let fit = b.js(
        "const c = document.querySelector('table.metrics td.metric-name');\n\
         const bar = document.querySelector('table.metrics td.metric-bar').getBoundingClientRect();\n\
         return [c.scrollWidth <= c.clientWidth + 1, c.getBoundingClientRect().right <= bar.left + 1];",
    );
    assert_eq!(
        fit,
        json!([true, true]),
        "the metric name stays in its column, clear of the bar"
    );
    assert!(
        b.text("table.metrics").contains("0.8765"),
        "{}",
        b.text("table.metrics")
    );

    // A pipeline's metric across its runs, with the gate's threshold and
    // the gated run marked.
    for f1 in [0.91, 0.75, 0.86] {
        let (s, v) = srv.post(
            "/api/pipelines/scored/runs",
            json!({ "params": { "f1": f1 } }),
        );
        assert_eq!(s, 201, "{v}");
        srv.wait_run(v["run"].as_i64().unwrap(), 60);
    }
    b.goto(&format!("{}/#/pipelines/scored", srv.base));
    b.find(
        "div.series[data-metric=\"evaluate.f1\"] svg.series-chart",
        30,
    );
    assert_eq!(b.count("div.series[data-metric=\"evaluate.f1\"] .pt"), 3);
    assert_eq!(
        b.count("div.series[data-metric=\"evaluate.f1\"] .pt.gated"),
        1
    );
    assert_eq!(
        b.count("div.series[data-metric=\"evaluate.f1\"] line.threshold"),
        1
    );
    b.screenshot(&shots.join("pipeline-metrics.png"));

    // Schedules: times in the schedule's own zone; pause and resume.
    b.goto(&format!("{}/#/schedules", srv.base));
    let pause = b.find(
        "button[data-pipeline=\"nightly\"][data-action=\"pause\"]",
        30,
    );
    assert!(
        b.text("table#schedules").contains("CET") || b.text("table#schedules").contains("CEST")
    );
    b.click(&pause);
    b.find(
        "tr[data-pipeline=\"nightly\"] .state[data-state=\"paused\"]",
        30,
    );
    let (_, v) = srv.get("/api/schedules");
    assert_eq!(v["schedules"][0]["paused"], true, "{v}");
    let resume = b.find(
        "button[data-pipeline=\"nightly\"][data-action=\"resume\"]",
        30,
    );
    b.click(&resume);
    b.find(
        "button[data-pipeline=\"nightly\"][data-action=\"pause\"]",
        30,
    );
    // Backfill from the page: the two past days' slots run.
    let go = b.find("form.backfill[data-pipeline=\"nightly\"] button", 30);
    b.click(&go);
    let t = Instant::now();
    while !b.text("#schedules-error").contains("slot(s) to backfill") {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", b.text("main"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = Instant::now();
    loop {
        let (_, v) = srv.get("/api/runs?pipeline=nightly");
        let runs = v["runs"].as_array().unwrap();
        if runs.len() == 2 && runs.iter().all(|r| r["active"] == false) {
            assert!(runs.iter().all(|r| r["source"] == "backfill"), "{v}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    b.screenshot(&shots.join("schedules.png"));

    // Workers: this server's records are its own, so it says it is no cluster.
    b.goto(&format!("{}/#/workers", srv.base));
    b.find("#queue-depth", 30);
    assert!(
        b.text("#queue-depth").contains("Not a cluster"),
        "{}",
        b.text("main")
    );

    // A 10,000-step chain: its graph stays in view (it wraps into bands in
    // a box that scrolls), where it was an empty box before.
    let (s, v) = srv.post("/api/pipelines/chain/runs", json!({}));
    assert_eq!(s, 201, "{v}");
    let chain = v["run"].as_i64().unwrap();
    srv.wait_run(chain, 600);
    b.goto(&format!("{}/#/runs/{chain}", srv.base));
    b.find("svg#dag g.node[data-step=\"s9999\"]", 120);
    let fits = b.js(
        "const box = document.getElementById('dag-box').getBoundingClientRect();\n\
         const svg = document.getElementById('dag').getBoundingClientRect();\n\
         const first = document.querySelector('svg#dag g.node[data-step=\"s0\"]').getBoundingClientRect();\n\
         return [svg.width <= box.width + 1, first.left >= box.left && first.right <= box.right && first.top >= box.top && first.bottom <= box.bottom, box.height <= 600];",
    );
    assert_eq!(fits, json!([true, true, true]), "the graph stays in view");
    assert_eq!(
        b.count("table#steps tr[data-step]"),
        500,
        "the table lists the first 500"
    );
    b.screenshot(&shots.join("chain-10000.png"));
}
