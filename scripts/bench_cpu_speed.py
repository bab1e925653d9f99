#!/usr/bin/env python3
"""CPU training speed side by side in one sitting: the machine's FP32 matrix peak (numpy sgemm, 2 threads),
fine-tuning epochs and stage-1 epochs with FP32 and with bf16 products, and stage 1's bare training pass.

Usage (from the checkout, after `cargo build --release --workspace --examples`):
    .venv/bin/python scripts/bench_cpu_speed.py RUN [--data DIR] [--epochs N] [--out FILE]

RUN holds a 224-px stage 2 (features/, head/) and fine-tuning's cached draws (finetune-cache/, e.g. from an
earlier `bottleneck finetune --aug-cache 5 --precision int8` or `tutorial` run); it is not modified: its
stage-2 outputs and models are copied and its caches hard-linked into scratch folders. Prints a Markdown table
(and writes it to --out). Work per image as counted in issue 19: fine-tuning 8.3 GFLOP (block5 + head, forward
and backward, 224 px), stage 1 0.5 GFLOP (150 px).
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

FINETUNE_GFLOP = 8.3
SCRATCH_GFLOP = 0.5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sgemm_peak(n=4096, repeats=5):
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def finetune_epochs(bin_, run_dir, data, precision, epochs, work):
    dst = os.path.join(work, f"ft-{precision}")
    os.makedirs(dst)
    for part in ("features", "head", "models"):
        if os.path.isdir(os.path.join(run_dir, part)):
            shutil.copytree(os.path.join(run_dir, part), os.path.join(dst, part))
    subprocess.run(["cp", "-al", os.path.join(run_dir, "finetune-cache"), dst], check=True)
    t = time.perf_counter()
    run([bin_, "--json", "finetune", "--run", dst, "--data", data, "--lr", "1e-5", "--epochs", str(epochs),
         "--aug-cache", "5", "--precision", "int8", "--train-precision", precision])
    wall = time.perf_counter() - t
    m = json.load(open(os.path.join(dst, "finetune", "metrics.json")))
    return m, wall


def scratch_epochs(bin_, data, precision, epochs, work):
    dst = os.path.join(work, f"sc-{precision}")
    run([bin_, "--json", "scratch", "--data", data, "--run", dst, "--epochs", str(epochs), "--lr-schedule",
         "cosine", "--shear", "11.5", "--width-shift", "0.1", "--height-shift", "0.1", "--train-precision", precision])
    return json.load(open(os.path.join(dst, "scratch", "metrics.json")))


def step_bench(precision, steps=20):
    exe = os.path.join(ROOT, "target", "release", "examples", "step_bench")
    env = dict(os.environ, PRECISION=precision)
    line = run([exe, str(steps)], env=env).strip().splitlines()[-1]
    # "... per step of 16: 389.4 img/s (195 GFLOP/s); ..."
    return float(line.split("per step of 16:")[1].split("img/s")[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "dogs_vs_cats"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "bottleneck"))
    ap.add_argument("--out")
    a = ap.parse_args()
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load0 = open("/proc/loadavg").read().split()[:3]
    peak = sgemm_peak()
    say(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; start {start}, "
        f"load {' '.join(load0)}")
    say(f"numpy sgemm 4096², 2 threads: **{peak:.0f} GFLOP/s** (FP32 matrix peak of this run)")
    say()
    say("| stage | products | pass img/s | epoch s | epoch img/s | GFLOP/s (epoch, counted work) | × sgemm peak |")
    say("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=os.path.join(ROOT, "runs")) as work:
        for p in ("fp32", "bf16"):
            m, _ = finetune_epochs(a.bin, a.run, a.data, p, a.epochs, work)
            ep = m["epochs"][-1]
            n = m["train_samples"]
            rate = n / ep["seconds"]
            say(f"| fine-tune (block5 + head, 224 px, {n} photos) | {p} | — | {ep['seconds']:.1f} | {rate:.1f} | "
                f"{rate * FINETUNE_GFLOP:.0f} | **{rate * FINETUNE_GFLOP / peak:.2f}** |")
        for p in ("fp32", "bf16"):
            pass_rate = step_bench(p)
            m = scratch_epochs(a.bin, a.data, p, a.epochs, work)
            ep = m["epochs"][-1]
            n = m["train_samples"]
            rate = n / ep["seconds"]
            say(f"| stage 1 (150 px, {n} photos) | {p} | {pass_rate:.0f} ({pass_rate * SCRATCH_GFLOP / peak:.2f}× peak) | "
                f"{ep['seconds']:.1f} | {rate:.0f} | {rate * SCRATCH_GFLOP:.0f} | {rate * SCRATCH_GFLOP / peak:.2f} "
                f"(epoch / pass time {pass_rate / rate:.2f}) |")
    load1 = open("/proc/loadavg").read().split()[:3]
    say()
    say(f"end {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {' '.join(load1)}")
    if a.out:
        open(a.out, "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
