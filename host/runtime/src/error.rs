//! Typed errors: why a plugin was refused, why a stage failed, what is
//! wrong with candidates or an output. (Why a whole pipeline failed carries
//! its trace: [`crate::pipeline::PipelineError`].)

use serde::{Deserialize, Serialize};

/// Why a plugin upload (or a stage config) was refused. Raised off the request path.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PluginError {
    /// The file is larger than the upload cap.
    #[error("the plugin is {size} bytes, over the {max}-byte upload cap: build it with --release and strip it")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Not WebAssembly at all.
    #[error(
        "not a WebAssembly file (no `\\0asm` header): build the plugin with `cargo build --release --target wasm32-wasip2`"
    )]
    NotWasm,
    /// A core module, not a component.
    #[error("a core WebAssembly module, not a component: build for the `wasm32-wasip2` target, which emits components")]
    NotAComponent,
    /// A component that does not compile (malformed, or uses unsupported features).
    #[error("the component does not compile: {message}")]
    Invalid {
        /// wasmtime's reason.
        message: String,
    },
    /// A component whose structure passes a cap ([`crate::StructureCaps`]),
    /// refused before it is compiled.
    #[error(
        "the component has {count} {what}, over the cap of {max}: plugins built with edgerec-sdk stay far below it; strip what the plugin does not need, or split it"
    )]
    TooComplex {
        /// What was counted.
        what: String,
        /// How many it holds (counting stopped at the first over the cap).
        count: u32,
        /// The cap.
        max: u32,
    },
    /// A component, but not of the `edgerec:plugin/plugin` world.
    #[error(
        "the component does not implement the edgerec:plugin@0.1.0 `plugin` world ({message}): build it with edgerec-sdk"
    )]
    WrongWorld {
        /// What did not match.
        message: String,
    },
    /// The plugin misbehaved on the sample input it must pass before activation.
    #[error("the plugin failed on the sample input: {failure}")]
    SampleFailed {
        /// How.
        failure: StageFailure,
    },
    /// The plugin refused this stage config (its `columns` export returned an error).
    #[error("the plugin refused the stage config: {message}")]
    InvalidConfig {
        /// The plugin's message.
        message: String,
    },
    /// Compiling passed a bound (time or memory) or was cancelled; the
    /// compiler was stopped.
    #[error("the component was not compiled: {why}; a plugin built with edgerec-sdk compiles well inside the bounds")]
    CompileBound {
        /// Which bound, or the cancellation.
        why: String,
    },
    /// The engine could not be set up (a runtime configuration problem).
    #[error("the plugin runtime could not start: {message}")]
    Engine {
        /// What went wrong.
        message: String,
    },
}

/// A problem with a stage's output: every one fails the stage.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum OutputProblem {
    /// More entries than candidates (or than the output cap).
    #[error("the order has {len} entries for {max} candidates")]
    TooLong {
        /// Entries returned.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// An index past the input.
    #[error("index {index} is out of range for {len} candidates")]
    IndexOutOfRange {
        /// The index.
        index: u32,
        /// Input length.
        len: usize,
    },
    /// The same index twice.
    #[error("index {index} appears twice")]
    DuplicateIndex {
        /// The index.
        index: u32,
    },
    /// A NaN or infinite score.
    #[error("the score at position {position} is not finite")]
    NonFiniteScore {
        /// Its position in the order.
        position: usize,
    },
    /// Scores or reasons not aligned with the order.
    #[error("{what} has {len} entries for an order of {expected}")]
    Misaligned {
        /// "scores" or "reasons".
        what: String,
        /// Its length.
        len: usize,
        /// The order's length.
        expected: usize,
    },
    /// Reason codes over the output size cap.
    #[error("the reasons take {bytes} bytes, over the {max}-byte cap")]
    ReasonsTooLarge {
        /// Their size.
        bytes: usize,
        /// The cap.
        max: usize,
    },
}

/// Why one call of a stage failed. Each is the stage's error: its `on_error`
/// policy then skips the stage or fails the request.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StageFailure {
    /// Ran past its wall-clock deadline (epoch interruption).
    #[error("ran past its {deadline_us} µs deadline")]
    DeadlineExceeded {
        /// The deadline.
        deadline_us: u64,
    },
    /// Used up its instruction budget.
    #[error("used up its fuel ({fuel} units)")]
    FuelExhausted {
        /// The budget.
        fuel: u64,
    },
    /// Tried to grow its linear memory past the cap.
    #[error("tried to grow its memory past {limit_bytes} bytes")]
    MemoryLimit {
        /// The cap.
        limit_bytes: u64,
    },
    /// Overflowed its stack (deep recursion).
    #[error("overflowed its stack")]
    StackOverflow,
    /// Trapped: a panic, `unreachable`, an out-of-bounds access...
    #[error("trapped: {message}")]
    Trap {
        /// wasmtime's description.
        message: String,
    },
    /// The plugin returned an error.
    #[error("returned an error: {message}")]
    PluginError {
        /// The plugin's message.
        message: String,
    },
    /// Returned an output that breaks the contract.
    #[error("returned an invalid output: {problem}")]
    InvalidOutput {
        /// What is wrong.
        problem: OutputProblem,
    },
    /// Tried to wait inside a host call (sleep, poll, a blocking read...):
    /// plugins may not block, so the call was stopped at once.
    #[error("tried to wait in `{call}`: plugins may not block (no sleep, poll or blocking reads)")]
    Blocked {
        /// The WASI function it called.
        call: String,
    },
    /// Called `exit` (WASI `wasi:cli/exit`, Rust's `std::process::exit`): only
    /// the call ends, not the host.
    #[error("called exit (status {code}): a plugin returns its answer instead")]
    Exited {
        /// The status it gave (0 success, 1 failure).
        code: i32,
    },
    /// No instance slot freed within the bounded wait.
    #[error("no instance slot freed within {waited_ms} ms: the host is overloaded")]
    PoolBusy {
        /// How long it waited.
        waited_ms: u64,
    },
    /// The tenant already had its cap of instances running for the whole
    /// bounded wait (a fairness cap: other tenants' slots stay free).
    #[error("the tenant already runs its cap of {cap} plugin instances (waited {waited_ms} ms)")]
    TenantBusy {
        /// The per-tenant cap.
        cap: u32,
        /// How long it waited.
        waited_ms: u64,
    },
    /// Instantiation or the host side failed.
    #[error("the host could not run it: {message}")]
    Host {
        /// What went wrong.
        message: String,
    },
}

/// The candidates handed to a pipeline are malformed.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum CandidatesError {
    /// A list whose length differs from the number of candidates.
    #[error("{what} has {len} entries for {expected} candidates")]
    Length {
        /// Which list.
        what: String,
        /// Its length.
        len: usize,
        /// The number of candidates.
        expected: usize,
    },
    /// Two columns of one name.
    #[error("column `{0}` appears twice")]
    DuplicateColumn(String),
    /// Too many candidates to index with u32.
    #[error("{0} candidates is too many")]
    TooMany(usize),
}
