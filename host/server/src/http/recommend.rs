//! `POST …/recommend`: the request and answer types, and the handler that
//! checks the request and calls [`crate::service::recommend`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::auth::TenantAccess;
use super::bounds::MAX_EVENTS;
use super::checks::{check_context, check_count, check_id};
use super::error::{ApiError, ErrorBody};
use super::events::{IngestEvent, check_event};
use super::extract::ApiJson;
use crate::integral;
use crate::service::app::AppState;
use crate::service::pipeline::StageSummary;
use crate::service::recommend::{self, RecommendQuery, Recommendation};

/// Body of `POST …/recommend`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// The shopper; their stored events join the request's.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub user_id: Option<String>,
    /// Recent events not (yet) posted, external item ids (at most 1000).
    #[serde(default)]
    pub events: Vec<IngestEvent>,
    /// How many items to return (1..=max_k, default 10).
    #[serde(default = "default_k", deserialize_with = "integral::required")]
    #[schema(minimum = 1, format = Int32)]
    pub k: usize,
    /// Unix seconds; defaults to now.
    #[serde(default, deserialize_with = "integral::optional")]
    #[schema(minimum = 0, maximum = 4102444800.0, format = Int64)]
    pub query_time: Option<i64>,
    /// Request attributes handed to the plugins (page, locale, …): at most 32
    /// entries, names and values (as text) of at most 256 characters.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: serde_json::Map<String, serde_json::Value>,
    /// Return the per-stage trace.
    #[serde(default)]
    pub explain: bool,
}

fn default_k() -> usize {
    10
}

/// One recommended item.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoredItem {
    /// External item id.
    pub item: String,
    /// Final score (the model's or the last re-scoring stage's).
    pub score: f32,
    /// With `explain`: reason codes the stages left (`stage<i>:<code>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Answer of `POST …/recommend`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecommendResponse {
    /// Best first.
    pub items: Vec<ScoredItem>,
    /// The pipeline version that produced the answer (0 = no pipeline).
    pub pipeline_version: u32,
    /// With `explain`: what each stage did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<StageTraceJson>>,
    /// Present (true) when the shared store could not be reached: the answer
    /// used the request's own events and this host's cached catalog attributes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

/// What one stage did, for `explain`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = StageTrace)]
pub struct StageTraceJson {
    /// `plugin@version`.
    pub stage: String,
    /// `ran`, `skipped` (failed, on_error = skip: candidates passed unchanged) or `failed`.
    pub status: String,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Candidates in.
    pub input_len: usize,
    /// Candidates out.
    pub output_len: usize,
    /// External ids of the items it dropped.
    pub removed: Vec<String>,
    /// Kept items whose relative position it changed.
    pub moved: usize,
    /// Fuel (≈ wasm instructions) used.
    pub fuel: u64,
    /// Wall time of the call in microseconds.
    pub micros: f64,
    /// The stage's log lines (`level: message`), bounded by its limits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// Log lines the stage wrote beyond its limits.
    #[serde(skip_serializing_if = "is_zero")]
    pub logs_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<StageSummary> for StageTraceJson {
    fn from(s: StageSummary) -> Self {
        let StageSummary {
            stage,
            status,
            failure,
            input_len,
            output_len,
            removed,
            moved,
            fuel,
            micros,
            logs,
            logs_dropped,
        } = s;
        StageTraceJson {
            stage,
            status,
            failure,
            input_len,
            output_len,
            removed,
            moved,
            fuel,
            micros,
            logs,
            logs_dropped,
        }
    }
}

impl From<Recommendation> for RecommendResponse {
    fn from(answer: Recommendation) -> Self {
        RecommendResponse {
            items: answer
                .items
                .into_iter()
                .map(|r| ScoredItem { item: r.item, score: r.score, reasons: r.reasons })
                .collect(),
            pipeline_version: answer.pipeline_version,
            trace: answer.trace.map(|trace| trace.into_iter().map(StageTraceJson::from).collect()),
            degraded: answer.degraded,
        }
    }
}

/// Checks a recommend against the bounds and the configuration (the
/// console's try-it runs the same checks).
pub(crate) fn check(app: &AppState, request: RecommendRequest) -> Result<RecommendQuery, ApiError> {
    let RecommendRequest { user_id, events, k, query_time, context, explain } = request;
    if k == 0 || k > app.config.max_k {
        return Err(ApiError::bad_request(format!("k must be in 1..={}, got {k}", app.config.max_k)));
    }
    if let Some(user) = &user_id {
        check_id("user_id", user)?;
    }
    check_count("events", events.len(), MAX_EVENTS)?;
    for event in &events {
        check_event(&app.config, event)?;
    }
    if let Some(q) = query_time
        && q < 0
    {
        return Err(ApiError::bad_request(format!("query_time {q} is before 1970; send unix seconds")));
    }
    let context = check_context(context)?;
    let events = events.into_iter().map(Into::into).collect();
    Ok(RecommendQuery { user: user_id, events, k, query_time, context, explain })
}

/// Recommends `k` items for a shopper.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/recommend", request_body = RecommendRequest,
    params(("tenant" = String, Path, description = "tenant name")),
    responses((status = 200, body = RecommendResponse), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])), tag = "storefront")]
pub async fn recommend(
    State(app): State<Arc<AppState>>,
    TenantAccess { tenant }: TenantAccess,
    ApiJson(request): ApiJson<RecommendRequest>,
) -> Result<Json<RecommendResponse>, ApiError> {
    // Admitted before the checks: a flooding tenant gets 429 and a
    // saturated server 503 at once, whatever it sent.
    let admission = recommend::admit(&app, &tenant)?;
    let query = check(&app, request)?;
    let answer = recommend::recommend(&app, &tenant, admission, query).await?;
    Ok(Json(answer.into()))
}
