#!/usr/bin/env python3
"""Backbones side by side, one sitting (issue 29): on each data set,

1. `bottleneck fit` with every default: it measures each candidate backbone (features of train and
   validation, the calibrated probe with 5-fold CV on train) and keeps the one with the lowest
   cross-validated log loss; the table shows every candidate's CV and validation numbers and the
   wall time of the whole `fit`;
2. the VGG16 conv base through the same probe (`fit --model vgg16-keras --no-finetune`, 224 px);
3. extraction speed of each backbone next to raw ONNX Runtime on the same photos in the same process
   (`bottleneck bench`, 480 photos, 2 threads, 3 interleaved rounds of raw / pipeline / raw: medians).

Validation photos are used for no choice. Prints Markdown tables.

Usage: .venv/bin/python scripts/bench_backbones.py BIN NAME=DATA ... [--runs DIR] [--skip-vgg] [--skip-fit]
       [--bench-images N] [--rounds N]
e.g.   .venv/bin/python scripts/bench_backbones.py target/release/bottleneck \\
           dvc=../shared/data/dogs_vs_cats intel=../shared/data/intel_scenes_dev
"""
import argparse
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_heads import sh  # noqa: E402  (run a command, return its stdout and seconds)

BACKBONES = ["vgg16-keras", "mobilenet-v2", "efficientnet-lite0", "efficientnet-lite2", "efficientnet-lite0+lite2"]


def head_numbers(run):
    """Validation accuracy / log loss / ECE of RUN/head and the probe's CV log loss at its C."""
    with open(os.path.join(run, "head", "metrics.json")) as f:
        m = json.load(f)
    with open(os.path.join(run, "head", "head.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))["__metadata__"]
    probe = json.loads(meta["probe"])
    cv = next(p for p in probe["path"] if p["c"] == probe["c"])
    return m["kept_val_accuracy"], m["kept_val_loss"], m.get("kept_val_ece"), cv["log_loss"]


def one_set(a, spec):
    name, data = spec.split("=", 1)
    rows = []
    run = os.path.join(a.runs, f"backbones-{name}-fit")
    _, secs = sh([a.bin, "-q", "fit", "--data", data, "--run", run])
    with open(os.path.join(run, "candidates", "selection.json")) as f:
        sel = json.load(f)
    acc, loss, ece, cv = head_numbers(run)
    winner = sel["candidates"][sel["chosen"]]["model"]
    for c in sel["candidates"]:
        # A combination probed on its parts' features side by side was not extracted.
        ips = None if c.get("from_parts") else c["images_per_second"]
        rows.append((c["model"], c["cv_log_loss"], c["val_accuracy"], c["val_log_loss"], c["val_ece"],
                     ips, c["seconds"]))
    if not a.skip_vgg:
        vrun = os.path.join(a.runs, f"backbones-{name}-vgg16")
        _, vsecs = sh([a.bin, "-q", "fit", "--data", data, "--run", vrun, "--model", "vgg16-keras",
                       "--no-finetune"])
        vacc, vloss, vece, vcv = head_numbers(vrun)
        rows.insert(0, ("vgg16-keras (224 px, nearest)", vcv, vacc, vloss, vece, None, vsecs))
    print(f"\n### {name}: `fit` with every default chose **{winner}** in {secs:.0f} s\n")
    print(f"saved head: accuracy {acc:.4f}, log loss {loss:.4f}, ECE {ece:.4f} (CV log loss {cv:.4f})\n")
    print("| backbone | CV log loss (train) | val accuracy | val log loss | val ECE | extraction img/s | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ips = "—" if r[5] is None else f"{r[5]:.1f}"
        print(f"| {r[0]} | {r[1]:.4f} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.4f} | {ips} | {r[6]:.0f} |")
    return data


def speeds(a, data):
    print("\n### Extraction vs raw ONNX Runtime, same photos, same process\n")
    print("| backbone | input side | raw ORT img/s (median) | pipeline img/s (median) | ratio of each round | "
          "median ratio |")
    print("|---|---|---|---|---|---|")
    for b in BACKBONES:
        out, _ = sh([a.bin, "--json", "bench", "--data", data, "--model", b, "--run",
                     os.path.join(a.runs, "bench-unused"), "--threads", "2", "--images", str(a.bench_images),
                     "--rounds", str(a.rounds)])
        r = json.loads(out)
        each = " / ".join(f"{x['ratio']:.3f}" for x in r["rounds"])
        print(f"| {b} | {r['size']} px | {r['raw_images_per_second']:.2f} | {r['pipeline_images_per_second']:.2f} | "
              f"{each} | {r['ratio']:.3f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bin")
    p.add_argument("sets", nargs="+", help="NAME=DATA")
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--skip-vgg", action="store_true")
    p.add_argument("--skip-fit", action="store_true", help="only the extraction speeds")
    p.add_argument("--bench-images", type=int, default=480)
    p.add_argument("--rounds", type=int, default=3, help="rounds of raw / pipeline / raw per backbone")
    a = p.parse_args()
    os.makedirs(a.runs, exist_ok=True)
    first = None
    for spec in a.sets:
        data = one_set(a, spec) if not a.skip_fit else spec.split("=", 1)[1]
        first = first or data
    speeds(a, first)


if __name__ == "__main__":
    main()
