//! The server runs the engine through its backends: the CUDA kernels (on the
//! CPU emulator, `cuda-emu`, or on a GPU) answer what the CPU backend answers, and the
//! batching scheduler answers concurrent recommends as it answers them one by
//! one.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use edgerec_e2e::{OPERATOR, Options, Scratch, Server, create_tenant_on, write_model};
use serde_json::{Value, json};

/// Scores of the CPU and the emulated CUDA kernels differ by float rounding
/// (different summation orders); cosine scores are in [-1, 1].
const SCORE_TOLERANCE: f64 = 1e-4;

/// Creates tenant `name` on `model` served by `backend`; returns its key.
fn tenant_on(server: &Server, name: &str, model: &std::path::Path, backend: &str) -> String {
    let body = create_tenant_on(server, name, model, Some(backend));
    assert_eq!(body["backend"], backend, "{body}");
    body["api_key"].as_str().expect("api_key").to_string()
}

/// (item, score) of a recommend answer.
fn ranked(body: &Value) -> Vec<(String, f64)> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {body}"))
        .iter()
        .map(|i| (i["item"].as_str().expect("item").to_string(), i["score"].as_f64().expect("score")))
        .collect()
}

/// Same scores rank by rank within `tolerance`; where the items differ, the
/// two items' scores are tied within it (either order is right).
fn assert_same_answer(what: &str, expected: &[(String, f64)], got: &[(String, f64)], tolerance: f64) {
    assert_eq!(expected.len(), got.len(), "{what}: lengths");
    for (rank, ((item_a, score_a), (item_b, score_b))) in expected.iter().zip(got).enumerate() {
        assert!((score_a - score_b).abs() <= tolerance, "{what}: rank {rank}: score {score_a} vs {score_b}");
        if item_a != item_b {
            let other = expected.iter().find(|(item, _)| item == item_b).map(|(_, s)| *s);
            assert!(
                other.is_some_and(|s| (s - score_a).abs() <= 2.0 * tolerance),
                "{what}: rank {rank}: {item_a} ({score_a}) vs {item_b} (score there {other:?}): not a tie"
            );
        }
    }
}

/// The backend under test beside the CPU: `cuda-emu` in every test run,
/// `cuda` on a GPU machine (`kernels/cuda/check.sh` sets it).
fn device_backend() -> String {
    std::env::var("EDGEREC_E2E_DEVICE_BACKEND").unwrap_or_else(|_| "cuda-emu".into())
}

#[test]
fn the_cuda_kernels_serve_the_answers_of_the_cpu_backend() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    let ids = write_model(&model, 300, 21);
    let server = Server::start(&scratch.path("data"), &Options::default());
    let cpu = tenant_on(&server, "on-cpu", &model, "cpu");
    let emu = tenant_on(&server, "on-emu", &model, &device_backend());
    let history = |n: usize, offset: usize| -> Vec<Value> {
        (0..n).map(|i| json!({"item": ids[(i * 7 + offset) % ids.len()], "ts": 1_000 + 60 * i as i64})).collect()
    };
    let ask = |tenant: &str, key: &str, request: &Value| {
        let (status, body) = server.json("POST", &format!("/v1/tenants/{tenant}/recommend"), Some(key), request);
        assert_eq!(status, 200, "{tenant}: {body}");
        ranked(&body)
    };
    let both = |what: &str, request: Value| {
        let expected = ask("on-cpu", &cpu, &request);
        let got = ask("on-emu", &emu, &request);
        assert_same_answer(what, &expected, &got, SCORE_TOLERANCE);
    };
    // Anonymous histories: shorter than a warp, around it, and longer than L (50).
    for n in [1, 31, 33, 80] {
        both(&format!("{n} events"), json!({"events": history(n, n), "k": 20, "query_time": 1_000_000}));
    }
    // A known user: a fresh state, then incremental appends, then a window that slides.
    for (round, (count, offset)) in [(10, 0), (5, 100), (60, 200)].into_iter().enumerate() {
        let start = 1_000 + 10_000 * round as i64;
        let events: Vec<Value> = history(count, offset)
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e["user_id"] = json!("shopper");
                e["ts"] = json!(start + i as i64);
                e
            })
            .collect();
        for (tenant, key) in [("on-cpu", &cpu), ("on-emu", &emu)] {
            let (status, body) =
                server.json("POST", &format!("/v1/tenants/{tenant}/events"), Some(key), &json!({"events": events}));
            assert_eq!(status, 200, "{body}");
        }
        both(&format!("user after round {round}"), json!({"user_id": "shopper", "k": 20, "query_time": start + 5_000}));
    }
}

#[test]
fn concurrent_recommends_batched_answer_as_sequential_ones() {
    const REQUESTS: usize = 64;
    let max_wait = Duration::from_millis(100);
    let scratch = Scratch::new();
    let model = scratch.path("model");
    let ids = write_model(&model, 400, 5);
    let options = Options {
        env: [
            ("EDGEREC_SERVE_BACKEND", "cpu".to_string()),
            ("EDGEREC_SERVE_MAX_BATCH", REQUESTS.to_string()),
            ("EDGEREC_SERVE_MAX_WAIT_US", max_wait.as_micros().to_string()),
            ("EDGEREC_SERVE_MAX_IN_FLIGHT", "256".to_string()),
            ("EDGEREC_SERVE_TENANT_MAX_IN_FLIGHT", "256".to_string()),
            ("EDGEREC_SERVE_TENANT_RECOMMEND_RATE", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        ..Default::default()
    };
    let server = Server::start(&scratch.path("data"), &options);
    // Two tenants on one model: the sequential pass must not warm the
    // concurrent pass's encoder cache.
    let one_by_one = tenant_on(&server, "one-by-one", &model, "cpu");
    let together = tenant_on(&server, "together", &model, "cpu");
    // Half the users are known (stored events, cached states), half anonymous.
    let requests: Vec<Value> = (0..REQUESTS)
        .map(|u| {
            let events: Vec<Value> = (0..(3 + u * 5 % 70))
                .map(|i| json!({"item": ids[(u * 31 + i * 13) % ids.len()], "ts": 5_000 + i as i64}))
                .collect();
            if u % 2 == 0 {
                json!({"events": events, "k": 10, "query_time": 90_000})
            } else {
                let user = format!("user-{u}");
                let stored: Vec<Value> = events
                    .into_iter()
                    .map(|mut e| {
                        e["user_id"] = json!(user);
                        e
                    })
                    .collect();
                for (tenant, key) in [("one-by-one", &one_by_one), ("together", &together)] {
                    let (status, body) = server.json(
                        "POST",
                        &format!("/v1/tenants/{tenant}/events"),
                        Some(key),
                        &json!({"events": stored}),
                    );
                    assert_eq!(status, 200, "{body}");
                }
                json!({"user_id": user, "k": 10, "query_time": 90_000})
            }
        })
        .collect();
    let ask = |tenant: &str, key: &str, request: &Value| {
        let (status, body) = server.json("POST", &format!("/v1/tenants/{tenant}/recommend"), Some(key), request);
        assert_eq!(status, 200, "{tenant}: {body}");
        ranked(&body)
    };

    // A lone request waits for company at most max_wait, then is answered.
    let lone = Instant::now();
    let sequential: Vec<_> = requests.iter().map(|r| ask("one-by-one", &one_by_one, r)).collect();
    let per_request = lone.elapsed() / REQUESTS as u32;
    println!("sequential: {per_request:?} per request (max_wait {max_wait:?})");
    assert!(per_request >= max_wait, "a lone request was answered before max_wait_us: nothing waited for company");

    let barrier = Barrier::new(REQUESTS);
    let started = Instant::now();
    let concurrent: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .map(|r| {
                let barrier = &barrier;
                let ask = &ask;
                let key = &together;
                scope.spawn(move || {
                    barrier.wait();
                    ask("together", key, r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("request thread")).collect()
    });
    println!("concurrent: {REQUESTS} requests in {:?}", started.elapsed());
    for (i, (expected, got)) in sequential.iter().zip(&concurrent).enumerate() {
        // A batch stacks its users' rows: the same sums in another order.
        assert_same_answer(&format!("request {i}"), expected, got, 1e-5);
    }
    let (_, metrics) = server.text("/metrics", Some(OPERATOR));
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"))
    };
    let (batches, batched) = (value("edgerec_batch_size_count "), value("edgerec_batch_size_sum "));
    println!("{batched} requests in {batches} batches");
    assert_eq!(batched as usize, 2 * REQUESTS, "every recommend went through a batch");
    assert!(batches < batched, "64 concurrent requests never shared a batch");
}

/// A device tenant whose context is lost (a fault injected into the
/// emulator: the process's first kernel launch fails as a sticky GPU error
/// would) answers on the CPU, `/readyz` says so (the operator learns which
/// tenant and why, strangers a count), and once the device backend is
/// rebuilt (after a second) it serves again and `/readyz` is ready.
#[test]
fn a_lost_device_context_serves_on_the_cpu_until_rebuilt() {
    if device_backend() != "cuda-emu" {
        println!("skipped: the fault is injected into the emulator only");
        return;
    }
    let scratch = Scratch::new();
    let model = scratch.path("model");
    let ids = write_model(&model, 200, 13);
    let env = vec![("EDGEREC_EMU_LOSE_CONTEXT_AT".to_string(), "1".to_string())];
    let server = Server::start(&scratch.path("data"), &Options { env, ..Default::default() });
    let cpu = tenant_on(&server, "on-cpu", &model, "cpu");
    let emu = tenant_on(&server, "on-emu", &model, "cuda-emu");
    let request = json!({
        "events": (0..12).map(|i| json!({"item": ids[(i * 5) % ids.len()], "ts": 2_000 + 30 * i})).collect::<Vec<_>>(),
        "k": 10,
        "query_time": 50_000
    });
    let ask = |tenant: &str, key: &str| {
        let (status, body) = server.json("POST", &format!("/v1/tenants/{tenant}/recommend"), Some(key), &request);
        assert_eq!(status, 200, "{tenant}: {body}");
        ranked(&body)
    };
    let expected = ask("on-cpu", &cpu);
    // The first launch faults: this answer is the CPU's, exactly.
    assert_eq!(ask("on-emu", &emu), expected, "served on the CPU after the loss");
    let (status, ready) = server.get("/readyz", None);
    assert_eq!(status, 200, "{ready}");
    // The rebuild may already be done on a fast machine; when it is not, say so.
    if ready["degraded_backend_count"] == 1 {
        assert_eq!(ready["status"], "degraded", "{ready}");
        assert!(ready.get("degraded_backends").is_none(), "strangers learn a count only: {ready}");
        let (_, detail) = server.get("/readyz", Some(OPERATOR));
        let why = detail["degraded_backends"]["on-emu"].as_str().unwrap_or_default().to_string();
        if !why.is_empty() {
            assert!(why.contains("serving on the CPU") && why.contains("injected fault"), "{detail}");
        }
    }
    let start = Instant::now();
    loop {
        let (_, ready) = server.get("/readyz", Some(OPERATOR));
        if ready["degraded_backend_count"] == 0 {
            assert_eq!(ready["status"], "ready", "{ready}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "not rebuilt within 60 s: {ready}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Rebuilt: the device serves again, as the CPU does.
    assert_same_answer("after the rebuild", &expected, &ask("on-emu", &emu), SCORE_TOLERANCE);
}
