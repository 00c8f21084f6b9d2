//! A device backend that survives its context: when a call fails with
//! [`BackendError::ContextLost`] (a sticky device fault, after which every
//! call on that context fails), the device backend is dropped, that call and
//! every later one are served by the CPU backend, and a background thread
//! builds a new device backend with exponential backoff, which serves again
//! once built. [`Backend::degraded`] says which of the two serves and why
//! (the server's `/readyz` shows it).
//!
//! Users' states move with no special handling: a CPU backend rebuilds a
//! device state from its kept events on its next append, and the rebuilt
//! device backend does the same with CPU states and with the dead backend's
//! states (another pool's slots). What a dead context held (its pool, its
//! work buffers) is freed when the last call that used it returns.
//!
//! On a GPU, the primary context every backend of the process shares is
//! recreated only once all of them let go of it: a backend of another
//! tenant fails over on its own next call.

use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::backend::{AppendRequest, Backend, BackendState, CpuBackend};
use crate::error::BackendError;
use crate::history::{Event, UserHistory};
use crate::model::Model;
use crate::retrieval::RowMask;
use crate::score::Scored;

/// How a [`Failover`] spaces its rebuild attempts: `first` after the loss,
/// then doubling up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Wait before the first attempt.
    pub first: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
}

impl Default for Backoff {
    /// One second, doubling to a minute: a rebuild compiles the kernels and
    /// uploads the weights (seconds), so tighter retries would mostly compete
    /// with serving.
    fn default() -> Self {
        Backoff { first: Duration::from_secs(1), max: Duration::from_secs(60) }
    }
}

/// Builds a fresh device backend for the model (the backend's own constructor).
pub type OpenDevice = Box<dyn Fn(Arc<Model>) -> Result<Box<dyn Backend>, BackendError> + Send + Sync>;

/// A device backend with a CPU fallback and rebuilds (see the module comment).
pub struct Failover {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<Model>,
    /// The device backend's name (`cuda`, `cuda-emu`), whichever serves.
    name: &'static str,
    /// The device backend; `None` while its context is lost.
    device: RwLock<Option<Arc<dyn Backend>>>,
    /// Built on the first loss (quantising the item table takes about a
    /// second per million items), then kept for later losses.
    cpu: OnceLock<CpuBackend>,
    lost: Mutex<Option<Lost>>,
    open: OpenDevice,
    backoff: Backoff,
    /// Device backends built after a loss.
    rebuilt: Mutex<u64>,
}

/// What `degraded` reports while the device is lost.
struct Lost {
    since: Instant,
    error: String,
    attempts: u32,
    last_attempt: Option<String>,
}

impl Failover {
    /// Serves with `device` (built by `open`), falling back to the CPU and
    /// rebuilding with `open` after a context loss, attempts spaced by `backoff`.
    pub fn new(device: Box<dyn Backend>, open: OpenDevice, backoff: Backoff) -> Self {
        let model = device.model().clone();
        let name = device.name();
        Failover {
            inner: Arc::new(Inner {
                model,
                name,
                device: RwLock::new(Some(Arc::from(device))),
                cpu: OnceLock::new(),
                lost: Mutex::new(None),
                open,
                backoff,
                rebuilt: Mutex::new(0),
            }),
        }
    }

    /// How many device backends were built after a loss (a test and log aid).
    pub fn rebuilds(&self) -> u64 {
        *self.inner.rebuilt.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device backend, unless its context is lost.
    fn device(&self) -> Option<Arc<dyn Backend>> {
        self.inner.device.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn cpu(&self) -> &CpuBackend {
        self.inner.cpu.get_or_init(|| CpuBackend::new(self.inner.model.clone()))
    }

    /// Drops `failed` (when it still serves) after `error`, and starts the rebuilds.
    fn lose(&self, failed: &Arc<dyn Backend>, error: &BackendError) {
        let mut device = self.inner.device.write().unwrap_or_else(|e| e.into_inner());
        if !device.as_ref().is_some_and(|d| Arc::ptr_eq(d, failed)) {
            return; // another call saw the loss first
        }
        *device = None;
        drop(device);
        *self.inner.lost.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Lost { since: Instant::now(), error: error.to_string(), attempts: 0, last_attempt: None });
        let weak = Arc::downgrade(&self.inner);
        let first = self.inner.backoff.first;
        // Without a thread there is no rebuild, but serving goes on on the CPU.
        let _ = std::thread::Builder::new().name("edgerec-rebuild".into()).spawn(move || rebuild(weak, first));
    }

    /// Runs `call` on the device, or on the CPU when the device is lost or
    /// loses its context during the call.
    fn serve<T>(&self, call: impl Fn(&dyn Backend) -> Result<T, BackendError>) -> Result<T, BackendError> {
        if let Some(device) = self.device() {
            match call(device.as_ref()) {
                Err(e) if e.is_context_lost() => self.lose(&device, &e),
                other => return other,
            }
        }
        call(self.cpu())
    }

    /// The device's per-request results, the lost ones marked for the CPU.
    fn split<T>(
        &self,
        device: &Arc<dyn Backend>,
        results: Vec<Result<T, BackendError>>,
    ) -> (Vec<Option<Result<T, BackendError>>>, Vec<usize>) {
        let mut redo = Vec::new();
        let kept = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                Err(e) if e.is_context_lost() => {
                    self.lose(device, &e);
                    redo.push(i);
                    None
                }
                other => Some(other),
            })
            .collect();
        (kept, redo)
    }
}

/// Tries to build a device backend until one is built or the failover is dropped.
fn rebuild(inner: Weak<Inner>, first: Duration) {
    let mut wait = first;
    loop {
        std::thread::sleep(wait);
        let Some(inner) = inner.upgrade() else { return };
        match (inner.open)(inner.model.clone()) {
            Ok(device) => {
                *inner.device.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(device));
                *inner.lost.lock().unwrap_or_else(|e| e.into_inner()) = None;
                *inner.rebuilt.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                return;
            }
            Err(e) => {
                if let Some(lost) = inner.lost.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    lost.attempts += 1;
                    lost.last_attempt = Some(e.to_string());
                }
                wait = (wait * 2).min(inner.backoff.max);
            }
        }
    }
}

impl Backend for Failover {
    fn name(&self) -> &'static str {
        self.inner.name
    }

    fn model(&self) -> &Arc<Model> {
        &self.inner.model
    }

    fn degraded(&self) -> Option<String> {
        let lost = self.inner.lost.lock().unwrap_or_else(|e| e.into_inner());
        lost.as_ref().map(|l| {
            let mut text = format!(
                "{} lost its device context {} s ago ({}); serving on the CPU while it is rebuilt",
                self.inner.name,
                l.since.elapsed().as_secs(),
                l.error
            );
            match &l.last_attempt {
                Some(why) => text.push_str(&format!("; {} rebuild attempts failed, the last: {why}", l.attempts)),
                None => text.push_str("; first rebuild attempt pending"),
            }
            text
        })
    }

    fn encode_batch(&self, users: &[UserHistory<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.serve(|b| b.encode_batch(users))
    }

    fn top_k_batch(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        self.serve(|b| b.top_k_batch(embeddings, k, exclude))
    }

    fn top_k_allowed(
        &self,
        embeddings: &[Vec<f32>],
        k: usize,
        exclude: &[&[u32]],
        allow: &RowMask,
    ) -> Result<Vec<Vec<Scored>>, BackendError> {
        self.serve(|b| b.top_k_allowed(embeddings, k, exclude, allow))
    }

    fn new_state(&self, events: &[Event], query_time: i64) -> Result<(BackendState, Vec<f32>), BackendError> {
        self.serve(|b| b.new_state(events, query_time))
    }

    fn new_state_batch(&self, users: &[UserHistory<'_>]) -> Vec<Result<(BackendState, Vec<f32>), BackendError>> {
        let Some(device) = self.device() else { return self.cpu().new_state_batch(users) };
        let (mut results, redo) = self.split(&device, device.new_state_batch(users));
        if !redo.is_empty() {
            let again: Vec<UserHistory<'_>> = redo
                .iter()
                .map(|&i| UserHistory { events: users[i].events, query_time: users[i].query_time })
                .collect();
            for (&i, r) in redo.iter().zip(self.cpu().new_state_batch(&again)) {
                results[i] = Some(r);
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(no_result()))).collect()
    }

    fn append(
        &self,
        state: &mut BackendState,
        new_events: &[Event],
        query_time: i64,
    ) -> Result<Vec<f32>, BackendError> {
        if let Some(device) = self.device() {
            match device.append(state, new_events, query_time) {
                Err(e) if e.is_context_lost() => self.lose(&device, &e),
                other => return other,
            }
        }
        // A failed append leaves the state as it was; the CPU rebuilds a
        // device state from its events.
        self.cpu().append(state, new_events, query_time)
    }

    fn append_batch(&self, requests: &mut [AppendRequest<'_>]) -> Vec<Result<Vec<f32>, BackendError>> {
        let Some(device) = self.device() else { return self.cpu().append_batch(requests) };
        let (mut results, redo) = self.split(&device, device.append_batch(requests));
        for i in redo {
            let r = &mut requests[i];
            results[i] = Some(self.cpu().append(r.state, r.new_events, r.query_time));
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(no_result()))).collect()
    }
}

fn no_result() -> BackendError {
    BackendError::InvalidCall("a request of a failed-over batch got no result".into())
}
