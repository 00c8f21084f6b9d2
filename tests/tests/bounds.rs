//! Bytes are the unit of every bound, and uploads are checked before they
//! cost (issue 21): catalog items capped in bytes, listing pages bounded in
//! bytes as well as count, catalog reads counted against the tenant's
//! quota, a large-attribute tenant hammered beside a normal one that keeps
//! answering, and each hostile upload refused with a 4xx while the server
//! stays alive and small. With `EDGEREC_E2E_STORE=redis` the same on Redis.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgerec_e2e::{OPERATOR, Options, Scratch, Server, code, create_tenant, write_model};
use edgerec_test_programs::binaries::{many_functions, nested_components};
use serde_json::{Value, json};

/// The server's default `max_item_bytes` and `max_page_bytes`.
const MAX_ITEM_BYTES: usize = 64 << 10;
const MAX_PAGE_BYTES: usize = 1 << 20;

/// Attributes of `lists` lists of 60 strings of 250 characters, plus `stock`.
fn large_attributes(lists: usize, seed: usize) -> Value {
    let mut attributes = serde_json::Map::new();
    attributes.insert("stock".into(), json!(1 + seed % 3));
    for l in 0..lists {
        let text: Vec<String> = (0..60).map(|i| format!("{:0>250}", seed * 1000 + l * 100 + i)).collect();
        attributes.insert(format!("t{l}"), json!(text));
    }
    Value::Object(attributes)
}

/// PUTs catalog items, waiting out 429s (the tests run under low write rates).
fn upsert(server: &Server, tenant: &str, key: &str, items: &[Value]) {
    let path = format!("/v1/tenants/{tenant}/catalog/items");
    loop {
        let (status, retry, body) = server.json_with_retry_after("PUT", &path, key, &json!({"items": items}));
        match status {
            200 => return,
            429 => std::thread::sleep(Duration::from_secs(retry.and_then(|r| r.parse().ok()).unwrap_or(1))),
            _ => panic!("upsert into {tenant}: {status} {body}"),
        }
    }
}

fn in_stock_pipeline(server: &Server, tenant: &str) {
    let (status, body) = server.request(
        "PUT",
        &format!("/v1/tenants/{tenant}/plugins/in-stock"),
        Some(OPERATOR),
        Some(edgerec_runtime::first_party::IN_STOCK.to_vec()),
    );
    assert_eq!(status, 201, "{body}");
    let pipeline = json!({"stages": [{"plugin": "in-stock", "config": {"attribute": "stock", "min": 1}}]});
    let (status, body) = server.json("PUT", &format!("/v1/tenants/{tenant}/pipeline"), Some(OPERATOR), &pipeline);
    assert_eq!(status, 200, "{body}");
}

/// A tenant of `items` model items whose catalog holds each with `lists`
/// large lists (0: only `stock`), behind an in-stock stage that reads them.
fn tenant_with_catalog(server: &Server, scratch: &Scratch, name: &str, items: usize, lists: usize) -> String {
    let model = scratch.path(name);
    write_model(&model, items, 3);
    let key = create_tenant(server, name, &model);
    let catalog: Vec<Value> =
        (1..=items).map(|i| json!({"id": format!("sku-{i}"), "attributes": large_attributes(lists, i)})).collect();
    // Pages under the 1 MiB body limit.
    let per_page = if lists == 0 { 500 } else { (MAX_PAGE_BYTES - 64 * 1024) / MAX_ITEM_BYTES };
    for page in catalog.chunks(per_page) {
        upsert(server, name, &key, page);
    }
    in_stock_pipeline(server, name);
    key
}

fn recommend_request(user: usize) -> Value {
    json!({"events": [{"item": format!("sku-{}", 1 + user % 50), "ts": 100}, {"item": "sku-7", "ts": 200}],
           "k": 10, "query_time": 1000})
}

fn p99(mut millis: Vec<f64>) -> f64 {
    millis.sort_by(f64::total_cmp);
    millis[(millis.len() * 99).div_ceil(100) - 1]
}

#[test]
fn catalog_items_and_pages_are_bounded_in_bytes_and_reads_count_against_the_quota() {
    let scratch = Scratch::new();
    let options = Options { env: vec![("EDGEREC_SERVE_TENANT_WRITE_RATE".into(), "5".into())], ..Default::default() };
    let server = Server::start(&scratch.path("data"), &options);
    let key = tenant_with_catalog(&server, &scratch, "big", 60, 4);
    let near = large_attributes(4, 1).to_string().len();
    assert!(near > MAX_ITEM_BYTES * 9 / 10 && near <= MAX_ITEM_BYTES, "the test's items are near the cap: {near}");

    // Over the cap: 413 with a clear code, and nothing of the page stored.
    let over = json!({"items": [{"id": "sku-1", "attributes": {"stock": 0}},
                                {"id": "sku-2", "attributes": large_attributes(5, 2)}]});
    let (status, _, body) = server.json_with_retry_after("PUT", "/v1/tenants/big/catalog/items", &key, &over);
    assert_eq!((status, code(&body)), (413, "payload_too_large"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("max_item_bytes"), "{body}");
    std::thread::sleep(Duration::from_secs(2));
    let (status, item) = server.get("/v1/tenants/big/catalog/items/sku-1", Some(&key));
    assert_eq!((status, &item["attributes"]["stock"]), (200, &json!(2)), "sku-1 kept its stock: {item}");

    // A page asked for 1000 items holds what fits in max_page_bytes; paging
    // through the catalog sees every item once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        std::thread::sleep(Duration::from_millis(250)); // within the write rate of 5/s
        let path = match &after {
            Some(after) => format!("/v1/tenants/big/catalog/items?limit=1000&after={after}"),
            None => "/v1/tenants/big/catalog/items?limit=1000".to_string(),
        };
        let (status, page) = server.get(&path, Some(&key));
        assert_eq!(status, 200, "{page}");
        let bytes = page.to_string().len();
        let count = page["items"].as_array().unwrap().len();
        assert!(count >= 1 && bytes <= MAX_PAGE_BYTES + count * 64, "a page of {count} items, {bytes} bytes");
        seen.extend(page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(next) => {
                assert!(count < 60, "a full page by count has a next only when more may follow");
                after = Some(next.to_string());
            }
            None => break,
        }
    }
    let mut expected: Vec<String> = (1..=60).map(|i| format!("sku-{i}")).collect();
    expected.sort();
    assert_eq!(seen, expected, "every item once, in id order");

    // Catalog reads count against the tenant's write rate: a burst of reads gets 429s.
    std::thread::sleep(Duration::from_secs(2));
    let statuses: Vec<u16> = (0..30)
        .map(|i| server.get(&format!("/v1/tenants/big/catalog/items/sku-{}", 1 + i % 60), Some(&key)).0)
        .collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&429), "30 reads at once within a rate of 5/s: {statuses:?}");
}

#[test]
fn a_large_attribute_tenant_hammered_beside_a_normal_one_leaves_it_answering() {
    let scratch = Scratch::new();
    let options =
        Options { env: vec![("EDGEREC_SERVE_TENANT_MAX_IN_FLIGHT".into(), "4".into())], ..Default::default() };
    let server = Server::start(&scratch.path("data"), &options);
    let big = tenant_with_catalog(&server, &scratch, "big", 200, 4);
    let small = tenant_with_catalog(&server, &scratch, "small", 200, 0);

    let ask = |tenant: &str, key: &str, user: usize| {
        let started = Instant::now();
        let (status, body) =
            server.json("POST", &format!("/v1/tenants/{tenant}/recommend"), Some(key), &recommend_request(user));
        (status, body, started.elapsed().as_secs_f64() * 1e3)
    };
    for user in 0..20 {
        assert_eq!(ask("small", &small, user).0, 200, "warm-up");
    }
    let solo: Vec<f64> = (0..150)
        .map(|user| {
            let (status, body, ms) = ask("small", &small, user);
            assert_eq!(status, 200, "{body}");
            ms
        })
        .collect();

    let stop = AtomicBool::new(false);
    let (answered, refused, other) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let beside = std::thread::scope(|scope| {
        for thread in 0..8 {
            let (stop, answered, refused, other, big, server) = (&stop, &answered, &refused, &other, &big, &server);
            scope.spawn(move || {
                let mut user = thread * 1000;
                while !stop.load(Ordering::Relaxed) {
                    user += 1;
                    let status = if user % 4 == 0 {
                        server.get("/v1/tenants/big/catalog/items?limit=1000", Some(big)).0
                    } else {
                        ask("big", big, user).0
                    };
                    match status {
                        200 => answered.fetch_add(1, Ordering::Relaxed),
                        429 => refused.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        let beside: Vec<f64> = (0..150)
            .map(|user| {
                let (status, body, ms) = ask("small", &small, user);
                assert_eq!(status, 200, "the normal tenant beside the large one: {body}");
                ms
            })
            .collect();
        assert_eq!(server.get("/healthz", None).0, 200);
        stop.store(true, Ordering::Relaxed);
        beside
    });
    let (answered, refused, other) = (answered.into_inner(), refused.into_inner(), other.into_inner());
    assert!(answered > 0, "the large tenant is served within its quota");
    assert!(refused > 0, "8 clients over an in-flight cap of 4 get 429s ({answered} answered)");
    assert_eq!(other, 0, "the large tenant gets 200 or 429, nothing else");
    let (solo_p99, beside_p99) = (p99(solo), p99(beside));
    let (_, peak) = server.rss();
    println!(
        "normal tenant p99: solo {solo_p99:.1} ms, beside the large tenant {beside_p99:.1} ms (ratio {:.2}); large tenant: {answered} answered, {refused} refused; server peak RSS {} MiB",
        beside_p99 / solo_p99,
        peak >> 20
    );
}

/// A tar whose one entry's header declares `size` bytes (1 KiB follows).
fn tar_declaring(size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path("model.safetensors").expect("a short path");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.resize(out.len() + 1024 + 1024, 0);
    out
}

/// A bundle of a real small model whose config.json declares `num_layers`.
fn bundle_declaring_layers(dir: &Path, num_layers: u64) -> Vec<u8> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).expect("config.json");
    let mut config: Value = serde_json::from_str(&text).expect("config.json is JSON");
    config["num_layers"] = json!(num_layers);
    let config = config.to_string();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(config.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "config.json", config.as_bytes()).expect("append config.json");
    for name in ["model.safetensors", "items.json"] {
        builder.append_path_with_name(dir.join(name), name).expect("append a model file");
    }
    builder.into_inner().expect("tar")
}

#[test]
fn hostile_uploads_are_refused_while_the_server_stays_alive_and_small() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.path("data"), &Options::default());
    let model = scratch.path("model");
    write_model(&model, 40, 5);
    create_tenant(&server, "shop", &model);
    let (_, peak_before) = server.rss();

    let uploads: [(&str, &str, Vec<u8>, &str); 4] = [
        ("a tar entry declaring 2^62 bytes", "models/v1", tar_declaring(1 << 62), "invalid_model"),
        (
            "config.json declaring 1e10 layers",
            "models/v2",
            bundle_declaring_layers(&model, 10_000_000_000),
            "invalid_model",
        ),
        ("100,000 nested empty components", "plugins/nested", nested_components(100_000), "invalid_plugin"),
        ("1M empty functions", "plugins/functions", many_functions(1_000_000), "invalid_plugin"),
    ];
    for (what, path, body, expected) in uploads {
        let size = body.len();
        let started = Instant::now();
        let (status, answer) = server.request("PUT", &format!("/v1/tenants/shop/{path}"), Some(OPERATOR), Some(body));
        let took = started.elapsed();
        assert_eq!((status, code(&answer)), (400, expected), "{what}: {answer}");
        assert_eq!(server.get("/healthz", None).0, 200, "{what}: the server answers after it");
        let (rss, peak) = server.rss();
        println!(
            "{what} ({size} bytes): {status} in {:.0} ms; RSS {} MiB, peak {} MiB: {}",
            took.as_secs_f64() * 1e3,
            rss >> 20,
            peak >> 20,
            answer["error"]["message"]
        );
        assert!(
            peak < peak_before + (512 << 20),
            "{what}: peak RSS grew from {} to {} MiB",
            peak_before >> 20,
            peak >> 20
        );
    }
    let (_, models) = server.get("/v1/tenants/shop/models", Some(OPERATOR));
    assert_eq!(models["versions"], json!([]), "nothing refused is stored");
    let (_, plugins) = server.get("/v1/tenants/shop/plugins", Some(OPERATOR));
    assert_eq!(plugins["plugins"], json!([]), "nothing refused is stored");
}

/// The `__compile-plugin` children of `pid` alive now.
fn compile_children(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter(|entry| {
            let dir = entry.path();
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            let parent = status.lines().find_map(|l| l.strip_prefix("PPid:")).map(str::trim);
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            parent == Some(pid.to_string().as_str())
                && cmdline.split(|&b| b == 0).any(|arg| arg == edgerec_runtime::COMPILE_SUBCOMMAND.as_bytes())
        })
        .count()
}

/// An upload within the structure caps whose compile passes its time or
/// memory bound is refused (400, saying which bound), and one whose request
/// is abandoned has its compile process killed: what one upload may cost is
/// bounded by the kernel, not by the compiler.
#[test]
fn a_compile_past_its_bounds_or_abandoned_is_stopped() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    write_model(&model, 40, 5);
    // 90,000 functions: under the structure caps, seconds of Cranelift.
    let heavy = many_functions(90_000);
    let bounded = |key: &str, value: &str, fragment: &str| {
        // A compile stopped by its memory bound may take longer than the
        // default request deadline on a loaded machine.
        let env = vec![
            (format!("EDGEREC_SERVE_{key}"), value.to_string()),
            ("EDGEREC_SERVE_REQUEST_TIMEOUT_MS".into(), "120000".into()),
        ];
        let server = Server::start(&scratch.path(&format!("data-{key}")), &Options { env, ..Default::default() });
        create_tenant(&server, "shop", &model);
        let started = Instant::now();
        let (status, answer) =
            server.request("PUT", "/v1/tenants/shop/plugins/heavy", Some(OPERATOR), Some(heavy.clone()));
        println!("{key} = {value}: {status} in {:.0} ms: {}", started.elapsed().as_secs_f64() * 1e3, answer["error"]);
        assert_eq!((status, code(&answer)), (400, "invalid_plugin"), "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{message}");
        assert_eq!(compile_children(server.pid()), 0, "the compile process is gone");
    };
    bounded("PLUGIN_COMPILE_TIMEOUT_MS", "200", "longer than its 200 ms bound");
    bounded("PLUGIN_COMPILE_MEMORY_BYTES", "25165824", "more than its 25165824 bytes of memory");

    // A deadline far below the heavy compile's seconds, far above what
    // creating a small tenant takes on a loaded machine.
    let env = vec![("EDGEREC_SERVE_REQUEST_TIMEOUT_MS".into(), "2000".into())];
    let server = Server::start(&scratch.path("data-abandoned"), &Options { env, ..Default::default() });
    create_tenant(&server, "shop", &model);
    let (status, answer) = server.request("PUT", "/v1/tenants/shop/plugins/heavy", Some(OPERATOR), Some(heavy));
    assert_eq!((status, code(&answer)), (503, "timeout"), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while compile_children(server.pid()) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(compile_children(server.pid()), 0, "the abandoned upload's compile process was killed");
    let (_, plugins) = server.get("/v1/tenants/shop/plugins", Some(OPERATOR));
    assert_eq!(plugins["plugins"], json!([]), "nothing abandoned is stored");
}
