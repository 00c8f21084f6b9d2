//! Training, fine-tuning and evaluation of edgerec's HSTU models: readers for
//! MovieLens and generic event logs, the leave-last-out split, ranking
//! metrics, a candle trainer whose forward is the engine's math, evaluation
//! through the engine itself, training-curve plots, and the synthetic
//! storefront behind the bundled demo model.

pub mod data;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod hstu;
pub mod import;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod report;
pub mod split;
pub mod synth;
pub mod train;

pub use error::TrainError;
