// Row-wise kernels of the HSTU encode: input embedding, key/value scatter
// into a per-user cache, the gather of each user's newest row for the last
// layer, and the final L2 normalisation.
// Mirrors kernels/src/forward.rs: `embed` (embed_rows), the key/value
// `extend_from_slice` into `LayerKv` (scatter_kv), the newest-row copies of
// the last layer (gather_rows) and the last-row
// normalisation at the end of `forward` (l2norm_rows).
// Compiled at run time by NVRTC; no headers are available, so only builtins.

// x[r, :] = sqrt(D) * E[items[r], :] + P[pos[r], :]   (mirrors forward.rs `embed`)
extern "C" __global__ void embed_rows(const float* __restrict__ item_emb,
                                      const float* __restrict__ pos_emb,
                                      const unsigned int* __restrict__ items,
                                      const int* __restrict__ pos, int rows, int d,
                                      float scale, float* __restrict__ x) {
    long long total = (long long)rows * d;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int r = (int)(e / d);
        int c = (int)(e - (long long)r * d);
        x[e] = scale * item_emb[(long long)items[r] * d + c] + pos_emb[(long long)pos[r] * d + c];
    }
}

// Copies the keys and values of each query row from the uvqk buffer
// (row stride `width`, keys at column k_col, values at v_col) to its slot
// dst_row[r] of a cache laid out [rows, kw + vw] = [keys | values].
// Mirrors the `cache.keys/values.extend_from_slice` loop of forward.rs.
extern "C" __global__ void scatter_kv(const float* __restrict__ uvqk, int width, int k_col,
                                      int v_col, int kw, int vw,
                                      const int* __restrict__ dst_row, int rows,
                                      float* __restrict__ cache) {
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* src = uvqk + (long long)r * width;
    float* dst = cache + (long long)dst_row[r] * (kw + vw);
    for (int c = threadIdx.x; c < kw + vw; c += blockDim.x) {
        dst[c] = c < kw ? src[k_col + c] : src[v_col + c - kw];
    }
}

// dst[r, 0..width) = src[row[r], 0..width), one block per row: each user's
// newest row, the only one the last layer computes past its keys and values.
// Mirrors the `last_x` / `last_uvqk` copies of forward.rs `forward_in`.
extern "C" __global__ void gather_rows(const float* __restrict__ src, int ld_src,
                                       const int* __restrict__ row, int rows, int width,
                                       float* __restrict__ dst, int ld_dst) {
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* from = src + (long long)row[r] * ld_src;
    float* to = dst + (long long)r * ld_dst;
    for (int c = threadIdx.x; c < width; c += blockDim.x) to[c] = from[c];
}

// out[u, :] = x[row[u], :] / max(||x[row[u], :]||_2, 1e-6), one warp per user.
// Mirrors the tail of forward.rs `forward` (NORM_FLOOR = 1e-6).
extern "C" __global__ void l2norm_rows(const float* __restrict__ x, int d,
                                       const int* __restrict__ row, int users,
                                       float* __restrict__ out) {
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (warp >= users) return;
    const float* src = x + (long long)row[warp] * d;
    float ss = 0.0f;
    for (int c = lane; c < d; c += 32) ss += src[c] * src[c];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    float inv = 1.0f / fmaxf(sqrtf(ss), 1e-6f);
    for (int c = lane; c < d; c += 32) out[(long long)warp * d + c] = src[c] * inv;
}

// dst[0..n) = value (bit pattern): poisons workspace buffers with NaN before
// a checked run, so that an element no kernel writes shows up in the result.
// No CPU mirror (a test aid).
extern "C" __global__ void fill_u32(unsigned int* __restrict__ dst, long long n, unsigned int value) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x)
        dst[e] = value;
}
