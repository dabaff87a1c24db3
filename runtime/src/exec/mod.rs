//! Executing one attempt: the engine and its compile cache, loading and
//! linking components ([`executor`]), the host side of a guest
//! (`host_state.rs`: WASI, limits, logs, metrics; `bounded.rs`: imports
//! whose arguments are bounded before they are read), the generated
//! bindings (`bindings.rs`), the GPU capability (`gpu.rs`) and the
//! capabilities a host adds ([`capability`]: the linker functions they
//! install act on the guest's `HostState`).

pub(crate) mod bindings;
pub(crate) mod bounded;
pub mod capability;
pub mod executor;
pub(crate) mod gpu;
pub(crate) mod host_state;
