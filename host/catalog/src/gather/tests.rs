use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::testing::{NAMES, ROWS, items, latest};

/// The candidates' values of one attribute, typed as the server typed them
/// before the catalog (`host/server/src/pipeline.rs`, `column`), with the
/// kind given (the catalog decides it catalog-wide, not per request).
enum Typed {
    F64(Vec<Option<f64>>),
    I64(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    String(Vec<Option<String>>),
    StringList(Vec<Option<Vec<String>>>),
}

fn typed(kind: Kind, values: &[Option<&Value>]) -> Typed {
    match kind {
        Kind::F64 => Typed::F64(values.iter().map(|v| v.and_then(Value::as_f64)).collect()),
        Kind::I64 => Typed::I64(values.iter().map(|v| v.and_then(Value::as_i64)).collect()),
        Kind::Bool => Typed::Bool(values.iter().map(|v| v.and_then(Value::as_bool)).collect()),
        Kind::String => Typed::String(values.iter().map(|v| v.and_then(Value::as_str).map(String::from)).collect()),
        Kind::StringList => Typed::StringList(
            values
                .iter()
                .map(|v| {
                    v.and_then(Value::as_array)
                        .map(|list| list.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                })
                .collect(),
        ),
    }
}

/// A copy of `edgerec_runtime`'s `EncodedColumn::encode` (host/runtime/src/
/// batch.rs): zeros where missing, missing rows listed, strings coded in
/// first-seen order, a missing list row holding no codes.
fn encode(values: &Typed) -> (GatheredValues, Vec<u32>) {
    fn missing<T>(v: &[Option<T>]) -> Vec<u32> {
        (0..v.len() as u32).filter(|&j| v[j as usize].is_none()).collect()
    }
    fn code<'a>(dictionary: &mut Vec<String>, codes: &mut HashMap<&'a str, u32>, s: &'a str) -> u32 {
        *codes.entry(s).or_insert_with(|| {
            dictionary.push(s.to_owned());
            (dictionary.len() - 1) as u32
        })
    }
    match values {
        Typed::F64(v) => (GatheredValues::F64s { values: v.iter().map(|x| x.unwrap_or(0.0)).collect() }, missing(v)),
        Typed::I64(v) => (GatheredValues::I64s { values: v.iter().map(|x| x.unwrap_or(0)).collect() }, missing(v)),
        Typed::Bool(v) => {
            (GatheredValues::Bools { values: v.iter().map(|x| x.unwrap_or(false)).collect() }, missing(v))
        }
        Typed::String(v) => {
            let (mut dictionary, mut codes) = (Vec::new(), HashMap::new());
            let c = v.iter().map(|x| x.as_deref().map_or(0, |s| code(&mut dictionary, &mut codes, s))).collect();
            (GatheredValues::Strings { codes: c, dictionary }, missing(v))
        }
        Typed::StringList(v) => {
            let (mut dictionary, mut codes) = (Vec::new(), HashMap::new());
            let mut offsets = vec![0u32];
            let mut c = Vec::new();
            for row in v {
                for s in row.iter().flatten() {
                    c.push(code(&mut dictionary, &mut codes, s));
                }
                offsets.push(c.len() as u32);
            }
            (GatheredValues::StringLists { offsets, codes: c, dictionary }, missing(v))
        }
    }
}

fn any_present(values: &Typed) -> bool {
    match values {
        Typed::F64(v) => v.iter().any(Option::is_some),
        Typed::I64(v) => v.iter().any(Option::is_some),
        Typed::Bool(v) => v.iter().any(Option::is_some),
        Typed::String(v) => v.iter().any(Option::is_some),
        Typed::StringList(v) => v.iter().any(Option::is_some),
    }
}

/// What the server would have built from `model` (each row's latest JSON
/// object) for `rows`: the columns in `names` order, absent ones left out.
fn expected(snapshot: &CatalogSnapshot, model: &[Option<Value>], names: &[&str], rows: &[u32]) -> Vec<GatheredColumn> {
    let mut out = Vec::new();
    for &name in names {
        let Some(kind) = snapshot.kind(name) else { continue };
        let values: Vec<Option<&Value>> = rows
            .iter()
            .map(|&r| model[r as usize].as_ref().and_then(|o| o.get(name)).filter(|v| !v.is_null()))
            .collect();
        let typed = typed(kind, &values);
        if out.iter().any(|c: &GatheredColumn| c.name == name) || !any_present(&typed) {
            continue;
        }
        let (values, missing) = encode(&typed);
        out.push(GatheredColumn { name: name.to_owned(), values, missing });
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Gathered columns equal the runtime's per-request encoding of the same
    /// values, after a build and after upserts.
    #[test]
    fn gathers_what_the_runtime_encoded_per_request(
        built in items(),
        upserts in items(),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let mut model = vec![None; ROWS as usize];
        latest(&built, &mut model);
        let v0 = CatalogSnapshot::build(ROWS as usize, built.iter().map(|(r, v)| (*r, v))).unwrap();
        let v1 = v0.with_upserts(&upserts).unwrap();
        let mut model1 = model.clone();
        latest(&upserts, &mut model1);
        // Candidates: mostly rows that have items, repeats allowed.
        let known: Vec<u32> = built.iter().chain(&upserts).map(|(r, _)| *r).chain([0, ROWS - 1]).collect();
        let rows: Vec<u32> = picks.iter().map(|i| known[i.index(known.len())]).collect();
        let mut names: Vec<&str> = NAMES.to_vec();
        names.extend(["absent", "word"]);
        prop_assert_eq!(v0.gather(&names, &rows).unwrap(), expected(&v0, &model, &names, &rows));
        prop_assert_eq!(v1.gather(&names, &rows).unwrap(), expected(&v1, &model1, &names, &rows));
    }
}

#[test]
fn gathers_per_request_codes_not_catalog_codes() {
    let items: Vec<(u32, Value)> = (0..10u32)
        .map(|r| (r, json!({"brand": format!("b{r}"), "tags": [format!("t{}", r % 3), "all"], "price": r})))
        .collect();
    let s = CatalogSnapshot::build(10, items.iter().map(|(r, v)| (*r, v))).unwrap();
    let got = s.gather(&["tags", "brand", "price"], &[7, 2, 7]).unwrap();
    assert_eq!(
        got[0].values,
        GatheredValues::StringLists {
            offsets: vec![0, 2, 4, 6],
            codes: vec![0, 1, 2, 1, 0, 1],
            dictionary: vec!["t1".into(), "all".into(), "t2".into()],
        }
    );
    assert_eq!(
        got[1].values,
        GatheredValues::Strings { codes: vec![0, 1, 0], dictionary: vec!["b7".into(), "b2".into()] }
    );
    assert_eq!(got[2].values, GatheredValues::I64s { values: vec![7, 2, 7] });
    assert!(got.iter().all(|c| c.missing.is_empty()));
    assert_eq!(got[1].values.kind(), Kind::String);
    assert_eq!(s.gather(&["brand"], &[3, 10]), Err(CatalogError::RowOutOfRange { row: 10, rows: 10 }));
    assert_eq!(s.gather(&["brand"], &[]).unwrap(), Vec::new());
    let owned: Vec<String> = vec!["price".into()];
    assert_eq!(s.gather(&owned, &[4]).unwrap()[0].values, GatheredValues::I64s { values: vec![4] });
}
