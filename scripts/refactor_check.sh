#!/usr/bin/env bash
# Records what a refactor must not change: seeded outputs of `train-head`, `scratch` (2 epochs) and
# `finetune` (1 epoch) on a small real subset of ../shared/data/dogs_vs_cats, as one text file of
# sha256 digests (every weight tensor, byte for byte) and the metrics with wall times removed.
#   scripts/refactor_check.sh BIN OUT.txt      e.g. target/release/bottleneck before.txt
# Run it with the binary before and after a change on the same machine (floats differ across CPUs),
# then `diff before.txt after.txt` must print nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "$1")
out=$(realpath -m "$2")
shared=${SHARED:-$root/../shared}
py=$root/.venv/bin/python
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$root/.ort/lib/libonnxruntime.so}
work=$(mktemp -d)
if [ -n "${KEEP:-}" ]; then echo "keeping $work"; else trap 'rm -rf "$work"' EXIT; fi
for split in train:40 validation:20; do
  name=${split%%:*}; n=${split##*:}
  for class in cats dogs; do
    mkdir -p "$work/data/$name/$class"
    # sed reads all of its input: `head` would close the pipe early and fail the pipeline under pipefail.
    ls "$shared/data/dogs_vs_cats/$name/$class" | sort | sed -n "1,${n}p" | while read -r f; do
      ln -s "$shared/data/dogs_vs_cats/$name/$class/$f" "$work/data/$name/$class/$f"
    done
  done
done
run=$work/run
model=$shared/models/vgg16_keras_notop.onnx
"$bin" -q extract --data "$work/data" --model "$model" --preprocess caffe --size 150 --run "$run" --threads 2
# Later binaries default to the probe head and the last epoch: ask for what the first one did.
head_flags=()
if "$bin" train-head --help | grep -q -- --keras2016; then head_flags=(--keras2016 --keep best); fi
"$bin" -q train-head --run "$run" --epochs 5 --seed 0 "${head_flags[@]}"
"$bin" -q scratch --data "$work/data" --run "$run" --epochs 2
"$bin" -q finetune --run "$run" --data "$work/data" --epochs 1 --aug-cache 1 --lr 1e-5 --threads 2 --keep best
# The ONNX files a user deploys: finetune's model.onnx, the stage-2 classifier (`export --stage
# head`) and an int8 backbone (`quantize`), byte for byte.
"$bin" -q export --run "$run" --stage head --out "$work/head.onnx"
"$bin" -q quantize --model "$model" --calib "$work/data" --out "$work/int8.onnx"
"$py" - "$run" "$work" > "$out" <<'PY'
import hashlib, json, sys, pathlib
from safetensors.numpy import load_file
run = pathlib.Path(sys.argv[1])
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in ("seconds", "total_seconds")}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
for rel in ["features/train.safetensors", "features/validation.safetensors",
            "head/head.safetensors", "scratch/model.safetensors", "scratch/checkpoint.safetensors",
            "finetune/block.safetensors", "finetune/head.safetensors", "finetune/checkpoint.safetensors"]:
    for name, t in sorted(load_file(str(run / rel)).items()):
        print(rel, name, t.dtype, list(t.shape), hashlib.sha256(t.tobytes()).hexdigest())
for rel in ["head/metrics.json", "scratch/metrics.json", "finetune/metrics.json",
            "head/confusion.json", "scratch/confusion.json", "finetune/confusion.json"]:
    print(rel, json.dumps(strip(json.loads((run / rel).read_text())), sort_keys=True))
work = pathlib.Path(sys.argv[2])
for path in [run / "finetune/model.onnx", work / "head.onnx", work / "int8.onnx"]:
    print(path.relative_to(work), hashlib.sha256(path.read_bytes()).hexdigest())
PY
echo "wrote $out"
