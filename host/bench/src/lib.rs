//! # edgerec-bench: every benchmark of edgerec, in one crate
//!
//! Each module measures one part and prints its figures beside a roof or a
//! baseline measured in the same run; nothing here asserts a speed.
//!
//! - [`kernels`]: the HSTU encoder and top-k against the one-thread sgemm
//!   roof (`edgerec bench kernels`, examples `bench_encoder`, `profile_encode`).
//! - [`plugins`]: the plugin sandbox against the same rules as native Rust
//!   (`edgerec bench plugins`, example `bench-plugins`).
//! - [`plugins_js`]: a JavaScript plugin against its Rust twin
//!   (`edgerec bench plugins --js FILE`).
//! - [`http`]: an open-loop load generator against a running server
//!   (`edgerec bench http`; `http.sh` and `hosts.sh` drive it).
//!
//! Kept out of the libraries they measure, so that the runtime does not
//! depend on the plugin crates it runs as guests and the server does not
//! carry an HTTP load client.

pub mod http;
pub mod kernels;
pub mod plugins;
pub mod plugins_js;

pub use plugins::{BenchError, BenchOptions, BenchReport, Spread, run_plugin_bench};
