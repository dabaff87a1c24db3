//! weir-host-gpu: the host GPU capability (training kernels for trusted steps,
//! CUDA through cudarc with a CPU reference implementation).
//!
//! Not implemented yet: this crate only reserves its place in the workspace.
//! The capability, its WIT world (`trusted-step`) and its trust policy are
//! tracked by the GPU issue; until then no step can import a GPU interface,
//! and the runtime refuses components that try (see ARCHITECTURE.md).
