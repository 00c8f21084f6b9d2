//! The batching scheduler in front of a tenant's backend, as GPU inference
//! servers batch: recommends of one tenant queue here, and one gatherer
//! task per tenant takes what has queued (up to `max_batch`, waiting at most
//! `max_wait_us` after the oldest arrived for more) into one
//! [`super::encode::encode_and_score`] call on the blocking pool.
//!
//! A tenant runs one batch at a time, and each batch holds one of the
//! server's encode permits: requests that arrive while a batch computes
//! form the next one, so batches grow with load without a timer, and a
//! flooding tenant holds one permit, not all of them. A request stays
//! counted (its quota and admission permits travel with it) until its batch
//! ends, even when its client stopped waiting; a request whose client left
//! before its batch started is dropped unencoded.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::encode::{self, EncodeRequest, Engine, Retrieval};
use super::jobs::{self, JobKind};
use super::{Error, Result};
use crate::store::Store;

/// The permits a queued request keeps alive until its batch ends.
pub type Permits = Box<dyn Send>;

struct Queued {
    request: EncodeRequest,
    permits: Permits,
    arrived: Instant,
    reply: oneshot::Sender<Result<Retrieval>>,
}

/// One tenant's queue and gatherer (started on the first request).
pub struct Scheduler {
    queue: OnceLock<mpsc::UnboundedSender<Queued>>,
    /// What the batches compute with: the tenant's model, backend, item map
    /// and caches (not the tenant, which owns this scheduler).
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    encode_slots: Arc<Semaphore>,
    max_batch: usize,
    max_wait: Duration,
    candidates: usize,
}

impl Scheduler {
    /// A scheduler of `engine`'s batches, each taking one of `encode_slots`.
    pub fn new(
        engine: Arc<Engine>,
        store: Arc<dyn Store>,
        encode_slots: Arc<Semaphore>,
        max_batch: usize,
        max_wait_us: u64,
        candidates: usize,
    ) -> Scheduler {
        Scheduler {
            queue: OnceLock::new(),
            engine,
            store,
            encode_slots,
            max_batch: max_batch.max(1),
            max_wait: Duration::from_micros(max_wait_us),
            candidates,
        }
    }

    /// Queues `request` and waits for its batch's answer. Must be called
    /// inside the tokio runtime (the gatherer is a task).
    pub async fn submit(&self, request: EncodeRequest, permits: Permits) -> Result<Retrieval> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(gather(
                receiver,
                self.engine.clone(),
                self.store.clone(),
                self.encode_slots.clone(),
                self.max_batch,
                self.max_wait,
                self.candidates,
            ));
            sender
        });
        let (reply, answer) = oneshot::channel();
        queue
            .send(Queued { request, permits, arrived: Instant::now(), reply })
            .map_err(|_| Error::internal("the encode scheduler", "its gatherer stopped"))?;
        answer.await.map_err(|_| Error::internal("the encode scheduler", "a batch ended without answering"))?
    }
}

/// Moves what has queued already into `batch`, up to `max_batch`.
fn take_queued(queue: &mut mpsc::UnboundedReceiver<Queued>, batch: &mut Vec<Queued>, max_batch: usize) {
    while batch.len() < max_batch {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
}

async fn gather(
    mut queue: mpsc::UnboundedReceiver<Queued>,
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    encode_slots: Arc<Semaphore>,
    max_batch: usize,
    max_wait: Duration,
    candidates: usize,
) {
    while let Some(first) = queue.recv().await {
        let deadline = tokio::time::Instant::from_std(first.arrived + max_wait);
        let mut batch = vec![first];
        take_queued(&mut queue, &mut batch, max_batch);
        while batch.len() < max_batch && !max_wait.is_zero() {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        let Ok(slot) = encode_slots.clone().acquire_owned().await else { return };
        // Company that arrived while the batch waited for a slot.
        take_queued(&mut queue, &mut batch, max_batch);
        batch.retain(|queued| !queued.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        metrics::histogram!("edgerec_batch_size").record(batch.len() as f64);
        let (engine, store) = (engine.clone(), store.clone());
        let span = tracing::info_span!("encode_batch", size = batch.len());
        let _ = jobs::run(JobKind::Encode, span, slot, move || {
            let (requests, waiting): (Vec<EncodeRequest>, Vec<_>) =
                batch.into_iter().map(|q| (q.request, (q.reply, q.permits))).unzip();
            let results = encode::encode_and_score(store.as_ref(), &engine, &requests, candidates);
            for ((reply, permits), result) in waiting.into_iter().zip(results) {
                // The client may have gone; its work is done either way.
                if let Err(Err(error)) = reply.send(result) {
                    error.log_unanswered();
                }
                drop(permits);
            }
            Ok::<(), Error>(())
        })
        .await;
    }
}
