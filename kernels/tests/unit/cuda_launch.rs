//! Kernel-level checks on the emulator: the signature table and block-size
//! traps, the guard page after every buffer, the varied block order.
//!
//! These drive the backend's private launch layer, so this file is compiled
//! into the library's unit tests as `cuda::tests` (a `#[path]` module of
//! `src/cuda/mod.rs`) rather than as an integration test:
//! `cargo test -p edgerec-kernels --lib cuda::tests`.

use std::sync::Arc;

use super::CudaBackend;
use super::launch::{Arg, Shape, alloc, check_launch, download, launch, upload_new};
use super::shapes::{GEMM_THREADS, ROWS_THREADS};
use super::signatures::{KERNELS, Kernel};
use crate::config::ModelConfig;
use crate::model::Model;

fn emu(d: usize, items: usize) -> CudaBackend {
    let mut c = ModelConfig::research(items, d, 1, 1, d, 8);
    c.d_v = d;
    let model = Model::random(c, 1).expect("valid model");
    CudaBackend::emulated(Arc::new(model)).expect("the emulator builds with the system C++ compiler")
}

#[test]
fn every_kernel_has_a_fitting_launch_size_and_signature() {
    for k in KERNELS {
        assert!(!k.params().is_empty(), "{}", k.name());
        assert!(k.source().kernels().any(|o| o == k));
        if let Some(b) = k.fixed_block() {
            assert_eq!(b % 32, 0, "{}", k.name());
        }
    }
}

#[test]
fn launches_that_do_not_match_the_signature_table_are_refused() {
    let b = emu(8, 10);
    let l = b.launcher();
    let f = alloc::<f32>(l, 16).unwrap();
    let i = alloc::<i32>(l, 16).unwrap();
    let s = Shape::cover(16, ROWS_THREADS);
    // Right: fill_u32 takes any 4-byte buffer.
    check_launch(Kernel::FillU32, &s, &[f.arg(), Arg::I64(16), Arg::U32(0)], 1 << 16).unwrap();
    let wrong_count = check_launch(Kernel::FillU32, &s, &[f.arg(), Arg::I64(16)], 1 << 16).unwrap_err();
    assert!(wrong_count.to_string().contains("takes 3 arguments"), "{wrong_count}");
    let wrong_scalar = check_launch(Kernel::FillU32, &s, &[f.arg(), Arg::I32(16), Arg::U32(0)], 1 << 16).unwrap_err();
    assert!(wrong_scalar.to_string().contains("argument 1 (n) is long long"), "{wrong_scalar}");
    let args = [i.arg(), Arg::I32(4), i.arg(), Arg::I32(1), Arg::I32(4), Arg::I32(4), f.arg(), Arg::I32(4)];
    let wrong_elem =
        check_launch(Kernel::LnGemmSilu, &Shape::new((1, 1, 1), GEMM_THREADS), &args, 1 << 16).unwrap_err();
    assert!(wrong_elem.to_string().contains("argument 0 (A) is const float*"), "{wrong_elem}");
    let args = [f.arg(), Arg::I32(4), f.arg(), Arg::I32(1), Arg::I32(4), Arg::I32(4), f.arg(), Arg::I32(4)];
    let wrong_block = check_launch(Kernel::LnGemmSilu, &Shape::new((1, 1, 1), 128), &args, 1 << 16).unwrap_err();
    assert!(wrong_block.to_string().contains("written for 256 threads"), "{wrong_block}");
    let mut big = Shape::new((1, 1, 1), GEMM_THREADS);
    big.dyn_smem = 1 << 20;
    assert!(check_launch(Kernel::LnGemmSilu, &big, &args, 1 << 16).is_err(), "too much shared memory");
}

#[test]
fn kernels_trap_on_a_block_size_they_are_not_written_for() {
    let b = emu(8, 10);
    let l = b.launcher();
    let f = upload_new(l, &[1.0f32; 64]).unwrap();
    let out = alloc::<f32>(l, 64).unwrap();
    let args = [f.arg(), Arg::I32(8), f.arg(), Arg::I32(8), Arg::I32(8), Arg::I32(8), out.arg(), Arg::I32(8)];
    // Past the signature check, straight to the emulated device.
    let err = l.launch_raw(Kernel::LnGemmSilu, &Shape::new((1, 1, 1), 128), &args).unwrap_err();
    assert!(err.to_string().contains("__trap()"), "{err}");
    l.launch_raw(Kernel::LnGemmSilu, &Shape::new((1, 1, 1), GEMM_THREADS), &args).unwrap();
}

/// Run in a child process by `an_overrun_of_a_buffer_faults`: writes one
/// element past the end of a buffer that fills its last page exactly.
#[test]
#[ignore = "child of an_overrun_of_a_buffer_faults: it dies of SIGSEGV by design"]
fn overrun_child() {
    let b = emu(8, 10);
    let l = b.launcher();
    let buf = alloc::<u32>(l, 1024).unwrap();
    // Signature and shape are fine; only the length lies.
    let _ = launch(l, Kernel::FillU32, &Shape::cover(1025, ROWS_THREADS), &[buf.arg(), Arg::I64(1025), Arg::U32(7)]);
    eprintln!("overrun_child: the write past the end did not fault");
}

#[test]
fn an_overrun_of_a_buffer_faults() {
    use std::os::unix::process::ExitStatusExt;
    // In range: no fault, every element written.
    let b = emu(8, 10);
    let l = b.launcher();
    let buf = alloc::<u32>(l, 1024).unwrap();
    launch(l, Kernel::FillU32, &Shape::cover(1024, ROWS_THREADS), &[buf.arg(), Arg::I64(1024), Arg::U32(7)]).unwrap();
    assert!(download(l, &buf, 0, 1024).unwrap().iter().all(|&v| v == 7));
    // One past the end: the guard page faults.
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--ignored", "--exact", "cuda::tests::overrun_child", "--test-threads=1", "--nocapture"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "status {:?}, stderr: {stderr}", out.status);
}

#[test]
fn an_overrun_into_a_buffers_alignment_padding_fails_the_launch() {
    // 1000 elements: the 256-byte-aligned buffer ends 96 bytes before its
    // guard page; the emulator checks those bytes on every access.
    let b = emu(8, 10);
    let l = b.launcher();
    let buf = alloc::<u32>(l, 1000).unwrap();
    launch(l, Kernel::FillU32, &Shape::cover(1000, ROWS_THREADS), &[buf.arg(), Arg::I64(1000), Arg::U32(7)]).unwrap();
    for n in [1001i64, 1024] {
        let err =
            launch(l, Kernel::FillU32, &Shape::cover(n as usize, ROWS_THREADS), &[buf.arg(), Arg::I64(n), Arg::U32(7)])
                .unwrap_err()
                .to_string();
        assert!(err.contains("past the end of buffer argument 0") && err.contains("fill_u32"), "{err}");
        assert!(n != 1001 || err.contains("4 bytes past"), "{err}");
        assert!(err.contains("line hstu_rows.cu:"), "the message names the source line: {err}");
    }
}

#[test]
fn states_and_backends_can_live_in_a_shared_cache() {
    fn shared<T: Send + Sync>() {}
    shared::<crate::BackendState>();
    shared::<CudaBackend>();
    shared::<Box<dyn crate::Backend>>();
}

#[test]
fn profiling_times_every_launch_per_kernel() {
    use crate::UserHistory;
    use crate::history::Event;
    let b = emu(8, 10);
    let events: Vec<Event> = (0..5).map(|i| Event { item: 1 + i % 10, ts: 100 + i as i64 }).collect();
    let users = [UserHistory { events: &events, query_time: 200 }];
    b.set_profiling(true);
    crate::Backend::encode_batch(&b, &users).unwrap();
    let times = b.take_kernel_times();
    let layers = b.model.config.num_layers as u64;
    for (kernel, launches) in
        [("embed_rows", 1), ("ln_gemm_silu", layers), ("hstu_attention", layers), ("l2norm_rows", 1)]
    {
        let t = times.iter().find(|t| t.kernel == kernel).unwrap_or_else(|| panic!("{kernel} not timed: {times:?}"));
        assert_eq!(t.launches, launches, "{kernel}");
        assert!(t.seconds > 0.0);
    }
    assert!(b.take_kernel_times().is_empty(), "taking the times clears them");
    b.set_profiling(false);
    crate::Backend::encode_batch(&b, &users).unwrap();
    assert!(b.take_kernel_times().is_empty(), "nothing is timed with profiling off");
}

#[test]
fn blocks_run_in_a_varied_order() {
    // A copy of fill_u32 that traps in block 5 of 16: the error says where in
    // the run order block 5 came; over a few launches that position varies.
    let text = super::signatures::Source::Rows.text().replace(
        "extern \"C\" __global__ void fill_u32(unsigned int* __restrict__ dst, long long n, unsigned int value) {",
        "extern \"C\" __global__ void fill_u32(unsigned int* __restrict__ dst, long long n, unsigned int value) {\n    if (blockIdx.x == 5) __trap();",
    );
    assert!(text.contains("blockIdx.x == 5"), "the seeded edit applies");
    let mut c = ModelConfig::research(10, 8, 1, 1, 8, 8);
    c.d_v = 8;
    let model = Model::random(c, 1).unwrap();
    let options = super::EmuOptions { source_overrides: vec![("hstu_rows.cu".into(), text)], ..Default::default() };
    let b = CudaBackend::emulated_with(Arc::new(model), &options).unwrap();
    let l = b.launcher();
    let buf = alloc::<u32>(l, 16 * 32).unwrap();
    let mut positions = Vec::new();
    for _ in 0..6 {
        let err = launch(l, Kernel::FillU32, &Shape::new((16, 1, 1), 32), &[buf.arg(), Arg::I64(16 * 32), Arg::U32(1)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("block (5, 0, 0)") && err.contains("__trap()"), "{err}");
        let pos = err.split("the ").nth(1).and_then(|r| r.split("-th run").next()).unwrap().to_string();
        positions.push(pos);
    }
    positions.sort();
    positions.dedup();
    assert!(positions.len() > 1, "block 5 ran at the same position in every launch: {positions:?}");
}

/// The top-k selection kernels against a plain computation on the CPU:
/// `quant_chunk_kth` gives every 256-row chunk's exact k-th best
/// approximation per user (ties, an absent row, exclusions, a partial last
/// chunk, a chunk with fewer eligible rows than k), and `quant_threshold`
/// the largest float at or below the best of them minus 2W. (The parity
/// tests cannot see a k-th that is too low: it only costs pruning.)
#[test]
fn the_top_k_selection_kernels_find_each_chunks_kth_and_the_threshold() {
    use super::shapes::TOPK_THREADS;
    use crate::retrieval::QuantizedTable;
    let (d, n) = (10usize, 700usize);
    let mut x = 0x2545_f491_u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut rows: Vec<f32> = (0..n * d).map(|_| next()).collect();
    // Ties: rows 20..30 copy row 10.
    for r in 20..30 {
        let src = rows[10 * d..11 * d].to_vec();
        rows[r * d..(r + 1) * d].copy_from_slice(&src);
    }
    let mut table = QuantizedTable::new(d, &rows).expect("valid table");
    table.remove_row(5);
    let dev = table.device_table();
    let queries: Vec<Vec<f32>> = (0..3).map(|_| (0..d).map(|_| next()).collect()).collect();
    let codes: Vec<_> = queries.iter().map(|q| table.quantize_query(q).expect("bounded query")).collect();
    // User 1 excludes most of chunk 2 (rows 512..700 but 3): fewer eligible rows than k there.
    let excl: Vec<Vec<u32>> = vec![vec![], (512..697).collect(), vec![10, 11, 600]];
    let (groups, slots, k) = (d.div_ceil(4), dev.scales.len(), 8usize);
    let chunks = slots.div_ceil(TOPK_THREADS as usize);

    let b = emu(d, 10);
    let l = b.launcher();
    let words = upload_new(l, &dev.words).unwrap();
    let scales = upload_new(l, &dev.scales).unwrap();
    let q_codes = upload_new(l, &codes.iter().flat_map(|c| c.packed.clone()).collect::<Vec<i32>>()).unwrap();
    let q_corr = upload_new(l, &codes.iter().map(|c| c.correction).collect::<Vec<i32>>()).unwrap();
    let q_scale = upload_new(l, &codes.iter().map(|c| c.scale).collect::<Vec<f32>>()).unwrap();
    let flat: Vec<u32> = excl.iter().flatten().copied().collect();
    let mut off = vec![0i32];
    excl.iter().for_each(|e| off.push(off[off.len() - 1] + e.len() as i32));
    let (ex, ex_off) = (upload_new(l, &flat).unwrap(), upload_new(l, &off).unwrap());
    let kth = alloc::<f32>(l, 3 * chunks).unwrap();
    let mut shape = Shape::new((chunks as u32, 1, 1), TOPK_THREADS);
    shape.dyn_smem = super::launch::dyn_smem_bytes(Kernel::QuantChunkKth, &b.model.config) as u32;
    let args = [
        words.arg(),
        scales.arg(),
        Arg::I32(slots as i32),
        Arg::I32(groups as i32),
        q_codes.arg(),
        q_corr.arg(),
        q_scale.arg(),
        Arg::I32(3),
        ex.arg(),
        ex_off.arg(),
        Arg::I32(k as i32),
        kth.arg(),
    ];
    launch(l, Kernel::QuantChunkKth, &shape, &args).unwrap();
    let got = download(l, &kth, 0, 3 * chunks).unwrap();

    // The scan's arithmetic, plainly: A = f32(dot) · (t · s_row).
    let approx = |u: usize, row: usize| -> Option<f32> {
        let s = dev.scales[row];
        if s.is_nan() || excl[u].contains(&(row as u32)) {
            return None;
        }
        let mut acc = 0i32;
        for g in 0..groups {
            let w = dev.words[((row / 16) * groups + g) * 16 + row % 16].to_le_bytes();
            let q = codes[u].packed[g].to_le_bytes();
            acc += (0..4).map(|i| i32::from(w[i]) * i32::from(q[i] as i8)).sum::<i32>();
        }
        Some((acc - codes[u].correction) as f32 * (codes[u].scale * s))
    };
    let twice: Vec<f32> = codes.iter().map(|c| c.twice_bound as f32 * 1.5).collect();
    for u in 0..3 {
        let mut best = f32::NEG_INFINITY;
        for c in 0..chunks {
            let mut a: Vec<f32> = (c * 256..((c + 1) * 256).min(slots)).filter_map(|r| approx(u, r)).collect();
            a.sort_by(|x, y| y.total_cmp(x));
            let want = a.get(k - 1).copied().unwrap_or(f32::NEG_INFINITY);
            assert_eq!(got[u * chunks + c].to_bits(), want.to_bits(), "user {u} chunk {c}");
            best = best.max(want);
        }
        assert!(u != 1 || got[chunks + 2] == f32::NEG_INFINITY, "user 1's last chunk has fewer than k rows");
        // The threshold: one float below best − 2W.
        let tb = upload_new(l, &twice).unwrap();
        let thr = alloc::<f32>(l, 3).unwrap();
        let args = [kth.arg(), Arg::I32(chunks as i32), tb.arg(), thr.arg()];
        launch(l, Kernel::QuantThreshold, &Shape::new((3, 1, 1), TOPK_THREADS), &args).unwrap();
        let t = download(l, &thr, 0, 3).unwrap()[u];
        assert_eq!(t.to_bits(), (best - twice[u]).next_down().to_bits(), "user {u} threshold");
    }
}

/// `quant_query` against the host's `quantize_query` on random queries of
/// every scale (and the edge cases: zeros, a non-finite value, a norm past
/// the limit), read from the resident rows and from staged ones: the codes,
/// the correction and the scale bit for bit, the domain flag equal, and 2W
/// (rounded up to f32) within 1e-6 relative of the host's and never below
/// the host's exact f64 bound (the device may contract f64 products into
/// FMAs, which only removes roundings).
#[test]
fn the_device_quantises_queries_as_the_host_does() {
    use rand::{Rng, SeedableRng};
    for d in [1usize, 5, 8, 50] {
        let b = emu(d, 40);
        let l = b.launcher();
        let table = &b.table;
        let groups = d.div_ceil(4);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(d as u64);
        let mut queries: Vec<Vec<f32>> = (0..40)
            .map(|i| {
                let scale = 10f32.powi(rng.random_range(-30..20));
                (0..d).map(|_| if i % 7 == 3 { 0.0 } else { rng.random_range(-1.0f32..1.0) * scale }).collect()
            })
            .collect();
        queries[5][d / 2] = f32::NAN;
        queries[6][0] = f32::INFINITY;
        queries[9][0] = 3e30;
        // Half resident (rows 0, 2, 4, … of a ring buffer), half staged.
        let resident: Vec<f32> = queries.iter().step_by(2).flatten().copied().collect();
        let staged: Vec<f32> = queries.iter().skip(1).step_by(2).flatten().copied().collect();
        let rows: Vec<i32> = (0..queries.len() as i32).map(|u| if u % 2 == 0 { u / 2 } else { -1 - u / 2 }).collect();
        let n = queries.len();
        let terms: Vec<u64> = table.query_bound_terms().iter().map(|t| t.to_bits()).collect();
        let (res, stg, row, trm) = (
            upload_new(l, &resident).unwrap(),
            upload_new(l, &staged).unwrap(),
            upload_new(l, &rows).unwrap(),
            upload_new(l, &terms).unwrap(),
        );
        let codes = alloc::<i32>(l, n * groups).unwrap();
        let corr = alloc::<i32>(l, n).unwrap();
        let scale = alloc::<f32>(l, n).unwrap();
        let twice = alloc::<f32>(l, n).unwrap();
        let ok = alloc::<i32>(l, n).unwrap();
        let args = [
            res.arg(),
            stg.arg(),
            row.arg(),
            Arg::I32(n as i32),
            Arg::I32(d as i32),
            Arg::I32(groups as i32),
            trm.arg(),
            codes.arg(),
            corr.arg(),
            scale.arg(),
            twice.arg(),
            ok.arg(),
        ];
        launch(l, Kernel::QuantQuery, &Shape::cover(n, ROWS_THREADS), &args).unwrap();
        let codes = download(l, &codes, 0, n * groups).unwrap();
        let (corr, scale) = (download(l, &corr, 0, n).unwrap(), download(l, &scale, 0, n).unwrap());
        let (twice, ok) = (download(l, &twice, 0, n).unwrap(), download(l, &ok, 0, n).unwrap());
        let mut in_domain = 0;
        for (u, q) in queries.iter().enumerate() {
            match table.quantize_query(q) {
                None => {
                    assert_eq!(ok[u], 0, "d {d} query {u}: outside the domain on the host");
                    assert_eq!(twice[u], f32::INFINITY, "d {d} query {u}: selects every row");
                }
                Some(host) => {
                    in_domain += 1;
                    assert_eq!(ok[u], 1, "d {d} query {u}");
                    assert_eq!(&codes[u * groups..(u + 1) * groups], &host.packed[..], "d {d} query {u}: codes");
                    assert_eq!(corr[u], host.correction, "d {d} query {u}: correction");
                    assert_eq!(scale[u].to_bits(), host.scale.to_bits(), "d {d} query {u}: scale");
                    assert!(f64::from(twice[u]) >= host.twice_bound, "d {d} query {u}: 2W below the host's");
                    let rel = (f64::from(twice[u]) - host.twice_bound) / host.twice_bound.max(f64::MIN_POSITIVE);
                    assert!(rel <= 1e-6, "d {d} query {u}: 2W {} vs host {} ({rel:e})", twice[u], host.twice_bound);
                }
            }
        }
        assert!(in_domain >= 30, "d {d}: most queries are inside the domain ({in_domain})");
    }
}

/// An embedding the backend encoded is scored from the row the encode left
/// on the device; only others are sent, and the answers equal the CPU's.
#[test]
fn encoded_embeddings_are_scored_where_the_encode_left_them() {
    use crate::backend::Backend;
    use crate::history::{Event, UserHistory};
    let mut c = ModelConfig::research(300, 16, 2, 2, 8, 20);
    c.d_v = 8;
    let model = Model::random(c, 3).expect("valid model");
    let b = CudaBackend::emulated(Arc::new(model.clone())).expect("the emulator builds");
    b.set_poison_outputs(true);
    let cpu = crate::CpuBackend::new(Arc::new(model));
    let hist: Vec<Vec<Event>> = (0..6u32)
        .map(|u| (0..3 + u).map(|i| Event { item: 1 + (u * 31 + i * 7) % 300, ts: 100 + i64::from(i) }).collect())
        .collect();
    let users: Vec<UserHistory<'_>> = hist.iter().map(|e| UserHistory { events: e, query_time: 500 }).collect();
    let encoded = Backend::encode_batch(&b, &users).unwrap();
    let got = b.top_k_batch(&encoded, 10, &[]).unwrap();
    assert_eq!(b.staged_top_k_queries(), 0, "every query was on the device already");
    assert_eq!(got, cpu.top_k_batch(&encoded, 10, &[]).unwrap());
    // A vector no encode produced is sent (once), and scores as on the CPU.
    let other: Vec<f32> = encoded[0].iter().map(|v| -v).collect();
    let mixed = vec![encoded[1].clone(), other];
    assert_eq!(b.top_k_batch(&mixed, 10, &[]).unwrap(), cpu.top_k_batch(&mixed, 10, &[]).unwrap());
    assert_eq!(b.staged_top_k_queries(), 1);
}
