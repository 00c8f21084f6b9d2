//! The mutation suite of the CUDA kernels: every `__syncthreads()` and
//! `__syncwarp()` of every `.cu` file removed in turn, and every shared-memory
//! size shrunk by one element in turn (each dimension of each static
//! `__shared__` array, each carve of the attention's dynamic shared memory,
//! and each kernel's dynamic shared memory request), must be caught by the
//! emulator (a failed launch: race, bounds) or by the parity check against
//! the CPU engine, unless the mutant is listed in [`EQUIVALENT`] with the
//! reason it cannot change a result on any device.
//!
//! Mutants are found by reading the `.cu` files, so a new barrier or shared
//! array is covered without editing this file. Each mutant is a temporary
//! copy of one file compiled by the emulator (only that file: the others
//! come from the emulator's cache); the mutants run on a few worker threads.
//! The run prints one line per mutant (what killed it) and its wall time.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

use common::{Gaps, config, history};
use edgerec_kernels::backend::Backend;
use edgerec_kernels::cuda::{CudaBackend, EmuOptions};
use edgerec_kernels::{Event, Model, UserHistory, encode_batch, top_k};

/// Mutants that cannot change any result, each with the reason (by description).
const EQUIVALENT: &[(&str, &str)] = &[
    (
        "hstu_gemm.cu:61 As dim 2 [GEMM_BM + 4]",
        "bank-conflict padding: the columns are indexed by mm < GEMM_BM only, so GEMM_BM + 3 hold them",
    ),
    (
        "hstu_gemm.cu:62 Ws dim 2 [GEMM_BN + 4]",
        "bank-conflict padding: the columns are indexed by nn < GEMM_BN only, so GEMM_BN + 3 hold them",
    ),
];

/// One mutant: a text edit of one `.cu` file, or a smaller dynamic shared
/// memory request of one kernel.
struct Mutant {
    what: String,
    file: &'static str,
    edit: Option<(usize, usize, String)>,
    dyn_shrink: Option<(&'static str, u32)>,
}

const FILES: [&str; 5] = ["hstu_rows.cu", "hstu_gemm.cu", "hstu_attention.cu", "score_topk.cu", "roofline.cu"];

fn source(file: &str) -> String {
    std::fs::read_to_string(format!("{}/src/cuda/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// Whether byte `at` is inside a `//` comment.
fn in_comment(text: &str, at: usize) -> bool {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[start..at].contains("//")
}

/// The index just past the `)` matching the `(` at `open`.
fn close_paren(text: &str, open: usize) -> usize {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return open + i + 1;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses")
}

fn barrier_mutants(file: &'static str, text: &str, out: &mut Vec<Mutant>) {
    for call in ["__syncthreads(", "__syncwarp("] {
        for (at, _) in text.match_indices(call) {
            if in_comment(text, at) {
                continue;
            }
            let end = close_paren(text, at + call.len() - 1);
            out.push(Mutant {
                what: format!("{file}:{} {} removed", line_of(text, at), &text[at..end]),
                file,
                edit: Some((at, end, "((void)0)".to_string())),
                dyn_shrink: None,
            });
        }
    }
}

/// Every dimension of every static `__shared__` array declaration, shrunk by one.
fn static_size_mutants(file: &'static str, text: &str, out: &mut Vec<Mutant>) {
    for (at, _) in text.match_indices("__shared__") {
        if in_comment(text, at) || text[..at].trim_end().ends_with("extern") {
            continue;
        }
        let end = at + text[at..].find(';').unwrap();
        let decl = &text[at..end];
        // Declarators: `name[d1][d2]...`, several per declaration.
        let mut dims_of_name: Vec<(String, usize)> = Vec::new();
        let mut i = 0;
        while let Some(open) = decl[i..].find('[') {
            let open = i + open;
            let close = open + decl[open..].find(']').unwrap();
            let before = decl[..open].trim_end();
            let name_start = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |p| p + 1);
            let name = &before[name_start..];
            let (name, dim) = if name.is_empty() {
                let last = dims_of_name.last().cloned().unwrap();
                (last.0, last.1 + 1)
            } else {
                (name.to_string(), 1)
            };
            dims_of_name.push((name.clone(), dim));
            let size = &decl[open + 1..close];
            out.push(Mutant {
                what: format!("{file}:{} {name} dim {dim} [{size}]", line_of(text, at)),
                file,
                edit: Some((at + open + 1, at + close, format!("({size}) - 1"))),
                dyn_shrink: None,
            });
            i = close + 1;
        }
    }
}

/// The attention's dynamic shared memory is carved into typed arrays; each
/// carve one element short, and each kernel's request one element short.
fn dynamic_size_mutants(out: &mut Vec<Mutant>) {
    let file = "hstu_attention.cu";
    let text = source(file);
    for carve in [
        "(s_thr + HSTU_NB)",
        "s_tsk + ATT_KT;",
        "(s_tsq + ATT_QB)",
        "s_q + ATT_QB * ATT_SQK;",
        "s_k + ATT_KT * ATT_SQK;",
    ] {
        assert_eq!(text.matches(carve).count(), 1, "{file}: the carve {carve:?} must occur once");
        let at = text.find(carve).unwrap();
        let shrunk = match carve.strip_suffix(')') {
            Some(inner) => format!("{inner} - 1)"),
            None => format!("{} - 1;", carve.trim_end_matches(';')),
        };
        out.push(Mutant {
            what: format!("{file}:{} carve {carve} one element short", line_of(&text, at)),
            file,
            edit: Some((at, at + carve.len(), shrunk)),
            dyn_shrink: None,
        });
    }
    // (kernel, element size of its last dynamic shared array)
    for (kernel, file, elem) in [
        ("quant_chunk_kth", "score_topk.cu", 4),
        ("quant_select", "score_topk.cu", 4),
        ("hstu_attention", "hstu_attention.cu", 4),
    ] {
        out.push(Mutant {
            what: format!("host: {kernel} dynamic shared memory one element ({elem} bytes) short"),
            file,
            edit: None,
            dyn_shrink: Some((kernel, elem)),
        });
    }
}

fn all_mutants() -> Vec<Mutant> {
    let mut out = Vec::new();
    for file in FILES {
        let text = source(file);
        barrier_mutants(file, &text, &mut out);
        static_size_mutants(file, &text, &mut out);
    }
    dynamic_size_mutants(&mut out);
    out
}

/// The encode workload: 3 GEMM k-tiles (D = 40), 2 key tiles (40 events),
/// partial row and column tiles, an odd head dim (no shared padding), two
/// layers, 8 time buckets (gaps of seconds to years reach the last
/// threshold); compared with the CPU engine within 2e-5.
fn encode_kill(options: &EmuOptions) -> Option<String> {
    let mut cfg = config(60, 40, 2, 2, 5, 12, 40);
    cfg.num_time_buckets = 8;
    let model = Model::random(cfg.clone(), 5).unwrap();
    let b = match CudaBackend::emulated_with(Arc::new(model.clone()), options) {
        Ok(b) => b,
        Err(e) => return Some(format!("build: {e}")),
    };
    b.set_poison_outputs(true);
    let users: Vec<(Vec<Event>, i64)> = [40usize, 33, 1, 17]
        .iter()
        .enumerate()
        .map(|(i, &n)| history(n, cfg.num_items, [Gaps::Anything, Gaps::Seconds][i % 2], 900 + i as u64))
        .collect();
    let batch: Vec<UserHistory<'_>> = users.iter().map(|(e, q)| UserHistory { events: e, query_time: *q }).collect();
    let got = match b.encode_batch(&batch) {
        Ok(g) => g,
        Err(e) => return Some(format!("emulator: {e}")),
    };
    let cpu = encode_batch(&model, &batch).unwrap();
    for (u, (g, c)) in got.iter().zip(&cpu).enumerate() {
        let worst = g
            .iter()
            .zip(c)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) });
        if worst > 2e-5 {
            return Some(format!("parity: user {u} differs from the CPU by {worst}"));
        }
    }
    None
}

/// The top-k workload: 5000 items (20 scoring blocks of 256 rows, the last
/// partial), D = 40 (10 code words per row), 3 users, exclusions, k = 10 and
/// 64; scores must equal the CPU's bit for bit (the host re-ranks exactly).
fn top_k_kill(options: &EmuOptions) -> Option<String> {
    let model = Model::random(config(5000, 40, 1, 1, 4, 4, 8), 77).unwrap();
    let b = match CudaBackend::emulated_with(Arc::new(model.clone()), options) {
        Ok(b) => b,
        Err(e) => return Some(format!("build: {e}")),
    };
    b.set_poison_outputs(true);
    let embeddings: Vec<Vec<f32>> =
        (0..3).map(|u| (0..40).map(|j| ((u * 5 + j * 3) % 11) as f32 / 6.0 - 1.0).collect()).collect();
    let excl: Vec<Vec<u32>> = (0..3u32).map(|u| (0..u * 40).map(|j| 1 + (j * 97 + u) % 5000).collect()).collect();
    let refs: Vec<&[u32]> = excl.iter().map(Vec::as_slice).collect();
    for k in [10usize, 64] {
        let got = match b.top_k_batch(&embeddings, k, &refs) {
            Ok(g) => g,
            Err(e) => return Some(format!("emulator: {e}")),
        };
        for u in 0..3 {
            let want = top_k(&model, &embeddings[u], k, &excl[u]);
            let same = got[u].len() == want.len()
                && got[u].iter().zip(&want).all(|(g, w)| g.item == w.item && g.score.to_bits() == w.score.to_bits());
            if !same {
                return Some(format!("parity: k {k} user {u} differs from the CPU's top-k"));
            }
        }
    }
    None
}

fn kill(m: &Mutant) -> Option<String> {
    let mut options = EmuOptions::default();
    if let Some((start, end, with)) = &m.edit {
        let mut text = source(m.file);
        text.replace_range(*start..*end, with);
        options.source_overrides.push((m.file.to_string(), text));
    }
    if let Some((kernel, bytes)) = m.dyn_shrink {
        options.dyn_smem_shrink.push((kernel.to_string(), bytes));
    }
    match m.file {
        "score_topk.cu" => top_k_kill(&options),
        "roofline.cu" => None,
        _ => encode_kill(&options),
    }
}

#[test]
fn every_barrier_removal_and_shared_memory_shrink_is_caught() {
    let start = Instant::now();
    let mutants = all_mutants();
    let barriers = mutants.iter().filter(|m| m.what.contains("removed")).count();
    assert!(barriers >= 8, "the .cu files hold at least 8 barriers/warp syncs, found {barriers}");
    // Unmutated, both workloads pass: a kill means the mutation changed something.
    assert_eq!(encode_kill(&EmuOptions::default()), None);
    assert_eq!(top_k_kill(&EmuOptions::default()), None);

    let results: Mutex<Vec<(usize, Option<String>)>> = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    let Some(m) = mutants.get(i) else { break };
                    // A thread per mutant: the emulator's per-thread runtime of
                    // the mutant's library (stacks, shadow) goes with it.
                    let verdict = std::thread::scope(|one| one.spawn(|| kill(m)).join().unwrap());
                    results.lock().unwrap().push((i, verdict));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let mut surprises = Vec::new();
    for (i, verdict) in &results {
        let m = &mutants[*i];
        let equivalent = EQUIVALENT.iter().find(|(what, _)| *what == m.what);
        match (verdict, equivalent) {
            (Some(how), _) if how.starts_with("build:") => {
                // A mutant that does not compile proves nothing about the checks.
                eprintln!("BROKEN   {} — {how}", m.what);
                surprises.push(format!("does not compile: {} ({how})", m.what));
            }
            (Some(how), None) => {
                let how: String = how.chars().take(300).collect();
                eprintln!("KILLED   {} — {how}", m.what);
            }
            (None, Some((_, why))) => eprintln!("EQUIVAL. {} — {why}", m.what),
            (None, None) => {
                eprintln!("SURVIVED {}", m.what);
                surprises.push(format!("survived: {}", m.what));
            }
            (Some(how), Some(_)) => {
                eprintln!("KILLED   {} (listed as equivalent) — {how}", m.what);
                surprises.push(format!("listed as equivalent but killed: {}", m.what));
            }
        }
    }
    for (what, _) in EQUIVALENT {
        assert!(mutants.iter().any(|m| m.what == *what), "EQUIVALENT names a mutant that no longer exists: {what}");
    }
    eprintln!(
        "mutation suite: {} mutants ({barriers} barrier removals), {} workers, {:.1} s",
        mutants.len(),
        workers,
        start.elapsed().as_secs_f64()
    );
    assert!(surprises.is_empty(), "{}", surprises.join("\n"));
}
