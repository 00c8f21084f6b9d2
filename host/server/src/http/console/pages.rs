//! The console's pages (GET) and its login and logout. Every page reads the
//! state anew from the service (this host's tenants, which follow the
//! shared store's change stream, and the store itself), so a change made on
//! any host shows on every host's console at its next page.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{self, ConsoleSession, LOGIN_PATH, Refusal};
use super::views::{self, Chrome, FlashView, LoginPage, TenantPage, TenantRow, TenantsPage, TrialForm, TrialView};
use crate::http::extract::ApiPath;
use crate::http::records::StageSpecJson;
use crate::metrics_ring;
use crate::service::access::{Caller, Operator};
use crate::service::app::AppState;
use crate::service::jobs::{self, JobKind};
use crate::service::{Error, tenants};
use crate::store::StageSpec;

/// A page, or the plain answer of a failure to render one.
pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "a console page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the console page failed to render; the server log says why")
                .into_response()
        }
    }
}

/// A login's chrome: its CSRF token and waiting messages.
fn chrome(app: &AppState, session: &ConsoleSession, title: impl Into<String>) -> Chrome {
    let flashes = app.console_sessions.take_flashes(&session.id).into_iter().map(FlashView::from).collect();
    Chrome { title: title.into(), csrf: Some(session.csrf.clone()), flashes }
}

/// `/console`: the overview, or the login form.
pub async fn index() -> Redirect {
    Redirect::to("/console/tenants")
}

/// The login form.
pub async fn login_form() -> Response {
    render(&LoginPage { chrome: Chrome { title: "Log in".into(), csrf: None, flashes: Vec::new() } })
}

/// Body of the login form.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// Checks the operator token once; a session cookie on success, the form
/// again (401) on anything else. The token is neither logged nor echoed.
pub async fn login(State(app): State<Arc<AppState>>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let ttl = Duration::from_secs(app.config.console_session_ttl_s);
    let Some(login) = (match app.caller(form.token.trim()) {
        Some(Caller::Operator(operator)) => Some(app.console_sessions.login(operator, ttl)),
        _ => None,
    }) else {
        let chrome = Chrome {
            title: "Log in".into(),
            csrf: None,
            flashes: vec![FlashView {
                class: "refused",
                text: "That is not the operator token (a storefront key does not open the console). Paste the operator token and try again.".into(),
            }],
        };
        let mut response = render(&LoginPage { chrome });
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    };
    let cookie = session::session_cookie(&login.id, login.ttl.as_secs(), session::secure(&app, &headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console/tenants")).into_response()
}

/// Body of a form that carries only the CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    /// The login's CSRF token (absent: refused as forged, not as malformed).
    #[serde(default)]
    pub csrf: String,
}

/// Ends the session.
pub async fn logout(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    session: ConsoleSession,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    session.check_csrf(&app, &form.csrf)?;
    app.console_sessions.logout(&session.id);
    let cookie = session::cleared_cookie(session::secure(&app, &headers));
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(LOGIN_PATH)).into_response())
}

/// The stylesheet, embedded in the binary.
pub async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")],
        include_str!("../../../console/assets/console.css"),
    )
        .into_response()
}

/// Every tenant: backend, model, pipeline, availability, recent recommends.
pub async fn tenants_page(State(app): State<Arc<AppState>>, session: ConsoleSession) -> Response {
    let now = metrics_ring::current_slot();
    let mut rows = Vec::new();
    for (name, unavailable) in app.tenant_names() {
        let (rate, p50, p99) = views::recent_recommends(&name, now);
        let row = match (unavailable, app.tenant(&session.operator, &name)) {
            (None, Ok(tenant)) => TenantRow {
                available: true,
                reason: String::new(),
                backend: tenant.engine.backend.name().to_string(),
                model: model_label(&tenant.record.model, tenant.model_version.as_deref()),
                pipeline: match tenant.pipeline.load().version {
                    0 => "none".into(),
                    v => format!("version {v}"),
                },
                name,
                rate,
                p50,
                p99,
            },
            (reason, lookup) => TenantRow {
                available: false,
                reason: reason.or_else(|| lookup.err().map(|e| e.report())).unwrap_or_default(),
                backend: String::new(),
                model: String::new(),
                pipeline: String::new(),
                name,
                rate,
                p50,
                p99,
            },
        };
        rows.push(row);
    }
    let page =
        TenantsPage { chrome: chrome(&app, &session, "Tenants"), minutes: views::recent_minutes(), tenants: rows };
    render(&page)
}

/// Stages as the body of `PUT …/pipeline`, pretty-printed.
fn stages_json(stages: &[StageSpec]) -> String {
    let stages: Vec<StageSpecJson> = stages.iter().cloned().map(Into::into).collect();
    serde_json::to_string_pretty(&serde_json::json!({ "stages": stages })).unwrap_or_default()
}

fn model_label(base: &str, version: Option<&str>) -> String {
    match version {
        Some(version) => format!("version {version}"),
        None => format!("base model ({base})"),
    }
}

/// A tenant's page.
pub async fn tenant_page(
    State(app): State<Arc<AppState>>,
    session: ConsoleSession,
    ApiPath(name): ApiPath<String>,
) -> Response {
    tenant_response(app, session, name, TrialForm { k: "10".into(), ..TrialForm::default() }, None).await
}

/// Renders a tenant's page (with a try-it answer when one ran); an unknown
/// or unavailable tenant is the overview with the reason.
pub async fn tenant_response(
    app: Arc<AppState>,
    session: ConsoleSession,
    name: String,
    trial_form: TrialForm,
    trial: Option<TrialView>,
) -> Response {
    let chrome = chrome(&app, &session, format!("Tenant {name}"));
    let csrf = session.csrf.clone();
    let built = jobs::run(JobKind::Read, tracing::Span::current(), (), move || {
        tenant_state(&app, &session.operator, &name, chrome, csrf, trial_form, trial)
    })
    .await;
    match built {
        Ok(page) => render(&page),
        Err(error) => {
            let page = TenantsPage {
                chrome: Chrome {
                    title: "Tenant".into(),
                    csrf: None,
                    flashes: vec![FlashView { class: "refused", text: error.report() }],
                },
                minutes: views::recent_minutes(),
                tenants: Vec::new(),
            };
            let mut response = render(&page);
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

/// Reads what a tenant page shows (blocks on the store: run it as a job).
fn tenant_state(
    app: &AppState,
    operator: &Operator,
    name: &str,
    chrome: Chrome,
    csrf: String,
    trial_form: TrialForm,
    trial: Option<TrialView>,
) -> Result<TenantPage, Error> {
    let tenant = app.tenant(operator, name)?;
    let active = tenant.pipeline.load_full();
    let now = metrics_ring::current_slot();
    let (_, pipelines) = app.store.pipelines(name)?;
    let rollback = app.store.rollback_target(name)?.filter(|target| target.version != active.version).map(|target| {
        views::RollbackView {
            version: target.version,
            diff: views::diff((&active.filter, &active.specs), (&target.retrieve, &target.stages)),
        }
    });
    let plugins = views::plugin_rows(app.store.plugins(name)?, &pipelines);
    let (_, models) = app.store.models(name)?;
    let keys = tenants::stored_record(app, &tenant)?
        .keys
        .into_iter()
        .map(|k| views::KeyRow { created: views::timestamp(k.created_at), id: k.id })
        .collect();
    let (rate, _, _) = views::recent_recommends(name, now);
    Ok(TenantPage {
        chrome,
        csrf,
        name: name.to_string(),
        backend: tenant.engine.backend.name().to_string(),
        model: model_label(&tenant.record.model, tenant.model_version.as_deref()),
        pipeline_version: active.version,
        rate,
        charts: views::tenant_charts(name, now),
        stages: views::stage_rows(name, &active.specs, now),
        stages_json: stages_json(&active.specs),
        rollback,
        versions: views::version_rows(&pipelines, active.version, (&active.filter, &active.specs)),
        trial_form,
        trial,
        plugins,
        models: views::model_rows(models, tenant.model_version.as_deref()),
        model_rollback: tenant.model_version.is_some(),
        keys,
    })
}
