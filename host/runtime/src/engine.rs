//! The wasmtime engine's settings, shared by the serving engine and the
//! compile child (whose artifacts the serving engine loads).

use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::RuntimeConfig;

/// The engine's settings for `config`. `pooling`: the serving engine's
/// instance pool; a compile child, which instantiates nothing, leaves it out
/// (the pool reserves its whole address space up front). Nothing in the pool
/// shapes compiled code, so the child's artifacts load into the serving engine.
pub(crate) fn engine_config(config: &RuntimeConfig, pooling: bool) -> wasmtime::Config {
    let n = config.pool_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    // A Rust wasm32-wasip2 component holds a few core instances (the module,
    // the WASI adapter, shims), one or two memories and a few tables.
    pool.total_component_instances(n)
        .total_core_instances(n * 8)
        .total_memories(n * 2)
        .total_tables(n * 4)
        .max_core_instances_per_component(16)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_memory_size(config.max_memory_bytes as usize)
        // Reset a used slot by rewriting only the pages the call dirtied
        // (found with Linux's PAGEMAP_SCAN where the kernel has it) rather
        // than unmapping them: the next instance then takes no page
        // faults on the memory a plugin always touches (stack, data,
        // heap start). Bounded per slot, so RSS stays bounded.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(config.keep_resident_bytes)
        .table_keep_resident(config.keep_resident_bytes.min(64 << 10));
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        .consume_fuel(config.fuel_metering)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    if pooling {
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    if config.perf_map {
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    wasm
}
