//! The device side of the CUDA backend: loading the driver and NVRTC
//! (dynamically, checked before first use), compiling the kernels for the
//! device found, and the model's weights uploaded once.

use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DriverError, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use crate::error::BackendError;
use crate::model::Model;

use super::launch::{Arg, Launcher, Profiler, RawBuf, Shape, dyn_smem_bytes};
use super::shapes::{self, ROWS_THREADS, SCATTER_THREADS};
use super::signatures::{KERNELS, Kernel, SOURCES, Source};
/// Shared memory every CUDA device since sm_20 gives a block without opt-in.
const DEFAULT_SMEM: usize = 48 * 1024;

/// Maps a driver error to the backend's error: the sticky ones (after which
/// every call on the context fails, per the CUDA driver API's error list)
/// to [`BackendError::ContextLost`].
pub(crate) fn dev_err(context: &str) -> impl Fn(DriverError) -> BackendError + '_ {
    use cudarc::driver::sys::CUresult as R;
    move |e| {
        let message = format!("{context}: {e}");
        let sticky = matches!(
            e.0,
            R::CUDA_ERROR_ILLEGAL_ADDRESS
                | R::CUDA_ERROR_LAUNCH_TIMEOUT
                | R::CUDA_ERROR_ASSERT
                | R::CUDA_ERROR_HARDWARE_STACK_ERROR
                | R::CUDA_ERROR_ILLEGAL_INSTRUCTION
                | R::CUDA_ERROR_MISALIGNED_ADDRESS
                | R::CUDA_ERROR_INVALID_ADDRESS_SPACE
                | R::CUDA_ERROR_INVALID_PC
                | R::CUDA_ERROR_LAUNCH_FAILED
                | R::CUDA_ERROR_ECC_UNCORRECTABLE
                | R::CUDA_ERROR_CONTEXT_IS_DESTROYED
        );
        if sticky {
            BackendError::ContextLost { backend: "cuda", message }
        } else {
            BackendError::Device { backend: "cuda", message }
        }
    }
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

/// The threads per block the host launches `kernel` with.
pub(crate) fn launch_threads(kernel: Kernel) -> u32 {
    match kernel {
        Kernel::ScatterKv | Kernel::GatherRows => SCATTER_THREADS,
        other => other.fixed_block().unwrap_or(ROWS_THREADS),
    }
}

/// A CUDA device with every kernel compiled for it and bound by name.
pub(crate) struct CudaLauncher {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// Indexed by [`Kernel::index`].
    functions: Vec<CudaFunction>,
    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Dynamic shared memory a block may take on this device (opt-in limit).
    max_dyn_smem: usize,
    profiler: Profiler,
}

impl CudaLauncher {
    /// Opens device `ordinal`, compiles the kernels for it and for `model`'s
    /// shapes, and checks every kernel's shared memory and block size fit.
    pub fn open(ordinal: usize, model: &Model) -> Result<Self, BackendError> {
        if let Some(reason) = missing_libraries() {
            return Err(unavailable(reason));
        }
        let count = CudaContext::device_count()
            .map_err(|e| unavailable(format!("the CUDA driver cannot list devices ({e}); use --backend cpu")))?;
        if count as usize <= ordinal {
            return Err(unavailable(format!(
                "no CUDA device {ordinal} (the driver reports {count}); use --backend cpu"
            )));
        }
        let ctx =
            CudaContext::new(ordinal).map_err(|e| unavailable(format!("cannot open CUDA device {ordinal}: {e}")))?;
        let name = ctx.name().map_err(dev_err("device name"))?;
        let (major, minor) = ctx.compute_capability().map_err(dev_err("compute capability"))?;
        let arch = format!("--gpu-architecture=sm_{major}{minor}");
        let c = &model.config;
        let mut by_source = Vec::new();
        for source in SOURCES {
            let mut options = vec![arch.clone(), "--std=c++17".to_string()];
            options.extend(shapes::defines());
            if source == Source::Attention {
                options.push(format!("-DHSTU_DQK={}", c.d_qk));
                options.push(format!("-DHSTU_DV={}", c.d_v));
                options.push(format!("-DHSTU_NB={}", c.num_time_buckets));
            }
            let file = source.file();
            let opts = CompileOptions { options, name: Some(file.to_string()), ..Default::default() };
            let ptx = compile_ptx_with_opts(source.text(), opts).map_err(|e| BackendError::Device {
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
            by_source.push((source, module));
        }
        let functions = KERNELS
            .iter()
            .map(|&kernel| {
                let module = by_source
                    .iter()
                    .find(|(s, _)| *s == kernel.source())
                    .map(|(_, m)| m)
                    .ok_or_else(|| unavailable(format!("{} was not compiled", kernel.source().file())))?;
                module.load_function(kernel.name()).map_err(dev_err(kernel.name()))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let optin = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(dev_err("shared memory limit"))? as usize;
        let max_dyn_smem = optin.max(DEFAULT_SMEM);
        // Every kernel's static + dynamic shared memory and block size, checked
        // now rather than failing the first request that reaches it.
        for (&kernel, func) in KERNELS.iter().zip(&functions) {
            let name = kernel.name();
            let static_smem = func.shared_size_bytes().map_err(dev_err(name))? as usize;
            let dynamic = dyn_smem_bytes(kernel, c);
            if static_smem + dynamic > max_dyn_smem {
                return Err(unavailable(format!(
                    "kernel {name} needs {static_smem} bytes of static and {dynamic} of dynamic shared \
                     memory per block for this model (d_model {}, d_qk {}, d_v {}), more than this \
                     device's {max_dyn_smem}; use --backend cpu",
                    c.d_model, c.d_qk, c.d_v
                )));
            }
            if static_smem + dynamic > DEFAULT_SMEM {
                func.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    (max_dyn_smem - static_smem) as i32,
                )
                .map_err(dev_err("shared memory opt-in"))?;
            }
            let threads = launch_threads(kernel);
            let limit = func.max_threads_per_block().map_err(dev_err(name))?;
            if i64::from(threads) > i64::from(limit) {
                return Err(unavailable(format!(
                    "kernel {name} is launched with {threads} threads per block, this device allows {limit} for it"
                )));
            }
        }
        // A stream of its own rather than the legacy default stream, which
        // every other blocking stream of the process waits on: each tenant
        // opens its own backend, so tenants' calls no longer serialise on
        // the device (each backend's buffers are used on its stream only).
        let stream = ctx.new_stream().map_err(dev_err("stream"))?;
        Ok(CudaLauncher { ctx, stream, functions, name, max_dyn_smem, profiler: Profiler::default() })
    }
}

fn cuda_buf(raw: &RawBuf) -> Result<&CudaSlice<u8>, BackendError> {
    match raw {
        RawBuf::Cuda(slice) => Ok(slice),
        RawBuf::Emu(_) => {
            Err(BackendError::Device { backend: "cuda", message: "an emulator buffer passed to CUDA".into() })
        }
    }
}

impl Launcher for CudaLauncher {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn alloc_raw(&self, bytes: usize, _align: usize) -> Result<RawBuf, BackendError> {
        // cudarc allocations are 256-byte aligned.
        Ok(RawBuf::Cuda(self.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(dev_err("allocation"))?))
    }

    fn upload_raw(&self, dst: &mut RawBuf, offset: usize, src: &[u8]) -> Result<(), BackendError> {
        let RawBuf::Cuda(slice) = dst else {
            return Err(BackendError::Device { backend: "cuda", message: "an emulator buffer passed to CUDA".into() });
        };
        let mut view = slice.slice_mut(offset..offset + src.len());
        self.stream.memcpy_htod(src, &mut view).map_err(dev_err("upload"))
    }

    fn download_raw(&self, src: &RawBuf, offset: usize, dst: &mut [u8]) -> Result<(), BackendError> {
        let slice = cuda_buf(src)?;
        let view = slice.slice(offset..offset + dst.len());
        self.stream.memcpy_dtoh(&view, dst).map_err(dev_err("download"))?;
        self.stream.synchronize().map_err(dev_err("download"))
    }

    fn copy_raw(
        &self,
        src: &RawBuf,
        src_off: usize,
        dst: &mut RawBuf,
        dst_off: usize,
        bytes: usize,
    ) -> Result<(), BackendError> {
        let src = cuda_buf(src)?.slice(src_off..src_off + bytes);
        let RawBuf::Cuda(dst) = dst else {
            return Err(BackendError::Device { backend: "cuda", message: "an emulator buffer passed to CUDA".into() });
        };
        let mut dst = dst.slice_mut(dst_off..dst_off + bytes);
        self.stream.memcpy_dtod(&src, &mut dst).map_err(dev_err("device copy"))
    }

    fn launch_raw(&self, kernel: Kernel, shape: &Shape, args: &[Arg<'_>]) -> Result<(), BackendError> {
        // Values first (pointers resolved, events recorded until the launch is queued).
        let mut values = Vec::with_capacity(args.len());
        let mut syncs = Vec::new();
        enum Value {
            Ptr(u64),
            I32(i32),
            I64(i64),
            U32(u32),
            F32(f32),
        }
        for arg in args {
            values.push(match *arg {
                Arg::Buf { raw, offset, .. } => {
                    let (ptr, sync) = cuda_buf(raw)?.device_ptr(&self.stream);
                    syncs.push(sync);
                    Value::Ptr(ptr + offset as u64)
                }
                Arg::I32(v) => Value::I32(v),
                Arg::I64(v) => Value::I64(v),
                Arg::U32(v) => Value::U32(v),
                Arg::F32(v) => Value::F32(v),
            });
        }
        let mut builder = self.stream.launch_builder(&self.functions[kernel.index()]);
        for value in &values {
            match value {
                Value::Ptr(p) => builder.arg(p),
                Value::I32(v) => builder.arg(v),
                Value::I64(v) => builder.arg(v),
                Value::U32(v) => builder.arg(v),
                Value::F32(v) => builder.arg(v),
            };
        }
        let cfg =
            LaunchConfig { grid_dim: shape.grid, block_dim: (shape.block, 1, 1), shared_mem_bytes: shape.dyn_smem };
        // SAFETY: `launch` checked every argument against the kernel's
        // signature table (pointers are 8-byte device addresses into live
        // buffers borrowed by `args`), and the shape against its block size
        // and the device's shared memory.
        unsafe { builder.launch(cfg) }.map_err(dev_err(kernel.name()))?;
        drop(syncs);
        Ok(())
    }

    fn exact_buffers(&self) -> bool {
        false
    }

    fn max_dyn_smem(&self) -> usize {
        self.max_dyn_smem
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.stream.synchronize().map_err(dev_err("synchronize"))
    }

    fn profiler(&self) -> &Profiler {
        &self.profiler
    }
}
