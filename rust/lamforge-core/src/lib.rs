//! Pure Rust core of lamforge.
//!
//! This crate holds the compute kernels behind the Python package `lamforge`: periodic cell
//! geometry and (in later modules) neighbour search, Zarr shard reading and batch collation. It has
//! no Python dependency; the `lamforge-py` crate is the thin pyo3 binding over it.

pub mod aggregate;
pub mod cell;
pub mod error;
pub mod loader;
pub mod memory;
pub mod neighbors;
mod offsets;
pub mod parallel;
mod simd;
pub mod store;
#[cfg(test)]
mod test_values;
pub mod thin;
pub mod three_body;

pub use error::{CoreError, Result};

/// Version of the core crate, reported by `lamforge version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
