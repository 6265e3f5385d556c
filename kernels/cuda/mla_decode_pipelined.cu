// mla_decode.cu: MLA decoding over a paged KV cache (FlashMLA semantics), split-KV + combine.
//
// Layouts (bf16 as raw u16): q [b][s_q][h_q][576], kcache [blocks][64][h_kv][576] (V = first 512
// columns of K), block_table [b][max_blocks] i32, seqlens [b] i32, out [b][s_q][h_q][512] bf16,
// lse [b][h_q][s_q] f32 (natural log; +inf for a row that sees no key, whose out is 0).
//
// Work comes from the host planner (plan.rs): part p runs items[part_start[p]..part_start[p+1]],
// each item = (request, first block, end block, split index). A request with one split writes its
// final output directly; otherwise each split writes a normalized f32 partial O and its LSE into
// opart/lse_part and `mla_combine` merges them by LSE weighting.
//
// One CTA = 8 warps on (q-row tile of TILE_M rows, kv head g, part). The q heads of kv head g
// times s_q are folded into rows (row r -> s = r / hpk, head = g*hpk + r % hpk). Warps form
// RG = TILE_M/16 row groups x WC = 8/RG column groups: for S = Q K^T a warp owns 16 rows x
// BLOCK_N/S_WC tokens (only S_WC column warps take part when a tile is narrow), for O += P V it
// owns 16 rows x 512/WC value columns; P goes through shared memory. Online softmax in the log2
// domain with fp32 state. K tiles of BLOCK_N = 32 tokens stream through an NSTAGE-deep cp.async
// ring (NSTAGE-1 tiles in flight while one is computed); tokens past the item's end are
// zero-filled and masked, so cache slots beyond a sequence's length (NaN in the tests) are never
// read.
//
// Compile-time constant (injected by the host): TILE_M in {16, 32, 64}.

#define D_K 576
#define D_V 512
#define PAGE 64
#define NTHREADS 256
#define RG (TILE_M / 16)
#define WC (8 / RG)
// Tokens per pipeline step (divides PAGE, so a step never crosses a page).
#define BLOCK_N 32
// K-tile ring depth: NSTAGE - 1 tiles are in flight while one is computed.
#define NSTAGE (TILE_M == 16 ? 4 : 3)
// Column warps that compute S (each owns NT_S n-tiles of 8 tokens); the others only do P*V.
#define S_WC (WC < BLOCK_N / 8 ? WC : BLOCK_N / 8)
#define NT_S (BLOCK_N / S_WC / 8)
#define NT_O (D_V / WC / 8)
#define DV_W (D_V / WC)
#define SROW (D_K + 8)
#define PROW (BLOCK_N + 8)
#define CHUNKS_PER_ROW (D_K / 8)

extern "C" __global__ void __launch_bounds__(NTHREADS, 1)
    mla_decode_split(const bf16_t* __restrict__ q, const bf16_t* __restrict__ kcache,
                     const int* __restrict__ block_table, const int* __restrict__ seqlens,
                     const int* __restrict__ items, const int* __restrict__ part_start,
                     const int* __restrict__ split_start, bf16_t* __restrict__ out, float* __restrict__ lse_out,
                     float* __restrict__ opart, float* __restrict__ lse_part, int s_q, int h_q, int h_kv,
                     int max_blocks, float scale_log2, int causal) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    bf16_t* Qs = (bf16_t*)smem_raw;
    bf16_t* Ks = Qs + TILE_M * SROW;
    bf16_t* Ps = Ks + NSTAGE * BLOCK_N * SROW;
    float* redmax = (float*)(Ps + TILE_M * PROW);
    float* redl = redmax + WC * TILE_M;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int rg = warp / WC, wc = warp % WC;
    const int tile = blockIdx.x, g = blockIdx.y, part = blockIdx.z;
    const int hpk = h_q / h_kv;
    const int R = s_q * hpk;
    const int rows_total = s_q * h_q;

    int lr[2], srow[2], head[2];
    bool rvalid[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        lr[h] = rg * 16 + (lane >> 2) + 8 * h;
        int r = tile * TILE_M + lr[h];
        rvalid[h] = r < R;
        srow[h] = rvalid[h] ? r / hpk : 0;
        head[h] = rvalid[h] ? g * hpk + r % hpk : 0;
    }

    for (int it = part_start[part]; it < part_start[part + 1]; ++it) {
        const int req = items[4 * it], bb = items[4 * it + 1], be = items[4 * it + 2], split = items[4 * it + 3];
        const int seqlen = seqlens[req];
        const int t_begin = bb * PAGE;
        const int t_end = min(be * PAGE, seqlen);
        const int nsteps = t_end > t_begin ? (t_end - t_begin + BLOCK_N - 1) / BLOCK_N : 0;
        const int* bt = block_table + (size_t)req * max_blocks;

        // Q tile -> shared (rows past R are zero).
        for (int c = tid; c < TILE_M * CHUNKS_PER_ROW; c += NTHREADS) {
            int row = c / CHUNKS_PER_ROW, col = c % CHUNKS_PER_ROW;
            int r = tile * TILE_M + row;
            const bf16_t* src = q;
            unsigned bytes = 0;
            if (r < R) {
                src = q + (((size_t)req * s_q + r / hpk) * h_q + g * hpk + r % hpk) * D_K + col * 8;
                bytes = 16;
            }
            cp_async16(smem_addr(Qs + row * SROW + col * 8), src, bytes);
        }
        auto load_k = [&](int j) {
            if (j >= nsteps) return;
            const int t0 = t_begin + j * BLOCK_N;
            const int page = bt[t0 / PAGE];  // one page per step; t0 < t_end, so the entry is used
            const bf16_t* base = kcache + (((size_t)page * PAGE + (t0 % PAGE)) * h_kv + g) * D_K;
            bf16_t* dst = Ks + (j % NSTAGE) * BLOCK_N * SROW;
#pragma unroll 3
            for (int c = tid; c < BLOCK_N * CHUNKS_PER_ROW; c += NTHREADS) {
                int tok = c / CHUNKS_PER_ROW, col = c % CHUNKS_PER_ROW;
                bool ok = t0 + tok < t_end;
                const bf16_t* src = ok ? base + (size_t)tok * h_kv * D_K + col * 8 : kcache;
                cp_async16(smem_addr(dst + tok * SROW + col * 8), src, ok ? 16u : 0u);
            }
        };
        // Prologue: Q and the first NSTAGE-1 tiles, one commit group per step (groups may be empty).
#pragma unroll
        for (int j = 0; j < NSTAGE - 1; ++j) {
            load_k(j);
            cp_async_commit();
        }

        float m[2] = {-T3_INF, -T3_INF}, l[2] = {0.f, 0.f};
        float o[NT_O][4];
#pragma unroll
        for (int i = 0; i < NT_O; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;

        for (int j = 0; j < nsteps; ++j) {
            cp_async_wait<NSTAGE - 2>();  // step j (and Q) landed
            __syncthreads();              // ... for every thread; all are done with step j-1's buffer
            load_k(j + NSTAGE - 1);       // refills step j-1's buffer
            cp_async_commit();
            const bf16_t* Kb = Ks + (j % NSTAGE) * BLOCK_N * SROW;
            const int t0 = t_begin + j * BLOCK_N;

            // S = Q K^T for this warp's 16 rows x NT_S*8 tokens.
            const bool s_warp = wc < S_WC;
            // Two independent accumulator sets (even / odd k-steps) halve the dependent mma chain.
            float sacc[NT_S][4], sacc2[NT_S][4];
#pragma unroll
            for (int i = 0; i < NT_S; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) sacc[i][e] = sacc2[i][e] = 0.f;
#pragma unroll 2
            for (int kk = 0; kk < (s_warp ? D_K / 16 : 0); kk += 2) {
                unsigned a0, a1, a2, a3, c0, c1, c2, c3;
                const bf16_t* qrow = Qs + (rg * 16 + (lane & 15)) * SROW + kk * 16 + (lane >> 4) * 8;
                ldsm_x4(smem_addr(qrow), a0, a1, a2, a3);
                ldsm_x4(smem_addr(qrow + 16), c0, c1, c2, c3);
#pragma unroll
                for (int nt = 0; nt < NT_S; ++nt) {
                    unsigned b0, b1, b2, b3;
                    int tok = wc * NT_S * 8 + nt * 8 + (lane & 7);
                    // x4: k-steps kk (matrices 0,1) and kk+1 (matrices 2,3) of this n-tile.
                    ldsm_x4(smem_addr(Kb + tok * SROW + kk * 16 + ((lane >> 3) & 3) * 8), b0, b1, b2, b3);
                    mma_bf16(sacc[nt], a0, a1, a2, a3, b0, b1);
                    mma_bf16(sacc2[nt], c0, c1, c2, c3, b2, b3);
                }
            }
#pragma unroll
            for (int i = 0; i < NT_S; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) sacc[i][e] += sacc2[i][e];

            // Mask, scale to log2 domain, block row max.
            float bmax[2] = {-T3_INF, -T3_INF};
#pragma unroll
            for (int nt = 0; nt < NT_S; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int h = e >> 1;
                    const int t = t0 + wc * NT_S * 8 + nt * 8 + 2 * (lane & 3) + (e & 1);
                    bool ok = s_warp && rvalid[h] && t < t_end && (!causal || t <= seqlen - s_q + srow[h]);
                    float x = ok ? sacc[nt][e] * scale_log2 : -T3_INF;
                    sacc[nt][e] = x;
                    bmax[h] = fmaxf(bmax[h], x);
                }
            }
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                bmax[h] = fmaxf(bmax[h], __shfl_xor_sync(0xffffffffu, bmax[h], 1));
                bmax[h] = fmaxf(bmax[h], __shfl_xor_sync(0xffffffffu, bmax[h], 2));
                if (s_warp && (lane & 3) == 0) redmax[wc * TILE_M + lr[h]] = bmax[h];
            }
            __syncthreads();
            float alpha[2];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                float mx = m[h];
#pragma unroll
                for (int w = 0; w < S_WC; ++w) mx = fmaxf(mx, redmax[w * TILE_M + lr[h]]);
                alpha[h] = (mx == -T3_INF) ? 1.f : fast_exp2(m[h] - mx);
                m[h] = mx;
                l[h] *= alpha[h];
            }
#pragma unroll
            for (int nt = 0; nt < NT_S; ++nt) {
                float p[4];
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int h = e >> 1;
                    p[e] = (m[h] == -T3_INF) ? 0.f : fast_exp2(sacc[nt][e] - m[h]);
                    l[h] += p[e];
                }
                if (s_warp) {
                    const int col = wc * NT_S * 8 + nt * 8 + 2 * (lane & 3);
                    *(unsigned*)(Ps + lr[0] * PROW + col) = pack_bf16x2(p[0], p[1]);
                    *(unsigned*)(Ps + lr[1] * PROW + col) = pack_bf16x2(p[2], p[3]);
                }
            }
#pragma unroll
            for (int i = 0; i < NT_O; ++i) {
                o[i][0] *= alpha[0];
                o[i][1] *= alpha[0];
                o[i][2] *= alpha[1];
                o[i][3] *= alpha[1];
            }
            __syncthreads();

            // O += P V for this warp's 16 rows x DV_W value columns.
#pragma unroll
            for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
                unsigned a0, a1, a2, a3;
                ldsm_x4(smem_addr(Ps + (rg * 16 + (lane & 15)) * PROW + kk * 16 + (lane >> 4) * 8), a0, a1, a2, a3);
#pragma unroll
                for (int nt = 0; nt < NT_O; nt += 2) {
                    unsigned b0, b1, b2, b3;
                    int tok = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                    ldsm_x4_t(smem_addr(Kb + tok * SROW + wc * DV_W + nt * 8 + (lane >> 4) * 8), b0, b1, b2, b3);
                    mma_bf16(o[nt], a0, a1, a2, a3, b0, b1);
                    mma_bf16(o[nt + 1], a0, a1, a2, a3, b2, b3);
                }
            }
        }

        // Epilogue: total row sums across the quad and the WC column warps, normalize, store.
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
            l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
        }
        cp_async_wait<0>();
        __syncthreads();
        if ((lane & 3) == 0) {
            redl[wc * TILE_M + lr[0]] = l[0];
            redl[wc * TILE_M + lr[1]] = l[1];
        }
        __syncthreads();
        const int nspl = split_start[req + 1] - split_start[req];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            if (!rvalid[h]) continue;
            float L = 0.f;
#pragma unroll
            for (int w = 0; w < WC; ++w) L += redl[w * TILE_M + lr[h]];
            const float inv = L > 0.f ? 1.f / L : 0.f;
            float lse = L > 0.f ? (m[h] + fast_log2(L)) * T3_LN2 : (nspl == 1 ? T3_INF : -T3_INF);
            const int orow = srow[h] * h_q + head[h];  // row within the request, [s_q][h_q]
            if (nspl == 1) {
                bf16_t* dst = out + (((size_t)req * s_q + srow[h]) * h_q + head[h]) * D_V + wc * DV_W + 2 * (lane & 3);
#pragma unroll
                for (int nt = 0; nt < NT_O; ++nt)
                    *(unsigned*)(dst + nt * 8) = pack_bf16x2(o[nt][2 * h] * inv, o[nt][2 * h + 1] * inv);
                if (wc == 0 && (lane & 3) == 0) lse_out[((size_t)req * h_q + head[h]) * s_q + srow[h]] = lse;
            } else {
                float* dst = opart + ((size_t)split * rows_total + orow) * D_V + wc * DV_W + 2 * (lane & 3);
#pragma unroll
                for (int nt = 0; nt < NT_O; ++nt)
                    *(float2*)(dst + nt * 8) = make_float2(o[nt][2 * h] * inv, o[nt][2 * h + 1] * inv);
                if (wc == 0 && (lane & 3) == 0) lse_part[(size_t)split * rows_total + orow] = lse;
            }
        }
        __syncthreads();
    }
}

// Merges the splits of every request that has more than one. grid (s_q*h_q rows, batch), 128 threads.
extern "C" __global__ void __launch_bounds__(128)
    mla_combine(const int* __restrict__ split_start, const float* __restrict__ opart,
                const float* __restrict__ lse_part, bf16_t* __restrict__ out, float* __restrict__ lse_out, int s_q,
                int h_q) {
    const int row = blockIdx.x, req = blockIdx.y;
    const int first = split_start[req], n = split_start[req + 1] - first;
    if (n <= 1) return;
    const int rows_total = s_q * h_q;
    const int s = row / h_q, head = row % h_q;
    float mx = -T3_INF;
    for (int i = 0; i < n; ++i) mx = fmaxf(mx, lse_part[(size_t)(first + i) * rows_total + row]);
    float sum = 0.f;
    if (mx > -T3_INF)
        for (int i = 0; i < n; ++i) sum += fast_exp2((lse_part[(size_t)(first + i) * rows_total + row] - mx) * T3_LOG2E);
    const float lse = mx == -T3_INF ? T3_INF : mx + fast_log2(sum) * T3_LN2;
    const int c = threadIdx.x * 4;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    if (mx > -T3_INF) {
        for (int i = 0; i < n; ++i) {
            const size_t base = (size_t)(first + i) * rows_total + row;
            const float w = fast_exp2((lse_part[base] - lse) * T3_LOG2E);
            const float4 v = *(const float4*)(opart + base * D_V + c);
            acc[0] += w * v.x;
            acc[1] += w * v.y;
            acc[2] += w * v.z;
            acc[3] += w * v.w;
        }
    }
    bf16_t* dst = out + (((size_t)req * s_q + s) * h_q + head) * D_V + c;
    *(uint2*)dst = make_uint2(pack_bf16x2(acc[0], acc[1]), pack_bf16x2(acc[2], acc[3]));
    if (threadIdx.x == 0) lse_out[((size_t)req * h_q + head) * s_q + s] = lse;
}
