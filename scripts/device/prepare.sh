#!/usr/bin/env bash
# Builds the GPU check's payload here (the GPU machine has no Rust toolchain and no network):
#   target/gpu_payload/
#     gpu_check              the check, built with --features cuda (Candle's CUDA backend, kernels for
#                            compute capability 9.0: H100/H200), stripped
#     vgg16.f16.safetensors  the Keras VGG16 conv base as f16 weights + its layer list
#     reference.safetensors  features of the first 32 photos at 224 px computed here on the CPU
#                            (f32 arithmetic, the same f16 weights)
#     photos/{cats,dogs}/    the first 100 validation photos of each class
#     gpu_check.sh, torch_vgg.py
# and prints its size (the device tool carries 64 MiB per call, the checkout included).
#   scripts/device/prepare.sh            the CUDA payload (needs scripts/cuda_check.sh's wheels: it installs them)
#   scripts/device/prepare.sh --cpu      a CPU-only build of the same check, then runs
#                                        scripts/device/gpu_check.sh --cpu on it (the dry run)
# Then, on the GPU machine: `bash target/gpu_payload/gpu_check.sh` with carry ["target/gpu_payload"].
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cpu=0
[ "${1:-}" = "--cpu" ] && cpu=1
shared=${SHARED:-$root/../shared}
model=$shared/models/vgg16_keras_notop.onnx
photos=$shared/data/dogs_vs_cats/validation
per_class=${PER_CLASS:-100}
payload=$root/target/gpu_payload
[ -f "$model" ] || { echo "prepare: $model not found" >&2; exit 1; }
[ -x .venv/bin/python ] || scripts/setup.sh
start=$(date +%s)

# 1. The CPU build of the check computes the payload's weights and reference.
cargo build --release -q -p bottleneck-accel --example gpu_check
host_bin=$root/target/release/examples/gpu_check

rm -rf "$payload"
mkdir -p "$payload/photos"
for class in cats dogs; do
  mkdir -p "$payload/photos/$class"
  find "$photos/$class" -maxdepth 1 -type f -name '*.jpg' | sort | head -n "$per_class" \
    | while read -r f; do cp "$f" "$payload/photos/$class/"; done
done
"$host_bin" --payload "$payload" --prepare "$model" --reference-rows 32 --size 224
cp scripts/device/gpu_check.sh scripts/device/torch_vgg.py "$payload/"

# 2. The binary that travels.
if [ $cpu = 1 ]; then
  cp "$host_bin" "$payload/gpu_check"
else
  scripts/cuda_check.sh --build-example gpu_check
  cp target/cuda/release/examples/gpu_check "$payload/gpu_check"
fi
strip "$payload/gpu_check"
echo "prepare: payload $payload in $(( $(date +%s) - start )) s:"
(cd "$payload" && du -sh -- * | sed "s/^/  /")
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
total=$(( tracked + $(du -sb "$payload" | cut -f1) ))
echo "prepare: with the tracked checkout ($(( tracked / 1048576 )) MiB) that travels: $(( total / 1048576 )) MiB of 64 MiB"
if [ "$total" -gt $(( 64 * 1048576 )) ]; then
  echo "prepare: too big for the device tool's 64 MiB: take fewer photos (PER_CLASS=60 $0)" >&2
  exit 1
fi
if [ $cpu = 1 ]; then
  OUT=${OUT:-/tmp/gpu_check_cpu} bash "$payload/gpu_check.sh" "$payload" --cpu
fi
