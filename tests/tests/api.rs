//! The API against a real server: OpenAPI, auth matrix, bad inputs, events,
//! encoder cache equivalence, kill -9 durability, restart.

use edgerec_e2e::{OPERATOR, Options, Scratch, Server, code, create_tenant, items, write_model};
use serde_json::{Value, json};

const QUERY_TIME: i64 = 1_700_000_000;

fn events(user: &str, ids: &[&str], start_ts: i64) -> Value {
    let list: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"user_id": user, "item": id, "ts": start_ts + i as i64, "action": "view"}))
        .collect();
    json!({ "events": list })
}

#[test]
fn openapi_lists_every_route_and_health_answers() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.path("data"), &Options::default());
    let (status, doc) = server.get("/openapi.json", None);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/tenants/{tenant}/recommend", "post"),
        ("/v1/tenants/{tenant}/events", "post"),
        ("/v1/tenants/{tenant}/catalog/items", "put"),
        ("/v1/tenants/{tenant}/catalog/items", "get"),
        ("/v1/tenants/{tenant}/catalog/items/{id}", "get"),
        ("/v1/tenants", "post"),
        ("/v1/tenants", "get"),
        ("/v1/tenants/{tenant}", "get"),
        ("/v1/tenants/{tenant}/keys", "post"),
        ("/v1/tenants/{tenant}/keys", "get"),
        ("/v1/tenants/{tenant}/keys/{id}", "delete"),
        ("/v1/tenants/{tenant}/plugins/{name}", "put"),
        ("/v1/tenants/{tenant}/plugins", "get"),
        ("/v1/tenants/{tenant}/pipeline", "put"),
        ("/v1/tenants/{tenant}/pipeline", "get"),
        ("/v1/tenants/{tenant}/pipeline/rollback", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing from /openapi.json");
    }
    assert_eq!(server.get("/healthz", None).0, 200);
    assert_eq!(server.get("/readyz", None).0, 200);
    let (status, text) = server.text("/metrics", Some(OPERATOR));
    assert_eq!(status, 200);
    assert!(text.contains("edgerec_requests_total"), "{text}");
}

#[test]
fn auth_matrix_refuses_and_leaks_nothing() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    write_model(&model, 60, 1);
    let server = Server::start(&scratch.path("data"), &Options::default());
    let key_a = create_tenant(&server, "alpha", &model);
    let key_b = create_tenant(&server, "beta", &model);
    let secret_item = json!({"items": [{"id": "sku-1", "attributes": {"title": "alpha-secret-title"}}]});
    assert_eq!(server.json("PUT", "/v1/tenants/alpha/catalog/items", Some(&key_a), &secret_item).0, 200);

    let recommend = json!({"events": [{"item": "sku-2", "ts": 10}], "k": 3, "query_time": 20});
    let storefront: Vec<(&str, &str, Option<Value>)> = vec![
        ("POST", "/v1/tenants/alpha/recommend", Some(recommend.clone())),
        ("POST", "/v1/tenants/alpha/events", Some(events("u", &["sku-2"], 10))),
        ("PUT", "/v1/tenants/alpha/catalog/items", Some(secret_item.clone())),
        ("GET", "/v1/tenants/alpha/catalog/items/sku-1", None),
        ("GET", "/v1/tenants/alpha/catalog/items?limit=5", None),
    ];
    let operator: Vec<(&str, &str, Option<Value>)> = vec![
        ("POST", "/v1/tenants", Some(json!({"name": "gamma", "model": model.to_str().unwrap()}))),
        ("GET", "/v1/tenants", None),
        ("GET", "/v1/tenants/alpha", None),
        ("PUT", "/v1/tenants/alpha/plugins/p", Some(json!("not wasm"))),
        ("GET", "/v1/tenants/alpha/plugins", None),
        ("DELETE", "/v1/tenants/alpha/plugins/p/versions/1", None),
        ("PUT", "/v1/tenants/alpha/pipeline", Some(json!({"stages": []}))),
        ("GET", "/v1/tenants/alpha/pipeline", None),
        ("POST", "/v1/tenants/alpha/pipeline/rollback", None),
        ("GET", "/metrics", None),
    ];
    let send = |method: &str, path: &str, token: Option<&str>, body: &Option<Value>| match body {
        Some(body) => server.json(method, path, token, body),
        None => server.request(method, path, token, None),
    };
    for (method, path, body) in storefront.iter().chain(&operator) {
        let (status, answer) = send(method, path, None, body);
        assert_eq!((status, code(&answer)), (401, "unauthorized"), "no token: {method} {path}");
        let (status, answer) = send(method, path, Some("ek_wrong"), body);
        assert_eq!((status, code(&answer)), (401, "unauthorized"), "wrong token: {method} {path}");
        let (status, answer) = send(method, path, Some(&key_b), body);
        assert_eq!((status, code(&answer)), (403, "forbidden"), "other tenant's key: {method} {path}");
        let text = answer.to_string();
        assert!(!text.contains("alpha-secret-title") && !text.contains(&key_a), "leak in {text}");
    }
    // A tenant key never opens operator routes, even for its own tenant.
    for (method, path, body) in &operator {
        let (status, answer) = send(method, path, Some(&key_a), body);
        assert_eq!((status, code(&answer)), (403, "forbidden"), "tenant key on operator route {method} {path}");
    }
    // Positive control: the owner's key works on every storefront route.
    for (method, path, body) in &storefront {
        let (status, answer) = send(method, path, Some(&key_a), body);
        assert_eq!(status, 200, "owner on {method} {path}: {answer}");
    }
    // Beta's key on a tenant that does not exist: the same 403, so existence does not leak.
    let (status, answer) = server.get("/v1/tenants/nobody/catalog/items/sku-1", Some(&key_b));
    assert_eq!((status, code(&answer)), (403, "forbidden"));
    // Beta sees only its own (empty) catalog.
    let (status, page) = server.get("/v1/tenants/beta/catalog/items", Some(&key_b));
    assert_eq!(status, 200);
    assert_eq!(page["items"], json!([]));

    // The console's routes: only a session opens them, and only the operator
    // token starts one. Bearer secrets (the operator's included: the console
    // reads no Authorization header) and cookies holding a key open nothing;
    // a page sends the visitor to the login form, anything else is refused.
    let no_redirects =
        reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let console: Vec<(&str, &str)> = vec![
        ("GET", "/console/tenants"),
        ("GET", "/console/tenants/alpha"),
        ("POST", "/console/logout"),
        ("POST", "/console/tenants/alpha/try"),
        ("POST", "/console/tenants/alpha/pipeline"),
        ("POST", "/console/tenants/alpha/pipeline/rollback"),
        ("POST", "/console/tenants/alpha/pipeline/versions/1/activate"),
        ("POST", "/console/tenants/alpha/plugins"),
        ("POST", "/console/tenants/alpha/plugins/p/versions/1/delete"),
        ("POST", "/console/tenants/alpha/models"),
        ("POST", "/console/tenants/alpha/models/rollback"),
        ("POST", "/console/tenants/alpha/models/v1/activate"),
        ("POST", "/console/tenants/alpha/keys"),
        ("POST", "/console/tenants/alpha/keys/k1/revoke"),
    ];
    let cookie_a = format!("edgerec_console={key_a}");
    let cookie_operator = format!("edgerec_console={OPERATOR}");
    let credentials: Vec<(&str, Option<(&str, String)>)> = vec![
        ("nothing", None),
        ("the operator token as bearer", Some(("authorization", format!("Bearer {OPERATOR}")))),
        ("a tenant key as bearer", Some(("authorization", format!("Bearer {key_a}")))),
        ("a tenant key as the cookie", Some(("cookie", cookie_a))),
        ("the operator token as the cookie", Some(("cookie", cookie_operator))),
    ];
    for (method, path) in &console {
        for (what, header) in &credentials {
            let mut request = no_redirects
                .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", server.base))
                .form(&[("csrf", "x")]);
            if let Some((name, value)) = header {
                request = request.header(*name, value);
            }
            let response = request.send().unwrap();
            let status = response.status().as_u16();
            let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_string());
            let body = response.text().unwrap();
            if *method == "GET" {
                assert_eq!((status, location.as_deref()), (303, Some("/console/login")), "{what}: {method} {path}");
            } else {
                assert_eq!(status, 403, "{what}: {method} {path}");
            }
            assert!(!body.contains("alpha-secret-title") && !body.contains(&key_a), "leak in {body}");
        }
    }
    // A tenant key does not log in; the operator token does (and the alpha key's tenant is untouched).
    let login = |token: &str| {
        no_redirects.post(format!("{}/console/login", server.base)).form(&[("token", token)]).send().unwrap()
    };
    assert_eq!(login(&key_a).status().as_u16(), 401);
    assert!(login(&key_a).headers().get("set-cookie").is_none());
    let operator_login = login(OPERATOR);
    assert_eq!(operator_login.status().as_u16(), 303);
    let cookie = operator_login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains(OPERATOR),
        "{cookie}"
    );
    // The console's routes are pages, not API: none is in the OpenAPI document.
    let (_, doc) = server.get("/openapi.json", None);
    assert!(doc["paths"].as_object().unwrap().keys().all(|path| !path.starts_with("/console")));
}

#[test]
fn every_bad_input_gets_its_code_and_the_process_survives() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    write_model(&model, 60, 2);
    let options = Options { env: vec![("EDGEREC_SERVE_MAX_BODY_BYTES".into(), "65536".into())], ..Default::default() };
    let mut server = Server::start(&scratch.path("data"), &options);
    let key = create_tenant(&server, "shop", &model);
    let key = Some(key.as_str());
    let raw = |method: &str, path: &str, body: &[u8]| server.request(method, path, key, Some(body.to_vec()));
    let recommend = "/v1/tenants/shop/recommend";

    let cases: Vec<(&str, (u16, Value), u16, &str)> = vec![
        ("not JSON", raw("POST", recommend, b"{not json"), 400, "malformed_json"),
        ("wrong type", raw("POST", recommend, br#"{"k": "ten"}"#), 400, "malformed_json"),
        ("unknown field", raw("POST", recommend, br#"{"kk": 1}"#), 400, "malformed_json"),
        ("invalid UTF-8", raw("POST", recommend, b"{\"user_id\": \"\xff\xfe\"}"), 400, "malformed_json"),
        ("deep nesting", raw("POST", recommend, "[".repeat(100_000).as_bytes()), 413, "payload_too_large"),
        ("nesting past serde's limit", raw("POST", recommend, "[".repeat(5_000).as_bytes()), 400, "malformed_json"),
        ("too large", raw("POST", recommend, &vec![b' '; 70_000]), 413, "payload_too_large"),
        (
            "k = 0",
            server.json("POST", recommend, key, &json!({"events": [{"item": "sku-1", "ts": 1}], "k": 0})),
            400,
            "bad_request",
        ),
        (
            "k too large",
            server.json("POST", recommend, key, &json!({"events": [{"item": "sku-1", "ts": 1}], "k": 100000})),
            400,
            "bad_request",
        ),
        ("no history", server.json("POST", recommend, key, &json!({"user_id": "nobody"})), 404, "empty_history"),
        (
            "ts before 1970",
            server.json("POST", recommend, key, &json!({"events": [{"item": "sku-1", "ts": -5}]})),
            400,
            "bad_request",
        ),
        (
            "ts in milliseconds",
            server.json("POST", recommend, key, &json!({"events": [{"item": "sku-1", "ts": 1_700_000_000_000_i64}]})),
            400,
            "bad_request",
        ),
        (
            "action too long",
            server.json(
                "POST",
                recommend,
                key,
                &json!({"events": [{"item": "sku-1", "ts": 1, "action": "x".repeat(33)}]}),
            ),
            400,
            "bad_request",
        ),
        (
            "context too large",
            server.json(
                "POST",
                recommend,
                key,
                &json!({"events": [{"item": "sku-1", "ts": 1}], "context": {"page": "x".repeat(300)}}),
            ),
            400,
            "bad_request",
        ),
        (
            "nested attribute",
            server.json(
                "PUT",
                "/v1/tenants/shop/catalog/items",
                key,
                &json!({"items": [{"id": "a", "attributes": {"dims": {"w": 1}}}]}),
            ),
            400,
            "bad_request",
        ),
        (
            "attribute too long",
            server.json(
                "PUT",
                "/v1/tenants/shop/catalog/items",
                key,
                &json!({"items": [{"id": "a", "attributes": {"title": "x".repeat(2000)}}]}),
            ),
            400,
            "bad_request",
        ),
        (
            "k as a fraction",
            server.json("POST", recommend, key, &json!({"events": [{"item": "sku-1", "ts": 1}], "k": 2.5})),
            400,
            "malformed_json",
        ),
        (
            "unknown item in recommend",
            server.json("POST", recommend, key, &json!({"events": [{"item": "nope", "ts": 1}]})),
            404,
            "unknown_item",
        ),
        (
            "unknown item in events",
            server.json("POST", "/v1/tenants/shop/events", key, &events("u", &["nope"], 1)),
            404,
            "unknown_item",
        ),
        (
            "event without user",
            server.json("POST", "/v1/tenants/shop/events", key, &json!({"events": [{"item": "sku-1", "ts": 1}]})),
            400,
            "bad_request",
        ),
        (
            "empty id",
            server.json(
                "PUT",
                "/v1/tenants/shop/catalog/items",
                key,
                &json!({"items": [{"id": "", "attributes": {}}]}),
            ),
            400,
            "bad_request",
        ),
        ("unknown catalog item", server.get("/v1/tenants/shop/catalog/items/none", key), 404, "unknown_item"),
        ("bad page size", server.get("/v1/tenants/shop/catalog/items?limit=0", key), 400, "bad_request"),
        ("bad page query", server.get("/v1/tenants/shop/catalog/items?limit=x", key), 400, "bad_request"),
        ("unknown tenant", server.get("/v1/tenants/ghost", Some(OPERATOR)), 404, "unknown_tenant"),
        (
            "unknown tenant (storefront)",
            server.json("POST", "/v1/tenants/ghost/recommend", Some(OPERATOR), &json!({})),
            404,
            "unknown_tenant",
        ),
        (
            "not a component",
            server.request("PUT", "/v1/tenants/shop/plugins/junk", Some(OPERATOR), Some(b"\0asm junk".to_vec())),
            400,
            "invalid_plugin",
        ),
        (
            "missing plugin in pipeline",
            server.json("PUT", "/v1/tenants/shop/pipeline", Some(OPERATOR), &json!({"stages": [{"plugin": "none"}]})),
            404,
            "unknown_plugin",
        ),
        (
            "bad on_error",
            server.json(
                "PUT",
                "/v1/tenants/shop/pipeline",
                Some(OPERATOR),
                &json!({"stages": [{"plugin": "x", "on_error": "explode"}]}),
            ),
            400,
            "malformed_json",
        ),
        (
            "nothing to roll back",
            server.request("POST", "/v1/tenants/shop/pipeline/rollback", Some(OPERATOR), None),
            409,
            "conflict",
        ),
        (
            "bad tenant name",
            server.json("POST", "/v1/tenants", Some(OPERATOR), &json!({"name": "Bad Name!", "model": "demo"})),
            400,
            "bad_request",
        ),
        (
            "no model dir",
            server.json("POST", "/v1/tenants", Some(OPERATOR), &json!({"name": "x", "model": "/nonexistent"})),
            404,
            "unknown_model",
        ),
        (
            "not a model dir",
            server.json("POST", "/v1/tenants", Some(OPERATOR), &json!({"name": "y", "model": "/tmp"})),
            400,
            "invalid_model",
        ),
        (
            "duplicate tenant",
            server.json(
                "POST",
                "/v1/tenants",
                Some(OPERATOR),
                &json!({"name": "shop", "model": model.to_str().unwrap()}),
            ),
            409,
            "conflict",
        ),
        ("unknown route", server.get("/v2/anything", None), 404, "unknown_route"),
        ("wrong method", server.request("DELETE", "/v1/tenants", Some(OPERATOR), None), 405, "method_not_allowed"),
    ];
    for (what, (status, body), want_status, want_code) in cases {
        assert_eq!((status, code(&body)), (want_status, want_code), "{what}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.len() > 10), "{what}: no useful message: {body}");
    }
    // What the document calls an integer is accepted in either JSON spelling.
    let (status, body) =
        server.json("POST", recommend, key, &json!({"events": [{"item": "sku-1", "ts": 1.0}], "k": 3.0}));
    assert_eq!(status, 200, "integral floats: {body}");
    assert!(server.alive(), "the server died");
}

#[test]
fn posted_events_change_the_next_answer_and_the_cache_matches_a_fresh_encode() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    let ids = write_model(&model, 80, 3);
    let server = Server::start(&scratch.path("data"), &Options::default());
    let key = create_tenant(&server, "shop", &model);
    let key = Some(key.as_str());
    let recommend = |body: Value| {
        let (status, answer) = server.json("POST", "/v1/tenants/shop/recommend", key, &body);
        assert_eq!(status, 200, "{answer}");
        answer
    };
    let first: Vec<&str> = ids[0..4].iter().map(String::as_str).collect();
    let more: Vec<&str> = ids[40..46].iter().map(String::as_str).collect();
    assert_eq!(server.json("POST", "/v1/tenants/shop/events", key, &events("u1", &first, 1000)).0, 200);
    let before = recommend(json!({"user_id": "u1", "k": 10, "query_time": QUERY_TIME}));
    assert_eq!(items(&before).len(), 10);
    assert_eq!(server.json("POST", "/v1/tenants/shop/events", key, &events("u1", &more, 2000)).0, 200);
    let after = recommend(json!({"user_id": "u1", "k": 10, "query_time": QUERY_TIME}));
    assert_ne!(items(&before), items(&after), "new events did not change the answer");
    for seen in first.iter().chain(&more) {
        assert!(!items(&after).iter().any(|i| i == seen), "history item {seen} recommended");
    }
    // The cached (incrementally extended) user equals an anonymous fresh encode of the same history.
    let mut all: Vec<Value> = Vec::new();
    for (i, id) in first.iter().enumerate() {
        all.push(json!({"item": id, "ts": 1000 + i as i64}));
    }
    for (i, id) in more.iter().enumerate() {
        all.push(json!({"item": id, "ts": 2000 + i as i64}));
    }
    let fresh = recommend(json!({"events": all, "k": 10, "query_time": QUERY_TIME}));
    assert_eq!(items(&fresh), items(&after));
    for (a, b) in fresh["items"].as_array().unwrap().iter().zip(after["items"].as_array().unwrap()) {
        let (a, b) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4, "cached score {b} vs fresh {a}");
    }
    let (_, metrics) = server.text("/metrics", Some(OPERATOR));
    assert!(metrics.contains("result=\"incremental\""), "the second answer was not incremental:\n{metrics}");
}

#[test]
fn acknowledged_events_survive_kill_9_and_restart_restores_state() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    let ids = write_model(&model, 80, 4);
    let data = scratch.path("data");
    let server = Server::start(&data, &Options::default());
    let key = create_tenant(&server, "shop", &model);
    let auth = Some(key.as_str());
    let catalog = json!({"items": [
        {"id": "sku-3", "attributes": {"title": "three", "price": 3.5, "stock": 2}},
        {"id": "new-item", "attributes": {"title": "not in the model", "stock": 9}}
    ]});
    assert_eq!(server.json("PUT", "/v1/tenants/shop/catalog/items", auth, &catalog).0, 200);
    // Ten separate acknowledged batches, then kill -9 with no pause.
    let mut all = Vec::new();
    for batch in 0..10 {
        let id = ids[batch * 3 + 5].as_str();
        assert_eq!(
            server.json("POST", "/v1/tenants/shop/events", auth, &events("u9", &[id], 5000 + batch as i64)).0,
            200
        );
        all.push(json!({"item": id, "ts": 5000 + batch as i64}));
    }
    // The event for an item the model does not know is stored but never retrieved.
    assert_eq!(server.json("POST", "/v1/tenants/shop/events", auth, &events("u9", &["new-item"], 6000)).0, 200);
    server.kill9();

    let server = Server::start(&data, &Options::default());
    let (status, tenants) = server.get("/v1/tenants", Some(OPERATOR));
    assert_eq!(status, 200);
    assert_eq!(tenants["tenants"][0]["name"], "shop");
    let (status, item) = server.get("/v1/tenants/shop/catalog/items/new-item", auth);
    assert_eq!((status, &item["attributes"]["stock"]), (200, &json!(9)));
    let from_store = server.json(
        "POST",
        "/v1/tenants/shop/recommend",
        auth,
        &json!({"user_id": "u9", "k": 20, "query_time": QUERY_TIME}),
    );
    let explicit = server.json(
        "POST",
        "/v1/tenants/shop/recommend",
        auth,
        &json!({"events": all, "k": 20, "query_time": QUERY_TIME}),
    );
    assert_eq!(from_store.0, 200, "{}", from_store.1);
    assert_eq!(
        items(&from_store.1),
        items(&explicit.1),
        "stored events after kill -9 differ from the acknowledged ones"
    );
    assert!(!items(&from_store.1).contains(&"new-item".to_string()));
    // SIGTERM: a clean exit.
    assert!(server.terminate().success());
}

#[test]
fn saturation_answers_fast_503_with_retry_after() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    let ids = write_model(&model, 200, 6);
    let options = Options {
        env: vec![
            ("EDGEREC_SERVE_MAX_IN_FLIGHT".into(), "1".into()),
            ("EDGEREC_SERVE_ENCODE_CONCURRENCY".into(), "1".into()),
            ("EDGEREC_SERVE_RETRY_AFTER_S".into(), "2".into()),
        ],
        ..Default::default()
    };
    let server = Server::start(&scratch.path("data"), &options);
    let key = create_tenant(&server, "shop", &model);
    let history: Vec<Value> = ids.iter().take(50).enumerate().map(|(i, id)| json!({"item": id, "ts": i})).collect();
    let body = json!({"events": history, "k": 10, "query_time": 100});
    // Rounds of 12 simultaneous requests, until one round overlaps (bounded).
    let mut overloaded = 0;
    for _round in 0..20 {
        let barrier = std::sync::Barrier::new(12);
        let results: Vec<(u16, Option<String>, Value)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..12)
                .map(|_| {
                    let (server, key, body, barrier) = (&server, &key, &body, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        server.post_with_retry_after("/v1/tenants/shop/recommend", key, body)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (status, retry_after, answer) in results {
            match status {
                200 => assert_eq!(items(&answer).len(), 10),
                503 => {
                    assert_eq!(code(&answer), "overloaded");
                    assert_eq!(retry_after.as_deref(), Some("2"));
                    overloaded += 1;
                }
                other => panic!("unexpected {other}: {answer}"),
            }
        }
        if overloaded > 0 {
            break;
        }
    }
    assert!(overloaded > 0, "12 simultaneous requests never exceeded max_in_flight = 1");
}
