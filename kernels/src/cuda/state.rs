//! Incremental encode on the device: a user's keys and values of every layer
//! stay in device memory between requests (a slot of the backend's
//! `KvPool`), and appending events computes only the new rows plus the
//! previously newest one. Mirrors kernels/src/encode.rs `EncoderState`.
//!
//! Why the previously newest row is recomputed: its rab uses `ts[i+1]`, which
//! was the query time and becomes the first new event's timestamp, so its
//! attention output changes, and from layer 2 on so do its keys and values.
//! Rows before it never change while the window has not slid (causal mask,
//! constant normaliser N).

use crate::error::BackendError;
use crate::error::BatchError;
use crate::error::InputError;
use crate::history::{Event, UserHistory, kept_window, validate_items};

use super::CudaBackend;
use super::encode::MAX_ROWS_PER_LAUNCH;
use super::encode::{Job, KvStore};
use super::kv_pool::{KvPool, Slot};
use super::workspace::Workspace;

/// One user's cache on the device: the kept window and a slot of the
/// backend's key/value pool holding, per layer, the keys and values of all
/// its rows (L rows reserved). A state handed to another backend (or one
/// serving another model) is not misread: that backend rebuilds the cache
/// from the kept events in a slot of its own pool, as the CPU `EncoderState`
/// does on a shape mismatch. Dropping the state frees the slot.
pub struct CudaEncoderState {
    events: Vec<Event>,
    query_time: i64,
    slot: Slot,
    /// Device bytes of the slot (all layers).
    slot_bytes: usize,
    /// Which backend instance's pool holds `slot` (see `CudaBackend::id`).
    owner: u64,
    /// Set when a device error interrupted an encode: the next append recomputes everything.
    stale: bool,
}

fn input_error(source: InputError) -> BackendError {
    BackendError::Input(BatchError { index: 0, source })
}

impl CudaEncoderState {
    /// The kept window: the last ≤ L events, sorted by time.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The query time of the last encode.
    pub fn query_time(&self) -> i64 {
        self.query_time
    }

    /// Device bytes held by the cache (its slot of the pool).
    pub fn device_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Host bytes held by the state (the struct and its event buffer).
    pub fn host_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.events.capacity() * std::mem::size_of::<Event>()
    }
}

/// A device state and its embedding, or why it could not be built.
pub type NewState = Result<(CudaEncoderState, Vec<f32>), BackendError>;

/// One prepared append: the state (its events already the new window), the
/// first row to compute, and what to restore if the device fails.
struct Prepared<'s> {
    index: usize,
    state: &'s mut CudaEncoderState,
    first: usize,
    old_events: Vec<Event>,
    old_query_time: i64,
}

impl<'s> Prepared<'s> {
    /// A new state: every row computed (nothing to restore on an error: the
    /// state is dropped).
    fn fresh(state: &'s mut CudaEncoderState) -> Self {
        let old_query_time = state.query_time;
        Prepared { index: 0, state, first: 0, old_events: Vec::new(), old_query_time }
    }
}

impl CudaBackend {
    /// Encodes a user from scratch and keeps their keys/values on the device.
    /// Returns the state and the L2-normalised embedding.
    pub fn new_state(&self, events: &[Event], query_time: i64) -> Result<(CudaEncoderState, Vec<f32>), BackendError> {
        let window = kept_window(&self.model.config, events, query_time).map_err(input_error)?;
        let mut ws = self.workspace();
        let mut pool = self.pool();
        let slot = pool.acquire(self.launcher())?;
        let slot_bytes = self.state_len() * 4;
        let mut state = CudaEncoderState { events: window, query_time, slot, slot_bytes, owner: self.id, stale: false };
        let mut out = self.run_group(&mut ws, &pool, &mut [Prepared::fresh(&mut state)])?;
        let embedding = out.pop().ok_or_else(|| self.no_result())?;
        Ok((state, embedding))
    }

    /// [`CudaBackend::new_state`] for many users: their rows go through one
    /// launch per kernel per layer (groups of at most MAX_ROWS_PER_LAUNCH
    /// rows), each user's keys and values written to a slot of its own. One
    /// result per user, in order; a bad history fails only itself, a device
    /// error its group.
    pub fn new_states(&self, users: &[UserHistory<'_>]) -> Vec<NewState> {
        let mut results: Vec<Option<NewState>> = (0..users.len()).map(|_| None).collect();
        // The pool may grow (and its buffer move) only while no forward runs:
        // every slot is taken before the first group runs.
        let mut ws = self.workspace();
        let mut pool = self.pool();
        let mut states: Vec<(usize, CudaEncoderState)> = Vec::with_capacity(users.len());
        for (i, user) in users.iter().enumerate() {
            let built =
                kept_window(&self.model.config, user.events, user.query_time).map_err(input_error).and_then(|events| {
                    let slot = pool.acquire(self.launcher())?;
                    Ok(CudaEncoderState {
                        events,
                        query_time: user.query_time,
                        slot,
                        slot_bytes: self.state_len() * 4,
                        owner: self.id,
                        stale: false,
                    })
                });
            match built {
                Ok(state) => states.push((i, state)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut rest: &mut [(usize, CudaEncoderState)] = &mut states;
        let mut outcomes: Vec<Result<Vec<Vec<f32>>, BackendError>> = Vec::new();
        let mut sizes = Vec::new();
        while !rest.is_empty() {
            let mut take = 0;
            let mut rows = 0;
            while take < rest.len() && (take == 0 || rows + rest[take].1.events.len() <= MAX_ROWS_PER_LAUNCH) {
                rows += rest[take].1.events.len();
                take += 1;
            }
            let (group, tail) = std::mem::take(&mut rest).split_at_mut(take);
            rest = tail;
            let mut prepared: Vec<Prepared<'_>> = group.iter_mut().map(|(_, s)| Prepared::fresh(s)).collect();
            outcomes.push(self.run_group(&mut ws, &pool, &mut prepared));
            sizes.push(take);
        }
        drop(pool);
        let mut states = states.into_iter();
        for (outcome, size) in outcomes.into_iter().zip(sizes) {
            let members: Vec<(usize, CudaEncoderState)> = states.by_ref().take(size).collect();
            match outcome {
                Ok(embeddings) => {
                    for ((i, state), embedding) in members.into_iter().zip(embeddings) {
                        results[i] = Some(Ok((state, embedding)));
                    }
                }
                // The states are dropped (their slots freed): nothing to restore.
                Err(e) => {
                    for (i, _) in members {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(self.no_result()))).collect()
    }

    /// Appends newer events and re-encodes at `query_time`, with the same
    /// rules as the CPU `EncoderState::append`: incremental (new rows + the
    /// old newest row) while the window has not slid and the new events are
    /// not older than the newest kept one; a full recompute otherwise; an
    /// empty `new_events` re-encodes at a new query time. On error the state
    /// is unchanged (after a device error the next append recomputes fully).
    pub fn append(
        &self,
        state: &mut CudaEncoderState,
        new_events: &[Event],
        query_time: i64,
    ) -> Result<Vec<f32>, BackendError> {
        let mut out = self.append_many(vec![(state, new_events, query_time)]);
        out.pop().unwrap_or_else(|| Err(self.no_result()))
    }

    /// [`CudaBackend::append`] for many users: their rows go through one
    /// launch per kernel per layer, reading and writing each user's slot of
    /// the key/value pool in place. One result per request, in order; a bad
    /// request fails only itself.
    pub fn append_many(
        &self,
        requests: Vec<(&mut CudaEncoderState, &[Event], i64)>,
    ) -> Vec<Result<Vec<f32>, BackendError>> {
        let mut results: Vec<Option<Result<Vec<f32>, BackendError>>> = (0..requests.len()).map(|_| None).collect();
        // The pool may grow (and its buffer move) only while no forward runs.
        let mut ws = self.workspace();
        let mut pool = self.pool();
        let mut ready = Vec::new();
        for (index, (state, new_events, query_time)) in requests.into_iter().enumerate() {
            match self.prepare(&mut pool, state, new_events, query_time) {
                Ok((window, first)) => {
                    let old_events = std::mem::replace(&mut state.events, window);
                    let old_query_time = std::mem::replace(&mut state.query_time, query_time);
                    ready.push(Prepared { index, state, first, old_events, old_query_time });
                }
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        let mut rest: &mut [Prepared<'_>] = &mut ready;
        while !rest.is_empty() {
            let mut take = 0;
            let mut rows = 0;
            while take < rest.len() {
                let r = rest[take].state.events.len() - rest[take].first;
                if take > 0 && rows + r > MAX_ROWS_PER_LAUNCH {
                    break;
                }
                rows += r;
                take += 1;
            }
            let (group, tail) = std::mem::take(&mut rest).split_at_mut(take);
            rest = tail;
            match self.run_group(&mut ws, &pool, group) {
                Ok(embeddings) => {
                    for (p, e) in group.iter().zip(embeddings) {
                        results[p.index] = Some(Ok(e));
                    }
                }
                Err(e) => {
                    for p in group.iter_mut() {
                        // The device may have overwritten part of the cache: keep
                        // the old history and rebuild from it on the next append.
                        p.state.events = std::mem::take(&mut p.old_events);
                        p.state.query_time = p.old_query_time;
                        p.state.stale = true;
                        results[p.index] = Some(Err(e.clone()));
                    }
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(self.no_result()))).collect()
    }

    fn no_result(&self) -> BackendError {
        BackendError::Device { backend: self.name_static(), message: "an append returned no embedding".into() }
    }

    /// Validates an append and returns the new window and its first row to
    /// compute; re-homes a state built by another backend or for another model.
    fn prepare(
        &self,
        pool: &mut KvPool,
        state: &mut CudaEncoderState,
        new_events: &[Event],
        query_time: i64,
    ) -> Result<(Vec<Event>, usize), BackendError> {
        validate_items(&self.model.config, new_events).map_err(input_error)?;
        let mut new_sorted = new_events.to_vec();
        new_sorted.sort_by_key(|e| e.ts);
        let newest_kept = state.events.last().map_or(i64::MIN, |e| e.ts);
        let last_ts = new_sorted.last().map_or(newest_kept, |e| e.ts.max(newest_kept));
        if query_time < last_ts {
            return Err(input_error(InputError::QueryBeforeLastEvent { query_time, last_ts }));
        }
        let n_old = state.events.len();
        let in_order = new_sorted.first().is_none_or(|e| e.ts >= newest_kept);
        let fits = n_old + new_sorted.len() <= self.model.config.max_seq_len;
        // Same check as the CPU state's `cache_matches`: a cache laid out for
        // another model, or held by another backend, is rebuilt, not misread.
        let matches = state.owner == self.id && pool.owns(&state.slot);
        if !matches {
            state.slot = pool.acquire(self.launcher())?;
            state.slot_bytes = self.state_len() * 4;
            state.owner = self.id;
        }
        if in_order && fits && n_old > 0 && !state.stale && matches {
            let mut window = state.events.clone();
            window.extend_from_slice(&new_sorted);
            Ok((window, n_old - 1))
        } else {
            let mut all = state.events.clone();
            all.extend_from_slice(&new_sorted);
            // Validated above: items in range, query time after the last event;
            // a state with no events cannot exist.
            let window = kept_window(&self.model.config, &all, query_time).map_err(input_error)?;
            Ok((window, 0))
        }
    }

    /// Runs one group of prepared appends (or one new state) in the pool's
    /// slots; one embedding per member.
    fn run_group(
        &self,
        ws: &mut Workspace,
        pool: &KvPool,
        group: &mut [Prepared<'_>],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let cache = pool.buffer().ok_or_else(|| BackendError::Device {
            backend: self.name_static(),
            message: "the key/value pool has no buffer although a state holds a slot".into(),
        })?;
        let slots: Vec<usize> = group.iter().map(|p| p.state.slot.index()).collect();
        let embeddings = {
            let jobs: Vec<Job<'_>> = group
                .iter()
                .map(|p| Job { events: &p.state.events, query_time: p.state.query_time, first: p.first })
                .collect();
            self.forward_jobs(ws, &jobs, KvStore::Pool { cache, capacity: pool.capacity(), slots: &slots })?
        };
        for p in group.iter_mut() {
            p.state.stale = false;
        }
        Ok(embeddings)
    }

    /// f32 elements of one user's key/value cache for this model (all layers).
    pub(super) fn state_len(&self) -> usize {
        let c = &self.model.config;
        c.num_layers * c.max_seq_len * c.num_heads * (c.d_qk + c.d_v)
    }
}
