//! Walk-through plugin: drops items cheaper than `min_price` (or without a
//! price) and multiplies the score of one brand, then re-sorts.

use edgerec_sdk::{Candidates, Context, Error, Output, Plugin, Ranking, export_plugin, log};
use serde::Deserialize;

/// The plugin.
pub struct PriceFloor;

/// The stage config, e.g. `{"min_price": 20, "brand": "acme", "boost": 1.5}`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Items cheaper than this are dropped.
    pub min_price: f64,
    /// The brand to boost (none = no boost).
    pub brand: Option<String>,
    /// The multiplier for that brand.
    pub boost: f32,
}

impl Default for Config {
    fn default() -> Self {
        Config { min_price: 0.0, brand: None, boost: 1.0 }
    }
}

impl Plugin for PriceFloor {
    type Config = Config;

    fn columns(config: &Config) -> Result<Vec<String>, Error> {
        if !config.boost.is_finite() || config.boost < 0.0 {
            return Err("`boost` must be a finite number ≥ 0".into());
        }
        Ok(vec!["price".into(), "brand".into()])
    }

    fn run(_ctx: &Context, config: &Config, cands: &Candidates) -> Result<Output, Error> {
        let price = cands.f64("price").ok_or("the catalog has no f64 `price` column")?;
        let brand = cands.string("brand");
        let mut ranking = Ranking::new(cands);
        ranking.retain(|e| price.get(e.index).is_some_and(|p| p >= config.min_price));
        log::info(&format!("{} of {} items at or above the floor", ranking.len(), cands.len()));
        if let (Some(wanted), Some(brand)) = (&config.brand, brand) {
            ranking.rescore(|e| {
                if brand.get(e.index) == Some(wanted.as_str()) {
                    e.score *= config.boost;
                    e.reason = "brand-boost".into();
                }
            });
        }
        ranking.sort_by_score();
        Ok(ranking.into_output())
    }
}

export_plugin!(PriceFloor);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_cheap_and_unpriced_items_and_boosts_the_brand() {
        let cands = Candidates::new(vec![1, 2, 3, 4], vec![0.9, 0.8, 0.7, 0.6])
            .with_f64("price", vec![Some(10.0), Some(25.0), None, Some(30.0)])
            .with_string("brand", vec![Some("acme"), Some("zeta"), Some("acme"), Some("acme")]);
        let config = Config { min_price: 20.0, brand: Some("acme".into()), boost: 2.0 };
        let out = PriceFloor::run(&Context::new("shop"), &config, &cands).unwrap();
        assert_eq!(out.order(), &[3, 1]); // 0.6 × 2 = 1.2 beats 0.8
        assert_eq!(out.scores(), Some(&[1.2f32, 0.8][..]));
        assert_eq!(out.reasons().unwrap()[0], "brand-boost");
    }
}
