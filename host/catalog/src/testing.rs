//! Random catalogs for the property tests: items whose attributes mostly
//! keep one JSON type per name, with nulls, objects and values of other types
//! mixed in, over a row space that spans several chunks.

use proptest::prelude::*;
use serde_json::{Value, json};

/// The attribute names random items use; each leans to one type.
pub(crate) const NAMES: [&str; 5] = ["num", "int", "flag", "word", "tags"];

/// Strings from a small pool, so that equality and substrings hit.
pub(crate) fn word() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "a", "b", "ab", "ba", "red", "Red"]).prop_map(str::to_owned)
}

/// Any JSON value the catalog may be given.
pub(crate) fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (-3i64..4).prop_map(Value::from),
        prop::sample::select(vec![-1.5, 0.0, 0.5, 2.0, 3.0]).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        word().prop_map(Value::from),
        prop::collection::vec(word(), 0..3).prop_map(|w| json!(w)),
        Just(json!(["a", 1])),
        Just(json!({"x": 1})),
    ]
}

/// A value for attribute `name`: its usual type 9 times in 10.
fn value_for(name: &'static str) -> impl Strategy<Value = Value> {
    let usual = match name {
        "num" => prop_oneof![
            (-3i64..4).prop_map(Value::from),
            prop::sample::select(vec![-1.5, 0.5, 2.0]).prop_map(Value::from)
        ]
        .boxed(),
        "int" => (-3i64..4).prop_map(Value::from).boxed(),
        "flag" => any::<bool>().prop_map(Value::from).boxed(),
        "word" => word().prop_map(Value::from).boxed(),
        _ => prop::collection::vec(word(), 0..3).prop_map(|w| json!(w)).boxed(),
    };
    prop_oneof![9 => usual, 1 => any_value()]
}

/// One item's attributes: each name present or not.
pub(crate) fn item() -> impl Strategy<Value = Value> {
    let fields: Vec<_> = NAMES.iter().map(|&name| prop::option::weighted(0.7, value_for(name))).collect();
    fields.prop_map(|values| {
        let object: serde_json::Map<String, Value> =
            NAMES.iter().zip(values).filter_map(|(name, v)| Some(((*name).to_owned(), v?))).collect();
        Value::Object(object)
    })
}

/// Rows in the row space of a random catalog (past two chunk boundaries).
pub(crate) const ROWS: u32 = 2100;

/// Items at random rows (a row may repeat: the last one wins).
pub(crate) fn items() -> impl Strategy<Value = Vec<(u32, Value)>> {
    prop::collection::vec((0..ROWS, item()), 0..120)
}

/// The latest attributes of each row after `items`, as the catalog should hold them.
pub(crate) fn latest(items: &[(u32, Value)], into: &mut [Option<Value>]) {
    for (row, value) in items {
        into[*row as usize] = Some(value.clone());
    }
}
