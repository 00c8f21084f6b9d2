use serde_json::{Value, json};

use super::*;
use crate::chunk::CHUNK_ROWS;

fn build(rows: usize, items: &[(u32, Value)]) -> CatalogSnapshot {
    CatalogSnapshot::build(rows, items.iter().map(|(r, v)| (*r, v))).unwrap()
}

fn stats_of<'a>(stats: &'a crate::CatalogStats, name: &str) -> &'a crate::ColumnStats {
    stats.columns.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn the_first_value_decides_the_family_and_other_families_read_as_missing() {
    let s = build(
        4,
        &[
            (0, json!({"color": null, "size": 3, "tags": ["a", 1, "b"], "meta": {"x": 1}})),
            (1, json!({"color": "red", "size": "large", "on_sale": true, "tags": "solo"})),
            (2, json!({"color": 7, "size": 4, "on_sale": "yes", "meta": "later"})),
            (3, json!({"color": "blue", "on_sale": false})),
        ],
    );
    assert_eq!(s.kind("color"), Some(Kind::String));
    assert_eq!(s.kind("size"), Some(Kind::I64));
    assert_eq!(s.kind("on_sale"), Some(Kind::Bool));
    assert_eq!(s.kind("tags"), Some(Kind::StringList));
    // An object cannot start a column; the first value that can does.
    assert_eq!(s.kind("meta"), Some(Kind::String));
    assert_eq!(s.value("color", 0), None);
    assert_eq!(s.value("color", 2), None, "a number in a string column is missing");
    assert_eq!(s.value("size", 1), None, "a string in a number column is missing");
    assert_eq!(s.value("size", 2), Some(json!(4)));
    assert_eq!(s.value("on_sale", 2), None);
    assert_eq!(s.value("tags", 0), Some(json!(["a", "b"])), "non-string elements are dropped");
    assert_eq!(s.value("tags", 1), None, "a string is not a list");
    assert_eq!(s.value("meta", 2), Some(json!("later")));
    let stats = s.stats();
    assert_eq!(stats.ignored_values, 1, "the object that could not start `meta`");
    assert_eq!((stats_of(&stats, "color").present, stats_of(&stats, "color").mismatched), (2, 1));
    assert_eq!((stats_of(&stats, "size").present, stats_of(&stats, "size").mismatched), (2, 1));
    assert_eq!((stats_of(&stats, "on_sale").present, stats_of(&stats, "on_sale").mismatched), (2, 1));
    assert_eq!((stats_of(&stats, "tags").present, stats_of(&stats, "tags").mismatched), (1, 2));
    assert_eq!(stats_of(&stats, "tags").distinct, 2);
}

#[test]
fn ints_then_a_float_widen_the_column_to_f64_keeping_every_value() {
    let big = 1i64 << 53;
    let s = build(3, &[(0, json!({"price": 10})), (1, json!({"price": big})), (2, json!({"price": 9.5}))]);
    assert_eq!(s.kind("price"), Some(Kind::F64));
    assert_eq!(s.value("price", 0), Some(json!(10.0)));
    assert_eq!(s.value("price", 1), Some(json!(big as f64)));
    assert_eq!(s.value("price", 2), Some(json!(9.5)));

    // On upsert too; the old version keeps its i64 column.
    let ints = build(2, &[(0, json!({"stock": 3})), (1, json!({"stock": 4}))]);
    let floats = ints.with_upserts(&[(1, json!({"stock": 4.5}))]).unwrap();
    assert_eq!(ints.kind("stock"), Some(Kind::I64));
    assert_eq!(ints.value("stock", 1), Some(json!(4)));
    assert_eq!(floats.kind("stock"), Some(Kind::F64));
    assert_eq!(floats.value("stock", 0), Some(json!(3.0)));
    assert_eq!(floats.value("stock", 1), Some(json!(4.5)));
    // An integer past i64 widens as well.
    let huge = ints.with_upserts(&[(0, json!({"stock": u64::MAX}))]).unwrap();
    assert_eq!(huge.kind("stock"), Some(Kind::F64));
    assert_eq!(huge.value("stock", 0), Some(json!(u64::MAX as f64)));
}

#[test]
fn an_upsert_makes_a_new_version_and_leaves_the_old_one_as_it_was() {
    let rows = 3 * CHUNK_ROWS + 5;
    let items: Vec<(u32, Value)> = (0..rows as u32)
        .map(|r| (r, json!({"price": f64::from(r) / 2.0, "brand": format!("b{}", r % 7), "stock": r % 3})))
        .collect();
    let v0 = build(rows, &items);
    let last = rows as u32 - 1;
    let v1 = v0
        .with_upserts(&[
            (5, json!({"price": 1.25, "brand": "new brand", "color": "red"})),
            (last, json!({"brand": "b1", "stock": 99})),
        ])
        .unwrap();
    assert_eq!((v0.generation(), v1.generation()), (0, 1));
    // The new version: replaced attributes, missing ones cleared, a new column.
    assert_eq!(v1.value("price", 5), Some(json!(1.25)));
    assert_eq!(v1.value("brand", 5), Some(json!("new brand")));
    assert_eq!(v1.value("stock", 5), None, "an upsert replaces the item's attributes");
    assert_eq!(v1.value("color", 5), Some(json!("red")));
    assert_eq!(v1.value("color", 6), None);
    assert_eq!(v1.value("price", last), None);
    assert_eq!(v1.value("stock", last), Some(json!(99)));
    // The old version: unchanged, and without the new column.
    for r in [5, 6, last] {
        assert_eq!(v0.value("price", r), Some(json!(f64::from(r) / 2.0)));
        assert_eq!(v0.value("brand", r), Some(json!(format!("b{}", r % 7))));
        assert_eq!(v0.value("stock", r), Some(json!(r % 3)));
    }
    assert_eq!(v0.kind("color"), None);
    assert_eq!(
        v1.attributes().collect::<Vec<_>>(),
        ["brand", "price", "stock", "color"],
        "a build takes an object's names in its order"
    );
    // Untouched chunks are the same memory; touched ones were copied.
    let price =
        |s: &CatalogSnapshot| (0..4).map(|c| Arc::clone(s.column("price").unwrap().chunks.get(c))).collect::<Vec<_>>();
    let (old, new) = (price(&v0), price(&v1));
    assert!(!Arc::ptr_eq(&old[0], &new[0]));
    assert!(Arc::ptr_eq(&old[1], &new[1]) && Arc::ptr_eq(&old[2], &new[2]));
    assert!(!Arc::ptr_eq(&old[3], &new[3]));
    // What the upsert copied: chunks 0 and 3 of the three old columns, the
    // new column's written chunk and empty chunk, and every column's group
    // of 4 chunk pointers and list of 1 group pointer.
    let chunk = |kind| crate::chunk::Chunk::missing(kind).bytes();
    let group = 2 * size_of::<usize>() + size_of::<Vec<usize>>() + 4 * size_of::<usize>();
    let lists = 4 * (size_of::<usize>() + group);
    let expected =
        2 * chunk(Kind::F64) + 2 * chunk(Kind::I64) + 2 * chunk(Kind::String) + 2 * chunk(Kind::String) + lists;
    assert_eq!(v1.unshared_bytes(&v0), expected);
    assert_eq!(v0.unshared_bytes(&v0), 3 * size_of::<usize>());
    // A rewrite of the same values copies nothing.
    let same = v1.with_upserts(&[(7, items[7].1.clone())]).unwrap();
    for name in ["price", "brand", "stock", "color"] {
        let (a, b) = (&v1.column(name).unwrap().chunks, &same.column(name).unwrap().chunks);
        assert!(a.iter().zip(b.iter()).all(|(x, y)| Arc::ptr_eq(x, y)), "{name}");
    }
    assert_eq!(v1.stats().columns, same.stats().columns);
}

#[test]
fn rows_outside_the_row_space_are_refused_whole() {
    let err = CatalogSnapshot::build(2, [(2, json!({"a": 1}))]).unwrap_err();
    assert_eq!(err, CatalogError::RowOutOfRange { row: 2, rows: 2 });
    assert!(err.to_string().contains("item map"), "{err}");
    let s = build(2, &[(0, json!({"a": 1}))]);
    let err = s.with_upserts(&[(1, json!({"a": 2})), (7, json!({"a": 3}))]).unwrap_err();
    assert_eq!(err, CatalogError::RowOutOfRange { row: 7, rows: 2 });
    assert_eq!(s.value("a", 1), None);
    assert!(matches!(CatalogSnapshot::empty(u32::MAX as usize + 1), Err(CatalogError::TooManyRows { .. })));
    assert_eq!(s.value("a", 9), None);
}

#[test]
fn hostile_items_are_bounded() {
    // Thousands of attribute names: the first MAX_COLUMNS get columns, the
    // rest are counted and ignored.
    let wide: serde_json::Map<String, Value> = (0..5000).map(|i| (format!("k{i:05}"), json!(i))).collect();
    let s = build(4, &[(1, Value::Object(wide)), (2, json!("not an object")), (3, json!([1, 2]))]);
    assert_eq!(s.attributes().count(), MAX_COLUMNS);
    assert_eq!(s.stats().ignored_values, 5000 - MAX_COLUMNS as u64);
    assert_eq!(s.value("k00000", 2), None);
    // Deep nesting and long strings are values like any other.
    let mut deep = json!("bottom");
    for _ in 0..64 {
        deep = json!([deep]);
    }
    let long = "x".repeat(1 << 20);
    let s = build(2, &[(0, json!({"deep": deep, "long": long}))]);
    assert_eq!(s.value("deep", 0), Some(json!([])));
    assert_eq!(s.value("long", 0).unwrap().as_str().map(str::len), Some(1 << 20));
}

#[test]
fn a_sparse_column_costs_one_shared_empty_chunk() {
    let rows = 64 * CHUNK_ROWS;
    let s = build(rows, &[(0, json!({"rare": 1.5})), (3, json!({"rare": 2.5}))]);
    let memory = s.memory();
    let rare = &memory.columns[0];
    assert_eq!(rare.kind, Kind::F64);
    let chunk = crate::chunk::Chunk::missing(Kind::F64).bytes();
    // One written chunk + the shared empty one + one group of 64 chunk
    // pointers + a list of one group pointer.
    let pointers = size_of::<usize>() + 2 * size_of::<usize>() + size_of::<Vec<usize>>() + 64 * size_of::<usize>();
    assert_eq!(rare.value_bytes, 2 * chunk + pointers);
    assert_eq!(rare.dictionary_bytes, 0);
    assert_eq!(memory.total_bytes, rare.value_bytes);
    let dense = build(rows, &(0..rows as u32).map(|r| (r, json!({"rare": 1.0}))).collect::<Vec<_>>());
    assert_eq!(dense.memory().columns[0].value_bytes, 64 * chunk + pointers);
    assert_eq!(dense.stats().columns[0].present, rows as u64);
}

#[test]
fn versions_can_be_shared_across_request_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<CatalogSnapshot>();
    shareable::<crate::CompiledFilter>();
    let s = build(3, &[(0, json!({"brand": "a"}))]);
    let next = std::thread::scope(|scope| {
        let reader = scope.spawn(|| s.value("brand", 0));
        let writer = scope.spawn(|| s.with_upserts(&[(1, json!({"brand": "b"}))]).unwrap());
        assert_eq!(reader.join().unwrap(), Some(json!("a")));
        writer.join().unwrap()
    });
    assert_eq!((s.value("brand", 1), next.value("brand", 1)), (None, Some(json!("b"))));
}

#[test]
fn an_item_removed_from_the_catalog_is_an_upsert_of_no_attributes() {
    let s = build(3, &[(0, json!({"brand": "a", "stock": 2})), (1, json!({"brand": "b", "stock": 3}))]);
    let removed = s.with_upserts(&[(1, Value::Null)]).unwrap();
    assert_eq!((removed.value("brand", 1), removed.value("stock", 1)), (None, None));
    assert_eq!(removed.value("brand", 0), Some(json!("a")));
    let stats = removed.stats();
    assert_eq!(stats_of(&stats, "brand").present, 1);
    assert_eq!(stats_of(&stats, "stock").mismatched, 0, "no value is not a mismatch");
}
