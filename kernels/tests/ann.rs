//! ANN retrieval ([`AnnIndex`]) against the f32 scan on seeded random
//! tables: recall@10 above a stated floor, every returned score the f32
//! scan's own score for that item, updates seen by the next search, filters
//! and exclusions obeyed with `k` answers whenever `k` items pass, and a
//! saved index answering as the one it was saved from.

mod common;

use common::config;
use edgerec_kernels::score::{better, score_all};
use edgerec_kernels::{AnnIndex, AnnOptions, Model, RetrievalError, RowMask, Scored, Weights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Items and dimension of the seeded table: big enough that the graph has
/// several layers and a walk skips most of it, small enough for a debug run.
const ITEMS: usize = 4000;
const D: usize = 16;
const K: usize = 10;
/// recall@10 floor on the uniform random table (full intrinsic dimension,
/// the hard case for a graph) with the default options, filtered or not;
/// measured 1.0 on this seed, so the floor leaves room for a change of
/// usearch's graph while a broken walk (wrong metric or keys) fails it.
const RECALL_FLOOR: f64 = 0.95;

fn model(seed: u64) -> Model {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let items: Vec<f32> = (0..(ITEMS + 1) * D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let base = Model::random(config(ITEMS, D, 1, 1, 4, 4, 8), 1).expect("valid random model");
    Model::new(base.config.clone(), Weights { item_emb: items, ..base.weights }).expect("valid model")
}

fn queries(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| (0..D).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect()
}

/// The f32 scan: every eligible item's exact-path score, best first.
fn reference(model: &Model, q: &[f32], k: usize, exclude: &[u32], allow: Option<&RowMask>) -> Vec<Scored> {
    let mut all: Vec<Scored> = score_all(model, q)
        .into_iter()
        .enumerate()
        .map(|(i, score)| Scored { item: i as u32 + 1, score })
        .filter(|s| !exclude.contains(&s.item) && allow.is_none_or(|m| m.contains(s.item as usize)))
        .collect();
    all.sort_by(better);
    all.truncate(k);
    all
}

/// Every returned item is eligible, listed once, best first, and scored as
/// the f32 scan scores it (bit for bit).
fn check_scores(model: &Model, q: &[f32], got: &[Scored], exclude: &[u32], allow: Option<&RowMask>) {
    let scores = score_all(model, q);
    for s in got {
        assert!(s.item >= 1 && s.item as usize <= model.config.num_items, "item {} is not in the catalog", s.item);
        assert!(!exclude.contains(&s.item), "excluded item {} returned", s.item);
        assert!(allow.is_none_or(|m| m.contains(s.item as usize)), "filtered item {} returned", s.item);
        assert_eq!(s.score.to_bits(), scores[s.item as usize - 1].to_bits(), "item {}'s score", s.item);
    }
    assert!(got.windows(2).all(|w| better(&w[0], &w[1]).is_lt()), "not ordered best first: {got:?}");
}

fn recall(got: &[Scored], want: &[Scored]) -> (usize, usize) {
    (want.iter().filter(|w| got.iter().any(|g| g.item == w.item)).count(), want.len())
}

#[test]
fn recall_against_the_f32_scan_is_above_the_floor() {
    let model = model(1);
    let index = AnnIndex::from_model(&model, AnnOptions::default()).expect("index builds");
    assert_eq!(index.len(), ITEMS + 1);
    assert!(!index.contains(0), "the padding row is not an item");
    let rows = &model.weights.item_emb;
    let qs = queries(100, 2);
    let refs: Vec<&[f32]> = qs.iter().map(Vec::as_slice).collect();
    let exclude: Vec<Vec<u32>> = (0..qs.len() as u32).map(|i| vec![1 + i, 2 + 2 * i]).collect();
    let excl: Vec<&[u32]> = exclude.iter().map(Vec::as_slice).collect();
    let batch = index.search_batch(rows, &refs, K, &excl, None).expect("valid batch");
    let (mut hit, mut total) = (0, 0);
    for ((q, got), ex) in qs.iter().zip(&batch).zip(&exclude) {
        assert_eq!(got.len(), K);
        check_scores(&model, q, got, ex, None);
        let one = index.search(rows, q, K, ex, None).expect("valid call");
        assert_eq!(&one, got, "a batch answers as one-by-one calls");
        let (h, t) = recall(got, &reference(&model, q, K, ex, None));
        hit += h;
        total += t;
    }
    let r = hit as f64 / total as f64;
    assert!(r >= RECALL_FLOOR, "recall@10 {r:.4} below {RECALL_FLOOR}");
}

#[test]
fn added_updated_and_removed_rows_are_seen_by_the_next_search() {
    let model = model(3);
    let mut rows = model.weights.item_emb.clone();
    let mut index = AnnIndex::from_model(&model, AnnOptions::default()).expect("index builds");
    let q = queries(1, 4).remove(0);

    // Removed: the best item is gone from the next answer.
    let before = index.search(&rows, &q, K, &[], None).expect("valid call");
    let best = before[0].item as usize;
    index.remove_row(best).expect("removable");
    assert!(!index.contains(best));
    let after = index.search(&rows, &q, K, &[], None).expect("valid call");
    assert_eq!(after.len(), K);
    assert!(after.iter().all(|s| s.item as usize != best), "removed row {best} returned");

    // Updated: a far row set to the query's direction becomes the best.
    let far = reference(&model, &q.iter().map(|x| -x).collect::<Vec<_>>(), 1, &[], None)[0].item as usize;
    let doubled: Vec<f32> = q.iter().map(|x| 2.0 * x).collect();
    rows[far * D..(far + 1) * D].copy_from_slice(&doubled);
    index.set_row(far, &doubled).expect("valid row");
    let got = index.search(&rows, &q, K, &[], None).expect("valid call");
    assert_eq!(got[0].item as usize, far, "updated row not found first: {got:?}");
    assert!((got[0].score - q.iter().map(|x| x * x).sum::<f32>().sqrt()).abs() < 1e-4);

    // Appended: a new row past the end is found, the removed one comes back.
    let new = index.len();
    rows.extend_from_slice(&q);
    index.set_row(new, &q).expect("appending");
    index.set_row(best, &rows[best * D..(best + 1) * D]).expect("re-adding");
    let got = index.search(&rows, &q, K, &[], None).expect("valid call");
    let top: Vec<usize> = got.iter().take(2).map(|s| s.item as usize).collect();
    assert!(top.contains(&new) && top.contains(&far), "appended and updated rows first: {got:?}");
    assert!(got.iter().any(|s| s.item as usize == best), "re-added row {best} missing: {got:?}");

    // Past the end (other than appending) is refused with the row count.
    assert!(matches!(index.set_row(new + 5, &q), Err(RetrievalError::RowOutOfRange { .. })));
    assert!(matches!(index.set_row(1, &q[1..]), Err(RetrievalError::Dimension { .. })));
}

#[test]
fn filtered_search_returns_k_allowed_items_when_k_pass() {
    let model = model(5);
    // Default options score a small eligible set directly; `scan_below: 0`
    // makes every filtered search walk the graph with the predicate.
    for options in [AnnOptions::default(), AnnOptions { scan_below: 0, ..AnnOptions::default() }] {
        check_filtered(&model, options);
    }
}

fn check_filtered(model: &Model, options: AnnOptions) {
    let rows = &model.weights.item_emb;
    let index = AnnIndex::from_model(model, options.clone()).expect("index builds");
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for kept_percent in [10u32, 1] {
        let mut allow = RowMask::with_capacity(ITEMS + 1);
        for r in 1..=ITEMS {
            if rng.random_range(0..100) < kept_percent {
                allow.insert(r);
            }
        }
        let (mut hit, mut total) = (0, 0);
        for q in queries(30, 7) {
            // Exclude the allowed rows the answer would start with.
            let exclude: Vec<u32> = reference(model, &q, 3, &[], Some(&allow)).iter().map(|s| s.item).collect();
            let got = index.search(rows, &q, K, &exclude, Some(&allow)).expect("valid call");
            assert_eq!(got.len(), K, "{kept_percent} % allowed, {options:?}: k answers");
            check_scores(model, &q, &got, &exclude, Some(&allow));
            let (h, t) = recall(&got, &reference(model, &q, K, &exclude, Some(&allow)));
            hit += h;
            total += t;
        }
        let r = hit as f64 / total as f64;
        assert!(r >= RECALL_FLOOR, "{kept_percent} % allowed, {options:?}: recall@10 {r:.4}");
    }

    // Fewer than k pass: exactly those come back.
    let mut allow = RowMask::with_capacity(ITEMS + 1);
    for r in [7, 70, 700, 3000, 3999] {
        allow.insert(r);
    }
    let q = &queries(1, 8)[0];
    let got = index.search(rows, q, K, &[70], Some(&allow)).expect("valid call");
    assert_eq!(got, reference(model, q, K, &[70], Some(&allow)));
    assert_eq!(got.len(), 4);
    // A mask shorter than the table allows nothing past its end; k = 0 is empty.
    assert!(index.search(rows, q, K, &[], Some(&RowMask::with_capacity(10))).expect("valid call").is_empty());
    assert!(index.search(rows, q, 0, &[], None).expect("valid call").is_empty());
}

#[test]
fn a_saved_index_loads_and_answers_alike() {
    let model = model(9);
    let rows = &model.weights.item_emb;
    let mut index = AnnIndex::from_model(&model, AnnOptions::default()).expect("index builds");
    index.remove_row(17).expect("removable");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("items.usearch");
    index.save(&path).expect("saves");
    let loaded = AnnIndex::load(&path, D, rows, AnnOptions::default()).expect("loads");
    assert_eq!(loaded.len(), index.len());
    assert!(!loaded.contains(0) && !loaded.contains(17) && loaded.contains(18));
    for q in queries(20, 10) {
        assert_eq!(
            loaded.search(rows, &q, K, &[], None).expect("valid call"),
            index.search(rows, &q, K, &[], None).expect("valid call")
        );
    }

    // Another table's shape, or not an index at all: refused, not misread.
    let other_d = AnnIndex::load(&path, D + 1, &vec![0.0; (ITEMS + 1) * (D + 1)], AnnOptions::default());
    assert!(matches!(other_d, Err(RetrievalError::Index { action: "load", .. })), "{other_d:?}");
    let shorter = AnnIndex::load(&path, D, &rows[..100 * D], AnnOptions::default());
    assert!(matches!(shorter, Err(RetrievalError::Index { action: "load", .. })), "{shorter:?}");
    let garbage = dir.path().join("garbage.usearch");
    std::fs::write(&garbage, b"not an index").expect("writes");
    let err = AnnIndex::load(&garbage, D, rows, AnnOptions::default());
    assert!(matches!(err, Err(RetrievalError::Index { action: "load", .. })), "{err:?}");
    let missing = AnnIndex::load(&dir.path().join("missing"), D, rows, AnnOptions::default());
    assert!(matches!(missing, Err(RetrievalError::Index { action: "load", .. })), "{missing:?}");
}

#[test]
fn calls_of_the_wrong_shape_are_refused() {
    let model = model(11);
    let rows = &model.weights.item_emb;
    let index = AnnIndex::from_model(&model, AnnOptions::default()).expect("index builds");
    let q = vec![0.5; D];
    assert!(matches!(index.search(rows, &q[1..], K, &[], None), Err(RetrievalError::Dimension { .. })));
    assert!(matches!(index.search(&rows[D..], &q, K, &[], None), Err(RetrievalError::Rows { .. })));
    assert!(matches!(
        index.search_batch(rows, &[&q, &q], K, &[&[1]], None),
        Err(RetrievalError::ExclusionCount { lists: 1, queries: 2 })
    ));
    assert!(matches!(AnnIndex::build(0, &[], AnnOptions::default()), Err(RetrievalError::ZeroDimension)));
    assert!(matches!(AnnIndex::build(D, &rows[1..], AnnOptions::default()), Err(RetrievalError::Dimension { .. })));
}
