//! Cranelift in a child process. An uploaded component is compiled by a
//! fresh process of an executable that calls [`child_main`] (the `edgerec`
//! binary: `edgerec __compile-plugin`), so that what one upload costs is
//! bounded by the kernel, not by hope:
//!
//! - memory: the child's data segment is capped (`RLIMIT_DATA`, which counts
//!   what the allocator maps writable, not the address space reserved);
//!   past it, an allocation fails and the child dies alone;
//! - time: the child's CPU time is capped (`RLIMIT_CPU`), and the parent
//!   kills it at a wall-clock deadline;
//! - cancellation: the parent kills it as soon as the caller's flag is set
//!   (the upload's request was abandoned).
//!
//! The protocol is one pipe each way: the parent writes the runtime's
//! settings as one JSON line, then the component's bytes, and closes stdin;
//! the child answers the compiled artifact on stdout (exit 0) or the
//! compiler's message on stderr (exit 2). The parent loads the artifact into
//! its own engine, which checks that the wasmtime version and every setting
//! that shapes code match.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::RuntimeConfig;
use crate::error::PluginError;

/// The argument that makes the executable a compile child (see [`child_main`]).
pub const COMPILE_SUBCOMMAND: &str = "__compile-plugin";

/// How often the parent looks at the child, the deadline and the cancel flag.
const POLL: Duration = Duration::from_millis(10);
/// The most of the child's stderr kept for the error message.
const MAX_MESSAGE_BYTES: u64 = 4 << 10;

/// The executable that compiles in a child process: it must call
/// [`child_main`] when its first argument is [`COMPILE_SUBCOMMAND`].
#[derive(Clone, Debug)]
pub struct CompileProcess {
    program: PathBuf,
}

impl CompileProcess {
    /// Compiles with `program` (an executable that calls [`child_main`]).
    pub fn new(program: &Path) -> Self {
        CompileProcess { program: program.to_owned() }
    }

    /// Compiles with the running executable (the server binary).
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(CompileProcess { program: std::env::current_exe()? })
    }

    /// Compiles `wasm` in a child under `config`'s bounds; the artifact's
    /// bytes. Fails with [`PluginError::CompileBound`] when the child passes
    /// a bound or `cancel` is set (the child is killed at once).
    pub(crate) fn compile(
        &self,
        config: &RuntimeConfig,
        wasm: &[u8],
        cancel: &AtomicBool,
    ) -> Result<Vec<u8>, PluginError> {
        let host_error = |what: &str, e: std::io::Error| PluginError::Engine {
            message: format!("{what} the compile process {}: {e}", self.program.display()),
        };
        let mut child = Command::new(&self.program)
            .arg(COMPILE_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| host_error("cannot start", e))?;
        // Readers first: the child may fill a pipe before it has read all of stdin.
        let artifact_cap = (config.max_upload_bytes as u64).saturating_mul(64).max(64 << 20);
        let stdout = child.stdout.take().map(|out| std::thread::spawn(move || read_capped(out, artifact_cap)));
        let stderr = child.stderr.take().map(|err| std::thread::spawn(move || read_capped(err, MAX_MESSAGE_BYTES)));
        let input = child.stdin.take().map(|mut stdin| {
            let mut head = serde_json::to_vec(config).unwrap_or_default();
            head.push(b'\n');
            let wasm = wasm.to_vec();
            // A child that dies early closes the pipe: its exit says why, not this write.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&head).and_then(|()| stdin.write_all(&wasm));
            })
        });
        let deadline = Instant::now() + Duration::from_millis(config.compile_timeout_ms);
        let stopped = loop {
            if let Some(status) = child.try_wait().map_err(|e| host_error("cannot wait for", e))? {
                break Ok(status);
            }
            let why = if cancel.load(Ordering::Relaxed) {
                Some("the upload was abandoned".to_owned())
            } else if Instant::now() >= deadline {
                Some(format!("compiling took longer than its {} ms bound", config.compile_timeout_ms))
            } else {
                None
            };
            if let Some(why) = why {
                let _ = child.kill();
                let _ = child.wait();
                break Err(why);
            }
            std::thread::sleep(POLL);
        };
        let _ = input.map(std::thread::JoinHandle::join);
        let artifact = stdout.and_then(|reader| reader.join().ok()).unwrap_or_default();
        let message = stderr.and_then(|reader| reader.join().ok()).unwrap_or_default();
        let message = String::from_utf8_lossy(&message).trim().to_owned();
        let status = stopped.map_err(|why| PluginError::CompileBound { why })?;
        if status.success() {
            return Ok(artifact);
        }
        if status.code() == Some(CHILD_REFUSED) {
            return Err(PluginError::Invalid { message });
        }
        Err(PluginError::CompileBound { why: death(status, config, &message) })
    }
}

/// The child's exit status when the compiler refused the component.
const CHILD_REFUSED: i32 = 2;
/// The child's exit status when its input was not what the parent sends.
const CHILD_MISUSED: i32 = 3;

/// Why a child that did not answer died, in the operator's terms.
fn death(status: std::process::ExitStatus, config: &RuntimeConfig, message: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    const SIGABRT: i32 = 6;
    const SIGKILL: i32 = 9;
    const SIGXCPU: i32 = 24;
    match status.signal() {
        // Rust aborts when an allocation fails: the data cap was reached.
        Some(SIGABRT) => {
            format!("compiling needed more than its {} bytes of memory", config.compile_memory_bytes)
        }
        Some(SIGXCPU) | Some(SIGKILL) => {
            format!("compiling used more than its {} ms of CPU time", config.compile_timeout_ms)
        }
        Some(signal) => format!("the compile process died of signal {signal}: {message}"),
        None => format!("the compile process failed ({status}): {message}"),
    }
}

fn read_capped(stream: impl Read, cap: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut stream = stream.take(cap);
    let _ = stream.read_to_end(&mut bytes);
    bytes
}

/// The child's side: call it from `main` when the first argument is
/// [`COMPILE_SUBCOMMAND`]. Caps its own memory and CPU time from the
/// settings it reads, compiles, and answers as the module doc says.
pub fn child_main() -> ExitCode {
    match child() {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(CHILD_MISUSED as u8),
        },
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code as u8)
        }
    }
}

fn child() -> Result<Vec<u8>, (i32, String)> {
    let misuse = |what: String| (CHILD_MISUSED, format!("{COMPILE_SUBCOMMAND}: {what} (it is run by the server)"));
    let mut input = Vec::new();
    std::io::stdin().lock().read_to_end(&mut input).map_err(|e| misuse(format!("cannot read stdin: {e}")))?;
    let split = input.iter().position(|&b| b == b'\n').ok_or_else(|| misuse("no settings line".into()))?;
    let config: RuntimeConfig =
        serde_json::from_slice(&input[..split]).map_err(|e| misuse(format!("unreadable settings: {e}")))?;
    let wasm = &input[split + 1..];
    // Bound before the compiler allocates anything; what was read stays inside it.
    let cpu_seconds = config.compile_timeout_ms.div_ceil(1000).max(1);
    rlimit::setrlimit(rlimit::Resource::CPU, cpu_seconds, cpu_seconds + 1)
        .and_then(|()| {
            rlimit::setrlimit(rlimit::Resource::DATA, config.compile_memory_bytes, config.compile_memory_bytes)
        })
        .map_err(|e| misuse(format!("cannot bound itself: {e}")))?;
    let mut settings = crate::engine::engine_config(&config, false);
    // One thread: a compile takes one core (uploads compiling at once are
    // bounded by the server), and a thread that cannot start under the memory
    // cap would end the child with a panic instead of the allocator's abort.
    settings.parallel_compilation(false);
    let engine = wasmtime::Engine::new(&settings).map_err(|e| misuse(format!("cannot build the engine: {e:#}")))?;
    engine.precompile_component(wasm).map_err(|e| (CHILD_REFUSED, format!("{e:#}")))
}
