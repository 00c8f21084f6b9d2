//! Plugin pipelines end to end: hot swap under load, rollback, explain,
//! on_error policies, restart, the demo tenant's default pipeline, and the
//! first-party plugins and the default pipeline for any tenant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgerec_e2e::{DEMO_KEY, OPERATOR, Options, Scratch, Server, code, create_tenant, items, write_model};
use serde_json::{Value, json};

/// A one-stage pipeline burying `brand`. `on_error: fail` so that a stage
/// failure during the swaps is a failed request, never a silently unburied list.
fn bury(brand: &str) -> Value {
    json!({"stages": [{"plugin": "boost", "on_error": "fail", "config": {"rules": [
        {"name": format!("bury-{brand}"), "attribute": "brand", "op": "eq", "value": brand, "action": "bury"}
    ]}}]})
}

fn upload(server: &Server, tenant: &str, name: &str, bytes: &[u8]) -> Value {
    let (status, body) =
        server.request("PUT", &format!("/v1/tenants/{tenant}/plugins/{name}"), Some(OPERATOR), Some(bytes.to_vec()));
    assert_eq!(status, 201, "upload {name}: {body}");
    body
}

fn activate(server: &Server, pipeline: &Value) -> u32 {
    let (status, body) = server.json("PUT", "/v1/tenants/shop/pipeline", Some(OPERATOR), pipeline);
    assert_eq!(status, 200, "activate: {body}");
    body["version"].as_u64().expect("version") as u32
}

#[test]
fn hot_swap_under_load_rollback_explain_and_restart() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    let ids = write_model(&model, 80, 11);
    let data = scratch.path("data");
    let server = Server::start(&data, &Options::default());
    let key = create_tenant(&server, "shop", &model);
    let catalog: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "attributes": {
            "brand": if i % 2 == 0 { "acme" } else { "other" }, "stock": (i % 4) as i64, "category": format!("c{}", i % 5)
        }}))
        .collect();
    assert_eq!(server.json("PUT", "/v1/tenants/shop/catalog/items", Some(&key), &json!({"items": catalog})).0, 200);
    let boost = upload(&server, "shop", "boost", edgerec_runtime::first_party::BOOST);
    assert_eq!(boost["version"], 1);
    // The same bytes again: the same immutable version.
    assert_eq!(upload(&server, "shop", "boost", edgerec_runtime::first_party::BOOST)["version"], 1);
    upload(&server, "shop", "in-stock", edgerec_runtime::first_party::IN_STOCK);

    let request = json!({"events": [{"item": "sku-1", "ts": 100}, {"item": "sku-2", "ts": 200}, {"item": "sku-9", "ts": 300}],
        "k": 10, "query_time": 1000});
    let recommend = |server: &Server| {
        let (status, body) = server.json("POST", "/v1/tenants/shop/recommend", Some(&key), &request);
        assert_eq!(status, 200, "{body}");
        body
    };
    let version_a = activate(&server, &bury("acme"));
    let answer_a = items(&recommend(&server));
    let version_b = activate(&server, &bury("other"));
    let answer_b = items(&recommend(&server));
    assert_ne!(answer_a, answer_b, "the two versions must answer differently");
    let brand = |id: &str| {
        let n: usize = id.trim_start_matches("sku-").parse().unwrap();
        if (n - 1).is_multiple_of(2) { "acme" } else { "other" }
    };
    assert!(answer_a.iter().all(|id| brand(id) == "other"), "A buries acme: {answer_a:?}");
    assert!(answer_b.iter().all(|id| brand(id) == "acme"), "B buries other: {answer_b:?}");

    // Steady clients while the pipeline is swapped 100 times.
    let kinds: Arc<Mutex<HashMap<u32, char>>> =
        Arc::new(Mutex::new(HashMap::from([(version_a, 'A'), (version_b, 'B')])));
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<(u16, Value)>>> = Arc::default();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            let (stop, answers, server, request, key) = (&stop, &answers, &server, &request, &key);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answer = server.json("POST", "/v1/tenants/shop/recommend", Some(key), request);
                    answers.lock().unwrap().push(answer);
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
        for swap in 0..100 {
            let (pipeline, kind) = if swap % 2 == 0 { (bury("acme"), 'A') } else { (bury("other"), 'B') };
            let version = activate(&server, &pipeline);
            kinds.lock().unwrap().insert(version, kind);
        }
        stop.store(true, Ordering::Relaxed);
    });
    let answers = answers.lock().unwrap();
    let kinds = kinds.lock().unwrap();
    assert!(answers.len() >= 50, "only {} requests during the swaps", answers.len());
    let mut seen = HashMap::new();
    for (status, body) in answers.iter() {
        assert_eq!(*status, 200, "a request failed during the swaps: {body}");
        let got = items(body);
        let version = body["pipeline_version"].as_u64().unwrap() as u32;
        let kind = kinds[&version];
        let expected = if kind == 'A' { &answer_a } else { &answer_b };
        assert_eq!(&got, expected, "version {version} ({kind}) answered another version's list");
        *seen.entry(kind).or_insert(0) += 1;
    }
    println!("{} answers during 100 swaps: {seen:?}", answers.len());

    // Rollback returns to the previous version, twice.
    let (_, pipeline) = server.get("/v1/tenants/shop/pipeline", Some(OPERATOR));
    let last = pipeline["active"].as_u64().unwrap() as u32;
    assert_eq!(pipeline["versions"].as_array().unwrap().len(), 102);
    for expected in [last - 1, last - 2] {
        let (status, body) = server.request("POST", "/v1/tenants/shop/pipeline/rollback", Some(OPERATOR), None);
        assert_eq!((status, body["version"].as_u64()), (200, Some(expected as u64)), "{body}");
        let answer = recommend(&server);
        assert_eq!(answer["pipeline_version"], expected);
        let want = if kinds[&expected] == 'A' { &answer_a } else { &answer_b };
        assert_eq!(&items(&answer), want);
    }
    let active = last - 2;

    // Explain: the stage, what it moved, fuel and time, and per-item reasons.
    let mut explain = request.clone();
    explain["explain"] = json!(true);
    let (status, body) = server.json("POST", "/v1/tenants/shop/recommend", Some(&key), &explain);
    assert_eq!(status, 200);
    let trace = &body["trace"][0];
    assert_eq!(trace["stage"], "boost@1");
    assert_eq!(trace["status"], "ran");
    assert!(trace["moved"].as_u64().unwrap() > 0 && trace["fuel"].as_u64().unwrap() > 0, "{trace}");

    // on_error: a stage that fails (no such column) is skipped, or fails the request.
    let broken = |on_error: &str| {
        json!({"stages": [
        {"plugin": "in-stock", "config": {"attribute": "no_such_column"}, "on_error": on_error}]})
    };
    activate(&server, &broken("skip"));
    let (status, body) = server.json("POST", "/v1/tenants/shop/recommend", Some(&key), &explain);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["trace"][0]["status"], "skipped");
    assert_eq!(body["items"].as_array().unwrap().len(), 10);
    activate(&server, &broken("fail"));
    let (status, body) = server.json("POST", "/v1/tenants/shop/recommend", Some(&key), &request);
    assert_eq!((status, code(&body)), (502, "plugin_failed"), "{body}");
    for _ in 0..2 {
        assert_eq!(server.request("POST", "/v1/tenants/shop/pipeline/rollback", Some(OPERATOR), None).0, 200);
    }

    // Restart: tenants, plugins, pipelines (active and history) come back.
    assert!(server.terminate().success());
    let server = Server::start(&data, &Options::default());
    let (_, pipeline) = server.get("/v1/tenants/shop/pipeline", Some(OPERATOR));
    assert_eq!(pipeline["active"], active);
    assert_eq!(pipeline["versions"].as_array().unwrap().len(), 104);
    let (_, plugins) = server.get("/v1/tenants/shop/plugins", Some(OPERATOR));
    let names: Vec<&str> = plugins["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["boost", "in-stock"]);
    let answer = recommend(&server);
    let want = if kinds[&active] == 'A' { &answer_a } else { &answer_b };
    assert_eq!((&items(&answer), answer["pipeline_version"].as_u64()), (want, Some(active as u64)));
}

#[test]
fn the_demo_tenant_answers_through_its_default_pipeline() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.path("data"), &Options { demo: true, ..Default::default() });
    let key = Some(DEMO_KEY);
    let (status, page) = server.get("/v1/tenants/demo/catalog/items?limit=1000", key);
    assert_eq!(status, 200);
    let catalog: HashMap<String, Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_string(), i["attributes"].clone()))
        .collect();
    assert!(catalog.len() >= 20, "demo catalog too small");
    let mut ids: Vec<&String> = catalog.keys().collect();
    ids.sort();
    let history: Vec<Value> = ids.iter().step_by(7).take(12).enumerate()
        .map(|(i, id)| json!({"item": id, "ts": 1_700_000_000 + i as i64 * 60, "action": if i == 11 { "purchase" } else { "view" }}))
        .collect();
    let (status, body) = server.json(
        "POST",
        "/v1/tenants/demo/recommend",
        key,
        &json!({"user_id": "shopper-1", "events": history, "k": 10, "explain": true}),
    );
    assert_eq!(status, 200, "{body}");
    let got = items(&body);
    assert_eq!(got.len(), 10, "{body}");
    let stages: Vec<&str> = body["trace"].as_array().unwrap().iter().map(|t| t["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.len(), 3, "{stages:?}");
    assert!(body["trace"].as_array().unwrap().iter().all(|t| t["status"] == "ran"), "{}", body["trace"]);
    let mut per_category: HashMap<String, usize> = HashMap::new();
    for id in &got {
        let (status, item) = server.get(&format!("/v1/tenants/demo/catalog/items/{id}"), key);
        assert_eq!(status, 200, "recommended {id} is not in the catalog");
        let stock = item["attributes"]["stock"].as_f64().unwrap_or(0.0);
        assert!(stock >= 1.0, "{id} is out of stock ({stock}) but was recommended");
        assert!(!history.iter().any(|e| e["item"] == json!(id)), "{id} is in the history");
        *per_category.entry(item["attributes"]["category"].as_str().unwrap_or("").to_string()).or_insert(0) += 1;
    }
    assert!(per_category.values().all(|&n| n <= 2), "more than 2 per category: {per_category:?}");
}

#[test]
fn plugin_names_are_protected_and_unused_versions_can_be_deleted() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    write_model(&model, 40, 3);
    let server = Server::start(&scratch.path("data"), &Options::default());
    create_tenant(&server, "shop", &model);
    let put = |path: &str, bytes: &[u8]| server.request("PUT", path, Some(OPERATOR), Some(bytes.to_vec()));
    let boost = edgerec_runtime::first_party::BOOST;
    let diversity = edgerec_runtime::first_party::DIVERSITY;

    // A first-party name holds only the first-party component.
    let (status, body) = put("/v1/tenants/shop/plugins/boost", diversity);
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("reserved")), "{body}");
    let (status, body) = put("/v1/tenants/shop/plugins/boost?replace=true", diversity);
    assert_eq!((status, code(&body)), (409, "conflict"), "replace does not open a reserved name: {body}");
    assert_eq!(upload(&server, "shop", "boost", boost)["declared_name"], "boost");

    // A component uploaded under another plugin's name: 409 unless replaced.
    let (status, body) = put("/v1/tenants/shop/plugins/my-rules", boost);
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"boost\"") && message.contains("replace=true"), "{body}");
    let (status, body) = put("/v1/tenants/shop/plugins/my-rules?replace=true", boost);
    assert_eq!((status, body["version"].as_u64()), (201, Some(1)), "{body}");

    // Version 1 in a pipeline (active, then kept in the history) cannot go; version 2 can.
    let (status, body) = put("/v1/tenants/shop/plugins/my-rules?replace=true", diversity);
    assert_eq!((status, body["version"].as_u64()), (201, Some(2)), "{body}");
    let pipeline = json!({"stages": [{"plugin": "my-rules", "version": 1, "config": {"rules": []}}]});
    activate(&server, &pipeline);
    activate(&server, &json!({"stages": []}));
    let delete = |version: u32| {
        server.request("DELETE", &format!("/v1/tenants/shop/plugins/my-rules/versions/{version}"), Some(OPERATOR), None)
    };
    let (status, body) = delete(1);
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("[1]")), "names the pipeline version: {body}");
    assert_eq!(delete(2).0, 204);
    let (status, body) = delete(2);
    assert_eq!((status, code(&body)), (404, "unknown_plugin"), "{body}");
    let (_, listed) = server.get("/v1/tenants/shop/plugins", Some(OPERATOR));
    let versions: Vec<_> = listed["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or_default().to_string(), p["version"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(versions, [("boost".to_string(), 1), ("my-rules".to_string(), 1)]);
    // The first version is still what a rollback to pipeline 1 runs.
    let (status, body) = server.request("POST", "/v1/tenants/shop/pipeline/rollback", Some(OPERATOR), None);
    assert_eq!(status, 200, "{body}");
}

/// The stages of a pipeline version as (plugin, version, config, on_error).
fn stage_specs(version: &Value) -> Vec<(Value, Value, Value, Value)> {
    version["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| (s["plugin"].clone(), s["version"].clone(), s["config"].clone(), s["on_error"].clone()))
        .collect()
}

/// The (name, version) of a tenant's stored plugins.
fn plugin_versions(server: &Server, tenant: &str) -> Vec<(String, u64)> {
    let (status, listed) = server.get(&format!("/v1/tenants/{tenant}/plugins"), Some(OPERATOR));
    assert_eq!(status, 200, "{listed}");
    listed["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or_default().to_string(), p["version"].as_u64().unwrap_or(0)))
        .collect()
}

#[test]
fn any_tenant_uses_the_first_party_plugins_and_gets_the_default_pipeline_in_one_call() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    let ids = write_model(&model, 60, 5);
    let data = scratch.path("data");
    let options = Options { demo: true, ..Default::default() };
    let server = Server::start(&data, &options);
    let create = |name: &str, pipeline: Option<&str>| {
        let mut request = json!({"name": name, "model": model.to_str().expect("utf-8 path")});
        if let Some(pipeline) = pipeline {
            request["pipeline"] = pipeline.into();
        }
        server.json("POST", "/v1/tenants", Some(OPERATOR), &request)
    };

    // Another named pipeline: refused, and no tenant is created.
    let (status, body) = create("shop", Some("fancy"));
    assert_eq!((status, code(&body)), (400, "invalid_pipeline"), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("\"default\"")), "{body}");
    assert_eq!(server.get("/v1/tenants/shop", Some(OPERATOR)).0, 404);

    // "default": created with the demo tenant's pipeline active, in one call, with no upload.
    let (status, body) = create("shop", Some("default"));
    assert_eq!((status, body["pipeline_version"].as_u64()), (201, Some(1)), "{body}");
    let key = body["api_key"].as_str().expect("api_key").to_string();
    let (_, mine) = server.get("/v1/tenants/shop/pipeline", Some(OPERATOR));
    let (_, demo) = server.get("/v1/tenants/demo/pipeline", Some(OPERATOR));
    assert_eq!(mine["active"], 1, "{mine}");
    assert_eq!(stage_specs(&mine["versions"][0]), stage_specs(&demo["versions"][0]), "the demo's stages and configs");
    assert_eq!(
        plugin_versions(&server, "shop"),
        [("diversity".to_string(), 1), ("exclude-recent".to_string(), 1), ("in-stock".to_string(), 1)]
    );

    // It answers through the stages: nothing out of stock, nothing bought, at most two per category.
    let catalog: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "attributes": {"stock": (i % 3) as i64, "category": format!("c{}", i % 4)}}))
        .collect();
    assert_eq!(server.json("PUT", "/v1/tenants/shop/catalog/items", Some(&key), &json!({"items": catalog})).0, 200);
    let bought = &ids[4];
    let history =
        json!([{"item": ids[1], "ts": 100, "action": "view"}, {"item": bought, "ts": 200, "action": "purchase"}]);
    let recommend = |server: &Server, tenant: &str, key: &str| {
        let request = json!({"events": history, "k": 6, "query_time": 1000, "explain": true});
        let (status, body) = server.json("POST", &format!("/v1/tenants/{tenant}/recommend"), Some(key), &request);
        assert_eq!(status, 200, "{body}");
        body
    };
    let answer = recommend(&server, "shop", &key);
    let trace = answer["trace"].as_array().expect("trace");
    let stages: Vec<&str> = trace.iter().map(|t| t["stage"].as_str().unwrap_or_default()).collect();
    assert_eq!(stages, ["in-stock@1", "exclude-recent@1", "diversity@1"], "{answer}");
    assert!(trace.iter().all(|t| t["status"] == "ran"), "{answer}");
    let got = items(&answer);
    assert!(!got.is_empty(), "{answer}");
    let mut per_category: HashMap<usize, usize> = HashMap::new();
    for id in &got {
        let index = ids.iter().position(|i| i == id).expect("a catalog item");
        assert_ne!(index % 3, 0, "{id} is out of stock but was recommended");
        assert_ne!(id, bought, "a purchased item was recommended");
        *per_category.entry(index % 4).or_insert(0) += 1;
    }
    assert!(per_category.values().all(|&n| n <= 2), "more than 2 per category: {per_category:?}");

    // Without "pipeline": none active; a pipeline naming a first-party plugin needs no upload.
    let (status, body) = create("outlet", None);
    assert_eq!((status, body["pipeline_version"].as_u64()), (201, Some(0)), "{body}");
    let outlet_key = body["api_key"].as_str().expect("api_key").to_string();
    assert_eq!(
        server.json("PUT", "/v1/tenants/outlet/catalog/items", Some(&outlet_key), &json!({"items": catalog})).0,
        200
    );
    let in_stock = json!({"stages": [{"plugin": "in-stock", "config": {"attribute": "stock", "min": 1}}]});
    let put = |pipeline: &Value| server.json("PUT", "/v1/tenants/outlet/pipeline", Some(OPERATOR), pipeline);
    let (status, body) = put(&in_stock);
    assert_eq!((status, body["version"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(body["stages"][0]["version"], 1, "pinned to the stored version: {body}");
    // Used again: the same stored version, none added.
    let (status, body) = put(&json!({"stages": []}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = put(&in_stock);
    assert_eq!((status, body["stages"][0]["version"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(plugin_versions(&server, "outlet"), [("in-stock".to_string(), 1)]);
    // A version of a first-party plugin that does not exist is still unknown.
    let (status, body) = put(&json!({"stages": [{"plugin": "boost", "version": 2, "config": {"rules": []}}]}));
    assert_eq!((status, code(&body)), (404, "unknown_plugin"), "{body}");

    // The protected name still takes only the first-party component.
    let (status, body) = server.request(
        "PUT",
        "/v1/tenants/outlet/plugins/in-stock",
        Some(OPERATOR),
        Some(edgerec_runtime::first_party::BOOST.to_vec()),
    );
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");

    // Rollback, activating an older version and a restart serve the stored first-party version.
    let (status, body) = server.request("POST", "/v1/tenants/outlet/pipeline/rollback", Some(OPERATOR), None);
    assert_eq!((status, body["version"].as_u64()), (200, Some(2)), "{body}");
    let (status, body) =
        server.request("POST", "/v1/tenants/outlet/pipeline/versions/1/activate", Some(OPERATOR), None);
    assert_eq!((status, body["version"].as_u64()), (200, Some(1)), "{body}");
    drop(server);
    let server = Server::start(&data, &options);
    let answer = recommend(&server, "outlet", &outlet_key);
    assert_eq!(answer["pipeline_version"], 1, "{answer}");
    assert_eq!(answer["trace"][0]["stage"], "in-stock@1", "{answer}");
    assert_eq!(recommend(&server, "shop", &key)["trace"].as_array().map(Vec::len), Some(3));
}
