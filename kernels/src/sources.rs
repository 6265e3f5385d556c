//! The CUDA C++ kernel sources, embedded in the crate and specialized as text before NVRTC
//! compiles them (DeepGEMM-style JIT: shape constants become `#define`s, entry points are
//! `extern "C"` so their names are not mangled).
//!
//! Each [`KernelSource`] is fully self-contained (common helpers prepended, no `#include`), so
//! NVRTC needs no include path and the same text compiles on a GPU host or on CI with only
//! libnvrtc. Its [`KernelSource::key`] is what the on-disk cache is keyed on (together with the
//! NVRTC version, the options and the architecture).

const COMMON: &str = include_str!("../cuda/common.cuh");
const MLA: &str = include_str!("../cuda/mla_decode.cu");
const MLA_PIPELINED: &str = include_str!("../cuda/mla_decode_pipelined.cu");
const GEMM: &str = include_str!("../cuda/fp8_gemm.cu");
const GEMM_WGMMA: &str = include_str!("../cuda/fp8_gemm_wgmma.cu");
const UTIL: &str = include_str!("../cuda/util.cu");
const QUANT: &str = include_str!("../cuda/quant.cu");
const CRC: &str = include_str!("../cuda/crc32c.cu");

/// Row-tile heights the MLA kernel is compiled for (q rows per CTA).
pub const MLA_TILES: [usize; 3] = [16, 32, 64];

/// A specialized kernel source: its text and the entry points it defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSource {
    /// Short name, used in logs and cache file names (e.g. `mla_decode_m64`).
    pub name: String,
    /// The complete source NVRTC compiles.
    pub text: String,
    /// `extern "C"` kernels the module exports.
    pub entries: Vec<&'static str>,
}

impl KernelSource {
    fn build(name: String, defines: &[(&str, String)], body: &str, entries: Vec<&'static str>) -> KernelSource {
        let mut text = String::with_capacity(COMMON.len() + body.len() + 256);
        for (k, v) in defines {
            text.push_str(&format!("#define {k} {v}\n"));
        }
        text.push_str(COMMON);
        text.push('\n');
        text.push_str(body);
        KernelSource { name, text, entries }
    }

    /// The text the compile cache is keyed on.
    pub fn key(&self) -> &str {
        &self.text
    }
}

/// The two MLA decode kernels. `SplitKv` is the one verified on an H200 (the default);
/// `Pipelined` (32-token tiles in a 3–4 deep cp.async ring, narrow tiles computing S on fewer
/// warps, two S accumulator chains) compiles cleanly but has not yet run on a GPU, so it is
/// opt-in until `kernels/scripts/gpu-check.sh` has passed with it (docs/kernels.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlaKernel {
    SplitKv,
    Pipelined,
}

impl MlaKernel {
    pub const ALL: [MlaKernel; 2] = [MlaKernel::SplitKv, MlaKernel::Pipelined];

    pub fn name(self) -> &'static str {
        match self {
            MlaKernel::SplitKv => "splitkv",
            MlaKernel::Pipelined => "pipelined",
        }
    }
}

/// The MLA split-KV decode + combine kernels of `kernel` for a q-row tile of `tile_m` rows (16,
/// 32 or 64).
pub fn mla_decode_of(kernel: MlaKernel, tile_m: usize) -> KernelSource {
    let (name, body) = match kernel {
        MlaKernel::SplitKv => (format!("mla_decode_m{tile_m}"), MLA),
        MlaKernel::Pipelined => (format!("mla_pipelined_m{tile_m}"), MLA_PIPELINED),
    };
    KernelSource::build(name, &[("TILE_M", tile_m.to_string())], body, vec!["mla_decode_split", "mla_combine"])
}

/// The default (verified) MLA kernel for a q-row tile of `tile_m` rows.
pub fn mla_decode(tile_m: usize) -> KernelSource {
    mla_decode_of(MlaKernel::SplitKv, tile_m)
}

/// The block-scaled FP8 GEMM kernel with a `stages`-deep load pipeline.
pub fn fp8_gemm(stages: usize) -> KernelSource {
    KernelSource::build(format!("fp8_gemm_s{stages}"), &[("STAGES", stages.to_string())], GEMM, vec!["fp8_gemm_nt"])
}

/// The same GEMM on Hopper's FP8 tensor cores (`wgmma`, compiles for `sm_90a` only), `stages` deep.
pub fn fp8_gemm_wgmma(stages: usize) -> KernelSource {
    KernelSource::build(
        format!("fp8_gemm_wgmma_s{stages}"),
        &[("STAGES", stages.to_string())],
        GEMM_WGMMA,
        vec!["fp8_gemm_nt_wgmma"],
    )
}

/// 1×128 e4m3 activation quantization (bit-identical to `quant::quantize_1x128`).
pub fn quant() -> KernelSource {
    KernelSource::build("quant".into(), &[], QUANT, vec!["quant_1x128_f32"])
}

/// CRC32C of device memory in segments (checks of bytes written in place by GPUDirect RDMA).
pub fn crc32c() -> KernelSource {
    KernelSource::build("crc32c".into(), &[], CRC, vec!["crc32c_segments"])
}

/// Device-side random fills for benchmarks and tests.
pub fn util() -> KernelSource {
    KernelSource::build("util".into(), &[], UTIL, vec!["fill_bf16", "fill_e4m3", "fill_f32"])
}

/// Every kernel variant the crate launches (what the CI compile check and the cache warm-up cover).
/// The `wgmma` GEMM is in the list although it builds only for `sm_90a` (the CI target).
pub fn all() -> Vec<KernelSource> {
    let mut v: Vec<KernelSource> =
        MlaKernel::ALL.iter().flat_map(|&k| MLA_TILES.iter().map(move |&t| mla_decode_of(k, t))).collect();
    v.push(fp8_gemm(crate::gpu_consts::GEMM_STAGES));
    v.push(fp8_gemm_wgmma(crate::gpu_consts::GEMM_STAGES));
    v.push(util());
    v.push(quant());
    v.push(crc32c());
    v
}

/// Picks the MLA row tile for `rows` q rows per kv head (s_q · h_q / h_kv).
pub fn mla_tile_for(rows: usize) -> usize {
    MLA_TILES.iter().copied().find(|&t| rows <= t).unwrap_or(64)
}

/// Dynamic shared memory (bytes) an MLA kernel needs for a row tile (must mirror the layout at
/// the top of its `mla_decode_split`: Q tile, K tiles, P tile, two reduction arrays).
pub fn mla_smem_bytes_of(kernel: MlaKernel, tile_m: usize) -> usize {
    let (block_n, stages) = match kernel {
        MlaKernel::SplitKv => (if tile_m <= 32 { 64 } else { 32 }, 2),
        MlaKernel::Pipelined => (32, if tile_m == 16 { 4 } else { 3 }),
    };
    let wc = 8 / (tile_m / 16);
    let srow = 576 + 8;
    let prow = block_n + 8;
    (tile_m * srow + stages * block_n * srow + tile_m * prow) * 2 + 2 * wc * tile_m * 4
}

/// Shared memory of the default MLA kernel.
pub fn mla_smem_bytes(tile_m: usize) -> usize {
    mla_smem_bytes_of(MlaKernel::SplitKv, tile_m)
}

/// Dynamic shared memory (bytes) the FP8 GEMM kernel needs.
pub fn gemm_smem_bytes(stages: usize) -> usize {
    stages * 2 * 128 * 128
}

/// Dynamic shared memory (bytes) the `wgmma` GEMM kernel needs: the same stages plus 1 KiB of slack,
/// because the kernel aligns its tiles to 1024 bytes (the 128-byte swizzle's repeat) by hand.
pub fn gemm_wgmma_smem_bytes(stages: usize) -> usize {
    gemm_smem_bytes(stages) + 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_specialized_and_self_contained() {
        for s in all() {
            assert!(!s.text.contains("#include"), "{} must not include headers", s.name);
            for e in &s.entries {
                assert!(s.text.contains(&format!("{e}(")), "{} lacks entry {e}", s.name);
            }
        }
        assert!(mla_decode(32).text.starts_with("#define TILE_M 32\n"));
        assert_ne!(mla_decode(16).key(), mla_decode(64).key());
    }

    #[test]
    fn tile_choice_and_smem_fit_hopper() {
        assert_eq!(mla_tile_for(1), 16);
        assert_eq!(mla_tile_for(16), 16);
        assert_eq!(mla_tile_for(17), 32);
        assert_eq!(mla_tile_for(128), 64);
        for k in MlaKernel::ALL {
            for t in MLA_TILES {
                // 227 KiB is the most dynamic shared memory one CTA may opt into on sm_90.
                assert!(mla_smem_bytes_of(k, t) <= 232_448, "{k:?} tile {t}: {}", mla_smem_bytes_of(k, t));
            }
        }
        assert_ne!(mla_decode_of(MlaKernel::Pipelined, 16).name, mla_decode(16).name);
        assert!(gemm_smem_bytes(crate::gpu_consts::GEMM_STAGES) <= 232_448);
        assert!(gemm_wgmma_smem_bytes(crate::gpu_consts::GEMM_STAGES) <= 232_448);
    }
}
