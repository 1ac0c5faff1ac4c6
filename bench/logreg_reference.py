#!/usr/bin/env python3
"""Trained reference for `cbr eval`: logistic regression on the same embeddings.

    cbr eval DATA --shots 1,5,10 --seeds 5 --dump /tmp/dump
    python3 bench/logreg_reference.py /tmp/dump --shots 1,5,10 --seeds 5

Reads the --dump output (embeddings.f32: raw little-endian float32 rows;
labels.txt: one label per row; images.txt: source image index per row) and
runs the `cbr eval` protocol: for each seed, K random images per class as
the training set (a class with K or fewer images gives all but one), the rest
as queries. Only the first row of each image is used (no mirror rows).
Embeddings are L2-normalised; the model is sklearn's LogisticRegression
(C=10, max_iter=2000). Prints top-1 accuracy, mean ± 95% t-interval over seeds.
The splits use numpy's RNG, so they differ from cbr's (same protocol, not the
same draws).
"""

import argparse
import json
import os
import sys
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

# With one image per class sklearn suspects a regression target; it is not.
warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")

# Two-sided 95% critical values of Student's t, df 1..30.
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t95(df):
    if df <= 30:
        return T95[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df)


def mean_ci(v):
    v = np.asarray(v, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), None
    return float(v.mean()), float(t95(len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def load(dump):
    with open(os.path.join(dump, "labels.txt"), encoding="utf-8") as f:
        labels = [line.rstrip("\n") for line in f]
    with open(os.path.join(dump, "images.txt"), encoding="utf-8") as f:
        images = np.array([int(line) for line in f if line.strip()])
    emb = np.fromfile(os.path.join(dump, "embeddings.f32"), dtype="<f4")
    rows = len(labels)
    if rows == 0 or emb.size % rows:
        sys.exit(f"{dump}: {emb.size} values do not make {rows} rows")
    emb = emb.reshape(rows, emb.size // rows)
    # First row of each source image (the photo; later rows are mirror images).
    _, first = np.unique(images, return_index=True)
    first.sort()
    x = emb[first].astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    classes = sorted(set(labels))
    y = np.array([classes.index(labels[i]) for i in first])
    return x, y, classes


def split(y, shots, rng):
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n = len(idx)
        k = shots if n > shots else max(n - 1, 1)
        train.extend(idx[:k])
        test.extend(idx[k:])
    return np.array(train), np.array(test)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump", help="directory written by cbr eval --dump")
    ap.add_argument("--shots", default="5", help="K images per class, comma-separated (default 5)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--C", type=float, default=10.0)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args()
    x, y, classes = load(a.dump)
    out = []
    for shots in [int(s) for s in a.shots.split(",")]:
        accs = []
        for seed in range(a.seeds):
            rng = np.random.default_rng(seed)
            tr, te = split(y, shots, rng)
            clf = LogisticRegression(C=a.C, max_iter=2000)
            clf.fit(x[tr], y[tr])
            accs.append(float((clf.predict(x[te]) == y[te]).mean()))
        m, ci = mean_ci(accs)
        out.append({"shots": shots, "top1": {"mean": m, "ci95": ci, "values": accs}})
    if a.json:
        print(json.dumps({"dump": a.dump, "classes": len(classes), "images": len(y), "results": out}, indent=2))
        return
    print(f"{a.dump}: {len(classes)} classes, {len(y)} images, {x.shape[1]}-d; logistic regression C={a.C:g}, {a.seeds} seeds")
    print(f"{'shots':>5}  {'top-1 %':>15}")
    for r in out:
        m, ci = r["top1"]["mean"], r["top1"]["ci95"]
        s = f"{100 * m:5.1f}" + (f" ± {100 * ci:4.1f}" if ci is not None else "")
        print(f"{r['shots']:>5}  {s:>15}")


if __name__ == "__main__":
    main()
