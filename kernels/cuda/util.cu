// util.cu: device-side fills used by benchmarks and tests, so multi-gigabyte inputs never cross
// PCIe: a counter-based hash (splitmix64 finalizer) of (seed, index) makes each element, so a fill
// is reproducible and needs no RNG state.

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Uniform in [-scale, scale), rounded to bf16.
extern "C" __global__ void fill_bf16(bf16_t* __restrict__ dst, unsigned long long n, unsigned long long seed,
                                     float scale) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long h = mix64(seed * 0x9e3779b97f4a7c15ull + i);
        float u = (float)(h >> 40) * (1.0f / 16777216.0f);  // [0,1)
        dst[i] = f32_to_bf16((2.f * u - 1.f) * scale);
    }
}

// Random finite e4m3 codes (never the NaN codes 0x7f / 0xff).
extern "C" __global__ void fill_e4m3(u8_t* __restrict__ dst, unsigned long long n, unsigned long long seed) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long h = mix64(seed * 0x9e3779b97f4a7c15ull + i);
        u8_t v = (u8_t)(h & 0xff);
        if ((v & 0x7f) == 0x7f) v ^= 0x01;
        dst[i] = v;
    }
}

// Uniform in [lo, hi).
extern "C" __global__ void fill_f32(float* __restrict__ dst, unsigned long long n, unsigned long long seed, float lo,
                                    float hi) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long h = mix64(seed * 0x9e3779b97f4a7c15ull + i);
        float u = (float)(h >> 40) * (1.0f / 16777216.0f);
        dst[i] = lo + (hi - lo) * u;
    }
}
