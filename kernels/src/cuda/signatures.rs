//! One signature table per kernel: the parameter list every launch is
//! checked against (by both launchers, before anything runs), and from which
//! the CPU emulator generates its call thunks, with a `static_assert` that
//! the table and the `.cu` declaration have the same function type, so the
//! table cannot drift from the sources.

/// The element type of a device buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    /// `float`.
    F32,
    /// `unsigned int`.
    U32,
    /// `int`.
    I32,
    /// `long long`.
    I64,
    /// `unsigned long long`.
    U64,
}

impl Elem {
    /// Size in bytes.
    pub(crate) const fn size(self) -> usize {
        match self {
            Elem::F32 | Elem::U32 | Elem::I32 => 4,
            Elem::I64 | Elem::U64 => 8,
        }
    }

    /// The C++ spelling.
    pub(crate) const fn c_type(self) -> &'static str {
        match self {
            Elem::F32 => "float",
            Elem::U32 => "unsigned int",
            Elem::I32 => "int",
            Elem::I64 => "long long",
            Elem::U64 => "unsigned long long",
        }
    }
}

/// The type of one kernel parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    /// `const T*`: read-only buffer of `T`.
    In(Elem),
    /// `T*`: written buffer of `T`.
    Out(Elem),
    /// `unsigned int*` that accepts any buffer of 4-byte elements (bit-pattern fills).
    OutBits32,
    /// `int`.
    I32,
    /// `long long`.
    I64,
    /// `unsigned int`.
    U32,
    /// `float`.
    F32,
}

impl Ty {
    /// The C++ spelling of the parameter's type.
    pub(crate) fn c_type(self) -> String {
        match self {
            Ty::In(e) => format!("const {}*", e.c_type()),
            Ty::Out(e) => format!("{}*", e.c_type()),
            Ty::OutBits32 => "unsigned int*".into(),
            Ty::I32 => "int".into(),
            Ty::I64 => "long long".into(),
            Ty::U32 => "unsigned int".into(),
            Ty::F32 => "float".into(),
        }
    }
}

/// The `.cu` files of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// hstu_rows.cu.
    Rows,
    /// hstu_gemm.cu.
    Gemm,
    /// hstu_attention.cu (compiled per model: head dims are compile-time constants).
    Attention,
    /// score_topk.cu.
    Topk,
    /// roofline.cu.
    Roofline,
}

/// Every source file.
pub(crate) const SOURCES: [Source; 5] = [Source::Rows, Source::Gemm, Source::Attention, Source::Topk, Source::Roofline];

impl Source {
    /// The file name beside this module.
    pub(crate) const fn file(self) -> &'static str {
        match self {
            Source::Rows => "hstu_rows.cu",
            Source::Gemm => "hstu_gemm.cu",
            Source::Attention => "hstu_attention.cu",
            Source::Topk => "score_topk.cu",
            Source::Roofline => "roofline.cu",
        }
    }

    /// The file's text, embedded so the binary needs no files at run time.
    pub(crate) const fn text(self) -> &'static str {
        match self {
            Source::Rows => include_str!("hstu_rows.cu"),
            Source::Gemm => include_str!("hstu_gemm.cu"),
            Source::Attention => include_str!("hstu_attention.cu"),
            Source::Topk => include_str!("score_topk.cu"),
            Source::Roofline => include_str!("roofline.cu"),
        }
    }

    /// The kernels defined in this file.
    pub(crate) fn kernels(self) -> impl Iterator<Item = Kernel> {
        KERNELS.into_iter().filter(move |k| k.source() == self)
    }
}

/// Every kernel of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// hstu_rows.cu `embed_rows`.
    EmbedRows,
    /// hstu_rows.cu `scatter_kv`.
    ScatterKv,
    /// hstu_rows.cu `gather_rows`.
    GatherRows,
    /// hstu_rows.cu `l2norm_rows`.
    L2normRows,
    /// hstu_rows.cu `fill_u32`.
    FillU32,
    /// hstu_gemm.cu `ln_gemm_silu`.
    LnGemmSilu,
    /// hstu_gemm.cu `gated_ln_gemm_resid`.
    GatedLnGemmResid,
    /// hstu_attention.cu `hstu_attention`.
    HstuAttention,
    /// score_topk.cu `quant_query`.
    QuantQuery,
    /// score_topk.cu `quant_chunk_kth`.
    QuantChunkKth,
    /// score_topk.cu `quant_threshold`.
    QuantThreshold,
    /// score_topk.cu `quant_select`.
    QuantSelect,
    /// roofline.cu `fma_peak`.
    FmaPeak,
}

/// Every kernel, in the order of [`Kernel::index`].
pub(crate) const KERNELS: [Kernel; 13] = [
    Kernel::EmbedRows,
    Kernel::ScatterKv,
    Kernel::GatherRows,
    Kernel::L2normRows,
    Kernel::FillU32,
    Kernel::LnGemmSilu,
    Kernel::GatedLnGemmResid,
    Kernel::HstuAttention,
    Kernel::QuantQuery,
    Kernel::QuantChunkKth,
    Kernel::QuantThreshold,
    Kernel::QuantSelect,
    Kernel::FmaPeak,
];

use Elem::{F32, I32, I64, U32, U64};

impl Kernel {
    /// Position in [`KERNELS`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The `extern "C"` name in the `.cu` file.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Kernel::EmbedRows => "embed_rows",
            Kernel::ScatterKv => "scatter_kv",
            Kernel::GatherRows => "gather_rows",
            Kernel::L2normRows => "l2norm_rows",
            Kernel::FillU32 => "fill_u32",
            Kernel::LnGemmSilu => "ln_gemm_silu",
            Kernel::GatedLnGemmResid => "gated_ln_gemm_resid",
            Kernel::HstuAttention => "hstu_attention",
            Kernel::QuantQuery => "quant_query",
            Kernel::QuantChunkKth => "quant_chunk_kth",
            Kernel::QuantThreshold => "quant_threshold",
            Kernel::QuantSelect => "quant_select",
            Kernel::FmaPeak => "fma_peak",
        }
    }

    /// The file that defines it.
    pub(crate) const fn source(self) -> Source {
        match self {
            Kernel::EmbedRows | Kernel::ScatterKv | Kernel::GatherRows | Kernel::L2normRows | Kernel::FillU32 => {
                Source::Rows
            }
            Kernel::LnGemmSilu | Kernel::GatedLnGemmResid => Source::Gemm,
            Kernel::HstuAttention => Source::Attention,
            Kernel::QuantQuery | Kernel::QuantChunkKth | Kernel::QuantThreshold | Kernel::QuantSelect => Source::Topk,
            Kernel::FmaPeak => Source::Roofline,
        }
    }

    /// The parameter list, as declared in the `.cu` file.
    pub(crate) const fn params(self) -> &'static [(&'static str, Ty)] {
        match self {
            Kernel::EmbedRows => &[
                ("item_emb", Ty::In(F32)),
                ("pos_emb", Ty::In(F32)),
                ("items", Ty::In(U32)),
                ("pos", Ty::In(I32)),
                ("rows", Ty::I32),
                ("d", Ty::I32),
                ("scale", Ty::F32),
                ("x", Ty::Out(F32)),
            ],
            Kernel::ScatterKv => &[
                ("uvqk", Ty::In(F32)),
                ("width", Ty::I32),
                ("k_col", Ty::I32),
                ("v_col", Ty::I32),
                ("kw", Ty::I32),
                ("vw", Ty::I32),
                ("dst_row", Ty::In(I32)),
                ("rows", Ty::I32),
                ("cache", Ty::Out(F32)),
            ],
            Kernel::GatherRows => &[
                ("src", Ty::In(F32)),
                ("ld_src", Ty::I32),
                ("row", Ty::In(I32)),
                ("rows", Ty::I32),
                ("width", Ty::I32),
                ("dst", Ty::Out(F32)),
                ("ld_dst", Ty::I32),
            ],
            Kernel::L2normRows => {
                &[("x", Ty::In(F32)), ("d", Ty::I32), ("row", Ty::In(I32)), ("users", Ty::I32), ("out", Ty::Out(F32))]
            }
            Kernel::FillU32 => &[("dst", Ty::OutBits32), ("n", Ty::I64), ("value", Ty::U32)],
            Kernel::LnGemmSilu => &[
                ("A", Ty::In(F32)),
                ("lda", Ty::I32),
                ("W", Ty::In(F32)),
                ("M", Ty::I32),
                ("K", Ty::I32),
                ("N", Ty::I32),
                ("C", Ty::Out(F32)),
                ("ldc", Ty::I32),
            ],
            Kernel::GatedLnGemmResid => &[
                ("A", Ty::In(F32)),
                ("lda", Ty::I32),
                ("G", Ty::In(F32)),
                ("ldg", Ty::I32),
                ("W", Ty::In(F32)),
                ("bias", Ty::In(F32)),
                ("M", Ty::I32),
                ("K", Ty::I32),
                ("N", Ty::I32),
                ("C", Ty::Out(F32)),
                ("ldc", Ty::I32),
            ],
            Kernel::HstuAttention => &[
                ("q_base", Ty::In(F32)),
                ("q_stride", Ty::I32),
                ("k_base", Ty::In(F32)),
                ("v_base", Ty::In(F32)),
                ("kv_stride", Ty::I32),
                ("blk_user", Ty::In(I32)),
                ("blk_row0", Ty::In(I32)),
                ("q_off", Ty::In(I32)),
                ("q_first", Ty::In(I32)),
                ("n_rows", Ty::In(I32)),
                ("kv_off", Ty::In(I32)),
                ("ts", Ty::In(I64)),
                ("ts_off", Ty::In(I32)),
                ("thresholds", Ty::In(U64)),
                ("pos_w", Ty::In(F32)),
                ("ts_w", Ty::In(F32)),
                ("big_n", Ty::I32),
                ("alpha", Ty::F32),
                ("inv_n", Ty::F32),
                ("heads", Ty::I32),
                ("out", Ty::Out(F32)),
            ],
            Kernel::QuantQuery => &[
                ("resident", Ty::In(F32)),
                ("staged", Ty::In(F32)),
                ("row", Ty::In(I32)),
                ("users", Ty::I32),
                ("d", Ty::I32),
                ("groups", Ty::I32),
                ("terms", Ty::In(U64)),
                ("q_codes", Ty::Out(I32)),
                ("q_corr", Ty::Out(I32)),
                ("q_scale", Ty::Out(F32)),
                ("twice_bound", Ty::Out(F32)),
                ("ok", Ty::Out(I32)),
            ],
            Kernel::QuantChunkKth => &[
                ("words", Ty::In(U32)),
                ("scales", Ty::In(F32)),
                ("slots", Ty::I32),
                ("groups", Ty::I32),
                ("q_codes", Ty::In(I32)),
                ("q_corr", Ty::In(I32)),
                ("q_scale", Ty::In(F32)),
                ("users", Ty::I32),
                ("excl", Ty::In(U32)),
                ("excl_off", Ty::In(I32)),
                ("k", Ty::I32),
                ("kth", Ty::Out(F32)),
            ],
            Kernel::QuantThreshold => {
                &[("kth", Ty::In(F32)), ("chunks", Ty::I32), ("twice_bound", Ty::In(F32)), ("thr", Ty::Out(F32))]
            }
            Kernel::QuantSelect => &[
                ("words", Ty::In(U32)),
                ("scales", Ty::In(F32)),
                ("slots", Ty::I32),
                ("groups", Ty::I32),
                ("q_codes", Ty::In(I32)),
                ("q_corr", Ty::In(I32)),
                ("q_scale", Ty::In(F32)),
                ("users", Ty::I32),
                ("excl", Ty::In(U32)),
                ("excl_off", Ty::In(I32)),
                ("thr", Ty::In(F32)),
                ("cap", Ty::I32),
                ("count", Ty::Out(U32)),
                ("cand", Ty::Out(U32)),
            ],
            Kernel::FmaPeak => &[("out", Ty::Out(F32)), ("iters", Ty::I32), ("a", Ty::F32), ("b", Ty::F32)],
        }
    }

    /// The block size the kernel is written for (it traps on another), or
    /// `None` for grid-stride kernels that take any multiple of 32.
    pub(crate) const fn fixed_block(self) -> Option<u32> {
        use super::shapes::{ATT_THREADS, GEMM_THREADS, TOPK_THREADS};
        match self {
            Kernel::HstuAttention => Some(ATT_THREADS),
            Kernel::LnGemmSilu | Kernel::GatedLnGemmResid => Some(GEMM_THREADS),
            Kernel::QuantChunkKth | Kernel::QuantThreshold | Kernel::QuantSelect => Some(TOPK_THREADS),
            _ => None,
        }
    }
}
