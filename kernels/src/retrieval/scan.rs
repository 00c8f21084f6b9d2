//! The scan kernels: approximate scores of one block of 16 rows for up to
//! four queries at a time, and the rows that reach each query's threshold.
//!
//! A block is `groups` 64-byte lines; line g holds dimensions 4g..4g+4 of
//! the 16 rows (row r at bytes 4r..4r+4) as `code + 128` (u8), so that one
//! AVX-512 VNNI `vpdpbusd` multiplies 16 rows × 4 dimensions by four query
//! codes (s8) broadcast, accumulating exact int32 sums. Every path computes
//! the same integers and then the same f32 operations in the same order,
//! `A = f32(dot) · (t · s_row)`, so the approximations are bit-identical
//! whichever path runs (the bound assumes exactly these three roundings).

use super::bound::QueryCodes;

/// Rows per block.
pub(crate) const BLOCK_ROWS: usize = 16;

/// One 64-byte line of a block (aligned: one cache line, one AVX-512 load).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub [u8; 64]);

/// A line whose 16 rows all have code 0 in its 4 dimensions.
pub(crate) const ZERO_LINE: Line = Line([128; 64]);

/// Environment variable that keeps the scan on the AVX2 kernel when set to
/// `1` even where AVX-512 VNNI is present (side-by-side measurements).
pub const AVX2_ENV: &str = "EDGEREC_RETRIEVAL_AVX2";

/// Which kernel runs the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanPath {
    /// AVX-512F + AVX-512 VNNI: one `vpdpbusd` per line and query.
    Avx512Vnni,
    /// AVX2: lines widened to i16 and multiplied by `vpmaddwd`.
    Avx2,
    /// Plain loops.
    Portable,
}

/// The fastest path this CPU supports, unless the portable kernels are
/// forced (`EDGEREC_PORTABLE_KERNELS=1` or `set_portable(true)`).
pub(crate) fn scan_path() -> ScanPath {
    if !crate::microkernel::simd_in_use() {
        return ScanPath::Portable;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let at_most_avx2 = std::env::var_os(AVX2_ENV).is_some_and(|v| v == "1");
        if !at_most_avx2 && std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni") {
            return ScanPath::Avx512Vnni;
        }
        if std::is_x86_feature_detected!("avx2") {
            return ScanPath::Avx2;
        }
    }
    ScanPath::Portable
}

/// The approximations of one block's 16 rows for `Q` queries (written to
/// `out`) and, per query, the bit mask of rows with `A ≥ thresholds[i]`.
///
/// # Panics
/// If a query's packed codes are shorter than `lines`.
#[inline]
pub(crate) fn block_masks<const Q: usize>(
    path: ScanPath,
    lines: &[Line],
    scales: &[f32; BLOCK_ROWS],
    queries: [&QueryCodes; Q],
    thresholds: [f32; Q],
    out: &mut [[f32; BLOCK_ROWS]; Q],
) -> [u16; Q] {
    for q in &queries {
        assert!(
            q.packed.len() >= lines.len() && q.repeated.len() >= lines.len(),
            "query codes shorter than the table's groups"
        );
    }
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: scan_path() chose this path only after detecting AVX-512F
        // and AVX-512 VNNI; every query has ≥ lines.len() packed codes (asserted).
        ScanPath::Avx512Vnni => unsafe { block_masks_vnni(lines, scales, queries, thresholds, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: scan_path() chose this path only after detecting AVX2.
        ScanPath::Avx2 => unsafe { block_masks_avx2(lines, scales, queries, thresholds, out) },
        _ => block_masks_portable(lines, scales, queries, thresholds, out),
    }
}

/// The AVX2 kernel: each line's 64 bytes widened to four vectors of 16 i16
/// (4 rows × 4 dimensions), `vpmaddwd` by the query's codes repeated (i16,
/// products summed in pairs: exact, |sum| ≤ 2·255·127), pairs of partial
/// sums added at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn block_masks_avx2<const Q: usize>(
    lines: &[Line],
    scales: &[f32; BLOCK_ROWS],
    queries: [&QueryCodes; Q],
    thresholds: [f32; Q],
    out: &mut [[f32; BLOCK_ROWS]; Q],
) -> [u16; Q] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_si256(); 4]; Q];
    for (g, line) in lines.iter().enumerate() {
        // SAFETY: 4 × 16 bytes inside the 64-byte line.
        let wide: [__m256i; 4] = std::array::from_fn(|j| unsafe {
            _mm256_cvtepu8_epi16(_mm_loadu_si128(line.0.as_ptr().add(16 * j).cast()))
        });
        for i in 0..Q {
            // SAFETY: g < lines.len() ≤ packed.len() = repeated.len() (asserted by the caller).
            let codes = unsafe { _mm256_loadu_si256(queries[i].repeated.get_unchecked(g).as_ptr().cast()) };
            for j in 0..4 {
                acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(wide[j], codes));
            }
        }
    }
    let mut masks = [0u16; Q];
    for i in 0..Q {
        let ts = _mm256_set1_ps(queries[i].scale);
        let correction = _mm256_set1_epi32(queries[i].correction);
        let threshold = _mm256_set1_ps(thresholds[i]);
        for half in 0..2 {
            // acc[i][2h] holds rows 8h..8h+4, acc[i][2h+1] rows 8h+4..8h+8,
            // each as (dims 0–1, dims 2–3) pairs; hadd + permute restore row order.
            let sums = _mm256_hadd_epi32(acc[i][2 * half], acc[i][2 * half + 1]);
            let dot = _mm256_sub_epi32(_mm256_permute4x64_epi64::<0b11_01_10_00>(sums), correction);
            // SAFETY: 8 f32 inside the [f32; 16].
            let s = unsafe { _mm256_loadu_ps(scales.as_ptr().add(8 * half)) };
            let approx = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(ts, s));
            // SAFETY: 8 f32 into the [f32; 16].
            unsafe { _mm256_storeu_ps(out[i].as_mut_ptr().add(8 * half), approx) };
            let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(approx, threshold)) as u16;
            masks[i] |= m << (8 * half);
        }
    }
    masks
}

#[inline(always)]
fn block_masks_portable<const Q: usize>(
    lines: &[Line],
    scales: &[f32; BLOCK_ROWS],
    queries: [&QueryCodes; Q],
    thresholds: [f32; Q],
    out: &mut [[f32; BLOCK_ROWS]; Q],
) -> [u16; Q] {
    let mut masks = [0u16; Q];
    for i in 0..Q {
        let q = queries[i];
        let mut acc = [0i32; BLOCK_ROWS];
        for (line, &packed) in lines.iter().zip(&q.packed) {
            let codes = packed.to_le_bytes().map(|b| i32::from(b as i8));
            for (r, a) in acc.iter_mut().enumerate() {
                let row = &line.0[4 * r..4 * r + 4];
                *a += i32::from(row[0]) * codes[0]
                    + i32::from(row[1]) * codes[1]
                    + i32::from(row[2]) * codes[2]
                    + i32::from(row[3]) * codes[3];
            }
        }
        for r in 0..BLOCK_ROWS {
            let approx = (acc[r] - q.correction) as f32 * (q.scale * scales[r]);
            out[i][r] = approx;
            masks[i] |= u16::from(approx >= thresholds[i]) << r;
        }
    }
    masks
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
fn block_masks_vnni<const Q: usize>(
    lines: &[Line],
    scales: &[f32; BLOCK_ROWS],
    queries: [&QueryCodes; Q],
    thresholds: [f32; Q],
    out: &mut [[f32; BLOCK_ROWS]; Q],
) -> [u16; Q] {
    use std::arch::x86_64::*;
    // Two accumulators per query (even and odd lines): a chain of one
    // `vpdpbusd` per line would wait on its latency when Q is small.
    let mut even = [_mm512_setzero_si512(); Q];
    let mut odd = [_mm512_setzero_si512(); Q];
    let mut pairs = lines.chunks_exact(2);
    let mut g = 0;
    for pair in &mut pairs {
        // SAFETY: a Line is 64 bytes, 64-byte aligned.
        let (v0, v1) =
            unsafe { (_mm512_load_si512(pair[0].0.as_ptr().cast()), _mm512_load_si512(pair[1].0.as_ptr().cast())) };
        for i in 0..Q {
            // SAFETY: g + 1 < lines.len() ≤ packed.len() (asserted by the caller).
            let (c0, c1) = unsafe { (*queries[i].packed.get_unchecked(g), *queries[i].packed.get_unchecked(g + 1)) };
            even[i] = _mm512_dpbusd_epi32(even[i], v0, _mm512_set1_epi32(c0));
            odd[i] = _mm512_dpbusd_epi32(odd[i], v1, _mm512_set1_epi32(c1));
        }
        g += 2;
    }
    if let [last] = pairs.remainder() {
        // SAFETY: as above.
        let v = unsafe { _mm512_load_si512(last.0.as_ptr().cast()) };
        for i in 0..Q {
            // SAFETY: g < lines.len() ≤ packed.len().
            let c = unsafe { *queries[i].packed.get_unchecked(g) };
            even[i] = _mm512_dpbusd_epi32(even[i], v, _mm512_set1_epi32(c));
        }
    }
    // Integer sums: the same value whatever the split.
    let acc: [__m512i; Q] = std::array::from_fn(|i| _mm512_add_epi32(even[i], odd[i]));
    // SAFETY: 16 f32 in a [f32; 16].
    let s = unsafe { _mm512_loadu_ps(scales.as_ptr()) };
    let mut masks = [0u16; Q];
    for i in 0..Q {
        let dot = _mm512_sub_epi32(acc[i], _mm512_set1_epi32(queries[i].correction));
        let ts = _mm512_mul_ps(_mm512_set1_ps(queries[i].scale), s);
        let approx = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), ts);
        // SAFETY: 16 f32 into a [f32; 16].
        unsafe { _mm512_storeu_ps(out[i].as_mut_ptr(), approx) };
        masks[i] = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(approx, _mm512_set1_ps(thresholds[i]));
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_query(seed: u32, groups: usize) -> QueryCodes {
        let packed: Vec<i32> = (0..groups as u32).map(|g| (g.wrapping_mul(2_654_435_761) ^ seed) as i32).collect();
        let correction = 128 * packed.iter().flat_map(|p| p.to_le_bytes()).map(|b| i32::from(b as i8)).sum::<i32>();
        let repeated = super::super::bound::repeat_codes(&packed);
        QueryCodes { packed, repeated, correction, scale: 0.003 + seed as f32 * 1e-4, twice_bound: 0.0 }
    }

    /// Every path the CPU supports gives bit-identical approximations and masks.
    #[test]
    fn paths_agree_bit_for_bit() {
        let groups = 13;
        let lines: Vec<Line> =
            (0..groups).map(|g| Line(std::array::from_fn(|i| ((i * 37 + g * 101) % 255 + 1) as u8))).collect();
        let scales: [f32; BLOCK_ROWS] = std::array::from_fn(|r| 0.001 * (r as f32 + 1.0));
        let (q0, q1, q2) = (random_query(1, groups), random_query(7, groups), random_query(99, groups));
        let thresholds = [0.0f32, -0.5, 0.5];
        let mut want = [[0.0f32; BLOCK_ROWS]; 3];
        let want_masks = block_masks(ScanPath::Portable, &lines, &scales, [&q0, &q1, &q2], thresholds, &mut want);
        // The portable integers against a straight sum.
        for (i, q) in [&q0, &q1, &q2].into_iter().enumerate() {
            for r in 0..BLOCK_ROWS {
                let mut dot = 0i64;
                for (g, line) in lines.iter().enumerate() {
                    for b in 0..4 {
                        let code = i64::from(line.0[4 * r + b]) - 128;
                        dot += code * i64::from(q.packed[g].to_le_bytes()[b] as i8);
                    }
                }
                assert_eq!(want[i][r], dot as f32 * (q.scale * scales[r]));
            }
        }
        assert!(want_masks.iter().any(|&m| m != 0 && m != u16::MAX));
        for path in [ScanPath::Avx2, ScanPath::Avx512Vnni] {
            #[cfg(target_arch = "x86_64")]
            {
                let supported = match path {
                    ScanPath::Avx2 => std::is_x86_feature_detected!("avx2"),
                    _ => std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni"),
                };
                if !supported {
                    continue;
                }
                let mut got = [[0.0f32; BLOCK_ROWS]; 3];
                let masks = block_masks(path, &lines, &scales, [&q0, &q1, &q2], thresholds, &mut got);
                assert_eq!(masks, want_masks, "{path:?}");
                assert_eq!(got.map(|r| r.map(f32::to_bits)), want.map(|r| r.map(f32::to_bits)), "{path:?}");
            }
        }
    }
}
