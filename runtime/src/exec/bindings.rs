//! Host bindings generated from `wit/` — the only place `bindgen!` runs.
//!
//! Two worlds: `step` (every step) and `trusted-step` (adds the `gpu`
//! import, linked only for components the trust policy names). The second
//! reuses the first's interfaces, so both share one set of host traits.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "step",
    exports: { default: async },
});

pub use weir::step::{log, metrics, types};

/// Bindings of the `trusted-step` world.
pub mod trusted {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "trusted-step",
        exports: { default: async },
        with: {
            "weir:step/types": super::weir::step::types,
            "weir:step/log": super::weir::step::log,
            "weir:step/metrics": super::weir::step::metrics,
            "weir:step/gpu.tensor": crate::exec::gpu::Tensor,
        },
    });

    pub use weir::step::gpu;
}
