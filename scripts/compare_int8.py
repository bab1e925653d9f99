#!/usr/bin/env python3
"""Side-by-side: bottleneck's own int8 model versus onnxruntime's Python `quantize_static` on the same inputs.

Reads DUMP (written by `cargo run --release -p bottleneck-features --example int8_bench -- --dump DUMP`):
`inputs.safetensors` (tensors `calib` and `eval`, exactly the preprocessed inputs the Rust side used),
`fp32-cut.onnx` and `ours-int8.onnx`. Quantizes fp32-cut.onnx with onnxruntime (QDQ, per-channel int8
weights, uint8 or int8 activations, MinMax or Percentile on the same calibration tensors), then times FP32,
ours and ORT's on the eval tensors in alternating rounds (same batch, same threads, one process) and reports
images/s and the cosine of each image's features to FP32. Also compares the quantization scales of the two
int8 models name by name. Used for the measurement only; the product never runs Python.

usage: compare_int8.py DUMP [--threads 2] [--batch 16] [--rounds 3] [--activations uint8|int8]
                            [--method minmax|percentile] [--json]
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from safetensors import safe_open


class Reader(CalibrationDataReader):
    def __init__(self, name, x, batch):
        self.batches = iter([{name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.batches, None)


def session(path, threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def run(sess, name, x, batch):
    t = time.perf_counter()
    outs = [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    secs = time.perf_counter() - t
    return len(x) / secs, np.concatenate(outs).reshape(len(x), -1)


def cosines(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def scales(path):
    m = onnx.load(path)
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer if t.name.endswith("scale")}


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--activations", choices=["uint8", "int8"], default="uint8")
    ap.add_argument("--method", choices=["minmax", "percentile"], default="minmax")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    with safe_open(os.path.join(a.dump, "inputs.safetensors"), "np") as f:
        meta = f.metadata()
        calib, x = f.get_tensor("calib"), f.get_tensor("eval")
    name = meta["input"]
    fp32 = os.path.join(a.dump, "fp32-cut.onnx")
    ours = os.path.join(a.dump, "ours-int8.onnx")
    theirs = os.path.join(a.dump, f"ort-int8-{a.activations}-{a.method}.onnx")
    t = time.perf_counter()
    quantize_static(
        fp32,
        theirs,
        Reader(name, calib, a.batch),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8 if a.activations == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax if a.method == "minmax" else CalibrationMethod.Percentile,
    )
    ort_quant_secs = time.perf_counter() - t

    load_before = loadavg()
    sessions = {"fp32": session(fp32, a.threads), "ours": session(ours, a.threads), "ort": session(theirs, a.threads)}
    for s in sessions.values():
        run(s, name, x[: a.batch], a.batch)  # warm-up
    speed = {k: [] for k in sessions}
    feats = {}
    for _ in range(a.rounds):
        for k, s in sessions.items():
            r, f = run(s, name, x, a.batch)
            speed[k].append(r)
            feats[k] = f
    rows = {}
    for k in sessions:
        c = cosines(feats["fp32"], feats[k])
        rows[k] = {
            "img_s_median": statistics.median(speed[k]),
            "img_s_best": max(speed[k]),
            "rounds": speed[k],
            "cosine_mean": float(c.mean()),
            "cosine_min": float(c.min()),
        }
    ours_vs_ort = cosines(feats["ours"], feats["ort"])
    s_ours, s_ort = scales(ours), scales(theirs)
    common = sorted(set(s_ours) & set(s_ort))
    rel = [float(np.max(np.abs(s_ours[n] - s_ort[n]) / np.maximum(np.abs(s_ort[n]), 1e-30))) for n in common]
    report = {
        "images": int(len(x)),
        "calibration_images": int(len(calib)),
        "batch": a.batch,
        "threads": a.threads,
        "activations": a.activations,
        "method": a.method,
        "ort_version": ort.__version__,
        "ort_quantize_seconds": ort_quant_secs,
        "load_before": load_before,
        "load_after": loadavg(),
        "models": rows,
        "ours_vs_ort_cosine_mean": float(ours_vs_ort.mean()),
        "ours_vs_ort_cosine_min": float(ours_vs_ort.min()),
        "scales_compared": len(common),
        "scales_max_rel_diff": max(rel) if rel else None,
    }
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(x)} images {x.shape[2]}x{x.shape[3]}, batch {a.batch}, {a.threads} threads, {a.rounds} rounds, "
          f"onnxruntime {ort.__version__}, activations {a.activations}, calibration {a.method} on {len(calib)} images")
    print(f"{'model':<22} {'img/s median':>12} {'img/s best':>10} {'vs fp32':>8} {'cos mean':>9} {'cos min':>9}")
    labels = {"fp32": "fp32", "ours": "bottleneck int8", "ort": "ORT quantize_static"}
    for k, r in rows.items():
        print(f"{labels[k]:<22} {r['img_s_median']:>12.1f} {r['img_s_best']:>10.1f} "
              f"{r['img_s_median'] / rows['fp32']['img_s_median']:>7.2f}x {r['cosine_mean']:>9.5f} {r['cosine_min']:>9.5f}")
    print(f"ours/ORT throughput {rows['ours']['img_s_median'] / rows['ort']['img_s_median']:.3f}, "
          f"cosine ours vs ORT features: mean {ours_vs_ort.mean():.5f} min {ours_vs_ort.min():.5f}")
    print(f"{len(common)} scale tensors with the same name, max relative difference {report['scales_max_rel_diff']:.2e}")
    print(f"load average before {load_before}, after {report['load_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
