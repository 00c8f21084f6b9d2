//! The engine behind a server or CLI call: the CPU backend here, the CUDA
//! backend (kernels/src/cuda, on a GPU or on the `cuda-emu` CPU emulator)
//! behind the same trait, the per-user incremental state each backend owns,
//! and the choice between backends.

use std::sync::Arc;

use rayon::prelude::*;

use crate::cuda::{CudaBackend, CudaEncoderState};
use crate::encode::{EncoderState, encode_batch};
use crate::error::{BackendError, BatchError, InputError};
use crate::history::{Event, UserHistory};
use crate::model::Model;
use crate::retrieval::{QuantizedTable, RowMask};
use crate::score::Scored;

/// One user's incremental-encode state (kept window plus every layer's
/// keys and values), held by the backend that built it: in host memory for
/// the CPU, in device memory for CUDA. A cache of users holds these whatever
/// the backend; a state given to a backend of the other kind is rebuilt from
/// its kept events (never misread).
pub enum BackendState {
    /// The CPU engine's state.
    Cpu(EncoderState),
    /// A CUDA (or cuda-emu) state: keys and values resident on the device.
    Cuda(CudaEncoderState),
}

impl BackendState {
    /// The kept window: the last ≤ L events, sorted by time.
    pub fn events(&self) -> &[Event] {
        match self {
            BackendState::Cpu(s) => s.events(),
            BackendState::Cuda(s) => s.events(),
        }
    }

    /// The query time of the last encode.
    pub fn query_time(&self) -> i64 {
        match self {
            BackendState::Cpu(s) => s.query_time(),
            BackendState::Cuda(s) => s.query_time(),
        }
    }

    /// Item ids of the kept window, the set to exclude from retrieval.
    pub fn kept_items(&self) -> Vec<u32> {
        self.events().iter().map(|e| e.item).collect()
    }

    /// Host memory held by the state, in bytes.
    pub fn host_bytes(&self) -> usize {
        match self {
            BackendState::Cpu(s) => s.size_bytes(),
            BackendState::Cuda(s) => s.host_bytes(),
        }
    }

    /// Device memory held by the state, in bytes (0 for a CPU state): what a
    /// byte-budget LRU of device-resident users counts.
    pub fn device_bytes(&self) -> usize {
        match self {
            BackendState::Cpu(_) => 0,
            BackendState::Cuda(s) => s.device_bytes(),
        }
    }
}

/// One user's part of a batched incremental append.
pub struct AppendRequest<'a> {
    /// The user's state (updated in place on success).
    pub state: &'a mut BackendState,
    /// Events since the state's last encode, in any order.
    pub new_events: &'a [Event],
    /// The request's time.
    pub query_time: i64,
}

fn input(source: InputError) -> BackendError {
    BackendError::Input(BatchError { index: 0, source })
}

/// The events a state of another backend stands for, plus the new ones: the
/// history a backend rebuilds its own state from.
fn rebuilt_history(state: &BackendState, new_events: &[Event]) -> Vec<Event> {
    let mut all = state.events().to_vec();
    all.extend_from_slice(new_events);
    all
}

/// An engine that encodes users and scores the catalog for one loaded model.
pub trait Backend: Send + Sync {
    /// `"cpu"`, `"cuda"` or `"cuda-emu"`.
    fn name(&self) -> &'static str;
    /// The model this backend serves.
    fn model(&self) -> &Arc<Model>;
    /// Encodes a jagged batch of users (see [`crate::encode_batch`]).
    fn encode_batch(&self, users: &[UserHistory<'_>]) -> Result<Vec<Vec<f32>>, BackendError>;
    /// Cosine top-k for each embedding, `exclude[i]` skipped for user i
    /// (`exclude` is empty or has one list per embedding).
    fn top_k_batch(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<Scored>>, BackendError>;

    /// [`Backend::top_k_batch`] over only the rows set in `allow` (a
    /// pipeline's retrieval filter: bit r is item row r): each list holds
    /// `k` items whenever `k` rows pass, however few that is of the table.
    fn top_k_allowed(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
        allow: &RowMask,
    ) -> Result<Vec<Vec<Scored>>, BackendError>;

    /// Encodes a user from scratch and keeps their state (see
    /// [`EncoderState::new`]). Returns the state and the L2-normalised embedding.
    fn new_state(&self, events: &[Event], query_time: i64) -> Result<(BackendState, Vec<f32>), BackendError>;

    /// [`Backend::new_state`] for many users in one batched forward (cache
    /// misses and users whose window slid, which a server rebuilds): one
    /// result per user, in order; a user with a bad history fails only
    /// itself. The default builds them one by one.
    fn new_state_batch(&self, users: &[UserHistory<'_>]) -> Vec<Result<(BackendState, Vec<f32>), BackendError>> {
        users.iter().map(|u| self.new_state(u.events, u.query_time)).collect()
    }

    /// Appends newer events to a state and re-encodes at `query_time`, with
    /// the rules of [`EncoderState::append`] (incremental while the window
    /// has not slid, a full recompute otherwise). A state built by a backend
    /// of another kind is rebuilt from its events. On an input error the
    /// state is unchanged.
    fn append(&self, state: &mut BackendState, new_events: &[Event], query_time: i64)
    -> Result<Vec<f32>, BackendError>;

    /// `None` while the backend serves as chosen; otherwise what it does
    /// instead and why (a device backend whose context was lost serves on
    /// the CPU while it is rebuilt: [`crate::failover::Failover`]). Shown
    /// by the server's `/readyz`.
    fn degraded(&self) -> Option<String> {
        None
    }

    /// [`Backend::append`] for many users in one call; one result per request,
    /// in order (a bad request fails only itself). The default runs them one
    /// by one.
    fn append_batch(&self, requests: &mut [AppendRequest<'_>]) -> Vec<Result<Vec<f32>, BackendError>> {
        requests.iter_mut().map(|r| self.append(r.state, r.new_events, r.query_time)).collect()
    }
}

/// The CPU backend: the fast f32 forward of this crate, parallel across
/// users, and exact top-k from a quantised copy of the item table, a batch
/// of users in one pass ([`QuantizedTable`]).
pub struct CpuBackend {
    model: Arc<Model>,
    /// The model's items, quantised: built once with the backend (about a
    /// second per million items of 50 dimensions). Its answers are the f32
    /// scan's, scores and tie order included.
    items: QuantizedTable,
}

impl CpuBackend {
    /// A CPU backend serving `model`.
    pub fn new(model: Arc<Model>) -> Self {
        let items = QuantizedTable::from_model(&model);
        CpuBackend { model, items }
    }
}

/// Checks a top-k batch's arguments against the model; shared by the backends.
pub fn check_top_k_call(model: &Model, embeddings: &[Vec<f32>], exclude: &[&[u32]]) -> Result<(), BackendError> {
    let d = model.config.d_model;
    if let Some((i, e)) = embeddings.iter().enumerate().find(|(_, e)| e.len() != d) {
        return Err(BackendError::InvalidCall(format!(
            "embedding {i} has {} values, the model's d_model is {d}",
            e.len()
        )));
    }
    if !exclude.is_empty() && exclude.len() != embeddings.len() {
        return Err(BackendError::InvalidCall(format!(
            "{} exclusion lists for {} embeddings: pass none or one per embedding",
            exclude.len(),
            embeddings.len()
        )));
    }
    Ok(())
}

impl CpuBackend {
    /// One pass of the quantised table for every embedding, only the rows
    /// in `allow` when given.
    fn scan(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
        allow: Option<&RowMask>,
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        check_top_k_call(&self.model, embeddings, exclude)?;
        let queries: Vec<&[f32]> = embeddings.iter().map(Vec::as_slice).collect();
        self.items
            .top_k(&self.model.weights.item_emb, &queries, k, exclude, allow)
            .map_err(|e| BackendError::InvalidCall(e.to_string()))
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn model(&self) -> &Arc<Model> {
        &self.model
    }

    fn encode_batch(&self, users: &[UserHistory<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        Ok(encode_batch(&self.model, users)?)
    }

    fn top_k_batch(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        self.scan(embeddings, k, exclude, None)
    }

    fn top_k_allowed(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
        allow: &RowMask,
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        self.scan(embeddings, k, exclude, Some(allow))
    }

    fn new_state(&self, events: &[Event], query_time: i64) -> Result<(BackendState, Vec<f32>), BackendError> {
        let (state, embedding) = EncoderState::new(&self.model, events, query_time).map_err(input)?;
        Ok((BackendState::Cpu(state), embedding))
    }

    /// Stacked groups of users, groups in parallel ([`EncoderState::new_batch`]).
    fn new_state_batch(&self, users: &[UserHistory<'_>]) -> Vec<Result<(BackendState, Vec<f32>), BackendError>> {
        EncoderState::new_batch(&self.model, users)
            .into_iter()
            .map(|r| r.map(|(state, embedding)| (BackendState::Cpu(state), embedding)).map_err(input))
            .collect()
    }

    fn append(
        &self,
        state: &mut BackendState,
        new_events: &[Event],
        query_time: i64,
    ) -> Result<Vec<f32>, BackendError> {
        match state {
            BackendState::Cpu(s) => s.append(&self.model, new_events, query_time).map_err(input),
            BackendState::Cuda(_) => {
                crate::history::validate_items(&self.model.config, new_events).map_err(input)?;
                let (fresh, embedding) = self.new_state(&rebuilt_history(state, new_events), query_time)?;
                *state = fresh;
                Ok(embedding)
            }
        }
    }

    /// Parallel across users (each append is independent).
    fn append_batch(&self, requests: &mut [AppendRequest<'_>]) -> Vec<Result<Vec<f32>, BackendError>> {
        requests.par_iter_mut().map(|r| self.append(r.state, r.new_events, r.query_time)).collect()
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        self.backend_name()
    }

    fn model(&self) -> &Arc<Model> {
        self.served_model()
    }

    fn encode_batch(&self, users: &[UserHistory<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.encode_users(users)
    }

    fn top_k_batch(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        check_top_k_call(self.served_model(), embeddings, exclude)?;
        self.top_k_device(embeddings, k, exclude)
    }

    /// On the host, over the same quantised table and exact bound: the
    /// device's threshold selection knows no mask, and a filter that drops
    /// most rows would leave it short of `k` allowed candidates.
    fn top_k_allowed(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
        allow: &RowMask,
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        check_top_k_call(self.served_model(), embeddings, exclude)?;
        self.top_k_host_allowed(embeddings, k, exclude, allow)
    }

    fn new_state(&self, events: &[Event], query_time: i64) -> Result<(BackendState, Vec<f32>), BackendError> {
        let (state, embedding) = CudaBackend::new_state(self, events, query_time)?;
        Ok((BackendState::Cuda(state), embedding))
    }

    /// The users' rows go through one launch per kernel per layer (see
    /// [`CudaBackend::new_states`]).
    fn new_state_batch(&self, users: &[UserHistory<'_>]) -> Vec<Result<(BackendState, Vec<f32>), BackendError>> {
        self.new_states(users)
            .into_iter()
            .map(|r| r.map(|(state, embedding)| (BackendState::Cuda(state), embedding)))
            .collect()
    }

    fn append(
        &self,
        state: &mut BackendState,
        new_events: &[Event],
        query_time: i64,
    ) -> Result<Vec<f32>, BackendError> {
        match state {
            BackendState::Cuda(s) => CudaBackend::append(self, s, new_events, query_time),
            BackendState::Cpu(_) => {
                crate::history::validate_items(&self.served_model().config, new_events).map_err(input)?;
                let (fresh, embedding) = Backend::new_state(self, &rebuilt_history(state, new_events), query_time)?;
                *state = fresh;
                Ok(embedding)
            }
        }
    }

    /// The users' rows go through one launch per kernel per layer (see
    /// [`CudaBackend::append_many`]); CPU states are rebuilt on the device.
    fn append_batch(&self, requests: &mut [AppendRequest<'_>]) -> Vec<Result<Vec<f32>, BackendError>> {
        let mut results: Vec<Option<Result<Vec<f32>, BackendError>>> = (0..requests.len()).map(|_| None).collect();
        let mut device = Vec::new();
        let mut device_index = Vec::new();
        for (i, r) in requests.iter_mut().enumerate() {
            match &mut *r.state {
                BackendState::Cuda(s) => {
                    device.push((s, r.new_events, r.query_time));
                    device_index.push(i);
                }
                other => results[i] = Some(Backend::append(self, other, r.new_events, r.query_time)),
            }
        }
        for (i, r) in device_index.into_iter().zip(self.append_many(device)) {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(BackendError::InvalidCall("an append request got no result".into()))))
            .collect()
    }
}
