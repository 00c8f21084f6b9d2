//! A loop to run under `perf record` / `perf stat`: encodes ML-1M-shape users
//! (200 events) again and again, fully, incrementally (+1 event) or as a
//! batch of 64.
//! `cargo run --release -p edgerec-bench --example profile_encode -- full|inc|batch SECONDS [ml-1m|ml-20m]`.

use std::time::{Duration, Instant};

use edgerec_bench::kernels::random_history;
use edgerec_kernels::{EncoderState, Model, ModelConfig, UserHistory, encode, encode_batch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "full".to_string());
    let seconds: f64 = args.next().map_or(Ok(5.0), |a| a.parse())?;
    let config = match args.next().as_deref() {
        Some("ml-20m") => ModelConfig::ml_20m(131_263),
        _ => ModelConfig::ml_1m(3953),
    };
    let model = Model::random(config, 1)?;
    let l = model.config.max_seq_len;
    let (events, q) = random_history(model.config.num_items, l, 7);
    let histories: Vec<_> = (0..64).map(|u| random_history(model.config.num_items, l, 100 + u)).collect();
    let batch: Vec<UserHistory<'_>> =
        histories.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    let (state, _) = EncoderState::new(&model, &events[..l - 1], events[l - 2].ts)?;
    // Appends go to fresh copies of the 199-event state, made 256 at a time
    // and dropped 256 at a time, so that cloning stays a separate,
    // identifiable part of the profile.
    let mut pool: Vec<EncoderState> = Vec::new();
    let mut spent: Vec<EncoderState> = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut runs = 0u64;
    let mut times = Vec::new();
    while Instant::now() < end {
        match mode.as_str() {
            "full" => {
                let t = Instant::now();
                drop(std::hint::black_box(encode(&model, &events, q)?));
                times.push(t.elapsed().as_secs_f64());
            }
            "inc" => {
                if pool.is_empty() {
                    spent.clear();
                    pool = vec![state.clone(); 256];
                }
                let mut s = pool.pop().ok_or("pool refilled above")?;
                let t = Instant::now();
                drop(std::hint::black_box(s.append(&model, &events[l - 1..], q)?));
                times.push(t.elapsed().as_secs_f64());
                spent.push(s);
            }
            _ => {
                let t = Instant::now();
                drop(std::hint::black_box(encode_batch(&model, &batch)?));
                times.push(t.elapsed().as_secs_f64());
            }
        }
        runs += 1;
    }
    times.sort_by(f64::total_cmp);
    let pick = |f: f64| times[((times.len() - 1) as f64 * f) as usize] * 1e6;
    eprintln!(
        "{runs} runs of {mode}: min {:.1} µs, p10 {:.1} µs, median {:.1} µs per call",
        pick(0.0),
        pick(0.1),
        pick(0.5)
    );
    Ok(())
}
