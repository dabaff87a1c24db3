//! The crates' dependency rules (ARCHITECTURE.md): the DSL knows nothing of
//! the engine, the database or the async runtime; neither does the core
//! crate of plain data; the GPU kernels know nothing of wasmtime.

use std::path::Path;

/// The names of the `[dependencies]` of the crate at `dir`.
fn dependencies(dir: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

const ENGINE: &[&str] = &[
    "weir-runtime",
    "wasmtime",
    "wasmtime-wasi",
    "rusqlite",
    "tokio",
    "axum",
];

#[test]
fn the_dsl_and_the_core_crate_know_nothing_of_the_engine() {
    let dsl = dependencies("dsl");
    assert!(dsl.iter().any(|d| d == "weir-core"), "{dsl:?}");
    for (krate, deps) in [("dsl", dsl), ("runtime/core", dependencies("runtime/core"))] {
        let bad: Vec<&String> = deps
            .iter()
            .filter(|d| ENGINE.contains(&d.as_str()))
            .collect();
        assert!(bad.is_empty(), "{krate} depends on {bad:?}");
        assert!(
            deps.iter()
                .all(|d| !d.starts_with("weir-") || d == "weir-core"),
            "{krate}: {deps:?}"
        );
    }
}

#[test]
fn the_postgres_records_and_the_object_store_remote_know_only_the_core_crate() {
    for krate in ["runtime/postgres", "runtime/objects"] {
        let deps = dependencies(krate);
        assert!(deps.iter().any(|d| d == "weir-core"), "{krate}: {deps:?}");
        assert!(
            deps.iter().all(|d| !d.starts_with("wasmtime")
                && d != "rusqlite"
                && (!d.starts_with("weir-") || d == "weir-core")),
            "{krate}: {deps:?}"
        );
    }
}

#[test]
fn the_gpu_kernels_know_nothing_of_wasmtime() {
    let deps = dependencies("host-gpu");
    assert!(
        deps.iter()
            .all(|d| !d.starts_with("wasmtime") && !d.starts_with("weir-")),
        "{deps:?}"
    );
}

#[test]
fn only_the_cli_knows_http() {
    let deps = dependencies("runtime");
    let http: Vec<&String> = deps
        .iter()
        .filter(|d| ["axum", "hyper", "ureq", "reqwest"].contains(&d.as_str()))
        .collect();
    assert!(http.is_empty(), "weir-runtime depends on {http:?}");
}

/// The top-level module of the runtime that `crate::name` refers to: the
/// module itself, or the one a root re-export points into; `None` for the
/// core crate's modules (re-exported whole) and for the root.
fn runtime_module(name: &str) -> Option<&str> {
    match name {
        "cache" | "digest" | "limits" | "names" | "owner" | "plan" | "tree" => None,
        "capability" | "executor" => Some("exec"),
        "signing" => Some("trust"),
        m => Some(m),
    }
}

/// Which top-level runtime modules each one imports (`crate::x` outside
/// comments), read from the sources.
fn runtime_imports() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/src");
    let mut graph = std::collections::BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if rel == "lib.rs" || !rel.ends_with(".rs") {
                continue;
            }
            let module = rel.split('/').next().unwrap().trim_end_matches(".rs");
            let deps: &mut std::collections::BTreeSet<String> =
                graph.entry(module.to_string()).or_default();
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if let Some(m) = runtime_module(&name)
                        && m != module
                    {
                        deps.insert(m.to_string());
                    }
                }
            }
        }
    }
    graph
}

/// No import circle between the runtime's modules (issue 22): each concern
/// (store, exec, unit, sched, run, ...) builds only on those below it.
#[test]
fn the_runtime_modules_import_each_other_without_a_circle() {
    let graph = runtime_imports();
    assert!(
        graph.contains_key("sched") && graph.contains_key("store"),
        "{graph:?}"
    );
    // Depth-first search; a module met again while on the path closes a circle.
    fn visit(
        m: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            panic!("import circle: {} -> {m}", path[at..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = Default::default();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

/// The layers ARCHITECTURE.md names: the scheduler and the unit runner never
/// reach up into runs; the store and the executor know nothing of
/// scheduling.
#[test]
fn lower_layers_know_nothing_of_higher_ones() {
    let graph = runtime_imports();
    let forbidden = [
        ("store", &["exec", "unit", "sched", "run", "runtime"][..]),
        ("exec", &["unit", "sched", "run", "runtime"][..]),
        ("unit", &["sched", "run", "runtime", "config"][..]),
        ("sched", &["run"][..]),
        ("records", &["store", "exec", "sched", "run"][..]),
    ];
    for (m, above) in forbidden {
        let deps = &graph[m];
        let bad: Vec<&&str> = above.iter().filter(|a| deps.contains(**a)).collect();
        assert!(bad.is_empty(), "{m} imports {bad:?}");
    }
    // The scheduler touches files only through the store.
    let sched = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/src/sched");
    for e in std::fs::read_dir(&sched).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("std::fs") && !text.contains("File::"),
            "{} uses the filesystem directly",
            path.display()
        );
    }
}
