#!/usr/bin/env python3
"""Stage 3 on every shipped backbone, beside the head it starts from (issue 29): for each data set
and backbone, `bottleneck fit --model NAME --no-finetune` (features at the manifest's size and crop,
the calibrated probe), then `bottleneck finetune` of the manifest's top block with that head
(FP32 frozen part, fit's augmentation cache of 5 draws, the given learning rates and
`--calibrate` folds). Validation photos are used for no choice (the last epoch is kept). Prints a
Markdown table: the probe's and the fine-tuned model's validation accuracy / log loss / ECE, the
fine-tuning's wall time and training speed.

Usage: .venv/bin/python scripts/bench_finetune_backbones.py BIN NAME=DATA ... [--runs DIR]
           [--models a,b] [--lr 1e-4,1e-3] [--calibrate K] [--epochs N]
e.g.   .venv/bin/python scripts/bench_finetune_backbones.py target/release/bottleneck \\
           intel=../shared/data/intel_scenes_dev dvc=../shared/data/dogs_vs_cats
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_heads import sh  # noqa: E402  (run a command, return its stdout and seconds)

MODELS = "mobilenet-v2,efficientnet-lite0,efficientnet-lite2"


def logged(cmd):
    """Runs `cmd`; returns its stdout and stderr together, and its seconds."""
    t = time.time()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    return out, time.time() - t


def metrics(path):
    with open(path) as f:
        m = json.load(f)
    return m["kept_val_accuracy"], m["kept_val_loss"], m.get("kept_val_ece") or float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--lr", default="1e-4")
    ap.add_argument("--calibrate", default="0")
    ap.add_argument("--epochs", default="10")
    a = ap.parse_args()
    print("| set | backbone | probe acc / log loss / ECE | lr | fine-tuned acc / log loss / ECE | "
          "Δ acc | fine-tuning s | train img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in a.sets:
        name, data = spec.split("=", 1)
        for model in a.models.split(","):
            run = os.path.join(a.runs, f"ft-{name}-{model}")
            if not os.path.isfile(os.path.join(run, "head", "metrics.json")):
                sh([a.bin, "-q", "fit", "--data", data, "--run", run, "--model", model, "--no-finetune"])
            head = metrics(os.path.join(run, "head", "metrics.json"))
            for lr in a.lr.split(","):
                out, secs = logged([a.bin, "finetune", "--run", run, "--data", data, "--precision", "fp32",
                                "--aug-cache", "5", "--calibrate", a.calibrate, "--epochs", a.epochs,
                                "--lr", lr, "--force"])
                ft = metrics(os.path.join(run, "finetune", "metrics.json"))
                speeds = [float(s) for s in re.findall(r"epoch +\d+/\d+:.*?([\d.]+) img/s", out)]
                ips = sorted(speeds)[len(speeds) // 2] if speeds else float("nan")
                print(f"| {name} | {model} | {head[0]:.4f} / {head[1]:.4f} / {head[2]:.4f} | {lr} | "
                      f"{ft[0]:.4f} / {ft[1]:.4f} / {ft[2]:.4f} | {ft[0] - head[0]:+.4f} | {secs:.0f} | "
                      f"{ips:.1f} |", flush=True)


if __name__ == "__main__":
    main()
