//! Subcommands of the `edgerec` binary, one module per area.

pub mod engine;
pub mod import;
pub mod plugin;
pub mod serve;
pub mod train;
