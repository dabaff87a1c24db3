//! The server's Prometheus metrics (`GET /metrics`, behind the token like
//! every route; text exposition format 0.0.4): counters of what this server
//! ran since it started, gauges of what it runs now, the store's size and
//! how late scheduled slots started. Fed by the runs' events; a scrape reads
//! no records.

use super::lock;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weir_runtime::{RunState, StepState};

/// Upper bounds (seconds) of the step-duration histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// How long a measured store size is reused: walking a large store on
/// every scrape would cost more than the scrape.
const STORE_SIZE_TTL: Duration = Duration::from_secs(30);

/// What the server counts (see the module docs).
pub struct Metrics {
    state: Mutex<State>,
    started: std::time::SystemTime,
    store: PathBuf,
}

#[derive(Default)]
struct State {
    /// (pipeline, final state) to runs finished.
    runs: BTreeMap<(String, &'static str), u64>,
    /// (pipeline, final state) to units (steps, map children) finished.
    steps: BTreeMap<(String, &'static str), u64>,
    /// Pipeline to the durations of its executed steps.
    durations: BTreeMap<String, Histogram>,
    /// Pipeline to how late its last scheduled slot started, in seconds.
    lag: BTreeMap<String, f64>,
    /// The store's size and when it was measured.
    store_bytes: Option<(u64, Instant)>,
}

#[derive(Default, Clone)]
struct Histogram {
    /// Observations at most each bound (not cumulative).
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The gauges read at scrape time.
pub struct Now {
    /// Runs in progress.
    pub active_runs: usize,
    /// Steps running (or waiting to retry) in them.
    pub active_steps: usize,
}

impl Metrics {
    /// Counting from now, for the store at `store`.
    pub fn new(store: &Path) -> Metrics {
        Metrics {
            state: Mutex::new(State::default()),
            started: std::time::SystemTime::now(),
            store: store.to_path_buf(),
        }
    }

    /// A run of `pipeline` ended in `state`.
    pub fn run_finished(&self, pipeline: &str, state: RunState) {
        *lock(&self.state)
            .runs
            .entry((pipeline.to_string(), state.as_str()))
            .or_default() += 1;
    }

    /// A unit of `pipeline` ended in `state` after `duration`.
    pub fn step_finished(&self, pipeline: &str, state: StepState, duration: Duration) {
        let mut s = lock(&self.state);
        *s.steps
            .entry((pipeline.to_string(), state.as_str()))
            .or_default() += 1;
        if matches!(state, StepState::Succeeded | StepState::Failed) {
            let h = s.durations.entry(pipeline.to_string()).or_default();
            let secs = duration.as_secs_f64();
            if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
                h.buckets[i] += 1;
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    /// A scheduled slot of `pipeline` started `lag` after its time.
    pub fn slot_started(&self, pipeline: &str, lag: Duration) {
        lock(&self.state)
            .lag
            .insert(pipeline.to_string(), lag.as_secs_f64());
    }

    /// The store's size on disk, measured at most every [`STORE_SIZE_TTL`]
    /// (blocking: a walk of the store's folders).
    fn store_bytes(&self) -> u64 {
        if let Some((bytes, at)) = lock(&self.state).store_bytes
            && at.elapsed() < STORE_SIZE_TTL
        {
            return bytes;
        }
        let bytes = disk_usage(&self.store);
        lock(&self.state).store_bytes = Some((bytes, Instant::now()));
        bytes
    }

    /// The exposition text (blocking: may measure the store).
    pub fn render(&self, now: &Now) -> String {
        let store_bytes = self.store_bytes();
        let s = lock(&self.state);
        let mut out = String::new();
        let started = self
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        family(
            &mut out,
            "weir_server_start_time_seconds",
            "gauge",
            "When this server started (Unix time).",
        );
        let _ = writeln!(out, "weir_server_start_time_seconds {started}");
        family(
            &mut out,
            "weir_runs_total",
            "counter",
            "Runs this server finished, by pipeline and final state.",
        );
        for ((p, state), n) in &s.runs {
            let _ = writeln!(
                out,
                "weir_runs_total{{pipeline=\"{}\",state=\"{state}\"}} {n}",
                label(p)
            );
        }
        family(
            &mut out,
            "weir_steps_total",
            "counter",
            "Steps and map children of this server's runs that finished, by pipeline and final state.",
        );
        for ((p, state), n) in &s.steps {
            let _ = writeln!(
                out,
                "weir_steps_total{{pipeline=\"{}\",state=\"{state}\"}} {n}",
                label(p)
            );
        }
        family(
            &mut out,
            "weir_cache_lookups_total",
            "counter",
            "Cache lookups of finished steps: hit (cached) or miss (executed, whether it succeeded or failed).",
        );
        let mut lookups: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for ((p, state), n) in &s.steps {
            let result = match *state {
                "cached" => "hit",
                "succeeded" | "failed" => "miss",
                _ => continue,
            };
            *lookups.entry((p.as_str(), result)).or_default() += n;
        }
        for ((p, result), n) in lookups {
            let _ = writeln!(
                out,
                "weir_cache_lookups_total{{pipeline=\"{}\",result=\"{result}\"}} {n}",
                label(p)
            );
        }
        family(
            &mut out,
            "weir_step_duration_seconds",
            "histogram",
            "Wall time of executed steps (cache hits excluded), attempts and retries included.",
        );
        for (p, h) in &s.durations {
            let p = label(p);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "weir_step_duration_seconds_bucket{{pipeline=\"{p}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "weir_step_duration_seconds_bucket{{pipeline=\"{p}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "weir_step_duration_seconds_sum{{pipeline=\"{p}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "weir_step_duration_seconds_count{{pipeline=\"{p}\"}} {}",
                h.count
            );
        }
        family(
            &mut out,
            "weir_active_runs",
            "gauge",
            "Runs in progress on this server.",
        );
        let _ = writeln!(out, "weir_active_runs {}", now.active_runs);
        family(
            &mut out,
            "weir_active_steps",
            "gauge",
            "Steps running or waiting to retry in this server's runs.",
        );
        let _ = writeln!(out, "weir_active_steps {}", now.active_steps);
        family(
            &mut out,
            "weir_store_bytes",
            "gauge",
            "Disk space the store uses (measured at most every 30 s).",
        );
        let _ = writeln!(out, "weir_store_bytes {store_bytes}");
        family(
            &mut out,
            "weir_schedule_lag_seconds",
            "gauge",
            "How late the last scheduled run of each pipeline started after its slot's time.",
        );
        for (p, lag) in &s.lag {
            let _ = writeln!(
                out,
                "weir_schedule_lag_seconds{{pipeline=\"{}\"}} {lag}",
                label(p)
            );
        }
        out
    }
}

/// A metric family's `HELP` and `TYPE` lines.
/// The cluster's gauges: units by queue state, workers by state (those
/// heard of in the last two minutes).
pub fn render_cluster(
    depth: &weir_runtime::cluster::QueueDepth,
    workers: &[weir_runtime::cluster::WorkerStatus],
) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "weir_queue_units",
        "gauge",
        "Units in the cluster's queue, by state (queued: waiting for a worker; running: leased)",
    );
    let _ = writeln!(out, "weir_queue_units{{state=\"queued\"}} {}", depth.queued);
    let _ = writeln!(
        out,
        "weir_queue_units{{state=\"running\"}} {}",
        depth.leased
    );
    family(
        &mut out,
        "weir_workers",
        "gauge",
        "The cluster's workers heard of in the last two minutes, by state",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for state in ["running", "draining", "stopped"] {
        let n = workers
            .iter()
            .filter(|w| w.state == state && now - w.heartbeat_ms < 120_000)
            .count();
        let _ = writeln!(out, "weir_workers{{state=\"{state}\"}} {n}");
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped as the exposition format requires (`\`, `"` and
/// line breaks), so no name can end a label or a line early.
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c if c.is_control() => {}
            c => s.push(c),
        }
    }
    s
}

/// Bytes of disk the files below `dir` use (allocated blocks).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                todo.push(e.path());
            }
            total += m.blocks() * 512;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_counts_runs_steps_and_buckets_cumulatively() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("x"), vec![0u8; 10_000]).unwrap();
        let m = Metrics::new(tmp.path());
        m.run_finished("p\"1", RunState::Succeeded);
        m.step_finished("p\"1", StepState::Succeeded, Duration::from_millis(3));
        m.step_finished("p\"1", StepState::Succeeded, Duration::from_millis(300));
        m.step_finished("p\"1", StepState::Cached, Duration::ZERO);
        m.step_finished("p\"1", StepState::Succeeded, Duration::from_secs(100));
        let text = m.render(&Now {
            active_runs: 1,
            active_steps: 2,
        });
        assert!(
            text.contains("weir_runs_total{pipeline=\"p\\\"1\",state=\"succeeded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weir_cache_lookups_total{pipeline=\"p\\\"1\",result=\"hit\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weir_cache_lookups_total{pipeline=\"p\\\"1\",result=\"miss\"} 3"),
            "{text}"
        );
        assert!(text.contains("le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("le=\"0.5\"} 2\n"), "{text}");
        assert!(text.contains("le=\"60\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("weir_active_steps 2\n"), "{text}");
        let bytes: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("weir_store_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(bytes >= 10_000, "{bytes}");
    }

    #[test]
    fn label_values_cannot_break_a_line() {
        assert_eq!(label("a\\b\"c\nd\u{1b}e"), "a\\\\b\\\"c\\nde");
    }
}
