//! `boost`: business rules from config — attribute predicates that multiply,
//! add to, bury or pin items.
//!
//! Config (JSON):
//! ```json
//! {"rules": [
//!   {"name": "acme", "attribute": "brand", "op": "eq", "value": "acme", "action": {"multiply": 1.5}},
//!   {"attribute": "margin", "op": "gt", "value": 0.3, "action": {"add": 0.1}},
//!   {"attribute": "tags", "op": "contains", "value": "clearance", "action": "bury"},
//!   {"attribute": "sponsored", "op": "eq", "value": true, "action": {"pin": 0}}
//! ]}
//! ```
//! Ops: `eq`, `ne`, `lt`, `le`, `gt`, `ge` (numbers; `eq`/`ne` also strings and
//! bools), `contains` (substring of a string, member of a list of strings),
//! `present`, `missing`. A missing value matches only `missing`. Order of
//! effects: every multiply/add (in rule order), a stable sort by score, buried
//! items to the end, then pinned items to their positions (rule order). Each
//! matching rule adds its name (or `rule<i>`) to the item's reason.

use edgerec_sdk::{Candidates, Context, Error, Output, Plugin, Ranking, export_plugin};
use serde::Deserialize;

mod predicate;

pub use predicate::{Op, Predicate};

/// The plugin.
pub struct Boost;

/// The stage config.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The rules, applied in order.
    pub rules: Vec<Rule>,
}

/// One rule: when the predicate holds for an item, apply the action.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "RuleJson")]
pub struct Rule {
    /// The reason code it leaves (default `rule<i>`).
    pub name: Option<String>,
    /// Which items.
    pub when: Predicate,
    /// What to do to them.
    pub action: Action,
}

/// A rule as written: the predicate's keys beside `name` and `action`. Read
/// flat rather than with `#[serde(flatten)]`, which buffers every rule into
/// an intermediate tree first (the config is parsed on every call) and lets
/// unknown keys through.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleJson {
    #[serde(default)]
    name: Option<String>,
    attribute: String,
    op: Op,
    #[serde(default)]
    value: serde_json::Value,
    action: Action,
}

impl From<RuleJson> for Rule {
    fn from(rule: RuleJson) -> Self {
        let when = Predicate { attribute: rule.attribute, op: rule.op, value: rule.value };
        Rule { name: rule.name, when, action: rule.action }
    }
}

/// What a rule does to the items it matches.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Multiplies the score.
    Multiply(f32),
    /// Adds to the score.
    Add(f32),
    /// Moves the item after every unburied item.
    Bury,
    /// Puts the item at this position (0 = first).
    Pin(usize),
}

impl Plugin for Boost {
    type Config = Config;

    fn columns(config: &Config) -> Result<Vec<String>, Error> {
        let mut columns: Vec<String> = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            rule.when.check().map_err(|e| Error(format!("rule {i}: {e}")))?;
            if let Action::Multiply(x) | Action::Add(x) = rule.action
                && !x.is_finite()
            {
                return Err(Error(format!("rule {i}: the action's number must be finite")));
            }
            if !columns.contains(&rule.when.attribute) {
                columns.push(rule.when.attribute.clone());
            }
        }
        Ok(columns)
    }

    fn run(_ctx: &Context, config: &Config, cands: &Candidates) -> Result<Output, Error> {
        // matches[r][i]: rule r holds for candidate i.
        let mut matches = Vec::with_capacity(config.rules.len());
        for (r, rule) in config.rules.iter().enumerate() {
            let holds = rule.when.evaluate(cands).map_err(|e| Error(format!("rule {r}: {e}")))?;
            matches.push(holds);
        }
        // Each rule's reason code, made once (not once per matching item).
        let names: Vec<String> = config
            .rules
            .iter()
            .enumerate()
            .map(|(r, rule)| rule.name.clone().unwrap_or_else(|| format!("rule{r}")))
            .collect();
        let mut ranking = Ranking::new(cands);
        ranking.rescore(|e| {
            for (r, rule) in config.rules.iter().enumerate() {
                if !matches[r][e.index as usize] {
                    continue;
                }
                match rule.action {
                    Action::Multiply(x) => e.score *= x,
                    Action::Add(x) => e.score += x,
                    Action::Bury | Action::Pin(_) => {}
                }
                if !e.reason.is_empty() {
                    e.reason.push(',');
                }
                e.reason.push_str(&names[r]);
            }
        });
        ranking.sort_by_score();
        let buried = |i: u32| {
            config.rules.iter().enumerate().any(|(r, rule)| rule.action == Action::Bury && matches[r][i as usize])
        };
        ranking.bury(|e| buried(e.index));
        for (r, rule) in config.rules.iter().enumerate() {
            if let Action::Pin(position) = rule.action {
                let pinned: Vec<u32> =
                    ranking.entries().iter().map(|e| e.index).filter(|&i| matches[r][i as usize]).collect();
                for (k, index) in pinned.into_iter().enumerate() {
                    if let Some(from) = ranking.entries().iter().position(|e| e.index == index) {
                        ranking.move_to(from, position + k);
                    }
                }
            }
        }
        Ok(ranking.into_output())
    }
}

export_plugin!(Boost, name = "boost");

#[cfg(test)]
mod tests;
