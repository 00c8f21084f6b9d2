//! # edgerec-runtime: the host side of edgerec plugins
//!
//! Runs partners' re-ranking and rule plugins — WebAssembly components of the
//! `edgerec:plugin@0.1.0` world (`sdk/wit/`) — under wasmtime 48 with a fresh
//! instance per call and hard limits on every call.
//!
//! ```no_run
//! use edgerec_runtime::{first_party, CandidateBatch, Limits, OnError, Pipeline, RequestContext, Runtime, RuntimeConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeConfig { cache_dir: Some("plugin-cache".into()), ..Default::default() })?;
//! // Off the request path: compile, check the world, exercise on a sample.
//! let in_stock = runtime.compile_named(Some("in-stock"), first_party::IN_STOCK)?;
//! let stage = runtime.stage(in_stock, br#"{"attribute": "stock", "min": 1}"#.to_vec(), OnError::Skip, Limits::default())?;
//! let pipeline = Pipeline { stages: vec![stage] };
//! // On the request path (from a blocking pool): fetch the columns it needs, run.
//! assert_eq!(pipeline.required_columns(), vec!["stock".to_string()]);
//! let batch: CandidateBatch = serde_json::from_str(
//!     r#"{"ids": [1, 2], "scores": [0.9, 0.8], "columns": [{"name": "stock", "type": "i64", "values": [0, 4]}]}"#,
//! )?;
//! let outcome = runtime.run_pipeline(&pipeline, &RequestContext::new("shop"), &batch)?;
//! assert_eq!(outcome.candidates[0].id, 2);
//! # Ok(()) }
//! ```
//!
//! Design: guests are plain `cargo build --target wasm32-wasip2` components;
//! Rust's std makes them import WASI p2, which is linked with nothing granted
//! (no files, env, args, network; clocks frozen at the request's time;
//! randomness seeded). The only real import is the bounded `log`.

mod batch;
mod bindings;
mod cache;
mod compile_process;
mod config;
mod engine;
mod error;
pub mod first_party;
mod name;
mod pipeline;
mod runtime;
mod slots;
mod state;
mod structure;
mod trace;
mod validate;
mod wasi;

pub use batch::{CandidateBatch, Column, ColumnValues, Event, GatheredCandidates, RequestContext};
pub use compile_process::{COMPILE_SUBCOMMAND, CompileProcess, child_main};
pub use config::{LimitMaxima, Limits, LimitsError, LimitsSpec, RuntimeConfig};
pub use error::{CandidatesError, OutputProblem, PluginError, StageFailure};
pub use name::{
    LANGUAGE_SECTION, NAME_SECTION, declared_language, declared_name, with_declared_language, with_declared_name,
};
pub use pipeline::{OnError, Pipeline, PipelineError, Stage};
pub use runtime::{CompiledPlugin, Runtime};
pub use structure::{Structure, StructureCaps, check_structure};
pub use trace::{CallReport, FinalCandidate, LogLine, PipelineOutcome, StageOutput, StageStatus, StageTrace};

/// The wasmtime version this runtime embeds (part of the compiled-artifact cache key).
pub const WASMTIME_VERSION: &str = "48";
