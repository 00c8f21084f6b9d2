//! Tenant isolation and the server's own defences, against a real server:
//! authentication before any body is read, secrets never in the clear,
//! key rotation, per-tenant quotas, work bounded by the permits it holds,
//! idempotent event writes, and a broken tenant that does not stop the others.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use edgerec_e2e::{
    DEMO_KEY, OPERATOR, Options, Scratch, Server, code, create_tenant, stored_bytes, suite_on_redis, write_model,
};
use serde_json::{Value, json};

/// Sends raw bytes and reads whatever the server answers within 10 s.
fn raw_exchange(server: &Server, head: &str) -> String {
    let mut stream = TcpStream::connect(server.address()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(head.as_bytes()).expect("send head");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // Read until the connection closes or the answer's body has arrived.
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&answer);
        if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn unauthenticated_requests_get_401_before_any_body_byte_is_read() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.path("data"), &Options { demo: true, ..Default::default() });
    // A 16 MiB upload announced, not one byte of it sent: the answer must
    // come from the head alone (0 body bytes read).
    for (method, path) in
        [("PUT", "/v1/tenants/demo/plugins/x"), ("POST", "/v1/tenants/demo/recommend"), ("POST", "/v1/tenants")]
    {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            16 << 20
        );
        let answer = raw_exchange(&server, &head);
        assert!(answer.starts_with("HTTP/1.1 401"), "{method} {path} without a token, no body sent: {answer}");
        assert!(answer.contains("\"unauthorized\""), "{answer}");
        let wrong = head.replace("Host: test\r\n", "Host: test\r\nAuthorization: Bearer ek_wrong\r\n");
        assert!(raw_exchange(&server, &wrong).starts_with("HTTP/1.1 401"));
    }
    // Malformed JSON without a token: 401, not a 400 that describes the route.
    let (status, body) = server.request("POST", "/v1/tenants/demo/recommend", None, Some(b"{not json".to_vec()));
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    // A path that does not decode is a JSON error too.
    let (status, body) = server.get("/v1/tenants/demo/catalog/items/%FF", Some(DEMO_KEY));
    assert_eq!((status, code(&body)), (400, "bad_request"), "{body}");
}

#[test]
fn secrets_are_hashed_private_and_printed_only_when_generated() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    // Given through the environment: never printed, never stored.
    let server = Server::start(&data, &Options { demo: true, ..Default::default() });
    assert_eq!(server.get("/v1/tenants", Some(OPERATOR)).0, 200);
    let model = scratch.path("model");
    write_model(&model, 30, 4);
    let shop_key = create_tenant(&server, "shop", &model);
    let stdout = server.stdout_lines().join("\n");
    server.terminate();
    let log = std::fs::read_to_string(data.with_extension("log")).expect("log");
    let store = stored_bytes(&data);
    let contains = |haystack: &[u8], needle: &str| haystack.windows(needle.len()).any(|w| w == needle.as_bytes());
    for secret in [OPERATOR, DEMO_KEY, shop_key.as_str()] {
        assert!(!contains(&store, secret), "{secret} is in the store file");
        assert!(!log.contains(secret), "{secret} is in the log");
        assert!(!stdout.contains(secret), "{secret} was printed");
    }
    let mode = |path: &std::path::Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data directory mode");
    if !suite_on_redis() {
        assert_eq!(mode(&data.join("store.redb")), 0o600, "store file mode");
    }

    // Generated: printed once, on creation, and never stored in the clear.
    let fresh = scratch.path("fresh");
    let server = Server::start(&fresh, &Options { demo: true, generated_secrets: true, ..Default::default() });
    let printed = |server: &Server, prefix: &str| {
        server
            .stdout_lines()
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(|rest| rest.split(": ").last().unwrap_or("").to_string()))
    };
    let operator = printed(&server, "operator token").expect("a generated operator token is printed");
    let demo = printed(&server, "demo tenant API key").expect("a generated demo key is printed");
    assert_eq!(server.get("/v1/tenants", Some(&operator)).0, 200);
    assert_eq!(server.get("/v1/tenants/demo/catalog/items?limit=1", Some(&demo)).0, 200);
    server.terminate();
    let store = stored_bytes(&fresh);
    assert!(!contains(&store, &operator) && !contains(&store, &demo), "a generated secret is in the store");
    let server = Server::start(&fresh, &Options { demo: true, generated_secrets: true, ..Default::default() });
    assert!(printed(&server, "operator token").is_none(), "the token was printed again on restart");
    assert!(printed(&server, "demo tenant API key").is_none(), "the demo key was printed again on restart");
    assert_eq!(server.get("/v1/tenants", Some(&operator)).0, 200, "the stored hash still opens the door");
}

#[test]
fn keys_rotate_and_revoked_keys_stop_working() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    write_model(&model, 30, 5);
    let server = Server::start(&scratch.path("data"), &Options::default());
    let old = create_tenant(&server, "shop", &model);
    let page = "/v1/tenants/shop/catalog/items?limit=1";
    let (status, issued) = server.request("POST", "/v1/tenants/shop/keys", Some(OPERATOR), None);
    assert_eq!(status, 201, "{issued}");
    let new = issued["api_key"].as_str().expect("the new key, shown once").to_string();
    assert_eq!(server.get(page, Some(&old)).0, 200);
    assert_eq!(server.get(page, Some(&new)).0, 200);
    let (status, list) = server.get("/v1/tenants/shop/keys", Some(OPERATOR));
    assert_eq!(status, 200);
    let keys = list["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert!(!list.to_string().contains(&old) && !list.to_string().contains(&new), "a listing shows a key: {list}");
    let old_id = keys.iter().map(|k| k["id"].as_str().expect("id")).find(|id| *id != issued["id"]).expect("old id");
    let (status, _) = server.request("DELETE", &format!("/v1/tenants/shop/keys/{old_id}"), Some(OPERATOR), None);
    assert_eq!(status, 204);
    let (status, body) = server.get(page, Some(&old));
    assert_eq!((status, code(&body)), (401, "unauthorized"), "a revoked key still works");
    assert_eq!(server.get(page, Some(&new)).0, 200);
    let (status, body) = server.request("DELETE", "/v1/tenants/shop/keys/nope", Some(OPERATOR), None);
    assert_eq!((status, code(&body)), (404, "unknown_key"), "{body}");
    // The tenant's key cannot rotate keys (operator routes).
    assert_eq!(server.request("POST", "/v1/tenants/shop/keys", Some(&new), None).0, 403);
}

#[test]
fn a_tenant_over_its_rate_gets_429_and_another_tenant_is_unaffected() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    write_model(&model, 40, 6);
    let options =
        Options { env: vec![("EDGEREC_SERVE_TENANT_RECOMMEND_RATE".into(), "5".into())], ..Default::default() };
    let server = Server::start(&scratch.path("data"), &options);
    let flood = create_tenant(&server, "flood", &model);
    let calm = create_tenant(&server, "calm", &model);
    let request = json!({"events": [{"item": "sku-2", "ts": 10}], "k": 3, "query_time": 20});
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..40 {
        let (status, headers, body) =
            server.request_with_headers("POST", "/v1/tenants/flood/recommend", Some(&flood), &[], Some(&request));
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(code(&body), "rate_limited", "{body}");
                assert!(headers.get("retry-after").is_some(), "429 without Retry-After");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 1 && limited >= 1, "40 requests at once against 5/s: {ok} ok, {limited} limited");
    // The calm tenant has its own bucket: a few requests, all admitted.
    for _ in 0..4 {
        let (status, body) = server.json("POST", "/v1/tenants/calm/recommend", Some(&calm), &request);
        assert_eq!(status, 200, "calm tenant: {body}");
    }
}

#[test]
fn events_retried_with_the_same_key_or_event_id_are_stored_once() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    write_model(&model, 40, 7);
    let server = Server::start(&scratch.path("data"), &Options::default());
    let key = create_tenant(&server, "shop", &model);
    let batch = json!({"events": [
        {"user_id": "u", "item": "sku-1", "ts": 100, "action": "view"},
        {"user_id": "u", "item": "sku-2", "ts": 101, "action": "cart"}]});
    let post = |headers: &[(&str, &str)], body: &Value| {
        let (status, _, body) =
            server.request_with_headers("POST", "/v1/tenants/shop/events", Some(&key), headers, Some(body));
        assert_eq!(status, 200, "{body}");
        body
    };
    let first = post(&[("idempotency-key", "batch-7")], &batch);
    assert_eq!((first["accepted"].as_u64(), first["replayed"].as_bool()), (Some(2), Some(false)));
    let again = post(&[("idempotency-key", "batch-7")], &batch);
    assert_eq!((again["accepted"].as_u64(), again["replayed"].as_bool()), (Some(2), Some(true)), "{again}");
    let with_ids = json!({"events": [
        {"user_id": "v", "item": "sku-1", "ts": 100, "event_id": "e-1"},
        {"user_id": "v", "item": "sku-3", "ts": 102, "event_id": "e-2"}]});
    assert_eq!(post(&[], &with_ids)["accepted"], 2);
    let retried = post(&[], &with_ids);
    assert_eq!((retried["accepted"].as_u64(), retried["duplicates"].as_u64()), (Some(0), Some(2)), "{retried}");
    // Timestamps from before 1970 or far in the future are refused clearly.
    for ts in [-1_i64, 32_503_680_000] {
        let bad = json!({"events": [{"user_id": "u", "item": "sku-1", "ts": ts}]});
        let (status, body) = server.json("POST", "/v1/tenants/shop/events", Some(&key), &bad);
        assert_eq!((status, code(&body)), (400, "bad_request"), "ts {ts}: {body}");
    }
}

/// Reads one gauge's value for `kind` from the Prometheus text.
fn gauge(metrics: &str, name: &str, kind: &str) -> f64 {
    let prefix = format!("{name}{{kind=\"{kind}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

#[test]
fn timed_out_requests_keep_their_permits_until_their_work_ends() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    let ids = write_model(&model, 200, 8);
    let data = scratch.path("data");
    let server = Server::start(&data, &Options::default());
    let key = create_tenant(&server, "shop", &model);
    server.terminate();
    let options = Options {
        env: vec![
            ("EDGEREC_SERVE_REQUEST_TIMEOUT_MS".into(), "1".into()),
            ("EDGEREC_SERVE_ENCODE_CONCURRENCY".into(), "1".into()),
            ("EDGEREC_SERVE_PLUGIN_CONCURRENCY".into(), "1".into()),
            ("EDGEREC_SERVE_TENANT_RECOMMEND_RATE".into(), "0".into()),
        ],
        ..Default::default()
    };
    let server = Server::start(&data, &options);
    let history: Vec<Value> = (0..50).map(|i| json!({"item": ids[i % ids.len()], "ts": 1_000 + i as i64})).collect();
    let request = json!({"events": history, "k": 5, "query_time": 2_000});
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                for _ in 0..10 {
                    let (status, body) = server.json("POST", "/v1/tenants/shop/recommend", Some(&key), &request);
                    assert!(matches!(status, 200 | 503 | 429), "{status}: {body}");
                }
            });
        }
    });
    // /metrics itself may exceed a 1 ms deadline now and then.
    let metrics = (0..100)
        .find_map(|_| match server.text("/metrics", Some(OPERATOR)) {
            (200, text) => Some(text),
            _ => None,
        })
        .expect("/metrics answered");
    let timeouts = metrics.lines().filter(|l| l.contains("status=\"503\"") && l.contains("recommend")).count();
    assert!(timeouts > 0, "a 1 ms deadline should time some requests out:\n{metrics}");
    let encode_peak = gauge(&metrics, "edgerec_blocking_jobs_peak", "encode");
    let plugins_peak = gauge(&metrics, "edgerec_blocking_jobs_peak", "plugins");
    println!("peak running jobs: encode {encode_peak}, plugins {plugins_peak} (bound 1 each)");
    assert!(encode_peak >= 1.0, "no encode job ran:\n{metrics}");
    assert!(
        encode_peak <= 1.0 && plugins_peak <= 1.0,
        "a bound of 1 was exceeded: encode {encode_peak}, plugins {plugins_peak}"
    );
    // A timed-out events batch still commits; the retry with its key is stored once.
    let batch = json!({"events": [{"user_id": "w", "item": ids[0], "ts": 100}]});
    let (status, _, body) = server.request_with_headers(
        "POST",
        "/v1/tenants/shop/events",
        Some(&key),
        &[("idempotency-key", "slow-1")],
        Some(&batch),
    );
    if status == 503 {
        std::thread::sleep(Duration::from_millis(500));
    } else {
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = server.request_with_headers(
        "POST",
        "/v1/tenants/shop/events",
        Some(&key),
        &[("idempotency-key", "slow-1")],
        Some(&batch),
    );
    if status == 200 {
        assert_eq!(body["replayed"], true, "the retry stored the batch a second time: {body}");
    } else {
        assert_eq!(status, 503, "{body}");
    }
}

#[test]
fn a_tenant_that_cannot_load_is_unavailable_and_the_others_serve() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let model = scratch.path("model");
    write_model(&model, 30, 9);
    let server = Server::start(&data, &Options { demo: true, ..Default::default() });
    let key = create_tenant(&server, "fragile", &model);
    server.terminate();
    std::fs::remove_dir_all(&model).expect("remove the model directory");
    let server = Server::start(&data, &Options { demo: true, ..Default::default() });
    let (status, ready) = server.get("/readyz", Some(OPERATOR));
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(ready["unavailable_tenants"]["fragile"].as_str().is_some_and(|r| !r.is_empty()), "{ready}");
    let (status, body) = server.json(
        "POST",
        "/v1/tenants/fragile/recommend",
        Some(&key),
        &json!({"events": [{"item": "sku-1", "ts": 1}]}),
    );
    assert_eq!((status, code(&body)), (503, "tenant_unavailable"), "{body}");
    let (status, body) = server.json(
        "POST",
        "/v1/tenants/demo/recommend",
        Some(DEMO_KEY),
        &json!({"events": [{"item": "sku-00010", "ts": 1}], "k": 3}),
    );
    assert_eq!(status, 200, "the demo tenant must serve: {body}");
    let (_, tenants) = server.get("/v1/tenants", Some(OPERATOR));
    assert!(tenants.to_string().contains("fragile"), "{tenants}");
}

/// Latencies of `n` explained recommends to the demo tenant, after checking
/// that every stage ran.
fn demo_latencies(server: &Server, n: usize) -> Vec<f64> {
    let request = json!({"events": [{"item": "sku-00010", "ts": 1_700_000_000}], "k": 5, "explain": true});
    (0..n)
        .map(|_| {
            let start = std::time::Instant::now();
            let (status, body) = server.json("POST", "/v1/tenants/demo/recommend", Some(DEMO_KEY), &request);
            let took = start.elapsed().as_secs_f64() * 1e3;
            assert_eq!(status, 200, "{body}");
            for stage in body["trace"].as_array().expect("trace") {
                assert_eq!(stage["status"], "ran", "a demo stage did not run under the flood: {stage}");
            }
            took
        })
        .collect()
}

fn p99(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[(ms.len() * 99 / 100).min(ms.len() - 1)]
}

#[test]
fn a_tenant_whose_plugin_waits_cannot_starve_another_tenant() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    write_model(&model, 40, 10);
    // Real deadlines here: this test is about the sandbox keeping time.
    let options = Options {
        demo: true,
        env: vec![
            ("EDGEREC_SERVE_PLUGIN_DEADLINE_US".into(), "50000".into()),
            ("EDGEREC_SERVE_TENANT_RECOMMEND_RATE".into(), "0".into()),
        ],
        ..Default::default()
    };
    let server = Server::start(&scratch.path("data"), &options);
    let hostile = edgerec_test_programs::HOSTILE.to_vec();
    // The upload check runs under the uploader's own name: the plugin that
    // behaves only for tenant `sample` is refused for `evil`.
    create_tenant(&server, "evil", &model);
    let (status, body) = server.request("PUT", "/v1/tenants/evil/plugins/dodge", Some(OPERATOR), Some(hostile.clone()));
    assert_eq!((status, code(&body)), (400, "invalid_plugin"), "{body}");
    // A tenant named `sample` gets it past the check; its pipeline then sleeps
    // in every call. (It declares another name: stored as `dodge` on request.)
    let key = create_tenant(&server, "sample", &model);
    let (status, body) =
        server.request("PUT", "/v1/tenants/sample/plugins/dodge?replace=true", Some(OPERATOR), Some(hostile));
    assert_eq!(status, 201, "{body}");
    let stages = json!({"stages": [{"plugin": "dodge", "config": {"mode": "sleep"}, "on_error": "skip"}]});
    let (status, body) = server.json("PUT", "/v1/tenants/sample/pipeline", Some(OPERATOR), &stages);
    assert_eq!(status, 200, "{body}");

    let quiet = p99(demo_latencies(&server, 60));
    let request = json!({"events": [{"item": "sku-2", "ts": 10}], "k": 3, "query_time": 20, "explain": true});
    let loaded = std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..40 {
                    let (status, body) = server.json("POST", "/v1/tenants/sample/recommend", Some(&key), &request);
                    match status {
                        200 => {
                            let stage = &body["trace"][0];
                            assert_eq!(stage["status"], "skipped", "the sleeping stage was not stopped: {body}");
                        }
                        429 | 503 => {}
                        other => panic!("flood answered {other}: {body}"),
                    }
                }
            });
        }
        p99(demo_latencies(&server, 60))
    });
    println!("demo tenant p99: {quiet:.2} ms alone, {loaded:.2} ms while another tenant's plugin tries to sleep");
}
