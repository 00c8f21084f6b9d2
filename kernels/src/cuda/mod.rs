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
//! head dims), `score_topk.cu` (batched exact top-k over the quantised table: int8
//! approximations, per-chunk k-th, threshold, candidates; re-ranked on the host),
//! `roofline.cu` (the FMA peak the timings are compared with).
//!
//! The orchestration here drives a `Launcher` (launch.rs): cudarc on a GPU, or
//! the CPU emulator (`emu.rs`, backend name `cuda-emu`) that runs the same
//! `.cu` files compiled as C++ — so every test run executes the kernels.

mod buckets;
pub mod cost;
mod device;
mod emu;
mod encode;
mod host_buf;
mod kv_pool;
mod launch;
mod resident;
mod roofline;
mod shapes;
mod signatures;
mod state;
mod topk;
mod workspace;

// The launch-layer tests drive this module's private items (signature
// table, raw launches, buffers), so they compile into the library's unit
// tests; the file lives with the crate's other tests.
#[cfg(test)]
#[path = "../../tests/unit/cuda_launch.rs"]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::BackendError;
use crate::error::BatchError;
use crate::history::{UserHistory, kept_window};
use crate::model::Model;
use crate::retrieval::QuantizedTable;

use device::CudaLauncher;
use emu::EmuLauncher;
use encode::{Job, KvStore, MAX_ROWS_PER_LAUNCH};
use kv_pool::KvPool;
use launch::Launcher;
use workspace::{DeviceWeights, Workspace};

pub use emu::{EmuOptions, LOSE_CONTEXT_ENV, fp_contract_note};
pub use launch::KernelTime;
pub use roofline::Roofs;
pub use state::{CudaEncoderState, NewState};

/// What runs the kernels.
enum Engine {
    /// A GPU through cudarc.
    Cuda(CudaLauncher),
    /// The CPU emulator.
    Emu(EmuLauncher),
}

/// The CUDA backend for one model on one device (or on the CPU emulator).
/// Weights are uploaded once at creation; the work buffers grow to the
/// largest call and are reused. Calls to one backend are serialised (its own
/// stream, one workspace); backends (one per tenant) run on separate streams.
pub struct CudaBackend {
    model: Arc<Model>,
    engine: Engine,
    weights: DeviceWeights,
    /// The quantised item table the batched top-k scans (its device copy is
    /// in `weights`); the host side quantises queries and re-ranks.
    table: QuantizedTable,
    work: Mutex<Workspace>,
    /// The incremental states' keys and values (locked after `work`).
    kv_pool: Mutex<KvPool>,
    poison: AtomicBool,
    /// Top-k queries sent from the host (not left on the device by an encode).
    staged_queries: AtomicU64,
    /// Unique per backend instance: a state's device cache belongs to one.
    id: u64,
}

/// f32 elements of one state's slot in one layer: L rows of H·(dqk + dv).
fn kv_slot_len(c: &crate::config::ModelConfig) -> usize {
    c.max_seq_len * c.num_heads * (c.d_qk + c.d_v)
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
        let engine = Engine::Cuda(CudaLauncher::open(ordinal, &model)?);
        Self::with_engine(model, engine)
    }

    /// The `cuda-emu` backend: the same kernels and orchestration, run on the
    /// CPU by the emulator (slow; for tests and checks). Needs a C++ compiler
    /// (see `kernels/cuda/README.md`).
    pub fn emulated(model: Arc<Model>) -> Result<Self, BackendError> {
        Self::emulated_with(model, &EmuOptions::default())
    }

    /// [`CudaBackend::emulated`] with replaced kernel sources (test aid).
    pub fn emulated_with(model: Arc<Model>, options: &EmuOptions) -> Result<Self, BackendError> {
        let engine = Engine::Emu(EmuLauncher::new(&model.config, options)?);
        let backend = Self::with_engine(model, engine)?;
        // The emulator checks every kernel's shared memory per launch; check
        // up front too, as the GPU path does at start.
        for kernel in signatures::KERNELS {
            let need = launch::dyn_smem_bytes(kernel, &backend.model.config);
            if need > emu::EMU_DYN_SMEM_MAX {
                return Err(BackendError::Unavailable {
                    backend: "cuda-emu",
                    reason: format!(
                        "kernel {} needs {need} bytes of dynamic shared memory, more than a device has",
                        kernel.name()
                    ),
                });
            }
        }
        Ok(backend)
    }

    fn with_engine(model: Arc<Model>, engine: Engine) -> Result<Self, BackendError> {
        let launcher: &dyn Launcher = match &engine {
            Engine::Cuda(c) => c,
            Engine::Emu(e) => e,
        };
        let table = QuantizedTable::from_model(&model);
        let dim = model.config.d_model;
        let kv_pool = KvPool::new(model.config.num_layers, kv_slot_len(&model.config));
        let weights = DeviceWeights::upload(launcher, &model, &table)?;
        Ok(CudaBackend {
            model,
            engine,
            weights,
            table,
            work: Mutex::new(Workspace::new(dim)),
            kv_pool: Mutex::new(kv_pool),
            poison: AtomicBool::new(false),
            staged_queries: AtomicU64::new(0),
            id: next_id(),
        })
    }

    fn launcher(&self) -> &dyn Launcher {
        match &self.engine {
            Engine::Cuda(c) => c,
            Engine::Emu(e) => e,
        }
    }

    fn name_static(&self) -> &'static str {
        self.launcher().name()
    }

    /// Device bytes held by the model's weights.
    pub fn weight_bytes(&self) -> usize {
        self.weights.bytes()
    }

    /// Why the CUDA backend cannot run on this machine, or `None` when the
    /// driver and NVRTC libraries load (a device may still be missing).
    pub fn missing_libraries() -> Option<String> {
        device::missing_libraries()
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3", or "cuda-emu (CPU)".
    pub fn device_name(&self) -> &str {
        match &self.engine {
            Engine::Cuda(c) => &c.name,
            Engine::Emu(_) => "cuda-emu (CPU)",
        }
    }

    /// When on, every work buffer is filled with NaN before each call, so an
    /// element that no kernel writes shows up in the results (a test aid).
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    /// When on, every kernel launch is synchronised and timed, per kernel
    /// (see [`CudaBackend::take_kernel_times`]); slower, for the check script.
    pub fn set_profiling(&self, on: bool) {
        self.launcher().profiler().set(on);
    }

    /// Per-kernel launch counts and seconds since profiling was turned on
    /// (or since the last call), then cleared.
    pub fn take_kernel_times(&self) -> Vec<KernelTime> {
        self.launcher().profiler().take()
    }

    /// Launch shape constants the cost model needs: table rows per scoring block.
    pub fn top_k_chunk() -> usize {
        shapes::TOPK_THREADS as usize
    }

    fn poison_outputs(&self) -> bool {
        self.poison.load(Ordering::Relaxed)
    }

    fn workspace(&self) -> std::sync::MutexGuard<'_, Workspace> {
        // A panic mid-call leaves only scratch contents behind: safe to reuse.
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key/value pool; lock the workspace first.
    fn pool(&self) -> std::sync::MutexGuard<'_, KvPool> {
        // A panic mid-call leaves at worst a stale state behind, which the
        // next append rebuilds (states are marked stale on device errors).
        self.kv_pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Top-k queries the host had to send to the device since the backend
    /// was built: those no encode of this backend left there (a server's
    /// cache hits, embeddings from elsewhere). An embedding this backend
    /// encoded is scored where the encode left it.
    pub fn staged_top_k_queries(&self) -> u64 {
        self.staged_queries.load(Ordering::Relaxed)
    }

    /// Slots of the key/value pool of incremental states (grown by doubling,
    /// never shrunk; freed slots are reused): its device memory is this many
    /// times a state's `device_bytes`.
    pub fn kv_pool_capacity(&self) -> usize {
        self.pool().capacity()
    }
}

impl CudaBackend {
    /// `"cuda"` or `"cuda-emu"`.
    pub(crate) fn backend_name(&self) -> &'static str {
        self.name_static()
    }

    /// The model served.
    pub(crate) fn served_model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Encodes a jagged batch, in groups of at most MAX_ROWS_PER_LAUNCH rows.
    pub(crate) fn encode_users(&self, users: &[UserHistory<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
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
            let jobs: Vec<Job<'_>> =
                (start..end).map(|i| Job { events: &windows[i], query_time: users[i].query_time, first: 0 }).collect();
            out.extend(self.forward_jobs(&mut ws, &jobs, KvStore::Transient)?);
            start = end;
        }
        Ok(out)
    }
}
