#!/usr/bin/env bash
# Native-client data benchmark beside fio on a local directory of the same disk, in one run.
#
#   cli/bench/native-vs-fio.sh [FILES] [SIZE] [BLOCK] [CONCURRENCY]
#   (defaults: 16 files of 64M, 4M blocks, 8 in flight; T3FS=path/to/t3fs, default
#   target/release/t3fs or $CARGO_TARGET_DIR/release/t3fs; WORK=/var/tmp by default)
#
# Starts `t3fs local up --detach` (3 storage servers, 3-replica chains) in a fresh directory under
# $WORK, runs `t3fs bench` (write then read FILES files of SIZE in BLOCK calls, CONCURRENCY files in
# flight), then runs fio with the same shape on a local directory beside it: CONCURRENCY jobs, each
# writing (buffered, fsync at the end) and then reading (page cache dropped for the files first,
# fio's invalidate=1) its share of the files in BLOCK-sized calls. Prints one table with both.
# Everything it created is removed on exit, also on failure.
set -euo pipefail

FILES=${1:-16}
SIZE=${2:-64M}
BLOCK=${3:-4M}
CONC=${4:-8}
T3FS=${T3FS:-}
if [[ -z $T3FS ]]; then
  for c in "${CARGO_TARGET_DIR:-target}/release/t3fs" target/release/t3fs; do
    [[ -x $c ]] && { T3FS=$c; break; }
  done
fi
[[ -x ${T3FS:-} ]] || { echo "t3fs binary not found: build with cargo build --release -p t3fs or set T3FS" >&2; exit 1; }
command -v fio >/dev/null || { echo "fio is not installed" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq is not installed" >&2; exit 1; }
(( FILES % CONC == 0 )) || { echo "FILES ($FILES) must be a multiple of CONCURRENCY ($CONC) for fio" >&2; exit 1; }

WORKDIR=$(mktemp -d "${WORK:-/var/tmp}/t3fs-native-vs-fio.XXXXXX")
cleanup() {
  "$T3FS" local down --data-dir "$WORKDIR/cluster" >/dev/null 2>&1 || true
  rm -rf "$WORKDIR"
}
trap cleanup EXIT

"$T3FS" local up --data-dir "$WORKDIR/cluster" --detach >/dev/null
native=$("$T3FS" bench --data-dir "$WORKDIR/cluster" --files "$FILES" --size "$SIZE" --block "$BLOCK" \
  --concurrency "$CONC" --json)

mkdir -p "$WORKDIR/fio"
per_job=$(( FILES / CONC ))
fio_run() { # RW
  fio --name="$1" --directory="$WORKDIR/fio" --rw="$1" --bs="$BLOCK" --filesize="$SIZE" \
    --nrfiles="$per_job" --numjobs="$CONC" --ioengine=psync --end_fsync=1 --invalidate=1 \
    --group_reporting --output-format=json
}
fw=$(fio_run write)
fr=$(fio_run read)

row() { # NAME MIB_S IOPS
  printf '%-28s %12.1f %12.1f\n' "$1" "$2" "$3"
}
echo "t3fs bench vs fio: $FILES files x $SIZE, $BLOCK blocks, $CONC in flight ($(date -u +%F), $(nproc) cores)"
printf '%-28s %12s %12s\n' "workload" "MiB/s" "IOPS"
row "t3fs native seq write" "$(jq .write.mib_per_s <<<"$native")" "$(jq .write.iops <<<"$native")"
row "t3fs native seq read" "$(jq .read.mib_per_s <<<"$native")" "$(jq .read.iops <<<"$native")"
row "fio local dir seq write" "$(jq '.jobs[0].write.bw / 1024' <<<"$fw")" "$(jq '.jobs[0].write.iops' <<<"$fw")"
row "fio local dir seq read" "$(jq '.jobs[0].read.bw / 1024' <<<"$fr")" "$(jq '.jobs[0].read.iops' <<<"$fr")"
echo "commands: t3fs bench --files $FILES --size $SIZE --block $BLOCK --concurrency $CONC;" \
  "fio --rw=write|read --bs=$BLOCK --filesize=$SIZE --nrfiles=$per_job --numjobs=$CONC --ioengine=psync --end_fsync=1 --invalidate=1"
