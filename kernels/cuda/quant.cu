// quant.cu: 1x128 FP8 (e4m3) activation quantization on the GPU, bit-identical to quant.rs:
// per row and 128-column block, amax = max(max|x|, 1e-4), q = e4m3_rne_satfinite(x * (448/amax)),
// scale = amax / 448. Divisions use __fdiv_rn so --use_fast_math cannot change them.
// Layouts: x [rows][cols] f32, q [rows][cols] e4m3, scales [rows][ceil(cols/128)] f32.
// grid (ceil(cols/128), rows), one warp per block, 4 values per lane.

extern "C" __global__ void __launch_bounds__(32)
    quant_1x128_f32(const float* __restrict__ x, u8_t* __restrict__ q, float* __restrict__ scales, int rows, int cols) {
    const int kb = blockIdx.x, r = blockIdx.y, lane = threadIdx.x;
    const int kbs = (cols + 127) / 128;
    const int c0 = kb * 128 + lane * 4;
    const float* xr = x + (size_t)r * cols;
    float v[4];
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        v[i] = c0 + i < cols ? xr[c0 + i] : 0.f;
        amax = fmaxf(amax, fabsf(v[i]));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    amax = fmaxf(amax, 1e-4f);
    const float inv = __fdiv_rn(448.f, amax);
    u8_t* qr = q + (size_t)r * cols;
#pragma unroll
    for (int i = 0; i < 4; i += 2) {
        unsigned short pair;
        asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(v[i + 1] * inv), "f"(v[i] * inv));
        if (c0 + i < cols) qr[c0 + i] = (u8_t)(pair & 0xff);
        if (c0 + i + 1 < cols) qr[c0 + i + 1] = (u8_t)(pair >> 8);
    }
    if (lane == 0) scales[(size_t)r * kbs + kb] = __fdiv_rn(amax, 448.f);
}
