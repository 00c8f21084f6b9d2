//! The fallback where AVX2/FMA is absent: products through the `gemm`
//! crate, attention as plain row loops.

use super::{Attn, Epilogue, Mat, dot, silu};

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
            let dot = dot(q, k);
            let bias = a.pos[a.big_n - 1 + j - i] + a.ts_w[a.buckets[r * ldn + j] as usize];
            let w = silu(a.alpha * dot + bias) * inv_n;
            let v = &a.values.data[j * a.values.ld..j * a.values.ld + a.d_v];
            o.iter_mut().zip(v).for_each(|(y, x)| *y += w * x);
        }
    }
}
