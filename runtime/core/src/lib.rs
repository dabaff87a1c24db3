//! `weir-core`: what every part of weir agrees on, as plain data, with no
//! engine, database or async runtime: the [`plan`] a script compiles to and
//! its validation, [`digest`]s, the one [`names`] rule, [`limits`] and
//! their defaults, the [`cache`] key's encoding, the [`tree`] objects
//! folders are stored as, the [`owner`] of a running run (which process,
//! to tell a killed one from a live one), and the boundaries other backends implement: the
//! [`records`] (their types and traits, by audience) and the object
//! [`remote`] and the cluster's [`queue`] of units.
//!
//! `weir-dsl` depends on this crate alone; `weir-runtime` re-exports its
//! modules under the same names (`weir_runtime::plan`, ...).
#![deny(missing_docs)]

pub mod cache;
pub mod digest;
pub mod limits;
pub mod names;
pub mod owner;
pub mod plan;
pub mod queue;
pub mod records;
pub mod remote;
pub mod tree;

pub use digest::Digest;
pub use plan::Plan;
