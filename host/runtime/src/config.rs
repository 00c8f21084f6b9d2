//! Runtime-wide settings and per-stage limits, with the defaults and why.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Limits on one call of one stage. Every field has a default (see
/// [`Limits::default`]); a stage config may override any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock deadline, enforced by epoch interruption (granularity: the
    /// runtime's epoch tick). Default 5 ms: a storefront's whole budget is a
    /// few ms, a first-party stage over 500 candidates takes ~0.1 ms.
    pub deadline_us: u64,
    /// Instruction budget (wasmtime fuel, ~1 unit per wasm instruction); what
    /// was used is reported with every call. Default 20 M: ~50× what a
    /// first-party stage uses on 500 candidates, and it stops a runaway loop
    /// deterministically even on a slow or loaded machine.
    pub fuel: u64,
    /// Linear memory cap per instance. Default 32 MiB: a Rust guest starts at
    /// ~1 MiB and 500 candidates with a handful of columns take well under
    /// 1 MiB, while 64 pooled instances stay within 2 GiB.
    pub memory_bytes: u64,
    /// Cap on the reason codes' total bytes in an output (the order itself is
    /// capped by the input's length). Default 64 KiB.
    pub max_reason_bytes: usize,
    /// Log lines kept per call (the rest are counted as dropped). Default 32.
    pub max_log_lines: usize,
    /// Log bytes kept per call. Default 4 KiB.
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_us: 5_000,
            fuel: 20_000_000,
            memory_bytes: 32 << 20,
            max_reason_bytes: 64 << 10,
            max_log_lines: 32,
            max_log_bytes: 4 << 10,
        }
    }
}

/// Settings of a [`Runtime`](crate::Runtime), fixed for its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where compiled plugins are kept, named by content hash + engine
    /// compatibility hash (wasmtime version and settings). None = no disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Component instances alive at once (the pooling allocator's size); a call
    /// beyond it waits. Default 64.
    pub pool_instances: u32,
    /// How long a call waits for a free instance before failing with
    /// `pool_busy`. Default 50 ms.
    pub pool_wait_ms: u64,
    /// Largest plugin file accepted. Default 8 MiB (a release Rust plugin is
    /// a few hundred KiB).
    pub max_upload_bytes: usize,
    /// Wasm stack cap in bytes (wasmtime's `max_wasm_stack`; engine-wide, so
    /// not per stage). Default 512 KiB: deep enough for any sane plugin,
    /// small enough that runaway recursion traps in well under a millisecond.
    pub max_wasm_stack: usize,
    /// The most linear memory any stage may be granted (the pool's slot size);
    /// a stage's `memory_bytes` is clamped to it. Default 64 MiB.
    pub max_memory_bytes: u64,
    /// Epoch tick, the deadline's granularity. Default 500 µs.
    pub epoch_tick_us: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            pool_instances: 64,
            pool_wait_ms: 50,
            max_upload_bytes: 8 << 20,
            max_wasm_stack: 512 << 10,
            max_memory_bytes: 64 << 20,
            epoch_tick_us: 500,
        }
    }
}
