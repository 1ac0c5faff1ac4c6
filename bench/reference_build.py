#!/usr/bin/env python3
"""What a user would write instead of `cbr build`: the fair Python baseline.

Walks <root>/<label>/*, decodes each image with PIL (convert('RGB'),
resize((224,224), BILINEAR) -- the same stretch-resize cbr uses for
EfficientNet-Lite0), normalises (x-127)/128 to NCHW float32, embeds with
onnxruntime (default SessionOptions) in batches of --batch images,
L2-normalises the embeddings and saves them with their labels to an .npz
(the "model" a retrieval user would keep).

  python3 bench/reference_build.py ROOT --model EMBEDDER.onnx -o out.npz [--workers N]

--workers 0 (default): decode in the main thread, then embed, batch by batch
  (the plain user).
--workers N: decode in a multiprocessing Pool of N processes, one batch ahead
  of inference (imap keeps feeding the pool while the session runs), the
  "optimised user".

Prints one line "images=<n> seconds=<s> images_per_s=<r>" on stdout; the time
covers decode + embed + normalise + save (not interpreter start or imports,
nor the session creation, which are reported separately on stderr).
"""
import argparse
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

SIZE = (224, 224)


def list_images(root):
    items = []
    for label in sorted(os.listdir(root)):
        d = os.path.join(root, label)
        if label.startswith(".") or not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if not name.startswith(".") and os.path.isfile(p):
                items.append((p, label))
    return items


def load(path):
    """One image -> float32 CHW tensor, (x-127)/128. None if unreadable."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize(SIZE, Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32)
    except Exception as e:  # a user would skip broken files and go on
        print(f"skipped {path}: {e}", file=sys.stderr)
        return None
    a -= 127.0
    a *= 1.0 / 128.0
    return a.transpose(2, 0, 1)


def batches(items, n):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--model", required=True, help="embedder .onnx (input NCHW [b,3,224,224])")
    ap.add_argument("-o", "--output", required=True, help=".npz to write")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0, help="decode processes (0 = decode in the main thread)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    # Profiling knobs only (the baseline uses ONNX Runtime's defaults):
    ap.add_argument("--intra-threads", type=int, default=0, help="profiling: SessionOptions.intra_op_num_threads (0 = ORT default)")
    ap.add_argument("--no-spin", action="store_true", help="profiling: session.intra_op.allow_spinning=0")
    args = ap.parse_args()

    items = list_images(args.root)
    if args.limit:
        items = items[: args.limit]
    if not items:
        sys.exit(f"no images under {args.root}")

    t0 = time.perf_counter()
    so = ort.SessionOptions()  # defaults, unless a profiling knob is given
    if args.intra_threads:
        so.intra_op_num_threads = args.intra_threads
    if args.no_spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    t_session = time.perf_counter() - t0

    start = time.perf_counter()
    embs, labels = [], []
    chunks = list(batches(items, args.batch))
    if args.workers > 0:
        import multiprocessing as mp

        pool = mp.Pool(args.workers)
        # imap with chunksize keeps the pool decoding ahead while ONNX Runtime runs.
        tensors = pool.imap(load, (p for p, _ in items), chunksize=8)
        decoded = ((c, [next(tensors) for _ in c]) for c in chunks)
    else:
        pool = None
        decoded = ((c, [load(p) for p, _ in c]) for c in chunks)

    for chunk, ts in decoded:
        keep = [(t, lab) for t, (_, lab) in zip(ts, chunk) if t is not None]
        if not keep:
            continue
        x = np.stack([t for t, _ in keep])
        e = sess.run(None, {inp: x})[0]
        embs.append(e)
        labels.extend(lab for _, lab in keep)
    if pool is not None:
        pool.close()
        pool.join()

    e = np.concatenate(embs).astype(np.float32)
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    np.savez(args.output, embeddings=e, labels=np.array(labels))
    secs = time.perf_counter() - start
    print(f"session {t_session:.2f} s; {len(labels)} embedded, dim {e.shape[1]}", file=sys.stderr)
    print(f"images={len(items)} seconds={secs:.3f} images_per_s={len(items) / secs:.1f}")


if __name__ == "__main__":
    main()
