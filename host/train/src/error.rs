//! Errors of the training library. Each message says what was wrong and what to do.

use std::path::PathBuf;

/// Anything that stops reading data, training or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A data file is unusable as a whole.
    #[error("{path}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// Options that contradict each other or the data.
    #[error("{0}")]
    Invalid(String),
    /// The model directory cannot be loaded or written.
    #[error(transparent)]
    Model(#[from] edgerec_kernels::ModelError),
    /// `items.json` cannot be loaded or written.
    #[error(transparent)]
    ItemMap(#[from] edgerec_kernels::item_map::ItemMapError),
    /// The autograd backend failed (a shape bug or out of memory).
    #[error("training computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The engine rejected an evaluation request.
    #[error("engine: {0}")]
    Engine(String),
}
