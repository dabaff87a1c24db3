//! weir's pipeline language: a Rhai script that declares steps, compiled to a
//! pure-data [`Plan`].
//!
//! ```rhai
//! let p = pipeline("hello");
//! let load = p.step("load", "steps/load_csv")        // a step crate, or a .wasm file
//!     .input("raw", "data/flowers.csv")               // a host file or folder
//!     .output("table")
//!     .params(#{ min_rows: 10 });
//! p.step("stats", "steps/column_stats")
//!     .input("table", load.out("table"))              // an upstream output
//!     .output("stats")
//!     .timeout("30s")
//!     .memory("256MiB");
//! ```
//!
//! Scripts run sandboxed: `eval` and `import` are disabled, and operations,
//! call depth, expression depth, string, array and map sizes are capped.
//! Every error names the file, line and column.
#![deny(missing_docs)]

use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext, Position};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use weir_runtime::plan::{ComponentSource, InputSource, Plan, StepPlan};

/// A script that could not be compiled into a plan; the message names the
/// file, line and column where known.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DslError(String);

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

#[derive(Default)]
struct Declared {
    pipelines: Vec<Plan>,
}

#[derive(Clone)]
struct PipelineHandle {
    state: Arc<Mutex<Declared>>,
    index: usize,
    file: Arc<str>,
}

#[derive(Clone)]
struct StepHandle {
    pipeline: PipelineHandle,
    step: usize,
}

#[derive(Clone)]
struct OutputRef {
    step: String,
    output: String,
}

fn err<T>(msg: impl Into<String>, pos: Position) -> RhaiResult<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg.into()),
        pos,
    )))
}

impl StepHandle {
    fn with<T>(&self, f: impl FnOnce(&mut StepPlan) -> T) -> T {
        let mut st = self
            .pipeline
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&mut st.pipelines[self.pipeline.index].steps[self.step])
    }

    fn name(&self) -> String {
        self.with(|s| s.name.clone())
    }
}

fn origin(file: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
        (Some(l), None) => format!("{file}:{l}"),
        _ => file.to_string(),
    }
}

/// Parses sizes like `512`, `"64KiB"`, `"256MiB"`, `"2GiB"`, `"1GB"`.
fn parse_size(v: &Dynamic) -> Result<u64, String> {
    if let Some(i) = v.clone().try_cast::<i64>() {
        return u64::try_from(i).map_err(|_| format!("expected a size in bytes, found {i}"));
    }
    let s = v
        .clone()
        .try_cast::<rhai::ImmutableString>()
        .ok_or_else(|| {
            format!(
                "expected a size such as \"256MiB\", found {}",
                v.type_name()
            )
        })?;
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("expected a size such as \"256MiB\", found {t:?}"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        u => {
            return Err(format!(
                "unknown size unit {u:?} in {t:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    Ok((n * mult) as u64)
}

/// Parses durations like `30` (seconds), `"500ms"`, `"30s"`, `"5m"`, `"2h"`.
fn parse_duration_ms(v: &Dynamic) -> Result<u64, String> {
    if let Some(i) = v.clone().try_cast::<i64>() {
        return u64::try_from(i)
            .map(|s| s.saturating_mul(1000))
            .map_err(|_| format!("expected a duration, found {i}"));
    }
    if let Some(f) = v.clone().try_cast::<f64>() {
        if f >= 0.0 {
            return Ok((f * 1000.0) as u64);
        }
        return Err(format!("expected a duration, found {f}"));
    }
    let s = v
        .clone()
        .try_cast::<rhai::ImmutableString>()
        .ok_or_else(|| {
            format!(
                "expected a duration such as \"30s\", found {}",
                v.type_name()
            )
        })?;
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("expected a duration such as \"30s\", found {t:?}"))?;
    let mult = match unit.trim() {
        "ms" => 1.0,
        "" | "s" => 1000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        u => {
            return Err(format!(
                "unknown duration unit {u:?} in {t:?} (use ms, s, m or h)"
            ));
        }
    };
    Ok((n * mult) as u64)
}

fn engine(state: Arc<Mutex<Declared>>, file: Arc<str>, base_dir: PathBuf) -> Engine {
    let mut e = Engine::new();
    e.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    e.disable_symbol("eval");
    e.set_max_operations(50_000_000);
    e.set_max_call_levels(64);
    e.set_max_expr_depths(128, 64);
    e.set_max_string_size(1 << 20);
    e.set_max_array_size(1_000_000);
    e.set_max_map_size(100_000);
    e.set_strict_variables(true);
    e.set_fail_on_invalid_map_property(true);
    e.on_print(|_| {});
    e.on_debug(|_, _, _| {});

    e.register_type_with_name::<PipelineHandle>("Pipeline");
    e.register_type_with_name::<StepHandle>("Step");
    e.register_type_with_name::<OutputRef>("Output");

    {
        let state = state.clone();
        let file = file.clone();
        e.register_fn(
            "pipeline",
            move |ctx: NativeCallContext, name: &str| -> RhaiResult<PipelineHandle> {
                if let Err(m) = weir_runtime::names::check_name("pipeline", name) {
                    return err(m.to_string(), ctx.call_position());
                }
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.pipelines.push(Plan::new(name, base_dir.clone()));
                Ok(PipelineHandle {
                    state: state.clone(),
                    index: st.pipelines.len() - 1,
                    file: file.clone(),
                })
            },
        );
    }

    e.register_fn(
        "step",
        |ctx: NativeCallContext,
         p: &mut PipelineHandle,
         name: &str,
         component: &str|
         -> RhaiResult<StepHandle> {
            let pos = ctx.call_position();
            if let Err(m) = weir_runtime::names::check_name("step", name) {
                return err(m.to_string(), pos);
            }
            let mut st = p.state.lock().unwrap_or_else(|p| p.into_inner());
            let plan = &mut st.pipelines[p.index];
            if plan.steps.iter().any(|s| s.name == name) {
                return err(format!("step '{name}' is declared twice"), pos);
            }
            let source = if component.ends_with(".wasm") {
                ComponentSource::Wasm(component.into())
            } else {
                ComponentSource::Crate(component.into())
            };
            let mut s = StepPlan::new(name, source);
            s.origin = Some(origin(&p.file, pos));
            plan.steps.push(s);
            Ok(StepHandle {
                pipeline: p.clone(),
                step: plan.steps.len() - 1,
            })
        },
    );

    e.register_fn(
        "input",
        |ctx: NativeCallContext, s: &mut StepHandle, name: &str, source: Dynamic| -> RhaiResult<StepHandle> {
            let pos = ctx.call_position();
            if let Err(m) = weir_runtime::names::check_name("input", name) {
                return err(format!("step '{}': {m}", s.name()), pos);
            }
            let src = if let Some(o) = source.clone().try_cast::<OutputRef>() {
                InputSource::Step {
                    step: o.step,
                    output: o.output,
                }
            } else if let Some(p) = source.clone().try_cast::<rhai::ImmutableString>() {
                InputSource::Path(PathBuf::from(p.as_str()))
            } else {
                return err(
                    format!(
                        "step '{}': input '{name}' must be a path string or an upstream output (step.out(\"name\")), found {}",
                        s.name(),
                        source.type_name()
                    ),
                    pos,
                );
            };
            let dup = s.with(|st| st.inputs.insert(name.to_string(), src).is_some());
            if dup {
                return err(format!("step '{}': input '{name}' is given twice", s.name()), pos);
            }
            Ok(s.clone())
        },
    );

    e.register_fn(
        "output",
        |ctx: NativeCallContext, s: &mut StepHandle, name: &str| -> RhaiResult<StepHandle> {
            if let Err(m) = weir_runtime::names::check_name("output", name) {
                return err(format!("step '{}': {m}", s.name()), ctx.call_position());
            }
            s.with(|st| st.outputs.insert(name.to_string()));
            Ok(s.clone())
        },
    );

    e.register_fn(
        "out",
        |ctx: NativeCallContext, s: &mut StepHandle, name: &str| -> RhaiResult<OutputRef> {
            let (step, known, outs) = s.with(|st| {
                (
                    st.name.clone(),
                    st.outputs.contains(name),
                    st.outputs.iter().cloned().collect::<Vec<_>>(),
                )
            });
            if !known {
                let hint = weir_runtime::plan::suggest(name, outs.iter().map(String::as_str));
                return err(
                    format!("step '{step}' declares no output '{name}' (declare it with .output(\"{name}\") first){hint}"),
                    ctx.call_position(),
                );
            }
            Ok(OutputRef {
                step,
                output: name.to_string(),
            })
        },
    );

    e.register_fn(
        "params",
        |ctx: NativeCallContext, s: &mut StepHandle, map: rhai::Map| -> RhaiResult<StepHandle> {
            let v: serde_json::Value =
                rhai::serde::from_dynamic(&Dynamic::from_map(map)).or_else(|e| {
                    err(
                        format!(
                            "step '{}': params cannot be expressed as JSON: {e}",
                            s.name()
                        ),
                        ctx.call_position(),
                    )
                })?;
            s.with(|st| {
                if let (Some(dst), serde_json::Value::Object(src)) = (st.params.as_object_mut(), v)
                {
                    dst.extend(src);
                }
            });
            Ok(s.clone())
        },
    );

    e.register_fn(
        "timeout",
        |ctx: NativeCallContext, s: &mut StepHandle, d: Dynamic| -> RhaiResult<StepHandle> {
            let ms = parse_duration_ms(&d).or_else(|m| {
                err(
                    format!("step '{}': timeout: {m}", s.name()),
                    ctx.call_position(),
                )
            })?;
            s.with(|st| st.limits.timeout_ms = ms);
            Ok(s.clone())
        },
    );

    e.register_fn(
        "memory",
        |ctx: NativeCallContext, s: &mut StepHandle, d: Dynamic| -> RhaiResult<StepHandle> {
            let b = parse_size(&d).or_else(|m| {
                err(
                    format!("step '{}': memory: {m}", s.name()),
                    ctx.call_position(),
                )
            })?;
            s.with(|st| st.limits.memory_bytes = b);
            Ok(s.clone())
        },
    );

    e.register_fn(
        "output_limit",
        |ctx: NativeCallContext, s: &mut StepHandle, d: Dynamic| -> RhaiResult<StepHandle> {
            let b = parse_size(&d).or_else(|m| {
                err(
                    format!("step '{}': output_limit: {m}", s.name()),
                    ctx.call_position(),
                )
            })?;
            s.with(|st| st.limits.output_bytes = b);
            Ok(s.clone())
        },
    );

    e.register_fn(
        "fuel",
        |ctx: NativeCallContext, s: &mut StepHandle, n: i64| -> RhaiResult<StepHandle> {
            let Ok(n) = u64::try_from(n) else {
                return err(
                    format!("step '{}': fuel must be positive, found {n}", s.name()),
                    ctx.call_position(),
                );
            };
            s.with(|st| st.limits.fuel = Some(n));
            Ok(s.clone())
        },
    );

    e
}

fn describe(file: &str, e: &EvalAltResult) -> String {
    // Runtime errors raised by weir's functions carry their message as a string.
    let mut inner = e;
    while let EvalAltResult::ErrorInFunctionCall(_, _, next, _) = inner {
        inner = next;
    }
    let msg = match inner {
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        other => other.to_string(),
    };
    let pos = inner.position();
    let pos = if pos.is_none() { e.position() } else { pos };
    let msg = strip_position(&msg);
    format!("{}: {msg}", origin(file, pos))
}

/// Rhai appends " (line L, position C)"; the position is already in front.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" (line ") {
        Some(i) if msg.ends_with(')') => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// Compiles a script held in memory. `file` names it in errors; relative
/// paths in the plan resolve against `base_dir`.
pub fn compile_str(source: &str, file: &str, base_dir: &Path) -> Result<Plan, DslError> {
    let state = Arc::new(Mutex::new(Declared::default()));
    let file: Arc<str> = Arc::from(file);
    let engine = engine(state.clone(), file.clone(), base_dir.to_path_buf());
    let ast = engine.compile(source).map_err(|e| {
        let pos = e.position();
        DslError(format!(
            "{}: syntax error: {}",
            origin(&file, pos),
            strip_position(&e.to_string())
        ))
    })?;
    engine
        .run_ast(&ast)
        .map_err(|e| DslError(describe(&file, &e)))?;
    drop(engine);
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let mut plans = std::mem::take(&mut st.pipelines);
    match plans.len() {
        0 => Err(DslError(format!(
            "{file}: the script declares no pipeline; start with `let p = pipeline(\"name\");`"
        ))),
        1 => {
            let plan = plans.remove(0);
            plan.validate()
                .map_err(|e| DslError(format!("{file}: {e}")))?;
            Ok(plan)
        }
        n => Err(DslError(format!(
            "{file}: the script declares {n} pipelines; a script declares exactly one"
        ))),
    }
}

/// Compiles the script at `path`; relative paths resolve against its folder.
pub fn compile_file(path: &Path) -> Result<Plan, DslError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| DslError(format!("cannot read {}: {e}", path.display())))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let base = base.canonicalize().unwrap_or(base);
    compile_str(&source, &path.display().to_string(), &base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(src: &str) -> Result<Plan, String> {
        compile_str(src, "p.rhai", Path::new("/base")).map_err(|e| e.to_string())
    }

    #[test]
    fn builds_a_plan() {
        let plan = compile(
            r#"
            let p = pipeline("demo");
            let a = p.step("a", "steps/a").input("raw", "data.csv").output("x").params(#{ n: 3, f: 0.5, s: "t" });
            p.step("b", "b.wasm").input("x", a.out("x")).output("y").timeout("30s").memory("64MiB").fuel(1000);
            "#,
        )
        .unwrap();
        assert_eq!(plan.name, "demo");
        assert_eq!(plan.steps.len(), 2);
        assert_eq!(
            plan.steps[0].params,
            serde_json::json!({"n": 3, "f": 0.5, "s": "t"})
        );
        assert_eq!(plan.steps[0].origin.as_deref(), Some("p.rhai:3:23"));
        assert_eq!(
            plan.steps[1].component,
            ComponentSource::Wasm("b.wasm".into())
        );
        assert_eq!(plan.steps[1].limits.timeout_ms, 30_000);
        assert_eq!(plan.steps[1].limits.memory_bytes, 64 << 20);
        assert_eq!(plan.steps[1].limits.fuel, Some(1000));
    }

    #[test]
    fn errors_name_the_position() {
        let e = compile("let p = pipeline(\"demo\");\np.step(\"a/b\", \"x\");").unwrap_err();
        assert!(
            e.starts_with("p.rhai:2:3: invalid step name \"a/b\""),
            "{e}"
        );
        let e = compile("let p = pipeline(\"demo\");\nlet a = p.step(\"a\", \"x\").output(\"tabel\");\np.step(\"b\", \"y\").input(\"t\", a.out(\"table\"));").unwrap_err();
        assert!(e.starts_with("p.rhai:3:"), "{e}");
        assert!(e.contains("did you mean 'tabel'?"), "{e}");
        let e = compile("let p = pipeline(\"demo\")\np.step(").unwrap_err();
        assert!(e.contains("syntax error"), "{e}");
        let e = compile("eval(\"1\")").unwrap_err();
        assert!(e.starts_with("p.rhai:1:1"), "{e}");
        let e = compile("import \"x\" as y;").unwrap_err();
        assert!(e.starts_with("p.rhai:1:"), "{e}");
        let e = compile("let p = pipeline(\"demo\"); loop {}").unwrap_err();
        assert!(e.contains("p.rhai:"), "{e}");
        let e = compile("let x = 1;").unwrap_err();
        assert!(e.contains("declares no pipeline"), "{e}");
    }
}
