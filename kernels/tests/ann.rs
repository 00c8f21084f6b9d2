//! Approximate retrieval (`AnnIndex`, HNSW): on a seeded random table (no
//! cluster structure: the hard case), recall@10 against the exact scan stays
//! above a stated floor; every score returned is the exact one; updated,
//! removed, excluded and disallowed rows behave as in the exact scan.

use edgerec_kernels::{AnnConfig, AnnIndex, QuantizedTable, RowMask, Scored};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 32;
const ROWS: usize = 5_000;
/// A light graph, so that the test builds it in seconds.
const CONFIG: AnnConfig = AnnConfig { max_connections: 16, ef_construction: 100, ef_search: 64 };
/// Recall@10 floor on this table with [`CONFIG`] (measured 1.0).
const RECALL_FLOOR: f64 = 0.97;

fn random_rows(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n * DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn recall(exact: &[Vec<Scored>], approx: &[Vec<Scored>]) -> f64 {
    let found: usize =
        exact.iter().zip(approx).map(|(e, a)| e.iter().filter(|s| a.iter().any(|t| t.item == s.item)).count()).sum();
    found as f64 / exact.iter().map(Vec::len).sum::<usize>() as f64
}

#[test]
fn ann_recall_and_exact_scores_on_a_random_table() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut rows = random_rows(&mut rng, ROWS);
    let started = std::time::Instant::now();
    let mut index = AnnIndex::new(DIM, &rows, CONFIG).unwrap();
    println!("built in {:?}", started.elapsed());
    let mut exact = QuantizedTable::new(DIM, &rows).unwrap();
    let queries: Vec<Vec<f32>> = (0..64).map(|_| random_rows(&mut rng, 1)).collect();
    let q: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();

    let truth = exact.top_k(&rows, &q, 10, &[], None).unwrap();
    let found = index.top_k(&rows, &q, 10, &[], None).unwrap();
    let r = recall(&truth, &found);
    println!("recall@10 over {ROWS} × {DIM}: {r:.4}");
    assert!(r >= RECALL_FLOOR, "recall@10 {r} under {RECALL_FLOOR}");
    for (t, f) in truth.iter().zip(&found) {
        assert_eq!(f.len(), 10);
        for s in f {
            if let Some(e) = t.iter().find(|e| e.item == s.item) {
                assert_eq!(e.score.to_bits(), s.score.to_bits(), "the exact path's score");
            }
        }
        assert!(f.windows(2).all(|w| w[0].score >= w[1].score), "best first");
    }

    // A row moved onto the query becomes its best answer; a removed row
    // is never returned, nor an excluded or disallowed one.
    let moved = 1234;
    rows[moved * DIM..(moved + 1) * DIM].copy_from_slice(&queries[0]);
    index.set_row(moved, &queries[0]).unwrap();
    exact.set_row(moved, &queries[0]).unwrap();
    assert_eq!(index.top_k(&rows, &q[..1], 10, &[], None).unwrap()[0][0].item, moved as u32);
    index.remove_row(moved);
    let after = index.top_k(&rows, &q[..1], 10, &[], None).unwrap();
    assert!(after[0].iter().all(|s| s.item != moved as u32));
    let best = after[0][0].item;
    let excluded = index.top_k(&rows, &q[..1], 10, &[&[best]], None).unwrap();
    assert!(excluded[0].iter().all(|s| s.item != best));
    let mut even = RowMask::with_capacity(ROWS);
    (0..ROWS).step_by(2).for_each(|r| even.insert(r));
    let allowed = index.top_k(&rows, &q, 10, &[], Some(&even)).unwrap();
    assert!(allowed.iter().flatten().all(|s| s.item % 2 == 0));
    exact.remove_row(moved);
    let allowed_truth = exact.top_k(&rows, &q, 10, &[], Some(&even)).unwrap();
    println!("recall@10 with half the rows allowed: {:.4}", recall(&allowed_truth, &allowed));
    assert!(recall(&allowed_truth, &allowed) >= RECALL_FLOOR);
    assert!(index.stale_fraction() > 0.0);

    // A row appended after the build is found.
    let appended = random_rows(&mut rng, 1);
    rows.extend_from_slice(&appended);
    index.set_row(ROWS, &appended).unwrap();
    assert_eq!(index.top_k(&rows, &[appended.as_slice()], 1, &[], None).unwrap()[0][0].item, ROWS as u32);
}

#[test]
fn bad_calls_are_refused() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let rows = random_rows(&mut rng, 50);
    let mut index = AnnIndex::new(DIM, &rows, CONFIG).unwrap();
    assert!(index.top_k(&rows, &[&[0.0; 3]], 5, &[], None).is_err(), "wrong query dimension");
    assert!(index.top_k(&rows[..DIM], &[&rows[..DIM]], 5, &[], None).is_err(), "not the indexed table");
    assert!(index.set_row(60, &rows[..DIM]).is_err(), "a row past the end");
    assert!(AnnIndex::new(0, &[], CONFIG).is_err());
    assert!(index.top_k(&rows, &[&rows[..DIM]], 0, &[], None).unwrap()[0].is_empty());
}
