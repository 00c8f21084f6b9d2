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

/// Dot product with eight independent accumulators, so that the loop
/// vectorises (floating-point adds are not reassociated by the compiler).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let mut acc = [0.0f32; 8];
    let chunks = len / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for lane in 0..8 {
            acc[lane] += x[lane] * y[lane];
        }
    }
    let mut tail = 0.0;
    for i in chunks * 8..len {
        tail += a[i] * b[i];
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

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

mod portable;

// Every function of this module is an `unsafe fn` made of intrinsics and raw
// pointer arithmetic; wrapping each intrinsic in its own block would only add noise.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn)]
mod avx;

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
