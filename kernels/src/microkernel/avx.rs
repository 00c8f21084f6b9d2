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
    let m = _mm256_or_ps(_mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x007f_ffff))), _mm256_set1_ps(0.5));
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
