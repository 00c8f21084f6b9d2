//! The HTTP layer: the router and its OpenAPI document ([`routes`]), the
//! extractors (credentials in [`auth`], bodies, paths and queries in
//! [`extract`]), the error answer ([`error`]), the request bounds and
//! checks, the handlers (storefront: [`recommend`], [`events`],
//! [`catalog`]; operator: [`operator`], [`models`]), the operator console
//! ([`console`], HTML pages over the same service calls) and the connection
//! deadlines (`connection`). Handlers extract, check, call the service
//! and convert its answer; the work is in [`crate::service`].

pub mod auth;
pub mod bounds;
pub mod catalog;
mod checks;
pub(crate) mod connection;
pub mod console;
pub mod error;
pub mod events;
pub mod extract;
pub mod models;
pub mod operator;
pub mod recommend;
pub mod records;
pub mod routes;
