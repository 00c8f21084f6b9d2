//! Ingest: a checked batch of shopper events goes to the store, committed
//! before the answer; on a shared store that cannot be reached, to this
//! host's outbox, which forwards it in order and once when the store
//! returns ([`super::outbox`]).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::app::{AppState, Tenant};
use super::jobs::{self, JobKind};
use super::{Error, Result};
use crate::store::{AppendOutcome, StoredEvent};
use crate::timing::stage_done;

/// Keys the server makes for batches sent without one start with this: a
/// control character, which no `Idempotency-Key` header can carry (header
/// values are visible ASCII, and the HTTP layer takes only those), so no
/// client key can ever name a batch the server keyed.
pub const SERVER_KEY_PREFIX: &str = "\u{1}edge:";

/// A key for a batch sent without one: 128 random bits (hex) in the
/// server's own namespace. Two batches drawing the same key would store the
/// second as a replay of the first, so the draw must never repeat: at a
/// billion keys alive the chance of any repeat is about 10^-21.
pub fn server_batch_key() -> String {
    use rand::Rng;
    let bits: [u8; 16] = rand::rng().random();
    let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
    format!("{SERVER_KEY_PREFIX}{hex}")
}

/// What storing a batch did.
pub struct Ingested {
    /// As the store (or, when queued, the whole batch) counts it.
    pub outcome: AppendOutcome,
    /// The batch waits in this host's outbox for the shared store.
    pub queued: bool,
}

/// Stores a checked batch (every event with a user) under `batch_key`,
/// holding the tenant's write `quota` permit until it is stored: 404
/// unknown_item when an item is in neither the model nor the catalog.
pub async fn append(
    app: &Arc<AppState>,
    tenant: Arc<Tenant>,
    quota: OwnedSemaphorePermit,
    events: Vec<StoredEvent>,
    batch_key: Option<String>,
) -> Result<Ingested> {
    let app = app.clone();
    jobs::run(JobKind::Write, tracing::Span::current(), quota, move || store_batch(&app, &tenant, &events, batch_key))
        .await
}

fn store_batch(app: &AppState, tenant: &Tenant, events: &[StoredEvent], batch_key: Option<String>) -> Result<Ingested> {
    let name = &tenant.record.name;
    let engine = &tenant.engine;
    for event in events {
        let item = &event.item;
        if engine.items.internal(item).is_some() {
            continue;
        }
        match engine.catalog.contains(item) {
            Ok(true) => {}
            Ok(false) => return Err(Error::unknown_item(item)),
            // Store away: an item this host read from the catalog before is known.
            Err(error) if error.is_unavailable() && engine.catalog.contained(item) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let start = Instant::now();
    // Twice the model's window: what the recommend path reads back.
    let keep = 2 * engine.model.config.max_seq_len;
    let Some(outbox) = app.outbox.as_ref() else {
        let outcome = app.store.append_events(name, events, batch_key.as_deref(), keep)?;
        stage_done("store_events", start);
        return Ok(Ingested { outcome, queued: false });
    };
    // On a shared store every batch travels under a key, so that one cut
    // off mid-write and then queued is still stored once.
    let batch_key = batch_key.unwrap_or_else(server_batch_key);
    // While batches wait, new ones queue behind them: forwarded in order.
    if outbox.depth() == 0 {
        match app.store.append_events(name, events, Some(&batch_key), keep) {
            Ok(outcome) => {
                stage_done("store_events", start);
                return Ok(Ingested { outcome, queued: false });
            }
            Err(error) if error.is_unavailable() => {}
            Err(error) => return Err(error.into()),
        }
    }
    outbox.push(name, events, &batch_key, keep)?;
    stage_done("store_events", start);
    let outcome = AppendOutcome { accepted: events.len(), duplicates: 0, replayed: false };
    Ok(Ingested { outcome, queued: true })
}
