//! The service layer: what the server does, whoever asks. The tenant
//! registry and loading ([`app`], [`tenants`]), a recommend
//! ([`recommend`]: history and batched encode in [`encode`] through the
//! [`scheduler`], then the plugin [`pipeline`] over [`catalog`] attributes),
//! ingest ([`ingest`]: the store, or the [`outbox`] while a shared store is
//! away), operator actions (pipelines, plugins, model [`bundles`], keys),
//! quotas, blocking jobs, following other hosts ([`follow`]), the
//! first-party plugins every tenant may use ([`first_party`]), the demo
//! tenant and the operator console's sessions ([`console`]). It speaks in
//! its own [`Error`] and knows no HTTP or OpenAPI types; it depends on the
//! store and the leaves only.

pub mod access;
pub mod app;
pub mod bundles;
pub mod catalog;
pub mod console;
pub mod demo;
pub mod encode;
mod error;
pub mod first_party;
pub mod follow;
pub mod ingest;
pub mod items;
pub mod jobs;
pub mod outbox;
pub mod pipeline;
pub mod plugins;
pub mod quota;
pub mod recommend;
pub mod scheduler;
pub mod tenants;

pub use error::{Error, Result};
