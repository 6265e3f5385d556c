// fp8_gemm.cu: block-scaled FP8 GEMM, D = A * B^T (DeepGEMM's "1D2D" scaling, NT layout).
//
// A [m][k] e4m3 with 1x128 scales sa [m][k/128] f32; B [n][k] e4m3 with 128x128 scales
// sb [ceil(n/128)][k/128] f32; D [m][n] bf16. Requires k % 128 == 0 and n % 8 == 0 (the host
// checks). Two-level accumulation as on Hopper: the tensor cores accumulate one 128-wide K block in
// f32, then the CUDA cores multiply that block's sum by sa[row][kb] * sb[n/128][kb] and add it into
// the final f32 accumulator ("promotion"), exactly as gemm_ref.rs does.
//
// v0 uses `mma.sync m16n8k32 e4m3` (sm_89+): CTA tile 128x128x128, 8 warps as 2 (M) x 4 (N), each
// warp 64x32; STAGES-deep cp.async pipeline; shared tiles are 128-byte rows with the 16-byte chunk
// index XOR-swizzled by (row & 7), so ldmatrix reads are free of bank conflicts. Rows past m or n
// are zero-filled on load and skipped on store.

#define BM 128
#define BN 128
#define BK 128
#ifndef STAGES
#define STAGES 4
#endif
#define TILE_BYTES (BM * BK)
#define STAGE_BYTES (2 * TILE_BYTES)

__device__ __forceinline__ unsigned swz(int row, int chunk) { return row * BK + ((chunk ^ (row & 7)) << 4); }

extern "C" __global__ void __launch_bounds__(256, 1)
    fp8_gemm_nt(const u8_t* __restrict__ A, const float* __restrict__ sa, const u8_t* __restrict__ B,
                const float* __restrict__ sb, bf16_t* __restrict__ D, int m, int n, int k) {
    extern __shared__ __align__(128) unsigned char smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3;
    const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
    const int KB = k / BK;
    const unsigned sbase = smem_addr(smem);

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

    float fin[4][4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) fin[a][b][0] = fin[a][b][1] = fin[a][b][2] = fin[a][b][3] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KB) load_stage(s, s);
        cp_async_commit();
    }

    for (int kb = 0; kb < KB; ++kb) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        const int nk = kb + STAGES - 1;
        if (nk < KB) load_stage(nk % STAGES, nk);
        cp_async_commit();

        const unsigned as = sbase + (kb % STAGES) * STAGE_BYTES, bs = as + TILE_BYTES;
        float acc[4][4][4];
#pragma unroll
        for (int a = 0; a < 4; ++a)
#pragma unroll
            for (int b = 0; b < 4; ++b) acc[a][b][0] = acc[a][b][1] = acc[a][b][2] = acc[a][b][3] = 0.f;

#pragma unroll
        for (int ks = 0; ks < BK / 32; ++ks) {
            unsigned af[4][4], bfr[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; ++mt) {
                const int row = wm * 64 + mt * 16 + (lane & 15);
                ldsm_x4(as + swz(row, ks * 2 + (lane >> 4)), af[mt][0], af[mt][1], af[mt][2], af[mt][3]);
            }
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                const int row = wn * 32 + np * 16 + (lane & 7) + (lane >> 4) * 8;
                ldsm_x4(bs + swz(row, ks * 2 + ((lane >> 3) & 1)), bfr[2 * np][0], bfr[2 * np][1], bfr[2 * np + 1][0],
                        bfr[2 * np + 1][1]);
            }
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
                    mma_e4m3(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3], bfr[nt][0], bfr[nt][1]);
        }

        // Promotion: scale this K block's sums and add them into the final accumulators.
        const float sbv = sb[(size_t)blockIdx.x * KB + kb];
#pragma unroll
        for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = m0 + wm * 64 + mt * 16 + (lane >> 2) + 8 * h;
                const float s = (row < m ? sa[(size_t)row * KB + kb] : 0.f) * sbv;
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) {
                    fin[mt][nt][2 * h] += acc[mt][nt][2 * h] * s;
                    fin[mt][nt][2 * h + 1] += acc[mt][nt][2 * h + 1] * s;
                }
            }
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = m0 + wm * 64 + mt * 16 + (lane >> 2) + 8 * h;
            if (row >= m) continue;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                const int col = n0 + wn * 32 + nt * 8 + 2 * (lane & 3);
                if (col < n)
                    *(unsigned*)(D + (size_t)row * n + col) = pack_bf16x2(fin[mt][nt][2 * h], fin[mt][nt][2 * h + 1]);
            }
        }
    }
}
