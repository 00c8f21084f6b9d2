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

/// A batch in which one user's request is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("user {index} of the batch: {source}")]
pub struct BatchError {
    /// Position of the offending user in the batch.
    pub index: usize,
    /// What was wrong with that user's request.
    #[source]
    pub source: InputError,
}

/// Why a backend could not be created or could not serve a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// A user's request in the batch is invalid.
    #[error(transparent)]
    Input(#[from] BatchError),
    /// The requested backend cannot run here (not built in, no device, no driver).
    #[error("{backend} backend unavailable: {reason}")]
    Unavailable {
        /// "cuda", ….
        backend: &'static str,
        /// What is missing and what to do about it.
        reason: String,
    },
    /// The call's arguments do not fit the model (embedding width, exclusion list count, …).
    #[error("invalid backend call: {0}")]
    InvalidCall(String),
    /// The device failed while serving a call.
    #[error("{backend} backend failed: {message}")]
    Device {
        /// Which backend.
        backend: &'static str,
        /// The device's error.
        message: String,
    },
    /// The device's context is lost (a sticky fault: an illegal address, a
    /// trap, an uncorrectable ECC error): every later call on this backend
    /// fails the same way, so it must be rebuilt
    /// ([`crate::failover::Failover`] does, serving on the CPU meanwhile).
    #[error("{backend} context lost: {message}; the backend must be rebuilt")]
    ContextLost {
        /// Which backend.
        backend: &'static str,
        /// The device's error.
        message: String,
    },
}

impl BackendError {
    /// Whether the backend that returned this error can serve no more
    /// calls (see [`BackendError::ContextLost`]).
    pub fn is_context_lost(&self) -> bool {
        matches!(self, BackendError::ContextLost { .. })
    }
}
