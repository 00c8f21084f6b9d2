//! The console's actions (POST forms): each checks the login's CSRF token,
//! then calls the same service functions as the operator API's handler of
//! the same action, serialised and run as jobs the same way, and answers
//! with a redirect to the tenant's page, where a message says what it did
//! (or why it was refused and what to do).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::pages::{self, CsrfForm};
use super::session::{ConsoleSession, Refusal};
use super::views::{TraceRow, TrialForm, TrialItem, TrialView};
use crate::http::bounds::{MODEL_VERSION, PLUGIN_NAME};
use crate::http::events::IngestEvent;
use crate::http::extract::ApiPath;
use crate::http::operator::{PutPipeline, integral_limits, upload_slot};
use crate::http::recommend::{RecommendRequest, check};
use crate::service::app::{AppState, Tenant};
use crate::service::console::FlashKind;
use crate::service::jobs::{self, JobKind};
use crate::service::{Error, bundles, plugins, recommend, tenants};
use crate::store::PipelineSpec;

/// The tenant's page, at `section`, after an action.
fn back(name: &str, section: &str) -> Response {
    Redirect::to(&format!("/console/tenants/{name}#{section}")).into_response()
}

/// Runs an action's outcome into the login's messages, then goes back.
fn report(
    app: &AppState,
    session: &ConsoleSession,
    name: &str,
    section: &str,
    outcome: Result<String, Error>,
) -> Response {
    match outcome {
        Ok(done) => session.flash(app, FlashKind::Done, done),
        Err(error) => session.flash(app, FlashKind::Refused, format!("Refused: {}", error.report())),
    }
    back(name, section)
}

fn tenant(app: &AppState, session: &ConsoleSession, name: &str) -> Result<Arc<Tenant>, Error> {
    app.tenant(&session.operator, name)
}

/// Activates a stored pipeline version (`tenants::activate_version`, as `POST …/pipeline/versions/{v}/activate`).
pub async fn activate_pipeline(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath((name, version)): ApiPath<(String, u32)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    session.check_csrf(&app, &form.csrf)?;
    let outcome = async {
        let tenant = tenant(&app, &session, &name)?;
        let serial = tenant.activation.clone().lock_owned().await;
        let job_app = app.clone();
        let record = jobs::run(JobKind::Write, tracing::Span::current(), serial, move || {
            tenants::activate_version(&job_app, &tenant, version)
        })
        .await?;
        Ok(format!("Pipeline version {} is active.", record.version))
    }
    .await;
    Ok(report(&app, &session, &name, "versions", outcome))
}

/// Body of the new-pipeline form.
#[derive(serde::Deserialize)]
pub struct PipelineForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    stages: String,
}

/// Stores and activates a new pipeline version from the form's JSON
/// (`tenants::activate`, as `PUT …/pipeline`, read the same way).
pub async fn put_pipeline(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath(name): ApiPath<String>,
    Form(form): Form<PipelineForm>,
) -> Result<Response, Refusal> {
    session.check_csrf(&app, &form.csrf)?;
    let outcome = async {
        let mut raw: serde_json::Value = serde_json::from_str(&form.stages).map_err(|e| {
            Error::bad_request(format!("the stages are not JSON: {e}; edit them into {{\"stages\": [...]}}"))
        })?;
        integral_limits(&mut raw);
        let request: PutPipeline = serde_json::from_value(raw).map_err(|e| {
            Error::bad_request(format!("the stages are not a pipeline: {e}; see StageSpec in /openapi.json"))
        })?;
        let tenant = tenant(&app, &session, &name)?;
        let serial = tenant.activation.clone().lock_owned().await;
        let job_app = app.clone();
        let record = jobs::run(JobKind::Write, tracing::Span::current(), serial, move || {
            tenants::activate(&job_app, &tenant, PipelineSpec::from(request))
        })
        .await?;
        Ok(format!("Pipeline version {} stored and active.", record.version))
    }
    .await;
    Ok(report(&app, &session, &name, "versions", outcome))
}

/// Returns to the previously active pipeline version (`tenants::rollback`, as `POST …/pipeline/rollback`).
pub async fn rollback_pipeline(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath(name): ApiPath<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    session.check_csrf(&app, &form.csrf)?;
    let outcome = async {
        let tenant = tenant(&app, &session, &name)?;
        let serial = tenant.activation.clone().lock_owned().await;
        let job_app = app.clone();
        let record =
            jobs::run(JobKind::Write, tracing::Span::current(), serial, move || tenants::rollback(&job_app, &tenant))
                .await?;
        Ok(format!("Rolled back: pipeline version {} is active.", record.version))
    }
    .await;
    Ok(report(&app, &session, &name, "versions", outcome))
}

/// A multipart form's fields, whole (the body limit bounds them), once its
/// CSRF token is this login's.
async fn checked_fields(
    app: &AppState,
    session: &ConsoleSession,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<HashMap<String, Bytes>, Refusal> {
    let unreadable = |e: &dyn std::fmt::Display| Refusal::Unreadable(e.to_string());
    let mut multipart = multipart.map_err(|e| unreadable(&e))?;
    let mut fields = HashMap::new();
    while let Some(field) = multipart.next_field().await.map_err(|e| unreadable(&e))? {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|e| unreadable(&e))?;
        fields.insert(name, bytes);
    }
    session.check_csrf(app, &text(&fields, "csrf"))?;
    Ok(fields)
}

fn text(fields: &HashMap<String, Bytes>, name: &str) -> String {
    fields.get(name).map(|b| String::from_utf8_lossy(b).trim().to_string()).unwrap_or_default()
}

/// Uploads a plugin component (`plugins::upload`, as `PUT …/plugins/{name}`):
/// compiled and checked before the answer, which the message shows.
pub async fn upload_plugin(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath(tenant_name): ApiPath<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Refusal> {
    let fields = checked_fields(&app, &session, multipart).await?;
    let outcome = async {
        let tenant = tenant(&app, &session, &tenant_name)?;
        let name = text(&fields, "name");
        if !PLUGIN_NAME.allows(&name) {
            return Err(Error::bad_request(PLUGIN_NAME.refusal(&name)));
        }
        let bytes = fields.get("component").cloned().filter(|b| !b.is_empty()).ok_or_else(|| {
            Error::bad_request("no component was attached: choose the plugin's .wasm file, then upload")
        })?;
        let replace = text(&fields, "replace") == "true";
        let checking = upload_slot(&app).map_err(|e| e.0)?;
        let (_alive, abandoned) = jobs::watch_request();
        let job_app = app.clone();
        let tenant_name = tenant.record.name.clone();
        let version = jobs::run(JobKind::Write, tracing::Span::current(), checking, move || {
            plugins::upload(&job_app, &tenant_name, &name, &bytes, replace, &abandoned)
        })
        .await?;
        Ok(format!(
            "Plugin {} version {} stored: it compiled and passed the checks (sha256 {}…, {} bytes). Use it in a pipeline with PUT …/pipeline.",
            version.name,
            version.version,
            version.digest.chars().take(12).collect::<String>(),
            version.size
        ))
    }
    .await;
    Ok(report(&app, &session, &tenant_name, "plugins", outcome))
}

/// Deletes an unused plugin version (`plugins::delete_version`, as `DELETE …/plugins/{name}/versions/{v}`).
pub async fn delete_plugin(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath((tenant_name, name, version)): ApiPath<(String, String, u32)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    session.check_csrf(&app, &form.csrf)?;
    let outcome = async {
        if !PLUGIN_NAME.allows(&name) {
            return Err(Error::bad_request(PLUGIN_NAME.refusal(&name)));
        }
        let tenant = tenant(&app, &session, &tenant_name)?;
        let serial = tenant.activation.clone().lock_owned().await;
        let job_app = app.clone();
        let plugin = name.clone();
        jobs::run(JobKind::Write, tracing::Span::current(), serial, move || {
            plugins::delete_version(&job_app, &tenant.record.name, &plugin, version)
        })
        .await?;
        Ok(format!("Plugin {name} version {version} deleted."))
    }
    .await;
    Ok(report(&app, &session, &tenant_name, "plugins", outcome))
}

fn check_model_version(version: &str) -> Result<(), Error> {
    if !MODEL_VERSION.allows(version) || version == "rollback" {
        return Err(Error::bad_request(MODEL_VERSION.refusal(version)));
    }
    Ok(())
}

/// Uploads a model bundle (`bundles::upload`, as `PUT …/models/{version}`).
pub async fn upload_model(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath(tenant_name): ApiPath<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Refusal> {
    let fields = checked_fields(&app, &session, multipart).await?;
    let outcome = async {
        let tenant = tenant(&app, &session, &tenant_name)?;
        let version = text(&fields, "version");
        check_model_version(&version)?;
        let bytes = fields
            .get("bundle")
            .cloned()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::bad_request("no bundle was attached: choose the model's tar, then upload"))?;
        let checking = upload_slot(&app).map_err(|e| e.0)?;
        let (_alive, abandoned) = jobs::watch_request();
        let job_app = app.clone();
        let stored = jobs::run(JobKind::Write, tracing::Span::current(), checking, move || {
            bundles::upload(&job_app, &tenant.record.name, &version, &bytes, &abandoned)
        })
        .await?;
        Ok(format!("Model version {} stored: it loaded and passed the checks. Activate it below.", stored.version))
    }
    .await;
    Ok(report(&app, &session, &tenant_name, "models", outcome))
}

/// Activates a model version (`tenants::activate_model`, as `POST …/models/{version}/activate`).
pub async fn activate_model(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath((name, version)): ApiPath<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    session.check_csrf(&app, &form.csrf)?;
    let outcome = async {
        check_model_version(&version)?;
        let tenant = tenant(&app, &session, &name)?;
        let serial = tenant.activation.clone().lock_owned().await;
        let job_app = app.clone();
        let record = jobs::run(JobKind::Write, tracing::Span::current(), serial, move || {
            tenants::activate_model(&job_app, &tenant, &version)
        })
        .await?;
        Ok(format!("Model version {} is active.", record.version))
    }
    .await;
    Ok(report(&app, &session, &name, "models", outcome))
}

/// Returns to the model active before the last activation (`tenants::rollback_model`, as `POST …/models/rollback`).
pub async fn rollback_model(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath(name): ApiPath<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    session.check_csrf(&app, &form.csrf)?;
    let outcome = async {
        let tenant = tenant(&app, &session, &name)?;
        let serial = tenant.activation.clone().lock_owned().await;
        let job_app = app.clone();
        let active = jobs::run(JobKind::Write, tracing::Span::current(), serial, move || {
            tenants::rollback_model(&job_app, &tenant)
        })
        .await?;
        Ok(match active {
            Some(version) => format!("Rolled back: model version {version} is active."),
            None => "Rolled back: the base model is active.".to_string(),
        })
    }
    .await;
    Ok(report(&app, &session, &name, "models", outcome))
}

/// Issues a storefront key (`tenants::add_key`, as `POST …/keys`); the key is
/// shown once, in the next page's message.
pub async fn issue_key(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath(name): ApiPath<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    session.check_csrf(&app, &form.csrf)?;
    let outcome = async {
        let tenant = tenant(&app, &session, &name)?;
        let serial = tenant.activation.clone().lock_owned().await;
        let job_app = app.clone();
        jobs::run(JobKind::Write, tracing::Span::current(), serial, move || tenants::add_key(&job_app, &tenant)).await
    }
    .await;
    match outcome {
        Ok((key, record)) => {
            session.flash(
                &app,
                FlashKind::Secret,
                format!("New key {}: {key} (shown once: copy it now; the server keeps only its hash)", record.id),
            );
            Ok(back(&name, "keys"))
        }
        Err(error) => Ok(report(&app, &session, &name, "keys", Err(error))),
    }
}

/// Revokes a storefront key (`tenants::revoke_key`, as `DELETE …/keys/{id}`).
pub async fn revoke_key(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath((name, id)): ApiPath<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    session.check_csrf(&app, &form.csrf)?;
    let outcome = async {
        let tenant = tenant(&app, &session, &name)?;
        let serial = tenant.activation.clone().lock_owned().await;
        let job_app = app.clone();
        let key = id.clone();
        jobs::run(JobKind::Write, tracing::Span::current(), serial, move || {
            tenants::revoke_key(&job_app, &tenant, &key)
        })
        .await?;
        Ok(format!("Key {id} revoked: requests with it get 401 from now on."))
    }
    .await;
    Ok(report(&app, &session, &name, "keys", outcome))
}

/// The try-it form: the fields of [`TrialForm`] and the CSRF token.
#[derive(serde::Deserialize)]
pub struct TrialPost {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: TrialForm,
}

/// Runs a recommend with `explain` (the recommend route's checks, then
/// `recommend::admit` and `recommend::recommend`) and shows the page with
/// its answer and trace. Stores nothing.
pub async fn try_it(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath(name): ApiPath<String>,
    Form(post): Form<TrialPost>,
) -> Result<Response, Refusal> {
    session.check_csrf(&app, &post.csrf)?;
    let form = post.form;
    let trial = match run_trial(&app, &session, &name, &form).await {
        Ok(trial) => trial,
        Err(error) => TrialView {
            error: Some(format!("Refused: {}", error.report())),
            pipeline_version: 0,
            degraded: false,
            items: Vec::new(),
            trace: Vec::new(),
        },
    };
    Ok(pages::tenant_response(app, session, name, form, Some(trial)).await)
}

async fn run_trial(
    app: &Arc<AppState>,
    session: &ConsoleSession,
    name: &str,
    form: &TrialForm,
) -> Result<TrialView, Error> {
    let tenant = tenant(app, session, name)?;
    let k: usize = form.k.trim().parse().map_err(|_| {
        Error::bad_request(format!("k must be a whole number from 1 to {}, not {:?}", app.config.max_k, form.k))
    })?;
    let now = crate::clock::now_unix();
    let items: Vec<&str> = form.items.split(',').map(str::trim).filter(|i| !i.is_empty()).collect();
    let count = items.len() as i64;
    let events = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| IngestEvent {
            user_id: None,
            event_id: None,
            item: item.to_string(),
            // Oldest first, a second apart, ending now.
            ts: now - (count - 1 - i as i64),
            action: "view".into(),
        })
        .collect();
    let user_id = Some(form.user_id.trim().to_string()).filter(|u| !u.is_empty());
    let request =
        RecommendRequest { user_id, events, k, query_time: None, context: serde_json::Map::new(), explain: true };
    let admission = recommend::admit(app, &tenant)?;
    let query = check(app, request).map_err(|e| e.0)?;
    let answer = recommend::recommend(app, &tenant, admission, query).await?;
    Ok(TrialView {
        error: None,
        pipeline_version: answer.pipeline_version,
        degraded: answer.degraded,
        items: answer
            .items
            .into_iter()
            .map(|r| TrialItem { item: r.item, score: format!("{:.4}", r.score), reasons: r.reasons.join(", ") })
            .collect(),
        trace: answer
            .trace
            .unwrap_or_default()
            .into_iter()
            .map(|s| TraceRow {
                stage: s.stage,
                status: s.status,
                failure: s.failure.unwrap_or_default(),
                input_len: s.input_len,
                output_len: s.output_len,
                removed: s.removed.join(", "),
                moved: s.moved,
                time: super::charts::duration(s.micros / 1e6),
                fuel: s.fuel,
                logs: s.logs.join("\n"),
            })
            .collect(),
    })
}
