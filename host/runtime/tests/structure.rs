//! Uploads checked before they cost: components whose structure strains the
//! compiler (deep nesting, a million functions) are refused by the
//! structural caps before Cranelift sees them, while every first-party
//! plugin stays far below each cap.

use std::time::Instant;

use edgerec_runtime::{PluginError, Runtime, RuntimeConfig, StructureCaps, check_structure, first_party};
use edgerec_test_programs::binaries::{lying_functions, many_functions, nested_components};

#[test]
fn the_builders_write_valid_components() {
    let validate = |bytes: &[u8]| {
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all()).validate_all(bytes).map(|_| ())
    };
    validate(&nested_components(3)).expect("3 nested components");
    validate(&many_functions(10)).expect("10 functions");
}

#[test]
fn every_first_party_plugin_is_far_below_every_cap() {
    let caps = StructureCaps::default();
    for (name, bytes) in first_party::all() {
        let seen = check_structure(bytes, &caps).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name}: {seen:?}");
        assert!(seen.depth * 2 <= caps.max_depth && seen.components * 4 <= caps.max_components, "{name}: {seen:?}");
        assert!(seen.modules * 4 <= caps.max_modules && seen.functions * 10 <= caps.max_functions, "{name}: {seen:?}");
        assert!(seen.imports * 10 <= caps.max_imports && seen.exports * 10 <= caps.max_exports, "{name}: {seen:?}");
        assert!(seen.custom_sections * 10 <= caps.max_custom_sections, "{name}: {seen:?}");
        assert!(seen.other_definitions * 10 <= caps.max_other_definitions, "{name}: {seen:?}");
    }
}

#[test]
fn hostile_shapes_are_refused_before_compilation() {
    let runtime = Runtime::new(RuntimeConfig { max_upload_bytes: 16 << 20, ..RuntimeConfig::default() }).unwrap();
    let cases: [(&str, Vec<u8>, &str); 2] = [
        ("100,000 nested empty components", nested_components(100_000), "levels of nesting"),
        ("1M empty functions", many_functions(1_000_000), "core functions"),
    ];
    for (what, bytes, counted) in cases {
        let started = Instant::now();
        let error = runtime.compile(&bytes).expect_err(what);
        println!("{what} ({} bytes): refused in {:.1} ms: {error}", bytes.len(), started.elapsed().as_secs_f64() * 1e3);
        match &error {
            PluginError::TooComplex { what: counted_as, count, max } => {
                assert_eq!(counted_as, counted, "{what}");
                assert!(count > max, "{what}: {error}");
            }
            other => panic!("{what}: refused as {other:?}, not by a structural cap"),
        }
    }
    // A file whose function and code sections disagree is refused by the parser, as unreadable.
    let error = runtime.compile(&lying_functions(200_000)).expect_err("lying sections");
    assert!(matches!(error, PluginError::Invalid { .. }), "{error}");
    // Just under the caps still compiles: the caps refuse shapes, not sizes.
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let error = runtime.compile(&many_functions(1_000)).expect_err("not a plugin");
    assert!(matches!(error, PluginError::WrongWorld { .. }), "{error}");
}
