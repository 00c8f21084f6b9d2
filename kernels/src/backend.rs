//! The engine behind a server or CLI call: the CPU backend here, the CUDA
//! backend (kernels/src/cuda) behind the same trait, and the choice between them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rayon::prelude::*;

use crate::encode::{BatchError, encode_batch};
use crate::model::Model;
use crate::history::UserHistory;
use crate::score::{Scored, top_k};

/// Why a backend could not be created or could not serve a call.
#[derive(Debug, thiserror::Error)]
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
}

/// An engine that encodes users and scores the catalog for one loaded model.
pub trait Backend: Send + Sync {
    /// `"cpu"` or `"cuda"`.
    fn name(&self) -> &'static str;
    /// The model this backend serves.
    fn model(&self) -> &Arc<Model>;
    /// Encodes a jagged batch of users (see [`crate::encode_batch`]).
    fn encode_batch(&self, users: &[UserHistory<'_>]) -> Result<Vec<Vec<f32>>, BackendError>;
    /// Cosine top-k for each embedding, `exclude[i]` skipped for user i
    /// (`exclude` is empty or has one list per embedding).
    fn top_k_batch(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<Scored>>, BackendError>;
}

/// The CPU backend: the fast f32 forward of this crate, parallel across users.
pub struct CpuBackend {
    model: Arc<Model>,
}

impl CpuBackend {
    /// A CPU backend serving `model`.
    pub fn new(model: Arc<Model>) -> Self {
        CpuBackend { model }
    }
}

/// Checks a top-k batch's arguments against the model; shared by the backends.
pub fn check_top_k_call(
    model: &Model,
    embeddings: &[Vec<f32>],
    exclude: &[&[u32]],
) -> Result<(), BackendError> {
    let d = model.config.d_model;
    if let Some((i, e)) = embeddings.iter().enumerate().find(|(_, e)| e.len() != d) {
        return Err(BackendError::InvalidCall(format!(
            "embedding {i} has {} values, the model's d_model is {d}",
            e.len()
        )));
    }
    if !exclude.is_empty() && exclude.len() != embeddings.len() {
        return Err(BackendError::InvalidCall(format!(
            "{} exclusion lists for {} embeddings: pass none or one per embedding",
            exclude.len(),
            embeddings.len()
        )));
    }
    Ok(())
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn model(&self) -> &Arc<Model> {
        &self.model
    }

    fn encode_batch(&self, users: &[UserHistory<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        Ok(encode_batch(&self.model, users)?)
    }

    fn top_k_batch(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        check_top_k_call(&self.model, embeddings, exclude)?;
        Ok(embeddings
            .par_iter()
            .enumerate()
            .map(|(i, e)| top_k(&self.model, e, k, exclude.get(i).copied().unwrap_or(&[])))
            .collect())
    }
}

/// Which backend to serve with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// CUDA when it loads, otherwise the CPU.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// The CUDA backend; an error when it cannot load.
    Cuda,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "cuda" => Ok(BackendChoice::Cuda),
            other => Err(format!("unknown backend {other:?}: expected auto, cpu or cuda")),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Cuda => "cuda",
        })
    }
}

/// The CUDA backend for `model`, or why it cannot run here.
///
/// This is the one place the CUDA backend (kernels/src/cuda) is wired in.
pub fn cuda_backend(model: Arc<Model>) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(crate::cuda::CudaBackend::new(model)?))
}

/// Creates the backend for `choice`: `Auto` tries CUDA and falls back to the
/// CPU; `Cuda` fails with [`BackendError::Unavailable`] when CUDA cannot load.
pub fn select_backend(
    choice: BackendChoice,
    model: Arc<Model>,
) -> Result<Box<dyn Backend>, BackendError> {
    match choice {
        BackendChoice::Cpu => Ok(Box::new(CpuBackend::new(model))),
        BackendChoice::Cuda => cuda_backend(model),
        BackendChoice::Auto => match cuda_backend(model.clone()) {
            Ok(backend) => Ok(backend),
            Err(_) => Ok(Box::new(CpuBackend::new(model))),
        },
    }
}
