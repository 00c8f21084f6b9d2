//! The subcommands of the `edgerec` binary, one module per subcommand; a
//! group of subcommands (`model`, `plugin`, `bench`, `demo`) is a folder
//! with one module per member. What several subcommands share lives beside
//! this folder (`engine_args.rs`, `training.rs`).

pub mod bench;
pub mod demo;
pub mod encode;
pub mod eval;
pub mod finetune;
pub mod model;
pub mod plugin;
pub mod recommend;
pub mod serve;
pub mod train;
