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
