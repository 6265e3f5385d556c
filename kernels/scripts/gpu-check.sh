#!/usr/bin/env bash
# gpu-check.sh: every GPU check of t3fs-kernels in one run, on a GPU host with no Rust toolchain.
#
# Build here (x86-64 Linux) first:   kernels/scripts/gpu-check.sh --build [DIR]   (default DIR .gpu-bin)
# Then on the GPU host, from the repo root:  kernels/scripts/gpu-check.sh [DIR]
# It finds libnvrtc (system, CUDA toolkit or the nvidia-cuda-nvrtc pip wheel), runs the NVRTC
# compile check, the GPU correctness tests, the kernel benchmarks, the torch ceilings (bf16 and
# FP8 GEMM through cuBLAS) and a SASS census, writes logs under $OUT (or ./gpu-check-out) and
# prints a short table last. It builds nothing on the GPU host and never changes GPU settings.
set -uo pipefail
if [ "${1:-}" = "--build" ]; then
  dir=${2:-.gpu-bin}
  mkdir -p "$dir"
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/t3fs-target}
  msgs=$(cargo test --release -p t3fs-kernels --features cuda --no-run --message-format=json 2>/dev/null) || exit 1
  for t in gpu_kernels nvrtc_compile; do
    exe=$(jq -r "select(.reason==\"compiler-artifact\" and .target.name==\"$t\" and .executable!=null) | .executable" <<<"$msgs" | tail -1)
    cp "$exe" "$dir/$t" && strip "$dir/$t"
  done
  cargo build --release -p t3fs-kernels --features cuda --example kernel_bench || exit 1
  cp "$CARGO_TARGET_DIR/release/examples/kernel_bench" "$dir/" && strip "$dir/kernel_bench"
  # The loader examples run a whole in-process t3fs cluster on the GPU host.
  cargo build --release -p t3fs --features cuda --example decode_from_t3fs --example train_step_from_t3fs || exit 1
  for e in decode_from_t3fs train_step_from_t3fs; do cp "$CARGO_TARGET_DIR/release/examples/$e" "$dir/" && strip "$dir/$e"; done
  ls -la "$dir"
  exit 0
fi
bin=${1:-.gpu-bin}
out=${OUT:-./gpu-check-out}
mkdir -p "$out"
export T3FS_KERNEL_CACHE="$out/kcache"
# libnvrtc: the system's, the toolkit's, or torch's wheel.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null); do
  [ -e "$d/libnvrtc.so.13" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}" && break
done
{
  date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; ldconfig -p | grep -E 'libnvrtc|libcuda\.so' | head
} 2>&1 | tee "$out/env.txt"
status() { if [ "$1" -eq 0 ]; then echo PASS; else echo "FAIL($1)"; fi; }
"$bin/nvrtc_compile" --nocapture > "$out/nvrtc.txt" 2>&1; r_nvrtc=$?
grep -E "NVRTC|bytes of CUBIN|registers|test result" "$out/nvrtc.txt" | tail -20
"$bin/gpu_kernels" --test-threads=1 --nocapture > "$out/tests.txt" 2>&1; r_tests=$?
grep -E "^(ok|FAIL)|passed|SKIPPED|panicked|test result" "$out/tests.txt" | tail -60
timeout 300 "$bin/kernel_bench" ${BENCH_ARGS:-} > "$out/bench.txt" 2>&1; r_bench=$?
if [ -x "$bin/decode_from_t3fs" ]; then
  (cd "$out" && timeout 240 "$OLDPWD/$bin/decode_from_t3fs" 32 2048 64) > "$out/decode.txt" 2>&1; r_decode=$?
  (cd "$out" && timeout 240 "$OLDPWD/$bin/train_step_from_t3fs" 8192 4096 256) > "$out/train.txt" 2>&1; r_train=$?
else
  r_decode=skipped; r_train=skipped
fi
python3 - > "$out/torch.txt" 2>&1 <<'PY'
import torch
def bench(f, it=20):
    for _ in range(3): f()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(it):
        s.record(); f(); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    ts.sort(); return ts[len(ts)//2]
n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16); b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
ms = bench(lambda: a @ b); print(f"torch bf16 gemm 8192^3: {2*n**3/ms/1e9:.0f} TFLOPS")
try:
    a8 = a.to(torch.float8_e4m3fn); b8 = b.to(torch.float8_e4m3fn).t()
    one = torch.tensor(1.0, device="cuda")
    ms = bench(lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    print(f"torch fp8 _scaled_mm 8192^3 (per-tensor scales, cuBLAS): {2*n**3/ms/1e9:.0f} TFLOPS")
except Exception as ex:
    print("torch fp8 gemm unavailable:", ex)
PY
for f in "$T3FS_KERNEL_CACHE"/*.cubin; do
  [ -e "$f" ] || continue
  # The cache entry is header + key + CUBIN; cuobjdump wants the ELF, which starts at the magic.
  python3 -c "import sys; d=open(sys.argv[1],'rb').read(); open(sys.argv[2],'wb').write(d[d.index(b'\x7fELF'):])" "$f" "$out/k.cubin"
  echo "$(basename "$f"): $(cuobjdump --dump-sass "$out/k.cubin" 2>/dev/null | grep -oE '\b(HMMA|QMMA|HGMMA|QGMMA|LDSM|LDGSTS)[A-Z0-9._]*' | sort | uniq -c | tr '\n' ' ')"
done > "$out/sass.txt" 2>&1
rm -f "$out/k.cubin"
echo
echo "## t3fs-kernels GPU check $(date -u +%F) on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "| check | result |"
echo "| --- | --- |"
echo "| NVRTC compile (sm_90a, no spills) | $(status $r_nvrtc) |"
echo "| GPU tests vs CPU references | $(status $r_tests): $(grep -E 'cases passed|^ok   (quant|crc32c)' "$out/tests.txt" | tr '\n' ' ') |"
echo "| benchmarks | $(status $r_bench) |"
echo "| decode_from_t3fs | $r_decode: $(grep -E 'GB/s|matches|GPU decode|GPUDirect' "$out/decode.txt" 2>/dev/null | tr '\n' ';') |"
echo "| train_step_from_t3fs | $r_train: $(grep -E 'GB/s|first training' "$out/train.txt" 2>/dev/null | tr '\n' ';') |"
cat "$out/torch.txt" | sed 's/^/| ceiling | /; s/$/ |/'
grep -E "^device copy|^\| " "$out/bench.txt"
sed 's/^/sass: /' "$out/sass.txt"
