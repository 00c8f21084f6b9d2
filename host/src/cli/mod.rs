//! Subcommands of the `edgerec` binary, one module per area.

pub mod engine;
pub mod import;
pub mod model_push;
pub mod plugin;
pub mod plugin_build;
pub mod plugin_js_bench;
pub mod plugin_new;
pub mod plugin_push;
pub mod serve;
pub mod train;
