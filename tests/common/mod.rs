//! Helpers shared by the integration tests: fixture components built from
//! `tests/guests/`, fresh runtimes on temporary stores, and the CLI binary.
#![allow(dead_code)]

pub mod s3;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use weir_runtime::plan::{ComponentSource, InputSource, Plan, StepPlan};
use weir_runtime::{Config, RunOptions, RunReport, Runtime};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds (once per test process) the fixture crate `tests/guests/<name>`
/// and returns its component file.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let map = BUILT.get_or_init(Default::default);
    let mut m = map.lock().unwrap();
    if let Some(p) = m.get(name) {
        return p.clone();
    }
    let crate_dir = repo().join("tests/guests").join(name);
    let wasm = weir_runtime::builder::build_crate(&crate_dir)
        .unwrap_or_else(|e| panic!("building fixture {name}: {e:#}"));
    m.insert(name.to_string(), wasm.clone());
    wasm
}

/// A runtime on a store in `dir`.
pub fn runtime(dir: &Path) -> Runtime {
    Runtime::new(Config::new(dir.join(".weir")).jobs(2)).expect("runtime")
}

/// Runs `plan` on `rt`, panicking if the run cannot start.
pub fn run(rt: &Runtime, plan: &Plan) -> RunReport {
    try_run(rt, plan).unwrap_or_else(|e| panic!("run did not start: {e:#}"))
}

/// Runs `plan` on `rt`.
pub fn try_run(rt: &Runtime, plan: &Plan) -> anyhow::Result<RunReport> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(rt.run(plan, RunOptions::default()))
}

/// A step running a fixture component (or any wasm file).
pub fn step(name: &str, wasm: &Path) -> StepPlan {
    let mut s = StepPlan::new(name, ComponentSource::Wasm(wasm.to_path_buf()));
    s.outputs.insert("out".into());
    s
}

/// Reads `output` of `upstream` into input `input` of `s`.
pub fn wire(s: &mut StepPlan, input: &str, upstream: &str, output: &str) {
    s.inputs.insert(
        input.into(),
        InputSource::Step {
            step: upstream.into(),
            output: output.into(),
        },
    );
}

/// A plan over `steps` whose paths resolve in `base`.
pub fn plan(base: &Path, steps: Vec<StepPlan>) -> Plan {
    let mut p = Plan::new("test", base);
    p.steps = steps;
    p
}

/// The `weir` binary built by cargo for this test run.
pub fn weir() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env_remove("WEIR_STORE");
    c
}

/// Copies a folder tree (without `target/` and `.weir/`).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "target" || name == ".weir" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The token the server tests use.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A `weir serve` process on a free loopback port; killed (SIGINT, then
/// SIGKILL) when dropped.
pub struct Served {
    pub child: std::process::Child,
    pub base: String,
    pub output: std::sync::Arc<Mutex<String>>,
}

impl Served {
    /// Starts `weir serve PROJECT --store STORE` and waits until it listens.
    pub fn start(project: &Path, store: &Path) -> Served {
        Served::start_with(project, store, &[])
    }

    /// [`Served::start`] with more arguments (`--records URL`, ...).
    pub fn start_with(project: &Path, store: &Path, extra: &[&str]) -> Served {
        use std::io::BufRead as _;
        let mut child = weir()
            .arg("serve")
            .arg(project)
            .args(["--bind", "127.0.0.1:0", "--token", TOKEN, "--store"])
            .arg(store)
            .args(extra)
            .env("WEIR_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let output = std::sync::Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        let out = output.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        let base = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("weir serve did not start: {}", output.lock().unwrap()));
        Served {
            child,
            base,
            output,
        }
    }

    /// Stops the server the way Ctrl-C does and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let t = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if t.elapsed() > std::time::Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!(
                    "weir serve did not stop on SIGINT: {}",
                    self.output.lock().unwrap()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(60)))
            .build()
            .into()
    }

    /// GET with the token: status and JSON body.
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let mut r = Self::agent()
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// POST JSON with the token: status and JSON body.
    pub fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let mut r = Self::agent()
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap();
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A raw request: method, path, extra headers; status, headers, body bytes.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let url = format!("{}{path}", self.base);
        let agent = Self::agent();
        let mut resp = if method == "POST" {
            let mut rb = agent.post(&url);
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            rb.send(&b"{}"[..]).unwrap()
        } else {
            let mut rb = agent.get(&url);
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            rb.call().unwrap()
        };
        let hs = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_vec().unwrap_or_default();
        (status, hs, body)
    }

    /// Waits until run `id` is no longer active; returns its detail.
    pub fn wait_run(&self, id: i64, secs: u64) -> serde_json::Value {
        let t = std::time::Instant::now();
        loop {
            let (s, v) = self.get(&format!("/api/runs/{id}"));
            if s == 200 && v["run"]["active"] == false && v["run"]["ended_ms"].is_i64() {
                return v;
            }
            if t.elapsed() > std::time::Duration::from_secs(secs) {
                panic!(
                    "run {id} did not finish in {secs} s: {v}\n{}",
                    self.output.lock().unwrap()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to its end and returns its output and its peak resident set
/// size in bytes (from `wait4`, so only this child counts).
pub fn run_measured(cmd: &mut std::process::Command) -> (std::process::Output, u64) {
    use std::io::Read as _;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning the command");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        out.read_to_end(&mut b).unwrap();
        b
    });
    let mut stderr = Vec::new();
    err.read_to_end(&mut stderr).unwrap();
    let stdout = reader.join().unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it and the status.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    std::mem::forget(child);
    let status = std::os::unix::process::ExitStatusExt::from_raw(status);
    (
        std::process::Output {
            status,
            stdout,
            stderr,
        },
        usage.ru_maxrss as u64 * 1024,
    )
}

/// `weir run SCRIPT --store STORE`.
pub fn run_script(script: &Path, store: &Path) -> std::process::Output {
    weir()
        .arg("run")
        .arg(script)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap()
}

/// Asserts that a command succeeded (showing both of its streams if not)
/// and returns its stdout and stderr.
pub fn succeeded(out: std::process::Output) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// Every object the store at `store` holds, sorted: files under `objects/`
/// and rows of its pack (`objects.db`, for objects of at most 16 KiB).
pub fn stored_objects(store: &Path) -> Vec<weir_runtime::Digest> {
    let mut all = Vec::new();
    if let Ok(shards) = std::fs::read_dir(store.join("objects")) {
        for shard in shards {
            for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                all.push(f.unwrap().file_name().to_str().unwrap().parse().unwrap());
            }
        }
    }
    let pack = store.join("objects.db");
    if pack.is_file() {
        let db = rusqlite::Connection::open(&pack).unwrap();
        let mut s = db.prepare("SELECT digest FROM objects").unwrap();
        let rows = s.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
        for d in rows {
            all.push(weir_runtime::Digest::from_bytes(
                d.unwrap().try_into().unwrap(),
            ));
        }
    }
    all.sort_by_key(|d| d.to_hex());
    all
}

/// The bytes stored under `d` in the store at `store`, as they are on disk
/// (unverified), wherever the object lives.
pub fn stored_bytes(store: &Path, d: &weir_runtime::Digest) -> Vec<u8> {
    let hex = d.to_hex();
    let file = store.join("objects").join(&hex[..2]).join(&hex);
    if file.exists() {
        return std::fs::read(file).unwrap();
    }
    rusqlite::Connection::open(store.join("objects.db"))
        .unwrap()
        .query_row(
            "SELECT bytes FROM objects WHERE digest = ?1",
            [d.as_bytes().as_slice()],
            |r| r.get(0),
        )
        .unwrap()
}

/// Replaces the bytes of object `d` in the store at `store` behind the
/// store's back, wherever it lives (a file, or a row of the pack).
pub fn tamper_object(store: &Path, d: &weir_runtime::Digest, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let hex = d.to_hex();
    let file = store.join("objects").join(&hex[..2]).join(&hex);
    if file.exists() {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&file, bytes).unwrap();
        return;
    }
    let n = rusqlite::Connection::open(store.join("objects.db"))
        .unwrap()
        .execute(
            "UPDATE objects SET bytes = ?2 WHERE digest = ?1",
            rusqlite::params![d.as_bytes().as_slice(), bytes],
        )
        .unwrap();
    assert_eq!(n, 1, "object {hex} is not in the store");
}

/// Whether the store at `store` holds object `d` with bytes that hash to it.
pub fn holds_object(store: &Path, d: &str) -> bool {
    let d: weir_runtime::Digest = d.parse().unwrap();
    weir_runtime::store::Store::open(store)
        .unwrap()
        .is_valid(&d)
        .unwrap()
}

/// A PostgreSQL database of its own for one test, dropped at the end. The
/// server is `$WEIR_TEST_POSTGRES` (an admin URL, default
/// `postgres://root@127.0.0.1:5432/postgres`: the service every machine of
/// this project runs).
pub struct TestDb {
    /// The test database's URL.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDb {
    /// Creates the database.
    pub fn new() -> TestDb {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let admin = std::env::var("WEIR_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into());
        let name = format!(
            "weir_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        pg_admin(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        TestDb {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }

    /// Runs `sql` in the test database.
    pub fn exec(&self, sql: &str) {
        pg_admin(&self.url, sql);
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        pg_admin(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` on the database at `url`, panicking with a hint if there is
/// no server.
fn pg_admin(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need PostgreSQL at {url} (set WEIR_TEST_POSTGRES to another admin URL): {e}"
                )
            });
        let conn = tokio::spawn(conn);
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        drop(client);
        let _ = conn.await;
    });
}

/// The steps `weir show RUN --json` prints, as JSON: from the records
/// database `records` if given, of the store `store` if given.
pub fn shown_steps(
    records: Option<&str>,
    store: Option<&Path>,
    run: &str,
) -> Vec<serde_json::Value> {
    let mut c = weir();
    if let Some(url) = records {
        c.args(["--records", url]);
    }
    c.args(["show", run, "--json"]);
    if let Some(store) = store {
        c.arg("--store").arg(store);
    }
    let (stdout, _) = succeeded(c.output().unwrap());
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    v["steps"].as_array().cloned().unwrap_or_default()
}
