//! Executing one attempt: the engine and its compile cache, loading and
//! linking components ([`executor`]), the host side of a guest
//! (`host_state.rs`: WASI, limits, logs, metrics; `bounded.rs`: imports
//! whose arguments are bounded before they are read), the generated
//! bindings (`bindings.rs`) and the GPU capability (`gpu.rs`).

pub(crate) mod bindings;
pub(crate) mod bounded;
pub mod executor;
pub(crate) mod gpu;
pub(crate) mod host_state;
