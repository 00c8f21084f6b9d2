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
