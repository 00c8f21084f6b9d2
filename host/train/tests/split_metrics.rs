//! Sequences, the leave-last-out split and the metrics on hand-computed cases.

use edgerec_kernels::item_map::ItemMap;
use edgerec_train::data::{Action, LogEvent};
use edgerec_train::metrics::MetricsAccumulator;
use edgerec_train::split::{build_sequences, leave_last_out};

fn ev(user: &str, item: &str, ts: i64) -> LogEvent {
    LogEvent { user: user.into(), item: item.into(), ts, action: Action::View }
}

#[test]
fn sequences_sort_stably_by_time_and_merge_consecutive_repeats() {
    let events =
        vec![ev("a", "x", 30), ev("b", "y", 5), ev("a", "y", 10), ev("a", "z", 10), ev("a", "z", 11), ev("a", "w", 10)];
    let mut map = ItemMap::new();
    let (seqs, stats) = build_sequences(&events, &mut map, true, true);
    assert_eq!(seqs.len(), 2);
    assert_eq!(seqs[0].user, "a", "users keep order of first appearance");
    // ts 10 ties keep file order: y, z, w; then z@11 (not consecutive to z@10 after w), x@30.
    let items: Vec<&str> = seqs[0].items.iter().map(|&i| map.external(i).unwrap()).collect();
    assert_eq!(items, ["y", "z", "w", "z", "x"]);
    assert_eq!(seqs[0].timestamps, [10, 10, 10, 11, 30]);
    assert_eq!(stats.merged_repeats, 0);
    let (_, stats) = build_sequences(&[ev("a", "x", 1), ev("a", "x", 2), ev("a", "y", 3)], &mut map, true, true);
    assert_eq!(stats.merged_repeats, 1);
}

#[test]
fn fixed_catalog_counts_unknown_items() {
    let mut map = ItemMap::from_external_ids(vec!["1".into(), "2".into()]).unwrap();
    let (seqs, stats) = build_sequences(&[ev("a", "1", 1), ev("a", "9", 2), ev("a", "2", 3)], &mut map, false, true);
    assert_eq!(seqs[0].items, [1, 2]);
    assert_eq!(stats.unknown_items, 1);
    assert_eq!(map.len(), 2);
}

#[test]
fn leave_last_out_splits_the_last_two_events() {
    let events =
        vec![ev("a", "1", 1), ev("a", "2", 2), ev("a", "3", 3), ev("a", "4", 4), ev("b", "1", 1), ev("b", "2", 2)];
    let mut map = ItemMap::new();
    let (seqs, _) = build_sequences(&events, &mut map, true, true);
    let split = leave_last_out(&seqs);
    assert_eq!(split.train_len, [2, 2]);
    assert_eq!(split.too_short, 1);
    assert_eq!(split.validation.len(), 1);
    assert_eq!((split.validation[0].history_len, split.validation[0].target, split.validation[0].target_ts), (2, 3, 3));
    assert_eq!((split.test[0].history_len, split.test[0].target, split.test[0].target_ts), (3, 4, 4));
}

#[test]
fn metrics_match_hand_computed_values() {
    let mut acc = MetricsAccumulator::default();
    for rank in [Some(1), Some(3), Some(20), Some(100), Some(500), None] {
        acc.add(rank);
    }
    let m = acc.finish();
    let n = 6.0;
    assert_eq!(m.users, 6);
    assert_eq!(m.unrankable, 1);
    assert!((m.hr_10 - 2.0 / n).abs() < 1e-12);
    assert!((m.hr_50 - 3.0 / n).abs() < 1e-12);
    assert!((m.hr_200 - 4.0 / n).abs() < 1e-12);
    // NDCG: 1/log2(2) = 1, 1/log2(4) = 0.5, 1/log2(21) = 0.227670..., 1/log2(101) = 0.150186...
    assert!((m.ndcg_10 - 1.5 / n).abs() < 1e-12);
    assert!((m.ndcg_50 - (1.5 + 0.227_670_248_696_953) / n).abs() < 1e-12);
    assert!((m.ndcg_200 - (1.5 + 0.227_670_248_696_953 + 0.150_190_483_223_687_97) / n).abs() < 1e-12);
    assert!((m.mrr - (1.0 + 1.0 / 3.0 + 0.05 + 0.01 + 0.002) / n).abs() < 1e-12);
    assert_eq!(MetricsAccumulator::default().finish().hr_10, 0.0);
}
