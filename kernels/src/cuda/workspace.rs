//! Device buffers reused across calls (each grows to the largest call seen
//! and is never shrunk, so steady-state serving allocates nothing), and the
//! model's weights, uploaded once.

use crate::error::BackendError;
use crate::model::Model;
use crate::retrieval::QuantizedTable;

use super::buckets::bucket_thresholds;
use super::launch::{DevBuf, DeviceType, Launcher, alloc, upload, upload_new};
use super::resident::Resident;

/// A device buffer that grows on demand.
pub(crate) struct Growable<T> {
    buf: Option<DevBuf<T>>,
}

impl<T: DeviceType> Growable<T> {
    /// An empty buffer (allocates on first use).
    pub const fn new() -> Self {
        Growable { buf: None }
    }

    /// The buffer, holding at least `len` elements (contents unspecified).
    /// Under the emulator it holds exactly `len`, so that the guard page
    /// right after it catches a kernel that writes one element too far.
    pub fn at_least(&mut self, l: &dyn Launcher, len: usize) -> Result<&mut DevBuf<T>, BackendError> {
        let len = len.max(1);
        let exact = l.exact_buffers();
        let refit = match &self.buf {
            None => true,
            Some(b) => b.len() < len || (exact && b.len() != len),
        };
        if refit {
            // Drop first so the old and new buffer never coexist on the device.
            self.buf = None;
            // Round up so a slowly growing workload does not reallocate every call.
            let cap = if exact { len } else { len.next_power_of_two().max(1024) };
            self.buf = Some(alloc::<T>(l, cap)?);
        }
        match self.buf.as_mut() {
            Some(buf) => Ok(buf),
            None => unreachable!("allocated above"),
        }
    }

    /// The buffer, holding `host` at its start.
    pub fn upload(&mut self, l: &dyn Launcher, host: &[T]) -> Result<&mut DevBuf<T>, BackendError> {
        let buf = self.at_least(l, host.len())?;
        upload(l, buf, 0, host)?;
        Ok(buf)
    }
}

/// Every reusable buffer of the encode and scoring paths.
pub(crate) struct Workspace {
    /// Residual stream x, [rows, D].
    pub x: Growable<f32>,
    /// SiLU(LN(x)·W_uvqk), [rows, 2·H·(dv+dqk)].
    pub uvqk: Growable<f32>,
    /// Attention output O, [rows, H·dv] (the last layer: [users, H·dv]).
    pub attn: Growable<f32>,
    /// Each user's newest row of x on the last layer, [users, D].
    pub x_last: Growable<f32>,
    /// Each user's newest row of uvqk on the last layer, [users, 2·H·(dv+dqk)].
    pub uvqk_last: Growable<f32>,
    /// Item id of every row.
    pub items: Growable<u32>,
    /// Packed i32 metadata of a call (see `encode::Plan`).
    pub meta: Growable<i32>,
    /// Timestamps, n+1 per user (the last = query time).
    pub ts: Growable<i64>,
    /// Output embeddings, [users, D].
    pub out: Growable<f32>,
    /// Query codes of a top-k call, [users, groups].
    pub q_codes: Growable<i32>,
    /// Each query's code correction (128·Σcodes), [users].
    pub q_corr: Growable<i32>,
    /// Each query's scale t, [users].
    pub q_scale: Growable<f32>,
    /// Each query's 2W rounded up to f32, [users].
    pub twice_bound: Growable<f32>,
    /// Concatenated sorted exclusion lists.
    pub excl: Growable<u32>,
    /// Offsets of each user's exclusion list in `excl` (users + 1).
    pub excl_off: Growable<i32>,
    /// Each chunk's k-th approximation per user, [users, chunks].
    pub kth: Growable<f32>,
    /// Each user's candidate threshold, [users].
    pub thr: Growable<f32>,
    /// Candidates per user (may exceed the capacity), [users].
    pub cand_count: Growable<u32>,
    /// Candidate rows, [users, capacity].
    pub cand: Growable<u32>,
    /// Top-k queries the device does not hold (see [`Resident`]), [staged, D].
    pub q_staged: Growable<f32>,
    /// Each top-k query's row: in `resident` (≥ 0) or in `q_staged` (−1 − row).
    pub q_row: Growable<i32>,
    /// Whether each query is inside the bound's domain (1) or not (0).
    pub q_ok: Growable<i32>,
    /// The quantiser's terms (`QuantizedTable::query_bound_terms`, f64 bits).
    pub q_terms: Growable<u64>,
    /// The embeddings the latest encodes left on the device.
    pub resident: Resident,
}

impl Workspace {
    /// No buffers yet; embeddings of `dim` values.
    pub fn new(dim: usize) -> Self {
        Workspace {
            x: Growable::new(),
            uvqk: Growable::new(),
            attn: Growable::new(),
            x_last: Growable::new(),
            uvqk_last: Growable::new(),
            items: Growable::new(),
            meta: Growable::new(),
            ts: Growable::new(),
            out: Growable::new(),
            q_codes: Growable::new(),
            q_corr: Growable::new(),
            q_scale: Growable::new(),
            twice_bound: Growable::new(),
            excl: Growable::new(),
            excl_off: Growable::new(),
            kth: Growable::new(),
            thr: Growable::new(),
            cand_count: Growable::new(),
            cand: Growable::new(),
            q_staged: Growable::new(),
            q_row: Growable::new(),
            q_ok: Growable::new(),
            q_terms: Growable::new(),
            resident: Resident::new(dim),
        }
    }
}

/// A layer's weights on the device.
pub(crate) struct DeviceLayer {
    pub uvqk: DevBuf<f32>,
    pub o_w: DevBuf<f32>,
    pub o_b: DevBuf<f32>,
    pub pos_w: DevBuf<f32>,
    pub ts_w: DevBuf<f32>,
}

/// A model's weights on the device, uploaded once when the backend is created.
pub(crate) struct DeviceWeights {
    pub item_emb: DevBuf<f32>,
    /// The quantised item table's words (see score_topk.cu).
    pub table_words: DevBuf<u32>,
    /// Its row scales, NaN where a row is not scanned.
    pub table_scales: DevBuf<f32>,
    pub pos_emb: DevBuf<f32>,
    pub layers: Vec<DeviceLayer>,
    /// Smallest gap of every time bucket (see [`super::buckets`]).
    pub thresholds: DevBuf<u64>,
}

impl DeviceWeights {
    /// Uploads `model`'s weights.
    pub fn upload(l: &dyn Launcher, model: &Model, table: &QuantizedTable) -> Result<Self, BackendError> {
        let quantised = table.device_table();
        let w = &model.weights;
        let layers = w
            .layers
            .iter()
            .map(|layer| {
                Ok(DeviceLayer {
                    uvqk: upload_new(l, &layer.uvqk)?,
                    o_w: upload_new(l, &layer.o_w)?,
                    o_b: upload_new(l, &layer.o_b)?,
                    pos_w: upload_new(l, &layer.pos_w)?,
                    ts_w: upload_new(l, &layer.ts_w)?,
                })
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(DeviceWeights {
            item_emb: upload_new(l, &w.item_emb)?,
            table_words: upload_new(l, &quantised.words)?,
            table_scales: upload_new(l, &quantised.scales)?,
            pos_emb: upload_new(l, &w.pos_emb)?,
            layers,
            thresholds: upload_new(l, &bucket_thresholds(&model.config))?,
        })
    }

    /// Device bytes of the weights.
    pub fn bytes(&self) -> usize {
        self.item_emb.bytes()
            + self.table_words.bytes()
            + self.table_scales.bytes()
            + self.pos_emb.bytes()
            + self.thresholds.bytes()
            + self
                .layers
                .iter()
                .map(|l| l.uvqk.bytes() + l.o_w.bytes() + l.o_b.bytes() + l.pos_w.bytes() + l.ts_w.bytes())
                .sum::<usize>()
    }
}
