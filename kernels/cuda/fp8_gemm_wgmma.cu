// fp8_gemm_wgmma.cu: block-scaled FP8 GEMM on Hopper's FP8 tensor cores (`wgmma`, sm_90a only).
//
// Same contract as fp8_gemm.cu (the entry point takes the same arguments): D = A * B^T with A [m][k]
// e4m3 and 1x128 scales sa [m][k/128] f32, B [n][k] e4m3 and 128x128 scales sb [ceil(n/128)][k/128]
// f32, D [m][n] bf16; k % 128 == 0 and n % 8 == 0 (the host checks), any m. Two-level accumulation
// as in gemm_ref.rs: the tensor cores sum one 128-wide K block in f32 (four k32 steps), then the
// CUDA cores add block_sum * sa[row][kb] * sb[n/128][kb] into the final f32 accumulator.
//
// v1 layout: CTA tile 128x128x128, 256 threads = 2 warpgroups, no producer warpgroup, no TMA.
// Warpgroup w computes rows w*64..w*64+63 x all 128 columns with `wgmma m64n128k32 e4m3`, both
// operands read from shared memory through matrix descriptors (FP8 wgmma is K-major only, which is
// the NT layout). Each thread holds 64 f32 block-sum registers and 64 final-sum registers.
// Loads: a STAGES-deep cp.async pipeline (all 256 threads), as in v0.
//
// Shared memory: per stage an A tile and a B tile, each 128 rows x 128 bytes (a row's 128 K values),
// 16-byte chunk c of row r at r*128 + ((c ^ (r & 7)) << 4): the 128-byte swizzle wgmma expects,
// whose XOR pattern repeats every 1024 bytes, so every tile starts on a 1024-byte boundary (the
// dynamic smem base is aligned up by hand; the host requests 1 KiB extra).
//
// Ordering: cp.async writes shared memory through the generic proxy, wgmma reads it through the
// async proxy, so each thread fences (fence.proxy.async) after its cp.async.wait and before the
// barrier that precedes the wgmma reading that stage. wgmma.wait_group 0 completes the reads of a
// stage before the next iteration's barrier, after which that stage is refilled.

#define BM 128
#define BN 128
#define BK 128
#ifndef STAGES
#define STAGES 4
#endif
#define TILE_BYTES (BM * BK)
#define STAGE_BYTES (2 * TILE_BYTES)

__device__ __forceinline__ unsigned swz(int row, int chunk) { return row * BK + ((chunk ^ (row & 7)) << 4); }

// wgmma matrix descriptor for a K-major tile of 128-byte rows with the 128-byte swizzle (PTX ISA,
// "Matrix Descriptor Format"): bits 0-13 start address >> 4; 16-29 leading byte offset >> 4 (unused
// for swizzled K-major, set to 1); 32-45 stride byte offset >> 4 (1024: from one 8-row group to
// the next); 49-51 base offset 0 (tiles are 1024-aligned); 62-63 swizzle mode 1 = 128 bytes.
__device__ __forceinline__ unsigned long long wg_desc(unsigned addr) {
    return (unsigned long long)((addr & 0x3FFFFu) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) |
           (1ull << 62);
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

#define T3_ACC8(d, i)                                                                                             \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
        "+f"(d[i + 7])

// D(64x128 f32) = A(64x32 e4m3, K-major smem) * B(32x128 e4m3, K-major smem) + (SCALE_D ? D : 0).
// Register d[4j + i] of thread t (warp w = (t/32)%4, lane l) holds row w*16 + l/4 + 8*(i/2),
// column 8*j + 2*(l%4) + (i%2).
template <int SCALE_D>
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[64], unsigned long long da, unsigned long long db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, %66, 1, 1;"
        : T3_ACC8(d, 0), T3_ACC8(d, 8), T3_ACC8(d, 16), T3_ACC8(d, 24), T3_ACC8(d, 32), T3_ACC8(d, 40),
          T3_ACC8(d, 48), T3_ACC8(d, 56)
        : "l"(da), "l"(db), "n"(SCALE_D)
        : "memory");
}

extern "C" __global__ void __launch_bounds__(256, 1)
    fp8_gemm_nt_wgmma(const u8_t* __restrict__ A, const float* __restrict__ sa, const u8_t* __restrict__ B,
                      const float* __restrict__ sb, bf16_t* __restrict__ D, int m, int n, int k) {
    extern __shared__ __align__(1024) unsigned char smem[];
    const int tid = threadIdx.x, lane = tid & 31;
    const int wg = tid >> 7, wq = (tid >> 5) & 3;  // warpgroup, warp within the warpgroup
    const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
    const int KB = k / BK;
    const unsigned sbase = (smem_addr(smem) + 1023u) & ~1023u;
    // Rows this thread's accumulators cover; a warpgroup whose 64 rows all lie past m skips the math.
    const int row0 = m0 + wg * 64 + wq * 16 + (lane >> 2), row1 = row0 + 8;
    const bool active = m0 + wg * 64 < m;

    auto load_stage = [&](int s, int kb) {
        const unsigned as = sbase + s * STAGE_BYTES, bs = as + TILE_BYTES;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int c = tid + i * 256, row = c >> 3, ch = c & 7;
            const int ga = m0 + row, gb = n0 + row;
            const bool oka = ga < m, okb = gb < n;
            cp_async16(as + swz(row, ch), oka ? (const void*)(A + (size_t)ga * k + kb * BK + ch * 16) : (const void*)A,
                       oka ? 16u : 0u);
            cp_async16(bs + swz(row, ch), okb ? (const void*)(B + (size_t)gb * k + kb * BK + ch * 16) : (const void*)B,
                       okb ? 16u : 0u);
        }
    };

    float acc[64], fin[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = fin[i] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KB) load_stage(s, s);
        cp_async_commit();
    }

    for (int kb = 0; kb < KB; ++kb) {
        cp_async_wait<STAGES - 2>();
        fence_proxy_async();  // this thread's cp.async writes of stage kb -> visible to wgmma (async proxy)
        __syncthreads();
        const int nk = kb + STAGES - 1;
        if (nk < KB) load_stage(nk % STAGES, nk);
        cp_async_commit();

        if (active) {
            // Scale loads first, so they are in flight while the tensor cores work.
            const float sbv = sb[(size_t)blockIdx.x * KB + kb];
            const float sa0 = row0 < m ? sa[(size_t)row0 * KB + kb] : 0.f;
            const float sa1 = row1 < m ? sa[(size_t)row1 * KB + kb] : 0.f;

            const unsigned as = sbase + (kb % STAGES) * STAGE_BYTES, bs = as + TILE_BYTES;
            const unsigned long long da = wg_desc(as + wg * 64 * BK), db = wg_desc(bs);
            // k32 step s starts 32*s bytes into each 128-byte row: +2 in the descriptor's address field.
            wg_fence();
            wgmma_m64n128k32<0>(acc, da, db);
            wgmma_m64n128k32<1>(acc, da + 2, db + 2);
            wgmma_m64n128k32<1>(acc, da + 4, db + 4);
            wgmma_m64n128k32<1>(acc, da + 6, db + 6);
            wg_commit();
            wg_wait0();

            // Promotion: scale this K block's sums and add them into the final accumulators.
            const float s0 = sa0 * sbv, s1 = sa1 * sbv;
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                fin[4 * j + 0] += acc[4 * j + 0] * s0;
                fin[4 * j + 1] += acc[4 * j + 1] * s0;
                fin[4 * j + 2] += acc[4 * j + 2] * s1;
                fin[4 * j + 3] += acc[4 * j + 3] * s1;
            }
        }
    }
    cp_async_wait<0>();

    if (!active) return;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const int col = n0 + 8 * j + 2 * (lane & 3);
        if (col >= n) continue;  // n % 8 == 0 and col is even, so col + 1 < n too
        if (row0 < m) *(unsigned*)(D + (size_t)row0 * n + col) = pack_bf16x2(fin[4 * j + 0], fin[4 * j + 1]);
        if (row1 < m) *(unsigned*)(D + (size_t)row1 * n + col) = pack_bf16x2(fin[4 * j + 2], fin[4 * j + 3]);
    }
}
