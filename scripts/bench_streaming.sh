#!/usr/bin/env bash
# Issue 17's streaming benchmark, one sitting: `train-head` on ROWS synthetic feature rows of
# [512, 4, 4] (four classes, ROWS/20 validation rows) with the rows read in place from the
# memory-mapped file (what `bottleneck train-head` does) vs the same rows loaded into memory;
# both recipes; peak RSS and seconds. Then `bottleneck train-head` itself under /usr/bin/time, and
# `bottleneck merge` of the same rows written as SHARDS shard files.
#
#   scripts/bench_streaming.sh [ROWS] [SHARDS]      (default 200000 4; needs 3 × ROWS × 32 KiB of disk)
#   STEPS="fit pass cli merge" picks the parts (default: all; each part compares side by side).
set -euo pipefail
STEPS=${STEPS:-fit pass cli merge}
has() { [[ " $STEPS " == *" $1 "* ]]; }
cd "$(dirname "$0")/.."
ROWS=${1:-200000}
SHARDS=${2:-4}
OUT=runs/bench/stream-$ROWS
cargo build --release -q -p bottleneck-head --example bench_stream
cargo build --release -q -p bottleneck-cli
B=target/release/examples/bench_stream
BIN=target/release/bottleneck
echo "# $(date -u +%F\ %H:%M) UTC, $(nproc) vCPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ ! -f "$OUT/features/validation.safetensors" ]; then
  start=$(date +%s.%N)
  "$B" write "$OUT" "$ROWS"
  echo "wrote $ROWS + $((ROWS / 20)) rows ($(du -sh "$OUT/features" | cut -f1)) in $(echo "$(date +%s.%N) - $start" | bc) s"
fi
if has fit; then
  echo "# the 2016 head, 2 epochs: rows mapped vs in memory"
  for values in mapped memory; do "$B" fit "$OUT" "$values" keras2016 2; done
fi
if has pass; then
  echo "# one pass of the probe's streamed solver (objective + gradient): rows mapped vs in memory"
  for values in mapped memory; do "$B" pass "$OUT" "$values"; done
fi
if has cli; then
  echo "# bottleneck train-head (the probe, the default), rows mapped:"
  /usr/bin/time -f "train-head: %e s wall, peak RSS %M KiB" "$BIN" --json train-head --run "$OUT" --force \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); p=r["meta"]["probe"]; print("val accuracy", r["metrics"]["kept_val_accuracy"], "C", p["c"], "passes", p["passes"])'
  echo "# bottleneck train-head --keras2016 --epochs 2, rows mapped:"
  /usr/bin/time -f "train-head --keras2016: %e s wall, peak RSS %M KiB" "$BIN" -q train-head --run "$OUT" --force --keras2016 --epochs 2 > /dev/null
fi
if has merge; then
  SH=runs/bench/stream-$ROWS-shards
  rm -rf "$SH"
  "$B" shards "$SH" "$ROWS" "$SHARDS"
  echo "# bottleneck merge of $SHARDS shard files ($(du -sh "$SH/features" | cut -f1)):"
  /usr/bin/time -f "merge: %e s wall, peak RSS %M KiB" "$BIN" -q merge --run "$SH"
  rm -rf "$SH"
fi
