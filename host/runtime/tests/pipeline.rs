//! First-party plugins through the runtime: world check, declared columns,
//! a 3-stage pipeline against a plain native reference on random inputs,
//! error policies, the disk cache, the bounded pool wait.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use edgerec_runtime::{
    CandidateBatch, ColumnValues, Event, OnError, Pipeline, PipelineError, RequestContext, Runtime, RuntimeConfig,
    StageFailure, StageStatus,
};

const BOOST_CONFIG: &str = r#"{"rules": [
    {"name": "acme", "attribute": "brand", "op": "eq", "value": "acme", "action": {"multiply": 1.5}},
    {"name": "cheap", "attribute": "price", "op": "lt", "value": 20, "action": {"add": 0.05}}
]}"#;
const DIVERSITY_CONFIG: &str = r#"{"attribute": "category", "max_per_group": 2, "top": 10}"#;

fn three_stage_pipeline() -> Pipeline {
    let rt = runtime();
    let stage = |p, config: &str| rt.stage(p, config.as_bytes().to_vec(), OnError::Fail, relaxed()).expect("stage");
    Pipeline { stages: vec![stage(in_stock(), ""), stage(boost(), BOOST_CONFIG), stage(diversity(), DIVERSITY_CONFIG)] }
}

fn strings(batch: &CandidateBatch, name: &str) -> Vec<Option<String>> {
    match &batch.column(name).unwrap().values {
        ColumnValues::String(v) => v.clone(),
        other => panic!("{name} is {other:?}"),
    }
}

/// The same three rules, written plainly: (id, score) best first.
fn reference(batch: &CandidateBatch) -> Vec<(u64, f32)> {
    let ColumnValues::Bool(stock) = &batch.column("in_stock").unwrap().values else { panic!() };
    let ColumnValues::F64(price) = &batch.column("price").unwrap().values else { panic!() };
    let (brand, category) = (strings(batch, "brand"), strings(batch, "category"));
    let mut items: Vec<(usize, f32)> = Vec::new();
    for i in 0..batch.len() {
        if stock[i] != Some(true) {
            continue;
        }
        let mut score = batch.scores[i];
        if brand[i].as_deref() == Some("acme") {
            score *= 1.5;
        }
        if price[i].is_some_and(|p| p < 20.0) {
            score += 0.05;
        }
        items.push((i, score));
    }
    items.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (mut head, mut over, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_category: HashMap<&str, usize> = HashMap::new();
    for item in items {
        if head.len() >= 10 {
            rest.push(item);
            continue;
        }
        match category[item.0].as_deref() {
            Some(c) if per_category.get(c).copied().unwrap_or(0) >= 2 => over.push(item),
            Some(c) => {
                *per_category.entry(c).or_default() += 1;
                head.push(item);
            }
            None => head.push(item),
        }
    }
    head.into_iter().chain(over).chain(rest).map(|(i, s)| (batch.ids[i], s)).collect()
}

#[test]
fn first_party_plugins_pass_the_checks_and_declare_their_columns() {
    assert_eq!(in_stock().declared_columns(), ["in_stock"]);
    assert_eq!(diversity().declared_columns(), ["category"]);
    assert!(boost().declared_columns().is_empty());
    assert!(exclude_recent().declared_columns().is_empty());
    assert_eq!(three_stage_pipeline().required_columns(), ["in_stock", "brand", "price", "category"]);
}

#[test]
fn three_stage_pipeline_matches_the_native_reference_on_random_batches() {
    let pipeline = three_stage_pipeline();
    for seed in 1..=4 {
        let batch = random_batch(500, seed);
        let outcome = runtime().run_pipeline(&pipeline, &RequestContext::new("shop"), &batch).expect("pipeline");
        let expected = reference(&batch);
        let got: Vec<(u64, f32)> = outcome.candidates.iter().map(|c| (c.id, c.score)).collect();
        assert_eq!(got.len(), expected.len(), "seed {seed}");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.0, e.0, "seed {seed}");
            assert!((g.1 - e.1).abs() <= 1e-6, "seed {seed}: {g:?} vs {e:?}");
        }
        // The trace says what each stage did.
        let [a, b, c] = &outcome.stages[..] else { panic!("3 traces") };
        assert!(outcome.stages.iter().all(|t| t.status == StageStatus::Ran && t.report.fuel_used > 0));
        assert_eq!(a.output_len, expected.len());
        assert_eq!(a.removed.len(), 500 - expected.len());
        assert_eq!(a.moved, 0, "a filter moves nothing");
        assert!(b.moved > 0 && c.input_len == expected.len());
        // The guests start with 2 MiB of linear memory (.cargo/config.toml)
        // and 500 candidates fit in it: no stage grows its memory, which in
        // the instance pool would cost an mprotect to grow and one to reset.
        for t in &outcome.stages {
            assert_eq!(t.report.peak_memory_bytes, 2 << 20, "stage {} grew its memory", t.stage);
        }
        let acme_reason = outcome.candidates.iter().any(|c| c.reasons.iter().any(|r| r == "stage1:acme"));
        assert!(acme_reason, "boost's reason codes reach the final candidates");
    }
}

#[test]
fn exclude_recent_drops_recent_purchases_only() {
    let stage = runtime().stage(exclude_recent(), Vec::new(), OnError::Fail, relaxed()).unwrap();
    let batch = random_batch(50, 9);
    let now = 1_700_000_000;
    let ctx = RequestContext {
        now,
        recent_events: vec![
            Event { item: batch.ids[3], action: "purchase".into(), ts: now - 3600 },
            Event { item: batch.ids[4], action: "view".into(), ts: now - 3600 },
            Event { item: batch.ids[5], action: "purchase".into(), ts: now - 90 * 86_400 },
        ],
        ..RequestContext::new("shop")
    };
    let outcome = runtime().run_pipeline(&Pipeline { stages: vec![stage] }, &ctx, &batch).unwrap();
    assert_eq!(outcome.stages[0].removed, vec![batch.ids[3]]);
    assert_eq!(outcome.candidates.len(), 49);
}

#[test]
fn on_error_skip_passes_candidates_on_and_fail_fails_the_request() {
    let rt = runtime();
    let failing = || rt.stage(hostile(), br#"{"mode": "error"}"#.to_vec(), OnError::Skip, relaxed()).unwrap();
    let good = rt.stage(in_stock(), Vec::new(), OnError::Fail, relaxed()).unwrap();
    let batch = random_batch(40, 3);
    let ctx = RequestContext::new("shop");
    let skip = Pipeline { stages: vec![failing(), good.clone()] };
    let outcome = rt.run_pipeline(&skip, &ctx, &batch).unwrap();
    assert!(matches!(&outcome.stages[0].status, StageStatus::Skipped { failure: StageFailure::PluginError { .. } }));
    assert_eq!(outcome.stages[1].input_len, 40, "the skipped stage passed everything on");
    let mut fail_stage = failing();
    fail_stage.on_error = OnError::Fail;
    let fail = Pipeline { stages: vec![good, fail_stage] };
    match rt.run_pipeline(&fail, &ctx, &batch) {
        Err(PipelineError::StageFailed { stage: 1, trace, .. }) => assert_eq!(trace.len(), 2),
        other => panic!("expected stage 1 to fail the request, got {other:?}"),
    }
}

#[test]
fn invalid_stage_configs_are_refused_at_setup_and_bad_input_at_run() {
    let rt = runtime();
    let refused = rt.stage(
        boost(),
        br#"{"rules": [{"attribute": "a", "op": "lt", "value": "x", "action": "bury"}]}"#.to_vec(),
        OnError::Skip,
        relaxed(),
    );
    assert!(matches!(refused, Err(edgerec_runtime::PluginError::InvalidConfig { .. })), "{refused:?}");
    let not_json = rt.stage(in_stock(), b"{not json".to_vec(), OnError::Skip, relaxed());
    assert!(matches!(not_json, Err(edgerec_runtime::PluginError::InvalidConfig { .. })));
    let mut bad = random_batch(10, 1);
    bad.scores.pop();
    assert!(matches!(
        rt.run_pipeline(&three_stage_pipeline(), &RequestContext::new("t"), &bad),
        Err(PipelineError::Input(_))
    ));
}

#[test]
fn a_second_runtime_loads_compiled_plugins_from_the_disk_cache() {
    let _ = in_stock(); // compiled (and cached) by the shared runtime
    let other = Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir()), ..RuntimeConfig::default() }).unwrap();
    let again = other.compile(edgerec_runtime::first_party::IN_STOCK).unwrap();
    assert!(again.from_cache());
    assert_eq!(again.hash(), in_stock().hash());
    assert_eq!(again.declared_columns(), ["in_stock"]);
}

#[test]
fn a_full_pool_makes_calls_wait_a_bounded_time_then_report_busy() {
    let config =
        RuntimeConfig { cache_dir: Some(cache_dir()), pool_instances: 1, pool_wait_ms: 5, ..RuntimeConfig::default() };
    let rt = Arc::new(Runtime::new(config).unwrap());
    let hog = rt.compile(edgerec_test_programs::HOSTILE).unwrap();
    let good = rt.compile(edgerec_runtime::first_party::IN_STOCK).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (rt, hog, stop) = (Arc::clone(&rt), Arc::clone(&hog), Arc::clone(&stop));
        std::thread::spawn(move || {
            let limits = edgerec_runtime::Limits { deadline_us: 100_000, fuel: u64::MAX / 4, ..Default::default() };
            let batch = random_batch(5, 1);
            while !stop.load(Ordering::Relaxed) {
                let _ = rt.call(&hog, &RequestContext::new("t"), br#"{"mode": "loop"}"#, &batch, &limits);
            }
        })
    };
    let batch = random_batch(20, 2);
    let busy = (0..200).any(|_| {
        matches!(
            rt.call(&good, &RequestContext::new("t"), b"", &batch, &relaxed()).0,
            Err(StageFailure::PoolBusy { .. })
        )
    });
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert!(busy, "with the only slot held, a call must give up with pool_busy");
    assert!(rt.call(&good, &RequestContext::new("t"), b"", &batch, &relaxed()).0.is_ok(), "a freed slot serves again");
}

#[test]
fn a_tenant_saturating_its_instance_cap_does_not_make_another_tenants_stages_skip() {
    // 4 slots, at most 2 per tenant. Tenant `hog` runs 4 threads of a stage
    // that always spins to its 100 ms deadline: without the cap they would
    // hold every slot and `shop`'s stages would skip with pool_busy.
    let config = RuntimeConfig {
        cache_dir: Some(cache_dir()),
        pool_instances: 4,
        tenant_instances: 2,
        pool_wait_ms: 20,
        ..RuntimeConfig::default()
    };
    let rt = Arc::new(Runtime::new(config).unwrap());
    let spin_limits = edgerec_runtime::Limits { deadline_us: 100_000, fuel: u64::MAX / 4, ..Default::default() };
    let spin = rt
        .stage(
            rt.compile(edgerec_test_programs::HOSTILE).unwrap(),
            br#"{"mode": "loop"}"#.to_vec(),
            OnError::Skip,
            spin_limits,
        )
        .unwrap();
    let hog_pipeline = Arc::new(Pipeline { stages: vec![spin] });
    let stage = |bytes: &[u8], config: &str| {
        rt.stage(rt.compile(bytes).unwrap(), config.as_bytes().to_vec(), OnError::Skip, relaxed()).unwrap()
    };
    let shop_pipeline = Pipeline {
        stages: vec![
            stage(edgerec_runtime::first_party::IN_STOCK, ""),
            stage(edgerec_runtime::first_party::BOOST, BOOST_CONFIG),
            stage(edgerec_runtime::first_party::DIVERSITY, DIVERSITY_CONFIG),
        ],
    };
    let stop = Arc::new(AtomicBool::new(false));
    let hog_capped = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            let (rt, pipeline, stop, capped) =
                (Arc::clone(&rt), Arc::clone(&hog_pipeline), Arc::clone(&stop), Arc::clone(&hog_capped));
            std::thread::spawn(move || {
                let batch = random_batch(5, 1);
                while !stop.load(Ordering::Relaxed) {
                    let outcome = rt.run_pipeline(&pipeline, &RequestContext::new("hog"), &batch).unwrap();
                    if let StageStatus::Skipped { failure: StageFailure::TenantBusy { .. } } = &outcome.stages[0].status
                    {
                        capped.store(true, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    while !hog_capped.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let batch = random_batch(200, 4);
    for _ in 0..10 {
        let outcome = rt.run_pipeline(&shop_pipeline, &RequestContext::new("shop"), &batch).unwrap();
        for trace in &outcome.stages {
            assert_eq!(trace.status, StageStatus::Ran, "stage {} of `shop` while `hog` is at its cap", trace.stage);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
}

#[test]
fn each_stages_log_lines_and_dropped_count_are_in_its_trace() {
    let rt = runtime();
    let limits = edgerec_runtime::Limits { max_log_lines: 5, ..relaxed() };
    let flood = rt.stage(hostile(), br#"{"mode": "log_flood"}"#.to_vec(), OnError::Fail, limits).unwrap();
    let quiet = rt.stage(in_stock(), Vec::new(), OnError::Fail, relaxed()).unwrap();
    let outcome = rt
        .run_pipeline(&Pipeline { stages: vec![quiet, flood] }, &RequestContext::new("shop"), &random_batch(30, 2))
        .unwrap();
    let (quiet, flood) = (&outcome.stages[0].report, &outcome.stages[1].report);
    assert!(quiet.logs.is_empty() && quiet.logs_dropped == 0);
    assert_eq!(flood.logs.len(), 5);
    assert_eq!(flood.logs[0].level, "info");
    assert!(flood.logs[0].message.starts_with("line 0 "), "{:?}", flood.logs[0]);
    assert_eq!(flood.logs_dropped, 1000 - 5);
}
