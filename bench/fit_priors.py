#!/usr/bin/env python3
"""Fits the one-image-per-class calibration prior of an embedder (src/models.rs, PRIORS).

    cbr eval ../shared/datasets/tiny_imagenet_val --shots 1 --seeds 1 --dump /tmp/tin
    python3 bench/fit_priors.py /tmp/tin --classes 100

With one image per class a model cannot calibrate itself by leave-one-out, so cbr
brings a prior fitted once per embedder on public data: the softmax temperature of
cosine class similarities and the novelty offset and scale of the "unknown" entry.

Protocol, on the --dump output of `cbr eval` (embeddings.f32, labels.txt,
images.txt): only the first `--classes` classes in sorted order are used (by
default 100 of Tiny ImageNet's 200, so the other half stays unseen), and only
the photo row of each image. `--draws` times: pick N classes (N cycling through
10, 20, 50), one random image of each as the index, every other image of those
classes as a query. Each index and query is transformed as cbr's default head
does (power 0.5, L2; the index mean subtracted and L2 again) and scored by the
cosine to each index image (what max, centroid and blend give with one image
per class; the discriminant is that cosine scaled, see
`calibrate::prior_temperature`). Then:

- temperature: minimises the negative log-likelihood of the true class over
  all queries of all draws (golden-section search on log τ);
- novelty s: the cosine of the uncentred unit query to the nearest index image;
  scale: ln(99) / (median s − the 5% quantile of s) (the median query at
  p_known = 0.99, as `calibrate::fit_novelty` does), clamped to [5, 200];
- offset: the 5% quantile of s + ln(m) / scale (m: the top class probability),
  so that 95% of the known queries are answered (their best entry is a class,
  not unknown), the default known target.

Prints the values and the line for src/models.rs.
"""

import argparse
import math
import os

import numpy as np


def load(d):
    e = np.fromfile(os.path.join(d, "embeddings.f32"), dtype="<f4")
    labels = open(os.path.join(d, "labels.txt")).read().splitlines()
    images = [int(x) for x in open(os.path.join(d, "images.txt")).read().splitlines()]
    e = e.reshape(len(labels), -1)
    # The photo row of each image (the first row of each image id).
    first = {}
    for r, i in enumerate(images):
        first.setdefault(i, r)
    rows = sorted(first.values())
    return e[rows], [labels[r] for r in rows]


def l2(x):
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def power(x, p=0.5):
    return np.sign(x) * np.abs(x) ** p


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", help="a `cbr eval --dump` folder")
    ap.add_argument("--classes", type=int, default=100, help="fit on the first N classes only")
    ap.add_argument("--draws", type=int, default=60)
    ap.add_argument("--target", type=float, default=0.95, help="share of known photos answered")
    ap.add_argument("--name", default="efficientnet-lite0")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    emb, labels = load(a.dump)
    classes = sorted(set(labels))[: a.classes]
    units = l2(power(emb.astype(np.float64)))
    by_class = {c: [i for i, l in enumerate(labels) if l == c] for c in classes}
    rng = np.random.default_rng(a.seed)
    cos_all, truth_all, novelty_all = [], [], []
    for d in range(a.draws):
        n = [10, 20, 50][d % 3]
        chosen = rng.choice(len(classes), size=min(n, len(classes)), replace=False)
        index, queries, truth = [], [], []
        for k, c in enumerate(chosen):
            imgs = by_class[classes[c]]
            pick = imgs[rng.integers(len(imgs))]
            index.append(pick)
            for i in imgs:
                if i != pick:
                    queries.append(i)
                    truth.append(k)
        u = units[index]
        mean = u.mean(axis=0)
        rows = l2(u - mean)
        q = units[queries]
        cos_all.append(l2(q - mean) @ rows.T)
        novelty_all.append((q @ u.T).max(axis=1))
        truth_all.append(np.array(truth))

    def nll(t):
        total, count = 0.0, 0
        for c, y in zip(cos_all, truth_all):
            ls = log_softmax(c / t)
            total -= ls[np.arange(len(y)), y].sum()
            count += len(y)
        return total / count

    lo, hi = math.log(1e-4), math.log(10.0)
    g = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        c, d = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(math.exp(c)) < nll(math.exp(d)):
            hi = d
        else:
            lo = c
    t = math.exp((lo + hi) / 2)

    s = np.concatenate(novelty_all)
    m = np.concatenate([np.exp(log_softmax(c / t)).max(axis=1) for c in cos_all])
    q_low = np.quantile(s, 1 - a.target)
    median = np.median(s)
    scale = float(np.clip(math.log(99) / max(median - q_low, 1e-9), 5, 200))
    margin = s + np.log(np.maximum(m, 1e-12)) / scale
    offset = float(np.quantile(margin, 1 - a.target))
    acc = np.concatenate([(c.argmax(axis=1) == y) for c, y in zip(cos_all, truth_all)]).mean()
    print(f"fitted on {a.dump}: {len(classes)} classes, {a.draws} draws, {len(s)} queries")
    print(f"top-1 {acc:.3f}; temperature {t:.5f} (nll {nll(t):.3f})")
    print(f"novelty: median {median:.4f}, {100 * (1 - a.target):.0f}% quantile {q_low:.4f}")
    print(f"scale {scale:.2f}, offset {offset:.4f}; answered {np.mean(margin > offset):.3f}")
    print(f'    ("{a.name}", {t:.4f}, {offset:.4f}, {scale:.2f}),')


if __name__ == "__main__":
    main()
