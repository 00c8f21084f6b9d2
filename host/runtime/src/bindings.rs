//! The host side of the WIT world in `sdk/wit/` (the same file the SDK binds):
//! a change to the contract breaks both builds, never silently at run time.

wasmtime::component::bindgen!({
    path: "../../sdk/wit",
    world: "plugin",
});

pub use edgerec::plugin::types as wire;
