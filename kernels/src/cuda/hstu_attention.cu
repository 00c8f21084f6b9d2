// HSTU pointwise attention for a jagged batch, any head dims (d_qk ≠ d_v
// allowed), with the relative attention bias computed in the kernel from
// timestamps. Mirrors kernels/src/forward.rs `forward` (the per-row loop
// over heads and keys j ≤ i) and `buckets` / history.rs `time_bucket`.
//
//   A[i,j] = SiLU(alpha·(q_i·k_j) + pos_w[N-1+j-i] + ts_w[bucket(ts[i+1]-ts[j])]) · (1/N)
//   O[i]   = Σ_{j ≤ i} A[i,j] · v_j
//
// The head dims are compile-time constants (NVRTC compiles this file for the
// loaded model with -DHSTU_DQK=.. -DHSTU_DV=.. -DHSTU_NB=..), so odd head
// dims such as 5, 25 or 50 cost no padding in global memory.
//
// Block = one (user, block of up to QB query rows, head); 4 warps, each warp
// owns every 4th query row of the block. Keys and values stream through
// shared memory in tiles of KT = 32 rows; lane l scores key l of the tile
// against the warp's row (the q row is a broadcast read, keys use an odd
// row stride so the column walk is conflict-free), then the 32 weights are
// broadcast by shuffles and each lane accumulates output columns
// lane, lane+32, ... in registers.
//
// The log-time bucket: bucket(g) = clamp(floor(ln(max(g,1)) / div), 0, NB) is
// a non-decreasing step function of the gap g, so the host tabulates, with
// the CPU engine's own float32 `time_bucket`, the smallest gap of every
// bucket 1..NB (`thresholds`), and the kernel counts the thresholds ≤ g by
// binary search. The bucket is thereby computed per (i, j) from the raw
// timestamps and equals the CPU engine's float32 result bit for bit, even
// for gaps on a bucket boundary where a device logf could differ by an ulp.

#ifndef HSTU_DQK
#define HSTU_DQK 64
#endif
#ifndef HSTU_DV
#define HSTU_DV 64
#endif
#ifndef HSTU_NB
#define HSTU_NB 128
#endif

// Launch shapes: passed by the host (kernels/src/cuda/shapes.rs) as -D
// defines, never defaulted here, so the launch and the kernel cannot disagree.
#if !defined(ATT_QB) || !defined(ATT_KT) || !defined(ATT_THREADS)
#error "ATT_QB, ATT_KT and ATT_THREADS come from kernels/src/cuda/shapes.rs as -D defines"
#endif
#define ATT_WARPS (ATT_THREADS / 32)
static_assert(ATT_KT == 32, "lane l of a warp scores key l of a tile: ATT_KT must be 32");
static_assert(ATT_THREADS % 32 == 0 && ATT_QB % ATT_WARPS == 0, "each warp owns ATT_QB / ATT_WARPS query rows");
#define ATT_ROWS_PER_WARP (ATT_QB / ATT_WARPS)
#define ATT_DV_PER_LANE ((HSTU_DV + 31) / 32)
// Odd row stride of q/k tiles in shared memory: lane l walking row l's
// columns hits bank (l·stride + d) mod 32, distinct for odd strides.
#define ATT_SQK (HSTU_DQK | 1)

__device__ __forceinline__ float att_silu(float x) { return x / (1.0f + expf(-x)); }

// Number of thresholds ≤ gap: the bucket of `gap`, 0..HSTU_NB.
__device__ __forceinline__ int att_bucket(const unsigned long long* thr, unsigned long long gap) {
    int lo = 0, hi = HSTU_NB;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (thr[mid] <= gap) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// Shared memory bytes one block needs (the host computes the same).
// 8·(NB + KT + QB) + 4·(QB·SQK + KT·SQK + KT·DV)

// No __launch_bounds__: with it, ptxas (13.0, sm_90) caps this kernel at 40
// registers and spills the accumulators; without it, 44-95 registers and no
// spills for head dims 5..256 (see kernels/cuda/ptx-check.sh).
extern "C" __global__ void
hstu_attention(const float* __restrict__ q_base, int q_stride,
               const float* __restrict__ k_base, const float* __restrict__ v_base, int kv_stride,
               const int* __restrict__ blk_user, const int* __restrict__ blk_row0,
               const int* __restrict__ q_off, const int* __restrict__ q_first,
               const int* __restrict__ n_rows, const int* __restrict__ kv_off,
               const long long* __restrict__ ts, const int* __restrict__ ts_off,
               const unsigned long long* __restrict__ thresholds,
               const float* __restrict__ pos_w, const float* __restrict__ ts_w, int big_n,
               float alpha, float inv_n, int heads, float* __restrict__ out) {
    if (blockDim.x != ATT_THREADS) __trap();  // the row/warp split assumes ATT_THREADS
    extern __shared__ __align__(16) unsigned char att_smem[];
    unsigned long long* s_thr = (unsigned long long*)att_smem;
    long long* s_tsk = (long long*)(s_thr + HSTU_NB);
    long long* s_tsq = s_tsk + ATT_KT;
    float* s_q = (float*)(s_tsq + ATT_QB);
    float* s_k = s_q + ATT_QB * ATT_SQK;
    float* s_v = s_k + ATT_KT * ATT_SQK;

    const int u = blk_user[blockIdx.x];
    const int row0 = blk_row0[blockIdx.x];
    const int h = blockIdx.y;
    const int n = n_rows[u];
    const int first = q_first[u];
    const int qo = q_off[u];
    const int kvo = kv_off[u];
    const int tso = ts_off[u];
    const int row_end = min(row0 + ATT_QB, n);  // exclusive
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

    for (int t = threadIdx.x; t < HSTU_NB; t += blockDim.x) s_thr[t] = thresholds[t];
    for (int e = threadIdx.x; e < ATT_QB * HSTU_DQK; e += blockDim.x) {
        int r = e / HSTU_DQK, d = e - r * HSTU_DQK;
        int i = row0 + r;
        s_q[r * ATT_SQK + d] =
            i < row_end ? q_base[(long long)(qo + i - first) * q_stride + h * HSTU_DQK + d] : 0.0f;
    }
    // Row i's rab uses ts[i+1]; ts holds n+1 stamps per user, the last = query time.
    for (int r = threadIdx.x; r < ATT_QB; r += blockDim.x) {
        int i = row0 + r;
        s_tsq[r] = i < row_end ? ts[tso + i + 1] : 0;
    }

    float acc[ATT_ROWS_PER_WARP][ATT_DV_PER_LANE];
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++)
#pragma unroll
        for (int c = 0; c < ATT_DV_PER_LANE; c++) acc[rr][c] = 0.0f;

    const int i_last = row_end - 1;
    for (int j0 = 0; j0 <= i_last; j0 += ATT_KT) {
        __syncthreads();  // previous tile fully consumed (and first-pass loads visible)
        for (int e = threadIdx.x; e < ATT_KT * HSTU_DQK; e += blockDim.x) {
            int jj = e / HSTU_DQK, d = e - jj * HSTU_DQK;
            int j = j0 + jj;
            s_k[jj * ATT_SQK + d] =
                j <= i_last ? k_base[(long long)(kvo + j) * kv_stride + h * HSTU_DQK + d] : 0.0f;
        }
        for (int e = threadIdx.x; e < ATT_KT * HSTU_DV; e += blockDim.x) {
            int jj = e / HSTU_DV, d = e - jj * HSTU_DV;
            int j = j0 + jj;
            s_v[jj * HSTU_DV + d] =
                j <= i_last ? v_base[(long long)(kvo + j) * kv_stride + h * HSTU_DV + d] : 0.0f;
        }
        for (int jj = threadIdx.x; jj < ATT_KT; jj += blockDim.x) {
            int j = j0 + jj;
            s_tsk[jj] = j <= i_last ? ts[tso + j] : 0;
        }
        __syncthreads();

#pragma unroll
        for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++) {
            const int r = warp + ATT_WARPS * rr;
            const int i = row0 + r;
            if (i > i_last || j0 > i) continue;  // warp-uniform
            const int j = j0 + lane;
            float a = 0.0f;
            if (j <= i) {
                const float* qr = s_q + r * ATT_SQK;
                const float* kr = s_k + lane * ATT_SQK;
                float s = 0.0f;
#pragma unroll 8
                for (int d = 0; d < HSTU_DQK; d++) s = fmaf(qr[d], kr[d], s);
                unsigned long long du =
                    (unsigned long long)s_tsq[r] - (unsigned long long)s_tsk[lane];
                if ((long long)du < 0) du = 0ull - du;
                float rab = pos_w[big_n - 1 + j - i] + ts_w[att_bucket(s_thr, du)];
                a = att_silu(alpha * s + rab) * inv_n;
            }
            const int kmax = min(ATT_KT, i - j0 + 1);
            for (int kk = 0; kk < kmax; kk++) {
                float w = __shfl_sync(0xffffffffu, a, kk);
                const float* vr = s_v + kk * HSTU_DV;
#pragma unroll
                for (int c = 0; c < ATT_DV_PER_LANE; c++) {
                    int d = lane + 32 * c;
                    if (d < HSTU_DV) acc[rr][c] = fmaf(w, vr[d], acc[rr][c]);
                }
            }
        }
    }

    const int attn_width = heads * HSTU_DV;
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++) {
        const int i = row0 + warp + ATT_WARPS * rr;
        if (i > i_last) continue;
        float* o = out + (long long)(qo + i - first) * attn_width + h * HSTU_DV;
#pragma unroll
        for (int c = 0; c < ATT_DV_PER_LANE; c++) {
            int d = lane + 32 * c;
            if (d < HSTU_DV) o[d] = acc[rr][c];
        }
    }
}
