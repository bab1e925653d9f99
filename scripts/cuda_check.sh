#!/usr/bin/env bash
# The `cuda` feature without a GPU: installs nvcc, the CUDA headers and runtime from PyPI wheels into
# .venv (CUDA 13.0, what the GPU machine's driver runs: PTX from a newer nvcc would not load there),
# then builds Candle's CUDA backend with the project. candle-kernels' build script compiles its
# kernels with that nvcc (PTX, plus a static library for compute capability $CUDA_COMPUTE_CAP, 9.0 =
# H100/H200 by default). Candle opens the CUDA libraries at run time (vendor/README.md), so nothing
# CUDA is needed to link or to start the binary.
#   scripts/cuda_check.sh                       the CI check, on a machine without CUDA: builds
#                                               `bottleneck` with --features cuda (release profile, which
#                                               the tests build next), checks it names no CUDA library it
#                                               needs to start, that --device cuda is an error naming the
#                                               missing driver and --device auto extracts on the CPU; runs
#                                               accel's device tests and lints it (tests, examples too)
#   scripts/cuda_check.sh --build-example NAME  a release build of accel's example NAME with --features cuda
#                                               into target/cuda/release/examples/NAME (for the GPU machine)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x .venv/bin/python ] || scripts/setup.sh
t0=$(date +%s)
# nvidia-nvvm is pinned too: nvidia-cuda-nvcc 13.0 otherwise pulls the newest cicc, whose PTX its ptxas refuses.
.venv/bin/python -m pip install -q --disable-pip-version-check \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
cu=$(.venv/bin/python -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
export CUDA_HOME=$cu CUDA_PATH=$cu CUDA_ROOT=$cu PATH=$cu/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
echo "cuda_check: wheels in $(( $(date +%s) - t0 )) s ($(du -sm "$cu" | cut -f1) MB in $cu); $(nvcc --version | tail -1)"

if [ "${1:-}" != "--build-example" ]; then
  # Nothing built here runs on a GPU: nvcc's fast-compile mode builds candle-kernels' PTX and its
  # quantized-MoE static library about 5 times faster (measured: 111 s instead of 586 s on 2 busy
  # cores). Not for --build-example: the driver compiles that PTX for the GPU.
  export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:--Ofc max}"
  cargo build --release -p bottleneck-cli --features cuda
  bin=target/release/bottleneck
  echo "cuda_check: built $bin with --features cuda in $(( $(date +%s) - t0 )) s; it needs to start:"
  readelf -d "$bin" | awk '/NEEDED/ {print "  " $NF}'
  if readelf -d "$bin" | awk '/NEEDED/ {print $NF}' | grep -E 'cuda|cublas|curand|nvrtc|cudnn'; then
    echo "cuda_check: FAIL: the CUDA build links a CUDA library (above): it would not start without CUDA" >&2
    exit 1
  fi
  if command -v nvidia-smi >/dev/null || ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
    echo "cuda_check: this machine has an NVIDIA driver: the no-CUDA checks are skipped"
  else
    export BOTTLENECK_EXPECT_NO_CUDA=1
    model=${SHARED:-$root/../shared}/models/vgg16_keras_notop.onnx
    photos=${SHARED:-$root/../shared}/data/dogs_vs_cats/validation
    if [ ! -f "$model" ] || [ ! -d "$photos" ]; then
      [ -z "${CI:-}" ] || { echo "cuda_check: FAIL: $model or $photos missing (CI has ../shared)" >&2; exit 1; }
      echo "cuda_check: ../shared missing: the --device checks on real photos are skipped"
    else
      tmp=$(mktemp -d)
      trap 'rm -rf "$tmp"' EXIT
      for class in cats dogs; do
        mkdir -p "$tmp/data/$class"
        files=("$photos/$class"/*.jpg)
        ln -s "${files[@]:0:3}" "$tmp/data/$class/"
      done
      set +e
      "$bin" extract --data "$tmp/data" --model "$model" --run "$tmp/cuda" --device cuda 2>"$tmp/cuda.err"
      rc=$?
      set -e
      cat "$tmp/cuda.err"
      if [ $rc != 1 ] || ! grep -q 'libcuda.so.1' "$tmp/cuda.err" || ! grep -q -- '--device cpu' "$tmp/cuda.err" \
        || [ -e "$tmp/cuda" ]; then
        echo "cuda_check: FAIL: --device cuda without CUDA must exit 1 naming libcuda.so.1 and --device cpu, writing nothing (rc $rc)" >&2
        exit 1
      fi
      "$bin" extract --data "$tmp/data" --model "$model" --run "$tmp/auto" --device auto 2>&1 | tee "$tmp/auto.log"
      if ! grep -q 'running on the CPU' "$tmp/auto.log" || [ -z "$(ls "$tmp/auto/features" 2>/dev/null)" ]; then
        echo "cuda_check: FAIL: --device auto without CUDA must extract on the CPU and say so" >&2
        exit 1
      fi
      echo "cuda_check: without CUDA, --device cuda exits 1 naming the driver; --device auto extracts on the CPU"
    fi
  fi
  # accel's device tests in the CUDA build (with BOTTLENECK_EXPECT_NO_CUDA they insist on the
  # missing-driver error), then its code, tests and examples linted with the feature.
  # The same package selection as the build above, so cargo resolves the same features and reuses its
  # artifacts (accel alone would resolve fewer and rebuild most dependencies).
  cargo test --release -p bottleneck-accel -p bottleneck-cli --features bottleneck-cli/cuda --lib device
  cargo clippy --release -p bottleneck-accel --features cuda --all-targets -- -D warnings
  echo "cuda_check: the cuda feature built, started without CUDA and linted in $(( $(date +%s) - t0 )) s"
  exit 0
fi

example=${2:?usage: scripts/cuda_check.sh --build-example NAME}
features=${FEATURES:-cuda}
stubs=$root/target/cuda-stubs
mkdir -p "$stubs"
build() {
  cargo build --release -p bottleneck-accel --example "$example" --features "$features" --target-dir target/cuda
}
build
# candle-kernels also links a static library of quantized-MoE kernels (~32 MB of GPU code in the binary)
# that the networks here never call: swap it for stubs that abort, so the binary fits the GPU machine's
# 64 MiB transfers. KEEP_MOE=1 keeps it.
moe=$(ls target/cuda/release/build/candle-kernels-*/out/libmoe.a 2>/dev/null | head -1)
if [ -n "$moe" ] && [ "${KEEP_MOE:-0}" = 0 ] && ! nm "$moe" 2>/dev/null | grep -q accel_moe_stub; then
  nm -g --defined-only "$moe" | awk 'NF == 3 && $2 == "T" {print $3}' | grep -v '^_Z' | sort -u >"$stubs/moe.syms"
  { echo '#include <stdlib.h>'; echo 'void accel_moe_stub(void) {}'
    sed 's/.*/void &(void) { abort(); }/' "$stubs/moe.syms"; } >"$stubs/moe.c"
  gcc -c -fPIC -O1 -o "$stubs/moe.o" "$stubs/moe.c"
  rm -f "$moe"
  ar rcs "$moe" "$stubs/moe.o"
  rm -f target/cuda/release/examples/"$example" target/cuda/release/examples/"$example"-*
  echo "cuda_check: quantized-MoE kernels ($(wc -l <"$stubs/moe.syms") entry points) replaced by stubs; linking again"
  build
fi
bin=target/cuda/release/examples/$example
echo "cuda_check: built $bin ($(du -h "$bin" | cut -f1)) in $(( $(date +%s) - t0 )) s; it needs to start (the CUDA libraries are opened when CUDA starts):"
readelf -d "$bin" | awk '/NEEDED/ {print "  " $NF}'
