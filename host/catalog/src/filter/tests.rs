use fixedbitset::FixedBitSet;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::testing::{NAMES, ROWS, any_value, items, latest, word};
use crate::{CatalogSnapshot, Kind};

fn filter(json: Value) -> Filter {
    serde_json::from_value(json).unwrap()
}

fn snapshot(rows: usize, items: &[(u32, Value)]) -> CatalogSnapshot {
    CatalogSnapshot::build(rows, items.iter().map(|(r, v)| (*r, v))).unwrap()
}

/// Whether `value` fits `op` on a column of `kind`, written out plainly.
fn applies(kind: Kind, op: Op, value: &Value) -> bool {
    let non_empty_all =
        |test: fn(&Value) -> bool| value.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(test));
    match (kind, op) {
        (_, Op::Present | Op::Missing) => true,
        (Kind::F64 | Kind::I64, Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le) => value.is_number(),
        (Kind::F64 | Kind::I64, Op::In) => non_empty_all(Value::is_number),
        (Kind::Bool, Op::Eq | Op::Ne) => value.is_boolean(),
        (Kind::Bool, Op::In) => non_empty_all(Value::is_boolean),
        (Kind::String, Op::Eq | Op::Ne | Op::Contains) => value.is_string(),
        (Kind::String, Op::In) => non_empty_all(Value::is_string),
        (Kind::StringList, Op::Contains) => value.is_string(),
        _ => false,
    }
}

/// Whether an item's JSON attribute passes, as boost evaluates a predicate
/// on the column the value lands in (a value of another type is missing).
fn passes(kind: Kind, op: Op, operand: &Value, value: Option<&Value>) -> bool {
    let value = value.filter(|v| !v.is_null());
    let typed: Option<Value> = match kind {
        Kind::F64 | Kind::I64 => value.filter(|v| v.is_number()).cloned(),
        Kind::Bool => value.filter(|v| v.is_boolean()).cloned(),
        Kind::String => value.filter(|v| v.is_string()).cloned(),
        Kind::StringList => value
            .and_then(Value::as_array)
            .map(|a| Value::from(a.iter().filter(|s| s.is_string()).cloned().collect::<Vec<_>>())),
    };
    let Some(v) = typed else { return op == Op::Missing };
    let members = || operand.as_array().cloned().unwrap_or_default();
    match (kind, op) {
        (_, Op::Present) => true,
        (_, Op::Missing) => false,
        (Kind::F64 | Kind::I64, _) => {
            let (x, y) = (v.as_f64().unwrap(), operand.as_f64());
            match op {
                Op::Eq => Some(x) == y,
                Op::Ne => y.is_some_and(|y| x != y),
                Op::Gt => y.is_some_and(|y| x > y),
                Op::Ge => y.is_some_and(|y| x >= y),
                Op::Lt => y.is_some_and(|y| x < y),
                Op::Le => y.is_some_and(|y| x <= y),
                _ => members().iter().any(|m| m.as_f64() == Some(x)),
            }
        }
        (Kind::Bool | Kind::String, Op::Eq) => v == *operand,
        (Kind::Bool | Kind::String, Op::Ne) => v != *operand,
        (_, Op::In) => members().contains(&v),
        (Kind::String, Op::Contains) => v.as_str().unwrap().contains(operand.as_str().unwrap()),
        (Kind::StringList, Op::Contains) => v.as_array().unwrap().contains(operand),
        _ => unreachable!("{kind:?} {op:?}"),
    }
}

/// No bit is set at or past the mask's length (retrieval reads whole
/// blocks; a stray bit there would be a row that does not exist).
fn assert_clean(mask: &FixedBitSet) {
    let in_blocks: u32 = mask.as_slice().iter().map(|b| b.count_ones()).sum();
    assert_eq!(in_blocks as usize, mask.count_ones(..), "bits set past the mask's length {}", mask.len());
}

fn reference(snapshot: &CatalogSnapshot, model: &[Option<Value>], predicates: &[Predicate]) -> FixedBitSet {
    let mut mask = FixedBitSet::with_capacity(snapshot.rows());
    for (row, item) in model.iter().enumerate() {
        let all = predicates.iter().all(|p| {
            let kind = snapshot.kind(&p.attribute).unwrap();
            passes(kind, p.op, &p.value, item.as_ref().and_then(|o| o.get(&p.attribute)))
        });
        mask.set(row, all);
    }
    mask
}

fn op() -> impl Strategy<Value = Op> {
    prop::sample::select(vec![
        Op::Eq,
        Op::Ne,
        Op::Gt,
        Op::Ge,
        Op::Lt,
        Op::Le,
        Op::In,
        Op::Contains,
        Op::Present,
        Op::Missing,
    ])
}

fn operand() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => any_value(),
        1 => prop::collection::vec((-3i64..4).prop_map(Value::from), 0..3).prop_map(Value::from),
        1 => prop::collection::vec(any::<bool>().prop_map(Value::from), 1..3).prop_map(Value::from),
        1 => prop::collection::vec(word().prop_map(Value::from), 1..3).prop_map(Value::from),
    ]
}

/// A predicate that fits its attribute's usual type (it may still not fit
/// the column, whose first value may have been of another type).
fn fitting(attribute: &'static str) -> BoxedStrategy<Predicate> {
    let number = || prop_oneof![(-3i64..4).prop_map(Value::from), Just(json!(0.5)), Just(json!(-1.5))];
    let (ops, value) = match attribute {
        "num" | "int" => (vec![Op::Eq, Op::Ne, Op::Gt, Op::Ge, Op::Lt, Op::Le], number().boxed()),
        "flag" => (vec![Op::Eq, Op::Ne], any::<bool>().prop_map(Value::from).boxed()),
        "word" => (vec![Op::Eq, Op::Ne, Op::Contains], word().prop_map(Value::from).boxed()),
        _ => (vec![Op::Contains], word().prop_map(Value::from).boxed()),
    };
    let members = match attribute {
        "num" | "int" => prop::collection::vec(number(), 1..3).prop_map(Value::from).boxed(),
        "flag" => prop::collection::vec(any::<bool>(), 1..3).prop_map(|b| json!(b)).boxed(),
        _ => prop::collection::vec(word(), 1..3).prop_map(|w| json!(w)).boxed(),
    };
    prop_oneof![
        4 => (prop::sample::select(ops), value),
        1 => (Just(Op::In), members),
        1 => (prop::sample::select(vec![Op::Present, Op::Missing]), Just(Value::Null)),
    ]
    .prop_map(move |(op, value)| Predicate { attribute: attribute.to_owned(), op, value })
    .boxed()
}

fn predicate() -> impl Strategy<Value = Predicate> {
    let any = (prop::sample::select(NAMES.to_vec()), op(), operand()).prop_map(|(attribute, op, value)| Predicate {
        attribute: attribute.to_owned(),
        op,
        value,
    });
    prop_oneof![1 => any, 3 => prop::sample::select(NAMES.to_vec()).prop_flat_map(fitting)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every op matches the plain evaluation over the items' JSON; a filter
    /// compiles exactly when each predicate fits its column; the mask after
    /// upserts, updated on the touched rows only, equals a full recompute;
    /// the older version's mask is unchanged.
    #[test]
    fn masks_match_the_reference_and_the_incremental_update_matches_a_recompute(
        built in items(),
        upserts in items(),
        predicates in prop::collection::vec(predicate(), 1..3),
    ) {
        let mut model = vec![None; ROWS as usize];
        latest(&built, &mut model);
        let v0 = snapshot(ROWS as usize, &built);
        let fits = predicates.iter().all(|p| v0.kind(&p.attribute).is_some_and(|k| applies(k, p.op, &p.value)));
        let compiled = Filter { predicates: predicates.clone() }.compile(&v0);
        prop_assert_eq!(compiled.is_ok(), fits, "{:?}", compiled);
        let Ok(compiled) = compiled else { return Ok(()) };
        let mask0 = compiled.mask(&v0);
        assert_clean(&mask0);
        prop_assert_eq!(&mask0, &reference(&v0, &model, &predicates));

        let v1 = v0.with_upserts(&upserts).unwrap();
        latest(&upserts, &mut model);
        let touched: Vec<u32> = upserts.iter().map(|(r, _)| *r).collect();
        let full = compiled.mask(&v1);
        assert_clean(&full);
        prop_assert_eq!(&compiled.mask_after_upserts(&mask0, &v1, &touched), &full);
        prop_assert_eq!(&full, &reference(&v1, &model, &predicates));
        prop_assert_eq!(&compiled.mask(&v0), &mask0);
    }
}

#[test]
fn the_issue_json_shape_round_trips() {
    let json = json!({"where": [
        {"attribute": "stock", "op": "gt", "value": 0},
        {"attribute": "brand", "op": "in", "value": ["acme", "globex"]},
        {"attribute": "tags", "op": "contains", "value": "sale"},
        {"attribute": "color", "op": "present"},
    ]});
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Retrieve {
        r#where: Filter,
    }
    let retrieve: Retrieve = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(retrieve.r#where.predicates.len(), 4);
    assert_eq!(retrieve.r#where.predicates[1].op, Op::In);
    assert_eq!(serde_json::to_value(&retrieve).unwrap(), json);
    let unknown_key = serde_json::from_value::<Filter>(json!([{"attribute": "a", "op": "eq", "value": 1, "vale": 2}]));
    assert!(unknown_key.is_err());
    let unknown_op = serde_json::from_value::<Filter>(json!([{"attribute": "a", "op": "like", "value": "x"}]));
    assert!(unknown_op.unwrap_err().to_string().contains("unknown variant `like`"));
}

#[test]
fn ninety_percent_out_of_stock_leaves_exactly_the_in_stock_rows() {
    let rows = 10_000u32;
    let items: Vec<(u32, Value)> =
        (0..rows).map(|r| (r, json!({"stock": if r % 10 == 3 { r % 7 + 1 } else { 0 }}))).collect();
    let s = snapshot(rows as usize, &items);
    let mask = filter(json!([{"attribute": "stock", "op": "gt", "value": 0}])).compile(&s).unwrap().mask(&s);
    assert_eq!(mask.len(), rows as usize);
    assert_eq!(mask.count_ones(..), 1000);
    assert!(mask.ones().all(|r| r % 10 == 3));
    // Stock arriving for one item and running out for another.
    let s2 = s.with_upserts(&[(0, json!({"stock": 4})), (3, json!({"stock": 0}))]).unwrap();
    let compiled = filter(json!([{"attribute": "stock", "op": "gt", "value": 0}])).compile(&s2).unwrap();
    let updated = compiled.mask_after_upserts(&mask, &s2, &[0, 3]);
    assert!(updated.contains(0) && !updated.contains(3));
    assert_eq!(updated.count_ones(..), 1000);
    assert_eq!(updated, compiled.mask(&s2));
}

#[test]
fn a_missing_value_passes_nothing_but_missing() {
    let s = snapshot(3, &[(0, json!({"color": "red", "n": 1})), (1, json!({"color": "blue"})), (2, json!({}))]);
    let rows = |json: Value| filter(json).compile(&s).unwrap().mask(&s).ones().collect::<Vec<_>>();
    assert_eq!(rows(json!([{"attribute": "color", "op": "ne", "value": "red"}])), [1]);
    assert_eq!(rows(json!([{"attribute": "n", "op": "ne", "value": 5}])), [0]);
    assert_eq!(rows(json!([{"attribute": "n", "op": "missing"}])), [1, 2]);
    for rows in [1, 63, 64, 65, 300] {
        let s = snapshot(rows, &[(0, json!({"n": 1}))]);
        let mask = filter(json!([{"attribute": "n", "op": "missing"}])).compile(&s).unwrap().mask(&s);
        assert_clean(&mask);
        assert_eq!(mask.count_ones(..), rows - 1);
    }
    assert_eq!(rows(json!([{"attribute": "color", "op": "present"}])), [0, 1]);
    assert_eq!(rows(json!([{"attribute": "color", "op": "contains", "value": "e"}])), [0, 1]);
    assert_eq!(rows(json!([])), [0, 1, 2]);
    assert_eq!(rows(json!([{"attribute": "color", "op": "present"}, {"attribute": "n", "op": "missing"}])), [1]);
    assert_eq!(rows(json!([{"attribute": "n", "op": "in", "value": [-0.0, 1.0]}])), [0]);
    assert_eq!(rows(json!([{"attribute": "n", "op": "in", "value": [2]}])), Vec::<usize>::new());
    let zero = snapshot(1, &[(0, json!({"z": 0.0}))]);
    let minus_zero = filter(json!([{"attribute": "z", "op": "in", "value": [-0.0]}])).compile(&zero).unwrap();
    assert_eq!(minus_zero.mask(&zero).count_ones(..), 1, "in means ==, and -0.0 == 0.0");
}

#[test]
fn a_long_in_list_is_one_lookup_per_row() {
    // 20,000 members against 60,000 rows: a list scanned per row would be
    // 1.2 * 10^9 comparisons; a set is 60,000 lookups.
    let rows = 60_000u32;
    let items: Vec<(u32, Value)> = (0..rows).map(|r| (r, json!({"sku": format!("s{r}"), "n": r}))).collect();
    let s = snapshot(rows as usize, &items);
    let members: Vec<String> = (0..rows).filter(|r| r % 3 == 0).map(|r| format!("s{r}")).collect();
    let numbers: Vec<u32> = (0..rows).filter(|r| r % 3 == 1).collect();
    let skus = filter(json!([{"attribute": "sku", "op": "in", "value": members}])).compile(&s).unwrap();
    assert_eq!(skus.mask(&s).count_ones(..), members.len());
    let ns = filter(json!([{"attribute": "n", "op": "in", "value": numbers}])).compile(&s).unwrap();
    let mask = ns.mask(&s);
    assert_eq!(mask.count_ones(..), numbers.len());
    assert!(mask.ones().all(|r| r % 3 == 1));
}

#[test]
fn filters_that_do_not_fit_the_catalog_are_refused_with_what_to_do() {
    let s = snapshot(2, &[(0, json!({"price": 9.5, "color": "red", "tags": ["a"], "new": true}))]);
    let err = |json: Value| filter(json).compile(&s).unwrap_err();
    let e = err(
        json!([{"attribute": "color", "op": "eq", "value": "red"}, {"attribute": "Price", "op": "gt", "value": 1}]),
    );
    assert!(matches!(&e, FilterError::UnknownAttribute { index: 1, attribute, .. } if attribute == "Price"), "{e}");
    assert!(
        e.to_string().contains("it has: color, new, price, tags") && e.to_string().contains("case-sensitive"),
        "{e}"
    );
    let e = err(json!([{"attribute": "color", "op": "gt", "value": "m"}]));
    assert!(matches!(e, FilterError::OpNotForKind { op: Op::Gt, kind: Kind::String, .. }), "{e}");
    assert!(e.to_string().contains("use one of eq, ne, in, contains"), "{e}");
    let e = err(json!([{"attribute": "price", "op": "contains", "value": "9"}]));
    assert!(matches!(e, FilterError::OpNotForKind { op: Op::Contains, kind: Kind::F64, .. }), "{e}");
    let e = err(json!([{"attribute": "price", "op": "lt", "value": "10"}]));
    assert!(matches!(e, FilterError::WrongValue { expected: "a number", .. }), "{e}");
    assert!(e.to_string().contains("got \"10\""), "{e}");
    let e = err(json!([{"attribute": "tags", "op": "eq", "value": "a"}]));
    assert!(matches!(e, FilterError::OpNotForKind { op: Op::Eq, kind: Kind::StringList, .. }), "{e}");
    let e = err(json!([{"attribute": "color", "op": "in", "value": []}]));
    assert!(e.to_string().contains("a non-empty array of strings"), "{e}");
    let e = err(json!([{"attribute": "color", "op": "in", "value": ["red", 1]}]));
    assert!(matches!(e, FilterError::WrongValue { .. }), "{e}");
    let e = err(json!([{"attribute": "new", "op": "eq", "value": "true"}]));
    assert!(e.to_string().contains("needs true or false"), "{e}");
    let e = err(json!([{"attribute": "", "op": "present"}]));
    assert_eq!(e, FilterError::EmptyAttribute { index: 0 });
    let empty = CatalogSnapshot::empty(3).unwrap();
    let e = filter(json!([{"attribute": "x", "op": "present"}])).compile(&empty).unwrap_err();
    assert!(e.to_string().contains("(it has: none)"), "{e}");
}

#[test]
fn a_filter_compiled_on_an_i64_column_still_holds_after_it_widens() {
    let s = snapshot(3, &[(0, json!({"stock": 1})), (1, json!({"stock": 5}))]);
    let compiled = filter(json!([{"attribute": "stock", "op": "ge", "value": 2.5}])).compile(&s).unwrap();
    let mask = compiled.mask(&s);
    assert_eq!(mask.ones().collect::<Vec<_>>(), [1]);
    let widened = s.with_upserts(&[(2, json!({"stock": 2.75}))]).unwrap();
    assert_eq!(widened.kind("stock"), Some(Kind::F64));
    assert_eq!(compiled.mask_after_upserts(&mask, &widened, &[2]).ones().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(compiled.mask(&widened).ones().collect::<Vec<_>>(), [1, 2]);
    // A catalog without the column reads as all missing.
    let other = CatalogSnapshot::empty(3).unwrap();
    assert_eq!(compiled.mask(&other).count_ones(..), 0);
    let missing = filter(json!([{"attribute": "stock", "op": "missing"}])).compile(&s).unwrap();
    assert_eq!(missing.mask(&other).count_ones(..), 3);
}
