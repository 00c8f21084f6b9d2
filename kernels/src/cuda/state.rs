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

use crate::backend::BackendError;
use crate::encode::BatchError;
use crate::error::InputError;
use crate::history::{Event, kept_window, validate_items};

use super::CudaBackend;
use super::encode::{Job, KvStore};
use super::launch::{DevBuf, alloc};

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

impl CudaBackend {
    /// Encodes a user from scratch and keeps their keys/values on the device.
    /// Returns the state and the L2-normalised embedding.
    pub fn new_state(
        &self,
        events: &[Event],
        query_time: i64,
    ) -> Result<(CudaEncoderState, Vec<f32>), BackendError> {
        let window = kept_window(&self.model.config, events, query_time).map_err(input_error)?;
        let kv = alloc::<f32>(self.launcher(), self.state_len())?;
        let mut state = CudaEncoderState {
            events: window,
            query_time,
            kv,
            owner: self.id,
            stale: false,
        };
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
        validate_items(&self.model.config, new_events).map_err(input_error)?;
        let mut new_sorted = new_events.to_vec();
        new_sorted.sort_by_key(|e| e.ts);
        let newest_kept = state.events.last().map_or(i64::MIN, |e| e.ts);
        let last_ts = new_sorted
            .last()
            .map_or(newest_kept, |e| e.ts.max(newest_kept));
        if query_time < last_ts {
            return Err(input_error(InputError::QueryBeforeLastEvent {
                query_time,
                last_ts,
            }));
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
        let (window, first) = if in_order && fits && n_old > 0 && !state.stale && matches {
            let mut window = state.events.clone();
            window.extend_from_slice(&new_sorted);
            (window, n_old - 1)
        } else {
            let mut all = state.events.clone();
            all.extend_from_slice(&new_sorted);
            // Validated above: items in range, query time after the last event;
            // a state with no events cannot exist.
            let window = kept_window(&self.model.config, &all, query_time).map_err(input_error)?;
            (window, 0)
        };
        let old_events = std::mem::replace(&mut state.events, window);
        let old_query_time = std::mem::replace(&mut state.query_time, query_time);
        self.run_state(state, first).inspect_err(|_| {
            // The device may have overwritten part of the cache: keep the old
            // history and rebuild the cache from it on the next append.
            state.events = old_events;
            state.query_time = old_query_time;
            state.stale = true;
        })
    }

    fn run_state(
        &self,
        state: &mut CudaEncoderState,
        first: usize,
    ) -> Result<Vec<f32>, BackendError> {
        let job = Job {
            events: &state.events,
            query_time: state.query_time,
            first,
        };
        let mut ws = self.workspace();
        let mut out = self.forward_jobs(&mut ws, &[job], KvStore::Cache(&mut state.kv))?;
        state.stale = false;
        out.pop().ok_or_else(|| BackendError::Device {
            backend: self.name_static(),
            message: "a one-user encode returned no embedding".into(),
        })
    }

    /// f32 elements of one user's key/value cache for this model.
    fn state_len(&self) -> usize {
        let c = &self.model.config;
        c.num_layers * c.max_seq_len * c.num_heads * (c.d_qk + c.d_v)
    }
}
