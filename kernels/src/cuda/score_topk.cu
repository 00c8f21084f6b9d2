// Cosine top-k over the whole item table, in one pass over the table.
// Mirrors kernels/src/score.rs `top_k`: score(c) = u·E[c] / max(||E[c]||, 1e-6)
// for items 1..=V, items in the exclusion list skipped, best first, ties by
// the smaller id.
//
// score_chunk_topk: block (chunk, user) scores TOPK_CHUNK consecutive items
//   (fused dot products: each warp stages 32 item rows × 16 dims through
//   shared memory with coalesced loads, then lane l finishes item l's dot),
//   drops excluded items, bitonic-sorts the chunk in shared memory and
//   writes its best k candidates.
// topk_merge: block (group, user) sorts TOPK_CHUNK candidates and keeps the
//   best k; the host repeats it until one group per user is left.
// Order everywhere: the CPU's (score.rs `better`): scores by f32 total
// order, highest first (+NaN > +inf > ... > +0 > -0 > ... > -inf > -NaN),
// equal scores by smaller id. Empty slots carry the lowest score bit
// pattern (0xffffffff, a negative NaN) and id 0xffffffff: last of all.

#if !defined(TOPK_CHUNK) || !defined(TOPK_THREADS)
#error "TOPK_CHUNK and TOPK_THREADS come from kernels/src/cuda/shapes.rs as -D defines"
#endif
static_assert((TOPK_CHUNK & (TOPK_CHUNK - 1)) == 0 && TOPK_CHUNK >= 64, "the bitonic sort needs a power-of-two chunk");
static_assert(TOPK_THREADS % 32 == 0 && TOPK_CHUNK % 32 == 0, "whole warps, whole 32-item groups");
#define TOPK_WARPS (TOPK_THREADS / 32)
#define TOPK_DT 16  // dims per staged slice
#define TOPK_NONE 0xffffffffu

__device__ __forceinline__ float topk_empty_score() { return __int_as_float(0xffffffff); }

// f32 total order as a signed integer (f32::total_cmp): negative floats get
// their magnitude bits flipped, so -NaN < -inf < ... < -0 < +0 < ... < +NaN.
__device__ __forceinline__ int topk_key(float s) {
    int b = __float_as_int(s);
    return b ^ ((b >> 31) & 0x7fffffff);
}

// Whether (sa, ia) ranks before (sb, ib).
__device__ __forceinline__ bool topk_before(float sa, unsigned ia, float sb, unsigned ib) {
    int ka = topk_key(sa), kb = topk_key(sb);
    return ka > kb || (ka == kb && ia < ib);
}

// Sorts TOPK_CHUNK (score, id) pairs in shared memory, best first.
__device__ __forceinline__ void topk_bitonic(float* s, unsigned* id) {
    for (int size = 2; size <= TOPK_CHUNK; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < TOPK_CHUNK / 2; t += blockDim.x) {
                int i = 2 * t - (t & (stride - 1));
                int j = i + stride;
                bool best_first = (i & size) == 0;
                float si = s[i], sj = s[j];
                unsigned ii = id[i], ij = id[j];
                if (topk_before(sj, ij, si, ii) == best_first) {
                    s[i] = sj; s[j] = si; id[i] = ij; id[j] = ii;
                }
            }
            __syncthreads();
        }
    }
}

// Whether `item` is in the sorted list ex[0..len).
__device__ __forceinline__ bool topk_excluded(const unsigned* ex, int len, unsigned item) {
    int lo = 0, hi = len;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        unsigned v = ex[mid];
        if (v == item) return true;
        if (v < item) lo = mid + 1; else hi = mid;
    }
    return false;
}

extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
score_chunk_topk(const float* __restrict__ item_emb, const float* __restrict__ norms,
                 int num_items, int d, const float* __restrict__ users,
                 const unsigned* __restrict__ excl, const int* __restrict__ excl_off, int k,
                 float* __restrict__ out_score, unsigned* __restrict__ out_id) {
    __shared__ float s_score[TOPK_CHUNK];
    __shared__ unsigned s_id[TOPK_CHUNK];
    __shared__ float s_tile[TOPK_WARPS][32][TOPK_DT + 1];
    extern __shared__ float s_user[];  // [d], dynamic

    if (blockDim.x != TOPK_THREADS) __trap();  // warps and staging tiles assume TOPK_THREADS
    const int chunk = blockIdx.x, user = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float* u = users + (long long)user * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) s_user[c] = u[c];
    const unsigned* ex = excl + excl_off[user];
    const int ex_len = excl_off[user + 1] - excl_off[user];
    __syncthreads();

    const long long first_item = 1 + (long long)chunk * TOPK_CHUNK;
    for (int g = warp; g < TOPK_CHUNK / 32; g += TOPK_WARPS) {
        const long long base = first_item + (long long)g * 32;  // item of lane 0
        float dot = 0.0f;
        for (int d0 = 0; d0 < d; d0 += TOPK_DT) {
            // Stage 32 rows × TOPK_DT dims: each load instruction reads two
            // rows' contiguous 16-float slices.
#pragma unroll
            for (int t = 0; t < (32 * TOPK_DT) / 32; t++) {
                int e = t * 32 + lane;
                int row = e / TOPK_DT, dd = e - row * TOPK_DT;
                long long item = base + row;
                float v = 0.0f;
                if (item <= num_items && d0 + dd < d) v = item_emb[item * d + d0 + dd];
                s_tile[warp][row][dd] = v;
            }
            __syncwarp();
            const int dmax = min(TOPK_DT, d - d0);
            for (int dd = 0; dd < dmax; dd++) dot = fmaf(s_tile[warp][lane][dd], s_user[d0 + dd], dot);
            __syncwarp();
        }
        const long long item = base + lane;
        const int slot = g * 32 + lane;
        if (item <= num_items && !topk_excluded(ex, ex_len, (unsigned)item)) {
            s_score[slot] = dot / fmaxf(norms[item], 1e-6f);
            s_id[slot] = (unsigned)item;
        } else {
            s_score[slot] = topk_empty_score();
            s_id[slot] = TOPK_NONE;
        }
    }
    __syncthreads();
    topk_bitonic(s_score, s_id);
    float* os = out_score + ((long long)user * gridDim.x + chunk) * k;
    unsigned* oi = out_id + ((long long)user * gridDim.x + chunk) * k;
    for (int t = threadIdx.x; t < k; t += blockDim.x) {
        os[t] = s_score[t];
        oi[t] = s_id[t];
    }
}

// Per user, `count` candidates in[user·count ..]; block g keeps the best k of
// candidates [g·CHUNK, (g+1)·CHUNK) into out[(user·gridDim.x + g)·k ..].
extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
topk_merge(const float* __restrict__ in_score, const unsigned* __restrict__ in_id, int count,
           int k, float* __restrict__ out_score, unsigned* __restrict__ out_id) {
    __shared__ float s_score[TOPK_CHUNK];
    __shared__ unsigned s_id[TOPK_CHUNK];
    if (blockDim.x != TOPK_THREADS) __trap();
    const int g = blockIdx.x, user = blockIdx.y;
    const long long base = (long long)user * count;
    for (int t = threadIdx.x; t < TOPK_CHUNK; t += blockDim.x) {
        long long c = (long long)g * TOPK_CHUNK + t;
        bool ok = c < count;
        s_score[t] = ok ? in_score[base + c] : topk_empty_score();
        s_id[t] = ok ? in_id[base + c] : TOPK_NONE;
    }
    __syncthreads();
    topk_bitonic(s_score, s_id);
    float* os = out_score + ((long long)user * gridDim.x + g) * k;
    unsigned* oi = out_id + ((long long)user * gridDim.x + g) * k;
    for (int t = threadIdx.x; t < k; t += blockDim.x) {
        os[t] = s_score[t];
        oi[t] = s_id[t];
    }
}
