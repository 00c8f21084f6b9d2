//! Many hosts, one truth: several real `edgerec serve` processes on one
//! real Redis (or a three-master Redis Cluster) on loopback. What one host
//! is told, every host serves; a host that was away catches up before it
//! reports ready; acknowledged events survive Redis being killed; and while
//! Redis is away the edge keeps answering and keeps every event it accepted.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgerec_e2e::redis::{RedisCluster, RedisServer};
use edgerec_e2e::{OPERATOR, Options, Scratch, Server, create_tenant, items, write_model};
use edgerec_server::store::{RedisStore, Store};
use serde_json::{Value, json};

/// Generous: the target is under a second; a loaded CI machine is slower,
/// and the figures are printed, not asserted.
const PATIENCE: Duration = Duration::from_secs(15);

/// Hosts `a`, `b` and `c` on one Redis.
fn three_hosts(scratch: &Scratch, redis: &RedisServer) -> Vec<Server> {
    ["a", "b", "c"].iter().map(|n| Server::start(&scratch.path(n), &on(&redis.url()))).collect()
}

fn on(store: &str) -> Options {
    Options { store: Some(store.to_string()), ..Default::default() }
}

/// Polls `done` until it holds; returns how long that took.
fn wait_until(what: &str, done: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

/// The pipeline version a host serves now.
fn served(host: &Server) -> u64 {
    let (status, body) = host.get("/v1/tenants/shop/pipeline", Some(OPERATOR));
    assert_eq!(status, 200, "{body}");
    body["active"].as_u64().expect("active")
}

/// A one-stage pipeline burying `brand` (`on_error: fail`: a broken stage is a failed request).
fn bury(brand: &str) -> Value {
    json!({"stages": [{"plugin": "boost", "on_error": "fail", "config": {"rules": [
        {"name": format!("bury-{brand}"), "attribute": "brand", "op": "eq", "value": brand, "action": "bury"}
    ]}}]})
}

fn activate(host: &Server, pipeline: &Value) -> u64 {
    let (status, body) = host.json("PUT", "/v1/tenants/shop/pipeline", Some(OPERATOR), pipeline);
    assert_eq!(status, 200, "activate: {body}");
    body["version"].as_u64().expect("version")
}

fn brand(id: &str) -> &'static str {
    let n: usize = id.trim_start_matches("sku-").parse().expect("sku-N");
    if (n - 1).is_multiple_of(2) { "acme" } else { "other" }
}

/// Tenant `shop` on a fresh model through `host`, its catalog (brands
/// alternate) and the boost plugin; returns the tenant's key.
fn shop(host: &Server, model: &Path) -> String {
    let ids = write_model(model, 80, 11);
    let key = create_tenant(host, "shop", model);
    let catalog: Vec<Value> =
        ids.iter().map(|id| json!({"id": id, "attributes": {"brand": brand(id), "stock": 1}})).collect();
    let (status, body) = host.json("PUT", "/v1/tenants/shop/catalog/items", Some(&key), &json!({"items": catalog}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = host.request(
        "PUT",
        "/v1/tenants/shop/plugins/boost",
        Some(OPERATOR),
        Some(edgerec_runtime::first_party::BOOST.to_vec()),
    );
    assert_eq!(status, 201, "{body}");
    key
}

/// A request whose history is fixed (its own events, no user).
fn fixed_request() -> Value {
    json!({"events": [{"item": "sku-1", "ts": 100}, {"item": "sku-2", "ts": 200}, {"item": "sku-9", "ts": 300}],
        "k": 10, "query_time": 1000})
}

fn recommend(host: &Server, key: &str, request: &Value) -> Value {
    let (status, body) = host.json("POST", "/v1/tenants/shop/recommend", Some(key), request);
    assert_eq!(status, 200, "{body}");
    body
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn three_hosts_on_one_redis_serve_one_truth() {
    let scratch = Scratch::new();
    let redis = RedisServer::start(&scratch.path("redis"));
    let hosts = three_hosts(&scratch, &redis);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);

    // A tenant created through A (its key, its catalog) is known to B and C.
    let key = shop(a, &scratch.path("model"));
    for host in [b, c] {
        wait_until("the new tenant reaches every host", || {
            host.json("POST", "/v1/tenants/shop/recommend", Some(&key), &fixed_request()).0 == 200
        });
    }

    // A key issued through A opens B; revoked through C, B refuses it.
    let (status, issued) = a.request("POST", "/v1/tenants/shop/keys", Some(OPERATOR), None);
    assert_eq!(status, 201, "{issued}");
    let rotated = issued["api_key"].as_str().expect("api_key").to_string();
    let opens = |host: &Server, key: &str| host.get("/v1/tenants/shop/catalog/items?limit=1", Some(key)).0 == 200;
    wait_until("a key issued on A opens B", || opens(b, &rotated));
    let path = format!("/v1/tenants/shop/keys/{}", issued["id"].as_str().expect("id"));
    assert_eq!(c.request("DELETE", &path, Some(OPERATOR), None).0, 204);
    wait_until("a key revoked on C stops opening B", || !opens(b, &rotated));
    assert!(opens(b, &key), "the tenant's first key still opens B");

    // Events posted to A change the next answer on B (and C agrees).
    let ask = json!({"user_id": "u1", "k": 10, "query_time": 10_000});
    let post = |events: Value| {
        let (status, body) = a.json("POST", "/v1/tenants/shop/events", Some(&key), &json!({"events": events}));
        assert_eq!(status, 200, "{body}");
    };
    post(json!([{"user_id": "u1", "item": "sku-3", "ts": 100}]));
    let first = items(&recommend(b, &key, &ask));
    post(json!([{"user_id": "u1", "item": "sku-40", "ts": 200}, {"user_id": "u1", "item": "sku-41", "ts": 300},
        {"user_id": "u1", "item": "sku-77", "ts": 400}]));
    let second = items(&recommend(b, &key, &ask));
    assert_ne!(first, second, "B did not see the events posted to A");
    assert_eq!(items(&recommend(c, &key, &ask)), second, "B and C disagree on one history");

    // A pipeline activated through A is served by B and C; another through
    // B; rollback through C; activation of a stored version through A.
    let request = fixed_request();
    let v1 = activate(a, &bury("acme"));
    let mut lags = Vec::new();
    for host in [b, c] {
        lags.push(wait_until("A's activation reaches every host", || served(host) == v1));
    }
    let answer_a = items(&recommend(c, &key, &request));
    assert!(answer_a.iter().all(|id| brand(id) == "other"), "C serves A's activation: {answer_a:?}");
    let v2 = activate(b, &bury("other"));
    for host in [a, c] {
        lags.push(wait_until("B's activation reaches every host", || served(host) == v2));
    }
    let answer_b = items(&recommend(a, &key, &request));
    assert!(answer_b.iter().all(|id| brand(id) == "acme"), "A serves B's activation: {answer_b:?}");
    let (status, body) = c.request("POST", "/v1/tenants/shop/pipeline/rollback", Some(OPERATOR), None);
    assert_eq!((status, body["version"].as_u64()), (200, Some(v1)), "{body}");
    for host in [a, b] {
        lags.push(wait_until("C's rollback reaches every host", || served(host) == v1));
    }
    let path = format!("/v1/tenants/shop/pipeline/versions/{v2}/activate");
    let (status, body) = a.request("POST", &path, Some(OPERATOR), None);
    assert_eq!((status, body["version"].as_u64()), (200, Some(v2)), "{body}");
    for host in [b, c] {
        lags.push(wait_until("A's activation of a stored version reaches every host", || served(host) == v2));
    }
    let (status, body) = a.request("POST", "/v1/tenants/shop/pipeline/versions/999/activate", Some(OPERATOR), None);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("unknown_pipeline_version")), "{body}");
    println!("first propagations: {lags:?}");

    // 50 activations through the three hosts in turn, under a steady load
    // spread over them: no request fails, and every answer is exactly the
    // list of the version it names.
    let kinds: Arc<Mutex<HashMap<u64, char>>> = Arc::new(Mutex::new(HashMap::from([(v1, 'A'), (v2, 'B')])));
    let stop = AtomicBool::new(false);
    let answers: Mutex<Vec<(u16, Value)>> = Mutex::default();
    std::thread::scope(|scope| {
        for host in &hosts {
            let (stop, answers, request, key) = (&stop, &answers, &request, &key);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answer = host.json("POST", "/v1/tenants/shop/recommend", Some(key), request);
                    answers.lock().unwrap().push(answer);
                }
            });
        }
        for swap in 0..50 {
            let (pipeline, kind) = if swap % 2 == 0 { (bury("acme"), 'A') } else { (bury("other"), 'B') };
            let version = activate(&hosts[swap % 3], &pipeline);
            kinds.lock().unwrap().insert(version, kind);
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let answers = answers.into_inner().unwrap();
    let kinds = kinds.lock().unwrap();
    let mut per_version: BTreeMap<u64, usize> = BTreeMap::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "a request failed during the activations: {body}");
        let version = body["pipeline_version"].as_u64().expect("pipeline_version");
        let expected = if kinds[&version] == 'A' { &answer_a } else { &answer_b };
        assert_eq!(&items(body), expected, "an answer of version {version} is not that version's list");
        *per_version.entry(version).or_default() += 1;
    }
    assert!(answers.len() >= 50, "only {} requests during the activations", answers.len());
    println!("{} answers during 50 activations over 3 hosts, {} versions seen", answers.len(), per_version.len());

    // Change propagation over 100 changes through the hosts in turn: the
    // time from a change's 200 until every other host serves it.
    let mut samples = Vec::with_capacity(100);
    for change in 0..100 {
        let through = change % 3;
        let version = activate(&hosts[through], &bury(if change % 2 == 0 { "acme" } else { "other" }));
        let start = Instant::now();
        for (i, host) in hosts.iter().enumerate() {
            if i != through {
                wait_until("a change reaches every host", || served(host) == version);
            }
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    println!(
        "change propagation over {} changes, 3 hosts (until every host serves it): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}

#[test]
fn a_model_uploaded_on_one_host_and_activated_on_another_is_served_everywhere() {
    let scratch = Scratch::new();
    let redis = RedisServer::start(&scratch.path("redis"));
    let hosts = three_hosts(&scratch, &redis);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    let key = shop(a, &scratch.path("model"));
    let before = items(&recommend(a, &key, &fixed_request()));
    let second = scratch.path("second");
    write_model(&second, 80, 12);
    let mut bundle = tar::Builder::new(Vec::new());
    for name in ["config.json", "model.safetensors", "items.json"] {
        bundle.append_path_with_name(second.join(name), name).expect("append");
    }
    let bundle = bundle.into_inner().expect("tar");
    wait_until("the tenant reaches B", || b.get("/v1/tenants/shop", Some(OPERATOR)).0 == 200);
    let (status, body) = b.request("PUT", "/v1/tenants/shop/models/v2", Some(OPERATOR), Some(bundle));
    assert_eq!(status, 201, "{body}");
    wait_until("the tenant reaches C", || c.get("/v1/tenants/shop", Some(OPERATOR)).0 == 200);
    let (status, body) = c.request("POST", "/v1/tenants/shop/models/v2/activate", Some(OPERATOR), None);
    assert_eq!(status, 200, "{body}");
    for host in &hosts {
        wait_until("the model activation reaches every host", || {
            host.get("/v1/tenants/shop", Some(OPERATOR)).1["model_version"] == "v2"
        });
    }
    let after: Vec<Vec<String>> = hosts.iter().map(|h| items(&recommend(h, &key, &fixed_request()))).collect();
    assert_ne!(after[0], before, "the new model answers differently");
    assert!(after.iter().all(|a| *a == after[0]), "every host serves the same model: {after:?}");
    let (status, _) = a.request("POST", "/v1/tenants/shop/models/rollback", Some(OPERATOR), None);
    assert_eq!(status, 200);
    for host in &hosts {
        wait_until("the model rollback reaches every host", || {
            host.get("/v1/tenants/shop", Some(OPERATOR)).1.get("model_version").is_none()
        });
        assert_eq!(items(&recommend(host, &key, &fixed_request())), before);
    }
}

#[test]
fn a_killed_host_catches_up_before_it_reports_ready() {
    let scratch = Scratch::new();
    let redis = RedisServer::start(&scratch.path("redis"));
    let a = Server::start(&scratch.path("a"), &on(&redis.url()));
    let b = Server::start(&scratch.path("b"), &on(&redis.url()));
    let key = shop(&a, &scratch.path("model"));
    let v1 = activate(&a, &bury("acme"));
    wait_until("the activation reaches B", || served(&b) == v1);

    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    let b = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = a.json("POST", "/v1/tenants/shop/recommend", Some(&key), &fixed_request());
                if status != 200 {
                    failures.lock().unwrap().push(body);
                }
            }
        });
        b.kill9();
        // Changes while B is away.
        let v2 = activate(&a, &bury("other"));
        let b = Server::start(&scratch.path("b"), &on(&redis.url()));
        // Ready means caught up: no waiting here.
        assert_eq!(served(&b), v2, "B reported ready before it caught up");
        let v3 = activate(&a, &bury("acme"));
        wait_until("a later change reaches the restarted B", || served(&b) == v3);
        stop.store(true, Ordering::Relaxed);
        b
    });
    assert!(failures.lock().unwrap().is_empty(), "A failed while B was killed: {:?}", failures.lock().unwrap());
    let answer = recommend(&b, &key, &fixed_request());
    assert!(items(&answer).iter().all(|id| brand(id) == "other"), "B serves version 3 (bury acme)");
}

#[test]
fn acknowledged_events_survive_kill_9_of_redis() {
    let scratch = Scratch::new();
    let mut redis = RedisServer::start(&scratch.path("redis"));
    let host = Server::start(&scratch.path("a"), &on(&redis.url()));
    let key = shop(&host, &scratch.path("model"));
    let events: Vec<Value> =
        (0..20).map(|i| json!({"user_id": "u1", "item": format!("sku-{}", i + 1), "ts": 100 + i})).collect();
    let (status, body) = host.json("POST", "/v1/tenants/shop/events", Some(&key), &json!({"events": events}));
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(20)), "{body}");
    redis.kill9();
    redis.restart();
    let store = RedisStore::connect(&redis.url()).expect("connect after the restart");
    let stored: Vec<i64> = store.recent_events("shop", "u1", 100).expect("read").iter().map(|e| e.ts).collect();
    assert_eq!(stored, (100..120).collect::<Vec<_>>(), "acknowledged events lost by kill -9 of Redis");
    // The host reconnects by itself.
    wait_until("the host writes to the restarted Redis", || {
        let more = json!({"events": [{"user_id": "u1", "item": "sku-30", "ts": 200}]});
        let (status, body) = host.json("POST", "/v1/tenants/shop/events", Some(&key), &more);
        status == 200 && body.get("queued").is_none()
    });
}

#[test]
fn the_edge_keeps_serving_while_redis_is_away_and_loses_no_event() {
    let scratch = Scratch::new();
    let mut redis = RedisServer::start(&scratch.path("redis"));
    let host = Server::start(&scratch.path("a"), &on(&redis.url()));
    let key = shop(&host, &scratch.path("model"));
    activate(&host, &bury("acme"));
    let ask = json!({"user_id": "u1", "events": [{"item": "sku-5", "ts": 50}], "k": 10, "query_time": 10_000});
    let normal = recommend(&host, &key, &ask);
    assert!(normal.get("degraded").is_none(), "{normal}");

    let stop = AtomicBool::new(false);
    let server_errors = Mutex::new(Vec::new());
    let degraded = Mutex::new(0usize);
    let acknowledged = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = host.json("POST", "/v1/tenants/shop/recommend", Some(&key), &ask);
                if status >= 500 {
                    server_errors.lock().unwrap().push(body);
                } else if body["degraded"] == true {
                    *degraded.lock().unwrap() += 1;
                    assert!(items(&body).iter().all(|id| brand(id) == "other"), "the cached catalog buries acme");
                }
            }
        });
        scope.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                // One user per event: a user keeps only the newest events the model can use.
                let id = format!("e{n}");
                let event = json!({"user_id": format!("u-{n}"), "event_id": id, "item": format!("sku-{}", n % 80 + 1), "ts": 1000 + n});
                let (status, body) =
                    host.json("POST", "/v1/tenants/shop/events", Some(&key), &json!({"events": [event]}));
                if status == 200 {
                    acknowledged.lock().unwrap().push(id);
                } else {
                    assert!(status < 500 || body["error"]["code"] == "store_unavailable", "{status} {body}");
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        redis.kill9();
        std::thread::sleep(Duration::from_secs(5));
        redis.restart();
        let back = Instant::now();
        wait_until("the host forwards its outbox and is ready again", || {
            let (_, ready) = host.get("/readyz", None);
            ready["store"]["reachable"] == true && ready["store"]["queued_event_batches"] == 0
        });
        println!("caught up {:?} after Redis returned", back.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    let server_errors = server_errors.into_inner().unwrap();
    assert!(server_errors.is_empty(), "recommends failed while Redis was away: {server_errors:?}");
    let degraded = degraded.into_inner().unwrap();
    assert!(degraded > 0, "no answer was marked degraded while Redis was away");
    let acknowledged = acknowledged.into_inner().unwrap();
    let store = RedisStore::connect(&redis.url()).expect("connect");
    for id in &acknowledged {
        let user = format!("u-{}", id.trim_start_matches('e'));
        let stored = store.recent_events("shop", &user, 100).expect("read");
        let ids: Vec<&str> = stored.iter().filter_map(|e| e.event_id.as_deref()).collect();
        assert_eq!(ids, [id.as_str()], "acknowledged event {id}: stored {} times", ids.len());
    }
    println!(
        "Redis away 5 s: {} events acknowledged (all stored once), {degraded} degraded answers, 0 server errors",
        acknowledged.len()
    );
}

#[test]
fn a_redis_cluster_carries_events_and_activations() {
    let scratch = Scratch::new();
    let cluster = RedisCluster::start(&scratch.path("cluster"), 3);
    let a = Server::start(&scratch.path("a"), &on(&cluster.url()));
    let b = Server::start(&scratch.path("b"), &on(&cluster.url()));
    let key = shop(&a, &scratch.path("model"));
    wait_until("the tenant reaches B", || {
        b.json("POST", "/v1/tenants/shop/recommend", Some(&key), &fixed_request()).0 == 200
    });
    let ask = json!({"user_id": "u1", "k": 10, "query_time": 10_000});
    for user in ["u1", "u2", "u3"] {
        let events = json!({"events": [{"user_id": user, "item": "sku-7", "ts": 100}]});
        assert_eq!(a.json("POST", "/v1/tenants/shop/events", Some(&key), &events).0, 200);
    }
    assert_eq!(b.json("POST", "/v1/tenants/shop/recommend", Some(&key), &ask).0, 200, "B reads A's events");
    let version = activate(&a, &bury("acme"));
    wait_until("the activation reaches B", || served(&b) == version);
    let answer = recommend(&b, &key, &fixed_request());
    assert!(items(&answer).iter().all(|id| brand(id) == "other"));
}
