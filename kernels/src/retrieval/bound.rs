//! Quantisation of rows and queries, and the rigorous bound on
//! `|S − A|` between the exact path's f32 cosine `S` and the quantised
//! approximation `A` (the derivation is in the crate README, section
//! "Exact retrieval from a quantised table").

use crate::score::NORM_FLOOR;

/// Unit roundoff of f32 (round to nearest): 2⁻²⁴.
const UNIT_ROUNDOFF: f64 = 1.0 / 16_777_216.0;
/// Smallest positive f32 (subnormal) 2⁻¹⁴⁹: every underflow in an f32
/// product or quotient is off by at most half of it.
const SMALLEST_SUBNORMAL: f64 = 1.401_298_464_324_817e-45;
/// Relative slack on every f64 quantity of the bound: f64 rounds at 2⁻⁵³
/// per operation, a few dozen operations deep at most, far below this.
const F64_SLACK: f64 = 1e-9;
/// Largest coded magnitude (symmetric int8, −128 unused).
const CODE_MAX: f64 = 127.0;
/// Rows with ‖x‖ above this are re-ranked unconditionally instead of bounded
/// (their f32 sum of squares may overflow).
const ROW_NORM_LIMIT: f64 = 1.152_921_504_606_847e18; // 2^60
/// A query's bound is only used while ‖q‖·max‖x‖ stays far below f32::MAX,
/// so no partial sum of the exact path can overflow.
const PRODUCT_LIMIT: f64 = 1.267_650_600_228_229_4e30; // 2^100

/// `γₙ = n·u / (1 − n·u)`: the relative error bound of n chained f32 roundings.
pub(crate) fn gamma(n: usize) -> f64 {
    let nu = n as f64 * UNIT_ROUNDOFF;
    nu / (1.0 - nu)
}

/// What the bound needs to know about one quantised row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RowBound {
    /// `‖y − ŷ‖ + ρ·γ_{D+1}`: quantisation error of the normalised row plus
    /// the exact path's own f32 rounding per unit of ‖q‖.
    pub per_query_norm: f64,
    /// `‖ŷ‖`, the norm of the dequantised normalised row.
    pub coded_norm: f64,
    /// `‖x‖` (for the overflow guard).
    pub norm: f64,
}

/// A row quantised: `ŷ = scale · codes`, with `y = x / max(norm, 1e-6)`.
/// `bound` is `None` for a row outside the bound's domain (a non-finite
/// value, or a norm too large for f32 squares): such a row is always re-ranked.
pub(crate) struct RowCodes {
    pub scale: f32,
    pub bound: Option<RowBound>,
}

/// Quantises `x` (whose exact-path norm is `norm`) into `codes` (one per
/// dimension, in −127..=127).
pub(crate) fn quantize_row(x: &[f32], norm: f32, codes: &mut [i8]) -> RowCodes {
    codes.fill(0);
    let unbounded = RowCodes { scale: 0.0, bound: None };
    if !norm.is_finite() || x.iter().any(|v| !v.is_finite()) {
        return unbounded;
    }
    let true_norm = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
    if true_norm > ROW_NORM_LIMIT {
        return unbounded;
    }
    let divisor = f64::from(norm.max(NORM_FLOOR));
    // ρ = ‖x‖ / N: the real norm of the row the exact path divides by N.
    let rho = true_norm / divisor * (1.0 + F64_SLACK);
    let largest = x.iter().map(|&v| (f64::from(v) / divisor).abs()).fold(0.0, f64::max);
    let scale = round_up_f32(largest / CODE_MAX);
    let (mut err2, mut coded2) = (0.0f64, 0.0f64);
    for (&v, c) in x.iter().zip(codes.iter_mut()) {
        let y = f64::from(v) / divisor;
        let code = if scale > 0.0 { (y / f64::from(scale)).round().clamp(-CODE_MAX, CODE_MAX) } else { 0.0 };
        *c = code as i8;
        // scale·code is exact in f64 (24 + 7 significant bits).
        let coded = f64::from(scale) * code;
        err2 += (y - coded) * (y - coded);
        coded2 += coded * coded;
    }
    // The f64 quotient y carries a relative error ≤ 2⁻⁵³, i.e. ≤ 2⁻⁵³·ρ in
    // norm: the 1e-15·ρ term covers it, F64_SLACK the sums and square roots.
    let quant_err = err2.sqrt() * (1.0 + F64_SLACK) + 1e-15 * rho;
    let per_query_norm = quant_err + rho * gamma(x.len() + 1);
    RowCodes {
        scale,
        bound: Some(RowBound { per_query_norm, coded_norm: coded2.sqrt() * (1.0 + F64_SLACK), norm: true_norm }),
    }
}

/// The smallest f32 ≥ `v` (v ≥ 0 and finite).
fn round_up_f32(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) < v { f.next_up() } else { f }
}

/// The table-wide maxima the per-query bound is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct TableBound {
    /// max over bounded rows of [`RowBound::per_query_norm`].
    pub per_query_norm: f64,
    /// max over bounded rows of ‖ŷ‖.
    pub coded_norm: f64,
    /// max over bounded rows of ‖x‖.
    pub norm: f64,
}

impl TableBound {
    /// Widens the maxima to cover `row` (maxima never shrink: a stale
    /// maximum is still an upper bound).
    pub fn include(&mut self, row: &RowBound) {
        self.per_query_norm = self.per_query_norm.max(row.per_query_norm);
        self.coded_norm = self.coded_norm.max(row.coded_norm);
        self.norm = self.norm.max(row.norm);
    }
}

/// A query quantised for the scan.
pub(crate) struct QueryCodes {
    /// Four codes per i32 (dimensions 4g..4g+4, little-endian bytes,
    /// padding 0), the layout of one group of a table block.
    pub packed: Vec<i32>,
    /// The same four codes per group as i16, repeated for 4 rows: the
    /// operand of the AVX2 kernel's `vpmaddwd`.
    pub repeated: Vec<[i16; 16]>,
    /// `128 · Σ codes`: the table stores `code + 128` as u8, so the integer
    /// dot product the kernels form exceeds the true one by this.
    pub correction: i32,
    /// The query's scale `t` (q̂ = t · codes).
    pub scale: f32,
    /// `2W`: twice the bound on |S − A| for every bounded row.
    pub twice_bound: f64,
}

/// Quantises `q` against a table of bound `table`; `None` when the bound
/// does not apply (a non-finite value, or norms so large that the exact
/// path could overflow): the caller then re-ranks every row exactly.
pub(crate) fn quantize_query(q: &[f32], groups: usize, table: &TableBound) -> Option<QueryCodes> {
    if q.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let q_norm = q.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt() * (1.0 + F64_SLACK);
    if q_norm > ROW_NORM_LIMIT || q_norm * table.norm > PRODUCT_LIMIT {
        return None;
    }
    let largest = q.iter().map(|&v| f64::from(v).abs()).fold(0.0, f64::max);
    let scale = round_up_f32(largest / CODE_MAX);
    let mut codes = vec![0i8; groups * 4];
    let (mut err2, mut coded2) = (0.0f64, 0.0f64);
    for (&v, c) in q.iter().zip(codes.iter_mut()) {
        let code = if scale > 0.0 { (f64::from(v) / f64::from(scale)).round().clamp(-CODE_MAX, CODE_MAX) } else { 0.0 };
        *c = code as i8;
        // Both f64(v) and scale·code are exact; their difference is exact
        // too unless one is far below the other, and F64_SLACK covers that.
        let coded = f64::from(scale) * code;
        err2 += (f64::from(v) - coded) * (f64::from(v) - coded);
        coded2 += coded * coded;
    }
    let query_err = err2.sqrt() * (1.0 + F64_SLACK);
    let coded_norm = coded2.sqrt() * (1.0 + F64_SLACK);
    let underflow = underflow_term(q.len());
    let bound = (q_norm * table.per_query_norm
        + query_err * table.coded_norm
        + gamma(3) * coded_norm * table.coded_norm
        + underflow)
        * (1.0 + F64_SLACK);
    let packed: Vec<i32> =
        codes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8])).collect();
    let repeated = repeat_codes(&packed);
    let correction = 128 * codes.iter().map(|&c| i32::from(c)).sum::<i32>();
    Some(QueryCodes { packed, repeated, correction, scale, twice_bound: 2.0 * bound })
}

/// Underflow: the exact path's D products and one quotient (divided by
/// N ≥ 1e-6), and the approximation's t·s (times |dot| ≤ D·127²), each off
/// by at most 2⁻¹⁵⁰ absolutely; generously covered.
fn underflow_term(dim: usize) -> f64 {
    (dim as f64 + 2.0) * SMALLEST_SUBNORMAL * 4e6
}

/// Terms of [`query_bound_terms`].
pub(crate) const QUERY_BOUND_TERMS: usize = 9;

/// What [`quantize_query`] uses besides the query, in the order a device
/// copy of it reads them (kernels/src/cuda/score_topk.cu `quant_query`):
/// the table's per-query-norm, coded-norm and norm maxima, γ₃, the
/// underflow term for `dim` values, the f64 slack, the row-norm and product
/// limits, and the largest code.
pub(crate) fn query_bound_terms(table: &TableBound, dim: usize) -> [f64; QUERY_BOUND_TERMS] {
    [
        table.per_query_norm,
        table.coded_norm,
        table.norm,
        gamma(3),
        underflow_term(dim),
        F64_SLACK,
        ROW_NORM_LIMIT,
        PRODUCT_LIMIT,
        CODE_MAX,
    ]
}

/// Each group's four codes (packed s8) as i16, four times over.
pub(crate) fn repeat_codes(packed: &[i32]) -> Vec<[i16; 16]> {
    packed.iter().map(|p| std::array::from_fn(|i| i16::from(p.to_le_bytes()[i % 4] as i8))).collect()
}

/// The largest f32 ≤ `kth − twice_bound` (computed in f64, rounded, then
/// stepped down once so that the f32 is never above the real value).
pub(crate) fn keep_threshold(kth: f32, twice_bound: f64) -> f32 {
    ((f64::from(kth) - twice_bound) as f32).next_down()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_codes_reconstruct_within_their_stated_error() {
        let x: Vec<f32> = (0..37).map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.1).collect();
        let norm = crate::model::item_norm(&x);
        let mut codes = vec![0i8; x.len()];
        let rc = quantize_row(&x, norm, &mut codes);
        let b = rc.bound.expect("a finite row is bounded");
        let err: f64 = x
            .iter()
            .zip(&codes)
            .map(|(&v, &c)| (f64::from(v) / f64::from(norm) - f64::from(rc.scale) * f64::from(c)).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(err <= b.per_query_norm, "{err} > {}", b.per_query_norm);
        // The step is max|y|/127: the error is at most half a step per dimension.
        assert!(err <= 0.5 * f64::from(rc.scale) * (x.len() as f64).sqrt());
        assert!(codes.iter().any(|&c| c == 127 || c == -127));
    }

    #[test]
    fn non_finite_and_huge_rows_are_unbounded() {
        let mut codes = vec![0i8; 3];
        assert!(quantize_row(&[1.0, f32::NAN, 0.0], 1.0, &mut codes).bound.is_none());
        assert!(quantize_row(&[1e30, 0.0, 0.0], f32::INFINITY, &mut codes).bound.is_none());
        let zero = quantize_row(&[0.0, 0.0, 0.0], 0.0, &mut codes);
        assert_eq!(zero.scale, 0.0);
        assert_eq!(zero.bound.map(|b| b.coded_norm), Some(0.0));
    }

    #[test]
    fn keep_threshold_is_at_or_below_the_real_value() {
        for (kth, w) in [(0.5f32, 0.01f64), (1e-30, 1e-30), (0.0, 0.0), (-3.0, 1e-7), (7.0, 7.0)] {
            let t = keep_threshold(kth, w);
            assert!(f64::from(t) <= f64::from(kth) - w);
        }
    }
}
