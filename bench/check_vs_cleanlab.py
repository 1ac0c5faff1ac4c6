#!/usr/bin/env python3
"""`cbr check` against cleanlab's `find_label_issues` on a real image set with flipped labels.

    python3 -m venv .venv-check && .venv-check/bin/pip install -r bench/requirements-check.txt
    .venv-check/bin/python bench/check_vs_cleanlab.py ../shared/datasets/cub200_010 --seed 0

1. Flip `--flip` (5%) of the labels with numpy's RNG seeded by `--seed`: each chosen image gets
   another class, uniformly. The flipped set is a temporary folder of symlinks
   `<label>/<nnnnnn>.<ext>` (names carry no label).
2. cbr: `cbr check --json DIR` (wall time of the whole command); flagged = `mislabelled`.
3. cleanlab, the way its tutorials do it on embeddings: `cbr embed DIR -o x.parquet` (the same
   embeddings), out-of-sample predicted probabilities from `--folds`-fold cross-validated
   `LogisticRegression(max_iter=1000)` (sklearn's `cross_val_predict`, stratified folds), then
   `cleanlab.filter.find_label_issues(labels, pred_probs)` with its defaults (wall time of
   embed + cross-validation + find_label_issues).
4. Prints precision, recall and F1 of the flagged images against the flipped ones, wall time
   and CPU time (user + sys of the processes and their threads: robust to a busy machine), for
   both, as a Markdown table. `--scale` adds cleanlab on standardised embeddings.

Both read embeddings from cbr's embedding cache when it has them (run each once first to warm
it, or see the `embed s` column): the times compare the analyses, not the embedder.
`--cbr-args` passes flags to `cbr check` (e.g. "--mislabel-fraction 0.5") for tuning; tune on a
seed other than the one you report.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".pnm", ".ppm", ".pgm"}


def listing(root):
    items = []
    for label in sorted(os.listdir(root)):
        d = os.path.join(root, label)
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            if os.path.splitext(f)[1].lower() in IMAGE_EXT:
                items.append((os.path.join(d, f), label))
    return items


def flipped_folder(items, flip, seed, out):
    """Symlinks with `flip` of the labels changed; returns {link path: (true, given)}."""
    rng = np.random.default_rng(seed)
    classes = sorted({l for _, l in items})
    n = len(items)
    chosen = set(rng.choice(n, size=int(round(flip * n)), replace=False).tolist())
    truth = {}
    for i, (path, label) in enumerate(items):
        given = label
        if i in chosen:
            others = [c for c in classes if c != label]
            given = others[rng.integers(len(others))]
        d = os.path.join(out, given)
        os.makedirs(d, exist_ok=True)
        link = os.path.join(d, "%06d%s" % (i, os.path.splitext(path)[1].lower()))
        os.symlink(os.path.abspath(path), link)
        truth[os.path.abspath(link)] = (label, given)
    return truth


def scores(flagged, flipped):
    hit = len(flagged & flipped)
    p = hit / len(flagged) if flagged else 0.0
    r = hit / len(flipped) if flipped else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cbr(cbr, folder, extra):
    t, c = time.perf_counter(), child_cpu()
    out = subprocess.run([cbr, "check", "--json", "-q", folder] + extra, check=True,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t
    cpu = child_cpu() - c
    report = json.loads(out.stdout)
    assert report["schema"] == "cbr-check/1", report["schema"]
    flagged = {os.path.abspath(m["path"]) for m in report["mislabelled"]}
    return flagged, seconds, cpu, report


def run_cleanlab(cbr, folder, folds, tmp, scale):
    import pyarrow.parquet as pq
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    t, c, own = time.perf_counter(), child_cpu(), time.process_time()
    parquet = os.path.join(tmp, "embeddings.parquet")
    subprocess.run([cbr, "embed", "-q", folder, "-o", parquet], check=True)
    embed_seconds = time.perf_counter() - t
    table = pq.read_table(parquet)
    paths = [os.path.abspath(p) for p in table.column("path").to_pylist()]
    given = table.column("label").to_pylist()
    x = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    classes = sorted(set(given))
    y = np.array([classes.index(l) for l in given])
    model = LogisticRegression(max_iter=1000)
    if scale:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        model = make_pipeline(StandardScaler(), model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence chatter
        probs = cross_val_predict(
            model, x, y,
            cv=StratifiedKFold(folds, shuffle=True, random_state=0), method="predict_proba")
    issues = find_label_issues(labels=y, pred_probs=probs)
    seconds = time.perf_counter() - t
    # Threads of numpy's BLAS count in this process's CPU time.
    cpu = child_cpu() - c + time.process_time() - own
    flagged = {paths[i] for i in np.flatnonzero(issues)}
    accuracy = float((probs.argmax(1) == y).mean())
    return flagged, seconds, cpu, embed_seconds, accuracy


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--cbr", default=os.environ.get("CBR", "target/release/cbr"))
    ap.add_argument("--cbr-args", default="", help="extra flags for `cbr check`")
    ap.add_argument("--skip-cleanlab", action="store_true")
    ap.add_argument("--scale", action="store_true",
                    help="also run cleanlab with StandardScaler before the logistic regression")
    a = ap.parse_args()

    items = listing(a.dataset)
    with tempfile.TemporaryDirectory(prefix="cbr-check-bench-") as tmp:
        folder = os.path.join(tmp, "data")
        truth = flipped_folder(items, a.flip, a.seed, folder)
        flipped = {p for p, (t, g) in truth.items() if t != g}
        name = os.path.basename(os.path.normpath(a.dataset))
        print(f"{name}: {len(items)} images, {len({l for _, l in items})} classes, "
              f"{len(flipped)} labels flipped (seed {a.seed})", file=sys.stderr)
        rows = []
        flagged, seconds, cpu, report = run_cbr(a.cbr, folder, a.cbr_args.split())
        p, r, f = scores(flagged, flipped)
        loo = report["leave_one_out"]["accuracy"]
        rows.append(("cbr check", len(flagged), p, r, f, seconds, cpu, report["embed_seconds"], loo))
        variants = [] if a.skip_cleanlab else [False, True] if a.scale else [False]
        for scale in variants:
            flagged, seconds, cpu, embed_seconds, acc = run_cleanlab(a.cbr, folder, a.folds, tmp, scale)
            p, r, f = scores(flagged, flipped)
            tool = "cleanlab 2.9 + logreg CV" + (" (standardised)" if scale else "")
            rows.append((tool, len(flagged), p, r, f, seconds, cpu, embed_seconds, acc))
    print(f"\n{name}, {len(flipped)} of {len(items)} labels flipped (seed {a.seed})\n")
    print("| tool | flagged | precision | recall | F1 | wall s | CPU s | of which embed s | out-of-sample accuracy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t, n, p, r, f, s, c, e, acc in rows:
        print(f"| {t} | {n} | {p:.2f} | {r:.2f} | {f:.2f} | {s:.1f} | {c:.1f} | {e:.1f} | {100 * acc:.1f}% |")


if __name__ == "__main__":
    main()
