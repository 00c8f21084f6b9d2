//! `in-stock`: drops items that are out of stock.
//!
//! Config (JSON, all optional):
//! `{"attribute": "in_stock", "min": 1, "keep_missing": false}`.
//! The attribute may be a bool column (false drops the item) or a number
//! column (a value below `min` drops it). Items with no value are kept only
//! with `keep_missing`. A catalog without the attribute fails the stage (its
//! `on_error` policy decides), rather than silently dropping or keeping all.

use edgerec_sdk::{Candidates, Context, Error, Output, Plugin, Ranking, export_plugin};
use serde::Deserialize;

/// The plugin.
pub struct InStock;

/// The stage config.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The stock attribute: bool (in stock or not) or a number (quantity).
    pub attribute: String,
    /// For a number attribute: the least quantity that counts as in stock.
    pub min: f64,
    /// Keep items whose stock is unknown.
    pub keep_missing: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { attribute: "in_stock".into(), min: 1.0, keep_missing: false }
    }
}

impl Plugin for InStock {
    type Config = Config;

    fn columns(config: &Config) -> Result<Vec<String>, Error> {
        if config.attribute.is_empty() || !config.min.is_finite() {
            return Err("`attribute` must be non-empty and `min` finite".into());
        }
        Ok(vec![config.attribute.clone()])
    }

    fn run(_ctx: &Context, config: &Config, cands: &Candidates) -> Result<Output, Error> {
        let in_stock: Box<dyn Fn(u32) -> Option<bool>> = if let Some(c) = cands.bool(&config.attribute) {
            Box::new(move |i| c.get(i))
        } else if let Some(c) = cands.i64(&config.attribute) {
            Box::new(move |i| c.get(i).map(|q| q as f64 >= config.min))
        } else if let Some(c) = cands.f64(&config.attribute) {
            Box::new(move |i| c.get(i).map(|q| q >= config.min))
        } else if cands.is_empty() {
            return Ok(Output::unchanged(cands));
        } else {
            return Err(Error(format!(
                "the catalog has no bool or number column `{}`: set `attribute` in the stage config",
                config.attribute
            )));
        };
        let mut ranking = Ranking::new(cands);
        ranking.retain(|e| in_stock(e.index).unwrap_or(config.keep_missing));
        Ok(ranking.into_output())
    }
}

export_plugin!(InStock, name = "in-stock");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_stock_drops_false_and_missing() {
        let c = Candidates::new(vec![1, 2, 3, 4], vec![0.4, 0.3, 0.2, 0.1])
            .with_bool("in_stock", vec![Some(true), Some(false), None, Some(true)]);
        let out = InStock::run(&Context::new("t"), &Config::default(), &c).unwrap();
        assert_eq!(out.order(), &[0, 3]);
        let keep = Config { keep_missing: true, ..Config::default() };
        assert_eq!(InStock::run(&Context::new("t"), &keep, &c).unwrap().order(), &[0, 2, 3]);
    }

    #[test]
    fn quantity_below_threshold_is_dropped() {
        let c = Candidates::new(vec![1, 2, 3], vec![0.3, 0.2, 0.1]).with_i64("stock", vec![Some(0), Some(5), Some(2)]);
        let config = Config { attribute: "stock".into(), min: 3.0, keep_missing: false };
        assert_eq!(InStock::run(&Context::new("t"), &config, &c).unwrap().order(), &[1]);
    }

    #[test]
    fn absent_column_is_an_error_that_names_it() {
        let c = Candidates::new(vec![1], vec![0.3]);
        let err = InStock::run(&Context::new("t"), &Config::default(), &c).unwrap_err();
        assert!(err.0.contains("in_stock"), "{err}");
    }
}
