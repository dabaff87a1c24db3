//! An HTTP service that embeds weir: `POST /runs` with a pipeline script
//! (JSON `{"script": "...", "params": {"name": "value"}}`) compiles it
//! against the service's project folder, runs it on the service's one
//! long-lived [`Runtime`] through a run handle, and streams the run's events back as NDJSON, one
//! JSON object per line, ending with `run_finished`. A script error is a
//! `400` with `{"error": "..."}` naming the line. A client that disconnects
//! cancels its run. At most [`MAX_CONCURRENT_RUNS`] run at once (more wait),
//! and request bodies are capped at 1 MiB.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use weir_runtime::{RunEvent, RunOptions, Runtime};

/// Runs allowed at once; further requests wait for a slot.
pub const MAX_CONCURRENT_RUNS: usize = 4;

/// What the handlers share.
#[derive(Clone)]
pub struct Service {
    /// The one runtime every request runs on.
    pub runtime: Runtime,
    /// Relative paths in posted scripts resolve against this folder.
    pub project: PathBuf,
    slots: Arc<Semaphore>,
}

impl Service {
    /// A service running scripts against `project` on `runtime`.
    pub fn new(runtime: Runtime, project: PathBuf) -> Service {
        Service {
            runtime,
            project,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_RUNS)),
        }
    }
}

/// The routes.
pub fn app(service: Service) -> Router {
    Router::new()
        .route("/runs", post(start_run))
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(service)
}

#[derive(serde::Deserialize)]
struct RunRequest {
    script: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// One event as a JSON object (`None` for kinds this service does not show).
pub fn event_json(e: &RunEvent) -> Option<Value> {
    Some(match e {
        RunEvent::Preparing { what } => json!({ "event": "preparing", "what": what }),
        RunEvent::RunStarted {
            run,
            steps,
            resumed,
        } => {
            json!({ "event": "run_started", "run": run.0, "steps": steps, "resumed": resumed })
        }
        RunEvent::StepStarted { step } => json!({ "event": "step_started", "step": step }),
        RunEvent::StepRetrying {
            step,
            attempt,
            error,
            delay,
        } => json!({
            "event": "step_retrying", "step": step, "attempt": attempt, "error": error,
            "delay_ms": delay.as_millis() as u64,
        }),
        RunEvent::StepLog {
            step,
            attempt,
            line,
        } => json!({
            "event": "log", "step": step, "attempt": attempt, "level": line.level, "message": line.message,
        }),
        RunEvent::StepMetric { step, metric, .. } => {
            json!({ "event": "metric", "step": step, "name": metric.name, "value": metric.value })
        }
        RunEvent::Artifact {
            step,
            output,
            digest,
        } => {
            json!({ "event": "artifact", "step": step, "output": output, "digest": digest.to_hex() })
        }
        RunEvent::StepFinished {
            step,
            state,
            duration,
            error,
        } => json!({
            "event": "step_finished", "step": step, "state": state.as_str(),
            "duration_ms": duration.as_millis() as u64, "error": error,
        }),
        _ => return None,
    })
}

/// Cancels the run when the response stream is dropped (client gone).
struct CancelOnDrop(CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn start_run(State(svc): State<Service>, body: axum::body::Bytes) -> Response {
    let req: RunRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected JSON {{\"script\": \"...\", \"params\": {{...}}}}: {e}"),
            );
        }
    };
    let plan =
        match weir_dsl::compile_str_with(&req.script, "request.rhai", &svc.project, &req.params) {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        };
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let cancel = CancellationToken::new();
    let guard = CancelOnDrop(cancel.clone());
    let opts = RunOptions {
        cancel: Some(cancel),
        ..Default::default()
    };
    let slots = svc.slots.clone();
    let runtime = svc.runtime.clone();
    tokio::spawn(async move {
        let Ok(_slot) = slots.acquire_owned().await else {
            return;
        };
        // The run handle: its events as they happen, then its report.
        let ended = match runtime.start(Arc::new(plan), opts).await {
            Ok(mut run) => {
                while let Some(e) = run.next_event().await {
                    if let Some(v) = event_json(&e) {
                        let _ = tx.send(v);
                    }
                }
                run.finish().await
            }
            Err(e) => Err(e),
        };
        let last = match ended {
            Ok(report) => json!({
                "event": "run_finished", "run": report.run.0, "state": report.state.as_str(),
                "error": report.error,
            }),
            Err(e) => json!({ "event": "run_failed_to_start", "error": format!("{e:#}") }),
        };
        let _ = tx.send(last);
    });
    let stream = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let v = rx.recv().await?;
        let line = format!("{v}\n");
        Some((Ok::<_, std::convert::Infallible>(line), (rx, guard)))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot build the response",
            )
        })
}
