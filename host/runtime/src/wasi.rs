//! WASI p2 as plugins see it: everything Rust's std (or a JS engine) imports
//! is linked, so ordinary guests instantiate, but nothing a guest calls can
//! wait or make the host do unbounded work.
//!
//! Why: the epoch deadline and fuel only act while wasm code runs. A guest
//! blocked inside a host call (a `sleep` is a monotonic-clock pollable plus
//! `poll`/`block`) is invisible to both: it holds its instance slot and its
//! thread for as long as it likes. So the interfaces that can wait are
//! replaced here with stand-ins that never do:
//!
//! - `wasi:io/poll` — `poll` and `pollable.block` answer at once with what is
//!   ready now, and trap ([`WouldBlock`]) when nothing is;
//! - `wasi:clocks/monotonic-clock` — frozen at 0 (as before); a timer is ready
//!   only if it is already due (duration 0), so a sleep traps instead of waiting;
//! - `wasi:io/streams` — the `blocking-*` methods do their non-blocking
//!   counterpart and trap if that would have had to wait; `write-zeroes`
//!   beyond what `check-write` allows traps instead of allocating;
//! - `wasi:random/*` — deterministic, with a cap on one request's bytes
//!   (wasmtime-wasi allocates whatever length the guest asks for).
//!
//! The rest stays wasmtime-wasi's, with nothing granted (see `state.rs`):
//! stdin is closed, stdout a sink, no preopens, sockets and name lookup
//! denied, `exit` an error that unwinds the guest only.

use std::fmt;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::bindings::{clocks::monotonic_clock, random};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Pollable, StreamError, StreamResult};

use crate::state::CallState;

/// The largest `get-random-bytes` request served (a hash seed needs 16).
pub(crate) const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// A guest tried to wait inside a host call: the call is stopped at once
/// (the trap unwinds the guest), as the deadline would stop a busy loop.
#[derive(Debug)]
pub(crate) struct WouldBlock {
    /// The WASI function it called.
    pub call: &'static str,
}

impl fmt::Display for WouldBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the plugin tried to wait in `{}`: plugins may not block", self.call)
    }
}

impl std::error::Error for WouldBlock {}

/// A guest asked the host for more than it will do in one call.
#[derive(Debug)]
pub(crate) struct HostRefused {
    /// What was asked.
    pub what: String,
}

impl fmt::Display for HostRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for HostRefused {}

fn would_block(call: &'static str) -> wasmtime::Error {
    wasmtime::Error::new(WouldBlock { call })
}

fn refused(what: String) -> wasmtime::Error {
    wasmtime::Error::new(HostRefused { what })
}

/// Links WASI p2 into `linker` with the non-blocking stand-ins above.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // The stand-ins replace wasmtime-wasi's definitions of the same names.
    linker.allow_shadowing(true);
    let view = no_wait_view;
    poll::add_to_linker::<CallState, NoWait>(linker, view)?;
    streams::add_to_linker::<CallState, NoWait>(linker, view)?;
    monotonic_clock::add_to_linker::<CallState, NoWait>(linker, view)?;
    random::random::add_to_linker::<CallState, NoWait>(linker, view)?;
    random::insecure::add_to_linker::<CallState, NoWait>(linker, view)?;
    random::insecure_seed::add_to_linker::<CallState, NoWait>(linker, view)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn no_wait_view(state: &mut CallState) -> NoWaitView<'_> {
    NoWaitView { table: &mut state.table, rng: &mut state.rng }
}

/// The [`HasData`] marker of the stand-ins.
pub(crate) struct NoWait;

impl HasData for NoWait {
    type Data<'a> = NoWaitView<'a>;
}

/// What the stand-ins reach in a call's state: the resource table and the
/// deterministic random generator.
pub(crate) struct NoWaitView<'a> {
    pub table: &'a mut ResourceTable,
    pub rng: &'a mut u64,
}

impl NoWaitView<'_> {
    /// Whether a pollable is ready now, without waiting.
    fn is_ready(&mut self, rep: u32) -> wasmtime::Result<bool> {
        // wasmtime-wasi's `ready` polls once, inside its tokio runtime.
        poll::HostPollable::ready(&mut *self.table, Resource::new_borrow(rep))
    }

    /// splitmix64: deterministic, so a plugin's answer depends only on its input.
    fn next_u64(&mut self) -> u64 {
        *self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM_BYTES {
            return Err(refused(format!(
                "the plugin asked for {len} random bytes in one call (at most {MAX_RANDOM_BYTES})"
            )));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        while bytes.len() < len as usize {
            let word = self.next_u64().to_le_bytes();
            let take = (len as usize - bytes.len()).min(8);
            bytes.extend_from_slice(&word[..take]);
        }
        Ok(bytes)
    }
}

impl poll::Host for NoWaitView<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        if pollables.is_empty() {
            return Err(refused("`poll` was given an empty list".into()));
        }
        let mut ready = Vec::new();
        for (index, pollable) in pollables.iter().enumerate() {
            if self.is_ready(pollable.rep())? {
                ready.push(index as u32);
            }
        }
        if ready.is_empty() {
            return Err(would_block("wasi:io/poll.poll"));
        }
        Ok(ready)
    }
}

impl poll::HostPollable for NoWaitView<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        self.is_ready(pollable.rep())
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        if self.is_ready(pollable.rep())? { Ok(()) } else { Err(would_block("wasi:io/poll.pollable.block")) }
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(&mut *self.table, pollable)
    }
}

impl streams::Host for NoWaitView<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(&mut *self.table, err)
    }
}

impl streams::HostOutputStream for NoWaitView<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        streams::HostOutputStream::drop(&mut *self.table, stream)
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(&mut *self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(&mut *self.table, stream, bytes)
    }

    fn blocking_write_and_flush(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        let rep = stream.rep();
        let permit = streams::HostOutputStream::check_write(&mut *self.table, Resource::new_borrow(rep))?;
        if (bytes.len() as u64) > permit {
            return Err(StreamError::Trap(would_block("wasi:io/streams.output-stream.blocking-write-and-flush")));
        }
        streams::HostOutputStream::write(&mut *self.table, Resource::new_borrow(rep), bytes)?;
        streams::HostOutputStream::flush(&mut *self.table, stream)
    }

    fn blocking_write_zeroes_and_flush(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        let rep = stream.rep();
        streams::HostOutputStream::write_zeroes(self, Resource::new_borrow(rep), len)?;
        streams::HostOutputStream::flush(&mut *self.table, stream)
    }

    fn subscribe(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(&mut *self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        // wasmtime-wasi builds the zeroes in one buffer before writing: a
        // length past what check-write allows would be an allocation of the
        // guest's choosing, on the host.
        let rep = stream.rep();
        let permit = streams::HostOutputStream::check_write(&mut *self.table, Resource::new_borrow(rep))?;
        if len > permit {
            return Err(StreamError::Trap(refused(format!(
                "the plugin wrote {len} zero bytes where check-write allowed {permit}"
            ))));
        }
        streams::HostOutputStream::write_zeroes(&mut *self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(&mut *self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        // Every output here (a sink, a bounded memory pipe) is flushed on write.
        streams::HostOutputStream::flush(&mut *self.table, stream)
    }

    fn splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        streams::HostOutputStream::splice(&mut *self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let moved = streams::HostOutputStream::splice(&mut *self.table, dst, src, len)?;
        if moved == 0 && len > 0 {
            return Err(StreamError::Trap(would_block("wasi:io/streams.output-stream.blocking-splice")));
        }
        Ok(moved)
    }
}

impl streams::HostInputStream for NoWaitView<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        streams::HostInputStream::drop(&mut *self.table, stream)
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(&mut *self.table, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        // A closed stream (stdin here) answers `closed` at once; an open one
        // with nothing to read would make the guest wait.
        let bytes = streams::HostInputStream::read(&mut *self.table, stream, len)?;
        if bytes.is_empty() && len > 0 {
            return Err(StreamError::Trap(would_block("wasi:io/streams.input-stream.blocking-read")));
        }
        Ok(bytes)
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(&mut *self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        let skipped = streams::HostInputStream::skip(&mut *self.table, stream, len)?;
        if skipped == 0 && len > 0 {
            return Err(StreamError::Trap(would_block("wasi:io/streams.input-stream.blocking-skip")));
        }
        Ok(skipped)
    }

    fn subscribe(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(&mut *self.table, stream)
    }
}

/// A timer of the frozen clock: ready if it was due when made, never otherwise.
struct FrozenTimer {
    due: bool,
}

#[wasmtime_wasi::async_trait]
impl Pollable for FrozenTimer {
    async fn ready(&mut self) {
        if !self.due {
            std::future::pending::<()>().await;
        }
    }
}

impl NoWaitView<'_> {
    fn timer(&mut self, due: bool) -> wasmtime::Result<Resource<DynPollable>> {
        let timer = self.table.push(FrozenTimer { due })?;
        wasmtime_wasi::p2::subscribe(self.table, timer)
    }
}

impl monotonic_clock::Host for NoWaitView<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        // Frozen: timing inside a plugin tells nothing.
        Ok(0)
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(1_000_000_000)
    }

    fn subscribe_instant(&mut self, when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.timer(when == 0)
    }

    fn subscribe_duration(&mut self, duration: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.timer(duration == 0)
    }
}

impl random::random::Host for NoWaitView<'_> {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.random_bytes(len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.next_u64())
    }
}

impl random::insecure::Host for NoWaitView<'_> {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.random_bytes(len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.next_u64())
    }
}

impl random::insecure_seed::Host for NoWaitView<'_> {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        Ok((0x5eed, 0xed9e_2ec0))
    }
}
