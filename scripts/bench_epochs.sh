#!/usr/bin/env bash
# Fine-tuning epoch time with the augmentation cache vs without, measured back to back in one script.
#   scripts/bench_epochs.sh RUN [EPOCHS]
# RUN holds features/ and head/ (stage 2) and, to time cached epochs only, finetune-cache/ with 10 draws
# (any earlier `finetune --aug-cache 10` run on it). RUN itself is not modified: its stage-2 outputs are
# copied and its cache hard-linked into two scratch run folders.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${1:?usage: scripts/bench_epochs.sh RUN [EPOCHS]}
epochs=${2:-2}
data=${DATA:-$root/../shared/data/dogs_vs_cats}
bin=${BIN:-$root/target/release/bottleneck}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for k in 10 0; do
  mkdir -p "$work/c$k"
  cp -r "$run/features" "$run/head" "$work/c$k/"
  if [ -d "$run/finetune-cache" ]; then cp -al "$run/finetune-cache" "$work/c$k/"; fi
done
echo "start $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for k in 10 0; do
  /usr/bin/time -f "  --aug-cache $k: %e s wall, peak RSS %M KB" "$bin" --json finetune --run "$work/c$k" \
    --data "$data" --aug-cache "$k" --lr 1e-5 --epochs "$epochs" --threads 2 > "$work/c$k.json"
  python3 - "$work/c$k/finetune/metrics.json" "$k" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"  --aug-cache {sys.argv[2]}: epoch seconds", [round(e["seconds"], 1) for e in m["epochs"]],
      "val accuracy", [e["val_accuracy"] for e in m["epochs"]])
PY
done
echo "end $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
