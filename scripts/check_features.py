#!/usr/bin/env python3
"""Cross-checks a bottleneck feature file against an independent Python pipeline.

Reads FEATURES with `safetensors.numpy.load_file`, rebuilds the input of every checked row the way Keras does
(PIL open → RGB → resize with NEAREST → caffe/torch/unit preprocessing), runs the ORIGINAL model with Python
onnxruntime, and compares. Also checks that each row's label is the class folder of its file.

With --inputs INPUTS.safetensors (tensor `inputs` [K,3,H,W] and metadata `files`, the exact tensors bottleneck
fed its session), the original model is run on those tensors instead and must match to a relative 1e-4;
without it, the Keras/PIL pipeline must agree to a mean cosine of 0.999 (JPEG decoders differ slightly).

usage: check_features.py FEATURES MODEL DATA_DIR [--rows K] [--inputs F]   exit 1 on mismatch; prints JSON
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.numpy import load_file

MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}


def keras_input(path, size, resize, preprocess):
    img = Image.open(path)
    img = ImageOps.exif_transpose(img)  # bottleneck shows photos upright, as a viewer does
    if img.mode != "RGB":
        img = img.convert("RGB")
    img = img.resize((size, size), FILTERS[resize])  # keras.utils.load_img(target_size=...)
    x = np.asarray(img, dtype=np.float32)
    if preprocess == "caffe":
        x = x[..., ::-1] - MEAN_BGR
    elif preprocess == "torch":
        x = (x / 255.0 - TORCH_MEAN) / TORCH_STD
    else:
        x = x / 255.0
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("features")
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--rows", type=int, default=0, help="check only the first K rows (0 = all)")
    ap.add_argument("--inputs", help="safetensors with the exact preprocessed inputs bottleneck used")
    a = ap.parse_args()

    tensors = load_file(a.features)
    with safe_open(a.features, "np") as f:
        meta = f.metadata()
    feats, labels = tensors["features"], tensors["labels"]
    classes = json.loads(meta["classes"])
    files = json.loads(meta["files"])
    size, resize, pre = int(meta["image_size"]), meta["resize"], meta["preprocess"]
    assert feats.dtype == np.float32 and feats.ndim == 4, feats.shape
    assert labels.dtype == np.int64 and labels.shape == (feats.shape[0],), labels.shape
    assert len(files) == feats.shape[0]

    errors = []
    for i, rel in enumerate(files):
        cls = rel.split("/")[-2]
        if classes[labels[i]] != cls:
            errors.append(f"row {i}: label {labels[i]} ({classes[labels[i]]}) but file {rel}")

    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    out_name = meta["output_tensor"]
    names = [o.name for o in sess.get_outputs()]
    if out_name not in names:
        errors.append(f"model has no output {out_name} (outputs: {names})")
    row_of = {f: i for i, f in enumerate(files)}
    if a.inputs:
        given = load_file(a.inputs)["inputs"]
        with safe_open(a.inputs, "np") as f:
            given_files = json.loads(f.metadata()["files"])
        rows = [row_of[f] for f in given_files]
    else:
        k = len(files) if a.rows == 0 else min(a.rows, len(files))
        rows = list(range(k))
    worst = 0.0
    cosines = []
    for start in range(0, len(rows), 16):
        idx = rows[start:start + 16]
        if a.inputs:
            x = given[start:start + 16]
        else:
            x = np.stack([keras_input(os.path.join(a.data, files[i]), size, resize, pre) for i in idx])
        y = sess.run([out_name], {sess.get_inputs()[0].name: x})[0]
        ours = feats[idx]
        rel = np.abs(y - ours).max() / max(np.abs(y).max(), 1e-12)
        worst = max(worst, float(rel))
        a_, b_ = y.reshape(len(idx), -1), ours.reshape(len(idx), -1)
        cosines += list((a_ * b_).sum(1) / (np.linalg.norm(a_, axis=1) * np.linalg.norm(b_, axis=1) + 1e-12))
    summary = {"rows": int(feats.shape[0]), "checked": len(rows), "mode": "exact-inputs" if a.inputs else "keras-pil", "shape": list(feats.shape), "classes": classes,
               "max_rel_diff": worst, "mean_cosine": float(np.mean(cosines)), "min_cosine": float(np.min(cosines)), "label_errors": len(errors)}
    print(json.dumps(summary))
    for e in errors[:10]:
        print(e, file=sys.stderr)
    failed = worst > 1e-4 if a.inputs else float(np.mean(cosines)) < 0.999
    if errors or failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
