//! One recommend, after the HTTP layer checked the request: admission
//! (the tenant's quota, then the server's), retrieval (history, encode and
//! score: batched through the tenant's scheduler, or alone), the tenant's
//! plugin pipeline over the candidates, and the answer in external ids.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::app::{AppState, Tenant};
use super::encode::{self, EncodeRequest, Retrieval};
use super::jobs::{self, JobKind};
use super::pipeline::{self, RequestInfo, StageSummary};
use super::quota::QuotaKind;
use super::{Error, Result};
use crate::store::StoredEvent;

/// A recommend let in: its tenant's in-flight slot and one of the server's
/// admission permits, held until every job of the request has ended.
pub struct Admission(Arc<(OwnedSemaphorePermit, OwnedSemaphorePermit)>);

/// Lets a recommend in, or refuses it at once: quota first (a flooding
/// tenant gets 429 rate_limited), then admission (a saturated server 503
/// overloaded), instead of a queue.
pub fn admit(app: &AppState, tenant: &Tenant) -> Result<Admission> {
    let quota = app.quotas.admit(&tenant.record.name, QuotaKind::Recommend)?;
    let admitted =
        app.admission.clone().try_acquire_owned().map_err(|_| Error::overloaded(app.config.retry_after_s))?;
    Ok(Admission(Arc::new((quota, admitted))))
}

/// What a checked recommend asks for.
pub struct RecommendQuery {
    /// The shopper; their stored events join the request's.
    pub user: Option<String>,
    /// Recent events not (yet) posted.
    pub events: Vec<StoredEvent>,
    /// How many items to return.
    pub k: usize,
    /// Unix seconds (default: now).
    pub query_time: Option<i64>,
    /// Request attributes for the plugins, values as text.
    pub context: Vec<(String, String)>,
    /// Whether to report what each stage did.
    pub explain: bool,
}

/// One recommended item.
pub struct Recommended {
    /// External item id.
    pub item: String,
    /// Final score (the model's or the last re-scoring stage's).
    pub score: f32,
    /// With `explain`: reason codes the stages left.
    pub reasons: Vec<String>,
}

/// The answer to one recommend.
pub struct Recommendation {
    /// Best first, at most `k`.
    pub items: Vec<Recommended>,
    /// The pipeline version that produced the answer (0 = no pipeline).
    pub pipeline_version: u32,
    /// With `explain`: what each stage did.
    pub trace: Option<Vec<StageSummary>>,
    /// The shared store could not be reached: the answer used the request's
    /// own events and the catalog as this host last heard of it.
    pub degraded: bool,
}

/// Recommends `query.k` items: retrieval, then the plugin pipeline.
pub async fn recommend(
    app: &Arc<AppState>,
    tenant: &Arc<Tenant>,
    admission: Admission,
    query: RecommendQuery,
) -> Result<Recommendation> {
    let span = tracing::info_span!("recommend", tenant = %tenant.record.name);
    let RecommendQuery { user, events, k, query_time, context, explain } = query;
    let held = admission.0;
    // The pipeline and the catalog are pinned here: a swap or an upsert
    // during this request does not affect it.
    let active = tenant.pipeline.load_full();
    let catalog = tenant.engine.catalog.view();
    let allow = active.retrieve.as_ref().map(|filter| catalog.mask(filter));
    let request = EncodeRequest { user: user.clone(), events, query_time, allow };
    let Retrieval { history, candidates } = if app.config.max_batch > 1 {
        tenant.scheduler.submit(request, Box::new(held.clone())).instrument(span.clone()).await?
    } else {
        let encode_slot = app.encode_slots.clone().acquire_owned().await.map_err(|_| Error::overloaded(1))?;
        let (app, engine) = (app.clone(), tenant.engine.clone());
        jobs::run(JobKind::Encode, span.clone(), (encode_slot, held.clone()), move || {
            let mut results = encode::encode_and_score(app.store.as_ref(), &engine, &[request], app.config.candidates);
            results.pop().unwrap_or_else(|| Err(Error::internal("the encode job", "no result")))
        })
        .await?
    };
    // The tenant's share first, then the server's slot: a tenant whose
    // recommends are slow (large attributes, slow stages) queues behind its
    // own, and the other tenants still find slots free.
    let share = tenant.plugin_share.clone().acquire_owned().await.map_err(|_| Error::overloaded(1))?;
    let plugin_slot = app.plugin_slots.clone().acquire_owned().await.map_err(|_| Error::overloaded(1))?;
    let info = RequestInfo {
        tenant: tenant.record.name.clone(),
        user,
        k,
        now: history.query_time,
        attributes: context,
        history: history.events.iter().zip(&history.actions).map(|(e, a)| (e.item, a.clone(), e.ts)).collect(),
    };
    let store_away = !app.store_reachable.load(Ordering::Acquire);
    let outcome = {
        let (app, engine) = (app.clone(), tenant.engine.clone());
        jobs::run(JobKind::Plugins, span, (share, plugin_slot, held), move || {
            pipeline::run(&app.plugins, &engine, &active, &catalog, &info, candidates, explain, store_away)
        })
        .await?
    };
    let items = outcome
        .items
        .iter()
        .zip(outcome.reasons)
        .filter_map(|(s, reasons)| {
            let reasons = if explain { reasons } else { Vec::new() };
            tenant.engine.items.external(s.item).map(|id| Recommended { item: id.to_string(), score: s.score, reasons })
        })
        .take(k)
        .collect();
    let degraded = history.degraded || outcome.degraded;
    if degraded {
        metrics::counter!("edgerec_degraded_answers_total", "tenant" => tenant.record.name.clone()).increment(1);
    }
    Ok(Recommendation { items, pipeline_version: outcome.version, trace: explain.then_some(outcome.trace), degraded })
}
