//! The launch shapes of every kernel, in one place. The host launches with
//! these values and passes them to every compile of the `.cu` files (NVRTC
//! and the CPU emulator) as `-D` defines; the kernels have no defaults of
//! their own (`#error` without them) and trap when launched with another
//! `blockDim`. `kernels/cuda/ptx-check.sh` reads the `pub(crate) const … : u32`
//! lines of this file, so keep them one per line.

/// Query rows per attention block.
pub(crate) const ATT_QB: u32 = 32;
/// Keys per attention tile (one per lane of a warp: must be 32).
pub(crate) const ATT_KT: u32 = 32;
/// Threads of one attention block (4 warps).
pub(crate) const ATT_THREADS: u32 = 128;
/// Output tile rows and columns of the fused GEMMs.
pub(crate) const GEMM_BM: u32 = 64;
/// Output tile columns of the fused GEMMs.
pub(crate) const GEMM_BN: u32 = 64;
/// Depth of one staged slice of the fused GEMMs.
pub(crate) const GEMM_BK: u32 = 16;
/// Threads of one GEMM block (16 × 16, a 4 × 4 micro-tile each).
pub(crate) const GEMM_THREADS: u32 = 256;
/// Threads of one top-k block: one table row each in the scoring kernels.
pub(crate) const TOPK_THREADS: u32 = 256;
/// Threads of the row-wise kernels' blocks (grid-stride loops; any multiple of 32 works).
pub(crate) const ROWS_THREADS: u32 = 256;
/// Threads of one key/value scatter block (one block per row).
pub(crate) const SCATTER_THREADS: u32 = 128;

/// Every shape above as a `-DNAME=VALUE` compile option.
pub(crate) fn defines() -> Vec<String> {
    [
        ("ATT_QB", ATT_QB),
        ("ATT_KT", ATT_KT),
        ("ATT_THREADS", ATT_THREADS),
        ("GEMM_BM", GEMM_BM),
        ("GEMM_BN", GEMM_BN),
        ("GEMM_BK", GEMM_BK),
        ("GEMM_THREADS", GEMM_THREADS),
        ("TOPK_THREADS", TOPK_THREADS),
        ("ROWS_THREADS", ROWS_THREADS),
        ("SCATTER_THREADS", SCATTER_THREADS),
    ]
    .iter()
    .map(|(name, value)| format!("-D{name}={value}"))
    .collect()
}
