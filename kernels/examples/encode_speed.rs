//! The CPU encoder's speed on three figures, for same-run before/after
//! comparisons of a kernels change: one user of L events, a 64-user batch
//! and a one-event append to a 3/4-full window (state clone included), each
//! the minimum wall time over a time budget, at the ML-1M and ML-20M shapes
//! (random weights). Then new states (64 users of L events, 256 of L/10):
//! `EncoderState::new_batch` against one `EncoderState::new` after another
//! (the server's loop before `new_state_batch`), both in this run.
//!
//! `cargo run --release -p edgerec-kernels --example encode_speed -- [SECONDS_PER_FIGURE]`
//!
//! It uses only the crate's public API, so the same file builds against an
//! older checkout (without the new-state lines before
//! `EncoderState::new_batch`): build both, then alternate the two binaries
//! (see docs/perf/kernels-cpu.md). Kernels-only: no server, no wasmtime.
use std::time::{Duration, Instant};

use edgerec_kernels::{EncoderState, Event, Model, ModelConfig, UserHistory, encode, encode_batch};

fn history(items: usize, n: usize, seed: u64) -> Vec<Event> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut ts = 1_000_000i64;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ts += ((x >> 33) % 5000) as i64;
            Event { item: 1 + ((x >> 11) % items as u64) as u32, ts }
        })
        .collect()
}

fn min_time(budget: Duration, mut f: impl FnMut()) -> (f64, usize) {
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut reps = 0;
    while reps < 3 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        reps += 1;
    }
    (best, reps)
}

fn main() {
    let secs: f64 = std::env::args().nth(1).map_or(1.0, |a| a.parse().expect("seconds"));
    let budget = Duration::from_secs_f64(secs);
    let mut checksum = 0.0f64;
    for (name, config) in [("ML-1M", ModelConfig::ml_1m(3953)), ("ML-20M", ModelConfig::ml_20m(131_263))] {
        let model = Model::random(config, 1).expect("model");
        let v = model.config.num_items;
        let l = model.config.max_seq_len;
        let one = history(v, l, 7);
        let q = one.last().map_or(0, |e| e.ts) + 10;
        let (t1, r1) = min_time(budget, || checksum += f64::from(encode(&model, &one, q).expect("encode")[0]));
        let users: Vec<Vec<Event>> = (0..64).map(|u| history(v, l, 100 + u)).collect();
        let batch: Vec<UserHistory<'_>> =
            users.iter().map(|e| UserHistory { events: e, query_time: e.last().map_or(0, |x| x.ts) + 10 }).collect();
        let (t64, r64) = min_time(budget, || checksum += f64::from(encode_batch(&model, &batch).expect("batch")[0][0]));
        // Append one event to a 3/4-full window: rows n-1..n+1 recomputed.
        let base = &one[..l * 3 / 4];
        let extra = [Event { item: 5, ts: base.last().map_or(0, |e| e.ts) + 3 }];
        let (state, _) = EncoderState::new(&model, base, extra[0].ts).expect("state");
        let (ta, ra) = min_time(budget, || {
            let mut s = state.clone();
            checksum += f64::from(s.append(&model, &extra, extra[0].ts + 1).expect("append")[0]);
        });
        println!(
            "{name}: 1 user x {l}: {:.3} ms ({r1} reps) | 64 users x {l}: {:.2} ms ({r64} reps) | append 1 at n={}: {:.1} us ({ra} reps, incl. state clone)",
            t1 * 1e3,
            t64 * 1e3,
            base.len(),
            ta * 1e6
        );
        // New states (a server's cache misses and slid windows): one batched
        // forward against the server's loop before it, one state after
        // another; the same users, in this run.
        for (n, count) in [(l, 64usize), (l / 10, 256)] {
            let users: Vec<Vec<Event>> = (0..count).map(|u| history(v, n, 9000 + u as u64)).collect();
            let batch: Vec<UserHistory<'_>> = users
                .iter()
                .map(|e| UserHistory { events: e, query_time: e.last().map_or(0, |x| x.ts) + 10 })
                .collect();
            let (tb, rb) = min_time(budget, || {
                let built = EncoderState::new_batch(&model, &batch);
                checksum += built.iter().map(|r| r.as_ref().map_or(0.0, |(_, e)| f64::from(e[0]))).sum::<f64>();
            });
            // Kept until the batch ends, as a server keeps (caches) them.
            let (ts, rs) = min_time(budget, || {
                let built: Vec<_> =
                    batch.iter().map(|u| EncoderState::new(&model, u.events, u.query_time).expect("state")).collect();
                checksum += built.iter().map(|(_, e)| f64::from(e[0])).sum::<f64>();
            });
            // For reference: the same users stacked with no state kept.
            let (te, _) =
                min_time(budget, || checksum += f64::from(encode_batch(&model, &batch).expect("batch")[0][0]));
            println!(
                "{name}: new states, {count} users x {n}: batched {:.2} ms ({rb} reps) | one after another {:.2} ms ({rs} reps) | {:.2}x | (encode_batch, no states: {:.2} ms)",
                tb * 1e3,
                ts * 1e3,
                ts / tb,
                te * 1e3
            );
        }
    }
    eprintln!("checksum {checksum}");
}
