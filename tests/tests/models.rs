//! Model versions end to end: a bundle uploaded, checked, activated without
//! dropping a request, rolled back, kept across a restart; hostile bundles
//! refused. With `EDGEREC_E2E_STORE=redis` the same on Redis.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use edgerec_e2e::{OPERATOR, Options, Scratch, Server, code, create_tenant, items, write_model};
use serde_json::{Value, json};

/// A tar of the model directory's three files.
fn bundle(dir: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for name in ["config.json", "model.safetensors", "items.json"] {
        builder.append_path_with_name(dir.join(name), name).expect("append");
    }
    builder.into_inner().expect("tar")
}

/// A tar with one entry whose name is written as given (even `../x`).
fn raw_tar(entries: &[(&str, &[u8], u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content, kind) in entries {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::new(*kind));
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn put(server: &Server, version: &str, body: Vec<u8>) -> (u16, Value) {
    server.request("PUT", &format!("/v1/tenants/shop/models/{version}"), Some(OPERATOR), Some(body))
}

#[test]
fn model_versions_upload_activate_roll_back_and_survive_a_restart() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let server = Server::start(&data, &Options::default());
    let base = scratch.path("base");
    write_model(&base, 60, 1);
    let key = create_tenant(&server, "shop", &base);
    let second = scratch.path("second");
    write_model(&second, 60, 2);

    // Hostile and broken bundles are refused, and nothing is stored.
    let config = std::fs::read(base.join("config.json")).unwrap();
    let refused: [(&str, Vec<u8>); 5] = [
        ("not a tar", b"hello, this is not a tar archive at all".repeat(20)),
        ("escaping path", raw_tar(&[("../evil.json", &config, b'0')])),
        ("symbolic link", raw_tar(&[("config.json", b"", b'2')])),
        ("missing files", raw_tar(&[("config.json", &config, b'0')])),
        ("unknown file", raw_tar(&[("config.json", &config, b'0'), ("run.sh", b"rm -rf /", b'0')])),
    ];
    for (what, body) in refused {
        let (status, body) = put(&server, "bad", body);
        assert_eq!((status, code(&body)), (400, "invalid_model"), "{what}: {body}");
    }
    for bad in ["v%201", "v..1%2F"] {
        let (status, body) = put(&server, bad, bundle(&second));
        assert_eq!((status, code(&body)), (400, "bad_request"), "version name {bad:?}: {body}");
    }
    let (_, history) = server.get("/v1/tenants/shop/models", Some(OPERATOR));
    assert_eq!(history, json!({"active": null, "versions": []}));

    // Uploaded (idempotent), immutable, then activated under load.
    let (status, v2) = put(&server, "v2", bundle(&second));
    assert_eq!(status, 201, "{v2}");
    assert_eq!(put(&server, "v2", bundle(&second)).0, 201, "the same bundle again");
    let (status, body) = put(&server, "v2", bundle(&base));
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");

    let request =
        json!({"events": [{"item": "sku-3", "ts": 100}, {"item": "sku-8", "ts": 200}], "k": 10, "query_time": 1000});
    let ask = |server: &Server| {
        let (status, body) = server.json("POST", "/v1/tenants/shop/recommend", Some(&key), &request);
        assert_eq!(status, 200, "{body}");
        body
    };
    let on_base = ask(&server);
    let stop = AtomicBool::new(false);
    let answers = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                answers.lock().unwrap().push(server.json("POST", "/v1/tenants/shop/recommend", Some(&key), &request));
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (status, body) = server.request("POST", "/v1/tenants/shop/models/v2/activate", Some(OPERATOR), None);
        assert_eq!((status, body["version"].as_str()), (200, Some("v2")), "{body}");
        std::thread::sleep(std::time::Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
    });
    let on_second = ask(&server);
    assert_ne!(items(&on_base), items(&on_second), "the two models answer alike");
    for (status, body) in answers.lock().unwrap().iter() {
        assert_eq!(*status, 200, "a request failed during the model swap: {body}");
        let got = items(body);
        assert!(got == items(&on_base) || got == items(&on_second), "an answer of neither model: {got:?}");
    }
    let (_, tenant) = server.get("/v1/tenants/shop", Some(OPERATOR));
    assert_eq!(tenant["model_version"], "v2");
    let (status, body) = server.request("POST", "/v1/tenants/shop/models/v9/activate", Some(OPERATOR), None);
    assert_eq!((status, code(&body)), (404, "unknown_model"), "{body}");

    // A restart serves the active version.
    assert!(server.terminate().success());
    let server = Server::start(&data, &Options::default());
    assert_eq!(items(&ask(&server)), items(&on_second), "the restarted server serves v2");

    // Rollback returns to the base model, then there is nothing to undo.
    let (status, body) = server.request("POST", "/v1/tenants/shop/models/rollback", Some(OPERATOR), None);
    assert_eq!((status, &body), (200, &json!({"active": null})), "{body}");
    assert_eq!(items(&ask(&server)), items(&on_base), "rolled back to the base model");
    let (status, body) = server.request("POST", "/v1/tenants/shop/models/rollback", Some(OPERATOR), None);
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
    let (_, history) = server.get("/v1/tenants/shop/models", Some(OPERATOR));
    assert_eq!((history["active"].clone(), history["versions"][0]["version"].clone()), (Value::Null, json!("v2")));
}
