//! A loop to run under `perf record`: encodes one ML-1M-shape user (200
//! events) again and again, fully or incrementally (+1 event).
//! `cargo run --release -p edgerec-kernels --example profile_encode -- full|inc|batch SECONDS`.

use std::time::{Duration, Instant};

use edgerec_kernels::bench::random_history;
use edgerec_kernels::{EncoderState, Model, ModelConfig, UserHistory, encode, encode_batch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "full".to_string());
    let seconds: f64 = args.next().map_or(Ok(5.0), |a| a.parse())?;
    let model = Model::random(ModelConfig::ml_1m(3953), 1)?;
    let l = model.config.max_seq_len;
    let (events, q) = random_history(model.config.num_items, l, 7);
    let histories: Vec<_> = (0..64)
        .map(|u| random_history(model.config.num_items, l, 100 + u))
        .collect();
    let batch: Vec<UserHistory<'_>> = histories
        .iter()
        .map(|(e, q)| UserHistory {
            events: e,
            query_time: *q,
        })
        .collect();
    let (state, _) = EncoderState::new(&model, &events[..l - 1], events[l - 2].ts)?;
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut runs = 0u64;
    while Instant::now() < end {
        match mode.as_str() {
            "full" => drop(std::hint::black_box(encode(&model, &events, q)?)),
            "inc" => {
                let mut s = state.clone();
                drop(std::hint::black_box(s.append(
                    &model,
                    &events[l - 1..],
                    q,
                )?));
            }
            _ => drop(std::hint::black_box(encode_batch(&model, &batch)?)),
        }
        runs += 1;
    }
    eprintln!("{runs} runs of {mode}");
    Ok(())
}
