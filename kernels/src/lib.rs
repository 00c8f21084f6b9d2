//! edgerec's numeric core: the HSTU model format, the CPU forward (full,
//! jagged-batch and incremental encode), cosine top-k scoring, and the backend
//! trait that the CUDA backend also implements.
//!
//! The math follows `docs/HSTU.md` (the research HSTU of the public
//! benchmark table); every fast path here is tested against a plain f64
//! reference forward in `tests/`.

pub mod backend;
mod choice;
pub mod config;
pub mod cuda;
pub mod encode;
pub mod error;
pub mod failover;
mod forward;
pub mod history;
pub mod item_map;
mod microkernel;
pub mod model;
pub mod retrieval;
pub mod score;

pub use backend::{AppendRequest, Backend, BackendState, CpuBackend};
pub use choice::{BackendChoice, Selected, cuda_backend, open_backend, select_backend};
pub use config::{ModelConfig, Variant};
pub use encode::{Built, EncoderState, encode, encode_batch};
pub use error::{BackendError, BatchError, InputError, ModelError};
pub use history::{Event, UserHistory, kept_items, kept_window};
pub use microkernel::{PORTABLE_ENV, set_portable, simd_in_use};
pub use model::{LayerWeights, Model, Weights};
pub use retrieval::{AnnIndex, AnnOptions, AnnStorage, QuantizedTable, RetrievalError, RowMask};
pub use score::{Scored, top_k};
