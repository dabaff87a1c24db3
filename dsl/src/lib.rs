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
//! Scripts run sandboxed: `eval` is disabled, `import` reads only `.rhai`
//! files inside the script's own folder, time functions are disabled, and
//! operations, call depth, expression depth, string, array and map sizes are
//! capped. Every error names the file, line and column.
//!
//! The full language (params, retries, cache policy, pools, typed
//! artifacts, gates, maps) is described in `docs/writing-pipelines.md`.
//!
//! Compiling a script held in memory, with a param override:
//!
//! ```
//! use std::collections::BTreeMap;
//! let script = r#"
//!     let rows = param("rows", 100);
//!     let p = pipeline("demo");
//!     p.step("make", "steps/make").output("table").params(#{ rows: rows });
//! "#;
//! let overrides = BTreeMap::from([("rows".to_string(), "5".to_string())]);
//! let plan = weir_dsl::compile_str_with(script, "demo.rhai", std::path::Path::new("."), &overrides)?;
//! assert_eq!(plan.name, "demo");
//! assert_eq!(plan.steps[0].params["rows"], 5);
//! // Errors name the file, line and column.
//! let err = weir_dsl::compile_str("let p = pipeline(\"demo\");\np.stp(\"x\");", "bad.rhai", std::path::Path::new("."));
//! assert!(err.unwrap_err().to_string().starts_with("bad.rhai:2:"));
//! # Ok::<(), weir_dsl::DslError>(())
//! ```
#![deny(missing_docs)]

use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext, Position};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use weir_core::plan::{
    ArtifactType, CacheMode, Catchup, CmpOp, ComponentSource, Condition, Hook, InputSource,
    MapSpec, Operand, Plan, StepPlan,
};

/// A script that could not be compiled into a plan; the message names the
/// file, line and column where known.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DslError(String);

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

#[derive(Default)]
struct Declared {
    pipelines: Vec<Plan>,
    /// Step names per pipeline, for O(1) duplicate checks in big scripts.
    step_names: Vec<std::collections::HashSet<String>>,
    /// `--param` overrides, as text, and which of them a `param()` used.
    overrides: BTreeMap<String, String>,
    used: std::collections::BTreeSet<String>,
    /// Params declared with `param()`, after overrides.
    params: BTreeMap<String, serde_json::Value>,
}

/// A value in a condition: `step.metric("f1")`, `step.json(...)`.
#[derive(Clone)]
struct OperandRef(Operand);

/// A condition built from comparisons, `all`, `any`, `not`, `&` and `|`.
#[derive(Clone)]
struct Cond(Condition);

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
    weir_core::limits::parse_size(&s).map_err(|e| e.to_string())
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
    weir_core::limits::parse_duration_ms(&s).map_err(|e| e.to_string())
}

/// The locked-down Rhai engine with the pipeline language registered.
///
/// Long on purpose: a registration table, one `register_fn` per language
/// function, in the order the user guide presents them.
fn engine(state: Arc<Mutex<Declared>>, file: Arc<str>, base_dir: PathBuf) -> Engine {
    let mut e = Engine::new();
    e.set_module_resolver(ProjectResolver::new(&base_dir));
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
    e.register_type_with_name::<OperandRef>("Value");
    e.register_type_with_name::<Cond>("Condition");
    e.register_type_with_name::<ArtifactType>("ArtifactType");
    e.register_fn("timestamp", |ctx: NativeCallContext| -> RhaiResult<i64> {
        err("time functions are disabled in pipeline scripts (a plan must not depend on when it was built)", ctx.call_position())
    });
    register_params(&mut e, state.clone());
    register_policies(&mut e);
    register_conditions(&mut e);

    {
        let state = state.clone();
        let file = file.clone();
        e.register_fn(
            "pipeline",
            move |ctx: NativeCallContext, name: &str| -> RhaiResult<PipelineHandle> {
                if let Err(m) = weir_core::names::check_name("pipeline", name) {
                    return err(m.to_string(), ctx.call_position());
                }
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.pipelines.push(Plan::new(name, base_dir.clone()));
                st.step_names.push(Default::default());
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
         -> RhaiResult<StepHandle> { new_step(&ctx, p, name, component) },
    );

    e.register_fn(
        "map",
        |ctx: NativeCallContext,
         p: &mut PipelineHandle,
         name: &str,
         component: &str,
         over: OutputRef|
         -> RhaiResult<StepHandle> {
            let s = new_step(&ctx, p, name, component)?;
            s.with(|st| {
                st.map = Some(MapSpec {
                    step: over.step,
                    output: over.output,
                    json_list: None,
                    parallelism: 0,
                })
            });
            Ok(s)
        },
    );
    e.register_fn(
        "map_json",
        |ctx: NativeCallContext,
         p: &mut PipelineHandle,
         name: &str,
         component: &str,
         over: OutputRef,
         file: &str|
         -> RhaiResult<StepHandle> {
            let s = new_step(&ctx, p, name, component)?;
            s.with(|st| {
                st.map = Some(MapSpec {
                    step: over.step,
                    output: over.output,
                    json_list: Some(file.to_string()),
                    parallelism: 0,
                })
            });
            Ok(s)
        },
    );

    e.register_fn(
        "input",
        |ctx: NativeCallContext,
         s: &mut StepHandle,
         name: &str,
         source: Dynamic|
         -> RhaiResult<StepHandle> { add_input(&ctx, s, name, source) },
    );

    e.register_fn(
        "output",
        |ctx: NativeCallContext, s: &mut StepHandle, name: &str| -> RhaiResult<StepHandle> {
            if let Err(m) = weir_core::names::check_name("output", name) {
                return err(format!("step '{}': {m}", s.name()), ctx.call_position());
            }
            s.with(|st| st.outputs.insert(name.to_string()));
            Ok(s.clone())
        },
    );

    e.register_fn(
        "output",
        |ctx: NativeCallContext,
         s: &mut StepHandle,
         name: &str,
         t: ArtifactType|
         -> RhaiResult<StepHandle> {
            if let Err(m) = weir_core::names::check_name("output", name) {
                return err(format!("step '{}': {m}", s.name()), ctx.call_position());
            }
            s.with(|st| {
                st.outputs.insert(name.to_string());
                st.output_types.insert(name.to_string(), t);
            });
            Ok(s.clone())
        },
    );

    e.register_fn(
        "input",
        |ctx: NativeCallContext,
         s: &mut StepHandle,
         name: &str,
         source: Dynamic,
         t: ArtifactType|
         -> RhaiResult<StepHandle> {
            let s = add_input(&ctx, s, name, source)?;
            s.with(|st| st.input_types.insert(name.to_string(), t));
            Ok(s)
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
                let hint = weir_core::plan::suggest(name, outs.iter().map(String::as_str));
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
            let map = Dynamic::from_map(map);
            if let Some(at) = non_finite(&map, String::new()) {
                return err(
                    format!(
                        "step '{}': params: {at} is not a finite number (NaN and infinities cannot be passed to a step)",
                        s.name()
                    ),
                    ctx.call_position(),
                );
            }
            let v: serde_json::Value =
                rhai::serde::from_dynamic(&map).or_else(|e| {
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
            let max = weir_core::limits::MAX_TIMEOUT.as_millis() as u64;
            let ms = parse_duration_ms(&d)
                .and_then(|ms| match ms {
                    0 => Err("must be at least 1 ms, found 0".to_string()),
                    ms if ms > max => Err(format!("must be at most 7 days, found {ms} ms")),
                    ms => Ok(ms),
                })
                .or_else(|m| {
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

fn new_step(
    ctx: &NativeCallContext,
    p: &mut PipelineHandle,
    name: &str,
    component: &str,
) -> RhaiResult<StepHandle> {
    let pos = ctx.call_position();
    if let Err(m) = weir_core::names::check_name("step", name) {
        return err(m.to_string(), pos);
    }
    let mut st = p.state.lock().unwrap_or_else(|p| p.into_inner());
    if !st.step_names[p.index].insert(name.to_string()) {
        return err(format!("step '{name}' is declared twice"), pos);
    }
    let source = if component.ends_with(".wasm") {
        ComponentSource::Wasm(component.into())
    } else {
        ComponentSource::Crate(component.into())
    };
    let mut s = StepPlan::new(name, source);
    s.origin = Some(origin(&p.file, pos));
    let plan = &mut st.pipelines[p.index];
    if plan.steps.len() >= weir_core::limits::MAX_STEPS {
        return err(
            format!(
                "pipeline '{}' would have more than {} steps, the most one pipeline may declare",
                plan.name,
                weir_core::limits::MAX_STEPS
            ),
            pos,
        );
    }
    plan.steps.push(s);
    Ok(StepHandle {
        pipeline: p.clone(),
        step: plan.steps.len() - 1,
    })
}

fn add_input(
    ctx: &NativeCallContext,
    s: &mut StepHandle,
    name: &str,
    source: Dynamic,
) -> RhaiResult<StepHandle> {
    let pos = ctx.call_position();
    if let Err(m) = weir_core::names::check_name("input", name) {
        return err(format!("step '{}': {m}", s.name()), pos);
    }
    let src = if let Some(o) = source.clone().try_cast::<OutputRef>() {
        InputSource::Step {
            step: o.step,
            output: o.output,
        }
    } else if let Some(p) = source.clone().try_cast::<rhai::ImmutableString>() {
        // `s3://...` would pass as a relative path and fail at run time.
        if let Some((scheme, _)) = p.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            return err(
                format!(
                    "step '{}': input '{name}' is a {scheme}:// URL; weir reads host inputs only from local files and folders for now (copy it next to the pipeline and name that path)",
                    s.name()
                ),
                pos,
            );
        }
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
        return err(
            format!("step '{}': input '{name}' is given twice", s.name()),
            pos,
        );
    }
    Ok(s.clone())
}

/// The path (`a.b[2]`) of the first float in `v` that is NaN or infinite.
fn non_finite(v: &Dynamic, at: String) -> Option<String> {
    let here = || {
        if at.is_empty() {
            "the value".to_string()
        } else {
            at.clone()
        }
    };
    if let Some(f) = v.clone().try_cast::<rhai::FLOAT>() {
        return (!f.is_finite()).then(here);
    }
    if let Some(a) = v.read_lock::<rhai::Array>() {
        return a
            .iter()
            .enumerate()
            .find_map(|(i, x)| non_finite(x, format!("{at}[{i}]")));
    }
    if let Some(m) = v.read_lock::<rhai::Map>() {
        return m.iter().find_map(|(k, x)| {
            non_finite(
                x,
                if at.is_empty() {
                    k.to_string()
                } else {
                    format!("{at}.{k}")
                },
            )
        });
    }
    None
}

/// Parses a `--param` override in the type of the param's default.
fn parse_override(name: &str, text: &str, default: &Dynamic) -> Result<Dynamic, String> {
    let bad = |what: &str| {
        format!("--param {name}={text}: expected {what} (the type of its default, {default})")
    };
    if default.is::<i64>() {
        text.trim()
            .parse::<i64>()
            .map(Dynamic::from)
            .map_err(|_| bad("an integer"))
    } else if default.is::<f64>() {
        text.trim()
            .parse::<f64>()
            .map(Dynamic::from)
            .map_err(|_| bad("a number"))
    } else if default.is::<bool>() {
        match text.trim() {
            "true" => Ok(Dynamic::from(true)),
            "false" => Ok(Dynamic::from(false)),
            _ => Err(bad("true or false")),
        }
    } else if default.is_string() {
        Ok(Dynamic::from(text.to_string()))
    } else {
        Err(format!(
            "--param {name}: only integer, number, boolean and string params can be set from the command line"
        ))
    }
}

fn register_params(e: &mut Engine, state: Arc<Mutex<Declared>>) {
    e.register_fn(
        "param",
        move |ctx: NativeCallContext, name: &str, default: Dynamic| -> RhaiResult<Dynamic> {
            let pos = ctx.call_position();
            if let Err(m) = weir_core::names::check_name("param", name) {
                return err(m.to_string(), pos);
            }
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            if st.params.contains_key(name) {
                return err(format!("param '{name}' is declared twice"), pos);
            }
            let value = match st.overrides.get(name).cloned() {
                Some(text) => {
                    st.used.insert(name.to_string());
                    parse_override(name, &text, &default).or_else(|m| err(m, pos))?
                }
                None => default,
            };
            if non_finite(&value, String::new()).is_some() {
                return err(
                    format!("param '{name}': {value} is not a finite number (NaN and infinities cannot be passed to a step)"),
                    pos,
                );
            }
            let json: serde_json::Value = rhai::serde::from_dynamic(&value)
                .or_else(|e| err(format!("param '{name}': {e}"), pos))?;
            st.params.insert(name.to_string(), json);
            Ok(value)
        },
    );
}

macro_rules! step_method {
    ($e:expr, $name:literal, |$ctx:ident, $s:ident $(, $arg:ident : $ty:ty)*| $body:block) => {
        $e.register_fn($name, |$ctx: NativeCallContext, $s: &mut StepHandle $(, $arg: $ty)*| -> RhaiResult<StepHandle> {
            $body
            Ok($s.clone())
        });
    };
}

/// Registers the step policies (`.retry`, `.timeout`, `.cache`, limits, tags...).
///
/// Long on purpose: a registration table, one `register_fn` per policy.
fn register_policies(e: &mut Engine) {
    step_method!(e, "retries", |ctx, s, n: i64| {
        let max = weir_core::limits::MAX_RETRIES;
        let Some(n) = u32::try_from(n).ok().filter(|n| *n <= max) else {
            return err(
                format!(
                    "step '{}': retries must be between 0 and {max}, found {n}",
                    s.name(),
                ),
                ctx.call_position(),
            );
        };
        s.with(|st| st.retry.retries = n);
    });
    step_method!(e, "retry_delay", |ctx, s, d: Dynamic| {
        let max = weir_core::limits::MAX_RETRY_DELAY.as_millis() as u64;
        let ms = parse_duration_ms(&d)
            .and_then(|ms| {
                if ms > max {
                    Err(format!("must be at most 1 day, found {ms} ms"))
                } else {
                    Ok(ms)
                }
            })
            .or_else(|m| {
                err(
                    format!("step '{}': retry_delay: {m}", s.name()),
                    ctx.call_position(),
                )
            })?;
        s.with(|st| st.retry.delay_ms = ms);
    });
    step_method!(e, "backoff", |ctx, s, f: f64| {
        if !(1.0..=100.0).contains(&f) {
            return err(
                format!(
                    "step '{}': backoff must be between 1.0 and 100.0, found {f}",
                    s.name()
                ),
                ctx.call_position(),
            );
        }
        s.with(|st| st.retry.backoff = f);
    });
    step_method!(e, "cache", |ctx, s, d: Dynamic| {
        let ms = parse_duration_ms(&d).or_else(|m| {
            err(
                format!("step '{}': cache expiry: {m}", s.name()),
                ctx.call_position(),
            )
        })?;
        s.with(|st| {
            st.cache.mode = CacheMode::Normal;
            st.cache.expiry_ms = Some(ms);
        });
    });
    step_method!(e, "no_cache", |_ctx, s| {
        s.with(|st| st.cache.mode = CacheMode::Disabled);
    });
    step_method!(e, "refresh", |_ctx, s| {
        s.with(|st| st.cache.mode = CacheMode::Refresh);
    });
    step_method!(e, "tag", |ctx, s, t: &str| {
        if let Err(m) = weir_core::names::check_name("tag", t) {
            return err(format!("step '{}': {m}", s.name()), ctx.call_position());
        }
        s.with(|st| st.tags.insert(t.to_string()));
    });
    step_method!(e, "requires", |ctx, s, c: &str| {
        if let Err(m) = weir_core::names::check_name("capability", c) {
            return err(format!("step '{}': {m}", s.name()), ctx.call_position());
        }
        s.with(|st| st.capabilities.insert(c.to_string()));
    });
    step_method!(e, "register", |ctx, s, name: &str| {
        if let Err(m) = weir_core::names::check_name("model", name) {
            return err(format!("step '{}': {m}", s.name()), ctx.call_position());
        }
        s.with(|st| st.register = Some(name.to_string()));
    });
    step_method!(e, "when", |_ctx, s, c: Cond| {
        s.with(|st| st.when = Some(c.0));
    });
    step_method!(e, "unless", |_ctx, s, c: Cond| {
        s.with(|st| st.when = Some(Condition::Not(Box::new(c.0))));
    });
    step_method!(e, "parallelism", |ctx, s, n: i64| {
        let ok = s.with(|st| match st.map.as_mut() {
            Some(m) => {
                m.parallelism = u32::try_from(n).unwrap_or(0);
                true
            }
            None => false,
        });
        if !ok || n < 1 {
            return err(
                format!(
                    "step '{}': parallelism applies to map steps and is at least 1, found {n}",
                    s.name()
                ),
                ctx.call_position(),
            );
        }
    });

    e.register_fn(
        "pool",
        |ctx: NativeCallContext, p: &mut PipelineHandle, tag: &str, n: i64| -> RhaiResult<()> {
            let pos = ctx.call_position();
            if let Err(m) = weir_core::names::check_name("pool", tag) {
                return err(m.to_string(), pos);
            }
            let Ok(n) = u32::try_from(n) else {
                return err(
                    format!("pool '{tag}': size must be at least 1, found {n}"),
                    pos,
                );
            };
            if n == 0 {
                return err(
                    format!("pool '{tag}': size must be at least 1, found 0"),
                    pos,
                );
            }
            let mut st = p.state.lock().unwrap_or_else(|p| p.into_inner());
            st.pipelines[p.index].pools.insert(tag.to_string(), n);
            Ok(())
        },
    );
    e.register_fn(
        "schedule",
        |ctx: NativeCallContext, p: &mut PipelineHandle, cron: &str| -> RhaiResult<()> {
            set_schedule(p, cron, rhai::Map::new(), ctx.call_position())
        },
    );
    e.register_fn(
        "schedule",
        |ctx: NativeCallContext,
         p: &mut PipelineHandle,
         cron: &str,
         opts: rhai::Map|
         -> RhaiResult<()> { set_schedule(p, cron, opts, ctx.call_position()) },
    );
    e.register_fn(
        "max_active_runs",
        |ctx: NativeCallContext, p: &mut PipelineHandle, n: i64| -> RhaiResult<()> {
            let Some(n) = u32::try_from(n).ok().filter(|n| *n > 0) else {
                return err(
                    format!("max_active_runs must be a positive integer, found {n}"),
                    ctx.call_position(),
                );
            };
            let mut st = p.state.lock().unwrap_or_else(|p| p.into_inner());
            st.pipelines[p.index].serve.max_active_runs = n;
            Ok(())
        },
    );
    e.register_fn(
        "after_success",
        |ctx: NativeCallContext, p: &mut PipelineHandle, upstream: &str| -> RhaiResult<()> {
            let pos = ctx.call_position();
            let mut st = p.state.lock().unwrap_or_else(|p| p.into_inner());
            let plan = &mut st.pipelines[p.index];
            if upstream.trim().is_empty() {
                return err("after_success: expected a pipeline name, found \"\"", pos);
            }
            if upstream == plan.name {
                return err(
                    format!("after_success: pipeline '{upstream}' cannot follow itself"),
                    pos,
                );
            }
            if !plan.serve.after_success.iter().any(|u| u == upstream) {
                plan.serve.after_success.push(upstream.to_string());
            }
            Ok(())
        },
    );
    e.register_fn(
        "after_change",
        |ctx: NativeCallContext, p: &mut PipelineHandle, dir: &str| -> RhaiResult<()> {
            let pos = ctx.call_position();
            if dir.trim().is_empty() || std::path::Path::new(dir).is_absolute() {
                return err(
                    format!(
                        "after_change: expected a folder relative to the script, found {dir:?}"
                    ),
                    pos,
                );
            }
            let mut st = p.state.lock().unwrap_or_else(|p| p.into_inner());
            let serve = &mut st.pipelines[p.index].serve;
            if !serve.after_change.iter().any(|d| d == dir) {
                serve.after_change.push(dir.to_string());
            }
            Ok(())
        },
    );
    e.register_fn(
        "after_model",
        |ctx: NativeCallContext, p: &mut PipelineHandle, model: &str| -> RhaiResult<()> {
            add_model_trigger(p, model, None, ctx.call_position())
        },
    );
    e.register_fn(
        "after_model",
        |ctx: NativeCallContext,
         p: &mut PipelineHandle,
         model: &str,
         stage: &str|
         -> RhaiResult<()> {
            add_model_trigger(p, model, Some(stage), ctx.call_position())
        },
    );
    for (name, on_failure) in [("on_failure", true), ("on_success", false)] {
        e.register_fn(
            name,
            move |ctx: NativeCallContext,
                  p: &mut PipelineHandle,
                  hook: rhai::Map|
                  -> RhaiResult<()> {
                let pos = ctx.call_position();
                let hook = parse_hook(name, &hook).or_else(|m| err(m, pos))?;
                let mut st = p.state.lock().unwrap_or_else(|p| p.into_inner());
                let serve = &mut st.pipelines[p.index].serve;
                if on_failure {
                    serve.on_failure.push(hook);
                } else {
                    serve.on_success.push(hook);
                }
                Ok(())
            },
        );
    }
}

/// `p.after_model(model)` and `p.after_model(model, stage)`.
fn add_model_trigger(
    p: &PipelineHandle,
    model: &str,
    stage: Option<&str>,
    pos: Position,
) -> RhaiResult<()> {
    if model.trim().is_empty() {
        return err("after_model: expected a model name, found \"\"", pos);
    }
    if let Some(stage) = stage
        && !["staging", "production", "archived"].contains(&stage)
    {
        return err(
            format!(
                "after_model: the stage must be \"staging\", \"production\" or \"archived\", found {stage:?}"
            ),
            pos,
        );
    }
    let t = weir_core::plan::ModelTrigger {
        model: model.to_string(),
        stage: stage.map(str::to_string),
    };
    let mut st = p.state.lock().unwrap_or_else(|p| p.into_inner());
    let serve = &mut st.pipelines[p.index].serve;
    if !serve.after_model.contains(&t) {
        serve.after_model.push(t);
    }
    Ok(())
}

/// `p.schedule(cron)` and `p.schedule(cron, #{ timezone, catchup, catchup_limit })`.
fn set_schedule(p: &PipelineHandle, cron: &str, opts: rhai::Map, pos: Position) -> RhaiResult<()> {
    let fields = cron.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return err(
            format!(
                "schedule {cron:?}: expected a cron expression of 5 fields (minute hour day month weekday), found {fields}"
            ),
            pos,
        );
    }
    let mut st = p.state.lock().unwrap_or_else(|p| p.into_inner());
    let plan = &mut st.pipelines[p.index];
    plan.schedule = Some(cron.to_string());
    for (k, v) in opts {
        match k.as_str() {
            "timezone" => match v.clone().try_cast::<rhai::ImmutableString>() {
                Some(tz) if !tz.trim().is_empty() => plan.serve.timezone = Some(tz.to_string()),
                _ => {
                    return err(
                        format!(
                            "schedule: timezone must be an IANA name such as \"Europe/Paris\", found {}",
                            kind(&v)
                        ),
                        pos,
                    );
                }
            },
            "catchup" => {
                plan.serve.catchup = match v.clone().try_cast::<rhai::ImmutableString>().as_deref()
                {
                    Some("skip") => Catchup::Skip,
                    Some("latest") => Catchup::Latest,
                    Some("all") => Catchup::All,
                    _ => {
                        return err(
                            format!(
                                "schedule: catchup must be \"skip\", \"latest\" or \"all\", found {v}"
                            ),
                            pos,
                        );
                    }
                }
            }
            "catchup_limit" => match v
                .as_int()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
            {
                Some(n) => plan.serve.catchup_limit = n,
                None => {
                    return err(
                        format!("schedule: catchup_limit must be a positive integer, found {v}"),
                        pos,
                    );
                }
            },
            other => {
                return err(
                    format!(
                        "schedule: unknown option '{other}' (options: timezone, catchup, catchup_limit)"
                    ),
                    pos,
                );
            }
        }
    }
    Ok(())
}

/// `#{ webhook: "http://..." }`, `#{ command: "NAME" }` (a hook the
/// project's weir.toml declares) or `#{ command: ["prog", "arg"] }` (which
/// `weir serve` refuses: see [`Hook::Command`]).
fn parse_hook(what: &str, m: &rhai::Map) -> Result<Hook, String> {
    let usage = format!(
        "{what} expects #{{ webhook: \"http://host/path\" }} or #{{ command: \"NAME\" }} (a hook declared in the project's weir.toml as [hooks.NAME])"
    );
    if m.len() != 1 {
        return Err(usage);
    }
    if let Some(url) = m.get("webhook") {
        let url = url
            .clone()
            .try_cast::<rhai::ImmutableString>()
            .ok_or_else(|| usage.clone())?;
        if !url.starts_with("http://") || url.len() <= "http://".len() {
            return Err(format!(
                "{what}: webhook must be an http:// URL, found {url:?} (TLS is not supported; put a local relay in front)"
            ));
        }
        return Ok(Hook::Webhook(url.to_string()));
    }
    if let Some(cmd) = m.get("command") {
        if let Some(name) = cmd.clone().try_cast::<rhai::ImmutableString>() {
            weir_core::names::check_name("hook", &name).map_err(|e| format!("{what}: {e}"))?;
            return Ok(Hook::Named(name.to_string()));
        }
        let arr = cmd
            .clone()
            .try_cast::<rhai::Array>()
            .ok_or_else(|| usage.clone())?;
        let argv: Vec<String> = arr
            .into_iter()
            .map(|a| a.try_cast::<rhai::ImmutableString>().map(|s| s.to_string()))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{what}: command must be a list of strings"))?;
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(format!("{what}: command must name a program"));
        }
        return Ok(Hook::Command(argv));
    }
    Err(usage)
}

/// What a script value is, in the words of the language.
fn kind(v: &Dynamic) -> String {
    if v.is::<OperandRef>() {
        "a step value".into()
    } else if v.is::<Cond>() {
        "a condition".into()
    } else if v.is::<StepHandle>() {
        "a step".into()
    } else {
        format!("a value of type {}", v.type_name())
    }
}

fn operand_of(v: &Dynamic) -> Option<Operand> {
    if let Some(o) = v.clone().try_cast::<OperandRef>() {
        return Some(o.0);
    }
    if v.is::<i64>() || v.is::<f64>() || v.is::<bool>() || v.is_string() {
        return rhai::serde::from_dynamic::<serde_json::Value>(v)
            .ok()
            .map(Operand::Value);
    }
    None
}

fn register_conditions(e: &mut Engine) {
    e.register_fn("metric", |s: &mut StepHandle, name: &str| {
        OperandRef(Operand::Metric {
            step: s.name(),
            name: name.to_string(),
        })
    });
    e.register_fn(
        "json",
        |ctx: NativeCallContext,
         s: &mut StepHandle,
         output: &str,
         file: &str,
         pointer: &str|
         -> RhaiResult<OperandRef> {
            let pointer = if pointer.starts_with('/') {
                pointer.to_string()
            } else {
                format!("/{pointer}")
            };
            let known = s.with(|st| st.outputs.contains(output));
            if !known {
                return err(
                    format!("step '{}' declares no output '{output}'", s.name()),
                    ctx.call_position(),
                );
            }
            Ok(OperandRef(Operand::Json {
                step: s.name(),
                output: output.to_string(),
                file: file.to_string(),
                pointer,
            }))
        },
    );
    for (sym, op) in [
        ("==", CmpOp::Eq),
        ("!=", CmpOp::Ne),
        ("<", CmpOp::Lt),
        ("<=", CmpOp::Le),
        (">", CmpOp::Gt),
        (">=", CmpOp::Ge),
    ] {
        let cmp = move |ctx: &NativeCallContext, l: Dynamic, r: Dynamic| -> RhaiResult<Cond> {
            match (operand_of(&l), operand_of(&r)) {
                (Some(left), Some(right)) => Ok(Cond(Condition::Compare { left, op, right })),
                _ => err(
                    format!(
                        "cannot compare {} {sym} {} in a condition",
                        kind(&l),
                        kind(&r)
                    ),
                    ctx.call_position(),
                ),
            }
        };
        e.register_fn(
            sym,
            move |ctx: NativeCallContext, l: OperandRef, r: Dynamic| cmp(&ctx, Dynamic::from(l), r),
        );
        e.register_fn(sym, move |ctx: NativeCallContext, l: i64, r: OperandRef| {
            cmp(&ctx, Dynamic::from(l), Dynamic::from(r))
        });
        e.register_fn(sym, move |ctx: NativeCallContext, l: f64, r: OperandRef| {
            cmp(&ctx, Dynamic::from(l), Dynamic::from(r))
        });
    }
    fn conds(ctx: &NativeCallContext, list: rhai::Array, what: &str) -> RhaiResult<Vec<Condition>> {
        list.into_iter()
            .map(|c| match c.clone().try_cast::<Cond>() {
                Some(c) => Ok(c.0),
                None => err(
                    format!(
                        "{what}() takes a list of conditions, found a {}",
                        c.type_name()
                    ),
                    ctx.call_position(),
                ),
            })
            .collect()
    }
    e.register_fn(
        "all",
        |ctx: NativeCallContext, list: rhai::Array| -> RhaiResult<Cond> {
            Ok(Cond(Condition::All(conds(&ctx, list, "all")?)))
        },
    );
    e.register_fn(
        "any",
        |ctx: NativeCallContext, list: rhai::Array| -> RhaiResult<Cond> {
            Ok(Cond(Condition::Any(conds(&ctx, list, "any")?)))
        },
    );
    e.register_fn("not", |c: Cond| Cond(Condition::Not(Box::new(c.0))));
    e.register_fn("!", |c: Cond| Cond(Condition::Not(Box::new(c.0))));
    e.register_fn("&", |a: Cond, b: Cond| Cond(Condition::All(vec![a.0, b.0])));
    e.register_fn("|", |a: Cond, b: Cond| Cond(Condition::Any(vec![a.0, b.0])));
    e.register_fn("to_string", |c: &mut Cond| c.0.to_string());
}

fn describe(file: &str, e: &EvalAltResult) -> String {
    // Runtime errors raised by weir's functions carry their message as a string.
    let mut inner = e;
    while let EvalAltResult::ErrorInFunctionCall(_, _, next, _) = inner {
        inner = next;
    }
    let msg = match inner {
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        EvalAltResult::ErrorTooManyOperations(_) => {
            "the script ran more than 50,000,000 operations (an endless loop?)".to_string()
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            "calls nested deeper than 64 levels (endless recursion?)".to_string()
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            format!(
                "{what} grew past the script limits (strings 1 MiB, arrays 1,000,000 items, maps 100,000 entries)"
            )
        }
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

/// `import` for pipeline scripts: `.rhai` files inside the script's own
/// folder (and below), nothing else.
struct ProjectResolver {
    root: PathBuf,
    files: rhai::module_resolvers::FileModuleResolver,
}

impl ProjectResolver {
    fn new(root: &Path) -> ProjectResolver {
        let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        ProjectResolver {
            files: rhai::module_resolvers::FileModuleResolver::new_with_path(&root),
            root,
        }
    }
}

impl rhai::ModuleResolver for ProjectResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> RhaiResult<rhai::Shared<rhai::Module>> {
        let rel = Path::new(path);
        let file = self.root.join(rel).with_extension("rhai");
        let inside = !rel.is_absolute()
            && file
                .canonicalize()
                .map(|f| f.starts_with(&self.root))
                .unwrap_or(!path.contains(".."));
        if !inside {
            return err(
                format!(
                    "import {path:?}: a pipeline may import only .rhai files inside its own folder ({})",
                    self.root.display()
                ),
                pos,
            );
        }
        self.files.resolve(engine, source, path, pos)
    }
}

/// Compiles a script held in memory. `file` names it in errors; relative
/// paths in the plan resolve against `base_dir`.
pub fn compile_str(source: &str, file: &str, base_dir: &Path) -> Result<Plan, DslError> {
    compile_str_with(source, file, base_dir, &BTreeMap::new())
}

/// Like [`compile_str`], with `--param name=value` overrides for `param()`.
/// An override naming no declared param is an error.
pub fn compile_str_with(
    source: &str,
    file: &str,
    base_dir: &Path,
    overrides: &BTreeMap<String, String>,
) -> Result<Plan, DslError> {
    let state = Arc::new(Mutex::new(Declared {
        overrides: overrides.clone(),
        ..Declared::default()
    }));
    let file: Arc<str> = Arc::from(file);
    let engine = engine(state.clone(), file.clone(), base_dir.to_path_buf());
    let mut scope = rhai::Scope::new();
    for (t, name) in ArtifactType::ALL {
        scope.push_constant(name, t);
    }
    let ast = engine.compile_with_scope(&scope, source).map_err(|e| {
        let pos = e.position();
        DslError(format!(
            "{}: syntax error: {}",
            origin(&file, pos),
            strip_position(&e.to_string())
        ))
    })?;
    engine
        .run_ast_with_scope(&mut scope, &ast)
        .map_err(|e| DslError(describe(&file, &e)))?;
    drop(engine);
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(unused) = st.overrides.keys().find(|k| !st.used.contains(*k)) {
        let declared: Vec<&str> = st.params.keys().map(String::as_str).collect();
        return Err(DslError(format!(
            "{file}: --param {unused}: the script declares no such param{} (its params: {})",
            weir_core::plan::suggest(unused, declared.iter().copied()),
            if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            }
        )));
    }
    let params = std::mem::take(&mut st.params);
    let mut plans = std::mem::take(&mut st.pipelines);
    match plans.len() {
        0 => Err(DslError(format!(
            "{file}: the script declares no pipeline; start with `let p = pipeline(\"name\");`"
        ))),
        1 => {
            let mut plan = plans.remove(0);
            plan.params = params;
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
    compile_file_with(path, &BTreeMap::new())
}

/// Like [`compile_file`], with `--param` overrides.
pub fn compile_file_with(
    path: &Path,
    overrides: &BTreeMap<String, String>,
) -> Result<Plan, DslError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| DslError(format!("cannot read {}: {e}", path.display())))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let base = base.canonicalize().unwrap_or(base);
    compile_str_with(&source, &path.display().to_string(), &base, overrides)
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
