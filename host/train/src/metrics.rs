//! Ranking metrics of the protocol: HR@K, NDCG@K (K = 10, 50, 200) and MRR,
//! from 1-based ranks averaged over users. A target that cannot be ranked
//! (excluded because it is in the user's kept window) counts as a miss.

use serde::{Deserialize, Serialize};

/// The cut-offs reported.
pub const CUTOFFS: [usize; 3] = [10, 50, 200];

/// Averages over all evaluated users.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Users evaluated.
    pub users: usize,
    /// Targets that were in the user's kept window, so excluded from ranking (counted as misses).
    pub unrankable: usize,
    /// HR@10.
    pub hr_10: f64,
    /// HR@50.
    pub hr_50: f64,
    /// HR@200.
    pub hr_200: f64,
    /// NDCG@10.
    pub ndcg_10: f64,
    /// NDCG@50.
    pub ndcg_50: f64,
    /// NDCG@200.
    pub ndcg_200: f64,
    /// Mean reciprocal rank over the full catalog.
    pub mrr: f64,
}

/// Accumulates ranks; `finish` averages.
#[derive(Clone, Debug, Default)]
pub struct MetricsAccumulator {
    sums: [f64; 7],
    users: usize,
    unrankable: usize,
}

impl MetricsAccumulator {
    /// Adds one user's 1-based rank (`None` = the target could not be ranked).
    pub fn add(&mut self, rank: Option<usize>) {
        self.users += 1;
        let Some(rank) = rank else {
            self.unrankable += 1;
            return;
        };
        assert!(rank >= 1, "ranks are 1-based");
        for (i, k) in CUTOFFS.iter().enumerate() {
            if rank <= *k {
                self.sums[i] += 1.0;
                self.sums[3 + i] += 1.0 / ((rank + 1) as f64).log2();
            }
        }
        self.sums[6] += 1.0 / rank as f64;
    }

    /// Averages (all zeros when no user was added).
    pub fn finish(&self) -> Metrics {
        let n = self.users.max(1) as f64;
        let s = self.sums.map(|x| x / n);
        Metrics {
            users: self.users,
            unrankable: self.unrankable,
            hr_10: s[0],
            hr_50: s[1],
            hr_200: s[2],
            ndcg_10: s[3],
            ndcg_50: s[4],
            ndcg_200: s[5],
            mrr: s[6],
        }
    }
}
