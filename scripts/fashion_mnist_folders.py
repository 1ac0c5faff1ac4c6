#!/usr/bin/env python3
"""Writes Fashion-MNIST test images (Debian package `dataset-fashion-mnist`) as
an image folder <out>/<label>/<n>.pgm, PER_CLASS images per class.

Pure standard library: the IDX files are gzip'd big-endian arrays; PGM (P5) is
a 15-byte header plus the raw grey pixels, which cbr reads like any photo.
"""
import gzip
import os
import struct
import sys

SRC = "/usr/share/datasets/fashion-mnist"
LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def first_per_class(per_class: int):
    """Yields (index, label, rows, cols, raw grey pixels) of the first `per_class` test images of
    each class, in file order. scripts/fixtures.py takes its images from here too."""
    with gzip.open(os.path.join(SRC, "t10k-images-idx3-ubyte.gz")) as f:
        _, n, rows, cols = struct.unpack(">IIII", f.read(16))
        pixels = f.read(n * rows * cols)
    with gzip.open(os.path.join(SRC, "t10k-labels-idx1-ubyte.gz")) as f:
        f.read(8)
        labels = f.read(n)
    written = [0] * len(LABELS)
    for i in range(n):
        c = labels[i]
        if written[c] >= per_class:
            continue
        written[c] += 1
        yield i, LABELS[c], rows, cols, pixels[i * rows * cols:(i + 1) * rows * cols]


def main(out: str, per_class: int) -> None:
    count = 0
    for i, label, rows, cols, grey in first_per_class(per_class):
        d = os.path.join(out, label)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{i:05d}.pgm"), "wb") as g:
            g.write(b"P5 %d %d 255\n" % (cols, rows))
            g.write(grey)
        count += 1
    print(f"wrote {count} Fashion-MNIST images in {len(LABELS)} classes to {out}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40)
