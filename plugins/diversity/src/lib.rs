//! `diversity`: at most `max_per_group` items per category in the top `top`,
//! after an optional MMR-style re-rank by category.
//!
//! Config (JSON, all optional):
//! `{"attribute": "category", "max_per_group": 2, "top": null, "lambda": null}`.
//! `top` defaults to the request's `k`. With `lambda` in [0, 1], the top `top`
//! positions are first filled greedily by maximal marginal relevance:
//! `lambda * score - (1 - lambda) * [the item's category is already placed]`
//! (a categorical similarity), the rest keep their order. Then the cap moves
//! items over `max_per_group` per category to just after the top window.
//! Items without a category are never capped or penalised.

use edgerec_sdk::{Candidates, Context, Error, Output, Plugin, Ranking, StringColumn, export_plugin};
use serde::Deserialize;

/// The plugin.
pub struct Diversity;

/// The stage config.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The category attribute (a string column).
    pub attribute: String,
    /// At most this many items per category in the top window.
    pub max_per_group: usize,
    /// The window; default the request's `k`.
    pub top: Option<usize>,
    /// MMR trade-off between relevance (1) and diversity (0); none = no MMR.
    pub lambda: Option<f32>,
}

impl Default for Config {
    fn default() -> Self {
        Config { attribute: "category".into(), max_per_group: 2, top: None, lambda: None }
    }
}

impl Plugin for Diversity {
    type Config = Config;

    fn columns(config: &Config) -> Result<Vec<String>, Error> {
        if config.max_per_group == 0 {
            return Err("`max_per_group` must be at least 1".into());
        }
        if config.lambda.is_some_and(|l| !(0.0..=1.0).contains(&l)) {
            return Err("`lambda` must be within [0, 1]".into());
        }
        Ok(vec![config.attribute.clone()])
    }

    fn run(ctx: &Context, config: &Config, cands: &Candidates) -> Result<Output, Error> {
        let top = config.top.unwrap_or(ctx.k() as usize);
        let mut ranking = Ranking::new(cands);
        ranking.sort_by_score();
        let Some(category) = cands.string(&config.attribute) else {
            // No category column: nothing to diversify on, keep the ranking.
            return Ok(ranking.into_output());
        };
        if let Some(lambda) = config.lambda {
            ranking = mmr(ranking, &category, top, lambda);
        }
        ranking.cap_per_group(top, config.max_per_group, |i| category.code(i));
        Ok(ranking.into_output())
    }
}

/// Greedy MMR over the first `top` positions with a 0/1 "same category already
/// placed" similarity; the entries after the window keep their score order.
fn mmr(ranking: Ranking, category: &StringColumn<'_>, top: usize, lambda: f32) -> Ranking {
    let mut pool: Vec<_> = ranking.entries().to_vec();
    let mut placed_categories: Vec<u32> = Vec::new();
    let mut order: Vec<u32> = Vec::with_capacity(pool.len());
    while order.len() < top && !pool.is_empty() {
        let value = |e: &edgerec_sdk::Entry| {
            let seen = category.code(e.index).is_some_and(|c| placed_categories.contains(&c));
            lambda * e.score - (1.0 - lambda) * f32::from(u8::from(seen))
        };
        // The first maximum wins, so ties keep score order.
        let mut best = 0;
        for (at, e) in pool.iter().enumerate().skip(1) {
            if value(e) > value(&pool[best]) {
                best = at;
            }
        }
        let chosen = pool.remove(best);
        if let Some(c) = category.code(chosen.index) {
            placed_categories.push(c);
        }
        order.push(chosen.index);
    }
    order.extend(pool.iter().map(|e| e.index));
    let mut position = std::collections::HashMap::with_capacity(order.len());
    for (at, &index) in order.iter().enumerate() {
        position.insert(index, at);
    }
    let mut reordered = ranking;
    reordered.sort_by_key(|e| position[&e.index]);
    reordered
}

export_plugin!(Diversity, name = "diversity");

#[cfg(test)]
mod tests {
    use super::*;

    fn cands() -> Candidates {
        Candidates::new((0..6).collect(), vec![0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
            .with_string("category", vec![Some("a"), Some("a"), Some("a"), Some("b"), None, Some("b")])
    }

    #[test]
    fn caps_per_category_in_top_k() {
        let config = Config { max_per_group: 1, top: Some(3), ..Config::default() };
        let out = Diversity::run(&Context::new("t"), &config, &cands()).unwrap();
        assert_eq!(out.order(), &[0, 3, 4, 1, 2, 5]);
    }

    #[test]
    fn top_defaults_to_k_and_input_order_does_not_matter() {
        let shuffled = cands().select(&[5, 2, 0, 4, 1, 3]);
        let config = Config { max_per_group: 2, ..Config::default() };
        let out = Diversity::run(&Context::new("t").with_k(4), &config, &shuffled).unwrap();
        let ids: Vec<u64> = out.order().iter().map(|&i| shuffled.ids()[i as usize]).collect();
        assert_eq!(ids, vec![0, 1, 3, 4, 2, 5]);
    }

    #[test]
    fn mmr_alternates_categories_when_diversity_dominates() {
        let config = Config { max_per_group: 10, top: Some(4), lambda: Some(0.3), ..Config::default() };
        let out = Diversity::run(&Context::new("t"), &config, &cands()).unwrap();
        // 0 (a), then the best not-yet-seen: 3 (b), then uncategorised 4, then a again.
        assert_eq!(out.order(), &[0, 3, 4, 1, 2, 5]);
        let relevance_only = Config { lambda: Some(1.0), ..config };
        let out = Diversity::run(&Context::new("t"), &relevance_only, &cands()).unwrap();
        assert_eq!(out.order(), &[0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn invalid_config_is_refused() {
        assert!(Diversity::columns(&Config { max_per_group: 0, ..Config::default() }).is_err());
        assert!(Diversity::columns(&Config { lambda: Some(2.0), ..Config::default() }).is_err());
    }
}
