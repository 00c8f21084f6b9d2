//! Measures a catalog snapshot at a large storefront's size: build time,
//! bytes per item and per column kind, an upsert of 1,000 items against a
//! full rebuild, a filter mask's full and incremental update, and a gather of
//! 100 candidates against the per-request path it replaces (typing JSON
//! attributes and dictionary-encoding their strings, with and without the
//! JSON parse). Ratios are against baselines measured in the same run.
//!
//! `cargo run --release -p edgerec-catalog --example measure [-- ITEMS [GATHERS]]`
//! (default 1,000,000 items, five attributes each: one of every kind; 2,000
//! gathers of 100 candidates).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use edgerec_catalog::{CatalogSnapshot, Filter};
use serde_json::{Value, json};

/// Any error, boxed (the example needs no anyhow).
type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A seeded splitmix64: reproducible data without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TAGS: [&str; 20] = [
    "new",
    "sale",
    "eco",
    "gift",
    "clearance",
    "bestseller",
    "limited",
    "bundle",
    "kids",
    "outdoor",
    "home",
    "office",
    "sport",
    "travel",
    "premium",
    "basic",
    "summer",
    "winter",
    "vegan",
    "handmade",
];

/// One item: price (f64), stock (i64, 0 for 90 % of items), on_sale (bool),
/// brand (string, 1,000 distinct), tags (1 to 3 of 20).
fn item(rng: &mut Rng) -> Value {
    let tags: Vec<&str> = (0..1 + rng.below(3)).map(|_| TAGS[rng.below(20) as usize]).collect();
    json!({
        "price": (rng.below(100_000) as f64) / 100.0,
        "stock": if rng.below(10) == 0 { 1 + rng.below(50) } else { 0 },
        "on_sale": rng.below(4) == 0,
        "brand": format!("brand-{}", rng.below(1000)),
        "tags": tags,
    })
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// The median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs).map(|_| timed(&mut f).1).collect();
    times.sort();
    times[runs / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Today's per-request path (host/server/src/pipeline.rs `column` and the
/// runtime's `EncodedColumn::encode`), reduced to what it computes: the
/// first present value's type decides, strings get a dictionary per request.
fn per_request(attributes: &[Option<&Value>], names: &[&str]) -> usize {
    let mut produced = 0;
    for name in names {
        let values: Vec<Option<&Value>> = attributes.iter().map(|a| a.and_then(|a| a.get(*name))).collect();
        match values.iter().flatten().next() {
            Some(Value::Number(_)) => produced += values.iter().filter_map(|v| v.and_then(Value::as_f64)).count(),
            Some(Value::Bool(_)) => produced += values.iter().filter_map(|v| v.and_then(Value::as_bool)).count(),
            Some(Value::Array(_)) => {
                let mut dictionary: HashMap<String, u32> = HashMap::new();
                for list in values.iter().filter_map(|v| v.and_then(Value::as_array)) {
                    for s in list.iter().filter_map(Value::as_str) {
                        let next = dictionary.len() as u32;
                        produced += *dictionary.entry(s.to_owned()).or_insert(next) as usize;
                    }
                }
            }
            _ => {
                let mut dictionary: HashMap<String, u32> = HashMap::new();
                for s in values.iter().filter_map(|v| v.and_then(Value::as_str)) {
                    let next = dictionary.len() as u32;
                    produced += *dictionary.entry(s.to_owned()).or_insert(next) as usize;
                }
            }
        }
    }
    produced
}

fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1_000_000);
    let mut rng = Rng(23);
    let items: Vec<(u32, Value)> = (0..n as u32).map(|r| (r, item(&mut rng))).collect();
    let json_bytes: usize = items.iter().map(|(_, v)| v.to_string().len()).sum();
    println!(
        "catalog snapshot, {n} items x 5 attributes (price f64, stock i64, on_sale bool, brand string, tags string list)"
    );
    println!(
        "JSON of the items: {:.1} MiB ({:.0} bytes/item)\n",
        json_bytes as f64 / 1048576.0,
        json_bytes as f64 / n as f64
    );

    let (v0, build) = timed(|| CatalogSnapshot::build(n, items.iter().map(|(r, v)| (*r, v))));
    let v0 = v0?;
    println!("build: {} ({:.0} k items/s)", ms(build), n as f64 / build.as_secs_f64() / 1e3);

    let memory = v0.memory();
    println!("\n| column | kind | value bytes | dictionary bytes | bytes/item |");
    println!("|---|---|---|---|---|");
    for c in &memory.columns {
        let per = (c.value_bytes + c.dictionary_bytes) as f64 / n as f64;
        println!("| {} | {} | {} | {} | {per:.2} |", c.name, c.kind, c.value_bytes, c.dictionary_bytes);
    }
    println!(
        "| total | | | | {:.2} ({:.1} MiB; JSON / snapshot = {:.1}) |\n",
        memory.total_bytes as f64 / n as f64,
        memory.total_bytes as f64 / 1048576.0,
        json_bytes as f64 / memory.total_bytes as f64
    );

    // 1,000 random items upserted with new attributes, against a full rebuild.
    let upserts: Vec<(u32, Value)> = (0..1000).map(|_| (rng.below(n as u64) as u32, item(&mut rng))).collect();
    let upsert = median(5, || drop(black_box(v0.with_upserts(&upserts))));
    let v1 = v0.with_upserts(&upserts)?;
    println!(
        "upsert of 1,000 items: {} (full build / upsert = {:.0})",
        ms(upsert),
        build.as_secs_f64() / upsert.as_secs_f64()
    );
    let one = [(upserts[0].0, item(&mut rng))];
    let single = median(21, || drop(black_box(v0.with_upserts(&one))));
    println!(
        "upsert of 1 item: {} (1,000 items / 1 item = {:.0})",
        us(single),
        upsert.as_secs_f64() / single.as_secs_f64()
    );
    println!(
        "  the new version holds {:.1} MiB, of which it copied {:.1} MiB (the rest shared with the old one)",
        v1.memory().total_bytes as f64 / 1048576.0,
        v1.unshared_bytes(&v0) as f64 / 1048576.0
    );

    // The in-stock filter: the full mask, and the update after the upsert.
    let filter: Filter = serde_json::from_value(json!([{"attribute": "stock", "op": "gt", "value": 0}]))?;
    let compiled = filter.compile(&v0)?;
    let mask0 = compiled.mask(&v0);
    let full = median(5, || drop(black_box(compiled.mask(&v1))));
    let touched: Vec<u32> = upserts.iter().map(|(r, _)| *r).collect();
    let incremental = median(5, || drop(black_box(compiled.mask_after_upserts(&mask0, &v1, &touched))));
    println!(
        "filter stock gt 0 ({} rows pass): full mask {}, after 1,000 upserts {} (full / incremental = {:.1})",
        mask0.count_ones(..),
        ms(full),
        ms(incremental),
        full.as_secs_f64() / incremental.as_secs_f64()
    );
    let strings: Filter =
        serde_json::from_value(json!([{"attribute": "brand", "op": "in", "value": ["brand-1", "brand-2"]},
        {"attribute": "tags", "op": "contains", "value": "sale"}]))?;
    let strings = strings.compile(&v0)?;
    println!(
        "filter brand in [2] and tags contains: full mask {}",
        ms(median(5, || drop(black_box(strings.mask(&v1)))))
    );

    // Gathering 100 candidates' five columns, against the per-request path.
    let names = ["price", "stock", "on_sale", "brand", "tags"];
    let rounds: usize = std::env::args().nth(2).map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let candidates: Vec<Vec<u32>> =
        (0..rounds).map(|_| (0..100).map(|_| rng.below(n as u64) as u32).collect()).collect();
    let (_, gather) = timed(|| {
        for rows in &candidates {
            black_box(v1.gather(&names, rows).map(|c| c.len()).unwrap_or(0));
        }
    });
    let (_, typed) = timed(|| {
        for rows in &candidates {
            let attributes: Vec<Option<&Value>> = rows.iter().map(|&r| Some(&items[r as usize].1)).collect();
            black_box(per_request(&attributes, &names));
        }
    });
    let texts: Vec<Vec<String>> =
        candidates.iter().map(|rows| rows.iter().map(|&r| items[r as usize].1.to_string()).collect()).collect();
    let (_, parsed) = timed(|| {
        for texts in &texts {
            let values: Vec<Value> = texts.iter().filter_map(|t| serde_json::from_str(t).ok()).collect();
            let attributes: Vec<Option<&Value>> = values.iter().map(Some).collect();
            black_box(per_request(&attributes, &names));
        }
    });
    let per = |d: Duration| d / rounds as u32;
    println!(
        "gather 100 candidates x 5 columns: {} per request; per-request typing + encoding from parsed JSON {} ({:.1}x), with the JSON parse {} ({:.1}x)",
        us(per(gather)),
        us(per(typed)),
        typed.as_secs_f64() / gather.as_secs_f64(),
        us(per(parsed)),
        parsed.as_secs_f64() / gather.as_secs_f64()
    );
    // Keep the kinds honest: the gather produced every kind.
    let kinds: Vec<&str> = v1.gather(&names, &candidates[0])?.iter().map(|c| c.values.kind().name()).collect();
    println!("gathered kinds: {}", kinds.join(", "));
    Ok(())
}
