//! Reading a lamforge store (Zarr v3, `lamforge.data.format`) directly from Rust.
//!
//! This is a minimal reader of exactly the layout lamforge writes (one `sharding_indexed` codec,
//! zstd inner chunks, crc32c shard index) rather than a general Zarr implementation: the loader
//! only ever needs "rows `a..b` of array `x`", and keeping the shard index and the decoded inner
//! chunks in caches makes that one hash lookup and a copy when the chunk is warm. Any other layout
//! is refused with an error naming the file (see [`array`]). The `zarrs` crate was measured as the
//! alternative (README, data loader section): its build was the cost that decided it.
//!
//! Errors name the dataset, the array and the frame being read, then the file and inner chunk.

pub mod array;
pub mod cache;
pub mod dataset;
pub mod shard;

pub use cache::{CacheStats, ClockCache};
pub use dataset::{Caches, ChunkCache, Dataset, Element, Field, ShardCache};
