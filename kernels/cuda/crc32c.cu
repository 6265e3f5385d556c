// crc32c.cu: CRC32C (Castagnoli, reflected polynomial 0x82F63B78, the CRC t3fs stores for every
// chunk block) of fixed-size segments of device memory, so bytes a storage node wrote straight
// into GPU memory (GPUDirect RDMA) are checked where they landed. One thread per segment, byte by
// byte through a 256-entry table that each block builds in shared memory (blockDim.x must be 256).
// out[i] is the standard CRC32C (init and final xor 0xFFFFFFFF) of segment i; the host combines
// the segments' CRCs into the CRC of the whole range (crc32c_combine).

extern "C" __global__ void __launch_bounds__(256)
    crc32c_segments(const u8_t* __restrict__ data, unsigned long long len, unsigned int seg,
                    unsigned int* __restrict__ out, unsigned int nseg) {
    __shared__ unsigned int table[256];
    {
        unsigned int c = threadIdx.x;
#pragma unroll
        for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[threadIdx.x] = c;
    }
    __syncthreads();
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nseg) return;
    const unsigned long long start = (unsigned long long)i * seg;
    unsigned long long end = start + seg;
    if (end > len) end = len;
    unsigned int crc = 0xFFFFFFFFu;
    for (unsigned long long p = start; p < end; ++p) crc = table[(crc ^ data[p]) & 0xffu] ^ (crc >> 8);
    out[i] = crc ^ 0xFFFFFFFFu;
}
