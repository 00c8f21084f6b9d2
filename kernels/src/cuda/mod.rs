//! The CUDA backend: hand-written HSTU encode and scoring kernels, compiled at
//! run time with NVRTC for the device found and launched through cudarc.
//!
//! Nothing CUDA is needed to build: cudarc loads `libcuda` and `libnvrtc`
//! dynamically, and [`CudaBackend::new`] checks they exist before the first
//! cudarc call (cudarc panics, rather than erroring, on a missing library),
//! so on a machine without a GPU the backend reports itself unavailable and
//! `select_backend(Auto)` serves from the CPU.
//!
//! Kernels (one family per `.cu` file, each beside this code and naming the
//! CPU function it mirrors): `hstu_rows.cu` (embedding, key/value scatter,
//! L2 norm), `hstu_gemm.cu` (LN→uvqk→SiLU and u⊙LN(O)→W_o+b+residual,
//! fused), `hstu_attention.cu` (causal SiLU attention with in-kernel rab, any
//! head dims), `score_topk.cu` (fused cosine scoring + block top-k + merge),
//! `roofline.cu` (the FMA peak the timings are compared with).

mod buckets;
mod device;
mod encode;
mod roofline;
mod state;
mod topk;
mod workspace;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, BackendError};
use crate::encode::BatchError;
use crate::history::{UserHistory, kept_window};
use crate::model::Model;
use crate::score::Scored;

use device::{Device, DeviceWeights};
use encode::{Job, KvStore, MAX_ROWS_PER_LAUNCH};
use workspace::Workspace;

pub use roofline::Roofs;
pub use state::CudaEncoderState;

/// The CUDA backend for one model on one device. Weights are uploaded once
/// at creation; the work buffers grow to the largest call and are reused.
/// Calls are serialised (one stream, one workspace).
pub struct CudaBackend {
    model: Arc<Model>,
    device: Device,
    weights: DeviceWeights,
    work: Mutex<Workspace>,
    poison: AtomicBool,
}

impl CudaBackend {
    /// Opens CUDA device 0 (or `EDGEREC_CUDA_DEVICE`), compiles the kernels
    /// for it and uploads `model`'s weights.
    ///
    /// Errors: [`BackendError::Unavailable`] when there is no driver, no
    /// NVRTC, no device, or the model's head dims need more shared memory
    /// than the device has; [`BackendError::Device`] when the device fails.
    pub fn new(model: Arc<Model>) -> Result<Self, BackendError> {
        let ordinal = match std::env::var("EDGEREC_CUDA_DEVICE") {
            Ok(v) => v.parse::<usize>().map_err(|_| BackendError::Unavailable {
                backend: "cuda",
                reason: format!("EDGEREC_CUDA_DEVICE={v:?} is not a device number (0, 1, …)"),
            })?,
            Err(_) => 0,
        };
        let device = Device::open(ordinal, &model)?;
        let weights = DeviceWeights::upload(&device.stream, &model)?;
        Ok(CudaBackend { model, device, weights, work: Mutex::new(Workspace::new()), poison: AtomicBool::new(false) })
    }

    /// Why the CUDA backend cannot run on this machine, or `None` when the
    /// driver and NVRTC libraries load (a device may still be missing).
    pub fn missing_libraries() -> Option<String> {
        device::missing_libraries()
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn device_name(&self) -> &str {
        &self.device.name
    }

    /// When on, every work buffer is filled with NaN before each call, so an
    /// element that no kernel writes shows up in the results (a test aid).
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    fn poison_outputs(&self) -> bool {
        self.poison.load(Ordering::Relaxed)
    }

    fn workspace(&self) -> std::sync::MutexGuard<'_, Workspace> {
        // A panic mid-call leaves only scratch contents behind: safe to reuse.
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn model(&self) -> &Arc<Model> {
        &self.model
    }

    fn encode_batch(&self, users: &[UserHistory<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        // Validate everything first, as the CPU engine does.
        let windows = users
            .iter()
            .enumerate()
            .map(|(index, u)| {
                kept_window(&self.model.config, u.events, u.query_time).map_err(|source| BatchError { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut ws = self.workspace();
        let mut out = Vec::with_capacity(users.len());
        let mut start = 0;
        while start < users.len() {
            let mut rows = 0;
            let mut end = start;
            while end < users.len() && (end == start || rows + windows[end].len() <= MAX_ROWS_PER_LAUNCH) {
                rows += windows[end].len();
                end += 1;
            }
            let jobs: Vec<Job<'_>> = (start..end)
                .map(|i| Job { events: &windows[i], query_time: users[i].query_time, first: 0 })
                .collect();
            out.extend(self.forward_jobs(&mut ws, &jobs, KvStore::Transient)?);
            start = end;
        }
        Ok(out)
    }

    fn top_k_batch(&self, embeddings: &[Vec<f32>], k: usize, exclude: &[&[u32]]) -> Result<Vec<Vec<Scored>>, BackendError> {
        crate::backend::check_top_k_call(&self.model, embeddings, exclude)?;
        self.top_k_device(embeddings, k, exclude)
    }
}
