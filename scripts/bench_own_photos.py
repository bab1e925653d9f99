#!/usr/bin/env python3
"""The own-photos recipe side by side, one sitting: `bottleneck fit` with every default (extract →
calibrated probe head → fine-tuning) on each data set, next to the independent linear probe
(scripts/linear_probe.py, scikit-learn) on the very same cached features. Prints a Markdown table
(accuracy / log loss / ECE on the validation split, which no stage used for any choice) and the
seconds each part took.

Usage: .venv/bin/python scripts/bench_own_photos.py BIN NAME=DATA:SIZE ... [--runs DIR] [--model ONNX]
e.g.   .venv/bin/python scripts/bench_own_photos.py target/release/bottleneck \\
           intel=../shared/data/intel_scenes_dev:150 dvc=../shared/data/dogs_vs_cats:224

Each set runs in DIR/fit-NAME-SIZE (default DIR: runs/bench); an interrupted run continues where it
stopped (`fit` reuses finished stages).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_heads import sh  # noqa: E402  (run a command, return its stdout and seconds)


def kept(path):
    with open(path) as f:
        m = json.load(f)
    return m["kept_val_accuracy"], m["kept_val_loss"], m.get("kept_val_ece"), m.get("total_seconds")


def calibration(path):
    with open(path) as f:
        return json.load(f).get("calibration")


def one_set(a, spec):
    name, rest = spec.split("=", 1)
    data, size = rest.rsplit(":", 1)
    run = os.path.join(a.runs, f"fit-{name}-{size}")
    _, fit_secs = sh([a.bin, "fit", "--data", data, "--run", run, "--model", a.model, "--size", size, "-q"])
    out, lp_secs = sh([sys.executable, os.path.join(HERE, "linear_probe.py"), run])
    lp = json.loads(out)
    head = kept(os.path.join(run, "head", "metrics.json"))
    ft = kept(os.path.join(run, "finetune", "metrics.json"))
    cal = calibration(os.path.join(run, "finetune", "metrics.json"))
    return f"{name} {size} px", lp, head, ft, cal, lp_secs, fit_secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--model", default="../shared/models/vgg16_keras_notop.onnx")
    a = ap.parse_args()
    print("| data set | linear probe (sklearn) acc / log loss / ECE | saved head (`fit`) acc / log loss / ECE "
          "| finetune before calibration: log loss / ECE | **finetune (`fit`, saved)** acc / log loss / ECE | "
          "temperature | finetune − head | seconds: sklearn / head / finetune epochs / whole `fit` |")
    print("|---|---|---|---|---|---|---|---|")
    f = lambda m: f"{m[0]:.4f} / {m[1]:.3f} / {m[2]:.3f}"
    for spec in a.sets:
        label, lp, head, ft, cal, lp_secs, fit_secs = one_set(a, spec)
        lpm = (lp["accuracy"], lp["log_loss"], lp["ece"])
        gain = ft[0] - head[0]
        before = (f"{cal['val_log_loss_uncalibrated']:.3f} / {cal['val_ece_uncalibrated']:.3f}"
                  if cal else "—")
        t = f"{cal['temperature']:.3f}" if cal else "—"
        print(f"| {label} | {f(lpm)} | {f(head)} | {before} | **{f(ft)}** | {t} | {gain:+.4f} | "
              f"{lp_secs:.0f} / {head[3] or 0:.0f} / {ft[3] or 0:.0f} / {fit_secs:.0f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
