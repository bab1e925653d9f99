"""Runs an exported bottleneck classifier with Python onnxruntime, preprocessing resized 8-bit RGB
images only from what the model's metadata_props document.

usage: check_export.py MODEL RGB_U8_FILE N OUT_F32_FILE
  RGB_U8_FILE: N images of image_size x image_size x 3 bytes (RGB, already resized)
  OUT_F32_FILE: written with the N x classes probabilities (float32, little-endian)
Prints the metadata as JSON on stdout.
"""
import json
import sys

import numpy as np
import onnxruntime as ort

model, rgb_file, n, out_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
meta = sess.get_modelmeta().custom_metadata_map
s = int(meta["image_size"])
rgb = np.fromfile(rgb_file, dtype=np.uint8).reshape(n, s, s, 3).astype(np.float32)
order = meta["channel_order"]
x = rgb[..., ::-1] if order == "BGR" else rgb
assert order in ("BGR", "RGB"), order
scale = np.float32(json.loads(meta["pixel_scale"]))
mean = np.array(json.loads(meta["mean"]), dtype=np.float32)
std = np.array(json.loads(meta["std"]), dtype=np.float32)
x = (x * scale - mean) / std
if meta["layout"] == "NCHW":
    x = x.transpose(0, 3, 1, 2)
else:
    assert meta["layout"] == "NHWC", meta["layout"]
x = np.ascontiguousarray(x, dtype=np.float32)
(out,) = sess.run([meta["output"]], {meta["input"]: x})
assert out.shape == (n, len(json.loads(meta["classes"]))), out.shape
out.astype("<f4").tofile(out_file)
print(json.dumps(meta))
