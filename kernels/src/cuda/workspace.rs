//! Device buffers reused across calls: each grows to the largest call seen
//! and is never shrunk, so steady-state serving allocates nothing.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};

use crate::backend::BackendError;

use super::device::dev_err;

/// A device buffer that grows on demand.
pub(crate) struct Growable<T> {
    buf: Option<CudaSlice<T>>,
}

impl<T: DeviceRepr + ValidAsZeroBits> Growable<T> {
    /// An empty buffer (allocates on first use).
    pub const fn new() -> Self {
        Growable { buf: None }
    }

    /// The buffer, holding at least `len` elements (contents unspecified).
    pub fn at_least(&mut self, stream: &Arc<CudaStream>, len: usize) -> Result<&mut CudaSlice<T>, BackendError> {
        let len = len.max(1);
        if self.buf.as_ref().is_none_or(|b| b.len() < len) {
            // Drop first so the old and new buffer never coexist on the device.
            self.buf = None;
            // Round up so a slowly growing workload does not reallocate every call.
            let cap = len.next_power_of_two().max(1024);
            self.buf = Some(stream.alloc_zeros::<T>(cap).map_err(dev_err("workspace allocation"))?);
        }
        Ok(self.buf.as_mut().expect("allocated above"))
    }

    /// The buffer, holding `host` at its start.
    pub fn upload(&mut self, stream: &Arc<CudaStream>, host: &[T]) -> Result<&mut CudaSlice<T>, BackendError> {
        let buf = self.at_least(stream, host.len())?;
        if !host.is_empty() {
            stream.memcpy_htod(host, &mut buf.slice_mut(..host.len())).map_err(dev_err("upload"))?;
        }
        Ok(buf)
    }
}

/// Every reusable buffer of the encode and scoring paths.
pub(crate) struct Workspace {
    /// Residual stream x, [rows, D].
    pub x: Growable<f32>,
    /// SiLU(LN(x)·W_uvqk), [rows, 2·H·(dv+dqk)].
    pub uvqk: Growable<f32>,
    /// Attention output O, [rows, H·dv].
    pub attn: Growable<f32>,
    /// Item id of every row.
    pub items: Growable<u32>,
    /// Packed i32 metadata of a call (see `encode::Plan`).
    pub meta: Growable<i32>,
    /// Timestamps, n+1 per user (the last = query time).
    pub ts: Growable<i64>,
    /// Output embeddings, [users, D].
    pub out: Growable<f32>,
    /// User embeddings of a scoring call, [users, D].
    pub users: Growable<f32>,
    /// Concatenated sorted exclusion lists and their offsets.
    pub excl: Growable<u32>,
    pub excl_off: Growable<i32>,
    /// Top-k candidates, ping-pong pair.
    pub cand_score: [Growable<f32>; 2],
    pub cand_id: [Growable<u32>; 2],
}

impl Workspace {
    /// No buffers yet.
    pub const fn new() -> Self {
        Workspace {
            x: Growable::new(),
            uvqk: Growable::new(),
            attn: Growable::new(),
            items: Growable::new(),
            meta: Growable::new(),
            ts: Growable::new(),
            out: Growable::new(),
            users: Growable::new(),
            excl: Growable::new(),
            excl_off: Growable::new(),
            cand_score: [Growable::new(), Growable::new()],
            cand_id: [Growable::new(), Growable::new()],
        }
    }
}
