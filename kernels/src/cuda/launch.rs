//! The one launcher interface the CUDA orchestration (encode.rs, state.rs,
//! topk.rs) drives: device buffers, copies and kernel launches, served by
//! cudarc on a GPU ([`super::device::CudaLauncher`]) or by the CPU emulator
//! ([`super::emu::EmuLauncher`]). Every launch is checked against the
//! kernel's signature table and launch shape before either runs it.

use std::marker::PhantomData;

use bytemuck::Pod;

use crate::config::ModelConfig;
use crate::error::BackendError;

use super::shapes::{ATT_KT, ATT_QB, TOPK_THREADS};
use super::signatures::{Elem, Kernel, Ty};

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block (1-D blocks only).
    pub block: u32,
    /// Bytes of dynamic shared memory per block.
    pub dyn_smem: u32,
}

impl Shape {
    /// A grid of `grid` blocks of `block` threads, no dynamic shared memory.
    pub(crate) fn new(grid: (u32, u32, u32), block: u32) -> Self {
        Shape { grid, block, dyn_smem: 0 }
    }

    /// A 1-D grid that covers `n` elements with `block`-thread blocks (grid-stride kernels).
    pub(crate) fn cover(n: usize, block: u32) -> Self {
        let blocks = n.div_ceil(block as usize).clamp(1, 65535 * 8) as u32;
        Shape::new((blocks, 1, 1), block)
    }
}

/// Memory of one device buffer, on a GPU or in the emulator's host memory.
pub(crate) enum RawBuf {
    /// A cudarc allocation.
    Cuda(cudarc::driver::CudaSlice<u8>),
    /// An emulator buffer (host memory ending on a guard page).
    Emu(super::host_buf::HostBuf),
}

/// Element types a device buffer can hold.
pub(crate) trait DeviceType: Pod + Default {
    /// The element type of the signature table.
    const ELEM: Elem;
}

impl DeviceType for f32 {
    const ELEM: Elem = Elem::F32;
}
impl DeviceType for u32 {
    const ELEM: Elem = Elem::U32;
}
impl DeviceType for i32 {
    const ELEM: Elem = Elem::I32;
}
impl DeviceType for i64 {
    const ELEM: Elem = Elem::I64;
}
impl DeviceType for u64 {
    const ELEM: Elem = Elem::U64;
}

/// A typed device buffer of `len` elements.
pub(crate) struct DevBuf<T> {
    raw: RawBuf,
    len: usize,
    _elem: PhantomData<T>,
}

impl<T: DeviceType> DevBuf<T> {
    /// Elements in the buffer.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of device memory the buffer holds.
    pub(crate) fn bytes(&self) -> usize {
        self.len * size_of::<T>()
    }

    /// The buffer as a kernel argument.
    pub(crate) fn arg(&self) -> Arg<'_> {
        Arg::Buf { raw: &self.raw, offset: 0, elem: T::ELEM }
    }

    /// The buffer from element `offset` on as a kernel argument.
    pub(crate) fn arg_at(&self, offset: usize) -> Result<Arg<'_>, BackendError> {
        if offset > self.len {
            return Err(internal(format!("offset {offset} past the end of a {}-element buffer", self.len)));
        }
        Ok(Arg::Buf { raw: &self.raw, offset: offset * size_of::<T>(), elem: T::ELEM })
    }
}

/// One kernel argument.
#[derive(Clone, Copy)]
pub(crate) enum Arg<'a> {
    /// A buffer, `offset` bytes in.
    Buf {
        /// The memory.
        raw: &'a RawBuf,
        /// Byte offset of the pointer passed.
        offset: usize,
        /// Element type of the buffer.
        elem: Elem,
    },
    /// `int`.
    I32(i32),
    /// `long long`.
    I64(i64),
    /// `unsigned int`.
    U32(u32),
    /// `float`.
    F32(f32),
}

fn internal(message: String) -> BackendError {
    BackendError::Device { backend: "cuda", message: format!("internal launch error: {message}") }
}

/// A device (or its emulation): memory, copies and launches.
pub(crate) trait Launcher: Send + Sync {
    /// `"cuda"` or `"cuda-emu"`.
    fn name(&self) -> &'static str;
    /// A zero-filled buffer of `bytes` bytes for elements of `align` bytes.
    fn alloc_raw(&self, bytes: usize, align: usize) -> Result<RawBuf, BackendError>;
    /// Copies `src` to `dst` at byte `offset`.
    fn upload_raw(&self, dst: &mut RawBuf, offset: usize, src: &[u8]) -> Result<(), BackendError>;
    /// Copies `dst.len()` bytes from `src` at byte `offset`.
    fn download_raw(&self, src: &RawBuf, offset: usize, dst: &mut [u8]) -> Result<(), BackendError>;
    /// Copies `bytes` bytes from `src` at `src_off` to `dst` at `dst_off`
    /// (device to device; two distinct buffers).
    fn copy_raw(
        &self,
        src: &RawBuf,
        src_off: usize,
        dst: &mut RawBuf,
        dst_off: usize,
        bytes: usize,
    ) -> Result<(), BackendError>;
    /// Runs `kernel` (arguments already checked by [`launch`]).
    fn launch_raw(&self, kernel: Kernel, shape: &Shape, args: &[Arg<'_>]) -> Result<(), BackendError>;
    /// Whether work buffers must be allocated at their exact size (the
    /// emulator: so that the guard page after each buffer catches overruns).
    fn exact_buffers(&self) -> bool;
    /// The most dynamic shared memory one block may take.
    fn max_dyn_smem(&self) -> usize;
    /// Waits until every queued launch and copy has finished.
    fn synchronize(&self) -> Result<(), BackendError>;
    /// The per-kernel time accounting of this launcher.
    fn profiler(&self) -> &Profiler;
}

/// Time spent in one kernel while profiling was on.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel's name in its `.cu` file.
    pub kernel: &'static str,
    /// Launches timed.
    pub launches: u64,
    /// Seconds from launch to completion, summed (each launch synchronised).
    pub seconds: f64,
}

/// Per-kernel wall time: when on, every launch is followed by a
/// synchronisation and its time is added to its kernel's total (slower than
/// queued launches: for the check script's per-kernel table, never serving).
#[derive(Default)]
pub struct Profiler {
    on: std::sync::atomic::AtomicBool,
    times: std::sync::Mutex<Vec<KernelTime>>,
}

impl Profiler {
    /// Starts or stops the accounting.
    pub(crate) fn set(&self, on: bool) {
        self.on.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The totals so far, cleared.
    pub(crate) fn take(&self) -> Vec<KernelTime> {
        std::mem::take(&mut *self.times.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn add(&self, kernel: Kernel, seconds: f64) {
        let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
        match times.iter_mut().find(|t| t.kernel == kernel.name()) {
            Some(t) => {
                t.launches += 1;
                t.seconds += seconds;
            }
            None => times.push(KernelTime { kernel: kernel.name(), launches: 1, seconds }),
        }
    }
}

/// A zero-filled buffer of `len` elements.
pub(crate) fn alloc<T: DeviceType>(l: &dyn Launcher, len: usize) -> Result<DevBuf<T>, BackendError> {
    let raw = l.alloc_raw(len * size_of::<T>(), align_of::<T>())?;
    Ok(DevBuf { raw, len, _elem: PhantomData })
}

/// A buffer holding `host`.
pub(crate) fn upload_new<T: DeviceType>(l: &dyn Launcher, host: &[T]) -> Result<DevBuf<T>, BackendError> {
    let mut buf = alloc::<T>(l, host.len())?;
    upload(l, &mut buf, 0, host)?;
    Ok(buf)
}

/// Copies `host` into `buf` from element `at` on.
pub(crate) fn upload<T: DeviceType>(
    l: &dyn Launcher,
    buf: &mut DevBuf<T>,
    at: usize,
    host: &[T],
) -> Result<(), BackendError> {
    if at + host.len() > buf.len {
        return Err(internal(format!("upload of {} elements at {at} into a buffer of {}", host.len(), buf.len)));
    }
    if host.is_empty() {
        return Ok(());
    }
    l.upload_raw(&mut buf.raw, at * size_of::<T>(), bytemuck::cast_slice(host))
}

/// Copies elements `range` of `buf` to the host.
pub(crate) fn download<T: DeviceType>(
    l: &dyn Launcher,
    buf: &DevBuf<T>,
    start: usize,
    len: usize,
) -> Result<Vec<T>, BackendError> {
    if start + len > buf.len {
        return Err(internal(format!("download of {len} elements at {start} from a buffer of {}", buf.len)));
    }
    let mut host = vec![T::default(); len];
    if len > 0 {
        l.download_raw(&buf.raw, start * size_of::<T>(), bytemuck::cast_slice_mut(&mut host))?;
    }
    Ok(host)
}

/// Copies `len` elements of `src` from `src_at` to `dst` at `dst_at`.
pub(crate) fn copy<T: DeviceType>(
    l: &dyn Launcher,
    src: &DevBuf<T>,
    src_at: usize,
    dst: &mut DevBuf<T>,
    dst_at: usize,
    len: usize,
) -> Result<(), BackendError> {
    if src_at + len > src.len || dst_at + len > dst.len {
        return Err(internal(format!(
            "copy of {len} elements from {src_at} of {} to {dst_at} of {}",
            src.len, dst.len
        )));
    }
    if len == 0 {
        return Ok(());
    }
    let size = size_of::<T>();
    l.copy_raw(&src.raw, src_at * size, &mut dst.raw, dst_at * size, len * size)
}

/// Checks `args` and `shape` against `kernel`'s signature table, then launches.
pub(crate) fn launch(l: &dyn Launcher, kernel: Kernel, shape: &Shape, args: &[Arg<'_>]) -> Result<(), BackendError> {
    check_launch(kernel, shape, args, l.max_dyn_smem())?;
    let profiler = l.profiler();
    if !profiler.on.load(std::sync::atomic::Ordering::Relaxed) {
        return l.launch_raw(kernel, shape, args);
    }
    l.synchronize()?;
    let start = std::time::Instant::now();
    l.launch_raw(kernel, shape, args)?;
    l.synchronize()?;
    profiler.add(kernel, start.elapsed().as_secs_f64());
    Ok(())
}

/// Why `args`/`shape` do not fit `kernel`, if they do not.
pub(crate) fn check_launch(
    kernel: Kernel,
    shape: &Shape,
    args: &[Arg<'_>],
    max_dyn_smem: usize,
) -> Result<(), BackendError> {
    let name = kernel.name();
    let params = kernel.params();
    if args.len() != params.len() {
        return Err(internal(format!("{name} takes {} arguments, got {}", params.len(), args.len())));
    }
    for (i, ((pname, ty), arg)) in params.iter().zip(args).enumerate() {
        let ok = match (ty, arg) {
            (Ty::In(e) | Ty::Out(e), Arg::Buf { elem, .. }) => e == elem,
            (Ty::OutBits32, Arg::Buf { elem, .. }) => elem.size() == 4,
            (Ty::I32, Arg::I32(_)) | (Ty::I64, Arg::I64(_)) | (Ty::U32, Arg::U32(_)) | (Ty::F32, Arg::F32(_)) => true,
            _ => false,
        };
        if !ok {
            let got = match arg {
                Arg::Buf { elem, .. } => format!("a buffer of {}", elem.c_type()),
                Arg::I32(_) => "int".into(),
                Arg::I64(_) => "long long".into(),
                Arg::U32(_) => "unsigned int".into(),
                Arg::F32(_) => "float".into(),
            };
            return Err(internal(format!("{name} argument {i} ({pname}) is {}, got {got}", ty.c_type())));
        }
    }
    if let Some(block) = kernel.fixed_block()
        && shape.block != block
    {
        return Err(internal(format!(
            "{name} is written for {block} threads per block, launched with {}",
            shape.block
        )));
    }
    let (gx, gy, gz) = shape.grid;
    if shape.block == 0 || shape.block > 1024 || !shape.block.is_multiple_of(32) {
        return Err(internal(format!("{name}: {} threads per block (1..=1024, a multiple of 32)", shape.block)));
    }
    if gx == 0 || gy == 0 || gz == 0 || gx > i32::MAX as u32 || gy > 65535 || gz > 65535 {
        return Err(internal(format!("{name}: grid {gx}×{gy}×{gz} outside the device limits")));
    }
    if shape.dyn_smem as usize > max_dyn_smem {
        return Err(internal(format!(
            "{name}: {} bytes of dynamic shared memory, the limit is {max_dyn_smem}",
            shape.dyn_smem
        )));
    }
    Ok(())
}

/// Bytes of dynamic shared memory one block of `kernel` needs for `config`.
pub(crate) fn dyn_smem_bytes(kernel: Kernel, config: &ModelConfig) -> usize {
    match kernel {
        Kernel::HstuAttention => attention_smem_bytes(config.d_qk, config.d_v, config.num_time_buckets),
        Kernel::QuantChunkKth | Kernel::QuantSelect => 4 * config.d_model.div_ceil(4) * TOPK_THREADS as usize,
        _ => 0,
    }
}

/// Bytes of dynamic shared memory of one attention block (see hstu_attention.cu).
pub(crate) fn attention_smem_bytes(d_qk: usize, d_v: usize, num_buckets: usize) -> usize {
    let (qb, kt) = (ATT_QB as usize, ATT_KT as usize);
    let sqk = d_qk | 1;
    8 * (num_buckets + kt + qb) + 4 * (qb * sqk + kt * sqk + kt * d_v)
}
