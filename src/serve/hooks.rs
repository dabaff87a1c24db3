//! Notifications after a run: `on_failure` / `on_success` hooks. A webhook
//! gets the JSON body by `POST` (3 tries, 10 s timeout each, 1 s then 2 s
//! apart); a command gets it on stdin (no shell, 30 s timeout). A broken
//! hook is logged, never fatal.

use super::Server;
use std::sync::Arc;
use std::time::Duration;
use weir_runtime::plan::Hook;
use weir_runtime::run::RunReport;
use weir_runtime::{Plan, RunState, StepState, TrustPolicy};

const TRIES: u32 = 3;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The JSON a hook receives.
pub fn body(server: &Server, plan: &Plan, report: &RunReport) -> serde_json::Value {
    let failing = report.steps.iter().find(|s| s.state == StepState::Failed);
    serde_json::json!({
        "event": if report.state == RunState::Succeeded { "run_succeeded" } else { "run_failed" },
        "pipeline": plan.name,
        "run": report.run.0,
        "state": report.state.to_string(),
        "failing_step": failing.map(|s| s.name.clone()),
        "error": failing.and_then(|s| s.error.clone()).or_else(|| report.error.clone()),
        "link": format!("{}/#/runs/{}", server.base_url, report.run.0),
    })
}

/// Calls the hooks the run's outcome asks for.
pub async fn after_run(server: &Arc<Server>, plan: &Plan, report: &RunReport, trust: &TrustPolicy) {
    let hooks = match report.state {
        RunState::Succeeded => &plan.serve.on_success,
        RunState::Failed => &plan.serve.on_failure,
        _ => return,
    };
    if hooks.is_empty() {
        return;
    }
    let body = body(server, plan, report).to_string();
    for hook in hooks.clone() {
        let hook = match resolve(&hook, trust) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(pipeline = %plan.name, run = %report.run, "hook refused: {e}");
                continue;
            }
        };
        let body = body.clone();
        let outcome = tokio::task::spawn_blocking(move || call(&hook, &body)).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(pipeline = %plan.name, run = %report.run, "hook failed: {e}")
            }
            Err(e) => tracing::warn!(pipeline = %plan.name, "hook panicked: {e}"),
        }
    }
}

/// Why a pipeline's hooks cannot run under `trust`, if they cannot: an
/// inline command (a script may come from someone else, so weir runs only
/// commands the project's weir.toml declares), or a name it does not declare.
pub fn problem(serve: &weir_runtime::plan::ServeOptions, trust: &TrustPolicy) -> Option<String> {
    let all = serve.on_failure.iter().chain(&serve.on_success);
    all.map(|h| resolve(h, trust)).find_map(Result::err)
}

/// The hook to call: a webhook, or the command a named hook stands for.
fn resolve(hook: &Hook, trust: &TrustPolicy) -> Result<Hook, String> {
    match hook {
        Hook::Webhook(_) => Ok(hook.clone()),
        Hook::Named(name) => trust
            .hook(name)
            .map(|argv| Hook::Command(argv.to_vec()))
            .ok_or_else(|| {
                let known: Vec<&str> = trust.hook_names().collect();
                format!(
                    "the hook '{name}' is not declared in the project's weir.toml (declared: {}); add\n  [hooks.{name}]\n  command = [\"program\", \"arg\"]",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )
            }),
        Hook::Command(argv) => Err(format!(
            "command hooks written in a pipeline script are refused, since a script may come from someone else; declare it in the project's weir.toml as\n  [hooks.NAME]\n  command = {argv:?}\nand name it in the script: #{{ command: \"NAME\" }}"
        )),
    }
}

fn call(hook: &Hook, body: &str) -> Result<(), String> {
    match hook {
        Hook::Named(name) => Err(format!("hook '{name}' was not resolved")),
        Hook::Webhook(url) => {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(WEBHOOK_TIMEOUT))
                .build()
                .into();
            let mut last = String::new();
            for attempt in 0..TRIES {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_secs(1 << (attempt - 1)));
                }
                match agent
                    .post(url)
                    .header("content-type", "application/json")
                    .send(body)
                {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("webhook {url}: {e}"),
                }
            }
            Err(format!("{last} (after {TRIES} tries)"))
        }
        Hook::Command(argv) => {
            use std::io::Write as _;
            let (prog, args) = argv.split_first().ok_or("empty command")?;
            let mut child = std::process::Command::new(prog)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("command {prog}: {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(body.as_bytes());
            }
            let start = std::time::Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(status)) if status.success() => return Ok(()),
                    Ok(Some(status)) => return Err(format!("command {prog}: {status}")),
                    Ok(None) if start.elapsed() > COMMAND_TIMEOUT => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!(
                            "command {prog}: no exit after {COMMAND_TIMEOUT:?}, killed"
                        ));
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) => return Err(format!("command {prog}: {e}")),
                }
            }
        }
    }
}
