// The two dense projections of an HSTU layer, each with its row-wise
// neighbours fused in, so that the normalised activations never reach
// global memory:
//   ln_gemm_silu:       C = SiLU(LN(A) · W)                 (uvqk projection)
//   gated_ln_gemm_resid: C += (G ⊙ LN(A)) · W + bias        (output projection)
// LN is parameter-free, eps 1e-6, over the K columns of A, two-pass
// (mean, then mean of squared deviations) exactly as forward.rs
// `layer_norm`. Mirrors kernels/src/forward.rs `forward`: `layer_norm` +
// `matmul` + `silu` for the first, and the `u ⊙ LN(O)` loop + `matmul` +
// bias for the second. f32 operands, f32 accumulation.
//
// Tiling: a 256-thread block computes a BM×BN tile of C; each thread a 4×4
// micro-tile with rows ty + 16·i and columns tx + 16·j (strided, so shared
// memory reads are broadcast or conflict-free).

// Launch shapes: passed by the host (kernels/src/cuda/shapes.rs) as -D
// defines, never defaulted here, so the launch and the kernel cannot disagree.
#if !defined(GEMM_BM) || !defined(GEMM_BN) || !defined(GEMM_BK) || !defined(GEMM_THREADS)
#error "GEMM_BM, GEMM_BN, GEMM_BK and GEMM_THREADS come from kernels/src/cuda/shapes.rs as -D defines"
#endif
static_assert(GEMM_BM == 64 && GEMM_BN == 64 && GEMM_BK == 16 && GEMM_THREADS == 256,
              "the tile index math (16x16 threads, 4x4 micro-tiles, k & 15) is written for 64x64x16 / 256");
#define LN_EPS 1e-6f

__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }

// Mean and 1/sqrt(var + eps) of rows m0..m0+BM of A (K columns), one warp per row.
__device__ __forceinline__ void row_stats(const float* __restrict__ A, int lda, int M, int K,
                                          int m0, float* s_mean, float* s_rstd) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int r = warp; r < GEMM_BM; r += GEMM_THREADS / 32) {
        int m = m0 + r;
        float mean = 0.0f, rstd = 0.0f;
        if (m < M) {
            const float* row = A + (long long)m * lda;
            float s = 0.0f;
            for (int k = lane; k < K; k += 32) s += row[k];
            for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            mean = s / (float)K;
            float v = 0.0f;
            for (int k = lane; k < K; k += 32) {
                float t = row[k] - mean;
                v += t * t;
            }
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            rstd = 1.0f / sqrtf(v / (float)K + LN_EPS);
        }
        if (lane == 0) {
            s_mean[r] = mean;
            s_rstd[r] = rstd;
        }
    }
}

template <bool GATED>
__device__ __forceinline__ void ln_gemm(const float* __restrict__ A, int lda,
                                        const float* __restrict__ G, int ldg,
                                        const float* __restrict__ W, const float* __restrict__ bias,
                                        int M, int K, int N, float* __restrict__ C, int ldc) {
    __shared__ float s_mean[GEMM_BM], s_rstd[GEMM_BM];
    __shared__ float As[GEMM_BK][GEMM_BM + 4];
    __shared__ float Ws[GEMM_BK][GEMM_BN + 4];
    if (blockDim.x != GEMM_THREADS) __trap();  // the tile split assumes GEMM_THREADS
    int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    row_stats(A, lda, M, K, m0, s_mean, s_rstd);
    __syncthreads();

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += GEMM_BK) {
        // A tile: 64 rows × 16 k, k fastest so a row's 16 values are contiguous.
#pragma unroll
        for (int t = 0; t < (GEMM_BM * GEMM_BK) / GEMM_THREADS; t++) {
            int e = threadIdx.x + t * GEMM_THREADS;
            int kk = e & (GEMM_BK - 1), mm = e >> 4;
            int m = m0 + mm, k = k0 + kk;
            float a = 0.0f;
            if (m < M && k < K) {
                a = (A[(long long)m * lda + k] - s_mean[mm]) * s_rstd[mm];
                if (GATED) a *= G[(long long)m * ldg + k];
            }
            As[kk][mm] = a;
        }
        // W tile: 16 k × 64 n, n fastest.
#pragma unroll
        for (int t = 0; t < (GEMM_BK * GEMM_BN) / GEMM_THREADS; t++) {
            int e = threadIdx.x + t * GEMM_THREADS;
            int nn = e & (GEMM_BN - 1), kk = e >> 6;
            int n = n0 + nn, k = k0 + kk;
            Ws[kk][nn] = (n < N && k < K) ? W[(long long)k * N + n] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk++) {
            float a[4], w[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; j++) w[j] = Ws[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], w[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int m = m0 + ty + 16 * i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx + 16 * j;
            if (n >= N) continue;
            float* c = C + (long long)m * ldc + n;
            if (GATED) {
                *c = *c + acc[i][j] + bias[n];
            } else {
                *c = silu_f(acc[i][j]);
            }
        }
    }
}

// C[M, N] = SiLU(LN(A)[M, K] · W[K, N]); the uvqk projection.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    ln_gemm_silu(const float* __restrict__ A, int lda, const float* __restrict__ W, int M, int K,
                 int N, float* __restrict__ C, int ldc) {
    ln_gemm<false>(A, lda, nullptr, 0, W, nullptr, M, K, N, C, ldc);
}

// C[M, N] += (G ⊙ LN(A))[M, K] · W[K, N] + bias[N]; the output projection
// with residual (C is x, A the attention output O, G the gate u).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    gated_ln_gemm_resid(const float* __restrict__ A, int lda, const float* __restrict__ G,
                        int ldg, const float* __restrict__ W, const float* __restrict__ bias,
                        int M, int K, int N, float* __restrict__ C, int ldc) {
    ln_gemm<true>(A, lda, G, ldg, W, bias, M, K, N, C, ldc);
}
