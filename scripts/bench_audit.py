#!/usr/bin/env python3
"""How well `bottleneck audit` finds the photos that hurt, on the shared sets (fixed seed).

For each set (a symlinked copy of its train/validation split under --out; ../shared is only read):
  clean   `fit` on the set as it is (its audit's flags are the photos mislabeled *before* injection)
  noisy   5 % and 10 % of the training photos moved to another class (seeded): precision and recall of
          the ranked mislabeled list at k = number moved (photos also flagged on the clean set count
          as neither hit nor miss); then `fit --exclude` of the top k, and how much of the validation
          accuracy lost to the noise it recovers
  copies  50 validation photos copied into train three ways (JPEG quality 60, resized to 80 %,
          cropped by 10 %) and 20 photos of the other set dropped into one class folder: recall of the
          (copy, original) leak pairs and the false pairs at several cosine thresholds, and how many of
          the 20 are in the top 30 out-of-place photos
Usage: .venv/bin/python scripts/bench_audit.py --out /tmp/audit-bench [--model efficientnet-lite0]
Prints Markdown tables (BENCHMARKS.md) and writes OUT/results.json.
"""
import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
SETS = {"dogs_vs_cats": "intel_scenes_dev", "intel_scenes_dev": "dogs_vs_cats"}
SEED = 29
THRESHOLDS = [0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96]


def photos(root, split):
    out = []
    for cls in sorted(p.name for p in (root / split).iterdir() if p.is_dir()):
        for f in sorted((root / split / cls).iterdir()):
            out.append((cls, f))
    return out


def link_tree(src, dst, moves=None):
    """dst/<split>/<class>/<file> -> src photo, with `moves` {(cls, name): new_cls} for train."""
    moves = moves or {}
    for split in ("train", "validation"):
        for cls, f in photos(src, split):
            c = moves.get((cls, f.name), cls) if split == "train" else cls
            d = dst / split / c
            d.mkdir(parents=True, exist_ok=True)
            os.symlink(f.resolve(), d / f.name)


def fit(args, data, run, extra=()):
    cmd = [args.bin, "--quiet", "fit", "--data", str(data), "--run", str(run), "--model", args.model, *extra]
    t = time.time()
    subprocess.run(cmd, check=True)
    m = json.loads((run / "head" / "metrics.json").read_text())
    return {"val_accuracy": m["kept_val_accuracy"], "val_log_loss": m["kept_val_loss"], "seconds": time.time() - t}


def audit(args, data, run, extra=()):
    cmd = [args.bin, "--quiet", "audit", "--run", str(run), "--data", str(data), *extra]
    t = time.time()
    subprocess.run(cmd, check=True)
    a = json.loads((run / "audit" / "audit.json").read_text())
    a["wall_seconds"] = time.time() - t
    return a


def noisy_case(args, name, src, work, rate, clean, clean_flags):
    rng = random.Random(f"{SEED}-{name}-{rate}")
    train = photos(src, "train")
    classes = sorted({c for c, _ in train})
    flipped = rng.sample(train, round(rate * len(train)))
    moves = {}
    for cls, f in flipped:
        moves[(cls, f.name)] = rng.choice([c for c in classes if c != cls])
    data = work / f"noisy{int(rate * 100)}"
    link_tree(src, data, moves)
    truth = {f"train/{new}/{n}" for (c, n), new in moves.items()}
    run = work / f"run-noisy{int(rate * 100)}"
    noisy = fit(args, data, run)
    a = json.loads((run / "audit" / "audit.json").read_text())
    ranked = [m["path"] for m in a["mislabeled"]]
    k = len(truth)
    top = ranked[:k]
    hits = sum(p in truth for p in top)
    neutral = [p for p in top if p not in truth and p.split("/")[-1] in clean_flags]
    excl = work / f"exclude{int(rate * 100)}.txt"
    excl.write_text("".join(p + "\n" for p in top))
    ex = fit(args, data, work / f"run-excl{int(rate * 100)}", ["--exclude", str(excl)])
    lost = clean["val_accuracy"] - noisy["val_accuracy"]
    return {
        "rate": rate, "flipped": k, "flagged": len(ranked), "hits_at_k": hits, "neutral_at_k": len(neutral),
        "neutral": neutral, "precision_at_k": hits / max(1, len(top) - len(neutral)), "recall_at_k": hits / k,
        "noisy": noisy, "excluded": ex, "lost": lost,
        "recovered": (ex["val_accuracy"] - noisy["val_accuracy"]) / lost if lost > 0 else None,
        "audit_seconds": a["seconds"],
    }


def made_copies(src, data, rng):
    val = photos(src, "validation")
    chosen = rng.sample(val, 50)
    made = {}
    for cls, f in chosen:
        img = Image.open(f).convert("RGB")
        w, h = img.size
        d = data / "train" / cls
        orig = f"validation/{cls}/{f.name}"
        kinds = {
            "q60": img,
            "r80": img.resize((max(1, round(w * 0.8)), max(1, round(h * 0.8))), Image.BILINEAR),
            "c10": img.crop((round(w * 0.05), round(h * 0.05), round(w * 0.95), round(h * 0.95))),
        }
        for kind, im in kinds.items():
            name = f"copy_{kind}_{f.stem}.jpg"
            im.save(d / name, quality=60 if kind == "q60" else 95)
            made[f"train/{cls}/{name}"] = orig
    return made


def copies_case(args, name, src, work, clean_pairs, clean_default):
    rng = random.Random(f"{SEED}-{name}-copies")
    data = work / "copies"
    link_tree(src, data)
    made = made_copies(src, data, rng)
    other = SHARED / SETS[name]
    target = sorted(p.name for p in (data / "train").iterdir())[0]
    dropped = set()
    for cls, f in rng.sample(photos(other, "train"), 20):
        rel = f"train/{target}/outlier_{cls}_{f.name}"
        os.symlink(f.resolve(), data / rel)
        dropped.add(rel)
    run = work / "run-copies"
    fit(args, data, run)
    a = audit(args, data, run, ["--duplicate-cosine", "0.5", "--outlier-score=-1000"])
    groups = {}
    for copy, orig in made.items():
        groups.setdefault(orig, {orig}).add(copy)
    same = lambda p, q: any(p in g and q in g for g in groups.values())
    sweep = []
    for t in THRESHOLDS:
        pairs = [(d["path"], d["partner"]) for d in a["duplicates"] if d["cosine"] >= t]
        found = {frozenset(p) for p in pairs}
        leak_found = sum(frozenset((c, o)) in found for c, o in made.items())
        false = [p for p in pairs if not same(*p) and frozenset(p) not in clean_pairs.get(t, set())]
        sweep.append({"threshold": t, "recall": leak_found / len(made), "false_pairs": len(false),
                      "examples": false[:5]})
    # The default rule: cosine ≥ 0.90, or from 0.80 when the photos' pixels match (fingerprints).
    d = audit(args, data, run)
    pairs = [(x["path"], x["partner"]) for x in d["duplicates"]]
    found = {frozenset(p) for p in pairs}
    default = {"recall": sum(frozenset((c, o)) in found for c, o in made.items()) / len(made),
               "false_pairs": [p for p in pairs if not same(*p) and frozenset(p) not in clean_default],
               "by_pixels": sum(x.get("hash_bits") is not None for x in d["duplicates"])}
    ranked = [o["path"] for o in a["outliers"]]
    return {"copies": len(made), "sweep": sweep, "default": default,
            "outliers_in_top30": sum(p in dropped for p in ranked[:30]),
            "outlier_rank": sorted(ranked.index(p) + 1 for p in dropped if p in ranked),
            "outlier_class": target, "audit_seconds": a["seconds"]}


def one_set(args, name):
    src = SHARED / name
    if not src.is_dir():
        sys.exit(f"missing {src}")
    work = args.out / name
    work.mkdir(parents=True, exist_ok=True)
    link_tree(src, work / "clean")
    clean = fit(args, work / "clean", work / "run-clean")
    ca = audit(args, work / "clean", work / "run-clean", ["--duplicate-cosine", "0.5", "--outlier-score=-1000"])
    clean_flags = {m["path"].split("/")[-1] for m in ca["mislabeled"]}
    clean_pairs = {t: {frozenset((d["path"], d["partner"])) for d in ca["duplicates"] if d["cosine"] >= t}
                   for t in THRESHOLDS}
    cd = audit(args, work / "clean", work / "run-clean")
    clean_default = {frozenset((d["path"], d["partner"])) for d in cd["duplicates"]}
    rates = [] if args.skip_noise else (0.05, 0.10)
    out = {"set": name, "clean": clean, "clean_flagged": sorted(clean_flags), "train_rows": ca["train_rows"],
           "clean_default_pairs": [(d["path"], d["partner"], round(d["cosine"], 3), d.get("hash_bits"))
                                   for d in cd["duplicates"]],
           "noise": [noisy_case(args, name, src, work, r, clean, clean_flags) for r in rates],
           "copies": copies_case(args, name, src, work, clean_pairs, clean_default)}
    return out


def table(results):
    print("| set | noise | moved | precision@k | recall@k | flagged before injection (neutral) | val acc clean → noisy → excluded | lost recovered |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for n in r["noise"]:
            rec = "—" if n["recovered"] is None else f"{n['recovered']:.0%}"
            print(f"| {r['set']} | {n['rate']:.0%} | {n['flipped']} | {n['precision_at_k']:.3f} | {n['recall_at_k']:.3f} | "
                  f"{n['neutral_at_k']} | {r['clean']['val_accuracy']:.4f} → {n['noisy']['val_accuracy']:.4f} → "
                  f"{n['excluded']['val_accuracy']:.4f} | {rec} |")
    print()
    print("| set | threshold | copy→original recall | false pairs |")
    print("|---|---|---|---|")
    for r in results:
        for s in r["copies"]["sweep"]:
            print(f"| {r['set']} | {s['threshold']:.2f} | {s['recall']:.3f} | {s['false_pairs']} |")
    print()
    print("| set | default rule | copy→original recall | false pairs | pairs confirmed by pixels | pairs on the unmodified set |")
    print("|---|---|---|---|---|---|")
    for r in results:
        d = r["copies"]["default"]
        print(f"| {r['set']} | cosine ≥ 0.90, or ≥ 0.80 with matching pixels | {d['recall']:.3f} | {len(d['false_pairs'])} | "
              f"{d['by_pixels']} | {len(r['clean_default_pairs'])} |")
    print()
    for r in results:
        c = r["copies"]
        print(f"- {r['set']}: {c['outliers_in_top30']} of 20 dropped photos in the top 30 out of place "
              f"(ranks {c['outlier_rank']}); audit {c['audit_seconds']:.2f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "bottleneck"))
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--skip-noise", action="store_true", help="only the copies and out-of-place photos")
    args = ap.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"{args.out} is not empty")
    results = [one_set(args, s) for s in args.sets]
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table(results)


if __name__ == "__main__":
    main()
