#!/usr/bin/env bash
# FUSE mount vs a local directory, same workloads, same run:
#   fio sequential write and read (1 MiB blocks), fio 4 KiB random read (buffered and O_DIRECT),
#   and create / stat / unlink of many empty files (ops/s).
#
#   fuse/bench/fio-compare.sh [SIZE] [RUNTIME_S] [FILES]
#   (defaults: 512M file, 10 s per random-read run, 2000 files for the metadata ops;
#   T3FS=path/to/t3fs, default $CARGO_TARGET_DIR/release/t3fs or target/release/t3fs;
#   WORK=/var/tmp by default: the local directory lives there, on the same disk as the cluster;
#   META_ONLY=1 runs only the create / stat / unlink part, without fio)
#
# Starts `t3fs local up --mount MNT --detach` (3 storage servers, 3-replica chains, default mount
# config: read-ahead on, readdirplus on) in a fresh directory under $WORK and runs every workload
# first on MNT, then on a local directory beside it. Reads drop the page cache of their file first
# (fio invalidate=1), so buffered reads start cold on both sides. Everything is removed on exit,
# also on failure.
set -euo pipefail

SIZE=${1:-512M}
RUNTIME=${2:-10}
FILES=${3:-2000}
T3FS=${T3FS:-}
if [[ -z $T3FS ]]; then
  for c in "${CARGO_TARGET_DIR:-target}/release/t3fs" target/release/t3fs; do
    [[ -x $c ]] && { T3FS=$c; break; }
  done
fi
[[ -x ${T3FS:-} ]] || { echo "t3fs binary not found: cargo build --release -p t3fs, or set T3FS" >&2; exit 1; }
META_ONLY=${META_ONLY:-}
tools="fio jq python3"
[[ -n $META_ONLY ]] && tools=python3
for tool in $tools; do
  command -v $tool >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done

WORKDIR=$(mktemp -d "${WORK:-/var/tmp}/t3fs-fio-compare.XXXXXX")
MNT=$WORKDIR/mnt
LOCAL=$WORKDIR/local
mkdir -p "$MNT" "$LOCAL"
cleanup() {
  "$T3FS" local down --data-dir "$WORKDIR/cluster" >/dev/null 2>&1 || true
  "$T3FS" umount "$MNT" >/dev/null 2>&1 || true
  rm -rf "$WORKDIR"
}
trap cleanup EXIT

"$T3FS" local up --data-dir "$WORKDIR/cluster" --mount "$MNT" --detach >/dev/null
for _ in $(seq 100); do
  grep -q " $MNT " /proc/mounts && break
  sleep 0.1
done
grep -q " $MNT " /proc/mounts || { echo "the mount did not appear at $MNT" >&2; exit 1; }

# fio DIR NAME ARGS... -> prints "MiB/s IOPS" of the job's read or write side.
fio_run() {
  local dir=$1 name=$2
  shift 2
  local out
  out=$(fio --name="$name" --directory="$dir" --filename="$name.dat" --size="$SIZE" --ioengine=psync \
    --invalidate=1 --group_reporting --output-format=json "$@")
  jq -r '.jobs[0] | (if .write.io_bytes > 0 then .write else .read end) | "\(.bw / 1024) \(.iops)"' <<<"$out"
}

# Metadata ops: create (O_CREAT|O_EXCL + close), stat, unlink of FILES empty files, ops/s each.
meta_run() {
  python3 - "$1" "$FILES" <<'PY'
import os, sys, time
d, n = os.path.join(sys.argv[1], "meta"), int(sys.argv[2])
os.mkdir(d)
names = [os.path.join(d, "f%06d" % i) for i in range(n)]
def timed(f):
    t = time.perf_counter()
    for p in names:
        f(p)
    return n / (time.perf_counter() - t)
c = timed(lambda p: os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)))
s = timed(os.stat)
u = timed(os.unlink)
os.rmdir(d)
print(f"{c:.0f} {s:.0f} {u:.0f}")
PY
}

declare -A R
for side in mnt local; do
  dir=$MNT
  [[ $side == local ]] && dir=$LOCAL
  if [[ -z $META_ONLY ]]; then
    R[$side.seqw]=$(fio_run "$dir" seq --rw=write --bs=1M --end_fsync=1)
    R[$side.seqr]=$(fio_run "$dir" seq --rw=read --bs=1M)
    R[$side.randr]=$(fio_run "$dir" seq --rw=randread --bs=4k --runtime="$RUNTIME" --time_based)
    R[$side.randrd]=$(fio_run "$dir" seq --rw=randread --bs=4k --direct=1 --runtime="$RUNTIME" --time_based)
  fi
  R[$side.meta]=$(meta_run "$dir")
  rm -f "$dir/seq.dat"
done

mib() { awk '{printf "%.1f MiB/s", $1}' <<<"$1"; }
iops() { awk '{printf "%.0f IOPS", $2}' <<<"$1"; }
col() { awk -v i="$2" '{printf "%s ops/s", $i}' <<<"$1"; }
echo "t3fs FUSE mount vs local directory ($(date -u +%F), $(nproc) cores, file $SIZE, random reads ${RUNTIME}s, $FILES files)"
printf '%-34s %-18s %-18s\n' workload "t3fs mount" "local dir"
if [[ -z $META_ONLY ]]; then
  printf '%-34s %-18s %-18s\n' "fio seq write 1 MiB (+fsync)" "$(mib "${R[mnt.seqw]}")" "$(mib "${R[local.seqw]}")"
  printf '%-34s %-18s %-18s\n' "fio seq read 1 MiB (cold)" "$(mib "${R[mnt.seqr]}")" "$(mib "${R[local.seqr]}")"
  printf '%-34s %-18s %-18s\n' "fio rand read 4 KiB" "$(iops "${R[mnt.randr]}")" "$(iops "${R[local.randr]}")"
  printf '%-34s %-18s %-18s\n' "fio rand read 4 KiB O_DIRECT" "$(iops "${R[mnt.randrd]}")" "$(iops "${R[local.randrd]}")"
fi
printf '%-34s %-18s %-18s\n' "create (open O_CREAT|O_EXCL+close)" "$(col "${R[mnt.meta]}" 1)" "$(col "${R[local.meta]}" 1)"
printf '%-34s %-18s %-18s\n' "stat" "$(col "${R[mnt.meta]}" 2)" "$(col "${R[local.meta]}" 2)"
printf '%-34s %-18s %-18s\n' "unlink" "$(col "${R[mnt.meta]}" 3)" "$(col "${R[local.meta]}" 3)"
if [[ -z $META_ONLY ]]; then
  echo "fio: --ioengine=psync --size=$SIZE --invalidate=1; seq: --bs=1M (--end_fsync=1 for write); rand: --bs=4k --runtime=$RUNTIME --time_based [--direct=1]"
fi
