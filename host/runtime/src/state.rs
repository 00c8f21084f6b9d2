//! The per-call store state: WASI with nothing granted, the memory limiter,
//! the bounded log.

use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::{ClosedInputStream, MemoryOutputPipe, SinkOutputStream};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::edgerec::plugin::{host, types};
use crate::config::Limits;
use crate::trace::LogLine;

/// Where every call's deterministic "random" sequence starts.
const SEED: u64 = 0x6564_6765_7265_6321;

/// Everything one call's `Store` holds. Built fresh per call: nothing
/// survives from one request (or tenant) to the next.
pub(crate) struct CallState {
    wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub log: LogSink,
    /// What the guest wrote to stderr (Rust's panic message goes there).
    pub stderr: MemoryOutputPipe,
    /// The state of the deterministic random generator (`wasi.rs`).
    pub rng: u64,
}

impl CallState {
    pub fn new(limits: &Limits, now_unix_seconds: i64) -> Self {
        let stderr = MemoryOutputPipe::new(limits.max_log_bytes.max(256));
        let mut wasi = WasiCtxBuilder::new();
        // Nothing granted: no preopens, args, env, network; stdin closed
        // (reads answer `closed` at once), stdout a sink. Clocks are frozen at
        // the request's time and randomness is seeded (`wasi.rs`), so a
        // plugin's answer depends only on its input.
        wasi.wall_clock(FixedWallClock(Duration::from_secs(now_unix_seconds.max(0) as u64)))
            .monotonic_clock(FrozenMonotonicClock)
            .stdin(ClosedInputStream)
            .stdout(SinkOutputStream)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stderr(stderr.clone());
        CallState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter { cap: limits.memory_bytes, peak: 0, hit: false },
            log: LogSink {
                lines: Vec::new(),
                bytes: 0,
                dropped: 0,
                max_lines: limits.max_log_lines,
                max_bytes: limits.max_log_bytes,
            },
            stderr,
            rng: SEED,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        self.log.push(level, message);
    }
}

/// Caps linear memory growth per call and records the peak.
pub(crate) struct MemoryLimiter {
    cap: u64,
    pub peak: u64,
    /// Set when a grow was refused, so the resulting trap reads as a memory limit.
    pub hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.cap {
            self.hit = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired as u64);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; no sane plugin needs more.
        Ok(desired <= 100_000)
    }
}

/// Keeps at most `max_lines` lines and `max_bytes` bytes; counts the rest.
pub(crate) struct LogSink {
    pub lines: Vec<LogLine>,
    bytes: usize,
    pub dropped: u64,
    max_lines: usize,
    max_bytes: usize,
}

impl LogSink {
    fn push(&mut self, level: types::LogLevel, mut message: String) {
        let room = self.max_bytes.saturating_sub(self.bytes);
        if self.lines.len() >= self.max_lines || room == 0 {
            self.dropped += 1;
            return;
        }
        if message.len() > room {
            let mut cut = room;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        self.bytes += message.len();
        let level = match level {
            types::LogLevel::Debug => "debug",
            types::LogLevel::Info => "info",
            types::LogLevel::Warn => "warn",
            types::LogLevel::Error => "error",
        };
        self.lines.push(LogLine { level: level.to_owned(), message });
    }
}

/// A wall clock stopped at the request's time.
struct FixedWallClock(Duration);

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that never moves: timing inside a plugin tells nothing.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}
