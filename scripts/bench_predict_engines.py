#!/usr/bin/env python3
"""`evaluate` through both engines side by side, one sitting: ONNX Runtime (the CPU default) and
Candle (the code path of `predict`/`evaluate --device cuda`, here on the CPU through the hidden
`--engine candle`) on the same run, stage and photos. Prints a Markdown table: correct, accuracy,
log loss, ECE, seconds, img/s, and how far the two engines' answers are apart (same predicted
class for every listed mistake, max |Δp| over them).

Usage: .venv/bin/python scripts/bench_predict_engines.py BIN RUN DATA [--stage head|finetune]
e.g.   .venv/bin/python scripts/bench_predict_engines.py target/release/bottleneck runs/tutorial \\
           ../shared/data/dogs_vs_cats --stage head

Writes RUN/evaluate/<split> (with --force) as evaluate does; the last engine's report stays.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_heads import sh  # noqa: E402  (run a command, return its stdout and seconds)


def evaluate(a, engine):
    cmd = [a.bin, "--json", "-q", "evaluate", "--run", a.run, "--data", a.data, "--force",
           "--engine", engine]
    if a.stage:
        cmd += ["--stage", a.stage]
    out, secs = sh(cmd)
    return json.loads(out), secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--stage", choices=["head", "finetune"])
    a = ap.parse_args()
    results = {e: evaluate(a, e) for e in ["ort", "candle"]}
    print(f"`evaluate` of `{a.run}` on `{a.data}` (stage {a.stage or 'best'}), both engines:\n")
    print("| engine | device | images | correct | accuracy | log loss | ECE | seconds | img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for e, (r, secs) in results.items():
        print(f"| {e} | {r['device']} | {r['images']} | {r['correct']} | {r['accuracy']:.5f} | "
              f"{r['log_loss']:.6f} | {r['ece']:.6f} | {secs:.1f} | {r['images_per_second']:.2f} |")
    (o, _), (c, _) = results["ort"], results["candle"]
    same = [w["file"] for w in o["worst"]] == [w["file"] for w in c["worst"]]
    dp = max((abs(x["probability"] - y["probability"]) for x, y in zip(o["worst"], c["worst"])),
             default=0.0)
    print(f"\nlisted mistakes: {len(o['worst'])}, same files in the same order: {same}, "
          f"max |Δp| over them {dp:.2e}")


if __name__ == "__main__":
    main()
