//! edgerec's numeric core: the HSTU model format, the CPU forward (full,
//! jagged-batch and incremental encode), cosine top-k scoring, and the backend
//! trait that the CUDA backend also implements.
//!
//! The math follows `HSTU.md` of the design (the research HSTU of the public
//! benchmark table); every fast path here is tested against a plain f64
//! reference forward in `tests/`.

pub mod config;
pub mod error;
pub mod model;

pub use config::{ModelConfig, Variant};
pub use error::{InputError, ModelError};
pub use model::{LayerWeights, Model, Weights};
