#!/usr/bin/env bash
# The `cuda` feature without a GPU: installs nvcc, the CUDA headers and runtime from PyPI wheels into
# .venv (CUDA 13.0, what the GPU machine's driver runs: PTX from a newer nvcc would not load there),
# then type-checks Candle's CUDA backend and the accel crate. candle-kernels' build script compiles
# its kernels with that nvcc (PTX, plus a static library for compute capability $CUDA_COMPUTE_CAP,
# 9.0 = H100/H200 by default).
#   scripts/cuda_check.sh                       cargo check -p bottleneck-accel --features cuda --all-targets,
#                                               then cargo check -p bottleneck-cli --features cuda
#   scripts/cuda_check.sh --build-example NAME  a release build of accel's example NAME with --features cuda
#                                               into target/cuda/release/examples/NAME, linked against stub
#                                               CUDA libraries made here (the real ones load on the GPU machine)
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
  # A type check needs no fast device code: nvcc's fast-compile mode builds candle-kernels' PTX and its
  # (never called here) quantized-MoE static library about 5 times faster (measured: 111 s instead of
  # 586 s on 2 busy cores). Not for --build-example: the driver compiles that PTX for the GPU.
  export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:--Ofc max}"
  cargo check -p bottleneck-accel --features cuda --all-targets
  # The binary with the feature: every stage's --device wiring over Candle's CUDA backend.
  cargo check -p bottleneck-cli --features cuda
  echo "cuda_check: cargo check --features cuda passed in $(( $(date +%s) - t0 )) s"
  exit 0
fi

example=${2:?usage: scripts/cuda_check.sh --build-example NAME}
features=${FEATURES:-cuda}
# Link-time stand-ins for the CUDA libraries cudarc links (Candle 0.11 builds cudarc with
# dynamic-linking): each exports the symbols the link asks for and carries the SONAME of CUDA 13's
# library, so the binary loads the real ones on the GPU machine. libcudart is the wheel's own.
stubs=$root/target/cuda-stubs
mkdir -p "$stubs/lib"
ln -sf "$cu/lib/libcudart.so.13" "$stubs/lib/libcudart.so"
sonames="cuda:libcuda.so.1 cublas:libcublas.so.13 cublasLt:libcublasLt.so.13 curand:libcurand.so.10 nvrtc:libnvrtc.so.13 cudnn:libcudnn.so.9"
make_stub() { # name soname symbols-file
  local c=$stubs/$1.c
  : >"$c"
  if [ -s "$3" ]; then sed 's/.*/void &(void) {}/' "$3" >>"$c"; fi
  gcc -shared -fPIC -o "$stubs/lib/lib$1.so" -Wl,-soname,"$2" "$c"
}
for pair in $sonames; do
  name=${pair%%:*}
  [ -f "$stubs/lib/lib$name.so" ] || make_stub "$name" "${pair#*:}" /dev/null
done
export CUDNN_LIB=$stubs # one of the variables whose lib/ cudarc's build script adds to the link search
build() {
  cargo build --release -p bottleneck-accel --example "$example" --features "$features" --target-dir target/cuda
}
# The linker names the missing symbols (rust-lld, Rust's default linker here, stops after 20 errors:
# repeat until the link succeeds, collecting them), then every stub is remade with its library's share.
touch "$stubs/undefined.txt"
for pass in $(seq 1 40); do
  if build 2>"$stubs/link.log"; then break; fi
  before=$(wc -l <"$stubs/undefined.txt")
  { cat "$stubs/undefined.txt"
    grep -oE "undefined (reference to \`[^']*'|symbol: [A-Za-z0-9_]+)" "$stubs/link.log" \
      | sed -E "s/undefined reference to \`//; s/'$//; s/undefined symbol: //"
    # Every CUDA symbol the compiled crates refer to (a superset: a stub symbol too many costs nothing).
    nm -u target/cuda/release/deps/*.rlib 2>/dev/null | awk '$1 == "U" {print $2}' \
      | grep -E '^(cu[A-Z]|cublas|curand|nvrtc|cudnn)' || true
  } | sort -u >"$stubs/undefined.new"
  mv "$stubs/undefined.new" "$stubs/undefined.txt"
  if [ "$(wc -l <"$stubs/undefined.txt")" = "$before" ]; then tail -30 "$stubs/link.log" >&2; exit 1; fi
  other=$(grep -vE '^(cu[A-Z]|cublas|curand|nvrtc|cudnn)' "$stubs/undefined.txt" || true)
  [ -z "$other" ] || { echo "cuda_check: undefined symbols of no known CUDA library: $other" >&2; exit 1; }
  for pair in $sonames; do
    name=${pair%%:*}
    case $name in
      cuda) pattern='^cu[A-Z]' ;;
      cublas) pattern='^cublas[^L]' ;;
      *) pattern="^$name" ;;
    esac
    grep -E "$pattern" "$stubs/undefined.txt" >"$stubs/$name.syms" || true
    make_stub "$name" "${pair#*:}" "$stubs/$name.syms"
  done
  echo "cuda_check: link pass $pass: stubs for $(wc -l <"$stubs/undefined.txt") CUDA symbols so far"
done
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
echo "cuda_check: built $bin ($(du -h "$bin" | cut -f1)) in $(( $(date +%s) - t0 )) s; it needs at run time:"
readelf -d "$bin" | awk '/NEEDED/ {print "  " $NF}'
