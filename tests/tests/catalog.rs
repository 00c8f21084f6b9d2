//! The catalog in memory and filters pushed into retrieval, on real servers:
//! an upsert reaches the next recommend (its stages and its filter mask);
//! a pipeline's `retrieve.where` keeps filtered items away from every stage
//! and still fills `k` when enough pass; filters that do not fit the catalog
//! are refused at `PUT …/pipeline` with what to write instead; filters are
//! pinned with their pipeline version and rolled back with it; and a second
//! host on one Redis applies another host's upserts from the change stream.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use edgerec_e2e::redis::RedisServer;
use edgerec_e2e::{OPERATOR, Options, Scratch, Server, code, create_tenant, items, write_model};
use serde_json::{Value, json};

const ITEMS: usize = 200;

/// Items whose number is a multiple of 10 are in stock, the others (90 %)
/// are not; brands alternate.
fn attributes(n: usize) -> Value {
    json!({"stock": if n.is_multiple_of(10) { 5 } else { 0 }, "brand": if n % 2 == 1 { "acme" } else { "other" }})
}

fn number(id: &str) -> usize {
    id.trim_start_matches("sku-").parse().expect("sku-N")
}

fn upsert(server: &Server, key: &str, items: &[(usize, Value)]) {
    let items: Vec<Value> = items.iter().map(|(n, a)| json!({"id": format!("sku-{n}"), "attributes": a})).collect();
    let (status, body) = server.json("PUT", "/v1/tenants/shop/catalog/items", Some(key), &json!({"items": items}));
    assert_eq!(status, 200, "upsert: {body}");
}

/// Tenant `shop` over a model of [`ITEMS`] items with its whole catalog.
fn shop(server: &Server, scratch: &Scratch) -> String {
    let model = scratch.path("model");
    write_model(&model, ITEMS, 5);
    let key = create_tenant(server, "shop", &model);
    let catalog: Vec<(usize, Value)> = (1..=ITEMS).map(|n| (n, attributes(n))).collect();
    upsert(server, &key, &catalog);
    key
}

fn put_pipeline(server: &Server, pipeline: &Value) -> (u16, Value) {
    server.json("PUT", "/v1/tenants/shop/pipeline", Some(OPERATOR), pipeline)
}

/// A few fixed histories (anonymous, so nothing is cached between calls).
fn histories() -> Vec<Vec<String>> {
    (0..6).map(|h| (0..4).map(|e| format!("sku-{}", 1 + (h * 31 + e * 7) % ITEMS)).collect()).collect()
}

/// Recommends `k` items for each of [`histories`]; returns every answer.
fn answers(server: &Server, key: &str, k: usize) -> Vec<Vec<String>> {
    histories()
        .iter()
        .map(|history| {
            let events: Vec<Value> =
                history.iter().enumerate().map(|(e, item)| json!({"item": item, "ts": 100 + e})).collect();
            let request = json!({"events": events, "k": k, "query_time": 1_000});
            let (status, body) = server.json("POST", "/v1/tenants/shop/recommend", Some(key), &request);
            assert_eq!(status, 200, "{body}");
            items(&body)
        })
        .collect()
}

#[test]
fn filters_run_before_retrieval_follow_upserts_and_roll_back_with_their_version() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.path("data"), &Options::default());
    let key = shop(&server, &scratch);
    let in_stock = |id: &String| number(id).is_multiple_of(10);

    // Without a filter, the model's top candidates are mostly out of stock.
    let unfiltered = answers(&server, &key, 10);
    assert!(unfiltered.iter().flatten().any(|id| !in_stock(id)), "the test needs out-of-stock items in the top 10");

    // With one, every answer is in stock and k long, though 90 % are not.
    let filtered = json!({"retrieve": {"where": [{"attribute": "stock", "op": "gt", "value": 0}]},
        "stages": [{"plugin": "boost", "on_error": "fail", "config": {"rules": [
            {"name": "bury-acme", "attribute": "brand", "op": "eq", "value": "acme", "action": "bury"}]}}]});
    let (status, body) = put_pipeline(&server, &filtered);
    assert_eq!(status, 200, "{body}");
    let with_filter = body["version"].as_u64().expect("version");
    assert_eq!(body["retrieve"]["where"][0]["attribute"], "stock", "the version shows its filter: {body}");
    for answer in answers(&server, &key, 10) {
        assert_eq!(answer.len(), 10, "k items when k pass the filter: {answer:?}");
        assert!(answer.iter().all(in_stock), "an item out of stock passed the filter: {answer:?}");
    }

    // An upsert reaches the next recommend: the mask (stock) and the
    // stages' columns (brand). Only sku-10..=sku-50 stay in stock, and
    // sku-20 turns acme: the boost stage buries it below the others.
    let changes: Vec<(usize, Value)> = (1..=ITEMS)
        .filter(|n| n.is_multiple_of(10))
        .map(|n| {
            let stock = if n <= 50 { 3 } else { 0 };
            (n, json!({"stock": stock, "brand": if n == 20 { "acme" } else { "other" }}))
        })
        .collect();
    upsert(&server, &key, &changes);
    let allowed: HashSet<String> = (1..=5).map(|n| format!("sku-{}", n * 10)).collect();
    for (answer, history) in answers(&server, &key, 10).iter().zip(histories()) {
        assert!(answer.iter().all(|id| allowed.contains(id)), "the filter did not follow the upsert: {answer:?}");
        // Every allowed item but the history's own (retrieval excludes those).
        let expected = allowed.iter().filter(|id| !history.contains(id)).count();
        assert_eq!(answer.len(), expected, "every item that passes is retrieved: {answer:?}");
        if answer.contains(&"sku-20".to_string()) {
            assert_eq!(answer.last().map(String::as_str), Some("sku-20"), "sku-20 (now acme) is buried: {answer:?}");
        }
    }

    // Rolled back with its version: the filterless ranking returns, and
    // activating the filtered version again brings the filter back.
    let (status, body) = put_pipeline(&server, &json!({"stages": []}));
    assert_eq!(status, 200, "{body}");
    assert!(body.get("retrieve").is_none(), "a version without a filter shows none: {body}");
    assert!(answers(&server, &key, 10).iter().flatten().any(|id| !allowed.contains(id)));
    let path = format!("/v1/tenants/shop/pipeline/versions/{with_filter}/activate");
    let (status, body) = server.request("POST", &path, Some(OPERATOR), None);
    assert_eq!(status, 200, "{body}");
    assert!(answers(&server, &key, 10).iter().flatten().all(|id| allowed.contains(id)));
}

#[test]
fn filters_that_do_not_fit_the_catalog_are_refused_with_what_to_write() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.path("data"), &Options::default());
    shop(&server, &scratch);
    let refused = |predicate: Value, status_wanted: u16, code_wanted: &str, says: &str| {
        let (status, body) = put_pipeline(&server, &json!({"retrieve": {"where": [predicate]}, "stages": []}));
        assert_eq!((status, code(&body)), (status_wanted, code_wanted), "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "the refusal should say {says:?}: {message}");
    };
    refused(json!({"attribute": "colour", "op": "eq", "value": "red"}), 409, "filter_mismatch", "colour");
    refused(json!({"attribute": "stock", "op": "gt", "value": "many"}), 409, "filter_mismatch", "stock");
    refused(json!({"attribute": "brand", "op": "gt", "value": 3}), 409, "filter_mismatch", "brand");
    refused(json!({"attribute": "stock", "op": "between", "value": 3}), 400, "malformed_json", "between");
    let (_, history) = server.get("/v1/tenants/shop/pipeline", Some(OPERATOR));
    assert_eq!(history["active"], 0, "a refused pipeline activates nothing: {history}");
}

#[test]
fn a_second_host_on_one_redis_applies_upserts_from_the_change_stream() {
    let scratch = Scratch::new();
    let redis = RedisServer::start(&scratch.path("redis"));
    let on = || Options { store: Some(redis.url()), ..Default::default() };
    let a = Server::start(&scratch.path("a"), &on());
    let b = Server::start(&scratch.path("b"), &on());
    let key = shop(&a, &scratch);
    let filtered = json!({"retrieve": {"where": [{"attribute": "stock", "op": "gt", "value": 0}]}, "stages": []});
    let (status, body) = put_pipeline(&a, &filtered);
    assert_eq!(status, 200, "{body}");
    let version = body["version"].clone();
    let patience = Duration::from_secs(15);
    let start = Instant::now();
    while b.get("/v1/tenants/shop/pipeline", Some(OPERATOR)).1["active"] != version {
        assert!(start.elapsed() < patience, "host B never served the filtered pipeline");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Upserted through A: only sku-30 stays in stock. B's answers follow.
    let changes: Vec<(usize, Value)> =
        (1..=ITEMS).filter(|n| n.is_multiple_of(10)).map(|n| (n, json!({"stock": u32::from(n == 30)}))).collect();
    upsert(&a, &key, &changes);
    let start = Instant::now();
    loop {
        let answer = &answers(&b, &key, 5)[0];
        if answer == &vec!["sku-30".to_string()] {
            break;
        }
        assert!(start.elapsed() < patience, "host B did not apply A's upsert: {answer:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("host B answered from A's upsert {:.1} ms after it was acknowledged", start.elapsed().as_secs_f64() * 1e3);
}

#[test]
fn an_ann_tenant_serves_from_its_index_like_an_exact_one_and_honours_filters() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.path("data"), &Options::default());
    let key = shop(&server, &scratch);
    let exact = answers(&server, &key, 10);

    let request =
        json!({"name": "shop-ann", "model": scratch.path("model").to_str().expect("utf-8"), "retrieval": "ann"});
    let (status, body) = server.json("POST", "/v1/tenants", Some(OPERATOR), &request);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["retrieval"], "ann", "{body}");
    let ann_key = body["api_key"].as_str().expect("api_key").to_string();
    let start = Instant::now();
    while server.get("/v1/tenants/shop-ann", Some(OPERATOR)).1["retrieval_serving"] != "ann" {
        assert!(start.elapsed() < Duration::from_secs(30), "the ann index never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    let catalog: Vec<Value> =
        (1..=ITEMS).map(|n| json!({"id": format!("sku-{n}"), "attributes": attributes(n)})).collect();
    let (status, body) =
        server.json("PUT", "/v1/tenants/shop-ann/catalog/items", Some(&ann_key), &json!({"items": catalog}));
    assert_eq!(status, 200, "{body}");
    let ask = |tenant: &str, key: &str, history: &[String]| {
        let events: Vec<Value> =
            history.iter().enumerate().map(|(e, item)| json!({"item": item, "ts": 100 + e})).collect();
        let (status, body) = server.json(
            "POST",
            &format!("/v1/tenants/{tenant}/recommend"),
            Some(key),
            &json!({"events": events, "k": 10, "query_time": 1_000}),
        );
        assert_eq!(status, 200, "{body}");
        items(&body)
    };
    // Recall@10 of the graph against the exact answers: a seeded 200-item
    // table, where the graph finds all but a rare neighbour.
    let (mut found, mut wanted) = (0, 0);
    for (history, exact) in histories().iter().zip(&exact) {
        let ann = ask("shop-ann", &ann_key, history);
        found += ann.iter().filter(|id| exact.contains(id)).count();
        wanted += exact.len();
    }
    let recall = found as f64 / wanted as f64;
    println!("ann recall@10 against exact over {} answers: {recall:.3}", exact.len());
    assert!(recall >= 0.9, "recall@10 {recall:.3} is under the floor of 0.9");

    // The retrieval filter holds on the graph too: 90 % are out of stock.
    let filtered = json!({"retrieve": {"where": [{"attribute": "stock", "op": "gt", "value": 0}]}, "stages": []});
    let (status, body) = server.json("PUT", "/v1/tenants/shop-ann/pipeline", Some(OPERATOR), &filtered);
    assert_eq!(status, 200, "{body}");
    for history in histories() {
        let answer = ask("shop-ann", &ann_key, &history);
        assert_eq!(answer.len(), 10, "{answer:?}");
        assert!(answer.iter().all(|id| number(id).is_multiple_of(10)), "a filtered item came back: {answer:?}");
    }

    let wrong = json!({"name": "shop-x", "model": scratch.path("model").to_str().expect("utf-8"), "retrieval": "fast"});
    let (status, body) = server.json("POST", "/v1/tenants", Some(OPERATOR), &wrong);
    assert_eq!((status, code(&body)), (400, "malformed_json"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("ann"), "names the choices: {body}");
}
