//! The [`Plugin`] trait and the shim that adapts it to the generated bindings.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::bindings::edgerec::plugin::types as wit;
use crate::bindings::exports::edgerec::plugin::stage::Guest;
use crate::{Candidates, Context, Output};

/// A pipeline stage. Implement it on a unit struct and export it with
/// [`export_plugin!`](crate::export_plugin).
pub trait Plugin {
    /// The stage's config, deserialised from the JSON the operator attached to
    /// the stage. An empty config means `Default::default()`.
    type Config: DeserializeOwned + Default;

    /// The catalog attribute columns this plugin reads with this config. The
    /// host passes only these (the ones the catalog has), in this order. Called
    /// once when an operator sets up a stage: an error refuses the config (check
    /// it here, not on the request path).
    fn columns(config: &Self::Config) -> Result<Vec<String>, Error>;

    /// Filters, re-orders or re-scores the candidates.
    fn run(ctx: &Context, config: &Self::Config, candidates: &Candidates) -> Result<Output, Error>;
}

/// A plugin's error: a message for the operator (shown in the stage's trace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error(message.to_owned())
    }
}

/// Parses a stage config: empty bytes give the default, anything else must be
/// JSON for `C`; the error says what is wrong.
pub fn parse_config<C: DeserializeOwned + Default>(bytes: &[u8]) -> Result<C, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(C::default());
    }
    serde_json::from_slice(bytes).map_err(|e| Error(format!("invalid stage config: {e}")))
}

/// Adapts a [`Plugin`] to the generated `Guest` trait. Not public API.
#[doc(hidden)]
pub struct Shim<P>(PhantomData<P>);

impl<P: Plugin> Guest for Shim<P> {
    fn columns(config: Vec<u8>) -> Result<Vec<String>, String> {
        let config: P::Config = parse_config(&config).map_err(|e| e.0)?;
        P::columns(&config).map_err(|e| e.0)
    }

    fn run(ctx: wit::RequestContext, config: Vec<u8>, candidates: wit::Candidates) -> Result<wit::Output, String> {
        let config: P::Config = parse_config(&config).map_err(|e| e.0)?;
        let ctx = Context::from_wit(ctx);
        let candidates = Candidates::from_wit(candidates).map_err(|e| e.0)?;
        let output = P::run(&ctx, &config, &candidates).map_err(|e| e.0)?;
        Ok(output.into_wit())
    }
}
