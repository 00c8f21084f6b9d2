//! The numeric core of the CPU forward: the HSTU layers of `HSTU.md` over
//! the rows `start..n` of one user's kept window, given the per-layer keys
//! and values of rows `0..start`. A full encode is `start = 0`; an
//! incremental one recomputes only the tail.
//!
//! Projections go through `gemm` (one thread: parallelism is across users);
//! the attention loops are plain slices with independent accumulators so the
//! compiler vectorises them for any head dimension.

use gemm::Parallelism;

use crate::config::ModelConfig;
use crate::history::{Event, time_bucket};
use crate::model::{LayerWeights, Model};

/// LayerNorm epsilon of the reference (no gain, no bias).
const LN_EPS: f32 = 1e-6;
/// Floor of the final L2 norm, as in the reference.
const NORM_FLOOR: f32 = 1e-6;

/// Keys and values of one layer for the rows computed so far, row-major
/// (`[rows, H·d_qk]` and `[rows, H·d_v]`, heads contiguous).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LayerKv {
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, all row-major and contiguous, one thread.
pub(crate) fn matmul(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    if m == 0 || n == 0 {
        return;
    }
    if m <= SMALL_M {
        // A few rows (incremental encode): gemm packs the whole rhs per call
        // and its skinny path is slow; streaming rhs rows through axpy is not.
        small_matmul(dst, lhs, rhs, m, k, n, accumulate);
        return;
    }
    // SAFETY: the asserts above bound every index gemm touches: dst is m×n with
    // row stride n, lhs m×k with row stride k, rhs k×n with row stride n, all
    // column strides 1; dst does not alias lhs or rhs (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Up to this many rows, products skip gemm (see [`matmul`]).
const SMALL_M: usize = 8;

/// `dst (+)= lhs · rhs` row by row as axpys over rhs rows; AVX2 when available.
fn small_matmul(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { small_matmul_avx2(dst, lhs, rhs, m, k, n, accumulate) };
    }
    small_matmul_body(dst, lhs, rhs, m, k, n, accumulate)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn small_matmul_avx2(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    small_matmul_body(dst, lhs, rhs, m, k, n, accumulate)
}

#[inline(always)]
fn small_matmul_body(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    for r in 0..m {
        let out = &mut dst[r * n..(r + 1) * n];
        if !accumulate {
            out.fill(0.0);
        }
        for (p, rhs_row) in rhs[..k * n].chunks_exact(n).enumerate() {
            axpy(out, lhs[r * k + p], rhs_row);
        }
    }
}

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

/// `y += a · x`.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Parameter-free LayerNorm of one row, in place.
fn layer_norm(row: &mut [f32]) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + LN_EPS).sqrt();
    for x in row.iter_mut() {
        *x = (*x - mean) * inv;
    }
}

/// `x_t = sqrt(D)·E[item_t] + P[t]` for the rows `start..n`.
fn embed(model: &Model, events: &[Event], start: usize) -> Vec<f32> {
    let d = model.config.d_model;
    let scale = (d as f32).sqrt();
    let mut x = Vec::with_capacity((events.len() - start) * d);
    for (t, event) in events.iter().enumerate().skip(start) {
        let item = model.item_row(event.item);
        let pos = &model.weights.pos_emb[t * d..(t + 1) * d];
        x.extend(item.iter().zip(pos).map(|(e, p)| scale * e + p));
    }
    x
}

/// Time-bucket indices of the query rows `start..n` against every key
/// `j ≤ i`, row stride `n`: computed once per request, shared by all layers.
/// Row i uses `ts[i+1]`, and the newest row uses `query_time`.
fn buckets(config: &ModelConfig, events: &[Event], query_time: i64, start: usize) -> Vec<u32> {
    let n = events.len();
    let mut out = vec![0u32; (n - start) * n];
    for i in start..n {
        let next_ts = events.get(i + 1).map_or(query_time, |e| e.ts);
        let row = &mut out[(i - start) * n..(i - start) * n + i + 1];
        for (slot, event) in row.iter_mut().zip(events) {
            *slot = time_bucket(config, next_ts.wrapping_sub(event.ts)) as u32;
        }
    }
    out
}

/// Dimensions the attention loops need.
#[derive(Clone, Copy)]
struct AttnShape {
    h: usize,
    dqk: usize,
    dv: usize,
    width: usize,
    q_off: usize,
    big_n: usize,
    alpha: f32,
    inv_n: f32,
}

/// Causal SiLU attention of the query rows `start..n` against the cached
/// keys/values of rows `0..n`, into `out` ([rows, H·d_v]). Compiled twice,
/// with and without AVX2, and picked at run time: the default x86-64 target
/// only has SSE2, and these loops are a sixth of the FLOPs.
#[allow(clippy::too_many_arguments)]
fn attention(
    s: &AttnShape,
    layer: &LayerWeights,
    cache: &LayerKv,
    uvqk: &[f32],
    bucket: &[u32],
    start: usize,
    n: usize,
    bias: &mut [f32],
    out: &mut [f32],
) {
    if n - start > SMALL_M {
        return attention_gemm(s, layer, cache, uvqk, bucket, start, n, out);
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { attention_avx2(s, layer, cache, uvqk, bucket, start, n, bias, out) };
    }
    attention_body(s, layer, cache, uvqk, bucket, start, n, bias, out)
}

/// Many query rows (full encode): per head, `S = Q·Kᵀ` and `O = A·V`
/// through gemm, the causal mask applied between them. Computing the masked
/// upper triangle wastes up to half the products, but gemm runs them several
/// times faster than the row loops.
#[allow(clippy::too_many_arguments)]
fn attention_gemm(
    s: &AttnShape,
    layer: &LayerWeights,
    cache: &LayerKv,
    uvqk: &[f32],
    bucket: &[u32],
    start: usize,
    n: usize,
    out: &mut [f32],
) {
    let AttnShape { h, dqk, dv, width, q_off, big_n, alpha, inv_n } = *s;
    let attn = h * dv;
    let rows = n - start;
    assert!(
        uvqk.len() >= rows * width
            && cache.keys.len() >= n * h * dqk
            && cache.values.len() >= n * attn
            && out.len() >= rows * attn
    );
    let mut scores = vec![0.0f32; rows * n];
    for head in 0..h {
        // SAFETY: (the assert above bounds every access) lhs = Q_h, rows × d_qk
        // at row stride `width`; rhs = K_hᵀ, d_qk × n, element (p, j) at
        // keys[j·H·d_qk + head·d_qk + p]; dst = scores, rows × n, contiguous.
        unsafe {
            gemm::gemm(
                rows, n, dqk,
                scores.as_mut_ptr(), 1, n as isize, false,
                uvqk.as_ptr().add(q_off + head * dqk), 1, width as isize,
                cache.keys.as_ptr().add(head * dqk), (h * dqk) as isize, 1,
                1.0, 1.0, false, false, false, Parallelism::None,
            );
        }
        for r in 0..rows {
            let i = start + r;
            let row = &mut scores[r * n..(r + 1) * n];
            let pos = &layer.pos_w[big_n - 1 - i..big_n];
            let buckets = &bucket[r * n..r * n + i + 1];
            for ((a, p), b) in row.iter_mut().zip(pos).zip(buckets) {
                *a = silu(alpha * *a + p + layer.ts_w[*b as usize]) * inv_n;
            }
            row[i + 1..].fill(0.0);
        }
        // SAFETY: lhs = A, rows × n contiguous; rhs = V_h, n × d_v at row
        // stride H·d_v; dst = O_h, rows × d_v at row stride H·d_v (bounded above).
        unsafe {
            gemm::gemm(
                rows, dv, n,
                out.as_mut_ptr().add(head * dv), 1, attn as isize, false,
                scores.as_ptr(), 1, n as isize,
                cache.values.as_ptr().add(head * dv), 1, attn as isize,
                1.0, 1.0, false, false, false, Parallelism::None,
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn attention_avx2(
    s: &AttnShape,
    layer: &LayerWeights,
    cache: &LayerKv,
    uvqk: &[f32],
    bucket: &[u32],
    start: usize,
    n: usize,
    bias: &mut [f32],
    out: &mut [f32],
) {
    attention_body(s, layer, cache, uvqk, bucket, start, n, bias, out)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_body(
    s: &AttnShape,
    layer: &LayerWeights,
    cache: &LayerKv,
    uvqk: &[f32],
    bucket: &[u32],
    start: usize,
    n: usize,
    bias: &mut [f32],
    out: &mut [f32],
) {
    let AttnShape { h, dqk, dv, width, q_off, big_n, alpha, inv_n } = *s;
    let attn = h * dv;
    out.fill(0.0);
    for r in 0..n - start {
        let i = start + r;
        let bucket_row = &bucket[r * n..r * n + i + 1];
        // rab[i, j] = pos_w[N-1 + j - i] + ts_w[bucket]: shared by all heads.
        let pos = &layer.pos_w[big_n - 1 - i..big_n];
        for ((b, p), k) in bias.iter_mut().zip(pos).zip(bucket_row) {
            *b = p + layer.ts_w[*k as usize];
        }
        let q_row = &uvqk[r * width + q_off..r * width + q_off + h * dqk];
        let o_row = &mut out[r * attn..(r + 1) * attn];
        for head in 0..h {
            let q = &q_row[head * dqk..(head + 1) * dqk];
            let o = &mut o_row[head * dv..(head + 1) * dv];
            for (j, b) in bias[..=i].iter().enumerate() {
                let k = &cache.keys[j * h * dqk + head * dqk..j * h * dqk + (head + 1) * dqk];
                let a = silu(alpha * dot(q, k) + b) * inv_n;
                axpy(o, a, &cache.values[j * attn + head * dv..j * attn + (head + 1) * dv]);
            }
        }
    }
}

/// Runs every layer over the rows `start..n` of `events` (the sorted kept
/// window). On entry `kv[l]` holds the keys and values of rows `0..start`; on
/// exit of rows `0..n`. Returns the L2-normalised output of the newest row.
pub(crate) fn forward(
    model: &Model,
    events: &[Event],
    query_time: i64,
    start: usize,
    kv: &mut [LayerKv],
) -> Vec<f32> {
    let c = &model.config;
    let n = events.len();
    debug_assert!(start < n && n <= c.max_seq_len && kv.len() == c.num_layers);
    let (d, h, dqk, dv) = (c.d_model, c.num_heads, c.d_qk, c.d_v);
    let (width, attn) = (c.uvqk_width(), c.attn_width());
    let (q_off, k_off, v_off) = (2 * attn, 2 * attn + h * dqk, attn);
    let rows = n - start;
    let big_n = c.attn_normalizer;
    let inv_n = 1.0 / big_n as f32;

    let mut x = embed(model, events, start);
    let bucket = buckets(c, events, query_time, start);
    let mut normed = vec![0.0f32; rows * d];
    let mut uvqk = vec![0.0f32; rows * width];
    let mut out = vec![0.0f32; rows * attn];
    let mut bias = vec![0.0f32; n];

    for (layer, cache) in model.weights.layers.iter().zip(kv.iter_mut()) {
        normed.copy_from_slice(&x);
        normed.chunks_exact_mut(d).for_each(layer_norm);
        matmul(&mut uvqk, &normed, &layer.uvqk, rows, d, width, false);
        uvqk.iter_mut().for_each(|v| *v = silu(*v));
        for row in uvqk.chunks_exact(width) {
            cache.keys.extend_from_slice(&row[k_off..k_off + h * dqk]);
            cache.values.extend_from_slice(&row[v_off..v_off + attn]);
        }

        let shapes = AttnShape { h, dqk, dv, width, q_off, big_n, alpha: c.alpha, inv_n };
        attention(&shapes, layer, cache, &uvqk, &bucket, start, n, &mut bias, &mut out);
        // y = u ⊙ LN(O), then x += y · W_o + b_o.
        for (o_row, uvqk_row) in out.chunks_exact_mut(attn).zip(uvqk.chunks_exact(width)) {
            layer_norm(o_row);
            for (o, u) in o_row.iter_mut().zip(&uvqk_row[..attn]) {
                *o *= u;
            }
        }
        matmul(&mut x, &out, &layer.o_w, rows, attn, d, true);
        for row in x.chunks_exact_mut(d) {
            for (xi, b) in row.iter_mut().zip(&layer.o_b) {
                *xi += b;
            }
        }
    }
    let mut last = x[(rows - 1) * d..].to_vec();
    let norm = dot(&last, &last).sqrt().max(NORM_FLOOR);
    last.iter_mut().for_each(|v| *v /= norm);
    last
}
