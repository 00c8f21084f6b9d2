//! Per-user sequences (stable-sorted by time) and the leave-last-out split of
//! HSTU.md: the last event is the test target, the one before it the
//! validation target, the rest is training history.

use std::collections::HashMap;

use edgerec_kernels::item_map::ItemMap;

use crate::data::LogEvent;

/// One user's events as model ids, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct UserSequence {
    /// External user id.
    pub user: String,
    /// Model item ids (1..=V).
    pub items: Vec<u32>,
    /// Unix seconds, same length, non-decreasing.
    pub timestamps: Vec<i64>,
}

impl UserSequence {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True without events.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The first `n` events as a new sequence.
    pub fn prefix(&self, n: usize) -> UserSequence {
        UserSequence {
            user: self.user.clone(),
            items: self.items[..n].to_vec(),
            timestamps: self.timestamps[..n].to_vec(),
        }
    }
}

/// What building sequences did with the rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SequenceStats {
    /// Events whose item is not in a fixed catalog (counted, not used).
    pub unknown_items: usize,
    /// Consecutive repeats of the same item by the same user that were merged
    /// (view → cart → purchase of one product is one step of the sequence).
    pub merged_repeats: usize,
}

/// Groups events per user (users in order of first appearance), stable-sorts
/// each by time, and maps items through `items`. With `grow`, unseen items are
/// appended to the map; otherwise they are counted in `unknown_items`.
pub fn build_sequences(
    events: &[LogEvent],
    items: &mut ItemMap,
    grow: bool,
    merge_repeats: bool,
) -> (Vec<UserSequence>, SequenceStats) {
    let mut stats = SequenceStats::default();
    let mut order: Vec<&str> = Vec::new();
    let mut per_user: HashMap<&str, Vec<(i64, u32)>> = HashMap::new();
    for event in events {
        let id = if grow { Some(items.push(&event.item)) } else { items.internal(&event.item) };
        let Some(id) = id else {
            stats.unknown_items += 1;
            continue;
        };
        let list = per_user.entry(event.user.as_str()).or_insert_with(|| {
            order.push(event.user.as_str());
            Vec::new()
        });
        list.push((event.ts, id));
    }
    let mut sequences = Vec::with_capacity(order.len());
    for user in order {
        let mut list = per_user.remove(user).expect("every user in order has a list");
        list.sort_by_key(|&(ts, _)| ts); // stable: equal timestamps keep file order
        let mut seq = UserSequence {
            user: user.to_string(),
            items: Vec::with_capacity(list.len()),
            timestamps: Vec::with_capacity(list.len()),
        };
        for (ts, item) in list {
            if merge_repeats && seq.items.last() == Some(&item) {
                stats.merged_repeats += 1;
                continue;
            }
            seq.items.push(item);
            seq.timestamps.push(ts);
        }
        sequences.push(seq);
    }
    (sequences, stats)
}

/// One ranking case: encode `history` at `target_ts`, rank `target`.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalCase {
    /// Index of the user in the sequence list.
    pub user_index: usize,
    /// Number of leading events of the user's sequence that form the history.
    pub history_len: usize,
    /// The item to rank.
    pub target: u32,
    /// Its timestamp (the encode's query time).
    pub target_ts: i64,
}

/// The leave-last-out split.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    /// Per user, how many leading events are training data (all for users too short to evaluate).
    pub train_len: Vec<usize>,
    /// Validation cases (second-to-last event of users with ≥ 3 events).
    pub validation: Vec<EvalCase>,
    /// Test cases (last event of users with ≥ 3 events).
    pub test: Vec<EvalCase>,
    /// Users with fewer than 3 events: trained on, never evaluated.
    pub too_short: usize,
}

/// Splits every sequence: last = test, second to last = validation, rest = train.
pub fn leave_last_out(sequences: &[UserSequence]) -> Split {
    let mut split = Split::default();
    for (user_index, seq) in sequences.iter().enumerate() {
        let n = seq.len();
        if n < 3 {
            split.train_len.push(n);
            split.too_short += 1;
            continue;
        }
        split.train_len.push(n - 2);
        split.validation.push(EvalCase {
            user_index,
            history_len: n - 2,
            target: seq.items[n - 2],
            target_ts: seq.timestamps[n - 2],
        });
        split.test.push(EvalCase {
            user_index,
            history_len: n - 1,
            target: seq.items[n - 1],
            target_ts: seq.timestamps[n - 1],
        });
    }
    split
}
