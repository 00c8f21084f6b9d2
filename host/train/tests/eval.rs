//! Evaluation: engine-based ranks against a brute-force ranking, the
//! popularity baseline on a hand-computed case, and the curve PNG.

use edgerec_kernels::encode::encode;
use edgerec_kernels::history::Event;
use edgerec_kernels::{Model, ModelConfig};
use edgerec_train::eval::{evaluate_model, evaluate_popularity};
use edgerec_train::metrics::MetricsAccumulator;
use edgerec_train::split::{EvalCase, UserSequence, leave_last_out};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn sequences(rng: &mut ChaCha8Rng, users: usize, num_items: u32) -> Vec<UserSequence> {
    (0..users)
        .map(|u| {
            let n = rng.random_range(3..30);
            let items = (0..n).map(|_| rng.random_range(1..=num_items)).collect();
            let timestamps = (0..n as i64).map(|i| 1_000_000 + i * 3600).collect();
            UserSequence { user: format!("u{u}"), items, timestamps }
        })
        .collect()
}

#[test]
fn engine_ranks_equal_a_brute_force_full_sort() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // 300 items so that many targets fall beyond the top 200 (MRR path).
    let model = Model::random(ModelConfig::research(300, 8, 1, 1, 8, 10), 5).unwrap();
    let seqs = sequences(&mut rng, 60, 300);
    let split = leave_last_out(&seqs);
    let got = evaluate_model(&model, &seqs, &split.test).unwrap();
    let mut expected = MetricsAccumulator::default();
    for case in &split.test {
        let seq = &seqs[case.user_index];
        let events: Vec<Event> =
            (0..case.history_len).map(|i| Event { item: seq.items[i], ts: seq.timestamps[i] }).collect();
        let window: Vec<u32> = seq.items[case.history_len.saturating_sub(10)..case.history_len].to_vec();
        if window.contains(&case.target) {
            expected.add(None);
            continue;
        }
        let user = encode(&model, &events, case.target_ts).unwrap();
        let score = |c: u32| -> f64 {
            let row = model.item_row(c);
            let dot: f64 = user.iter().zip(row).map(|(a, b)| *a as f64 * *b as f64).sum();
            dot / (row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()).max(1e-6)
        };
        let mut ranked: Vec<u32> = (1..=300u32).filter(|c| !window.contains(c)).collect();
        ranked.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
        expected.add(Some(ranked.iter().position(|&c| c == case.target).unwrap() + 1));
    }
    let want = expected.finish();
    assert_eq!(got.users, want.users);
    assert_eq!(got.unrankable, want.unrankable);
    for (g, w) in [(got.hr_10, want.hr_10), (got.ndcg_50, want.ndcg_50), (got.hr_200, want.hr_200), (got.mrr, want.mrr)]
    {
        assert!((g - w).abs() < 1e-9, "engine {g} vs brute force {w}");
    }
    assert!(want.hr_200 < 1.0, "some targets must rank beyond 200 to test the MRR path");
}

#[test]
fn popularity_ranks_the_most_frequent_unseen_items() {
    let seq = |user: &str, items: &[u32]| UserSequence {
        user: user.into(),
        items: items.to_vec(),
        timestamps: (0..items.len() as i64).collect(),
    };
    // Counts over histories: item 1 ×3, 2 ×2, 3 ×1, 4 ×0.
    let seqs = vec![seq("a", &[1, 2, 4]), seq("b", &[1, 2, 3]), seq("c", &[1, 3])];
    let cases = vec![
        EvalCase { user_index: 0, history_len: 2, target: 4, target_ts: 2 }, // order 3,4 after excluding 1,2: rank 2
        EvalCase { user_index: 1, history_len: 2, target: 3, target_ts: 2 }, // rank 1
        EvalCase { user_index: 2, history_len: 1, target: 3, target_ts: 1 }, // 2,3,4 after excluding 1: rank 2
    ];
    let m = evaluate_popularity(&seqs, &cases, 4, 200);
    let mut acc = MetricsAccumulator::default();
    for r in [2, 1, 2] {
        acc.add(Some(r));
    }
    assert_eq!(m, acc.finish());
}

#[test]
fn the_curve_png_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let history: Vec<edgerec_train::train::EpochRecord> = (1..=4)
        .map(|e| edgerec_train::train::EpochRecord {
            epoch: e,
            train_loss: 5.0 / e as f64,
            val_loss: 5.5 / e as f64,
            val_ndcg_10: Some(0.02 * e as f64),
            val_hr_10: Some(0.05 * e as f64),
            test_hr_10: Some(0.045 * e as f64),
            test_ndcg_10: Some(0.018 * e as f64),
            seconds: 1.0,
            tokens_per_s: 100.0,
        })
        .collect();
    let curve_file = dir.path().join("reference.json");
    std::fs::write(&curve_file, r#"{"what": "test", "curve": [{"epoch": 1, "hr@10": 0.03, "ndcg@10": 0.01, "loss": 4.0}, {"epoch": 3, "hr@10": 0.09, "ndcg@10": 0.04}]}"#).unwrap();
    let reference = edgerec_train::plot::ReferenceCurve::load(&curve_file).unwrap();
    assert_eq!(reference.curve.len(), 2);
    let popularity = edgerec_train::metrics::Metrics { hr_10: 0.03, ndcg_10: 0.015, ..Default::default() };
    let extras = edgerec_train::plot::PlotExtras {
        popularity: Some(popularity),
        popularity_split: "test",
        reference: Some(reference),
    };
    let path = dir.path().join("curves.png");
    edgerec_train::plot::plot_curves(&history, &extras, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // A file that is no curve is a clear error.
    std::fs::write(&curve_file, r#"{"points": []}"#).unwrap();
    let err = edgerec_train::plot::ReferenceCurve::load(&curve_file).err().unwrap();
    assert!(err.to_string().contains("not a curve file"), "{err}");
}
