// Exact cosine top-k for a batch of users over the quantised item table of
// kernels/src/retrieval.rs (`QuantizedTable`): the device computes the int8
// approximations and the candidate rows, the host re-ranks the candidates
// with the exact f32 cosine (`QuantizedTable::rerank`, the CPU retrieval's
// own code), so the result is score.rs `top_k`'s, scores and ties included.
//
// The table: blocks of 16 rows, `groups` = ceil(D/4) words per row per
// block, word (block·groups + g)·16 + r = dims 4g..4g+4 of row r as u8
// `code + 128` (retrieval/scan.rs `Line`); one scale per row, NaN for a row
// the scan must not consider (absent, or outside the bound's domain: the
// host re-ranks those always). A query: `groups` words of four s8 codes, the
// correction 128·Σcodes and its scale t. Every approximation is
// A = f32(dot) · (t · s_row), the scan's arithmetic, bit for bit.
//
// quant_query: the host's `quantize_query` (retrieval/bound.rs) for every
//   user of the call, one thread per user, reading the embedding where the
//   encode left it on the device (`resident` row r, or row -1-r of `staged`
//   for a query the host sent), so scoring needs no host round trip.
// quant_chunk_kth: block c takes rows [c·TOPK_THREADS, (c+1)·TOPK_THREADS),
//   one per thread, staged once into shared memory for every user of the
//   batch (the table is read once per batch). Per user: the chunk's k-th
//   best approximation over its eligible rows (present, not excluded),
//   ranked by (A desc, row asc); -inf when it has fewer than k. A selection,
//   not a sort of the chunk: each warp sorts its 32 pairs in registers, and
//   each row finds its rank by binary searches in the eight sorted lists.
// quant_threshold: block u: thr[u] = the largest float at or below
//   max_c kth[u, c] − 2W_u (2W rounded up by the host). The k rows of the
//   best chunk reach that chunk's k-th approximation, so every row of the
//   true top k has A ≥ (global k-th) − 2W ≥ thr[u] (the CPU's selection rule
//   with a lower k-th: a superset of its candidates).
// quant_select: block c, every user: eligible rows with A ≥ thr[u] go to
//   cand[u·cap ..]; count[u] counts them all (past `cap` they are only
//   counted, and the host serves that user on the CPU).

#if !defined(TOPK_THREADS)
#error "TOPK_THREADS comes from kernels/src/cuda/shapes.rs as a -D define"
#endif
static_assert(TOPK_THREADS % 32 == 0 && TOPK_THREADS % 16 == 0, "whole warps, whole 16-row table blocks");

__device__ __forceinline__ float qt_neg_inf() { return __int_as_float(0xff800000); }

// The largest float below x (x finite or -inf; -inf stays).
__device__ __forceinline__ float qt_next_down(float x) {
    int b = __float_as_int(x);
    if (b == (int)0xff800000) return x;
    if (b == 0 || b == (int)0x80000000) return __int_as_float(0x80000001);  // ±0 → −smallest subnormal
    return __int_as_float(b > 0 ? b - 1 : b + 1);
}

// Whether `item` is in the sorted list ex[0..len).
__device__ __forceinline__ bool qt_excluded(const unsigned* ex, int len, unsigned item) {
    int lo = 0, hi = len;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        unsigned v = ex[mid];
        if (v == item) return true;
        if (v < item) lo = mid + 1; else hi = mid;
    }
    return false;
}

// Copies this block's rows of the table into s_words[g·TOPK_THREADS + t]
// (coalesced: consecutive threads, consecutive words). Thread t stages
// exactly the words of its own row (e ≡ t mod TOPK_THREADS), the only ones
// it reads, so the staging needs no barrier; it is read once per user.
__device__ __forceinline__ void qt_stage(const unsigned* words, int slots, int groups, unsigned* s_words) {
    const int first = blockIdx.x * TOPK_THREADS;
    for (int e = threadIdx.x; e < groups * TOPK_THREADS; e += blockDim.x) {
        int g = e / TOPK_THREADS, t = e - g * TOPK_THREADS;
        int row = first + t;
        s_words[e] = row < slots ? words[((long long)(row >> 4) * groups + g) * 16 + (row & 15)] : 0u;
    }
}

// This thread's row's approximation for user u, or -inf when the row is not
// eligible (past the table, NaN scale, excluded for u).
__device__ __forceinline__ float qt_approx(const unsigned* s_words, const float* scales, int slots, int groups,
                                           const int* q_codes, const int* q_corr, const float* q_scale,
                                           const unsigned* excl, const int* excl_off, int u) {
    const int row = blockIdx.x * TOPK_THREADS + threadIdx.x;
    if (row >= slots) return qt_neg_inf();
    const float s = scales[row];
    if (s != s) return qt_neg_inf();
    if (qt_excluded(excl + excl_off[u], excl_off[u + 1] - excl_off[u], (unsigned)row)) return qt_neg_inf();
    const int* q = q_codes + (long long)u * groups;
    int acc = 0;
    for (int g = 0; g < groups; g++) {
        unsigned w = s_words[g * TOPK_THREADS + threadIdx.x];
        int qw = q[g];
#pragma unroll
        for (int i = 0; i < 4; i++) acc += (int)((w >> (8 * i)) & 0xffu) * (int)(signed char)((qw >> (8 * i)) & 0xff);
    }
    return (float)(acc - q_corr[u]) * (q_scale[u] * s);
}

// Whether (a, i) ranks before (b, j): higher approximation, then lower row.
__device__ __forceinline__ bool qt_before(float a, int i, float b, int j) { return a > b || (a == b && i < j); }

extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
quant_chunk_kth(const unsigned* __restrict__ words, const float* __restrict__ scales, int slots, int groups,
                const int* __restrict__ q_codes, const int* __restrict__ q_corr, const float* __restrict__ q_scale,
                int users, const unsigned* __restrict__ excl, const int* __restrict__ excl_off, int k,
                float* __restrict__ kth) {
    __shared__ float s_a[TOPK_THREADS];  // each warp's 32 (A, row) pairs, sorted
    __shared__ int s_row[TOPK_THREADS];
    __shared__ float s_kth;
    extern __shared__ unsigned s_words[];  // [groups·TOPK_THREADS], dynamic
    if (blockDim.x != TOPK_THREADS) __trap();  // one row per thread
    const int lane = threadIdx.x & 31;
    // No barrier after staging: each thread reads only the words it staged
    // itself (s_words[g·TOPK_THREADS + t]); none at the loop's top either:
    // the previous user's reads of s_a, s_row and s_kth are ordered before
    // these writes by the barrier after ranking.
    qt_stage(words, slots, groups, s_words);
    for (int u = 0; u < users; u++) {
        if (threadIdx.x == 0) s_kth = qt_neg_inf();
        const float a = qt_approx(s_words, scales, slots, groups, q_codes, q_corr, q_scale, excl, excl_off, u);
        // Each warp sorts its 32 (A, row) pairs in registers (a bitonic
        // network over shuffles, best first) ...
        float v = a;
        int r = threadIdx.x;
        for (int size = 2; size <= 32; size <<= 1) {
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, v, stride);
                const int orow = __shfl_xor_sync(0xffffffffu, r, stride);
                const bool lower = (lane & stride) == 0, best_first = size == 32 || (lane & size) == 0;
                // The lower lane of a best-first pair keeps the better pair.
                if (qt_before(ov, orow, v, r) == (lower == best_first)) {
                    v = ov;
                    r = orow;
                }
            }
        }
        s_a[threadIdx.x] = v;
        s_row[threadIdx.x] = r;
        __syncthreads();
        // ... then each eligible row counts the pairs before its own in the
        // eight sorted lists (a binary search each): its rank in the chunk.
        // The thread of rank k-1 holds the chunk's k-th best.
        if (a != qt_neg_inf()) {
            int rank = 0;
            for (int w = 0; w < TOPK_THREADS; w += 32) {
                int lo = 0, hi = 32;
                while (lo < hi) {
                    int mid = (lo + hi) >> 1;
                    if (qt_before(s_a[w + mid], s_row[w + mid], a, threadIdx.x)) lo = mid + 1; else hi = mid;
                }
                rank += lo;
            }
            if (rank == k - 1) s_kth = a;
        }
        __syncthreads();
        if (threadIdx.x == 0) kth[(long long)u * gridDim.x + blockIdx.x] = s_kth;
    }
}

extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
quant_threshold(const float* __restrict__ kth, int chunks, const float* __restrict__ twice_bound,
                float* __restrict__ thr) {
    __shared__ float s_max[TOPK_THREADS];
    if (blockDim.x != TOPK_THREADS) __trap();
    const int u = blockIdx.x;
    float m = qt_neg_inf();
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) m = fmaxf(m, kth[(long long)u * chunks + c]);
    s_max[threadIdx.x] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int t = 1; t < TOPK_THREADS; t++) m = fmaxf(m, s_max[t]);
        thr[u] = qt_next_down(m - twice_bound[u]);
    }
}

extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
quant_select(const unsigned* __restrict__ words, const float* __restrict__ scales, int slots, int groups,
             const int* __restrict__ q_codes, const int* __restrict__ q_corr, const float* __restrict__ q_scale,
             int users, const unsigned* __restrict__ excl, const int* __restrict__ excl_off,
             const float* __restrict__ thr, int cap, unsigned* __restrict__ count, unsigned* __restrict__ cand) {
    extern __shared__ unsigned s_sel_words[];  // [groups·TOPK_THREADS], dynamic (one name per kernel: the emulator defines each)
    if (blockDim.x != TOPK_THREADS) __trap();
    // No barrier: each thread reads only the words it staged itself.
    qt_stage(words, slots, groups, s_sel_words);
    const unsigned row = blockIdx.x * TOPK_THREADS + threadIdx.x;
    for (int u = 0; u < users; u++) {
        const float a = qt_approx(s_sel_words, scales, slots, groups, q_codes, q_corr, q_scale, excl, excl_off, u);
        if (a != qt_neg_inf() && a >= thr[u]) {
            unsigned at = atomicAdd(count + u, 1u);
            if (at < (unsigned)cap) cand[(long long)u * cap + at] = row;
        }
    }
}

// A query's codes as retrieval/bound.rs `quantize_query` makes them: the same
// f64 arithmetic in the same order (NVRTC may contract a product and a sum
// into an FMA, which only removes roundings: the bound's slack covers every
// f64 rounding). `terms` are `query_bound_terms` (f64 bits, in its order).
// A query outside the bound's domain (a non-finite value, norms past the
// limits) gets ok = 0, zero codes and 2W = +inf: its threshold is then -inf,
// and the host re-ranks every row for it, as it does for the host's `None`.
extern "C" __global__ void
quant_query(const float* __restrict__ resident, const float* __restrict__ staged, const int* __restrict__ row,
            int users, int d, int groups, const unsigned long long* __restrict__ terms, int* __restrict__ q_codes,
            int* __restrict__ q_corr, float* __restrict__ q_scale, float* __restrict__ twice_bound,
            int* __restrict__ ok) {
    const double per_query_norm = __longlong_as_double((long long)terms[0]);
    const double table_coded_norm = __longlong_as_double((long long)terms[1]);
    const double table_norm = __longlong_as_double((long long)terms[2]);
    const double gamma3 = __longlong_as_double((long long)terms[3]);
    const double underflow = __longlong_as_double((long long)terms[4]);
    const double slack = __longlong_as_double((long long)terms[5]);
    const double row_norm_limit = __longlong_as_double((long long)terms[6]);
    const double product_limit = __longlong_as_double((long long)terms[7]);
    const double code_max = __longlong_as_double((long long)terms[8]);
    for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < users; u += gridDim.x * blockDim.x) {
        const int r = row[u];
        const float* q = r >= 0 ? resident + (long long)r * d : staged + (long long)(-1 - r) * d;
        int* codes = q_codes + (long long)u * groups;
        bool finite = true;
        double sum2 = 0.0, largest = 0.0;
        for (int i = 0; i < d; i++) {
            const float v = q[i];
            finite = finite && (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
            sum2 += (double)v * (double)v;
            largest = fmax(largest, fabs((double)v));
        }
        const double q_norm = sqrt(sum2) * (1.0 + slack);
        if (!finite || q_norm > row_norm_limit || q_norm * table_norm > product_limit) {
            for (int g = 0; g < groups; g++) codes[g] = 0;
            q_corr[u] = 0;
            q_scale[u] = 0.0f;
            twice_bound[u] = __int_as_float(0x7f800000);
            ok[u] = 0;
            continue;
        }
        // The smallest f32 at or above largest / CODE_MAX (≥ 0, finite).
        const double ratio = largest / code_max;
        float scale = (float)ratio;
        if ((double)scale < ratio) scale = __int_as_float(__float_as_int(scale) + 1);
        double err2 = 0.0, coded2 = 0.0;
        int sum = 0;
        for (int g = 0; g < groups; g++) {
            unsigned word = 0;
            for (int j = 0; j < 4; j++) {
                const int i = 4 * g + j;
                if (i >= d) break;  // padding codes stay 0
                const double v = (double)q[i];
                const double code = scale > 0.0f ? fmin(fmax(round(v / (double)scale), -code_max), code_max) : 0.0;
                const double coded = (double)scale * code;
                err2 += (v - coded) * (v - coded);
                coded2 += coded * coded;
                const int c = (int)code;
                sum += c;
                word |= ((unsigned)c & 0xffu) << (8 * j);
            }
            codes[g] = (int)word;
        }
        const double query_err = sqrt(err2) * (1.0 + slack);
        const double coded_norm = sqrt(coded2) * (1.0 + slack);
        const double bound =
            (q_norm * per_query_norm + query_err * table_coded_norm + gamma3 * coded_norm * table_coded_norm + underflow) *
            (1.0 + slack);
        // 2W, rounded up to f32 as the host's `round_up_f32` does.
        const double twice = 2.0 * bound;
        float tw = (float)twice;
        if ((double)tw < twice) tw = __int_as_float(__float_as_int(tw) + 1);
        q_corr[u] = 128 * sum;
        q_scale[u] = scale;
        twice_bound[u] = tw;
        ok[u] = 1;
    }
}
