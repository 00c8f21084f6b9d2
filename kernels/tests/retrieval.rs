//! Exact retrieval from the quantised table: on adversarial tables, every
//! answer equals the f32 scan's (`score::top_k` / `score_all`) exactly —
//! rows, scores and tie order — and the f32 scan itself agrees with a plain
//! f64 cosine within its rounding; batches equal one-by-one calls; allow
//! masks filter before the top is taken.

mod common;

use common::config;
use edgerec_kernels::score::{better, score_all};
use edgerec_kernels::{Model, QuantizedTable, RowMask, Scored, Weights, top_k};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A model whose item table (row 0 = padding) is `items`, V = rows − 1.
fn model_with_items(items: Vec<f32>, d: usize) -> Model {
    let v = items.len() / d - 1;
    let base = Model::random(config(v, d, 1, 1, 4, 4, 8), 1).expect("valid random model");
    Model::new(base.config.clone(), Weights { item_emb: items, ..base.weights }).expect("valid model")
}

fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    // Sum of uniforms: a cheap bell shape, enough for spreading vectors.
    (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() * 0.5
}

fn random_vec(rng: &mut ChaCha8Rng, d: usize) -> Vec<f32> {
    (0..d).map(|_| gaussian(rng)).collect()
}

/// Plain f64 cosine with the scan's norm floor: the oracle the f32 scan is
/// checked against.
fn cosine_f64(q: &[f32], x: &[f32]) -> f64 {
    let dot: f64 = q.iter().zip(x).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
    let norm: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
    dot / norm.max(1e-6)
}

/// The f32 scan restricted to `allow`: every allowed, non-excluded item's
/// f32 score, best first by `better`, the first k.
fn f32_scan(model: &Model, q: &[f32], k: usize, exclude: &[u32], allow: Option<&RowMask>) -> Vec<Scored> {
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

/// Asserts the quantised answer equals the f32 scan, and that the f32 scan
/// is the f64 top-k up to the f32 rounding (`slack` on the score).
fn check(model: &Model, table: &QuantizedTable, q: &[f32], k: usize, exclude: &[u32]) {
    let got = table.top_k(&model.weights.item_emb, &[q], k, &[exclude], None).expect("valid call").remove(0);
    let want = top_k(model, q, k, exclude);
    assert_eq!(got, want, "k {k}");
    // The f32 scan against f64: each score within rounding, and nothing left
    // out beats the last kept by more than the rounding.
    let d = model.config.d_model;
    let q_norm = q.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    let slack = 1e-5 * q_norm;
    let f64_score = |item: u32| cosine_f64(q, &model.weights.item_emb[item as usize * d..(item as usize + 1) * d]);
    for s in &got {
        assert!(
            (f64::from(s.score) - f64_score(s.item)).abs() <= slack,
            "item {} f32 {} f64 {}",
            s.item,
            s.score,
            f64_score(s.item)
        );
    }
    if let Some(last) = got.last().filter(|_| got.len() == k) {
        let kept: Vec<u32> = got.iter().map(|s| s.item).collect();
        for item in 1..=model.config.num_items as u32 {
            if !kept.contains(&item) && !exclude.contains(&item) {
                assert!(f64_score(item) <= f64_score(last.item) + 2.0 * slack, "item {item} left out");
            }
        }
    }
}

/// 300 rows of which every third is the same vector (returned too), the
/// others noise: exact ties, broken by the smaller id.
fn duplicates(d: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let row = random_vec(&mut rng, d);
    let mut items = vec![0.0f32; d];
    for i in 0..300 {
        if i % 3 == 0 {
            items.extend(&row);
        } else {
            items.extend(random_vec(&mut rng, d));
        }
    }
    (items, row)
}

/// `n` rows of norms 1e-9..1e9, zero rows, rows below the norm floor and
/// single spikes (the largest quantisation error relative to the row).
fn mixed_norms(d: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut items = vec![0.0f32; d];
    for i in 0..n {
        let scale = 10f32.powf(rng.random_range(-9.0..9.0));
        match i % 10 {
            // Zero rows: cosine 0 (or −0) for every query.
            0 => items.extend(std::iter::repeat_n(0.0, d)),
            // Rows below the norm floor 1e-6, where the cosine shrinks with the norm.
            1 => items.extend(random_vec(rng, d).iter().map(|v| v * 1e-8)),
            2 => {
                let mut v = vec![1e-4 * scale; d];
                v[i % d] = scale;
                items.extend(v);
            }
            _ => items.extend(random_vec(rng, d).iter().map(|v| v * scale)),
        }
    }
    items
}

/// `n` random rows of which every 50th has ‖x‖ > 2⁶⁰ (its f32 sum of
/// squares overflows, so it is never bounded: always re-ranked).
fn with_unbounded_rows(d: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    assert_eq!(d, 4, "the huge row has 4 values");
    let mut items = vec![0.0f32; d];
    for i in 0..n {
        if i % 50 == 7 {
            items.extend([3e19f32, -2e19, 1e19, 0.0]);
        } else {
            items.extend(random_vec(rng, d));
        }
    }
    items
}

/// `clusters` centres, each with `per` near-duplicates whose differences
/// (1e-7 relative) are far below the int8 step (~1e-2 relative).
fn clustered(d: usize, clusters: usize, per: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut items = vec![0.0f32; d];
    for _ in 0..clusters {
        let centre = random_vec(&mut rng, d);
        for _ in 0..per {
            items.extend(centre.iter().map(|&c| c * (1.0 + rng.random_range(-1e-7f32..1e-7))));
        }
    }
    items
}

#[test]
fn near_duplicate_clusters_match_the_f32_scan() {
    let d = 50;
    let model = model_with_items(clustered(d, 40, 50, 3), d);
    let table = QuantizedTable::from_model(&model);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for trial in 0..6 {
        // Queries aimed at a cluster (its members tie within 1e-7) and random ones.
        let q: Vec<f32> = if trial % 2 == 0 {
            let c = rng.random_range(1..=model.config.num_items);
            model.weights.item_emb[c * d..(c + 1) * d].iter().map(|&v| v + 1e-3 * gaussian(&mut rng)).collect()
        } else {
            random_vec(&mut rng, d)
        };
        // k inside a cluster, across clusters, and past every bound set.
        for k in [1, 10, 49, 50, 51, 130, 1999, 2000, 5000] {
            check(&model, &table, &q, k, &[]);
        }
    }
}

#[test]
fn exact_duplicates_tie_by_the_smaller_id() {
    let d = 7;
    let (items, row) = duplicates(d);
    let model = model_with_items(items, d);
    let table = QuantizedTable::from_model(&model);
    let got = table.top_k(&model.weights.item_emb, &[&row], 20, &[], None).expect("valid call").remove(0);
    assert_eq!(got, top_k(&model, &row, 20, &[]));
    let ids: Vec<u32> = got.iter().take(5).map(|s| s.item).collect();
    assert_eq!(ids, vec![1, 4, 7, 10, 13]);
}

#[test]
fn mixed_norms_tiny_and_zero_rows_match_the_f32_scan() {
    let d = 33;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let model = model_with_items(mixed_norms(d, 3000, &mut rng), d);
    let table = QuantizedTable::from_model(&model);
    for _ in 0..5 {
        let q = random_vec(&mut rng, d);
        for k in [1, 10, 100, 2999, 3000, 4000] {
            check(&model, &table, &q, k, &[]);
        }
    }
    // A zero query: every score is ±0; ties by id among the +0s.
    let zero = vec![0.0f32; d];
    check(&model, &table, &zero, 25, &[]);
    // A query of very large and very small magnitude.
    let big: Vec<f32> = random_vec(&mut rng, d).iter().map(|v| v * 1e15).collect();
    check(&model, &table, &big, 10, &[]);
    let small: Vec<f32> = random_vec(&mut rng, d).iter().map(|v| v * 1e-30).collect();
    check(&model, &table, &small, 10, &[]);
}

#[test]
fn rows_outside_the_bound_are_re_ranked_exactly() {
    let d = 4;
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let model = model_with_items(with_unbounded_rows(d, 200, &mut rng), d);
    let table = QuantizedTable::from_model(&model);
    for _ in 0..4 {
        let q = random_vec(&mut rng, d);
        let got = table.top_k(&model.weights.item_emb, &[&q], 15, &[], None).expect("valid call").remove(0);
        assert_eq!(got, top_k(&model, &q, 15, &[]));
    }
}

#[test]
fn a_batch_equals_one_by_one_and_the_f32_scan() {
    let d = 50;
    // 20,000 rows: several parallel tasks, which share their thresholds.
    let model = model_with_items(clustered(d, 1000, 20, 9), d);
    let table = QuantizedTable::from_model(&model);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let queries: Vec<Vec<f32>> = (0..16).map(|_| random_vec(&mut rng, d)).collect();
    let excludes: Vec<Vec<u32>> =
        (0..16).map(|i| (0..i * 3).map(|_| rng.random_range(1..=20_000u32)).collect()).collect();
    let q_refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
    let e_refs: Vec<&[u32]> = excludes.iter().map(Vec::as_slice).collect();
    let batch = table.top_k(&model.weights.item_emb, &q_refs, 10, &e_refs, None).expect("valid call");
    for i in 0..16 {
        let one = table.top_k(&model.weights.item_emb, &[q_refs[i]], 10, &[e_refs[i]], None).expect("valid call");
        assert_eq!(batch[i], one[0], "query {i}");
        assert_eq!(batch[i], top_k(&model, q_refs[i], 10, e_refs[i]), "query {i}");
        assert!(batch[i].iter().all(|s| !e_refs[i].contains(&s.item)));
    }
}

#[test]
fn ninety_percent_masked_still_returns_k_allowed_items() {
    let d = 50;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let n = 20_000;
    let mut items = vec![0.0f32; d];
    for _ in 0..n {
        items.extend(random_vec(&mut rng, d));
    }
    let model = model_with_items(items, d);
    let table = QuantizedTable::from_model(&model);
    let mut allow = RowMask::with_capacity(n + 1);
    for item in 1..=n {
        if rng.random_bool(0.1) {
            allow.insert(item);
        }
    }
    let queries: Vec<Vec<f32>> = (0..5).map(|_| random_vec(&mut rng, d)).collect();
    let q_refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
    let got = table.top_k(&model.weights.item_emb, &q_refs, 100, &[], Some(&allow)).expect("valid call");
    for (q, g) in queries.iter().zip(&got) {
        assert_eq!(g.len(), 100);
        assert!(g.iter().all(|s| allow.contains(s.item as usize)));
        assert_eq!(g, &f32_scan(&model, q, 100, &[], Some(&allow)));
    }
    // Fewer allowed than k: all of them; a mask shorter than the table allows nothing past it.
    let mut few = RowMask::with_capacity(40);
    few.insert_range(30..40);
    let got = table.top_k(&model.weights.item_emb, &q_refs[..1], 50, &[], Some(&few)).expect("valid call");
    assert_eq!(got[0], f32_scan(&model, q_refs[0], 50, &[], Some(&few)));
    assert_eq!(got[0].len(), 10);
}

#[test]
fn set_and_remove_rows_keep_the_table_exact() {
    let d = 20;
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut items = vec![0.0f32; d];
    for _ in 0..500 {
        items.extend(random_vec(&mut rng, d));
    }
    let mut table = QuantizedTable::new(d, &items).expect("valid table");
    table.remove_row(0);
    // Replace some rows (one with a much larger norm), append 40, remove 30.
    for _ in 0..25 {
        let row = rng.random_range(1..500);
        let v: Vec<f32> = random_vec(&mut rng, d).iter().map(|x| x * 1e3).collect();
        items[row * d..(row + 1) * d].copy_from_slice(&v);
        table.set_row(row, &v).expect("in range");
    }
    for row in 501..541 {
        let v = random_vec(&mut rng, d);
        items.extend(&v);
        table.set_row(row, &v).expect("appends");
    }
    assert!(matches!(table.set_row(600, &vec![0.0; d]), Err(edgerec_kernels::RetrievalError::RowOutOfRange { .. })));
    let removed: Vec<u32> = (0..30).map(|_| rng.random_range(1..541u32)).collect();
    for &r in &removed {
        table.remove_row(r as usize);
    }
    let model = model_with_items(items, d);
    for _ in 0..5 {
        let q = random_vec(&mut rng, d);
        let got = table.top_k(&model.weights.item_emb, &[&q], 50, &[], None).expect("valid call").remove(0);
        // A removed row is an excluded one.
        assert_eq!(got, top_k(&model, &q, 50, &removed));
    }
}

#[test]
fn bad_calls_are_refused_with_what_to_pass() {
    let table = QuantizedTable::new(3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("valid table");
    let rows = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let err = table.top_k(&rows, &[&[1.0, 2.0]], 1, &[], None).unwrap_err();
    assert!(err.to_string().contains("dimension is 3"), "{err}");
    let err = table.top_k(&rows[..3], &[&[1.0, 2.0, 3.0]], 1, &[], None).unwrap_err();
    assert!(err.to_string().contains("2 rows of 3"), "{err}");
    let err = table.top_k(&rows, &[&[1.0, 2.0, 3.0]], 1, &[&[], &[]], None).unwrap_err();
    assert!(err.to_string().contains("one per query"), "{err}");
    assert!(QuantizedTable::empty(0).is_err());
    assert_eq!(table.top_k(&rows, &[&[1.0, 2.0, 3.0]], 0, &[], None).expect("k 0"), vec![Vec::new()]);
    // A non-finite query is answered by the exact path: NaN scores rank first, as in the f32 scan.
    let got = table.top_k(&rows, &[&[f32::NAN, 0.0, 0.0]], 2, &[], None).expect("valid call");
    assert_eq!(got[0].len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_tables_match_the_f32_scan(
        seed in 0u64..10_000,
        d in 1usize..70,
        n in 1usize..1500,
        k in 1usize..60,
        near_dupes in 0usize..4,
        excluded in 0usize..30,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut items = vec![0.0f32; d];
        for i in 0..n {
            // Some rows near-duplicate an earlier one.
            if i > 0 && near_dupes > 0 && i % (near_dupes + 1) == 0 {
                let src = rng.random_range(1..=i);
                let copy: Vec<f32> = items[src * d..(src + 1) * d].iter().map(|&v| v * (1.0 + rng.random_range(-1e-6f32..1e-6))).collect();
                items.extend(copy);
            } else {
                let scale = 10f32.powf(rng.random_range(-3.0..3.0));
                items.extend(random_vec(&mut rng, d).iter().map(|v| v * scale));
            }
        }
        let model = model_with_items(items, d);
        let table = QuantizedTable::from_model(&model);
        let q = random_vec(&mut rng, d);
        let exclude: Vec<u32> = (0..excluded).map(|_| rng.random_range(0..=n as u32 + 3)).collect();
        let got = table.top_k(&model.weights.item_emb, &[&q], k, &[&exclude], None).expect("valid call").remove(0);
        prop_assert_eq!(got, top_k(&model, &q, k, &exclude));
    }
}

/// The CUDA backend's batched top-k (int8 approximations, per-chunk k-th,
/// threshold and candidates on the device, exact re-rank on the host) on
/// `cuda-emu`, over the same adversarial tables: every answer equals the
/// CPU's `top_k` exactly (items, score bits, tie order), for a batch with
/// exclusions, k at and past the device limit (past it the CPU serves).
#[test]
fn the_cuda_batched_top_k_equals_the_cpu_on_the_adversarial_tables() {
    use edgerec_kernels::backend::Backend;
    use edgerec_kernels::cuda::CudaBackend;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let tables: Vec<(&str, usize, Vec<f32>)> = vec![
        ("near-duplicate clusters", 50, clustered(50, 12, 50, 3)),
        ("exact duplicates", 7, duplicates(7).0),
        ("mixed norms, zero and tiny rows", 33, mixed_norms(33, 1200, &mut rng)),
        ("rows outside the bound", 4, with_unbounded_rows(4, 600, &mut rng)),
    ];
    for (name, d, items) in tables {
        let model = model_with_items(items, d);
        let v = model.config.num_items;
        let b = CudaBackend::emulated(std::sync::Arc::new(model.clone())).expect("the emulator builds");
        b.set_poison_outputs(true);
        let mut queries: Vec<Vec<f32>> = (0..4).map(|_| random_vec(&mut rng, d)).collect();
        // Aimed at an item (its near-duplicates tie), zero, huge and tiny.
        queries.push(model.weights.item_emb[3 * d..4 * d].to_vec());
        queries.push(vec![0.0; d]);
        queries.push(random_vec(&mut rng, d).iter().map(|x| x * 1e15).collect());
        queries.push(random_vec(&mut rng, d).iter().map(|x| x * 1e-30).collect());
        let excl: Vec<Vec<u32>> =
            (0..queries.len() as u32).map(|u| (0..u * 7).map(|j| 1 + (j * 31 + u) % v as u32).collect()).collect();
        let refs: Vec<&[u32]> = excl.iter().map(Vec::as_slice).collect();
        for k in [1, 10, 50, 64, 65] {
            let got = b.top_k_batch(&queries, k, &refs).expect("valid call");
            for (u, q) in queries.iter().enumerate() {
                let want = top_k(&model, q, k, &excl[u]);
                let same = got[u].len() == want.len()
                    && got[u]
                        .iter()
                        .zip(&want)
                        .all(|(g, w)| g.item == w.item && g.score.to_bits() == w.score.to_bits());
                assert!(same, "{name}: k {k}, query {u}: cuda-emu {:?} vs cpu {:?}", &got[u], &want);
            }
        }
    }
}
