#!/usr/bin/env bash
# The GPU check of issue 18, on a lent GPU machine: runs the payload that scripts/device/prepare.sh
# built here (nothing is compiled there) and PyTorch's VGG16 with the same weights in the same run.
#   scripts/device/gpu_check.sh [PAYLOAD] [--cpu]
# PAYLOAD defaults to this script's folder when it holds the payload (a copy sits in it), else
# target/gpu_payload. --cpu: a slow dry run on the CPU with a handful of photos.
# Logs and JSON summaries go to $OUT (the device tool's output folder) or /tmp/gpu_check_out.
# Stays under 8 minutes: the Rust part is cut at 6, PyTorch at 2.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
payload="" cpu=0
for a in "$@"; do
  case "$a" in
    --cpu) cpu=1 ;;
    *) payload=$a ;;
  esac
done
if [ -z "$payload" ]; then
  if [ -f "$here/vgg16.f16.safetensors" ]; then payload=$here; else payload=$here/../../target/gpu_payload; fi
fi
payload=$(cd "$payload" && pwd) || { echo "gpu_check: no payload folder (run scripts/device/prepare.sh here first)"; exit 1; }
out=${OUT:-/tmp/gpu_check_out}
mkdir -p "$out"
bin=$payload/gpu_check
torch_py=$payload/torch_vgg.py
[ -f "$torch_py" ] || torch_py=$here/torch_vgg.py
start=$(date +%s)
echo "gpu_check: payload $payload ($(du -sh "$payload" | cut -f1)), output $out"

if [ $cpu = 0 ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  # The binary opens the driver's libcuda and CUDA 13's cuBLAS, cuBLASLt, cuRAND and NVRTC (and cuDNN
  # when built with it) when CUDA starts (vendor/README.md): take them from PyTorch's nvidia-* wheels.
  libdirs=$(python3 - <<'PY'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = set()
for r in roots:
    for so in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(so))
print(":".join(sorted(dirs)))
PY
)
  # The driver's libcuda.so.1 usually sits in /usr/local/nvidia/lib64 on these machines.
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [ -d "$d" ] && libdirs="$libdirs:$d"; done
  export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  for lib in libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudnn.so.9; do
    found=$(IFS=:; for d in $LD_LIBRARY_PATH /usr/lib/x86_64-linux-gnu; do [ -e "$d/$lib" ] && echo "$d/$lib" && break; done)
    echo "lib: $lib -> ${found:-not found (the check names what CUDA misses when it starts)}"
  done
  args=()
  torch_args=()
else
  args=(--cpu --photos 8 --batch 4 --iters 2 --epoch-images 8 --train-batch 4)
  torch_args=(--cpu --batch 4 --iters 2)
fi

timeout 360 "$bin" --payload "$payload" --work "$out" "${args[@]}" 2>&1 | tee "$out/rust.log"
echo "gpu_check: rust part exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
PYTHONUNBUFFERED=1 timeout 120 python3 "$torch_py" --payload "$payload" --work "$out" "${torch_args[@]}" 2>&1 | tee "$out/torch.log"
echo "gpu_check: torch part exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
r, t = load("rust_summary.json"), load("torch_summary.json")
for k in ("f32", "f32+tf32", "bf16"):
    a, b = r.get(f"extract_img_s_{k}"), t.get(f"extract_img_s_{k}")
    if a and b:
        print(f"Candle/PyTorch {k}: {float(a):.0f} / {float(b):.0f} img/s = {float(a) / float(b):.2f}x")
best = max((v for k, v in t.items() if k.startswith("extract_img_s_bf16")), default=None)
if best and r.get("extract_img_s_bf16"):
    print(f"Candle bf16 vs PyTorch's best bf16 ({best:.0f} img/s): {float(r['extract_img_s_bf16']) / best:.2f}x")
PY
echo "gpu_check: done in $(( $(date +%s) - start )) s"
