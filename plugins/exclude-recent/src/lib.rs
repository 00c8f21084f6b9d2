//! `exclude-recent`: drops items the shopper recently bought.
//!
//! Config (JSON, all optional): `{"actions": ["purchase"], "window_seconds": 2592000}`.
//! An item is dropped when the request's recent events hold an event on it
//! whose action is one of `actions` and whose time is within `window_seconds`
//! before the request's `now` (events in the future count as within).

use std::collections::HashSet;

use edgerec_sdk::{Candidates, Context, Error, Output, Plugin, Ranking, export_plugin};
use serde::Deserialize;

/// The plugin.
pub struct ExcludeRecent;

/// The stage config.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Actions that exclude an item.
    pub actions: Vec<String>,
    /// How far back an event counts, in seconds (default 30 days).
    pub window_seconds: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config { actions: vec!["purchase".into()], window_seconds: 30 * 24 * 3600 }
    }
}

impl Plugin for ExcludeRecent {
    type Config = Config;

    fn columns(config: &Config) -> Result<Vec<String>, Error> {
        if config.window_seconds < 0 {
            return Err("`window_seconds` must be zero or more".into());
        }
        Ok(Vec::new())
    }

    fn run(ctx: &Context, config: &Config, cands: &Candidates) -> Result<Output, Error> {
        let since = ctx.now().saturating_sub(config.window_seconds);
        let excluded: HashSet<u64> = ctx
            .recent_events()
            .iter()
            .filter(|e| e.ts >= since && config.actions.contains(&e.action))
            .map(|e| e.item)
            .collect();
        if excluded.is_empty() {
            return Ok(Output::unchanged(cands));
        }
        let ids = cands.ids();
        let mut ranking = Ranking::new(cands);
        ranking.retain(|e| !excluded.contains(&ids[e.index as usize]));
        Ok(ranking.into_output())
    }
}

export_plugin!(ExcludeRecent, name = "exclude-recent");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_only_recent_purchases() {
        let ctx = Context::new("t")
            .with_now(1_000_000)
            .with_event(11, "purchase", 1_000_000 - 100) // recent purchase: dropped
            .with_event(12, "view", 1_000_000 - 100) // a view: kept
            .with_event(13, "purchase", 1_000_000 - 40 * 24 * 3600); // too old: kept
        let c = Candidates::new(vec![10, 11, 12, 13], vec![0.4, 0.3, 0.2, 0.1]);
        let out = ExcludeRecent::run(&ctx, &Config::default(), &c).unwrap();
        assert_eq!(out.order(), &[0, 2, 3]);
        let views = Config { actions: vec!["view".into(), "purchase".into()], window_seconds: 3600 };
        assert_eq!(ExcludeRecent::run(&ctx, &views, &c).unwrap().order(), &[0, 3]);
    }
}
