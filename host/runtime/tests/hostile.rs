//! Deliberately bad plugins: each gets a typed error (within its limits), the
//! host carries on, and the next call of a good plugin is still correct.

mod common;

use common::*;
use edgerec_runtime::{
    CandidateBatch, Limits, OutputProblem, PluginError, RequestContext, Runtime, RuntimeConfig, StageFailure,
    StageOutput, first_party,
};

/// Calls the hostile plugin in `mode` and returns its failure.
fn misbehave(mode: &str, limits: Limits) -> StageFailure {
    let config = format!(r#"{{"mode": "{mode}"}}"#);
    let (result, report) =
        runtime().call(&hostile(), &RequestContext::new("t"), config.as_bytes(), &random_batch(20, 5), &limits);
    eprintln!("{mode}: {result:?} after {:.0} µs, fuel {}", report.wall_us, report.fuel_used);
    let failure = result.expect_err(mode);
    assert_good_plugin_still_correct();
    failure
}

/// in-stock on a known batch keeps exactly the in-stock items.
fn assert_good_plugin_still_correct() {
    let batch: CandidateBatch = serde_json::from_str(
        r#"{"ids": [5, 6, 7], "scores": [0.3, 0.2, 0.1],
            "columns": [{"name": "in_stock", "type": "bool", "values": [true, false, true]}]}"#,
    )
    .unwrap();
    let (result, _) = runtime().call(&in_stock(), &RequestContext::new("t"), b"", &batch, &relaxed());
    assert_eq!(result.unwrap(), StageOutput { order: vec![0, 2], scores: None, reasons: None });
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let limits = Limits { deadline_us: 20_000, fuel: u64::MAX / 4, ..relaxed() };
    assert_eq!(misbehave("loop", limits), StageFailure::DeadlineExceeded { deadline_us: 20_000 });
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let limits = Limits { fuel: 2_000_000, ..relaxed() };
    assert_eq!(misbehave("loop", limits), StageFailure::FuelExhausted { fuel: 2_000_000 });
}

#[test]
fn unbounded_memory_growth_hits_the_memory_cap() {
    let limits = Limits { memory_bytes: 16 << 20, ..relaxed() };
    assert_eq!(misbehave("grow", limits), StageFailure::MemoryLimit { limit_bytes: 16 << 20 });
}

#[test]
fn deep_recursion_overflows_the_stack() {
    assert_eq!(misbehave("recurse", relaxed()), StageFailure::StackOverflow);
}

#[test]
fn panics_and_traps_are_traps_with_the_panic_message() {
    match misbehave("panic", relaxed()) {
        StageFailure::Trap { message } => {
            assert!(message.contains("panics on purpose"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(misbehave("trap", relaxed()), StageFailure::Trap { .. }));
}

#[test]
fn invalid_outputs_are_rejected_with_the_problem() {
    let problem = |mode| match misbehave(mode, relaxed()) {
        StageFailure::InvalidOutput { problem } => problem,
        other => panic!("{mode}: {other:?}"),
    };
    assert_eq!(problem("oversized"), OutputProblem::TooLong { len: 40, max: 20 });
    assert_eq!(problem("out_of_range"), OutputProblem::IndexOutOfRange { index: 27, len: 20 });
    assert_eq!(problem("duplicate"), OutputProblem::DuplicateIndex { index: 0 });
    assert_eq!(problem("nan"), OutputProblem::NonFiniteScore { position: 0 });
    assert!(matches!(problem("bad_scores_len"), OutputProblem::Misaligned { .. }));
}

#[test]
fn a_plugin_error_is_reported_as_such() {
    assert!(
        matches!(misbehave("error", relaxed()), StageFailure::PluginError { message } if message.contains("on purpose"))
    );
}

#[test]
fn a_log_flood_is_capped_and_counted() {
    let limits = Limits { max_log_lines: 8, ..relaxed() };
    let (result, report) = runtime().call(
        &hostile(),
        &RequestContext::new("t"),
        br#"{"mode": "log_flood"}"#,
        &random_batch(3, 1),
        &limits,
    );
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(report.logs.len(), 8);
    assert_eq!(report.logs_dropped, 1000 - 8);
    assert!(report.logs.iter().map(|l| l.message.len()).sum::<usize>() <= limits.max_log_bytes);
}

#[test]
fn files_that_are_not_plugins_are_refused_before_activation() {
    let rt = runtime();
    let other_world = wat::parse_str(
        r#"(component
             (core module $m (func (export "f") (result i32) i32.const 7))
             (core instance $i (instantiate $m))
             (func $f (result u32) (canon lift (core func $i "f")))
             (export "run" (func $f)))"#,
    )
    .unwrap();
    assert!(matches!(rt.compile(&other_world), Err(PluginError::WrongWorld { .. })));
    let core_module = wat::parse_str("(module (func (export \"run\")))").unwrap();
    assert_eq!(rt.compile(&core_module).unwrap_err(), PluginError::NotAComponent);
    let mut rng = Rng::new(42);
    let random: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    assert_eq!(rt.compile(&random).unwrap_err(), PluginError::NotWasm);
    let mut component_garbage = b"\0asm\x0d\0\x01\0".to_vec();
    component_garbage.extend(&random);
    assert!(matches!(rt.compile(&component_garbage), Err(PluginError::Invalid { .. })));
    let cap = RuntimeConfig::default().max_upload_bytes;
    let huge = vec![0u8; cap + 1];
    assert_eq!(rt.compile(&huge).unwrap_err(), PluginError::TooLarge { size: cap + 1, max: cap });
    assert_good_plugin_still_correct();
}

/// A runtime with one instance slot and no wait for it: if a stopped call
/// kept its slot, the next call would fail with `pool_busy` at once.
fn one_slot_runtime() -> Runtime {
    let config =
        RuntimeConfig { cache_dir: Some(cache_dir()), pool_instances: 1, pool_wait_ms: 0, ..RuntimeConfig::default() };
    Runtime::new(config).unwrap()
}

/// Runs hostile `mode` on `rt` with a 50 ms deadline, then checks the slot is free
/// again (a good plugin runs at once). Returns the failure.
fn misbehave_on(rt: &Runtime, mode: &str) -> StageFailure {
    let hostile = rt.compile(edgerec_test_programs::HOSTILE).unwrap();
    let good = rt.compile(first_party::IN_STOCK).unwrap();
    // Fuel high enough that only the deadline (or the block itself) stops it.
    let limits = Limits { deadline_us: 50_000, fuel: u64::MAX / 4, ..relaxed() };
    let config = format!(r#"{{"mode": "{mode}"}}"#);
    let (result, report) =
        rt.call(&hostile, &RequestContext::new("t"), config.as_bytes(), &random_batch(20, 5), &limits);
    eprintln!("{mode}: {result:?} after {:.0} µs", report.wall_us);
    let (after, _) = rt.call(&good, &RequestContext::new("t"), b"", &random_batch(20, 6), &relaxed());
    assert!(after.is_ok(), "{mode}: the slot must be free again, got {after:?}");
    result.expect_err(mode)
}

#[test]
fn a_plugin_that_waits_in_a_host_call_is_stopped_and_gives_its_slot_back() {
    // Each of these would wait 5 s (or forever) inside the host, where neither
    // the deadline nor fuel can reach it. They come back as `blocked`, at once.
    let rt = one_slot_runtime();
    for (mode, call) in
        [("sleep", "wasi:io/poll"), ("poll", "wasi:io/poll.poll"), ("block", "wasi:io/poll.pollable.block")]
    {
        match misbehave_on(&rt, mode) {
            StageFailure::Blocked { call: got } => assert!(got.starts_with(call), "{mode}: {got}"),
            other => panic!("{mode}: expected blocked, got {other:?}"),
        }
    }
}

#[test]
fn a_plugin_that_spins_on_wasi_calls_that_return_at_once_hits_the_deadline() {
    // Reading the closed stdin (raw and through std) and zero-length sleeps
    // return at once, so waiting on them is a busy loop: the deadline stops it.
    let rt = one_slot_runtime();
    for mode in ["stdin", "stdin_std", "sleep_zero_loop"] {
        assert_eq!(misbehave_on(&rt, mode), StageFailure::DeadlineExceeded { deadline_us: 50_000 }, "{mode}");
    }
}

#[test]
fn exit_ends_the_call_not_the_host() {
    let rt = one_slot_runtime();
    assert!(matches!(misbehave_on(&rt, "exit"), StageFailure::Exited { .. }));
    // And once more: the runtime is still whole.
    assert!(matches!(misbehave_on(&rt, "exit"), StageFailure::Exited { .. }));
}

#[test]
fn wasi_calls_asking_the_host_for_unbounded_work_are_refused() {
    let rt = one_slot_runtime();
    let trap = |mode| match misbehave_on(&rt, mode) {
        StageFailure::Trap { message } => message,
        other => panic!("{mode}: {other:?}"),
    };
    assert!(trap("random_huge").contains("random bytes"));
    assert!(trap("zeroes_huge").contains("zero bytes"));
    assert!(trap("poll_empty").contains("empty list"));
}

#[test]
fn the_upload_check_runs_under_the_uploading_tenants_own_context() {
    // The hostile plugin's default config behaves for tenant `sample` (the old
    // check's name) and sleeps for everyone else.
    let rt = runtime();
    let shop = RequestContext {
        user: Some("u-17".into()),
        recent_events: vec![edgerec_runtime::Event { item: 1, action: "view".into(), ts: 1_700_000_000 }],
        ..RequestContext::new("shop")
    };
    match rt.compile_for(Some("dodger"), edgerec_test_programs::HOSTILE, &shop) {
        Err(PluginError::SampleFailed { failure: StageFailure::Blocked { .. } }) => {}
        other => panic!("expected the sample run under `shop` to catch the sleep, got {other:?}"),
    }
    // Under its own name the tenant's requests are stopped too, not just the check.
    let dodger = rt.compile_named(Some("dodger"), edgerec_test_programs::HOSTILE).expect("passes under `sample`");
    let (result, _) = rt.call(&dodger, &shop, b"", &random_batch(5, 1), &relaxed());
    assert!(matches!(result, Err(StageFailure::Blocked { .. })), "{result:?}");
}
