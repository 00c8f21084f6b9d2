//! The log-time bucket as a threshold table, so that the attention kernel
//! computes each bucket from raw timestamps and still lands, bit for bit, in
//! the bucket of the CPU engine's float32 [`time_bucket`].
//!
//! `time_bucket` is a non-decreasing step function of the gap |Δ| (the f32
//! conversion, `ln`, the division and the truncation are all monotone), so it
//! is fully described by the smallest gap of every bucket 1..=NB. The kernel
//! (`att_bucket` in hstu_attention.cu) counts the thresholds ≤ gap.

use crate::config::ModelConfig;
use crate::history::time_bucket;

/// Largest gap a pair of i64 timestamps can have: |i64::MIN| = 2^63.
const MAX_GAP: u64 = 1 << 63;

/// The CPU bucket of a gap given as an unsigned magnitude.
fn bucket_of_gap(config: &ModelConfig, gap: u64) -> usize {
    // Every gap up to 2^63 is the unsigned_abs of some i64 delta.
    let delta = if gap == MAX_GAP { i64::MIN } else { gap as i64 };
    time_bucket(config, delta)
}

/// `thresholds[k-1]` = the smallest gap whose bucket is ≥ k, for k in
/// 1..=num_time_buckets; `u64::MAX` (never reached by an i64 gap) when no
/// gap reaches bucket k.
pub(crate) fn bucket_thresholds(config: &ModelConfig) -> Vec<u64> {
    (1..=config.num_time_buckets)
        .map(|k| {
            if bucket_of_gap(config, MAX_GAP) < k {
                return u64::MAX;
            }
            // Invariant: bucket(hi) ≥ k; bucket(lo - 1) < k or lo == 0.
            let (mut lo, mut hi) = (0u64, MAX_GAP);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if bucket_of_gap(config, mid) >= k {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo
        })
        .collect()
}

/// The kernel's bucket: the number of thresholds ≤ `gap` (binary search,
/// the same loop as `att_bucket` in hstu_attention.cu).
#[cfg(test)]
pub(crate) fn bucket_from_thresholds(thresholds: &[u64], gap: u64) -> usize {
    let (mut lo, mut hi) = (0usize, thresholds.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if thresholds[mid] <= gap {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn check(config: &ModelConfig, delta: i64, thresholds: &[u64]) {
        let want = time_bucket(config, delta);
        let got = bucket_from_thresholds(thresholds, delta.unsigned_abs());
        assert_eq!(got, want, "delta {delta}");
    }

    #[test]
    fn thresholds_reproduce_the_f32_bucket_everywhere() {
        let mut configs = vec![ModelConfig::ml_1m(10), ModelConfig::books(10)];
        let mut odd = ModelConfig::ml_1m(10);
        odd.num_time_buckets = 40;
        odd.time_bucket_div = 0.7;
        configs.push(odd);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for config in &configs {
            let thr = bucket_thresholds(config);
            assert_eq!(thr.len(), config.num_time_buckets);
            assert!(thr.windows(2).all(|w| w[0] <= w[1]), "thresholds must be sorted");
            // Every boundary and its neighbours, both signs.
            for &t in thr.iter().filter(|&&t| t < MAX_GAP) {
                for g in [t.saturating_sub(1), t, t + 1] {
                    let g = g.min(i64::MAX as u64) as i64;
                    check(config, g, &thr);
                    check(config, -g, &thr);
                }
            }
            // Small gaps exhaustively, then random gaps on a log scale.
            for g in -5000i64..5000 {
                check(config, g, &thr);
            }
            for _ in 0..20_000 {
                let bits = rng.random_range(0..63);
                let g: i64 = rng.random_range(0..=(1i64 << bits));
                check(config, if rng.random() { g } else { -g }, &thr);
            }
            check(config, i64::MAX, &thr);
            check(config, i64::MIN, &thr);
        }
    }
}
