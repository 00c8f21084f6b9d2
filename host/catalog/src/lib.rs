//! A tenant's catalog in memory: typed attribute columns over the model's
//! item rows, versioned so that a request pins one version while upserts make
//! the next, plus the two things the request path reads from it: candidate
//! columns in the plugin contract's shape ([`CatalogSnapshot::gather`]) and
//! filter masks for retrieval ([`Filter::compile`], [`CompiledFilter::mask`]).
//!
//! How it is laid out and what it costs: the crate README.

mod chunk;
mod chunk_list;
mod column;
mod dictionary;
mod error;
mod filter;
mod gather;
mod kind;
mod report;
mod snapshot;
#[cfg(test)]
mod testing;

pub use error::CatalogError;
pub use filter::{CompiledFilter, Filter, FilterError, Op, Predicate};
pub use fixedbitset::FixedBitSet;
pub use gather::{GatheredColumn, GatheredValues};
pub use kind::Kind;
pub use report::{CatalogStats, ColumnMemory, ColumnStats, MemoryReport};
pub use snapshot::{CatalogSnapshot, MAX_COLUMNS};
