//! The REST API and the dashboard's files. Every route but `/api/health`
//! needs the token (`Authorization: Bearer`, the `weir_token` cookie, or
//! `?token=` on a GET, which sets the cookie); Host and Origin must name
//! this server; bodies and concurrent requests are bounded. Errors are JSON
//! `{"error": "..."}`. `docs/openapi.json` documents every route in
//! [`ROUTES`], and the tests check both agree.

use super::{ApiError, Server, lock};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use weir_runtime::names::UnitName;
use weir_runtime::store::StoredObject;
use weir_runtime::tree::{EntryKind, Tree};
use weir_runtime::{Digest, InputSource, RunId};

type S = State<Arc<Server>>;

/// Every route: method and path (axum syntax). The router is built from
/// this list, so it is the one list of what the server answers.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/"),
    ("GET", "/app.js"),
    ("GET", "/app.css"),
    ("GET", "/api/pipelines"),
    ("POST", "/api/pipelines/{name}/runs"),
    ("GET", "/api/pipelines/{name}/metrics"),
    ("GET", "/api/runs"),
    ("GET", "/api/runs/{id}"),
    ("POST", "/api/runs/{id}/cancel"),
    ("POST", "/api/runs/{id}/retry"),
    ("GET", "/api/runs/{id}/steps/{step}"),
    ("GET", "/api/runs/{id}/steps/{step}/logs"),
    ("GET", "/api/runs/{id}/steps/{step}/children"),
    ("GET", "/api/runs/{id}/metrics"),
    ("GET", "/api/compare"),
    ("GET", "/api/artifacts/{digest}"),
    ("GET", "/api/artifacts/{digest}/files/{*path}"),
    ("GET", "/api/artifacts/{digest}/preview/{*path}"),
    ("GET", "/api/artifacts/{digest}/lineage"),
    ("GET", "/api/models"),
    ("POST", "/api/models/{name}/versions/{version}/stage"),
    ("GET", "/api/schedules"),
    ("POST", "/api/schedules/{name}/pause"),
    ("POST", "/api/schedules/{name}/resume"),
    ("POST", "/api/schedules/{name}/backfill"),
    ("GET", "/api/workers"),
    ("GET", "/metrics"),
];

/// Largest request body accepted: 64 KiB.
const MAX_BODY: usize = 64 << 10;
/// Requests served at once; more get 503.
const MAX_CONCURRENT: usize = 128;
/// Bytes of a file shown in a preview.
const PREVIEW_BYTES: u64 = 64 << 10;

fn handler(method: &str, path: &str) -> MethodRouter<Arc<Server>> {
    match (method, path) {
        ("GET", "/api/health") => get(health),
        ("GET", "/") => get(index),
        ("GET", "/app.js") => get(app_js),
        ("GET", "/app.css") => get(app_css),
        ("GET", "/api/pipelines") => get(pipelines),
        ("POST", "/api/pipelines/{name}/runs") => post(trigger),
        ("GET", "/api/pipelines/{name}/metrics") => get(pipeline_metrics),
        ("GET", "/api/runs") => get(runs),
        ("GET", "/api/runs/{id}") => get(run_detail),
        ("POST", "/api/runs/{id}/cancel") => post(cancel),
        ("POST", "/api/runs/{id}/retry") => post(retry),
        ("GET", "/api/runs/{id}/steps/{step}") => get(step_detail),
        ("GET", "/api/runs/{id}/steps/{step}/logs") => get(step_logs),
        ("GET", "/api/runs/{id}/steps/{step}/children") => get(step_children),
        ("GET", "/api/runs/{id}/metrics") => get(run_metrics),
        ("GET", "/api/compare") => get(compare),
        ("GET", "/api/artifacts/{digest}") => get(artifact),
        ("GET", "/api/artifacts/{digest}/files/{*path}") => get(artifact_file),
        ("GET", "/api/artifacts/{digest}/preview/{*path}") => get(artifact_preview),
        ("GET", "/api/artifacts/{digest}/lineage") => get(artifact_lineage),
        ("GET", "/api/models") => get(models),
        ("POST", "/api/models/{name}/versions/{version}/stage") => post(promote),
        ("GET", "/api/schedules") => get(schedules),
        ("POST", "/api/schedules/{name}/pause") => post(pause_schedule),
        ("POST", "/api/schedules/{name}/resume") => post(resume_schedule),
        ("POST", "/api/schedules/{name}/backfill") => post(backfill),
        ("GET", "/api/workers") => get(workers),
        ("GET", "/metrics") => get(prometheus),
        // A route listed without a handler answers 501, and the route test fails.
        _ => get(not_implemented).post(not_implemented),
    }
}

/// The cluster's workers and the queue's depth.
async fn workers(State(s): S) -> Result<Response, ApiError> {
    let v = blocking(move || {
        let Some(q) = &s.queue else {
            return Ok(json!({ "cluster": false, "workers": [], "queued": 0, "running": 0 }));
        };
        let workers = q
            .workers(weir_runtime::cluster::WORKERS_LISTED)
            .map_err(ApiError::internal)?;
        let depth = q.depth().map_err(ApiError::internal)?;
        Ok(json!({
            "cluster": true,
            "workers": workers,
            "queued": depth.queued,
            "running": depth.leased,
        }))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// Prometheus metrics, in the text exposition format.
async fn prometheus(State(server): S) -> Result<Response, ApiError> {
    let text = tokio::task::spawn_blocking(move || {
        let now = server.activity();
        let mut text = server.metrics.render(&now);
        if let Some(q) = &server.queue {
            match (q.depth(), q.workers(weir_runtime::cluster::WORKERS_LISTED)) {
                (Ok(depth), Ok(workers)) => {
                    text.push_str(&super::metrics::render_cluster(&depth, &workers));
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("/metrics: the cluster's queue: {e:#}");
                }
            }
        }
        text
    })
    .await
    .map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

async fn not_implemented() -> Response {
    ApiError(StatusCode::NOT_IMPLEMENTED, "not implemented".into()).into_response()
}

/// The router: every route of [`ROUTES`] behind the guard.
pub fn router(server: Arc<Server>) -> Router {
    let mut r: Router<Arc<Server>> = Router::new();
    for (method, path) in ROUTES {
        r = r.route(path, handler(method, path));
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    r.fallback(|| async { ApiError::not_found("no such route").into_response() })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            (Arc::clone(&server), limit),
            guard,
        ))
        .with_state(server)
}

/// Errors the framework answers itself (a query string that does not parse,
/// a body over the cap, a method a route does not take) in the API's one
/// error form, `{"error": "..."}`, like every error of weir's own.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let msg = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut out = ApiError(status, msg).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix("weir_token="))
        .map(str::to_string)
        .next()
}

fn query_token(req: &Request) -> Option<String> {
    req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
            .next()
    })
}

/// Host/Origin checks, the token, the concurrency bound and security headers.
async fn guard(
    State((server, limit)): State<(Arc<Server>, Arc<tokio::sync::Semaphore>)>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = limit.try_acquire_owned() else {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests at once".into(),
        )
        .into_response();
    };
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !server.allowed_hosts.iter().any(|h| h == host) {
        return ApiError(
            StatusCode::MISDIRECTED_REQUEST,
            format!("host {host:?} is not one this server answers to (weir serve --allow-host)"),
        )
        .into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .is_some_and(|o| server.allowed_hosts.iter().any(|h| h == o));
        if !ok {
            return ApiError(
                StatusCode::FORBIDDEN,
                "cross-origin requests are refused".into(),
            )
            .into_response();
        }
    }
    let path = req.uri().path().to_string();
    let mut set_cookie = false;
    // The health check and the dashboard's static files (no data in them:
    // opened without the token, the page asks for it) need no token.
    let public = matches!(path.as_str(), "/api/health" | "/" | "/app.js" | "/app.css");
    {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let query = (req.method() == Method::GET)
            .then(|| query_token(&req))
            .flatten();
        let ok = |t: &Option<String>| {
            t.as_deref()
                .is_some_and(|t| ct_eq(t.as_bytes(), server.token.as_bytes()))
        };
        if ok(&query) {
            set_cookie = true;
        } else if !public && !ok(&bearer) && !ok(&cookie_token(headers)) {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "a token is required: Authorization: Bearer TOKEN (weir serve prints it)".into(),
            )
            .into_response();
        }
    }
    // A body declared larger than the cap is refused before any of it is
    // read (the body limit alone would read up to the cap first).
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        let mut resp = ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {MAX_BODY} bytes"),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if set_cookie
        && let Ok(v) = HeaderValue::from_str(&format!(
            "weir_token={}; HttpOnly; SameSite=Strict; Path=/",
            server.token
        ))
    {
        h.append(header::SET_COOKIE, v);
    }
    resp
}

async fn health() -> Response {
    axum::Json(json!({ "ok": true })).into_response()
}

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

async fn app_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// Run `id`'s record, or 404.
fn need_run(
    records: &dyn weir_runtime::records::Records,
    id: RunId,
) -> Result<weir_runtime::records::RunSummary, ApiError> {
    records
        .run(id)?
        .ok_or_else(|| ApiError::not_found(format!("there is no run {id}")))
}

/// The plan run `id` recorded, if it still reads.
fn recorded_plan(
    records: &dyn weir_runtime::records::Records,
    id: RunId,
) -> Result<Option<weir_runtime::Plan>, ApiError> {
    Ok(records
        .plan_json(id)?
        .and_then(|j| serde_json::from_str(&j).ok()))
}

fn parse_run(id: &str) -> Result<RunId, ApiError> {
    id.parse::<i64>()
        .map(RunId)
        .map_err(|_| ApiError::bad(format!("expected a run number, found {id:?}")))
}

async fn pipelines(State(s): S) -> Result<Response, ApiError> {
    let server = Arc::clone(&s);
    let found = blocking(move || Ok(server.rescan())).await?;
    let now = chrono::Utc::now();
    let list: Vec<Value> = found
        .values()
        .map(|p| {
            let next = p.schedule.as_deref().and_then(|c| {
                super::schedule::Schedule::parse(c, p.serve.timezone.as_deref())
                    .ok()
                    .and_then(|sc| sc.next_after(now))
                    .map(super::schedule::slot_text)
            });
            let mut v = serde_json::to_value(p).unwrap_or_default();
            v["active_runs"] = json!(s.active_count(&p.name));
            v["next_fire"] = json!(next);
            v
        })
        .collect();
    Ok(axum::Json(json!({ "pipelines": list })).into_response())
}

#[derive(serde::Deserialize)]
struct SeriesQuery {
    /// The newest this many runs (default 50, at most 500).
    limit: Option<usize>,
}

/// Each metric of a pipeline across its newest runs, oldest first (the F1
/// of every nightly run), with each run's state and whether a gate
/// skipped a step in it, and the thresholds the pipeline's gates compare
/// metrics with.
async fn pipeline_metrics(
    State(s): S,
    Path(name): Path<String>,
    Query(q): Query<SeriesQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let server = Arc::clone(&s);
    let v = blocking(move || {
        let p = server
            .pipelines()
            .get(&name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("there is no pipeline '{name}'")))?;
        let records = server.runtime.records();
        let mut runs: Vec<_> = records
            .runs(100_000)?
            .into_iter()
            .filter(|r| r.pipeline == name)
            .take(limit)
            .collect();
        runs.reverse();
        let mut series: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut points = Vec::new();
        for r in &runs {
            let steps = records.steps(r.id)?;
            let gated = steps.iter().any(|s| s.state == weir_runtime::StepState::Skipped);
            points.push(json!({ "run": r.id.0, "state": r.state.to_string(), "gated": gated, "started_ms": r.started_ms }));
            for st in steps
                .iter()
                .filter(|s| UnitName::parse(&s.step).child.is_none())
            {
                for (m, v) in &st.metrics {
                    series.entry(format!("{}.{m}", st.step)).or_default().push(json!({
                        "run": r.id.0, "value": v,
                    }));
                }
            }
        }
        // Thresholds: `metric op constant` comparisons in the current
        // script's gates.
        let mut thresholds = Vec::new();
        let script = server.project.join(&p.script);
        if let Ok(plan) = weir_dsl::compile_file(&script) {
            for st in &plan.steps {
                if let Some(c) = &st.when {
                    collect_thresholds(c, &st.name, &mut thresholds);
                }
            }
        }
        Ok(json!({ "pipeline": name, "runs": points, "series": series, "thresholds": thresholds }))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// `step.metric op value` comparisons in a gate `c` of step `gated`.
fn collect_thresholds(c: &weir_runtime::plan::Condition, gated: &str, out: &mut Vec<Value>) {
    use weir_runtime::plan::{Condition, Operand};
    match c {
        Condition::Compare { left, op, right } => {
            let (metric, value, flipped) = match (left, right) {
                (Operand::Metric { step, name }, Operand::Value(v)) => {
                    (format!("{step}.{name}"), v, false)
                }
                (Operand::Value(v), Operand::Metric { step, name }) => {
                    (format!("{step}.{name}"), v, true)
                }
                _ => return,
            };
            if let Some(v) = value.as_f64() {
                out.push(json!({ "metric": metric, "op": op, "value": v, "metric_on_right": flipped, "gates": gated }));
            }
        }
        Condition::All(cs) | Condition::Any(cs) => {
            for c in cs {
                collect_thresholds(c, gated, out);
            }
        }
        Condition::Not(c) => collect_thresholds(c, gated, out),
    }
}

/// Params from a JSON object: strings as they are, other scalars as JSON text.
fn params_from(body: &Bytes) -> Result<BTreeMap<String, String>, ApiError> {
    if body.is_empty() {
        return Ok(BTreeMap::new());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad(format!(
            "the body must be a JSON object such as {{\"params\": {{}}}}, found {}",
            match v {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
            }
        )));
    }
    let Some(params) = v.get("params") else {
        return Ok(BTreeMap::new());
    };
    let obj = params
        .as_object()
        .ok_or_else(|| ApiError::bad("`params` must be an object of name: value"))?;
    obj.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                _ => {
                    return Err(ApiError::bad(format!(
                        "param '{k}': only numbers, booleans and strings can be set, found {v}"
                    )));
                }
            };
            Ok((k.clone(), text))
        })
        .collect()
}

async fn trigger(State(s): S, Path(name): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let params = params_from(&body)?;
    let run = s
        .trigger(&name, params, None, super::Origin::Manual)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "run": run.0 }))).into_response())
}

#[derive(serde::Deserialize)]
struct RunsQuery {
    pipeline: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    /// Skip this many of the newest matching runs (paging).
    offset: Option<usize>,
    /// Only runs this started: `manual`, `schedule` or `backfill`.
    source: Option<String>,
}

fn run_json(s: &Server, r: &weir_runtime::records::RunSummary) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["duration_ms"] = json!(r.ended_ms.unwrap_or(now) - r.started_ms);
    let active = s.active(r.id);
    v["active"] = json!(active.is_some());
    // Before its first step: what it is building or loading.
    v["preparing"] = json!(active.and_then(|a| lock(&a.live).preparing.clone()));
    v
}

async fn runs(State(s): S, Query(q): Query<RunsQuery>) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(50).min(1000);
    if let Some(src) = q.source.as_deref()
        && !super::Origin::SOURCES.contains(&src)
    {
        return Err(ApiError::bad(format!(
            "source {src:?} is not one of {}",
            super::Origin::SOURCES.join(", ")
        )));
    }
    if let Some(st) = q.state.as_deref()
        && weir_runtime::RunState::parse(st).is_none()
    {
        return Err(ApiError::bad(format!(
            "state {st:?} is not a run state (running, succeeded, failed, cancelled, interrupted)"
        )));
    }
    let server = Arc::clone(&s);
    let list = blocking(move || {
        let filtered = q.pipeline.is_some() || q.state.is_some() || q.source.is_some();
        let offset = q.offset.unwrap_or(0);
        let all = server.runtime.records().runs(if filtered {
            100_000
        } else {
            offset.saturating_add(limit)
        })?;
        let matching: Vec<&weir_runtime::records::RunSummary> = all
            .iter()
            .filter(|r| q.pipeline.as_deref().is_none_or(|p| r.pipeline == p))
            .filter(|r| {
                q.state
                    .as_deref()
                    .is_none_or(|st| r.state.to_string() == st)
            })
            .collect();
        // What started each run, and its params (noted by this server).
        let sources = match &q.source {
            Some(_) => {
                let ids: Vec<i64> = matching.iter().map(|r| r.id.0).collect();
                server.slots.run_sources(&ids)?
            }
            None => Default::default(),
        };
        let page: Vec<&weir_runtime::records::RunSummary> = matching
            .into_iter()
            .filter(|r| {
                q.source
                    .as_deref()
                    .is_none_or(|want| sources.get(&r.id.0).is_some_and(|s| s.source == want))
            })
            .skip(offset)
            .take(limit)
            .collect();
        let sources = if q.source.is_some() {
            sources
        } else {
            let ids: Vec<i64> = page.iter().map(|r| r.id.0).collect();
            server.slots.run_sources(&ids)?
        };
        Ok(page
            .into_iter()
            .map(|r| {
                let mut v = run_json(&server, r);
                if let Some(src) = sources.get(&r.id.0) {
                    v["source"] = json!(src.source);
                    if let Some(t) = &src.trigger {
                        v["trigger"] = json!(t);
                    }
                    v["params"] = json!(src.params);
                }
                v
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(axum::Json(json!({ "runs": list })).into_response())
}

#[derive(serde::Deserialize)]
struct DetailQuery {
    /// Skip this many of the run's recorded steps (paging `steps`).
    steps_after: Option<usize>,
    /// At most this many recorded steps (default and maximum 1000).
    steps_limit: Option<usize>,
}

async fn run_detail(
    State(s): S,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Result<Response, ApiError> {
    let id = parse_run(&id)?;
    let server = Arc::clone(&s);
    let v = blocking(move || {
        let records = server.runtime.records();
        let r = need_run(records, id)?;
        let steps = records.steps(id)?;
        let plan = recorded_plan(records, id)?;
        let (live, live_started) = server
            .active(id)
            .map(|a| {
                let l = lock(&a.live);
                (l.states.clone(), l.started.clone())
            })
            .unwrap_or_default();
        let recorded: BTreeMap<&str, &weir_runtime::records::StepSummary> =
            steps.iter().map(|s| (s.step.as_str(), s)).collect();
        let state_of = |name: &str| -> String {
            if let Some(s) = recorded.get(name) {
                s.state.to_string()
            } else if let Some(s) = live.get(name) {
                s.clone()
            } else if r.ended_ms.is_some() {
                "not run".into()
            } else {
                "pending".into()
            }
        };
        // Map children (`step[item]`) by their step, in one pass: the
        // route stays linear in the number of steps and children.
        let mut children: HashMap<&str, Vec<&weir_runtime::records::StepSummary>> =
            HashMap::new();
        let mut top = Vec::new();
        for c in &steps {
            let name = UnitName::parse(&c.step);
            match name.child {
                Some(_) => children.entry(name.step).or_default().push(c),
                None => top.push(c),
            }
        }
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        if let Some(plan) = &plan {
            let deps = plan.dependencies();
            for (i, st) in plan.steps.iter().enumerate() {
                let mine = children.get(st.name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
                for c in mine {
                    *by_state.entry(c.state.to_string()).or_default() += 1;
                }
                nodes.push(json!({
                    "name": st.name,
                    "state": state_of(&st.name),
                    "gated": st.when.is_some(),
                    "map": st.map.is_some(),
                    // The first children; all of them, paged, from the
                    // step's `children` route.
                    "children": mine.iter().take(MAX_NODE_CHILDREN).map(|c| json!({ "name": c.step, "state": c.state.to_string() })).collect::<Vec<_>>(),
                    "children_total": mine.len(),
                    "children_by_state": by_state,
                    "origin": st.origin,
                }));
                for (input, src) in &st.inputs {
                    if let InputSource::Step { step, output } = src {
                        edges.push(json!({ "from": step, "to": st.name, "output": output, "input": input, "kind": "input" }));
                    }
                }
                if let Some(m) = &st.map {
                    edges.push(json!({ "from": m.step, "to": st.name, "output": m.output, "kind": "map" }));
                }
                // Gates read upstream values: an edge from each step read.
                for &d in &deps[i] {
                    let from = &plan.steps[d].name;
                    let drawn = st.inputs.values().any(|src| matches!(src, InputSource::Step { step, .. } if step == from))
                        || st.map.as_ref().is_some_and(|m| &m.step == from);
                    if !drawn {
                        edges.push(json!({ "from": from, "to": st.name, "kind": "gate" }));
                    }
                }
            }
        }
        // Each attempt of the first steps (as many as the page's table
        // lists), for the timeline: when, and what it used.
        let mut attempts = records.run_attempts(id)?;
        let listed: std::collections::HashSet<&str> = top
            .iter()
            .take(MAX_DETAIL_STEPS)
            .map(|s| s.step.as_str())
            .collect();
        attempts.retain(|step, _| listed.contains(step.as_str()));
        // The recorded steps, a page at a time (a 10,000-step chain's
        // graph carries every state; its records come in pages).
        let steps_total = top.len();
        let after = q.steps_after.unwrap_or(0).min(steps_total);
        let limit = q.steps_limit.unwrap_or(MAX_PAGE_STEPS).clamp(1, MAX_PAGE_STEPS);
        let page: Vec<_> = top[after..].iter().take(limit).collect();
        let steps_next = (after + page.len() < steps_total).then_some(after + page.len());
        let mut run = run_json(&server, &r);
        run["params"] = json!(plan.as_ref().map(|p| p.params.clone()));
        Ok(json!({
            "attempts": attempts,
            "run": run,
            // The pipeline's steps; map children are on their node and
            // behind GET /api/runs/{id}/steps/{step}/children.
            "steps": page,
            "steps_total": steps_total,
            "steps_next": steps_next,
            "live": live,
            "live_started": live_started,
            "graph": { "nodes": nodes, "edges": edges },
        }))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

async fn cancel(State(s): S, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_run(&id)?;
    let Some(active) = s.active(id) else {
        // An interrupted run (its process died) is cancelled in its record.
        let server = Arc::clone(&s);
        let r = blocking(move || need_run(server.runtime.records(), id)).await?;
        if r.state != weir_runtime::RunState::Interrupted {
            return Err(ApiError::conflict(format!("run {id} is not active")));
        }
        let server = Arc::clone(&s);
        blocking(move || {
            Ok(server
                .runtime
                .records()
                .commit(&[weir_runtime::records::RecordOp::RunEnded {
                    run: id,
                    state: weir_runtime::RunState::Cancelled,
                    error: Some("cancelled after it was interrupted".into()),
                }])?)
        })
        .await?;
        return Ok((
            StatusCode::OK,
            axum::Json(json!({ "run": id.0, "cancelling": false, "cancelled": true })),
        )
            .into_response());
    };
    active.cancel.cancel();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "run": id.0, "cancelling": true })),
    )
        .into_response())
}

async fn retry(State(s): S, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_run(&id)?;
    if s.active(id).is_some() {
        return Err(ApiError::conflict(format!("run {id} is still active")));
    }
    let server = Arc::clone(&s);
    let r = blocking(move || need_run(server.runtime.records(), id)).await?;
    if r.state == weir_runtime::RunState::Succeeded {
        return Err(ApiError::conflict(format!(
            "run {id} succeeded; there is nothing to retry"
        )));
    }
    // The run's own params, so the retry continues the same run.
    let server = Arc::clone(&s);
    let params = blocking(move || {
        let plan = recorded_plan(server.runtime.records(), id)?;
        Ok(plan
            .map(|p| {
                p.params
                    .into_iter()
                    .map(|(k, v)| {
                        let text = match v {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (k, text)
                    })
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default())
    })
    .await?;
    let run = s
        .trigger(&r.pipeline, params, Some(id), super::Origin::Manual)
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "run": run.0 }))).into_response())
}

async fn step_detail(
    State(s): S,
    Path((id, step)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_run(&id)?;
    let server = Arc::clone(&s);
    let v = blocking(move || {
        let records = server.runtime.records();
        need_run(records, id)?;
        let plan = recorded_plan(records, id)?;
        let base = UnitName::parse(&step).step.to_string();
        let planned = plan
            .as_ref()
            .and_then(|p| p.steps.iter().find(|s| s.name == base).cloned());
        let recorded = records.steps(id)?.into_iter().find(|s| s.step == step);
        if planned.is_none() && recorded.is_none() {
            return Err(ApiError::not_found(format!("run {id} has no step '{step}'")));
        }
        let live = server
            .active(id)
            .and_then(|a| lock(&a.live).states.get(&step).cloned());
        let attempts = records.attempts(id, &step)?;
        Ok(json!({
            "run": id.0,
            "step": step,
            "state": recorded.as_ref().map(|r| r.state.to_string()).or(live).unwrap_or_else(|| "pending".into()),
            "record": recorded,
            "attempts": attempts,
            "params": planned.as_ref().map(|p| p.params.clone()),
            "limits": planned.as_ref().map(|p| p.limits),
            "component": planned.as_ref().map(|p| p.component.clone()),
            // What a person reads: where the component comes from.
            "source": planned.as_ref().map(|p| match &p.component {
                weir_runtime::ComponentSource::Crate(dir) => format!("step crate {}", dir.display()),
                weir_runtime::ComponentSource::Wasm(f) => format!("component {}", f.display()),
            }),
            "map": base == step && planned.as_ref().is_some_and(|p| p.map.is_some()),
        }))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    /// Only lines after this position: the `next` of the previous page.
    after: Option<u64>,
    /// At most this many lines (default and maximum [`LOG_PAGE_LINES`]);
    /// a page also stops before [`LOG_PAGE_BYTES`] of text.
    limit: Option<usize>,
    /// Stream the lines as NDJSON while the step runs, ending with a
    /// `{"done": true, "state": ...}` line.
    follow: Option<bool>,
}

fn line_json(attempt: u32, l: &weir_runtime::records::LogLine) -> Value {
    json!({"attempt": attempt, "level": l.level, "message": l.message})
}

/// `?follow=true`: the step's lines as NDJSON, as they happen, then a last
/// line with its final state. Lines come from the run's live log while it
/// is active and from the records once it has ended (skipping those sent).
fn follow_logs(s: Arc<Server>, id: RunId, step: String) -> Response {
    struct Cursor {
        s: Arc<Server>,
        id: RunId,
        step: String,
        after: u64,
        sent: usize,
        done: bool,
    }
    let start = Cursor {
        s,
        id,
        step,
        after: 0,
        sent: 0,
        done: false,
    };
    let stream = futures_util::stream::unfold(start, |mut c| async move {
        if c.done {
            return None;
        }
        loop {
            let mut out = String::new();
            match c.s.active(c.id) {
                Some(active) => {
                    let live = lock(&active.live);
                    for l in live
                        .logs
                        .iter()
                        .filter(|l| l.step == c.step && l.seq > c.after)
                    {
                        out.push_str(&line_json(l.attempt, &l.line).to_string());
                        out.push('\n');
                        c.sent += 1;
                    }
                    c.after = live.seq;
                    let state = live.states.get(&c.step).cloned();
                    if let Some(st) = state.filter(|st| st != "running" && st != "retrying") {
                        out.push_str(&json!({"done": true, "state": st}).to_string());
                        out.push('\n');
                        c.done = true;
                    }
                }
                None => {
                    // Recorded: the rest, a page per chunk.
                    let (s, id, step, skip) = (Arc::clone(&c.s), c.id, c.step.clone(), c.sent);
                    let recorded = tokio::task::spawn_blocking(move || {
                        let records = s.runtime.records();
                        let page = records
                            .logs_page(id, &step, skip as u64, LOG_PAGE_LINES, LOG_PAGE_BYTES)
                            .unwrap_or_default();
                        let state = (!page.more).then(|| {
                            records
                                .steps(id)
                                .unwrap_or_default()
                                .into_iter()
                                .find(|r| r.step == step)
                                .map(|r| r.state.to_string())
                        });
                        (page, state)
                    })
                    .await
                    .unwrap_or_default();
                    for (a, l) in &recorded.0.lines {
                        out.push_str(&line_json(*a, l).to_string());
                        out.push('\n');
                        c.sent += 1;
                    }
                    if let Some(state) = recorded.1 {
                        let state = state.unwrap_or_else(|| "not run".into());
                        out.push_str(&json!({"done": true, "state": state}).to_string());
                        out.push('\n');
                        c.done = true;
                    }
                }
            }
            if !out.is_empty() {
                return Some((Ok::<_, std::convert::Infallible>(Bytes::from(out)), c));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn step_logs(
    State(s): S,
    Path((id, step)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let id = parse_run(&id)?;
    if q.follow == Some(true) {
        let server = Arc::clone(&s);
        blocking(move || need_run(server.runtime.records(), id)).await?;
        return Ok(follow_logs(Arc::clone(&s), id, step));
    }
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(LOG_PAGE_LINES).clamp(1, LOG_PAGE_LINES);
    // While the run is active: the live lines of this step after `after`
    // (positions in the run's live log).
    if let Some(active) = s.active(id) {
        let live = lock(&active.live);
        let mut lines = Vec::new();
        let (mut bytes, mut next, mut more) = (0usize, live.seq, false);
        for l in live.logs.iter().filter(|l| l.step == step && l.seq > after) {
            let n = l.line.message.len();
            if lines.len() >= limit || (!lines.is_empty() && bytes + n > LOG_PAGE_BYTES) {
                more = true;
                break;
            }
            bytes += n;
            next = l.seq;
            lines.push(line_json(l.attempt, &l.line));
        }
        if !more {
            next = live.seq;
        }
        let done = live
            .states
            .get(&step)
            .is_some_and(|st| st != "running" && st != "retrying");
        return Ok(axum::Json(json!({
            "live": true,
            "done": done && !more,
            "next": next,
            "more": more,
            "lines": lines,
        }))
        .into_response());
    }
    // Recorded: positions are line numbers in the step's log.
    let server = Arc::clone(&s);
    let page = blocking(move || {
        let records = server.runtime.records();
        need_run(records, id)?;
        Ok(records.logs_page(id, &step, after, limit, LOG_PAGE_BYTES)?)
    })
    .await?;
    Ok(axum::Json(json!({
        "live": false,
        "done": !page.more,
        "next": after + page.lines.len() as u64,
        "more": page.more,
        "lines": page.lines.iter().map(|(a, l)| line_json(*a, l)).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(serde::Deserialize)]
struct ChildrenQuery {
    /// Only children after this many.
    after: Option<usize>,
    /// At most this many (default and maximum 1000).
    limit: Option<usize>,
}

/// A map step's children in a run (recorded ones, in item order), a page
/// at a time.
async fn step_children(
    State(s): S,
    Path((id, step)): Path<(String, String)>,
    Query(q): Query<ChildrenQuery>,
) -> Result<Response, ApiError> {
    let id = parse_run(&id)?;
    let server = Arc::clone(&s);
    let v = blocking(move || {
        let records = server.runtime.records();
        need_run(records, id)?;
        let prefix = format!("{step}[");
        let all: Vec<_> = records
            .steps(id)?
            .into_iter()
            .filter(|c| c.step.starts_with(&prefix))
            .collect();
        let after = q.after.unwrap_or(0).min(all.len());
        let limit = q.limit.unwrap_or(1000).clamp(1, 1000);
        let page: Vec<Value> = all[after..]
            .iter()
            .take(limit)
            .map(|c| {
                json!({
                    "name": c.step,
                    "state": c.state.to_string(),
                    "duration_ms": c.ended_ms - c.started_ms,
                    "error": c.error,
                })
            })
            .collect();
        let next = after + page.len();
        Ok(json!({
            "run": id.0,
            "step": step,
            "total": all.len(),
            "next": next,
            "more": next < all.len(),
            "children": page,
        }))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// Recorded steps in one page of a run's detail, at most.
const MAX_PAGE_STEPS: usize = 1000;

/// Steps whose attempts a run's detail carries, at most (the first ones).
const MAX_DETAIL_STEPS: usize = 500;

/// Map children listed on a graph node, at most.
const MAX_NODE_CHILDREN: usize = 100;

/// Lines in one page of a step's logs, at most.
const LOG_PAGE_LINES: usize = 1000;
/// Bytes of log text in one page, at most (a page holds one line at least).
const LOG_PAGE_BYTES: usize = 1 << 20;

async fn run_metrics(State(s): S, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_run(&id)?;
    let server = Arc::clone(&s);
    let v = blocking(move || {
        let records = server.runtime.records();
        need_run(records, id)?;
        let metrics: BTreeMap<String, BTreeMap<String, f64>> = records
            .steps(id)?
            .into_iter()
            .filter(|s| !s.metrics.is_empty())
            .map(|s| (s.step, s.metrics))
            .collect();
        Ok(json!({ "run": id.0, "metrics": metrics }))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

#[derive(serde::Deserialize)]
struct CompareQuery {
    runs: String,
}

async fn compare(State(s): S, Query(q): Query<CompareQuery>) -> Result<Response, ApiError> {
    let ids = q
        .runs
        .split(',')
        .map(parse_run)
        .collect::<Result<Vec<_>, _>>()?;
    if ids.len() < 2 {
        return Err(ApiError::bad("compare needs two or more runs: ?runs=3,4"));
    }
    let server = Arc::clone(&s);
    let v = blocking(move || {
        for id in &ids {
            need_run(server.runtime.records(), *id)?;
        }
        Ok(crate::commands::metrics::comparison_json(
            server.runtime.records(),
            &ids,
        )?)
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

fn resolve_digest(s: &Server, text: &str) -> Result<Digest, ApiError> {
    if text.len() < 6 || text.len() > 64 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::bad(format!(
            "expected an artifact digest (6 to 64 hex characters), found {text:?}"
        )));
    }
    s.runtime
        .store()
        .resolve(text)
        .map_err(|e| ApiError::not_found(e.to_string()))
}

async fn artifact(State(s): S, Path(digest): Path<String>) -> Result<Response, ApiError> {
    let server = Arc::clone(&s);
    let v = blocking(move || {
        let d = resolve_digest(&server, &digest)?;
        let store = server.runtime.store();
        let tree = store
            .read_tree(&d)
            .map_err(|e| ApiError::not_found(format!("artifact {}: {e}", d.short())))?;
        let producer = server.runtime.records().producer(&d, None).ok().flatten();
        Ok(json!({
            "digest": d.to_hex(),
            "bytes": tree.bytes(),
            "entries": tree.entries.iter().map(|e| json!({
                "name": e.name,
                "kind": if e.kind == EntryKind::Folder { "folder" } else { "file" },
                "digest": e.digest.to_hex(),
                "bytes": e.bytes,
            })).collect::<Vec<_>>(),
            "producer": producer.map(|(run, step)| json!({"run": run.0, "step": step})),
        }))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// An artifact's lineage as a tree (as `weir lineage --json`): the step
/// that made it, with its component and params, and what that step read,
/// down to host files (at most 32 steps deep).
async fn artifact_lineage(State(s): S, Path(digest): Path<String>) -> Result<Response, ApiError> {
    let server = Arc::clone(&s);
    let v = blocking(move || {
        let d = resolve_digest(&server, &digest)?;
        let tree = weir_runtime::lineage::lineage(server.runtime.records(), &d, 32)?;
        serde_json::to_value(tree).map_err(ApiError::internal)
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// Walks `path` through the artifact's trees by entry name: only names the
/// trees hold can be reached, so `..`, absolute paths and encoded slashes
/// name nothing.
fn find_file(s: &Server, d: &Digest, path: &str) -> Result<(String, Digest, u64), ApiError> {
    let store = s.runtime.store();
    let mut tree: Tree = store
        .read_tree(d)
        .map_err(|e| ApiError::not_found(format!("artifact {}: {e}", d.short())))?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(ApiError::bad("name a file inside the artifact"));
    }
    for (i, part) in parts.iter().enumerate() {
        let e = tree
            .entries
            .iter()
            .find(|e| e.name == *part)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!("artifact {} has no '{path}'", d.short()))
            })?;
        let last = i + 1 == parts.len();
        match (e.kind, last) {
            (EntryKind::File, true) => return Ok((e.name, e.digest, e.bytes)),
            (EntryKind::Folder, false) => {
                tree = store.read_tree(&e.digest).map_err(ApiError::internal)?;
            }
            _ => {
                return Err(ApiError::not_found(format!(
                    "'{path}' in artifact {} is not a file",
                    d.short()
                )));
            }
        }
    }
    Err(ApiError::not_found(format!(
        "artifact {} has no '{path}'",
        d.short()
    )))
}

async fn artifact_file(
    State(s): S,
    Path((digest, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let server = Arc::clone(&s);
    let (name, object) = blocking(move || {
        let d = resolve_digest(&server, &digest)?;
        let (name, fd, _) = find_file(&server, &d, &path)?;
        let object = server
            .runtime
            .store()
            .object(&fd)
            .map_err(ApiError::internal)?;
        Ok((name, object))
    })
    .await?;
    let body = match object {
        StoredObject::Packed(bytes) => Body::from(bytes),
        StoredObject::File(path) => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(ApiError::internal)?;
            Body::from_stream(tokio_util::io::ReaderStream::new(file))
        }
    };
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe}\""),
            ),
        ],
        body,
    )
        .into_response())
}

async fn artifact_preview(
    State(s): S,
    Path((digest, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let server = Arc::clone(&s);
    let v = blocking(move || {
        let d = resolve_digest(&server, &digest)?;
        let (name, fd, bytes) = find_file(&server, &d, &path)?;
        use std::io::Read as _;
        let object = server
            .runtime
            .store()
            .object(&fd)
            .map_err(ApiError::internal)?;
        let mut head = Vec::new();
        match &object {
            StoredObject::Packed(b) => head.extend_from_slice(&b[..b.len().min(PREVIEW_BYTES as usize)]),
            StoredObject::File(path) => {
                std::fs::File::open(path)
                    .map_err(ApiError::internal)?
                    .take(PREVIEW_BYTES)
                    .read_to_end(&mut head)
                    .map_err(ApiError::internal)?;
            }
        }
        let truncated = bytes > PREVIEW_BYTES;
        let text = String::from_utf8_lossy(&head).into_owned();
        if name.ends_with(".csv") {
            let mut rows = Vec::new();
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(text.as_bytes());
            let mut total = 0i64;
            for rec in rdr.records() {
                let Ok(rec) = rec else { break };
                if rows.len() < 21 {
                    rows.push(rec.iter().map(str::to_string).collect::<Vec<_>>());
                }
                total += 1;
            }
            // Rows counted in the bytes read (all of them unless `truncated`).
            let total_rows = (total - 1).max(0);
            return Ok(json!({ "kind": "table", "name": name, "bytes": bytes, "rows": rows,
                "total_rows": total_rows, "truncated": truncated }));
        }
        if name.ends_with(".parquet") {
            return Ok(match parquet_head(object, 20) {
                Ok((rows, total)) => json!({ "kind": "table", "name": name, "bytes": bytes, "rows": rows,
                    "total_rows": total, "truncated": total > 20 }),
                Err(e) => json!({ "kind": "binary", "name": name, "bytes": bytes,
                    "note": format!("not a readable Parquet file: {e}") }),
            });
        }
        if head.contains(&0) {
            return Ok(json!({ "kind": "binary", "name": name, "bytes": bytes }));
        }
        Ok(json!({ "kind": "text", "name": name, "bytes": bytes, "text": text, "truncated": truncated }))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// The column names and the first `n` rows of a Parquet file, as text,
/// and its row count.
fn parquet_head(object: StoredObject, n: usize) -> Result<(Vec<Vec<String>>, i64), String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader: Box<dyn FileReader> = match object {
        StoredObject::Packed(bytes) => {
            Box::new(SerializedFileReader::new(Bytes::from(bytes)).map_err(|e| e.to_string())?)
        }
        StoredObject::File(path) => {
            let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
            Box::new(SerializedFileReader::new(file).map_err(|e| e.to_string())?)
        }
    };
    let meta = reader.metadata().file_metadata();
    let total = meta.num_rows();
    let header: Vec<String> = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let mut rows = vec![header];
    for row in reader
        .get_row_iter(None)
        .map_err(|e| e.to_string())?
        .take(n)
    {
        let row = row.map_err(|e| e.to_string())?;
        rows.push(
            row.get_column_iter()
                .map(|(_, field)| parquet_cell(field))
                .collect(),
        );
    }
    Ok((rows, total))
}

/// A Parquet value as a person reads it: numbers plainly (not `0E0`),
/// strings without quotes, nulls empty.
fn parquet_cell(f: &parquet::record::Field) -> String {
    use parquet::record::Field;
    let float = |x: f64| {
        if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
            format!("{}", x as i64)
        } else {
            format!("{x}")
        }
    };
    match f {
        Field::Null => String::new(),
        Field::Bool(b) => b.to_string(),
        Field::Byte(x) => x.to_string(),
        Field::Short(x) => x.to_string(),
        Field::Int(x) => x.to_string(),
        Field::Long(x) => x.to_string(),
        Field::UByte(x) => x.to_string(),
        Field::UShort(x) => x.to_string(),
        Field::UInt(x) => x.to_string(),
        Field::ULong(x) => x.to_string(),
        Field::Float(x) => float(f64::from(*x)),
        Field::Double(x) => float(*x),
        Field::Str(s) => s.clone(),
        Field::Bytes(b) => format!("({} bytes)", b.len()),
        other => other.to_string(),
    }
}

async fn models(State(s): S) -> Result<Response, ApiError> {
    let server = Arc::clone(&s);
    let v = blocking(move || Ok(server.runtime.records().models(None)?)).await?;
    Ok(axum::Json(json!({ "models": v })).into_response())
}

/// Moves a model version to a stage (`{"stage": "production"}`): as
/// `weir models promote`, the version that held staging or production
/// before is archived.
async fn promote(
    State(s): S,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let version: u32 = version
        .parse()
        .map_err(|_| ApiError::bad(format!("expected a version number, found {version:?}")))?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))?;
    let stage = v
        .get("stage")
        .and_then(Value::as_str)
        .and_then(weir_runtime::records::ModelStage::parse)
        .ok_or_else(|| {
            ApiError::bad("the body must be {\"stage\": \"none\" | \"staging\" | \"production\" | \"archived\"}")
        })?;
    let server = Arc::clone(&s);
    let name_for_followers = name.clone();
    let archived = blocking(move || {
        let records = server.runtime.records();
        if records.models(Some(&name))?.is_empty() {
            return Err(ApiError::not_found(format!("there is no model '{name}'")));
        }
        records
            .promote(&name, version, stage)
            .map_err(|e| ApiError::not_found(format!("{e:#}")))
    })
    .await?;
    if stage != weir_runtime::records::ModelStage::None {
        let _ = s.follow.send(super::FollowEvent::Promoted {
            model: name_for_followers,
            version,
            stage: stage.to_string(),
        });
    }
    Ok(axum::Json(json!({ "stage": stage.to_string(), "archived": archived })).into_response())
}

async fn pause_schedule(State(s): S, Path(name): Path<String>) -> Result<Response, ApiError> {
    set_paused(s, name, true).await
}

async fn resume_schedule(State(s): S, Path(name): Path<String>) -> Result<Response, ApiError> {
    set_paused(s, name, false).await
}

/// Slots one backfill from the page may run, at most.
const MAX_BACKFILL: usize = 100;

/// Runs the past slots of a scheduled pipeline between `from` and `to`
/// (`{"from": "2026-11-01", "to": "2026-11-07T23:59:59Z"}`), oldest first,
/// one after another, as `weir backfill` does: answers `202` with the
/// slots at once; each slot's run shows on the schedule as it goes. Slots
/// that already ran are left alone.
async fn backfill(
    State(s): S,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))?;
    let field = |k: &str| {
        v.get(k).and_then(Value::as_str).ok_or_else(|| {
            ApiError::bad(format!(
                "the body needs \"{k}\": an RFC 3339 instant or a date"
            ))
        })
    };
    let from =
        super::cli::instant(field("from")?, "from").map_err(|e| ApiError::bad(e.to_string()))?;
    let to = super::cli::instant(field("to")?, "to").map_err(|e| ApiError::bad(e.to_string()))?;
    let now = chrono::Utc::now();
    if to < from || to > now {
        return Err(ApiError::bad(
            "`to` must be after `from` and not in the future",
        ));
    }
    let p = s
        .pipelines()
        .get(&name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("there is no pipeline '{name}'")))?;
    let expr = p
        .schedule
        .clone()
        .ok_or_else(|| ApiError::conflict(format!("pipeline '{name}' declares no schedule")))?;
    let sched = super::schedule::Schedule::parse(&expr, p.serve.timezone.as_deref())
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let (count, slots) = sched.slots(from - chrono::Duration::seconds(1), to, MAX_BACKFILL + 1);
    if count > MAX_BACKFILL {
        return Err(ApiError::bad(format!(
            "{count} slots in that range; a backfill from the page runs at most {MAX_BACKFILL} (weir backfill has --max)"
        )));
    }
    let texts: Vec<String> = slots
        .iter()
        .map(|t| super::schedule::slot_text(*t))
        .collect();
    let server = Arc::clone(&s);
    let todo = texts.clone();
    s.spawn(async move {
        for slot in todo {
            if server.shutdown.is_cancelled() {
                break;
            }
            match server.slots.claim(&name, &slot) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(pipeline = %name, %slot, "backfill: {e:#}");
                    continue;
                }
            }
            let outcome = server
                .trigger(
                    &name,
                    Default::default(),
                    None,
                    super::Origin::Backfill(slot.clone()),
                )
                .await;
            let run = outcome.as_ref().ok().copied();
            let why = outcome.as_ref().err().map(|e| e.1.clone());
            let _ = server
                .slots
                .settle(&name, &slot, run.map(|r| r.0), why.as_deref());
            if let Some(run) = run {
                // One slot after another, as `weir backfill` runs them.
                while server.active(run).is_some() {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "slots": texts }))).into_response())
}

/// Pauses or resumes a scheduled pipeline's slots.
async fn set_paused(s: Arc<Server>, name: String, paused: bool) -> Result<Response, ApiError> {
    let server = Arc::clone(&s);
    blocking(move || {
        let p = server
            .pipelines()
            .get(&name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("there is no pipeline '{name}'")))?;
        if p.schedule.is_none() {
            return Err(ApiError::conflict(format!(
                "pipeline '{name}' declares no schedule"
            )));
        }
        server.slots.set_paused(&name, paused)?;
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({ "paused": paused })).into_response())
}

async fn schedules(State(s): S) -> Result<Response, ApiError> {
    let server = Arc::clone(&s);
    let v = blocking(move || {
        let now = chrono::Utc::now();
        let mut out = Vec::new();
        for p in server.pipelines().into_values() {
            let Some(expr) = &p.schedule else { continue };
            let parsed = super::schedule::Schedule::parse(expr, p.serve.timezone.as_deref()).ok();
            let upcoming = parsed
                .as_ref()
                .map(|sc| sc.next_n(now, 3))
                .unwrap_or_default();
            let next: Vec<String> = upcoming
                .iter()
                .copied()
                .map(super::schedule::slot_text)
                .collect();
            // The same instants in the schedule's own time zone.
            let next_local: Vec<String> = match &parsed {
                Some(sc) => upcoming.iter().map(|t| sc.local(*t)).collect(),
                None => Vec::new(),
            };
            out.push(json!({
                "pipeline": p.name,
                "schedule": expr,
                "timezone": p.serve.timezone.clone().unwrap_or_else(|| "UTC".into()),
                "catchup": p.serve.catchup,
                "catchup_limit": p.serve.catchup_limit,
                "max_active_runs": p.serve.max_active_runs,
                "next": next,
                "next_local": next_local,
                "paused": server.slots.is_paused(&p.name)?,
                "recent": server.slots.recent(Some(&p.name), 10)?,
                "error": p.error,
            }));
        }
        Ok(out)
    })
    .await?;
    let leader = s.leads().await;
    Ok(axum::Json(json!({ "schedules": v, "leader": leader })).into_response())
}
