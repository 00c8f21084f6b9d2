//! The device side of the CUDA backend: loading the driver and NVRTC
//! (dynamically, checked before first use), compiling the kernels for the
//! device found, and the model's weights uploaded once.

use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DriverError};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use crate::backend::BackendError;
use crate::model::Model;

use super::buckets::bucket_thresholds;

/// The kernel sources, embedded so the binary needs no files at run time.
const SRC_ROWS: &str = include_str!("hstu_rows.cu");
const SRC_GEMM: &str = include_str!("hstu_gemm.cu");
const SRC_ATTENTION: &str = include_str!("hstu_attention.cu");
const SRC_TOPK: &str = include_str!("score_topk.cu");
const SRC_ROOFLINE: &str = include_str!("roofline.cu");

/// Query rows per attention block and keys per tile (ATT_QB, ATT_KT in hstu_attention.cu).
pub(crate) const ATT_QB: usize = 32;
const ATT_KT: usize = 32;
/// Threads of one attention block (4 warps).
pub(crate) const ATT_THREADS: u32 = 128;
/// Items per scoring block and threads per block (TOPK_CHUNK, TOPK_THREADS in score_topk.cu).
pub(crate) const TOPK_CHUNK: usize = 2048;
pub(crate) const TOPK_THREADS: u32 = 256;
/// Output tile and threads of the fused GEMMs (GEMM_BM/BN, GEMM_THREADS in hstu_gemm.cu).
pub(crate) const GEMM_TILE: usize = 64;
pub(crate) const GEMM_THREADS: u32 = 256;
/// Shared memory every CUDA device since sm_20 gives a block without opt-in.
const DEFAULT_SMEM: usize = 48 * 1024;

/// Maps a driver error to the backend's error.
pub(crate) fn dev_err(context: &str) -> impl Fn(DriverError) -> BackendError + '_ {
    move |e| BackendError::Device { backend: "cuda", message: format!("{context}: {e}") }
}

fn unavailable(reason: impl Into<String>) -> BackendError {
    BackendError::Unavailable { backend: "cuda", reason: reason.into() }
}

/// Why CUDA cannot run here, or `None` when both the driver library and
/// NVRTC can be loaded. cudarc panics when a library it needs is missing, so
/// this must pass before any other cudarc call.
pub(crate) fn missing_libraries() -> Option<String> {
    // SAFETY: these only try to dlopen the library names cudarc would use.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some(
            "the NVIDIA driver library (libcuda.so) is not installed on this machine; \
             use --backend cpu, or run on a machine with an NVIDIA GPU and driver"
                .into(),
        );
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Some(
            "NVRTC (libnvrtc.so.13) was not found: install the CUDA 13 runtime compiler \
             (e.g. `pip install nvidia-cuda-nvrtc==13.0.88`) and put its lib folder \
             (site-packages/nvidia/cu13/lib) or /usr/local/cuda/lib64 on LD_LIBRARY_PATH"
                .into(),
        );
    }
    None
}

/// Every kernel of the backend, compiled for one device and one model's head dims.
pub(crate) struct Kernels {
    pub embed_rows: CudaFunction,
    pub scatter_kv: CudaFunction,
    pub l2norm_rows: CudaFunction,
    pub fill_u32: CudaFunction,
    pub ln_gemm_silu: CudaFunction,
    pub gated_ln_gemm_resid: CudaFunction,
    pub hstu_attention: CudaFunction,
    pub score_chunk_topk: CudaFunction,
    pub topk_merge: CudaFunction,
    pub fma_peak: CudaFunction,
}

/// A CUDA device with the kernels loaded.
pub(crate) struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub kernels: Kernels,
    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Dynamic shared memory one attention block needs.
    pub attention_smem: u32,
}

/// Bytes of dynamic shared memory of one attention block (see hstu_attention.cu).
pub(crate) fn attention_smem_bytes(d_qk: usize, d_v: usize, num_buckets: usize) -> usize {
    let sqk = d_qk | 1;
    8 * (num_buckets + ATT_KT + ATT_QB) + 4 * (ATT_QB * sqk + ATT_KT * sqk + ATT_KT * d_v)
}

impl Device {
    /// Opens device `ordinal` and compiles the kernels for it and for `model`'s shapes.
    pub fn open(ordinal: usize, model: &Model) -> Result<Self, BackendError> {
        if let Some(reason) = missing_libraries() {
            return Err(unavailable(reason));
        }
        let count = CudaContext::device_count().map_err(|e| {
            unavailable(format!("the CUDA driver cannot list devices ({e}); use --backend cpu"))
        })?;
        if count as usize <= ordinal {
            return Err(unavailable(format!(
                "no CUDA device {ordinal} (the driver reports {count}); use --backend cpu"
            )));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| unavailable(format!("cannot open CUDA device {ordinal}: {e}")))?;
        let name = ctx.name().map_err(dev_err("device name"))?;
        let (major, minor) = ctx.compute_capability().map_err(dev_err("compute capability"))?;
        let arch = format!("--gpu-architecture=sm_{major}{minor}");
        let c = &model.config;
        let defines = vec![
            format!("-DHSTU_DQK={}", c.d_qk),
            format!("-DHSTU_DV={}", c.d_v),
            format!("-DHSTU_NB={}", c.num_time_buckets),
        ];
        let load = |src: &str, file: &str, names: &[&str]| -> Result<Vec<CudaFunction>, BackendError> {
            let mut options = vec![arch.clone(), "--std=c++17".to_string()];
            options.extend(defines.iter().cloned());
            let opts = CompileOptions { options, name: Some(file.to_string()), ..Default::default() };
            let ptx = compile_ptx_with_opts(src, opts).map_err(|e| BackendError::Device {
                backend: "cuda",
                message: format!("NVRTC could not compile {file} for sm_{major}{minor}: {e}"),
            })?;
            let module = ctx.load_module(ptx).map_err(|e| BackendError::Device {
                backend: "cuda",
                message: format!(
                    "the driver rejected the PTX of {file} ({e}); NVRTC is probably newer than the \
                     driver: use the NVRTC of the driver's CUDA version"
                ),
            })?;
            names.iter().map(|n| module.load_function(n).map_err(dev_err(n))).collect()
        };
        let mut rows = load(SRC_ROWS, "hstu_rows.cu", &["embed_rows", "scatter_kv", "l2norm_rows", "fill_u32"])?;
        let mut gemm = load(SRC_GEMM, "hstu_gemm.cu", &["ln_gemm_silu", "gated_ln_gemm_resid"])?;
        let mut att = load(SRC_ATTENTION, "hstu_attention.cu", &["hstu_attention"])?;
        let mut topk = load(SRC_TOPK, "score_topk.cu", &["score_chunk_topk", "topk_merge"])?;
        let mut roof = load(SRC_ROOFLINE, "roofline.cu", &["fma_peak"])?;
        let kernels = Kernels {
            fill_u32: rows.pop().unwrap(),
            l2norm_rows: rows.pop().unwrap(),
            scatter_kv: rows.pop().unwrap(),
            embed_rows: rows.pop().unwrap(),
            gated_ln_gemm_resid: gemm.pop().unwrap(),
            ln_gemm_silu: gemm.pop().unwrap(),
            hstu_attention: att.pop().unwrap(),
            topk_merge: topk.pop().unwrap(),
            score_chunk_topk: topk.pop().unwrap(),
            fma_peak: roof.pop().unwrap(),
        };

        let smem = attention_smem_bytes(c.d_qk, c.d_v, c.num_time_buckets);
        let optin = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(dev_err("shared memory limit"))? as usize;
        if smem > optin.max(DEFAULT_SMEM) {
            return Err(unavailable(format!(
                "head dims d_qk = {}, d_v = {} need {smem} bytes of shared memory per attention \
                 block, more than this device's {optin}; use --backend cpu",
                c.d_qk, c.d_v
            )));
        }
        if smem > DEFAULT_SMEM {
            kernels
                .hstu_attention
                .set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem as i32,
                )
                .map_err(dev_err("attention shared memory opt-in"))?;
        }
        let stream = ctx.default_stream();
        Ok(Device { ctx, stream, kernels, name, attention_smem: smem as u32 })
    }
}

/// A layer's weights on the device.
pub(crate) struct DeviceLayer {
    pub uvqk: CudaSlice<f32>,
    pub o_w: CudaSlice<f32>,
    pub o_b: CudaSlice<f32>,
    pub pos_w: CudaSlice<f32>,
    pub ts_w: CudaSlice<f32>,
}

/// A model's weights on the device, uploaded once when the backend is created.
pub(crate) struct DeviceWeights {
    pub item_emb: CudaSlice<f32>,
    pub item_norms: CudaSlice<f32>,
    pub pos_emb: CudaSlice<f32>,
    pub layers: Vec<DeviceLayer>,
    /// Smallest gap of every time bucket (see [`super::buckets`]).
    pub thresholds: CudaSlice<u64>,
}

impl DeviceWeights {
    /// Uploads `model`'s weights.
    pub fn upload(stream: &Arc<CudaStream>, model: &Model) -> Result<Self, BackendError> {
        let up = |v: &[f32]| stream.clone_htod(v).map_err(dev_err("weight upload"));
        let w = &model.weights;
        let layers = w
            .layers
            .iter()
            .map(|l| {
                Ok(DeviceLayer {
                    uvqk: up(&l.uvqk)?,
                    o_w: up(&l.o_w)?,
                    o_b: up(&l.o_b)?,
                    pos_w: up(&l.pos_w)?,
                    ts_w: up(&l.ts_w)?,
                })
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(DeviceWeights {
            item_emb: up(&w.item_emb)?,
            item_norms: up(&model.item_norms)?,
            pos_emb: up(&w.pos_emb)?,
            layers,
            thresholds: stream
                .clone_htod(&bucket_thresholds(&model.config))
                .map_err(dev_err("weight upload"))?,
        })
    }
}
