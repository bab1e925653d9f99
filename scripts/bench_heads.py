#!/usr/bin/env python3
"""Stage-2 heads side by side on the same cached features: the independent linear probe
(scripts/linear_probe.py, scikit-learn), bottleneck's default head (the calibrated probe) and the
2016 tutorial head (`--keras2016`). Prints a Markdown table (accuracy, log loss, ECE on the
validation split, and seconds).

Usage: .venv/bin/python scripts/bench_heads.py BIN NAME=DATA:SIZE ... [--runs DIR] [--model ONNX]
e.g.   .venv/bin/python scripts/bench_heads.py target/release/bottleneck \\
           intel=../shared/data/intel_scenes_dev:150 dvc=../shared/data/dogs_vs_cats:224

Features are extracted into DIR/NAME-SIZE (default DIR: runs/bench) unless already there.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def sh(cmd):
    t = time.time()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return out, time.time() - t


def head(bin_, run, extra):
    out, secs = sh([bin_, "train-head", "--run", run, "--force", "--json", "-q"] + extra)
    m = json.loads(out)["metrics"]
    return m["kept_val_accuracy"], m["kept_val_loss"], m.get("kept_val_ece"), secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--model", default="../shared/models/vgg16_keras_notop.onnx")
    a = ap.parse_args()
    rows = []
    for spec in a.sets:
        name, rest = spec.split("=", 1)
        data, size = rest.rsplit(":", 1)
        run = os.path.join(a.runs, f"{name}-{size}")
        if not os.path.isdir(os.path.join(run, "features")):
            sh([a.bin, "extract", "--data", data, "--run", run, "--model", a.model,
                "--preprocess", "caffe", "--size", size, "-q"])
        out, lp_secs = sh([sys.executable, os.path.join(HERE, "linear_probe.py"), run])
        lp = json.loads(out)
        ours = head(a.bin, run, [])
        krun = run + "-keras2016"
        os.makedirs(krun, exist_ok=True)
        feats = os.path.join(krun, "features")
        if not os.path.exists(feats):
            os.symlink(os.path.abspath(os.path.join(run, "features")), feats)
        keras = head(a.bin, krun, ["--keras2016"])
        rows.append((f"{name} {size} px", lp, ours, keras, lp_secs))
    print("| data set | linear probe (sklearn) acc / log loss / ECE | **saved head (default)** acc / log loss / ECE | `--keras2016` head (last epoch) acc / log loss / ECE | seconds: sklearn / default / keras2016 |")
    print("|---|---|---|---|---|")
    f = lambda acc, ll, ece: f"{acc:.4f} / {ll:.3f} / {ece:.3f}"
    for label, lp, ours, keras, lp_secs in rows:
        print(f"| {label} | {f(lp['accuracy'], lp['log_loss'], lp['ece'])} | **{f(*ours[:3])}** | "
              f"{f(*keras[:3])} | {lp_secs:.0f} / {ours[3]:.0f} / {keras[3]:.0f} |")


if __name__ == "__main__":
    main()
