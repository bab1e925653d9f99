#!/usr/bin/env bash
# Installs what cargo cannot: the pinned ONNX Runtime shared library (from its PyPI wheel) into
# .ort/lib, and a small Python environment (.venv) used by the cross-check tests and the linear-probe reference.
#   scripts/setup.sh          CPU build of ONNX Runtime (onnxruntime)
#   scripts/setup.sh --cuda   CUDA build (onnxruntime-gpu; needs an NVIDIA driver, CUDA 12, cuDNN 9)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ORT_VERSION=1.32.0
package=onnxruntime
if [ "${1:-}" = "--cuda" ]; then package=onnxruntime-gpu; fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
  echo "setup: python3 is needed to fetch the ONNX Runtime wheel (apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check \
  "$package==$ORT_VERSION" "numpy>=1.26" "safetensors>=0.4" "onnx>=1.16" "pillow>=10" "scikit-learn>=1.5"

lib=$(.venv/bin/python - <<'PY'
import glob, os, onnxruntime
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
libs = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so.*")))
print(libs[-1] if libs else "")
PY
)
if [ -z "$lib" ]; then
  echo "setup: the $package wheel has no capi/libonnxruntime.so.*" >&2
  exit 1
fi
mkdir -p .ort/lib
# Copy every shared object of the wheel's capi folder (CUDA provider libraries included).
for f in "$(dirname "$lib")"/libonnxruntime*.so*; do cp -f "$f" .ort/lib/; done
ln -sf "$(basename "$lib")" .ort/lib/libonnxruntime.so
echo "setup: ONNX Runtime $ORT_VERSION ($package) in $root/.ort/lib"
