//! Spans reach an OTLP/HTTP receiver started by the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use edgerec_e2e::{Options, Scratch, Server, create_tenant, write_model};
use serde_json::json;

/// One received request: path and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A minimal HTTP/1.1 server that stores every request and answers 200.
fn start_receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let received: Received = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    sink.lock().expect("lock").push((path, body));
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn recommend_spans_are_exported_over_otlp() {
    let (endpoint, received) = start_receiver();
    let scratch = Scratch::new();
    let model = scratch.path("model");
    write_model(&model, 40, 5);
    let options = Options {
        env: vec![("EDGEREC_SERVE_OTLP_ENDPOINT".into(), endpoint), ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into())],
        ..Default::default()
    };
    let server = Server::start(&scratch.path("data"), &options);
    let key = create_tenant(&server, "shop", &model);
    let body = json!({"user_id": "u", "events": [{"item": "sku-3", "ts": 5}], "k": 5, "query_time": 10});
    let (status, answer) = server.json("POST", "/v1/tenants/shop/recommend", Some(&key), &body);
    assert_eq!(status, 200, "{answer}");
    // SIGTERM flushes the exporter before the process exits.
    assert!(server.terminate().success());
    let received = received.lock().expect("lock");
    let traces: Vec<&Vec<u8>> = received.iter().filter(|(p, _)| p == "/v1/traces").map(|(_, b)| b).collect();
    assert!(
        !traces.is_empty(),
        "no POST /v1/traces received (got {:?})",
        received.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for span in [&b"recommend"[..], b"history", b"encode", b"score", b"parse"] {
        assert!(traces.iter().any(|b| contains(b, span)), "span {:?} not exported", String::from_utf8_lossy(span));
    }
    assert!(traces.iter().any(|b| contains(b, b"edgerec")), "service name not exported");
}
