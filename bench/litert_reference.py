#!/usr/bin/env python3
"""The Python baseline for `cbr build` with a .tflite embedder: what a user of
the `ai_edge_litert` Interpreter would write to embed a labelled folder.

    python3 litert_reference.py ROOT --model EMBEDDER.tflite [--out emb.npz]

Walks ROOT/<label>/*, PIL open -> convert('RGB') -> resize to the model's input
size (BILINEAR), feeds uint8 models raw pixels (float models (x-127)/128), runs
the Interpreter image by image (the model has batch 1), dequantizes, L2-
normalises and saves embeddings + labels to .npz. Prints
`images=N seconds=S images_per_s=R` for decode+embed+save (without imports
and interpreter creation).
"""

import argparse
import os
import time

import numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default=os.devnull)
    args = ap.parse_args()

    it = Interpreter(model_path=args.model)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    _, h, w, _ = inp["shape"]
    paths, labels = [], []
    for label in sorted(os.listdir(args.root)):
        d = os.path.join(args.root, label)
        if os.path.isdir(d):
            for f in sorted(os.listdir(d)):
                if not f.startswith("."):
                    paths.append(os.path.join(d, f))
                    labels.append(label)

    start = time.perf_counter()
    embeddings = []
    for p in paths:
        img = Image.open(p).convert("RGB").resize((w, h), Image.BILINEAR)
        x = np.asarray(img, dtype=np.uint8)[None]
        if inp["dtype"] != np.uint8:
            x = (x.astype(np.float32) - 127.0) / 128.0
        it.set_tensor(inp["index"], x)
        it.invoke()
        y = it.get_tensor(out["index"]).reshape(-1)
        if out["dtype"] in (np.uint8, np.int8):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        embeddings.append(y / max(np.linalg.norm(y), 1e-12))
    with open(args.out, "wb") as f:
        np.savez(f, embeddings=np.stack(embeddings), labels=np.array(labels))
    seconds = time.perf_counter() - start
    print(f"images={len(paths)} seconds={seconds:.3f} images_per_s={len(paths) / seconds:.1f}")


if __name__ == "__main__":
    main()
