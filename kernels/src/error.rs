//! Errors of the numeric core. Each message says what was wrong and what was expected.

use std::path::PathBuf;

/// A model directory that cannot be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    // The cause is part of the message rather than a `source()`, so that both
    // `to_string()` and anyhow's `{:#}` chain print it exactly once.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// `config.json` is malformed or inconsistent.
    #[error("invalid model config: {0}")]
    Config(String),
    /// `model.safetensors` is malformed or a tensor has the wrong name, dtype or shape.
    #[error("invalid model weights: {0}")]
    Weights(String),
}

/// A request the engine cannot encode or score.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// The history has no events.
    #[error("the history has no events: at least one event is needed to encode a user")]
    NoEvents,
    /// An item id outside 1..=V.
    #[error("item id {item} is outside the model's catalog 1..={num_items}")]
    UnknownItem {
        /// The offending id.
        item: u32,
        /// V.
        num_items: usize,
    },
    /// The query time is before the newest event.
    #[error("query_time {query_time} is before the last event's timestamp {last_ts}; it must be at or after it")]
    QueryBeforeLastEvent {
        /// The request's query time.
        query_time: i64,
        /// The newest event's timestamp.
        last_ts: i64,
    },
}
