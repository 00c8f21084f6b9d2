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
    /// few ms, and a first-party stage over 500 candidates takes a small
    /// fraction of that (`edgerec bench plugins` prints each stage's time).
    pub deadline_us: u64,
    /// Instruction budget (wasmtime fuel, ~1 unit per wasm instruction); what
    /// was used is reported with every call. Default 20 M: tens of times what
    /// a first-party stage uses on 500 candidates (`edgerec bench plugins`
    /// prints it), and it stops a runaway loop
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

impl Limits {
    /// The defaults for a plugin written in `language` (what it declares in
    /// its `edgerec:plugin-language` section; `None` for Rust and other
    /// native wasm). JavaScript runs in an interpreter (QuickJS) inside the
    /// component and costs tens of times the time and fuel of the same rule
    /// in Rust, past the native defaults (`edgerec bench plugins --js`
    /// measures it; docs/perf/plugins-js.md holds the figures). So a JS stage
    /// that sets no limits gets a deadline about twice the measured p99 of
    /// `boost` in TypeScript at 500 candidates and ten times its fuel (the
    /// native defaults' ratio); memory is the same.
    pub fn for_language(language: Option<&str>) -> Limits {
        match language {
            Some("js") => Limits { deadline_us: 50_000, fuel: 750_000_000, ..Limits::default() },
            _ => Limits::default(),
        }
    }
}

/// A stage's `limits` as an operator writes them: any subset of the fields
/// of [`Limits`]; an unknown key is refused. [`resolve`](Self::resolve) fills
/// the rest from the server's defaults and checks every value against the
/// server's maxima.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// See [`Limits::deadline_us`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_us: Option<u64>,
    /// See [`Limits::fuel`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// See [`Limits::memory_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// See [`Limits::max_reason_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_reason_bytes: Option<usize>,
    /// See [`Limits::max_log_lines`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_lines: Option<usize>,
    /// See [`Limits::max_log_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_bytes: Option<usize>,
}

impl LimitsSpec {
    /// The limits a stage runs with: each field given here, else the one of
    /// `defaults` (the server's configured defaults, e.g. its
    /// `plugin_deadline_us`), each checked against `maxima`.
    pub fn resolve(&self, defaults: &Limits, maxima: &LimitMaxima) -> Result<Limits, LimitsError> {
        let limits = Limits {
            deadline_us: self.deadline_us.unwrap_or(defaults.deadline_us),
            fuel: self.fuel.unwrap_or(defaults.fuel),
            memory_bytes: self.memory_bytes.unwrap_or(defaults.memory_bytes),
            max_reason_bytes: self.max_reason_bytes.unwrap_or(defaults.max_reason_bytes),
            max_log_lines: self.max_log_lines.unwrap_or(defaults.max_log_lines),
            max_log_bytes: self.max_log_bytes.unwrap_or(defaults.max_log_bytes),
        };
        limits.check(maxima)?;
        Ok(limits)
    }
}

impl From<Limits> for LimitsSpec {
    fn from(l: Limits) -> Self {
        LimitsSpec {
            deadline_us: Some(l.deadline_us),
            fuel: Some(l.fuel),
            memory_bytes: Some(l.memory_bytes),
            max_reason_bytes: Some(l.max_reason_bytes),
            max_log_lines: Some(l.max_log_lines),
            max_log_bytes: Some(l.max_log_bytes),
        }
    }
}

/// The largest limits a stage may ask for: the server fills it from its own
/// configuration (the defaults are what this runtime's pool can hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitMaxima {
    /// Largest deadline. Default 1 s: a stage on the request path past that is a mistake.
    pub deadline_us: u64,
    /// Largest fuel. Default 1 G (~50× the default): `u64::MAX` would mean no budget.
    pub fuel: u64,
    /// Largest memory cap. Default 64 MiB, the pool's slot size
    /// ([`RuntimeConfig::max_memory_bytes`]); keep them equal.
    pub memory_bytes: u64,
    /// Largest reason-code budget. Default 1 MiB.
    pub max_reason_bytes: usize,
    /// Largest log line count per call. Default 1,000.
    pub max_log_lines: usize,
    /// Largest log byte count per call. Default 64 KiB.
    pub max_log_bytes: usize,
}

impl Default for LimitMaxima {
    fn default() -> Self {
        LimitMaxima {
            deadline_us: 1_000_000,
            fuel: 1_000_000_000,
            memory_bytes: 64 << 20,
            max_reason_bytes: 1 << 20,
            max_log_lines: 1_000,
            max_log_bytes: 64 << 10,
        }
    }
}

/// A stage limit out of bounds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LimitsError {
    /// Over the server's maximum.
    #[error("limits.{field} = {value} is over the server's maximum of {max}: ask for at most {max}")]
    OverMaximum {
        /// Which field.
        field: String,
        /// What was asked.
        value: u64,
        /// The maximum.
        max: u64,
    },
    /// Zero, where zero would fail every call.
    #[error("limits.{field} = 0 would fail every call: give a positive value or leave it out for the default")]
    Zero {
        /// Which field.
        field: String,
    },
}

impl Limits {
    /// Checks every field against `maxima` (and that the deadline, fuel and
    /// memory are not zero).
    pub fn check(&self, maxima: &LimitMaxima) -> Result<(), LimitsError> {
        let fields = [
            ("deadline_us", self.deadline_us, maxima.deadline_us, true),
            ("fuel", self.fuel, maxima.fuel, true),
            ("memory_bytes", self.memory_bytes, maxima.memory_bytes, true),
            ("max_reason_bytes", self.max_reason_bytes as u64, maxima.max_reason_bytes as u64, false),
            ("max_log_lines", self.max_log_lines as u64, maxima.max_log_lines as u64, false),
            ("max_log_bytes", self.max_log_bytes as u64, maxima.max_log_bytes as u64, false),
        ];
        for (field, value, max, positive) in fields {
            if positive && value == 0 {
                return Err(LimitsError::Zero { field: field.to_owned() });
            }
            if value > max {
                return Err(LimitsError::OverMaximum { field: field.to_owned(), value, max });
            }
        }
        Ok(())
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
    /// The most instances one tenant may hold at once; its calls beyond it
    /// wait (within `pool_wait_ms`) for one of its own to end, then fail with
    /// `tenant_busy`. Default 16 (a quarter of the pool): with at most
    /// `pool_instances / tenant_instances - 1` tenants saturating their cap,
    /// every other tenant still finds free slots. Set up calls (compile,
    /// stage set-up) share one bucket of this size.
    pub tenant_instances: u32,
    /// How long a call waits for a free instance before failing with
    /// `pool_busy` (or `tenant_busy`). Default 50 ms.
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
    /// Linear memory kept resident per pool slot between calls (reset page
    /// by page instead of unmapped). Default 2 MiB: a Rust plugin's initial
    /// memory (~1.1 MiB) plus its working heap, so that a call takes no page
    /// faults; at most `pool_instances` × this of RSS.
    pub keep_resident_bytes: usize,
    /// Count fuel (the instruction budget `Limits::fuel`). Default on; off
    /// only to measure what metering costs (`edgerec bench plugins` with
    /// `EDGEREC_FUEL=0`): without it, a loop is stopped by the deadline alone.
    pub fuel_metering: bool,
    /// Write `/tmp/perf-<pid>.map` so that `perf` names the plugins' compiled
    /// functions (profiling only). Default off.
    pub perf_map: bool,
    /// Caps on an upload's structure, checked before it is compiled
    /// ([`crate::StructureCaps`] gives each default and why).
    pub structure_caps: crate::StructureCaps,
    /// With a compile process ([`crate::Runtime::with_compile_process`]):
    /// the wall-clock (and CPU) time one upload's compile may take before the
    /// compiler is killed. Default 60 s: a JavaScript plugin (~10 MB of
    /// component) compiles in seconds on one core.
    pub compile_timeout_ms: u64,
    /// With a compile process: the memory one upload's compile may use
    /// (its data segment) before it fails. Default 2 GiB.
    pub compile_memory_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            pool_instances: 64,
            tenant_instances: 16,
            pool_wait_ms: 50,
            max_upload_bytes: 8 << 20,
            max_wasm_stack: 512 << 10,
            max_memory_bytes: 64 << 20,
            epoch_tick_us: 500,
            keep_resident_bytes: 2 << 20,
            fuel_metering: true,
            perf_map: false,
            structure_caps: crate::StructureCaps::default(),
            compile_timeout_ms: 60_000,
            compile_memory_bytes: 2 << 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_spec_takes_the_rest_from_the_given_defaults() {
        let defaults = Limits { deadline_us: 2_000_000, ..Limits::default() };
        let maxima = LimitMaxima { deadline_us: 5_000_000, ..LimitMaxima::default() };
        let spec: LimitsSpec = serde_json::from_str(r#"{"fuel": 1000000}"#).unwrap();
        let limits = spec.resolve(&defaults, &maxima).unwrap();
        assert_eq!(limits, Limits { fuel: 1_000_000, ..defaults });
    }

    #[test]
    fn out_of_bounds_and_unknown_limits_are_refused() {
        let maxima = LimitMaxima::default();
        let huge: LimitsSpec = serde_json::from_str(&format!(r#"{{"fuel": {}}}"#, u64::MAX)).unwrap();
        let err = huge.resolve(&Limits::default(), &maxima).unwrap_err();
        assert_eq!(err, LimitsError::OverMaximum { field: "fuel".into(), value: u64::MAX, max: maxima.fuel });
        let zero: LimitsSpec = serde_json::from_str(r#"{"deadline_us": 0}"#).unwrap();
        assert!(matches!(zero.resolve(&Limits::default(), &maxima), Err(LimitsError::Zero { .. })));
        assert!(serde_json::from_str::<LimitsSpec>(r#"{"fuel": 5, "cpu": 1}"#).is_err());
        assert!(Limits::default().check(&maxima).is_ok(), "the defaults fit the default maxima");
    }
}
