//! `edgerec bench http`: an open-loop load generator at fixed request rates
//! against a running server (latency measured from each request's scheduled
//! start, so a slow server cannot hide its queueing), with the share of
//! server time per stage read from the `/metrics` stage histograms.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use rand::seq::IndexedRandom;

/// Settings of one run.
pub struct BenchSettings {
    /// Server base URL.
    pub url: String,
    /// Tenant to load.
    pub tenant: String,
    /// Tenant API key.
    pub api_key: String,
    /// Operator token (to read /metrics).
    pub operator_token: String,
    /// Request rates (per second).
    pub rates: Vec<u32>,
    /// Seconds per rate.
    pub seconds: u64,
    /// Events per request.
    pub history: usize,
    /// Send a user id (exercises the encoder cache) instead of anonymous histories.
    pub with_user: bool,
}

struct RateResult {
    rate: u32,
    sent: usize,
    ok: usize,
    overloaded: usize,
    failed: usize,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sums of the `_sum` series of a histogram, by the value of `label`.
fn histogram_sums(text: &str, metric: &str, label: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    let prefix = format!("{metric}_sum{{");
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let Some((labels, value)) = line[prefix.len()..].split_once("} ") else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let key = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{label}=\"")))
            .map(|v| v.trim_end_matches('"').to_string())
            .unwrap_or_default();
        *sums.entry(key).or_insert(0.0) += value;
    }
    sums
}

async fn scrape(client: &reqwest::Client, s: &BenchSettings) -> anyhow::Result<String> {
    let response =
        client.get(format!("{}/metrics", s.url)).bearer_auth(&s.operator_token).send().await.context("GET /metrics")?;
    anyhow::ensure!(response.status().is_success(), "GET /metrics answered {} (operator token?)", response.status());
    Ok(response.text().await?)
}

async fn item_ids(client: &reqwest::Client, s: &BenchSettings) -> anyhow::Result<Vec<String>> {
    let response = client
        .get(format!("{}/v1/tenants/{}/catalog/items?limit=1000", s.url, s.tenant))
        .bearer_auth(&s.api_key)
        .send()
        .await
        .context("cannot reach the server (is `edgerec serve` running?)")?;
    anyhow::ensure!(response.status().is_success(), "listing the catalog answered {}", response.status());
    let page: serde_json::Value = response.json().await?;
    let ids: Vec<String> = page["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["id"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    anyhow::ensure!(!ids.is_empty(), "tenant {} has an empty catalog", s.tenant);
    Ok(ids)
}

/// One rate: requests scheduled every 1/rate s for `seconds`, all awaited.
async fn run_rate(
    client: &reqwest::Client,
    s: &BenchSettings,
    bodies: &Arc<Vec<serde_json::Value>>,
    rate: u32,
) -> RateResult {
    let url = Arc::new(format!("{}/v1/tenants/{}/recommend", s.url, s.tenant));
    let total = (rate as u64 * s.seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let client = client.clone();
        let url = url.clone();
        let key = s.api_key.clone();
        let body = bodies[i % bodies.len()].clone();
        tasks.push(tokio::spawn(async move {
            let status = match client.post(url.as_str()).bearer_auth(key).json(&body).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let _ = r.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            (status, scheduled.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let (mut ok, mut overloaded, mut failed) = (0, 0, 0);
    for task in tasks {
        match task.await {
            Ok((200, ms)) => {
                ok += 1;
                latencies.push(ms);
            }
            Ok((503, _)) => overloaded += 1,
            _ => failed += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    RateResult {
        rate,
        sent: total,
        ok,
        overloaded,
        failed,
        throughput: ok as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

async fn floor_ms(client: &reqwest::Client, s: &BenchSettings) -> f64 {
    let mut times = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        if client.get(format!("{}/healthz", s.url)).send().await.is_ok() {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    percentile(&times, 0.5)
}

/// Runs every rate and prints the table and the stage breakdown.
pub async fn run(s: BenchSettings) -> anyhow::Result<()> {
    anyhow::ensure!(!s.rates.is_empty() && s.rates.iter().all(|r| *r > 0), "--rates needs positive rates");
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let ids = item_ids(&client, &s).await?;
    let mut rng = rand::rng();
    // The events' timestamps end at the wall clock's now (unix seconds), as a storefront's would.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let bodies: Arc<Vec<serde_json::Value>> = Arc::new(
        (0..512)
            .map(|u| {
                let events: Vec<serde_json::Value> = (0..s.history)
                    .map(|j| {
                        let item = ids.choose(&mut rng).expect("non-empty");
                        serde_json::json!({"item": item, "ts": now - 60 * (s.history - j) as i64, "action": "view"})
                    })
                    .collect();
                let mut body = serde_json::json!({"events": events, "k": 10, "query_time": now});
                if s.with_user {
                    body["user_id"] = serde_json::json!(format!("bench-{u}-{}", rng.random::<u32>()));
                }
                body
            })
            .collect(),
    );
    let floor = floor_ms(&client, &s).await;
    println!(
        "edgerec bench http: {} tenant {} | {} events/request | user ids: {} | {} s per rate",
        s.url, s.tenant, s.history, s.with_user, s.seconds
    );
    println!("HTTP floor (GET /healthz p50, sequential): {floor:.3} ms");
    println!(
        "{:>6} {:>6} {:>6} {:>5} {:>5} {:>9} {:>8} {:>8} {:>10}",
        "rate/s", "sent", "ok", "503", "fail", "ok/s", "p50 ms", "p99 ms", "p50/floor"
    );
    let mut stage_totals: BTreeMap<String, f64> = BTreeMap::new();
    let mut request_total = 0.0;
    for &rate in &s.rates {
        let before = scrape(&client, &s).await?;
        let result = run_rate(&client, &s, &bodies, rate).await;
        let after = scrape(&client, &s).await?;
        let (b, a) = (
            histogram_sums(&before, "edgerec_stage_seconds", "stage"),
            histogram_sums(&after, "edgerec_stage_seconds", "stage"),
        );
        for (stage, value) in &a {
            *stage_totals.entry(stage.clone()).or_insert(0.0) += value - b.get(stage).copied().unwrap_or(0.0);
        }
        let route = "/v1/tenants/{tenant}/recommend";
        let sum =
            |text: &str| histogram_sums(text, "edgerec_request_seconds", "route").get(route).copied().unwrap_or(0.0);
        request_total += sum(&after) - sum(&before);
        println!(
            "{:>6} {:>6} {:>6} {:>5} {:>5} {:>9.1} {:>8.2} {:>8.2} {:>10.1}",
            result.rate,
            result.sent,
            result.ok,
            result.overloaded,
            result.failed,
            result.throughput,
            result.p50_ms,
            result.p99_ms,
            result.p50_ms / floor
        );
    }
    println!("\nserver time per stage (all rates, share of the recommend route's total {request_total:.3} s):");
    for (stage, seconds) in &stage_totals {
        if *seconds > 0.0 {
            println!("  {stage:<14} {seconds:>9.3} s  {:>5.1} %", 100.0 * seconds / request_total.max(1e-12));
        }
    }
    let accounted: f64 = stage_totals.iter().filter(|(k, _)| k.as_str() != "store_events").map(|(_, v)| v).sum();
    println!(
        "  {:<14} {:>9.3} s  {:>5.1} %",
        "other (http, queueing)",
        (request_total - accounted).max(0.0),
        100.0 * (request_total - accounted).max(0.0) / request_total.max(1e-12)
    );
    Ok(())
}
