//! Incremental encode on the device: a user's keys and values of every layer
//! stay in device memory between requests, and appending events computes
//! only the new rows plus the previously newest one. Mirrors
//! kernels/src/encode.rs `EncoderState`.
//!
//! Why the previously newest row is recomputed: its rab uses `ts[i+1]`, which
//! was the query time and becomes the first new event's timestamp, so its
//! attention output changes, and from layer 2 on so do its keys and values.
//! Rows before it never change while the window has not slid (causal mask,
//! constant normaliser N).

use crate::error::BackendError;
use crate::error::BatchError;
use crate::error::InputError;
use crate::history::{Event, kept_window, validate_items};

use super::CudaBackend;
use super::encode::MAX_ROWS_PER_LAUNCH;
use super::encode::{Job, KvStore};
use super::launch::{DevBuf, alloc, copy};
use super::workspace::{Growable, Workspace};

/// One user's cache on the device: the kept window and, per layer, the keys
/// and values of all its rows (`[layers][L][H·dqk | H·dv]`, allocated once
/// at L rows). A state handed to another backend (or one serving another
/// model) is not misread: that backend rebuilds the cache from the kept
/// events, as the CPU `EncoderState` does on a shape mismatch.
pub struct CudaEncoderState {
    events: Vec<Event>,
    query_time: i64,
    kv: DevBuf<f32>,
    /// Which backend instance holds `kv` (see `CudaBackend::id`).
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

    /// Device bytes held by the cache.
    pub fn device_bytes(&self) -> usize {
        self.kv.bytes()
    }

    /// Host bytes held by the state (the struct and its event buffer).
    pub fn host_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.events.capacity() * std::mem::size_of::<Event>()
    }
}

/// Most users staged in one batched append (bounds the staging buffer
/// together with [`STAGE_BYTES`]).
const MAX_STAGED_USERS: usize = 1024;
/// Budget of the staging buffer of a batched append.
const STAGE_BYTES: usize = 256 << 20;

/// One prepared append: the state (its events already the new window), the
/// first row to compute, and what to restore if the device fails.
struct Prepared<'s> {
    index: usize,
    state: &'s mut CudaEncoderState,
    first: usize,
    old_events: Vec<Event>,
    old_query_time: i64,
}

impl CudaBackend {
    /// Encodes a user from scratch and keeps their keys/values on the device.
    /// Returns the state and the L2-normalised embedding.
    pub fn new_state(&self, events: &[Event], query_time: i64) -> Result<(CudaEncoderState, Vec<f32>), BackendError> {
        let window = kept_window(&self.model.config, events, query_time).map_err(input_error)?;
        let kv = alloc::<f32>(self.launcher(), self.state_len())?;
        let mut state = CudaEncoderState { events: window, query_time, kv, owner: self.id, stale: false };
        let embedding = self.run_state(&mut state, 0)?;
        Ok((state, embedding))
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
    /// launch per kernel per layer (each user's cached rows are staged into
    /// one buffer by device copies, and the new rows copied back). One result
    /// per request, in order; a bad request fails only itself.
    pub fn append_many(
        &self,
        requests: Vec<(&mut CudaEncoderState, &[Event], i64)>,
    ) -> Vec<Result<Vec<f32>, BackendError>> {
        let mut results: Vec<Option<Result<Vec<f32>, BackendError>>> = (0..requests.len()).map(|_| None).collect();
        let mut ready = Vec::new();
        for (index, (state, new_events, query_time)) in requests.into_iter().enumerate() {
            match self.prepare(state, new_events, query_time) {
                Ok((window, first)) => {
                    let old_events = std::mem::replace(&mut state.events, window);
                    let old_query_time = std::mem::replace(&mut state.query_time, query_time);
                    ready.push(Prepared { index, state, first, old_events, old_query_time });
                }
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        let c = &self.model.config;
        let per_user = c.num_layers * c.max_seq_len * c.num_heads * (c.d_qk + c.d_v) * 4;
        let max_users = (STAGE_BYTES / per_user.max(1)).clamp(1, MAX_STAGED_USERS);
        let mut rest: &mut [Prepared<'_>] = &mut ready;
        while !rest.is_empty() {
            let mut take = 0;
            let mut rows = 0;
            while take < rest.len() && take < max_users {
                let r = rest[take].state.events.len() - rest[take].first;
                if take > 0 && rows + r > MAX_ROWS_PER_LAUNCH {
                    break;
                }
                rows += r;
                take += 1;
            }
            let (group, tail) = std::mem::take(&mut rest).split_at_mut(take);
            rest = tail;
            match self.run_group(group) {
                Ok(embeddings) => {
                    for (p, e) in group.iter().zip(embeddings) {
                        results[p.index] = Some(Ok(e));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for p in group.iter_mut() {
                        // The device may have overwritten part of the cache: keep
                        // the old history and rebuild from it on the next append.
                        p.state.events = std::mem::take(&mut p.old_events);
                        p.state.query_time = p.old_query_time;
                        p.state.stale = true;
                        results[p.index] =
                            Some(Err(BackendError::Device { backend: self.name_static(), message: message.clone() }));
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
        let matches = state.owner == self.id && state.kv.len() == self.state_len();
        if !matches {
            state.kv = alloc::<f32>(self.launcher(), self.state_len())?;
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

    /// Runs one group of prepared appends; one embedding per member.
    fn run_group(&self, group: &mut [Prepared<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        if let [one] = group {
            return Ok(vec![self.run_state(one.state, one.first)?]);
        }
        let mut ws = self.workspace();
        // Out of the workspace while the forward borrows the rest of it.
        let mut stage = std::mem::replace(&mut ws.stage, Growable::new());
        let result = self.run_staged(&mut ws, &mut stage, group);
        ws.stage = stage;
        result
    }

    fn run_staged(
        &self,
        ws: &mut Workspace,
        stage: &mut Growable<f32>,
        group: &mut [Prepared<'_>],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let l = self.launcher();
        let c = &self.model.config;
        let width = c.num_heads * (c.d_qk + c.d_v);
        let slot = c.max_seq_len * width;
        let b = group.len();
        let buf = stage.at_least(l, c.num_layers * b * slot)?;
        self.poison(buf, c.num_layers * b * slot)?;
        // Stage the cached rows 0..first of every user (layer by layer).
        for (u, p) in group.iter().enumerate() {
            for layer in 0..c.num_layers {
                copy(l, &p.state.kv, layer * slot, buf, (layer * b + u) * slot, p.first * width)?;
            }
        }
        let embeddings = {
            let jobs: Vec<Job<'_>> = group
                .iter()
                .map(|p| Job { events: &p.state.events, query_time: p.state.query_time, first: p.first })
                .collect();
            self.forward_jobs(ws, &jobs, KvStore::Slots(buf))?
        };
        // And copy the rows computed (first..n) back to each user's cache.
        for (u, p) in group.iter_mut().enumerate() {
            let (first, n) = (p.first, p.state.events.len());
            for layer in 0..c.num_layers {
                let at = first * width;
                copy(l, buf, (layer * b + u) * slot + at, &mut p.state.kv, layer * slot + at, (n - first) * width)?;
            }
            p.state.stale = false;
        }
        Ok(embeddings)
    }

    fn run_state(&self, state: &mut CudaEncoderState, first: usize) -> Result<Vec<f32>, BackendError> {
        let job = Job { events: &state.events, query_time: state.query_time, first };
        let mut ws = self.workspace();
        let mut out = self.forward_jobs(&mut ws, &[job], KvStore::Slots(&state.kv))?;
        state.stale = false;
        out.pop().ok_or_else(|| self.no_result())
    }

    /// f32 elements of one user's key/value cache for this model.
    fn state_len(&self) -> usize {
        let c = &self.model.config;
        c.num_layers * c.max_seq_len * c.num_heads * (c.d_qk + c.d_v)
    }
}
