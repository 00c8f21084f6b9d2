//! Hand-written kernels for the encoder's small shapes (n ≤ a few hundred
//! rows, D and head dims of tens), with an AVX2/FMA path picked at run time
//! and a portable path everywhere else.
//!
//! Why not a general sgemm: for an ML-1M user (200 × 50 · 50 × 200) a
//! library's packing of the operands costs as much as the product, and the
//! attention's elementwise work (relative bias, SiLU on every score) was
//! half the encode through scalar `expf`/`logf` calls. Here:
//!
//! - [`gemm`] is a 6 × 16 register tile (12 FMA accumulators) that reads
//!   both operands in place, with the epilogue (store, SiLU, accumulate +
//!   bias) applied to the tile before it leaves the registers. Every output
//!   element is accumulated over `k` in ascending order whatever its place
//!   in the tile, so a row's result does not depend on which rows it is
//!   computed with: stacking users into one product is bit-identical to
//!   computing them one by one.
//! - [`attention_head`] walks the query rows six at a time and computes only
//!   the causal part of `Q·Kᵀ` (column strips up to the block's last row),
//!   applies the relative bias (a `pos_w` load and a `ts_w` gather), a
//!   vectorised SiLU and the causal mask in one pass over a block of scores
//!   that stays in L1, then multiplies that block by V with the same tile.
//! - [`bucket_row`] evaluates the time buckets with a vectorised logarithm
//!   and falls back to the exact float32 formula of the reference for every
//!   gap whose bucket the approximation cannot decide.
//!
//! The portable path computes the same functions with plain loops and the
//! platform's `expf`/`logf`; both paths are tested against the f64 reference.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::config::ModelConfig;
use crate::history::time_bucket_of_gap;

const UNKNOWN: u8 = 0;
const SIMD: u8 = 1;
const PORTABLE: u8 = 2;
static PATH: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Environment variable that forces the portable kernels when set to `1`
/// (for comparing the two paths on one machine).
pub const PORTABLE_ENV: &str = "EDGEREC_PORTABLE_KERNELS";

/// Forces the portable kernels (`true`) or returns to run-time detection
/// (`false`: AVX2 + FMA when the CPU has both, unless [`PORTABLE_ENV`] is `1`).
/// Affects every thread; meant for tests and side-by-side measurements.
pub fn set_portable(portable: bool) {
    PATH.store(if portable { PORTABLE } else { detect() }, Ordering::Relaxed);
}

/// Whether the AVX2/FMA kernels are in use (false: the portable ones).
pub fn simd_in_use() -> bool {
    simd()
}

fn detect() -> u8 {
    if std::env::var_os(PORTABLE_ENV).is_some_and(|v| v == "1") {
        return PORTABLE;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        return SIMD;
    }
    PORTABLE
}

/// True only when run-time detection found AVX2 and FMA: the `unsafe`
/// calls into `#[target_feature]` functions below rely on it.
#[inline]
fn simd() -> bool {
    match PATH.load(Ordering::Relaxed) {
        SIMD => true,
        PORTABLE => false,
        _ => {
            let path = detect();
            PATH.store(path, Ordering::Relaxed);
            path == SIMD
        }
    }
}

/// Rows of the register tile.
pub(crate) const MR: usize = 6;
/// Columns of the score strips (two AVX2 vectors); also the padding of the
/// key count in the transposed-key and bucket buffers.
pub(crate) const NR: usize = 16;
/// Up to this many query rows, attention scores are dot products against the
/// keys in place; above, the keys are transposed once per head and go through
/// the tile (the transpose costs as much as a few rows of dots).
const DOT_ROWS: usize = 8;

/// `n` rounded up to a multiple of [`NR`].
pub(crate) fn padded(n: usize) -> usize {
    n.div_ceil(NR) * NR
}

/// What happens to a product tile before it is written.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// `dst = a·b`.
    Store,
    /// `dst = SiLU(a·b)`.
    Silu,
    /// `dst = (dst + a·b) + bias[col]`.
    AddBias(&'a [f32]),
}

/// A row-major operand: element (r, c) at `data[r * ld + c]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub ld: usize,
}

/// `dst[m×n] (epilogue)= a[m×k] · b[k×n]`, row strides `ldd`, `a.ld`, `b.ld`.
///
/// # Panics
/// If an operand is too short for its shape and stride.
pub(crate) fn gemm(
    dst: &mut [f32],
    ldd: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    (m, k, n): (usize, usize, usize),
    epi: Epilogue<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldd >= n && a.ld >= k && b.ld >= n, "strides shorter than rows");
    assert!(dst.len() >= (m - 1) * ldd + n, "gemm: dst too short");
    assert!(a.data.len() >= (m - 1) * a.ld + k, "gemm: lhs too short");
    assert!(k == 0 || b.data.len() >= (k - 1) * b.ld + n, "gemm: rhs too short");
    if let Epilogue::AddBias(bias) = epi {
        assert!(bias.len() >= n, "gemm: bias too short");
    }
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 and FMA are present (simd()); the asserts above bound
        // every element the tiles read or write.
        unsafe { avx::gemm(dst.as_mut_ptr(), ldd, a.data.as_ptr(), a.ld, b.data.as_ptr(), b.ld, m, k, n, epi) };
        return;
    }
    portable::gemm(dst, ldd, a, b, (m, k, n), epi);
}

/// One head's causal attention for one user: the inputs.
pub(crate) struct Attn<'a> {
    /// Query rows `start..n` of this head (row stride `q.ld`, `d_qk` used).
    pub q: Mat<'a>,
    /// Keys of rows `0..n` of this head (row stride `keys.ld`, `d_qk` used).
    pub keys: Mat<'a>,
    /// Values of rows `0..n` of this head (row stride `values.ld`, `d_v` used).
    pub values: Mat<'a>,
    /// Time buckets of the query rows, row stride `padded(n)`, zero past the diagonal.
    pub buckets: &'a [u32],
    /// `pos_w` followed by at least [`POS_PAD`] zeros.
    pub pos: &'a [f32],
    /// `ts_w` of the layer.
    pub ts_w: &'a [f32],
    /// First query row (rows before it are cached keys/values only).
    pub start: usize,
    /// Rows in the window.
    pub n: usize,
    pub d_qk: usize,
    pub d_v: usize,
    /// The attention normalizer N.
    pub big_n: usize,
    pub alpha: f32,
}

/// Zeros appended to `pos_w` so that the score strips past the diagonal
/// (which are masked) read inside the buffer.
pub(crate) const POS_PAD: usize = 2 * NR + MR;

/// Reusable buffers of [`attention_head`].
#[derive(Default)]
pub(crate) struct AttnScratch {
    /// Transposed keys, `d_qk × padded(n)`.
    kt: Vec<f32>,
    /// One block of scores, `MR × padded(n)`.
    scores: Vec<f32>,
}

/// `out[r, 0..d_v] = Σ_{j ≤ i} SiLU(alpha·q_i·k_j + rab[i, j]) / N · v_j`
/// for the query rows `i = start + r`, written with row stride `ldo`.
///
/// # Panics
/// If a buffer is too short for the shape.
pub(crate) fn attention_head(a: &Attn<'_>, out: &mut [f32], ldo: usize, scratch: &mut AttnScratch) {
    let rows = a.n - a.start;
    if rows == 0 {
        return;
    }
    let ldn = padded(a.n);
    assert!(a.start < a.n && a.n <= a.big_n, "attention: bad rows");
    assert!(a.q.ld >= a.d_qk && a.q.data.len() >= (rows - 1) * a.q.ld + a.d_qk, "attention: q too short");
    assert!(a.keys.ld >= a.d_qk && a.keys.data.len() >= (a.n - 1) * a.keys.ld + a.d_qk, "attention: keys too short");
    assert!(
        a.values.ld >= a.d_v && a.values.data.len() >= (a.n - 1) * a.values.ld + a.d_v,
        "attention: values too short"
    );
    assert!(a.buckets.len() >= rows * ldn, "attention: buckets too short");
    assert!(a.pos.len() >= 2 * a.big_n - 1 + POS_PAD, "attention: pos_w not padded");
    assert!(ldo >= a.d_v && out.len() >= (rows - 1) * ldo + a.d_v, "attention: out too short");
    #[cfg(target_arch = "x86_64")]
    if simd() {
        grow(&mut scratch.scores, MR * ldn);
        if rows > DOT_ROWS {
            grow(&mut scratch.kt, a.d_qk * ldn);
            transpose_keys(a, ldn, &mut scratch.kt);
        }
        // SAFETY: AVX2 and FMA are present (simd()); the asserts above and the
        // buffer sizes just set bound every access (see avx::attention_head).
        unsafe { avx::attention_head(a, out.as_mut_ptr(), ldo, &mut scratch.kt, &mut scratch.scores) };
        return;
    }
    portable::attention_head(a, out, ldo);
}

/// Makes `buf` at least `len` long; the contents are not cleared (every
/// user of a scratch buffer writes what it reads).
pub(crate) fn grow<T: Copy + Default>(buf: &mut Vec<T>, len: usize) {
    if buf.len() < len {
        buf.resize(len, T::default());
    }
}

/// `kt[p, j] = keys[j, p]`, columns `n..padded(n)` zero.
fn transpose_keys(a: &Attn<'_>, ldn: usize, kt: &mut [f32]) {
    for (p, kt_row) in kt.chunks_exact_mut(ldn).take(a.d_qk).enumerate() {
        for (j, slot) in kt_row[..a.n].iter_mut().enumerate() {
            *slot = a.keys.data[j * a.keys.ld + p];
        }
        kt_row[a.n..].fill(0.0);
    }
}

/// Parameter-free LayerNorm (eps `eps`) of `rows` rows of `width` values at
/// row stride `ld`, in place; with `gate`, each normalised row is then
/// multiplied elementwise by the gate's row (`y = gate ⊙ LN(o)`).
pub(crate) fn layer_norm_rows(buf: &mut [f32], ld: usize, width: usize, rows: usize, eps: f32, gate: Option<Mat<'_>>) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 and FMA are present (simd()); the body is safe code.
        unsafe { avx::layer_norm_rows(buf, ld, width, rows, eps, gate) };
        return;
    }
    layer_norm_body(buf, ld, width, rows, eps, gate)
}

#[inline(always)]
fn layer_norm_body(buf: &mut [f32], ld: usize, width: usize, rows: usize, eps: f32, gate: Option<Mat<'_>>) {
    let inv_w = 1.0 / width as f32;
    for r in 0..rows {
        let row = &mut buf[r * ld..r * ld + width];
        let mean = sum8(row) * inv_w;
        let mut acc = [0.0f32; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for lane in 0..8 {
                acc[lane] += (c[lane] - mean) * (c[lane] - mean);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|x| (x - mean) * (x - mean)).sum();
        let var = (reduce8(&acc) + tail) * inv_w;
        let inv = 1.0 / (var + eps).sqrt();
        match gate {
            Some(g) => {
                let g_row = &g.data[r * g.ld..r * g.ld + width];
                for (x, u) in row.iter_mut().zip(g_row) {
                    *x = (*x - mean) * inv * u;
                }
            }
            None => row.iter_mut().for_each(|x| *x = (*x - mean) * inv),
        }
    }
}

/// Sum with eight independent accumulators (vectorisable).
#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for lane in 0..8 {
            acc[lane] += c[lane];
        }
    }
    reduce8(&acc) + chunks.remainder().iter().sum::<f32>()
}

#[inline(always)]
fn reduce8(acc: &[f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Time buckets of one query row: `out[j] = bucket(gaps[j])` where `gaps[j]`
/// is `|ts[i+1] − ts[j]|` already converted to f32 as the reference does.
/// Exactly [`time_bucket_of_gap`] for every gap, on both paths.
pub(crate) fn bucket_row(config: &ModelConfig, gaps: &[f32], out: &mut [u32]) {
    assert!(out.len() >= gaps.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 and FMA are present (simd()); lengths checked above.
        unsafe { avx::bucket_row(config, gaps, out) };
        return;
    }
    for (slot, &gap) in out.iter_mut().zip(gaps) {
        *slot = time_bucket_of_gap(config, gap) as u32;
    }
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

mod portable {
    //! The fallback where AVX2/FMA is absent: products through the `gemm`
    //! crate, attention as plain row loops.

    use super::{Attn, Epilogue, Mat, silu};

    /// Through the `gemm` crate (its own SIMD dispatch: SSE, NEON, …),
    /// then the epilogue over the written rows.
    pub(super) fn gemm(
        dst: &mut [f32],
        ldd: usize,
        a: Mat<'_>,
        b: Mat<'_>,
        (m, k, n): (usize, usize, usize),
        epi: Epilogue<'_>,
    ) {
        let accumulate = matches!(epi, Epilogue::AddBias(_));
        // SAFETY: the caller (super::gemm) asserted that dst holds m rows of n
        // at stride ldd, a m rows of k at stride a.ld and b k rows of n at
        // stride b.ld; all column strides are 1 and dst aliases neither input.
        unsafe {
            ::gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                ldd as isize,
                accumulate,
                a.data.as_ptr(),
                1,
                a.ld as isize,
                b.data.as_ptr(),
                1,
                b.ld as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                ::gemm::Parallelism::None,
            );
        }
        for r in 0..m {
            let out = &mut dst[r * ldd..r * ldd + n];
            match epi {
                Epilogue::Store => {}
                Epilogue::Silu => out.iter_mut().for_each(|o| *o = silu(*o)),
                Epilogue::AddBias(bias) => out.iter_mut().zip(bias).for_each(|(o, b)| *o += b),
            }
        }
    }

    pub(super) fn attention_head(a: &Attn<'_>, out: &mut [f32], ldo: usize) {
        let ldn = super::padded(a.n);
        let inv_n = 1.0 / a.big_n as f32;
        for r in 0..a.n - a.start {
            let i = a.start + r;
            let q = &a.q.data[r * a.q.ld..r * a.q.ld + a.d_qk];
            let o = &mut out[r * ldo..r * ldo + a.d_v];
            o.fill(0.0);
            for j in 0..=i {
                let k = &a.keys.data[j * a.keys.ld..j * a.keys.ld + a.d_qk];
                let dot = crate::forward::dot(q, k);
                let bias = a.pos[a.big_n - 1 + j - i] + a.ts_w[a.buckets[r * ldn + j] as usize];
                let w = silu(a.alpha * dot + bias) * inv_n;
                let v = &a.values.data[j * a.values.ld..j * a.values.ld + a.d_v];
                o.iter_mut().zip(v).for_each(|(y, x)| *y += w * x);
            }
        }
    }
}

// Every function of this module is an `unsafe fn` made of intrinsics and raw
// pointer arithmetic; wrapping each intrinsic in its own block would only add noise.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn)]
mod avx {
    //! The AVX2/FMA kernels. Every function here is `unsafe` because it must
    //! only run where AVX2 and FMA are present; the callers in the parent
    //! module check that and the bounds.

    use std::arch::x86_64::*;

    use super::{Attn, DOT_ROWS, Epilogue, MR, Mat, NR, padded};

    /// Bytes of the right-hand operand one column panel of [`gemm`] spans.
    const PANEL_BYTES: usize = 128 * 1024;
    /// From this row stride (floats) on, [`gemm`] packs its right-hand operand.
    const PACK_MIN_LD: usize = 256;
    /// ... and has at least this many rows to reuse the copy (an append's
    /// two rows read each weight once either way).
    const PACK_MIN_ROWS: usize = 4 * MR;

    thread_local! {
        /// The packed panel of [`gemm`], reused across calls.
        static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    use crate::config::ModelConfig;
    use crate::history::time_bucket_of_gap;

    /// Lanes `0..count` set (count ≤ 8).
    #[inline(always)]
    unsafe fn lane_mask(count: usize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }

    #[inline(always)]
    unsafe fn load(p: *const f32, full: bool, mask: __m256i) -> __m256 {
        if full { _mm256_loadu_ps(p) } else { _mm256_maskload_ps(p, mask) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256, full: bool, mask: __m256i) {
        if full { _mm256_storeu_ps(p, v) } else { _mm256_maskstore_ps(p, mask, v) }
    }

    /// `R × 8·NV` tile of `a[R×k] · b[k×8·NV]`; with `MASKED`, the last
    /// vector of each `b` row is loaded through `mask`. Each element is
    /// accumulated over p = 0..k in order, by FMA, from zero.
    #[inline(always)]
    unsafe fn tile<const R: usize, const NV: usize, const MASKED: bool>(
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        k: usize,
        mask: __m256i,
    ) -> [[__m256; NV]; R] {
        let mut acc = [[_mm256_setzero_ps(); NV]; R];
        for p in 0..k {
            let bp = b.add(p * ldb);
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, slot) in bv.iter_mut().enumerate() {
                *slot = if MASKED && v == NV - 1 {
                    _mm256_maskload_ps(bp.add(8 * v), mask)
                } else {
                    _mm256_loadu_ps(bp.add(8 * v))
                };
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let ar = _mm256_broadcast_ss(&*a.add(r * lda + p));
                for (slot, bvv) in acc_r.iter_mut().zip(bv) {
                    *slot = _mm256_fmadd_ps(ar, bvv, *slot);
                }
            }
        }
        acc
    }

    /// Writes a tile through the epilogue; `width` valid columns (the last
    /// vector holds `width − 8·(NV−1)` of them).
    #[inline(always)]
    unsafe fn finish<const R: usize, const NV: usize>(
        dst: *mut f32,
        ldd: usize,
        acc: [[__m256; NV]; R],
        col: usize,
        epi: Epilogue<'_>,
        width: usize,
    ) {
        let tail = width - 8 * (NV - 1);
        let mask = lane_mask(tail);
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, &y) in acc_r.iter().enumerate() {
                let p = dst.add(r * ldd + 8 * v);
                let full = v + 1 < NV || tail == 8;
                let y = match epi {
                    Epilogue::Store => y,
                    Epilogue::Silu => silu_ps(y),
                    Epilogue::AddBias(bias) => {
                        let d = load(p, full, mask);
                        let b = load(bias.as_ptr().add(col + 8 * v), full, mask);
                        _mm256_add_ps(_mm256_add_ps(d, y), b)
                    }
                };
                store(p, y, full, mask);
            }
        }
    }

    /// All column strips of `R` rows.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_rows<const R: usize>(
        dst: *mut f32,
        ldd: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        k: usize,
        n: usize,
        epi: Epilogue<'_>,
    ) {
        let all = _mm256_set1_epi32(-1);
        let mut c = 0;
        while c + NR <= n {
            let acc = tile::<R, 2, false>(a, lda, b.add(c), ldb, k, all);
            finish::<R, 2>(dst.add(c), ldd, acc, c, epi, NR);
            c += NR;
        }
        let left = n - c;
        if left > 8 {
            let acc = tile::<R, 2, true>(a, lda, b.add(c), ldb, k, lane_mask(left - 8));
            finish::<R, 2>(dst.add(c), ldd, acc, c, epi, left);
        } else if left == 8 {
            let acc = tile::<R, 1, false>(a, lda, b.add(c), ldb, k, all);
            finish::<R, 1>(dst.add(c), ldd, acc, c, epi, left);
        } else if left > 0 {
            let acc = tile::<R, 1, true>(a, lda, b.add(c), ldb, k, lane_mask(left));
            finish::<R, 1>(dst.add(c), ldd, acc, c, epi, left);
        }
    }

    /// `R` rows (1..=MR) dispatched to their tile instantiation.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_block(
        rows: usize,
        dst: *mut f32,
        ldd: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        k: usize,
        n: usize,
        epi: Epilogue<'_>,
    ) {
        match rows {
            6 => gemm_rows::<6>(dst, ldd, a, lda, b, ldb, k, n, epi),
            5 => gemm_rows::<5>(dst, ldd, a, lda, b, ldb, k, n, epi),
            4 => gemm_rows::<4>(dst, ldd, a, lda, b, ldb, k, n, epi),
            3 => gemm_rows::<3>(dst, ldd, a, lda, b, ldb, k, n, epi),
            2 => gemm_rows::<2>(dst, ldd, a, lda, b, ldb, k, n, epi),
            _ => gemm_rows::<1>(dst, ldd, a, lda, b, ldb, k, n, epi),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
        dst: *mut f32,
        ldd: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        m: usize,
        k: usize,
        n: usize,
        epi: Epilogue<'_>,
    ) {
        // Column panels whose slice of b stays in L2 while every row block
        // passes over it (the tiles read b in place, unpacked): one panel for
        // ML-1M's 50 × 200 weights, 128 columns for ML-20M's 256 × 1024.
        let panel = (PANEL_BYTES / (4 * k.max(1)) / NR * NR).max(NR);
        let mut c0 = 0;
        while c0 < n {
            let cols = (n - c0).min(panel);
            let epi = match epi {
                Epilogue::AddBias(bias) => Epilogue::AddBias(&bias[c0..]),
                other => other,
            };
            if ldb >= PACK_MIN_LD && m >= PACK_MIN_ROWS {
                PACKED.with(|cell| {
                    let mut guard = cell.try_borrow_mut();
                    let mut own = Vec::new();
                    let buf = match guard.as_deref_mut() {
                        Ok(buf) => buf,
                        Err(_) => &mut own,
                    };
                    pack_panel(buf, b.add(c0), ldb, k, cols);
                    let mut r0 = 0;
                    while r0 < m {
                        let rows = (m - r0).min(MR);
                        let (d, a) = (dst.add(r0 * ldd + c0), a.add(r0 * lda));
                        match rows {
                            6 => packed_rows::<6>(d, ldd, a, lda, buf.as_ptr(), k, cols, epi),
                            5 => packed_rows::<5>(d, ldd, a, lda, buf.as_ptr(), k, cols, epi),
                            4 => packed_rows::<4>(d, ldd, a, lda, buf.as_ptr(), k, cols, epi),
                            3 => packed_rows::<3>(d, ldd, a, lda, buf.as_ptr(), k, cols, epi),
                            2 => packed_rows::<2>(d, ldd, a, lda, buf.as_ptr(), k, cols, epi),
                            _ => packed_rows::<1>(d, ldd, a, lda, buf.as_ptr(), k, cols, epi),
                        }
                        r0 += rows;
                    }
                });
            } else {
                let mut r0 = 0;
                while r0 < m {
                    let rows = (m - r0).min(MR);
                    gemm_block(rows, dst.add(r0 * ldd + c0), ldd, a.add(r0 * lda), lda, b.add(c0), ldb, k, cols, epi);
                    r0 += rows;
                }
            }
            c0 += cols;
        }
    }

    /// Copies a `k × cols` panel of b into strips of [`NR`] columns, each
    /// `k × NR` contiguous (zeros past `cols`): rows of b a kilobyte or more
    /// apart fall into the same few L1 sets, and the tile would then wait on
    /// L2 for every row.
    #[inline(always)]
    unsafe fn pack_panel(buf: &mut Vec<f32>, b: *const f32, ldb: usize, k: usize, cols: usize) {
        let strips = cols.div_ceil(NR);
        super::grow(buf, strips * k * NR);
        let out = buf.as_mut_ptr();
        for s in 0..strips {
            let width = (cols - s * NR).min(NR);
            let (lo, hi) = (lane_mask(width.min(8)), lane_mask(width.saturating_sub(8)));
            for p in 0..k {
                let (src, dst) = (b.add(p * ldb + s * NR), out.add((s * k + p) * NR));
                // Masked loads read nothing past `width` and give zeros there.
                _mm256_storeu_ps(dst, _mm256_maskload_ps(src, lo));
                _mm256_storeu_ps(dst.add(8), _mm256_maskload_ps(src.add(8), hi));
            }
        }
    }

    /// The strips of a packed panel for `R` rows. Each element sees the same
    /// FMAs in the same order as from the unpacked operand.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn packed_rows<const R: usize>(
        dst: *mut f32,
        ldd: usize,
        a: *const f32,
        lda: usize,
        packed: *const f32,
        k: usize,
        cols: usize,
        epi: Epilogue<'_>,
    ) {
        let all = _mm256_set1_epi32(-1);
        let mut c = 0;
        while c < cols {
            let width = (cols - c).min(NR);
            let strip = packed.add(c * k);
            if width > 8 {
                let acc = tile::<R, 2, false>(a, lda, strip, NR, k, all);
                finish::<R, 2>(dst.add(c), ldd, acc, c, epi, width);
            } else {
                let acc = tile::<R, 1, false>(a, lda, strip, NR, k, all);
                finish::<R, 1>(dst.add(c), ldd, acc, c, epi, width);
            }
            c += NR;
        }
    }

    /// Raw `q·k` scores of the block's rows by strips of the transposed keys.
    #[inline(always)]
    unsafe fn score_strips<const R: usize>(
        q: *const f32,
        ldq: usize,
        kt: *const f32,
        ldn: usize,
        dqk: usize,
        jmax: usize,
        s: *mut f32,
    ) {
        let all = _mm256_set1_epi32(-1);
        let mut j = 0;
        while j < jmax {
            let acc = tile::<R, 2, false>(q, ldq, kt.add(j), ldn, dqk, all);
            for (r, acc_r) in acc.iter().enumerate() {
                _mm256_storeu_ps(s.add(r * ldn + j), acc_r[0]);
                _mm256_storeu_ps(s.add(r * ldn + j + 8), acc_r[1]);
            }
            j += NR;
        }
    }

    /// Dot product, FMA into two accumulators, then the scalar tail.
    #[inline(always)]
    unsafe fn dot(a: *const f32, b: *const f32, len: usize) -> f32 {
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut p = 0;
        while p + 16 <= len {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(p)), _mm256_loadu_ps(b.add(p)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(p + 8)), _mm256_loadu_ps(b.add(p + 8)), acc1);
            p += 16;
        }
        if p + 8 <= len {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(p)), _mm256_loadu_ps(b.add(p)), acc0);
            p += 8;
        }
        let mut total = hsum(_mm256_add_ps(acc0, acc1));
        while p < len {
            total += *a.add(p) * *b.add(p);
            p += 1;
        }
        total
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        let x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
        _mm_cvtss_f32(x)
    }

    /// See [`super::attention_head`]. `kt` holds the transposed keys when
    /// there are more than `DOT_ROWS` query rows; `scores` is `MR × padded(n)`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn attention_head(a: &Attn<'_>, out: *mut f32, ldo: usize, kt: &mut [f32], scores: &mut [f32]) {
        let rows = a.n - a.start;
        let ldn = padded(a.n);
        let use_tile = rows > DOT_ROWS;
        let s = scores.as_mut_ptr();
        let alpha = _mm256_set1_ps(a.alpha);
        let inv_n = _mm256_set1_ps(1.0 / a.big_n as f32);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        // Clamping keeps the gather inside ts_w whatever the buckets hold.
        let last_bucket = _mm256_set1_epi32(a.ts_w.len().saturating_sub(1).min(i32::MAX as usize) as i32);
        let mut r0 = 0;
        while r0 < rows {
            let mr = (rows - r0).min(MR);
            let i_last = a.start + r0 + mr - 1;
            let keys_used = i_last + 1;
            let q = a.q.data.as_ptr().add(r0 * a.q.ld);
            // 1. Raw scores of the block: columns 0..jmax (≤ ldn), the rest
            //    of the causal triangle's columns never computed.
            let jmax = if use_tile {
                let jmax = padded(keys_used);
                let kt = kt.as_ptr();
                match mr {
                    6 => score_strips::<6>(q, a.q.ld, kt, ldn, a.d_qk, jmax, s),
                    5 => score_strips::<5>(q, a.q.ld, kt, ldn, a.d_qk, jmax, s),
                    4 => score_strips::<4>(q, a.q.ld, kt, ldn, a.d_qk, jmax, s),
                    3 => score_strips::<3>(q, a.q.ld, kt, ldn, a.d_qk, jmax, s),
                    2 => score_strips::<2>(q, a.q.ld, kt, ldn, a.d_qk, jmax, s),
                    _ => score_strips::<1>(q, a.q.ld, kt, ldn, a.d_qk, jmax, s),
                }
                jmax
            } else {
                for r in 0..mr {
                    let i = a.start + r0 + r;
                    let qr = q.add(r * a.q.ld);
                    for j in 0..=i {
                        *s.add(r * ldn + j) = dot(qr, a.keys.data.as_ptr().add(j * a.keys.ld), a.d_qk);
                    }
                }
                keys_used.div_ceil(8) * 8
            };
            // 2. rab + SiLU + 1/N + causal mask, in place, 8 scores at a time.
            //    Lanes past the diagonal read padding (pos zeros, bucket 0)
            //    and are then zeroed.
            for r in 0..mr {
                let i = a.start + r0 + r;
                let s_row = s.add(r * ldn);
                let b_row = a.buckets.as_ptr().add((r0 + r) * ldn) as *const __m256i;
                let pos = a.pos.as_ptr().add(a.big_n - 1 - i);
                let diag = _mm256_set1_epi32(i as i32);
                let mut j = 0;
                while j < jmax {
                    let raw = _mm256_loadu_ps(s_row.add(j));
                    let bucket = _mm256_min_epu32(_mm256_loadu_si256(b_row.add(j / 8)), last_bucket);
                    let ts = _mm256_i32gather_ps::<4>(a.ts_w.as_ptr(), bucket);
                    let x = _mm256_add_ps(_mm256_fmadd_ps(alpha, raw, _mm256_loadu_ps(pos.add(j))), ts);
                    let w = _mm256_mul_ps(silu_ps(x), inv_n);
                    let past = _mm256_cmpgt_epi32(_mm256_add_epi32(lanes, _mm256_set1_epi32(j as i32)), diag);
                    _mm256_storeu_ps(s_row.add(j), _mm256_andnot_ps(_mm256_castsi256_ps(past), w));
                    j += 8;
                }
            }
            // 3. O = A·V over the keys the block can see (zeros past each diagonal).
            gemm_block(
                mr,
                out.add(r0 * ldo),
                ldo,
                s,
                ldn,
                a.values.data.as_ptr(),
                a.values.ld,
                keys_used,
                a.d_v,
                Epilogue::Store,
            );
            r0 += mr;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn layer_norm_rows(
        buf: &mut [f32],
        ld: usize,
        width: usize,
        rows: usize,
        eps: f32,
        gate: Option<Mat<'_>>,
    ) {
        super::layer_norm_body(buf, ld, width, rows, eps, gate)
    }

    /// `e^x`, Cephes' single-precision polynomial after a two-constant
    /// range reduction: within 2 ulp on [−87, 88]; inputs are clamped there
    /// (the clamped ends only feed SiLU, where they make no difference).
    #[inline(always)]
    pub(super) unsafe fn exp_ps(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3)), _mm256_set1_ps(88.3));
        let fx = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
        let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), x);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.398_199_9e-3));
        y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.333_452e-3));
        y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.166_579_6e-2));
        y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(0.166_666_65));
        y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(0.5));
        y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0)));
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)));
        _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
    }

    /// `x / (1 + e^−x)`, the quotient as `x · r` with `r` the 12-bit
    /// reciprocal estimate after one Newton step (≈ 23 bits; a division
    /// costs three times as much and SiLU runs on every score). Where
    /// `1 + e^−x` exceeds 2^126 (x < −87) the estimate is 0 and so is the
    /// result, against a true value below 1e−36. NaN stays NaN.
    #[inline(always)]
    pub(super) unsafe fn silu_ps(x: __m256) -> __m256 {
        let d = _mm256_add_ps(_mm256_set1_ps(1.0), exp_ps(_mm256_xor_ps(x, _mm256_set1_ps(-0.0))));
        let r = _mm256_rcp_ps(d);
        let r = _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.0)));
        _mm256_mul_ps(x, r)
    }

    /// Natural log of x ≥ 1 (Cephes' single-precision polynomial), within a
    /// few ulp: only used where the result's distance to a bucket boundary
    /// exceeds that error by orders of magnitude.
    #[inline(always)]
    unsafe fn ln_ps(x: __m256) -> __m256 {
        let bits = _mm256_castps_si256(x);
        let e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(127));
        // Mantissa in [0.5, 1).
        let m =
            _mm256_or_ps(_mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x007f_ffff))), _mm256_set1_ps(0.5));
        let mut e_f = _mm256_add_ps(_mm256_cvtepi32_ps(e), _mm256_set1_ps(1.0));
        let small = _mm256_cmp_ps::<_CMP_LT_OQ>(m, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let t = _mm256_and_ps(m, small);
        let mut xm = _mm256_sub_ps(m, _mm256_set1_ps(1.0));
        e_f = _mm256_sub_ps(e_f, _mm256_and_ps(_mm256_set1_ps(1.0), small));
        xm = _mm256_add_ps(xm, t);
        let z = _mm256_mul_ps(xm, xm);
        let mut y = _mm256_set1_ps(7.037_683_6e-2);
        y = _mm256_fmadd_ps(y, xm, _mm256_set1_ps(-1.151_461e-1));
        y = _mm256_fmadd_ps(y, xm, _mm256_set1_ps(1.167_699_9e-1));
        y = _mm256_fmadd_ps(y, xm, _mm256_set1_ps(-1.242_014_1e-1));
        y = _mm256_fmadd_ps(y, xm, _mm256_set1_ps(1.424_932_3e-1));
        y = _mm256_fmadd_ps(y, xm, _mm256_set1_ps(-1.666_805_8e-1));
        y = _mm256_fmadd_ps(y, xm, _mm256_set1_ps(2.000_071_4e-1));
        y = _mm256_fmadd_ps(y, xm, _mm256_set1_ps(-2.499_999_4e-1));
        y = _mm256_fmadd_ps(y, xm, _mm256_set1_ps(3.333_333e-1));
        y = _mm256_mul_ps(_mm256_mul_ps(y, xm), z);
        y = _mm256_fmadd_ps(e_f, _mm256_set1_ps(-2.121_944_4e-4), y);
        y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5), y);
        let r = _mm256_add_ps(xm, y);
        _mm256_fmadd_ps(e_f, _mm256_set1_ps(0.693_359_4), r)
    }

    /// Buckets of one row: `floor(ln(gap) · (1/div))` from the vector log
    /// where that is at least 1e-3 away from an integer (the log's error and
    /// the two roundings of the reciprocal and the product stay below 1e-4
    /// for every gap up to 2^64), the exact scalar formula for the rest.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn bucket_row(config: &ModelConfig, gaps: &[f32], out: &mut [u32]) {
        const MARGIN: f32 = 1e-3;
        let inv_div = _mm256_set1_ps(1.0 / config.time_bucket_div);
        let top = _mm256_set1_epi32(config.num_time_buckets.min(i32::MAX as usize) as i32);
        let one = _mm256_set1_ps(1.0);
        let mut j = 0;
        while j + 8 <= gaps.len() {
            let g = _mm256_max_ps(_mm256_loadu_ps(gaps.as_ptr().add(j)), one);
            let q = _mm256_mul_ps(ln_ps(g), inv_div);
            let fl = _mm256_floor_ps(q);
            let frac = _mm256_sub_ps(q, fl);
            // Undecided: near a boundary (and not the exact gap of 1, bucket 0).
            let near = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_LT_OQ>(frac, _mm256_set1_ps(MARGIN)),
                _mm256_cmp_ps::<_CMP_GT_OQ>(frac, _mm256_set1_ps(1.0 - MARGIN)),
            );
            let undecided = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(g, one), near);
            let bucket = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvttps_epi32(fl), _mm256_setzero_si256()), top);
            _mm256_storeu_si256(out.as_mut_ptr().add(j) as *mut __m256i, bucket);
            let mut lanes = _mm256_movemask_ps(undecided);
            while lanes != 0 {
                let lane = lanes.trailing_zeros() as usize;
                out[j + lane] = time_bucket_of_gap(config, gaps[j + lane]) as u32;
                lanes &= lanes - 1;
            }
            j += 8;
        }
        for (slot, &gap) in out[j..].iter_mut().zip(&gaps[j..]) {
            *slot = time_bucket_of_gap(config, gap) as u32;
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::arch::x86_64::*;

    use super::*;

    fn simd_here() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }

    #[test]
    fn vector_exp_and_silu_are_within_a_few_ulp() {
        if !simd_here() {
            return;
        }
        let mut worst_exp = 0.0f64;
        let mut worst_silu = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let xs = [x, x + 0.01, x + 0.02, x + 0.03, x + 0.04, x + 0.05, x + 0.06, x + 0.07];
            let mut e = [0.0f32; 8];
            let mut s = [0.0f32; 8];
            // SAFETY: AVX2/FMA checked above; arrays of 8.
            unsafe {
                let v = _mm256_loadu_ps(xs.as_ptr());
                _mm256_storeu_ps(e.as_mut_ptr(), avx::exp_ps(v));
                _mm256_storeu_ps(s.as_mut_ptr(), avx::silu_ps(v));
            }
            for lane in 0..8 {
                let xe = xs[lane] as f64;
                let exact = xe.exp();
                worst_exp = worst_exp.max(((e[lane] as f64 - exact) / exact).abs());
                let exact_silu = xe / (1.0 + (-xe).exp());
                let scale = exact_silu.abs().max(1e-30);
                worst_silu = worst_silu.max(((s[lane] as f64 - exact_silu) / scale).abs());
            }
            x += 0.0731;
        }
        // f32 ulp is 2^-23 ≈ 1.2e-7 relative.
        assert!(worst_exp < 3.0e-7, "exp relative error {worst_exp:e}");
        assert!(worst_silu < 5.0e-7, "silu relative error {worst_silu:e}");
    }

    #[test]
    fn vector_buckets_equal_the_float32_formula_at_every_boundary() {
        if !simd_here() {
            return;
        }
        let mut coarse = ModelConfig::ml_1m(10);
        coarse.time_bucket_div = 0.5;
        coarse.num_time_buckets = 20;
        for config in [ModelConfig::ml_1m(10), coarse] {
            let exact = |gap: u64| time_bucket_of_gap(&config, gap as f32) as u32;
            let mut gaps: Vec<u64> = vec![0, 1, 2, 3, 4, 5, 7, 10, 20, 86_400, u64::MAX, 1 << 63];
            // The first gap of every bucket (binary search; the check below
            // is pointwise, so it does not rely on the search's monotonicity).
            for b in 1..=config.num_time_buckets as u32 {
                let (mut lo, mut hi) = (1u64, u64::MAX);
                if exact(hi) < b {
                    continue;
                }
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if exact(mid) >= b { hi = mid } else { lo = mid + 1 }
                }
                for delta in 0..5u64 {
                    gaps.push(lo.saturating_sub(2) + delta);
                }
                // Neighbouring floats, for gaps beyond 2^24.
                let f = lo as f32;
                for g in [f32::from_bits(f.to_bits() - 1), f, f32::from_bits(f.to_bits() + 1)] {
                    gaps.push(g as u64);
                }
            }
            let mut state = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..100_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                gaps.push(state >> (state % 64));
            }
            let as_f32: Vec<f32> = gaps.iter().map(|&g| g as f32).collect();
            let mut out = vec![u32::MAX; as_f32.len()];
            bucket_row(&config, &as_f32, &mut out);
            for ((g, f), got) in gaps.iter().zip(&as_f32).zip(&out) {
                assert_eq!(*got, time_bucket_of_gap(&config, *f) as u32, "gap {g}");
            }
        }
    }

    #[test]
    fn silu_keeps_nan_and_saturates() {
        if !simd_here() {
            return;
        }
        let xs = [f32::NAN, -1000.0, 1000.0, f32::INFINITY, 0.0, -0.0, 1e-30, -88.0];
        let mut s = [0.0f32; 8];
        // SAFETY: AVX2/FMA checked above; arrays of 8.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), avx::silu_ps(_mm256_loadu_ps(xs.as_ptr()))) };
        assert!(s[0].is_nan());
        assert!(s[1].abs() < 1e-30, "{}", s[1]);
        assert!((s[2] - 1000.0).abs() <= 1000.0 * 2.5e-7, "{}", s[2]);
        assert_eq!(s[3], f32::INFINITY);
        assert_eq!(s[4], 0.0);
        assert!(s[7] <= 0.0 && s[7] > -1e-30, "{}", s[7]);
    }
}
