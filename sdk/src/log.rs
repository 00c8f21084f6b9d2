//! Bounded logging through the host. The host keeps a limited number of lines
//! and bytes per call (see the stage's limits) and counts the rest as dropped.
//! Outside WebAssembly (unit tests) lines go to stderr.

use crate::bindings::edgerec::plugin::types::LogLevel;

fn emit(level: LogLevel, message: &str) {
    #[cfg(target_family = "wasm")]
    crate::bindings::edgerec::plugin::host::log(level, message);
    #[cfg(not(target_family = "wasm"))]
    eprintln!("[{level:?}] {message}");
}

/// Logs a debug line.
pub fn debug(message: &str) {
    emit(LogLevel::Debug, message);
}

/// Logs an info line.
pub fn info(message: &str) {
    emit(LogLevel::Info, message);
}

/// Logs a warning.
pub fn warn(message: &str) {
    emit(LogLevel::Warn, message);
}

/// Logs an error line (the stage's result is what fails a stage, not this).
pub fn error(message: &str) {
    emit(LogLevel::Error, message);
}
