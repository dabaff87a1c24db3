//! Host bindings generated from `wit/` — the only place `bindgen!` runs.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "step",
    exports: { default: async },
});

pub use weir::step::{log, metrics, types};
