//! What a careless or hostile client cannot do to the server (issue 21):
//! hold every connection with sockets that say nothing, learn tenant names
//! from `/readyz`, have an acknowledged batch dropped as a replay, or leave
//! a refused model bundle behind. With `EDGEREC_E2E_STORE=redis` the same
//! on Redis.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use edgerec_e2e::{DEMO_KEY, OPERATOR, Options, Scratch, Server, create_tenant, write_model};
use serde_json::{Value, json};

/// What an HTTP/2 client sends first; a hostile one stops after it.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the server closes `socket`; panics when it is still open
/// after `limit` (the server never closed it).
fn wait_closed_by_server(socket: &mut TcpStream, what: &str, limit: Duration) {
    socket.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buf = [0u8; 1024];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return,
            // HTTP/2: the server's SETTINGS and GOAWAY come first.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("{what}: the server left the connection open for {limit:?}")
            }
            // Reset: closed too.
            Err(_) => return,
        }
    }
}

#[test]
fn silent_and_http2_preface_sockets_do_not_lock_out_healthz() {
    let scratch = Scratch::new();
    let max_connections = 4;
    let env = [
        ("EDGEREC_SERVE_MAX_CONNECTIONS", max_connections.to_string()),
        ("EDGEREC_SERVE_FIRST_REQUEST_TIMEOUT_MS", "300".to_string()),
        ("EDGEREC_SERVE_IDLE_TIMEOUT_MS", "300".to_string()),
    ];
    let options = Options { env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(), ..Default::default() };
    let server = Server::start(&scratch.path("data"), &options);
    // Twice max_connections of each kind, all held open by the client.
    let mut hostile: Vec<(String, TcpStream)> = Vec::new();
    for i in 0..2 * max_connections {
        let silent = TcpStream::connect(server.address()).expect("connect");
        hostile.push((format!("silent socket {i}"), silent));
        let mut preface = TcpStream::connect(server.address()).expect("connect");
        preface.write_all(HTTP2_PREFACE).expect("send the preface");
        hostile.push((format!("HTTP/2 preface socket {i}"), preface));
    }
    for round in 0..3 {
        let (status, body) = server.get("/healthz", None);
        assert_eq!(status, 200, "round {round}: {body}");
    }
    // Every hostile socket is closed by the server (its place returned),
    // not by the client, which holds them all until here.
    for (what, socket) in &mut hostile {
        wait_closed_by_server(socket, what, Duration::from_secs(30));
    }
    let (status, _) = server.get("/healthz", None);
    assert_eq!(status, 200);
}

/// A tenant that cannot load: strangers (and tenants) learn how many, only
/// the operator which and why.
#[test]
fn readyz_tells_strangers_a_count_and_the_operator_the_detail() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let model = scratch.path("acme-secret-model");
    write_model(&model, 30, 9);
    let server = Server::start(&data, &Options { demo: true, ..Default::default() });
    create_tenant(&server, "acme-secret", &model);
    server.terminate();
    std::fs::remove_dir_all(&model).expect("remove the model directory");
    let server = Server::start(&data, &Options { demo: true, ..Default::default() });
    for token in [None, Some(DEMO_KEY), Some("eo_wrong_token")] {
        let (status, ready) = server.get("/readyz", token);
        assert_eq!(status, 200, "{ready}");
        assert_eq!(ready["status"], "degraded", "{ready}");
        assert_eq!(ready["unavailable_tenant_count"], 1, "{ready}");
        assert!(ready.get("unavailable_tenants").is_none(), "{token:?} was told the names: {ready}");
        let text = ready.to_string();
        assert!(!text.contains("acme"), "{token:?} learned a tenant name: {text}");
        assert!(!text.contains(scratch.path("").to_str().unwrap()), "{token:?} learned a server path: {text}");
    }
    let (status, ready) = server.get("/readyz", Some(OPERATOR));
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["unavailable_tenant_count"], 1, "{ready}");
    let reason = ready["unavailable_tenants"]["acme-secret"].as_str().unwrap_or_default();
    assert!(reason.contains("acme-secret-model"), "the operator is told why: {ready}");
}

/// Batches without an `Idempotency-Key` are never answered as replays, among
/// many live client keys (some shaped like the keys servers used to make).
#[test]
fn unkeyed_batches_are_never_taken_for_replays() {
    let scratch = Scratch::new();
    let model = scratch.path("model");
    write_model(&model, 30, 3);
    let env = vec![("EDGEREC_SERVE_TENANT_WRITE_RATE".to_string(), "0".to_string())];
    let server = Server::start(&scratch.path("data"), &Options { env, ..Default::default() });
    let key = create_tenant(&server, "shop", &model);
    let batch = |user: &str, ts: i64| json!({"events": [{"user_id": user, "item": "sku-1", "ts": ts}]});
    let post = |headers: &[(&str, &str)], body: &Value| {
        let (status, _, answer) =
            server.request_with_headers("POST", "/v1/tenants/shop/events", Some(&key), headers, Some(body));
        assert_eq!(status, 200, "{answer}");
        answer
    };
    for i in 0..200u32 {
        let client_key = if i % 2 == 0 { format!("edge-k{i:08x}") } else { format!("{:032x}", u128::from(i) << 64) };
        let answer = post(&[("idempotency-key", &client_key)], &batch("seeded", i64::from(i)));
        assert_eq!(answer["replayed"], false, "{answer}");
        assert_eq!(post(&[("idempotency-key", &client_key)], &batch("seeded", 0))["replayed"], true);
    }
    for i in 0..300 {
        let answer = post(&[], &batch(&format!("shopper-{i}"), 1_000 + i));
        assert_eq!((answer["accepted"].as_u64(), answer["replayed"].as_bool()), (Some(1), Some(false)), "{answer}");
    }
}

/// An upload answered 409 (the version holds another bundle) leaves no copy
/// of its bundle on the host (nor in the store: tests/tests/store.rs).
#[test]
fn a_refused_model_upload_leaves_no_bundle_behind() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let server = Server::start(&data, &Options::default());
    let base = scratch.path("base");
    write_model(&base, 40, 1);
    create_tenant(&server, "shop", &base);
    let bundle = |seed: u64| {
        let dir = scratch.path(&format!("model-{seed}"));
        write_model(&dir, 40, seed);
        let mut builder = tar::Builder::new(Vec::new());
        for name in ["config.json", "model.safetensors", "items.json"] {
            builder.append_path_with_name(dir.join(name), name).expect("append");
        }
        builder.into_inner().expect("tar")
    };
    let put = |body: Vec<u8>| server.request("PUT", "/v1/tenants/shop/models/v1", Some(OPERATOR), Some(body));
    let (status, body) = put(bundle(2));
    assert_eq!(status, 201, "{body}");
    let cached = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(data.join("models"))
            .expect("the model cache")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = cached();
    assert_eq!(before, [body["digest"].as_str().unwrap().to_string()]);
    let (status, refused) = put(bundle(3));
    assert_eq!(status, 409, "{refused}");
    assert_eq!(cached(), before, "the refused bundle was kept");
}
