//! The event outbox of a host on a shared store: event batches acknowledged
//! while the store could not be reached, kept in a local redb file (fsync'd
//! before the 2xx, like the embedded store) and forwarded in arrival order,
//! each exactly once, when the store returns.
//!
//! Exactly once: every queued batch travels under an idempotency key (the
//! client's, or one made here), so a batch whose forwarding was interrupted
//! after the store took it is recognised as a replay when sent again, and the
//! store de-duplicates the events of a partly stored batch by ids derived
//! from that key. In order: while anything is queued, new batches queue
//! behind it instead of overtaking it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, StoredEvent};

/// Queued batches: arrival sequence → JSON [`Queued`].
const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// Pause between forwarding attempts while the store is unreachable.
const RETRY: Duration = Duration::from_millis(250);
/// Batches forwarded between two commits of the outbox.
const FORWARD_AT_ONCE: usize = 256;
/// Pause while there is nothing to forward.
const IDLE: Duration = Duration::from_millis(50);

/// One batch waiting for the store.
#[derive(Serialize, Deserialize)]
struct Queued {
    tenant: String,
    events: Vec<StoredEvent>,
    batch_key: String,
    keep: usize,
}

/// The outbox file and the number of batches in it.
pub struct Outbox {
    db: Database,
    depth: AtomicUsize,
}

impl Outbox {
    /// Opens (or creates) `outbox.redb` in `dir`; batches left by an earlier
    /// run are forwarded first.
    pub fn open(dir: &Path) -> Result<Outbox, StoreError> {
        let db = Database::create(dir.join("outbox.redb"))?;
        let txn = db.begin_write()?;
        let depth = txn.open_table(QUEUE)?.len()? as usize;
        txn.commit()?;
        Ok(Outbox { db, depth: AtomicUsize::new(depth) })
    }

    /// Batches waiting to be forwarded.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Queues a batch durably (committed and fsync'd on return).
    pub fn push(&self, tenant: &str, events: &[StoredEvent], batch_key: &str, keep: usize) -> Result<(), StoreError> {
        let queued =
            Queued { tenant: tenant.to_string(), events: events.to_vec(), batch_key: batch_key.to_string(), keep };
        let txn = self.db.begin_write()?;
        {
            let mut queue = txn.open_table(QUEUE)?;
            let next = queue.last()?.map_or(0, |(seq, _)| seq.value() + 1);
            queue.insert(next, serde_json::to_vec(&queued)?.as_slice())?;
        }
        txn.commit()?;
        self.depth.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!("edgerec_outbox_batches").set(self.depth() as f64);
        Ok(())
    }

    /// The oldest `limit` batches, oldest first.
    fn front(&self, limit: usize) -> Result<Vec<(u64, Queued)>, StoreError> {
        let txn = self.db.begin_read()?;
        let queue = txn.open_table(QUEUE)?;
        let mut out = Vec::new();
        for row in queue.iter()?.take(limit) {
            let (seq, value) = row?;
            out.push((seq.value(), serde_json::from_slice(value.value())?));
        }
        Ok(out)
    }

    /// Removes forwarded batches, in one commit.
    fn remove(&self, forwarded: &[u64]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut queue = txn.open_table(QUEUE)?;
            for seq in forwarded {
                queue.remove(*seq)?;
            }
        }
        txn.commit()?;
        self.depth.fetch_sub(forwarded.len(), Ordering::AcqRel);
        metrics::gauge!("edgerec_outbox_batches").set(self.depth() as f64);
        Ok(())
    }
}

/// Forwards `outbox`'s batches to `store`, oldest first, on a thread of its own.
pub fn start_forwarder(outbox: Arc<Outbox>, store: Arc<dyn Store>) {
    let spawned =
        std::thread::Builder::new().name("edgerec-outbox".into()).spawn(move || forward(&outbox, store.as_ref()));
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the outbox forwarder: queued events stay queued until a restart");
    }
}

fn forward(outbox: &Outbox, store: &dyn Store) {
    loop {
        let front = match outbox.front(FORWARD_AT_ONCE) {
            Ok(front) => front,
            Err(error) => {
                tracing::error!(%error, "cannot read the outbox");
                std::thread::sleep(RETRY);
                continue;
            }
        };
        if front.is_empty() {
            std::thread::sleep(IDLE);
            continue;
        }
        let mut forwarded = Vec::with_capacity(front.len());
        let mut pause = None;
        for (seq, batch) in front {
            match store.append_events(&batch.tenant, &batch.events, Some(&batch.batch_key), batch.keep) {
                Ok(outcome) => {
                    tracing::debug!(
                        tenant = %batch.tenant, accepted = outcome.accepted, duplicates = outcome.duplicates,
                        replayed = outcome.replayed, "queued event batch forwarded"
                    );
                    forwarded.push(seq);
                }
                Err(error) if error.is_unavailable() => {
                    pause = Some(RETRY);
                    break;
                }
                Err(error) => {
                    // Acknowledged events are never dropped: the operator sees
                    // this, fixes the store, and the batch goes through.
                    tracing::error!(%error, tenant = %batch.tenant, "the store refused a queued event batch; retrying in 5 s");
                    pause = Some(Duration::from_secs(5));
                    break;
                }
            }
        }
        if !forwarded.is_empty() {
            tracing::info!(batches = forwarded.len(), "queued event batches forwarded");
            // On failure they are sent again later as replays of their keys: stored once.
            if let Err(error) = outbox.remove(&forwarded) {
                tracing::error!(%error, "cannot remove forwarded batches from the outbox");
                pause = Some(RETRY);
            }
        }
        if let Some(pause) = pause {
            std::thread::sleep(pause);
        }
    }
}
