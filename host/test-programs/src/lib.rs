//! Deliberately misbehaving plugins for edgerec's tests, kept out of the
//! production runtime: `edgerec-runtime` embeds the first-party plugins only,
//! and test code that needs a plugin which loops, floods, panics or escapes
//! its sandbox depends on this crate instead.
//!
//! - [`HOSTILE`]: `guests/hostile`, a Rust plugin whose config picks its
//!   misbehaviour (`{"mode": …}`, see its source).
//! - [`binaries`]: hand-encoded components that strain a compiler (deep
//!   nesting, a million functions) while staying small on disk.
//! - `js/hostile.ts`: its JavaScript counterpart, built with jco by
//!   `host/cli/tests/plugin_js.rs` (it needs the npm tools, so it is not built here).

pub mod binaries;

/// The hostile Rust plugin as a wasm32-wasip2 component; never install it.
pub const HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile.wasm"));
