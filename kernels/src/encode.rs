//! Encoding users on the CPU: one user, a jagged batch (no padding, parallel
//! across users), and the incremental per-user [`EncoderState`].

use rayon::prelude::*;

use crate::error::{BatchError, InputError};
use crate::forward::{LayerKv, UserRows, forward, forward_group};
use crate::history::{Event, UserHistory, kept_window, validate_items};
use crate::microkernel::simd_in_use;
use crate::model::Model;

/// A batch is cut into groups of consecutive users holding at most this
/// many rows together (a longer user is a group alone); each group is one forward
/// whose projections are one product over all its users' stacked rows, and
/// groups run in parallel. Stacking pays where users are short (full 6-row
/// tiles, one pass over the weights and one call's overhead for many users);
/// a 200-event user is already a product of 200 rows, and since the tiles
/// read the weights in place, larger groups only push the working set
/// (4·(2·D + 2·H·(d_qk+d_v) + H·d_v) bytes a row: 0.36 MB at 256 ML-1M
/// rows) out of L2. Measured on ML-1M: no gain from groups of 3,200 rows.
const GROUP_ROWS: usize = 256;

/// Encodes one user: events in any order (sorted stably by time), longer
/// histories keep their last L events. Returns the L2-normalised embedding \[D\].
pub fn encode(model: &Model, events: &[Event], query_time: i64) -> Result<Vec<f32>, InputError> {
    let window = kept_window(&model.config, events, query_time)?;
    let mut kv = empty_kv(model, window.len());
    Ok(forward(model, &window, query_time, 0, &mut kv))
}

/// Encodes many users of different lengths in one call. Each user costs only
/// their own rows (no padding). Consecutive users are stacked into groups of
/// a few hundred rows, each projection being one product over a group's rows,
/// and groups run in parallel; the result is bit-identical to encoding the
/// users one by one (every output row of a product is accumulated in the
/// same order whatever rows it is stacked with).
pub fn encode_batch(model: &Model, users: &[UserHistory<'_>]) -> Result<Vec<Vec<f32>>, BatchError> {
    // Validate everything first so a bad user fails the batch before any work.
    let windows = users
        .iter()
        .enumerate()
        .map(|(index, user)| {
            kept_window(&model.config, user.events, user.query_time).map_err(|source| BatchError { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let groups = stack_groups(windows.iter().map(Vec::len));
    let run = |range: &std::ops::Range<usize>| {
        let mut kvs: Vec<Vec<LayerKv>> = windows[range.clone()].iter().map(|w| empty_kv(model, w.len())).collect();
        let mut rows: Vec<UserRows<'_>> = windows[range.clone()]
            .iter()
            .zip(&users[range.clone()])
            .zip(&mut kvs)
            .map(|((window, user), kv)| UserRows { events: window, query_time: user.query_time, start: 0, kv })
            .collect();
        forward_group(model, &mut rows)
    };
    let per_group: Vec<Vec<Vec<f32>>> =
        if groups.len() > 1 { groups.par_iter().map(run).collect() } else { groups.iter().map(run).collect() };
    Ok(per_group.into_iter().flatten().collect())
}

/// Consecutive users (given their rows) cut into groups of at most
/// [`GROUP_ROWS`] rows together, a longer user a group alone.
fn stack_groups(rows_per_user: impl ExactSizeIterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    // The portable products (the `gemm` crate) round a row differently
    // depending on its neighbours: there, one forward per user keeps a batch
    // bit-identical to encoding its users one by one.
    let group_rows = if simd_in_use() { GROUP_ROWS } else { 0 };
    let users = rows_per_user.len();
    let mut groups = Vec::new();
    let (mut first, mut rows) = (0, 0);
    for (i, n) in rows_per_user.enumerate() {
        if i > first && rows + n > group_rows {
            groups.push(first..i);
            (first, rows) = (i, 0);
        }
        rows += n;
    }
    if first < users {
        groups.push(first..users);
    }
    groups
}

fn empty_kv(model: &Model, rows: usize) -> Vec<LayerKv> {
    let c = &model.config;
    (0..c.num_layers)
        .map(|_| LayerKv {
            keys: Vec::with_capacity(rows * c.num_heads * c.d_qk),
            values: Vec::with_capacity(rows * c.attn_width()),
        })
        .collect()
}

/// A user's state and embedding, or why their history was refused.
pub type Built<S> = Result<(S, Vec<f32>), InputError>;

/// The per-user cache of the incremental encode.
///
/// Holds the kept window (sorted events, ≤ L) and, for every layer, the keys
/// and values of all kept rows but the newest. The newest row is not cached
/// because appending an event changes it: its rab uses `ts[i+1]`, which for
/// the newest row is the query time and becomes the new event's timestamp.
/// An append therefore recomputes the old newest row plus the new rows in
/// every layer, against the cached keys/values of the rows before.
///
/// Size, for a window of n events (see [`EncoderState::size_bytes`]):
/// `16·n + 4·n·num_layers·H·(d_qk + d_v)` bytes of payload (the key/value
/// buffers hold n − 1 rows plus the newest row's slot, reused by the next
/// append) plus a fixed 56-byte header and 48 bytes of vector headers per
/// layer. ML-1M base (2 layers, 1×50) at n = 200: ≈ 163 KB; ML-20M base
/// (4 layers, 4×64) at n = 200: ≈ 1.64 MB.
///
/// A state must be appended to with the model it was built with.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderState {
    events: Vec<Event>,
    query_time: i64,
    /// Per layer, keys and values of rows `0..n-1`.
    kv: Vec<LayerKv>,
}

impl EncoderState {
    /// Encodes a user from scratch and keeps the cache. Returns the state
    /// and the L2-normalised embedding.
    pub fn new(model: &Model, events: &[Event], query_time: i64) -> Result<(Self, Vec<f32>), InputError> {
        let window = kept_window(&model.config, events, query_time)?;
        Ok(Self::from_window(model, window, query_time))
    }

    /// [`EncoderState::new`] for many users in one batched forward: the
    /// users are stacked into groups as in [`encode_batch`] (each projection
    /// one product over a group's rows, groups in parallel), and each keeps
    /// its state. One result per user, in order; a user with a bad history
    /// fails only itself. The states and embeddings are bit-identical to
    /// building them one by one.
    pub fn new_batch(model: &Model, users: &[UserHistory<'_>]) -> Vec<Built<Self>> {
        let mut results: Vec<Option<Built<Self>>> = (0..users.len()).map(|_| None).collect();
        let mut valid: Vec<(usize, Vec<Event>)> = Vec::with_capacity(users.len());
        for (i, user) in users.iter().enumerate() {
            match kept_window(&model.config, user.events, user.query_time) {
                Ok(mut window) => {
                    window.shrink_to_fit();
                    valid.push((i, window));
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let groups = stack_groups(valid.iter().map(|(_, w)| w.len()));
        let run = |range: &std::ops::Range<usize>| {
            let members = &valid[range.clone()];
            let mut kvs: Vec<Vec<LayerKv>> = members.iter().map(|(_, w)| empty_kv(model, w.len())).collect();
            let mut rows: Vec<UserRows<'_>> = members
                .iter()
                .zip(&mut kvs)
                .map(|((i, window), kv)| UserRows { events: window, query_time: users[*i].query_time, start: 0, kv })
                .collect();
            let embeddings = forward_group(model, &mut rows);
            drop(rows);
            members
                .iter()
                .zip(kvs)
                .zip(embeddings)
                .map(|(((i, window), kv), embedding)| {
                    let mut state = EncoderState { events: window.clone(), query_time: users[*i].query_time, kv };
                    state.drop_newest_row(model);
                    (*i, state, embedding)
                })
                .collect::<Vec<_>>()
        };
        let built: Vec<Vec<(usize, Self, Vec<f32>)>> =
            if groups.len() > 1 { groups.par_iter().map(run).collect() } else { groups.iter().map(run).collect() };
        for (i, state, embedding) in built.into_iter().flatten() {
            results[i] = Some(Ok((state, embedding)));
        }
        results.into_iter().map(|r| r.expect("every user is refused above or built in a group")).collect()
    }

    fn from_window(model: &Model, window: Vec<Event>, query_time: i64) -> (Self, Vec<f32>) {
        let mut window = window;
        window.shrink_to_fit();
        let mut kv = empty_kv(model, window.len());
        let embedding = forward(model, &window, query_time, 0, &mut kv);
        let mut state = EncoderState { events: window, query_time, kv };
        state.drop_newest_row(model);
        (state, embedding)
    }

    /// Appends newer events (in any order among themselves) and re-encodes
    /// at `query_time`. Incremental while the window has not slid (old n +
    /// new m ≤ L): costs m + 1 query rows per layer. A full recompute when
    /// the window slides, or when a new event is older than the newest kept
    /// one (the sort would move it inside the cached rows). An empty
    /// `new_events` re-encodes the same history at a new query time.
    ///
    /// On error the state is unchanged.
    pub fn append(&mut self, model: &Model, new_events: &[Event], query_time: i64) -> Result<Vec<f32>, InputError> {
        validate_items(&model.config, new_events)?;
        let mut new_sorted = new_events.to_vec();
        new_sorted.sort_by_key(|e| e.ts);
        let newest_kept = self.events.last().map_or(i64::MIN, |e| e.ts);
        let last_ts = new_sorted.last().map_or(newest_kept, |e| e.ts.max(newest_kept));
        if query_time < last_ts {
            return Err(InputError::QueryBeforeLastEvent { query_time, last_ts });
        }
        let n_old = self.events.len();
        let in_order = new_sorted.first().is_none_or(|e| e.ts >= newest_kept);
        let fits = n_old + new_sorted.len() <= model.config.max_seq_len;
        if !(in_order && fits && n_old > 0 && self.cache_matches(model)) {
            let mut all = std::mem::take(&mut self.events);
            all.extend_from_slice(&new_sorted);
            let window = kept_window(&model.config, &all, query_time)
                .expect("validated: non-empty, items in range, query time after the last event");
            let (state, embedding) = Self::from_window(model, window, query_time);
            *self = state;
            return Ok(embedding);
        }
        // Exact growth: with the newest row's slot kept spare, the buffers
        // hold exactly n rows of capacity after every encode, never doubling.
        let rows_added = new_sorted.len() + 1;
        for layer in &mut self.kv {
            layer.keys.reserve_exact(rows_added * model.config.num_heads * model.config.d_qk);
            layer.values.reserve_exact(rows_added * model.config.attn_width());
        }
        self.events.reserve_exact(new_sorted.len());
        self.events.extend_from_slice(&new_sorted);
        self.query_time = query_time;
        let embedding = forward(model, &self.events, query_time, n_old - 1, &mut self.kv);
        self.drop_newest_row(model);
        Ok(embedding)
    }

    /// The kept window: the last ≤ L events, sorted by time.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The query time of the last encode.
    pub fn query_time(&self) -> i64 {
        self.query_time
    }

    /// Item ids of the kept window, the set to exclude from retrieval.
    pub fn kept_items(&self) -> Vec<u32> {
        self.events.iter().map(|e| e.item).collect()
    }

    /// Bytes held by the state: the struct itself, the event buffer and the
    /// per-layer key/value buffers, counted by allocated capacity.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.events.capacity() * std::mem::size_of::<Event>()
            + self
                .kv
                .iter()
                .map(|l| {
                    std::mem::size_of::<LayerKv>()
                        + (l.keys.capacity() + l.values.capacity()) * std::mem::size_of::<f32>()
                })
                .sum::<usize>()
    }

    /// Whether the cached buffers have the shapes `model` expects for rows
    /// `0..n-1`; a state used with another model is recomputed, not misread.
    fn cache_matches(&self, model: &Model) -> bool {
        let c = &model.config;
        let rows = self.events.len().saturating_sub(1);
        self.kv.len() == c.num_layers
            && self
                .kv
                .iter()
                .all(|l| l.keys.len() == rows * c.num_heads * c.d_qk && l.values.len() == rows * c.attn_width())
    }

    /// Drops the newest row's keys/values: the next append recomputes that row,
    /// and reuses its slot (the buffers keep capacity for exactly n rows).
    fn drop_newest_row(&mut self, model: &Model) {
        let c = &model.config;
        let rows = self.events.len().saturating_sub(1);
        for layer in &mut self.kv {
            layer.keys.truncate(rows * c.num_heads * c.d_qk);
            layer.values.truncate(rows * c.attn_width());
        }
    }
}
