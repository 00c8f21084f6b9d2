// Device roofs measured in the same run as the timings (no CPU mirror):
// fma_peak runs long independent FMA chains from registers, so its FLOP/s is
// the device's attainable f32 (non-tensor-core) peak.
#define ROOF_CHAINS 8
extern "C" __global__ void fma_peak(float* __restrict__ out, int iters, float a, float b) {
    float x[ROOF_CHAINS];
#pragma unroll
    for (int c = 0; c < ROOF_CHAINS; c++) x[c] = threadIdx.x * 1e-7f + c;
    for (int it = 0; it < iters; it++) {
#pragma unroll
        for (int r = 0; r < 16; r++)
#pragma unroll
            for (int c = 0; c < ROOF_CHAINS; c++) x[c] = fmaf(x[c], a, b);
    }
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < ROOF_CHAINS; c++) s += x[c];
    // Never true for the launch arguments used; keeps the chains alive.
    if (s == 1234.5f) out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
