//! `weir-core`: what every part of weir agrees on, as plain data, with no
//! engine, database or async runtime: the [`plan`] a script compiles to and
//! its validation, [`digest`]s, the one [`names`] rule, [`limits`] and
//! their defaults, the [`cache`] key's encoding and the [`tree`] objects
//! folders are stored as.
//!
//! `weir-dsl` depends on this crate alone; `weir-runtime` re-exports its
//! modules under the same names (`weir_runtime::plan`, ...).
#![deny(missing_docs)]

pub mod cache;
pub mod digest;
pub mod limits;
pub mod names;
pub mod plan;
pub mod tree;

pub use digest::Digest;
pub use plan::Plan;
