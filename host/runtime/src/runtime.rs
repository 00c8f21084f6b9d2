//! The engine: compiling and checking plugins, and running one call under limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, Trap};

use crate::batch::{CandidateBatch, RequestContext};
use crate::bindings::{Plugin, PluginPre, wire};
use crate::cache::DiskCache;
use crate::compile_process::CompileProcess;
use crate::config::{Limits, RuntimeConfig};
use crate::engine::engine_config;
use crate::error::{PluginError, StageFailure};
use crate::slots::{EpochTicker, SlotBusy, Slots};
use crate::state::CallState;
use crate::trace::{CallReport, StageOutput};
use crate::validate::validate_output;
use crate::wasi::{HostRefused, WouldBlock};
use wasmtime_wasi::I32Exit;

/// A plugin compiled, checked against the world and exercised on a sample
/// input: ready to be put in a pipeline. Cheap to share (`Arc`).
pub struct CompiledPlugin {
    name: String,
    hash: String,
    size: usize,
    from_cache: bool,
    compile_time: Duration,
    declared_columns: Vec<String>,
    language: Option<String>,
    pre: PluginPre<CallState>,
}

impl CompiledPlugin {
    /// A name for traces: the one given to [`Runtime::compile_named`], or the hash's first 12 hex digits.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of the uploaded bytes, hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Size of the uploaded file in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the compiled artifact came from the disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// How long compiling (or loading from the cache) took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// The attribute columns it reads with its default (empty) config; empty if
    /// it needs a config. A stage's own list comes from [`Runtime::stage`].
    pub fn declared_columns(&self) -> &[String] {
        &self.declared_columns
    }

    /// The language it declares (`js`; `None`: Rust or other native wasm),
    /// which picks its default limits ([`Limits::for_language`]).
    pub fn language(&self) -> Option<&str> {
        self.language.as_deref()
    }
}

impl std::fmt::Debug for CompiledPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPlugin").field("name", &self.name).field("hash", &self.hash).finish_non_exhaustive()
    }
}

/// The plugin host: one wasmtime engine (Cranelift, pooling allocator, fuel,
/// epoch interruption), the linker with WASI-with-nothing-granted and the log
/// import, the epoch ticker and the instance slots. Create one per process and
/// share it; every method takes `&self` and blocks (call it from a blocking pool).
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    config: RuntimeConfig,
    slots: Slots,
    cache: Option<DiskCache>,
    /// Where uploads are compiled; `None`: in this process, unbounded.
    compile_process: Option<CompileProcess>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, PluginError> {
        let engine_error = |e: wasmtime::Error| PluginError::Engine { message: format!("{e:#}") };
        let n = config.pool_instances.max(1);
        let engine = Engine::new(&engine_config(&config, true)).map_err(engine_error)?;
        let mut linker = Linker::new(&engine);
        crate::wasi::add_to_linker(&mut linker).map_err(engine_error)?;
        Plugin::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |state| state).map_err(engine_error)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(DiskCache::open(dir, &engine).map_err(|e| PluginError::Engine {
                message: format!("cannot use the cache directory {}: {e}", dir.display()),
            })?),
            None => None,
        };
        let tick = Duration::from_micros(config.epoch_tick_us.max(50));
        Ok(Runtime {
            _ticker: EpochTicker::start(engine.clone(), tick),
            slots: Slots::new(n as usize, config.tenant_instances as usize),
            engine,
            linker,
            config,
            cache,
            compile_process: None,
        })
    }

    /// Compiles uploads in child processes of `process`, bounded by the
    /// settings' `compile_timeout_ms` and `compile_memory_bytes` and
    /// cancellable ([`compile_cancellable`](Self::compile_cancellable)). A
    /// server that compiles what merchants upload should; local tools need not.
    pub fn with_compile_process(mut self, process: CompileProcess) -> Self {
        self.compile_process = Some(process);
        self
    }

    /// The settings it was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// [`compile_named`](Self::compile_named) with the hash as the name.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<CompiledPlugin>, PluginError> {
        self.compile_named(None, bytes)
    }

    /// [`compile_for`](Self::compile_for) with a sample request of tenant
    /// `sample`: for local tools (`edgerec plugin check`). A server must use
    /// `compile_for` with the uploading tenant's own context.
    pub fn compile_named(&self, name: Option<&str>, bytes: &[u8]) -> Result<Arc<CompiledPlugin>, PluginError> {
        self.compile_for(name, bytes, &RequestContext::new("sample"))
    }

    /// Compiles an uploaded plugin (or loads it from the disk cache), checks it
    /// implements the `plugin` world, asks which columns it reads and runs it
    /// once on a sample input under `sample_ctx`. Slow (Cranelift): keep it
    /// off the request path.
    ///
    /// `sample_ctx` should be the uploading tenant's own: its name, and the
    /// shape of its requests (a user, attributes, recent events, `k`), so that
    /// a plugin cannot behave for the check and misbehave for its tenant by
    /// looking at the name. (The check is not the only defence: every call
    /// runs under the same limits whatever the plugin does.)
    pub fn compile_for(
        &self,
        name: Option<&str>,
        bytes: &[u8],
        sample_ctx: &RequestContext,
    ) -> Result<Arc<CompiledPlugin>, PluginError> {
        self.compile_cancellable(name, bytes, sample_ctx, &AtomicBool::new(false))
    }

    /// [`compile_for`](Self::compile_for) that gives up as soon as `cancel`
    /// is set (the upload's request was abandoned): with a compile process,
    /// the compiler is killed at once; in this process, it is checked only
    /// between compiling and the sample run.
    pub fn compile_cancellable(
        &self,
        name: Option<&str>,
        bytes: &[u8],
        sample_ctx: &RequestContext,
        cancel: &AtomicBool,
    ) -> Result<Arc<CompiledPlugin>, PluginError> {
        check_header(bytes, self.config.max_upload_bytes)?;
        // Before the compiler (and before the cache, whose artifacts were
        // checked when written): a hostile shape costs one read of the file.
        crate::structure::check_structure(bytes, &self.config.structure_caps)?;
        let hash = hex(&Sha256::digest(bytes));
        let started = Instant::now();
        let cached = self.cache.as_ref().and_then(|cache| cache.load(&self.engine, &hash));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component = match &self.compile_process {
                    Some(process) => {
                        let artifact = process.compile(&self.config, bytes, cancel)?;
                        // SAFETY: the artifact is what a child of this server's
                        // own executable compiled from these bytes with this
                        // runtime's settings (`engine_config`); the engine
                        // re-checks the wasmtime version and every code-shaping
                        // setting in its header and refuses a mismatch.
                        unsafe { Component::deserialize(&self.engine, &artifact) }.map_err(|e| PluginError::Engine {
                            message: format!("cannot load the compiled plugin: {e:#}"),
                        })?
                    }
                    None => Component::new(&self.engine, bytes)
                        .map_err(|e| PluginError::Invalid { message: format!("{e:#}") })?,
                };
                if let Some(cache) = &self.cache {
                    // A failed cache write only costs a recompile next time.
                    let _ = cache.store(&hash, &component);
                }
                component
            }
        };
        let compile_time = started.elapsed();
        if cancel.load(Ordering::Relaxed) {
            return Err(PluginError::CompileBound { why: "the upload was abandoned".into() });
        }
        let wrong_world = |e: wasmtime::Error| PluginError::WrongWorld { message: format!("{e:#}") };
        let pre = self.linker.instantiate_pre(&component).map_err(wrong_world)?;
        let pre = PluginPre::new(pre).map_err(wrong_world)?;
        let mut plugin = CompiledPlugin {
            name: name.map_or_else(|| hash[..12].to_owned(), str::to_owned),
            hash,
            size: bytes.len(),
            from_cache,
            compile_time,
            declared_columns: Vec::new(),
            language: crate::declared_language(bytes),
            pre,
        };
        let limits = setup_limits(&Limits::for_language(plugin.language()));
        let (columns, _) = self.columns(&plugin, b"", &limits);
        match columns {
            Ok(Ok(columns)) => plugin.declared_columns = columns,
            Ok(Err(_needs_config)) => {}
            Err(failure) => return Err(PluginError::SampleFailed { failure }),
        }
        let (sample, _) = self.call(&plugin, sample_ctx, b"", &sample_batch(), &limits);
        match sample {
            Ok(_) | Err(StageFailure::PluginError { .. }) => Ok(Arc::new(plugin)),
            Err(failure) => Err(PluginError::SampleFailed { failure }),
        }
    }

    /// Asks the plugin which columns it reads with `config` (its `columns`
    /// export): `Ok(Ok(columns))`, `Ok(Err(message))` if it refuses the config.
    pub fn columns(
        &self,
        plugin: &CompiledPlugin,
        config: &[u8],
        limits: &Limits,
    ) -> (Result<Result<Vec<String>, String>, StageFailure>, CallReport) {
        let limits = setup_limits(limits);
        self.invoke(plugin, SETUP_TENANT, &limits, 0, |store, instance| {
            instance.edgerec_plugin_stage().call_columns(store, config)
        })
    }

    /// Runs the plugin once on the whole batch with `config`, passing the
    /// columns it declares for that config, and validates the output.
    pub fn call(
        &self,
        plugin: &CompiledPlugin,
        ctx: &RequestContext,
        config: &[u8],
        batch: &CandidateBatch,
        limits: &Limits,
    ) -> (Result<StageOutput, StageFailure>, CallReport) {
        let (columns, mut report) = self.columns(plugin, config, limits);
        let columns = match columns {
            Ok(Ok(columns)) => columns,
            Ok(Err(message)) => return (Err(StageFailure::PluginError { message }), report),
            Err(failure) => return (Err(failure), report),
        };
        if let Err(e) = batch.validate() {
            return (Err(StageFailure::Host { message: e.to_string() }), report);
        }
        let rows: Vec<u32> = (0..batch.len() as u32).collect();
        let wire_columns = columns
            .iter()
            .filter_map(|name| batch.column(name))
            .map(|c| crate::batch::EncodedColumn::encode(c).gather(&rows))
            .collect();
        let candidates =
            wire::Candidates { ids: batch.ids.clone(), scores: batch.scores.clone(), columns: wire_columns };
        let columns_fuel = report.fuel_used;
        let (result, run_report) = self.run_wire(plugin, &ctx.to_wire(), config, &candidates, limits);
        report = CallReport { fuel_used: columns_fuel + run_report.fuel_used, ..run_report };
        (result, report)
    }

    /// Runs the plugin's `run` on candidates already in the contract's form.
    pub(crate) fn run_wire(
        &self,
        plugin: &CompiledPlugin,
        ctx: &wire::RequestContext,
        config: &[u8],
        candidates: &wire::Candidates,
        limits: &Limits,
    ) -> (Result<StageOutput, StageFailure>, CallReport) {
        let n = candidates.ids.len();
        let (result, report) = self.invoke(plugin, &ctx.tenant, limits, ctx.now, |store, instance| {
            instance.edgerec_plugin_stage().call_run(store, ctx, config, candidates)
        });
        let result = match result {
            Ok(Ok(output)) => {
                validate_output(output, n, limits).map_err(|problem| StageFailure::InvalidOutput { problem })
            }
            Ok(Err(message)) => Err(StageFailure::PluginError { message }),
            Err(failure) => Err(failure),
        };
        (result, report)
    }

    /// Instantiates the plugin and drops the instance: the fixed cost of a call.
    pub fn instantiate_only(&self, plugin: &CompiledPlugin) -> Result<Duration, StageFailure> {
        let (result, report) = self.invoke(plugin, SETUP_TENANT, &Limits::default(), 0, |_, _| Ok(()));
        result.map(|()| Duration::from_secs_f64(report.instantiate_us / 1e6))
    }

    /// One call: a slot (within `tenant`'s cap), a fresh store with the
    /// limits, a fresh instance, `f`.
    fn invoke<R>(
        &self,
        plugin: &CompiledPlugin,
        tenant: &str,
        limits: &Limits,
        now: i64,
        f: impl FnOnce(&mut Store<CallState>, &Plugin) -> wasmtime::Result<R>,
    ) -> (Result<R, StageFailure>, CallReport) {
        let started = Instant::now();
        let mut report = CallReport::default();
        let wait = Duration::from_millis(self.config.pool_wait_ms);
        // Declared before the store so that it is released after the store
        // (and its pooled instance) is gone.
        let _slot = match self.slots.acquire(tenant, wait) {
            Ok(slot) => slot,
            Err(SlotBusy::Pool) => {
                return (Err(StageFailure::PoolBusy { waited_ms: self.config.pool_wait_ms }), report);
            }
            Err(SlotBusy::Tenant) => {
                let failure =
                    StageFailure::TenantBusy { cap: self.config.tenant_instances, waited_ms: self.config.pool_wait_ms };
                return (Err(failure), report);
            }
        };
        let limits = Limits { memory_bytes: limits.memory_bytes.min(self.config.max_memory_bytes), ..*limits };
        let mut store = Store::new(&self.engine, CallState::new(&limits, now));
        store.limiter(|state| &mut state.limiter);
        let host_error = |e: wasmtime::Error| StageFailure::Host { message: format!("{e:#}") };
        if self.config.fuel_metering
            && let Err(e) = store.set_fuel(limits.fuel)
        {
            return (Err(host_error(e)), report);
        }
        let tick = self.config.epoch_tick_us.max(50);
        // +1: the current tick may be about to end.
        store.set_epoch_deadline(limits.deadline_us.div_ceil(tick) + 1);
        store.epoch_deadline_trap();
        let instantiated = Instant::now();
        let result = plugin.pre.instantiate(&mut store).and_then(|instance| {
            report.instantiate_us = instantiated.elapsed().as_secs_f64() * 1e6;
            f(&mut store, &instance)
        });
        if self.config.fuel_metering {
            report.fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        }
        let state = store.data_mut();
        report.peak_memory_bytes = state.limiter.peak;
        report.logs = std::mem::take(&mut state.log.lines);
        report.logs_dropped = state.log.dropped;
        let result = result.map_err(|e| classify(e, &limits, state));
        drop(store);
        report.wall_us = started.elapsed().as_secs_f64() * 1e6;
        (result, report)
    }
}

/// The slot bucket of calls made while setting plugins and stages up (off
/// the request path, not on behalf of one request's tenant). A NUL cannot
/// appear in a tenant name the server accepts.
const SETUP_TENANT: &str = "\0setup";

/// Turns a wasmtime error into the stage's typed failure.
fn classify(error: wasmtime::Error, limits: &Limits, state: &CallState) -> StageFailure {
    if let Some(blocked) = error.downcast_ref::<WouldBlock>() {
        return StageFailure::Blocked { call: blocked.call.to_owned() };
    }
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return StageFailure::Exited { code: exit.0 };
    }
    if let Some(refused) = error.downcast_ref::<HostRefused>() {
        return StageFailure::Trap { message: refused.to_string() };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => StageFailure::DeadlineExceeded { deadline_us: limits.deadline_us },
        Some(Trap::OutOfFuel) => StageFailure::FuelExhausted { fuel: limits.fuel },
        Some(Trap::StackOverflow) => StageFailure::StackOverflow,
        _ if state.limiter.hit => StageFailure::MemoryLimit { limit_bytes: limits.memory_bytes },
        Some(trap) => {
            let stderr = String::from_utf8_lossy(&state.stderr.contents()).trim().to_owned();
            let message = if stderr.is_empty() { trap.to_string() } else { format!("{trap}; stderr: {stderr}") };
            StageFailure::Trap { message }
        }
        None => StageFailure::Host { message: format!("{error:#}") },
    }
}

/// Refuses oversized files, non-wasm bytes and core modules before compiling.
fn check_header(bytes: &[u8], max_upload_bytes: usize) -> Result<(), PluginError> {
    if bytes.len() > max_upload_bytes {
        return Err(PluginError::TooLarge { size: bytes.len(), max: max_upload_bytes });
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PluginError::NotWasm);
    }
    // Version 1, layer 0: a core module. Components are layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(PluginError::NotAComponent);
    }
    Ok(())
}

/// Limits for calls made while setting a plugin or stage up (off the request
/// path): the stage's, with a deadline of at least a second so that a loaded
/// machine does not refuse a good plugin; fuel still stops a runaway.
fn setup_limits(limits: &Limits) -> Limits {
    Limits { deadline_us: limits.deadline_us.max(1_000_000), ..*limits }
}

/// Three candidates, no attributes: the input every plugin must survive before
/// it can be activated.
fn sample_batch() -> CandidateBatch {
    CandidateBatch { ids: vec![1, 2, 3], scores: vec![0.3, 0.2, 0.1], columns: Vec::new() }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
