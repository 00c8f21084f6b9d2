//! The router in-process (`tower::ServiceExt::oneshot`, no socket): every
//! route of the OpenAPI document — which is derived from the router — is
//! routed, refuses a request without credentials before reading its body,
//! and answers errors in the API's JSON shape.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use edgerec_server::config::ServerConfig;
use serde_json::Value;
use tower::ServiceExt;

struct App {
    router: axum::Router,
    operator: String,
    _dir: tempfile::TempDir,
}

fn app() -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ServerConfig { data_dir: dir.path().join("data"), demo_tenant: false, ..ServerConfig::default() };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
    let opened = edgerec_server::open(config, metrics).expect("open the server state");
    let operator = opened.new_operator_token.expect("a fresh data directory generates the operator token");
    opened.app.ready.store(true, std::sync::atomic::Ordering::Release);
    App { router: edgerec_server::routes::router(opened.app), operator, _dir: dir }
}

async fn send(app: &App, method: &Method, path: &str, token: Option<&str>, body: Body) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method.clone()).uri(path).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app.router.clone().oneshot(request.body(body).expect("request")).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Every (method, concrete path, secured) of the served document; secured =
/// a token is required.
async fn operations(app: &App) -> Vec<(Method, String, bool)> {
    let (status, doc) = send(app, &Method::GET, "/openapi.json", None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        let path = template.replace("{tenant}", "ghost").replace("{name}", "p").replace("{id}", "x");
        for (method, operation) in item.as_object().expect("path item") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            // `[{}, {"bearer": []}]` documents a token as optional (`/readyz`
            // tells the operator more): only a route without `{}` refuses strangers.
            let secured = operation["security"]
                .as_array()
                .is_some_and(|ways| !ways.iter().any(|way| way.as_object().is_some_and(|w| w.is_empty())));
            out.push((method, path.clone(), secured));
        }
    }
    out
}

#[tokio::test]
async fn every_documented_route_is_routed_and_secured_ones_refuse_strangers() {
    let app = app();
    let operations = operations(&app).await;
    assert!(operations.len() >= 19, "only {} operations documented", operations.len());
    for (method, path, secured) in &operations {
        // A body that is not JSON: the answer must come from the credentials check first.
        let (status, body) = send(&app, method, path, None, Body::from("{not json")).await;
        let code = body["error"]["code"].as_str().unwrap_or("");
        assert_ne!(code, "unknown_route", "{method} {path} is documented but not routed");
        assert_ne!(code, "method_not_allowed", "{method} {path} is documented but not routed");
        if *secured {
            assert_eq!((status, code), (StatusCode::UNAUTHORIZED, "unauthorized"), "{method} {path} without a token");
        }
        let (status, body) = send(&app, method, path, Some(&app.operator), Body::empty()).await;
        let code = body["error"]["code"].as_str().unwrap_or("");
        assert!(
            !matches!(code, "unknown_route" | "method_not_allowed" | "unauthorized" | "internal"),
            "{method} {path}: {status} {body}"
        );
    }
}

#[tokio::test]
async fn errors_are_json_with_a_documented_code() {
    let app = app();
    let (_, doc) = send(&app, &Method::GET, "/openapi.json", None, Body::empty()).await;
    let codes =
        doc["components"]["schemas"]["ErrorCode"]["enum"].as_array().expect("ErrorCode enum in the document").clone();
    for (method, path) in [(Method::GET, "/nowhere"), (Method::DELETE, "/v1/tenants"), (Method::GET, "/v1/tenants/%FF")]
    {
        let (status, body) = send(&app, &method, path, Some(&app.operator), Body::empty()).await;
        assert!(status.is_client_error(), "{method} {path}: {status}");
        let code = &body["error"]["code"];
        assert!(codes.contains(code), "{method} {path}: code {code} is not in the document's ErrorCode list");
    }
}

/// A valid request for a backend this host cannot run (`cuda` without a GPU
/// or driver) is not bad input: 409 `backend_unavailable`, naming the way
/// out; on a host where CUDA opens, the tenant is created.
#[tokio::test]
async fn a_backend_this_host_cannot_run_is_a_conflict_not_bad_input() {
    let app = app();
    let body = Body::from(r#"{"name": "gpu-shop", "model": "demo", "backend": "cuda"}"#);
    let (status, answer) = send(&app, &Method::POST, "/v1/tenants", Some(&app.operator), body).await;
    match status {
        StatusCode::CREATED => assert_eq!(answer["backend"], "cuda", "{answer}"),
        StatusCode::CONFLICT => {
            assert_eq!(answer["error"]["code"], "backend_unavailable", "{answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("cpu always runs"), "{message}");
        }
        other => panic!("POST /v1/tenants with backend cuda answered {other}: {answer}"),
    }
}

/// `"pipeline"` in `POST /v1/tenants`: the document says exactly what is
/// accepted (`"default"`), and any other value is refused before a tenant
/// is created.
#[tokio::test]
async fn a_tenant_asks_for_the_default_pipeline_by_name_and_nothing_else() {
    let app = app();
    let (_, doc) = send(&app, &Method::GET, "/openapi.json", None, Body::empty()).await;
    let field = &doc["components"]["schemas"]["CreateTenant"]["properties"]["pipeline"];
    assert_eq!(field["pattern"], "^default$", "{field}");
    for bad in ["fancy", "Default", "default ", ""] {
        let body = Body::from(serde_json::json!({"name": "shop", "model": "demo", "pipeline": bad}).to_string());
        let (status, answer) = send(&app, &Method::POST, "/v1/tenants", Some(&app.operator), body).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_pipeline")));
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("{bad:?}")) && message.contains("\"default\""), "{message}");
    }
    let (status, answer) = send(&app, &Method::GET, "/v1/tenants/shop", Some(&app.operator), Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a refused pipeline creates no tenant: {answer}");
}
