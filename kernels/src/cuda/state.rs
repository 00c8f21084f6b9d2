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

use cudarc::driver::CudaSlice;

use crate::backend::BackendError;
use crate::encode::BatchError;
use crate::error::InputError;
use crate::history::{Event, kept_window, validate_items};

use super::CudaBackend;
use super::device::dev_err;
use super::encode::{Job, KvStore};

/// One user's cache on the device: the kept window and, per layer, the keys
/// and values of all its rows (`[layers][L][H·dqk | H·dv]`, allocated once
/// at L rows). Use it only with the backend that created it.
pub struct CudaEncoderState {
    events: Vec<Event>,
    query_time: i64,
    kv: CudaSlice<f32>,
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
        self.kv.len() * std::mem::size_of::<f32>()
    }
}

impl CudaBackend {
    /// Encodes a user from scratch and keeps their keys/values on the device.
    /// Returns the state and the L2-normalised embedding.
    pub fn new_state(&self, events: &[Event], query_time: i64) -> Result<(CudaEncoderState, Vec<f32>), BackendError> {
        let window = kept_window(&self.model.config, events, query_time).map_err(input_error)?;
        let c = &self.model.config;
        let len = c.num_layers * c.max_seq_len * c.num_heads * (c.d_qk + c.d_v);
        let kv = self.device.stream.alloc_zeros::<f32>(len).map_err(dev_err("state allocation"))?;
        let mut state = CudaEncoderState { events: window, query_time, kv, stale: false };
        let embedding = self.run_state(&mut state, 0)?;
        Ok((state, embedding))
    }

    /// Appends newer events and re-encodes at `query_time`, with the same
    /// rules as the CPU `EncoderState::append`: incremental (new rows + the
    /// old newest row) while the window has not slid and the new events are
    /// not older than the newest kept one; a full recompute otherwise; an
    /// empty `new_events` re-encodes at a new query time. On error the state
    /// is unchanged (after a device error the next append recomputes fully).
    pub fn append(&self, state: &mut CudaEncoderState, new_events: &[Event], query_time: i64) -> Result<Vec<f32>, BackendError> {
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
        let (window, first) = if in_order && fits && n_old > 0 && !state.stale {
            let mut window = state.events.clone();
            window.extend_from_slice(&new_sorted);
            (window, n_old - 1)
        } else {
            let mut all = state.events.clone();
            all.extend_from_slice(&new_sorted);
            let window = kept_window(&self.model.config, &all, query_time)
                .expect("validated: non-empty, items in range, query time after the last event");
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

    fn run_state(&self, state: &mut CudaEncoderState, first: usize) -> Result<Vec<f32>, BackendError> {
        let job = Job { events: &state.events, query_time: state.query_time, first };
        let mut ws = self.workspace();
        let mut out = self.forward_jobs(&mut ws, &[job], KvStore::Cache(&mut state.kv))?;
        state.stale = false;
        Ok(out.pop().expect("one job, one embedding"))
    }
}
