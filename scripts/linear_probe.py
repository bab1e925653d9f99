#!/usr/bin/env python3
"""Reference linear probe on a run's cached features (scikit-learn, independent of bottleneck).

Usage: .venv/bin/python scripts/linear_probe.py RUN [--val SPLIT] [--json]

Fits LogisticRegression (L2, lbfgs) on the flattened train features / 100, C chosen by stratified
5-fold cross-validation on the training split only (log loss), then scores the validation split:
accuracy, log loss and expected calibration error (15 bins). Prints one JSON object.
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np
from safetensors import safe_open
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold


def load(path):
    with safe_open(path, "np") as f:
        x = f.get_tensor("features").astype(np.float64)
        y = f.get_tensor("labels").astype(np.int64)
    return x.reshape(len(x), -1) / 100.0, y


def ece(prob, y, bins=15):
    conf = prob.max(1)
    right = prob.argmax(1) == y
    idx = np.clip(np.ceil(conf * bins).astype(int), 1, bins) - 1
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += abs(conf[m].sum() - right[m].sum())
    return total / len(y)


def main():
    warnings.simplefilter("ignore", FutureWarning)
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--val", default=None, help="validation split name (default: the one that exists)")
    a = ap.parse_args()
    feats = os.path.join(a.run, "features")
    val = a.val
    if val is None:
        names = [n[: -len(".safetensors")] for n in sorted(os.listdir(feats)) if n.endswith(".safetensors")]
        others = [n for n in names if n != "train"]
        if not others:
            sys.exit(f"{feats}: no validation split next to train")
        val = others[0]
    xt, yt = load(os.path.join(feats, "train.safetensors"))
    xv, yv = load(os.path.join(feats, f"{val}.safetensors"))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    clf = LogisticRegressionCV(
        Cs=np.logspace(-4, 1, 11), cv=cv, scoring="neg_log_loss", max_iter=5000
    ).fit(xt, yt)
    p = clf.predict_proba(xv)
    eps = 1e-15
    out = {
        "split": val,
        "C": float(np.atleast_1d(clf.C_)[0]),
        "accuracy": float((p.argmax(1) == yv).mean()),
        "log_loss": float(-np.log(np.clip(p[np.arange(len(yv)), yv], eps, 1)).mean()),
        "ece": float(ece(p, yv)),
        "train": int(len(yt)),
        "val": int(len(yv)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
