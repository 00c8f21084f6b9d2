//! Uploads compiled in a child process of the `edgerec` binary
//! (`edgerec_runtime::CompileProcess`): a plugin compiled there serves as one
//! compiled in process, and a compile that passes its memory or time bound,
//! or whose upload was abandoned, is stopped with a `CompileBound` error.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use edgerec_runtime::{
    CandidateBatch, CompileProcess, Limits, OnError, Pipeline, PluginError, RequestContext, Runtime, RuntimeConfig,
    first_party,
};
use edgerec_test_programs::binaries::many_functions;

fn runtime(config: RuntimeConfig) -> Runtime {
    let edgerec = Path::new(env!("CARGO_BIN_EXE_edgerec"));
    Runtime::new(config).unwrap().with_compile_process(CompileProcess::new(edgerec))
}

/// A component the compiler chews on for a while (90,000 functions: under
/// the structure caps, so only the compile's own bounds stop it).
fn heavy_component() -> Vec<u8> {
    many_functions(90_000)
}

#[test]
fn a_plugin_compiled_in_a_child_serves_like_one_compiled_in_process() {
    let batch: CandidateBatch = serde_json::from_str(
        r#"{"ids": [1, 2, 3], "scores": [0.9, 0.8, 0.7], "columns": [{"name": "stock", "type": "i64", "values": [0, 4, 2]}]}"#,
    )
    .unwrap();
    let config = br#"{"attribute": "stock", "min": 1}"#.to_vec();
    let answer = |runtime: &Runtime| {
        let plugin = runtime.compile_named(Some("in-stock"), first_party::IN_STOCK).unwrap();
        let stage = runtime.stage(plugin, config.clone(), OnError::Fail, Limits::default()).unwrap();
        let outcome = runtime.run_pipeline(&Pipeline { stages: vec![stage] }, &RequestContext::new("shop"), &batch);
        outcome.unwrap().candidates.iter().map(|c| c.id).collect::<Vec<_>>()
    };
    let in_child = answer(&runtime(RuntimeConfig::default()));
    let in_process = answer(&Runtime::new(RuntimeConfig::default()).unwrap());
    assert_eq!(in_child, vec![2, 3]);
    assert_eq!(in_child, in_process);
}

#[test]
fn a_compile_past_its_memory_bound_is_stopped() {
    let runtime = runtime(RuntimeConfig { compile_memory_bytes: 24 << 20, ..RuntimeConfig::default() });
    let started = Instant::now();
    let error = runtime.compile(&heavy_component()).unwrap_err();
    println!("stopped after {:?}: {error}", started.elapsed());
    let PluginError::CompileBound { why } = &error else { panic!("not a bound: {error:?}") };
    assert!(why.contains("more than its 25165824 bytes of memory"), "{why}");
}

#[test]
fn a_compile_past_its_deadline_is_killed() {
    let runtime = runtime(RuntimeConfig { compile_timeout_ms: 1, ..RuntimeConfig::default() });
    let error = runtime.compile(&heavy_component()).unwrap_err();
    let PluginError::CompileBound { why } = &error else { panic!("not a bound: {error:?}") };
    assert!(why.contains("longer than its 1 ms bound"), "{why}");
}

#[test]
fn an_abandoned_upload_stops_its_compile() {
    let runtime = runtime(RuntimeConfig::default());
    let abandoned = AtomicBool::new(true);
    let error =
        runtime.compile_cancellable(None, &heavy_component(), &RequestContext::new("shop"), &abandoned).unwrap_err();
    assert_eq!(error, PluginError::CompileBound { why: "the upload was abandoned".into() });
}

#[test]
fn a_component_the_compiler_refuses_is_invalid_as_in_process() {
    // A component header and a truncated section.
    let broken = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0x01, 0x05, 0x00];
    let in_child = runtime(RuntimeConfig::default()).compile(&broken).unwrap_err();
    let in_process = Runtime::new(RuntimeConfig::default()).unwrap().compile(&broken).unwrap_err();
    println!("in a child: {in_child}\nin process: {in_process}");
    assert!(matches!(in_child, PluginError::Invalid { .. }) || in_child == in_process, "{in_child:?}");
    assert_eq!(std::mem::discriminant(&in_child), std::mem::discriminant(&in_process));
}
