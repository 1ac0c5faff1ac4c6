#!/usr/bin/env python3
"""Writes the test fixtures: real images from package registries, converted
into the folders the tests read. Run by scripts/setup.sh with the repository's
virtual environment (Pillow, numpy, scikit-image); the output is not in git.

    .venv/bin/python scripts/fixtures.py OUT_DIR

OUT_DIR/
  fashion-mnist/<label>/<n>.png   Fashion-MNIST test images (Debian package dataset-fashion-mnist),
                                  PER_CLASS per class: real 28x28 grey photos of clothing, 10 classes
  fashion-mnist-jpeg/<label>/<n>.jpg  the same photos (JPEG_PER_CLASS per class) as JPEG files, for
                                  the server tests (uploads, thumbnails) that want JPEGs of a set
                                  as hard as real use (leave-one-out accuracy below 100%)
  photos/<name>.<png|jpg>         scikit-image's colour sample photographs, as shipped (skimage/data)
  scenes/<name>/<nn>.jpg          a labelled colour set: CROPS crops of each sample photograph
                                  (random position and scale, 160-320 px, JPEG); class = photograph
  formats/<file>                  one photograph (chelsea) in every format cbr reads: JPEG, PNG, WebP
                                  (lossy and lossless), TIFF, GIF, BMP; grey, RGBA, 16-bit, CMYK
  formats/reference/<file>.png    Pillow's decoding of each formats/ file, as 8-bit RGB PNG
                                  (and chelsea.jpg.quarter.png: chelsea.jpg decoded at 1/4 scale)
  VERSION                         written last: a complete fixture folder has it

Deterministic: a fixed seed, pinned Pillow (scripts/requirements.txt).
"""

import os
import random
import shutil
import sys

import numpy as np
import skimage
from PIL import Image

import fashion_mnist_folders  # scripts/: the Fashion-MNIST reader

VERSION = "cbr-fixtures 4\n"
PER_CLASS = 50
JPEG_PER_CLASS = 60
# scikit-image's colour photographs (the others are grey, synthetic or microscopy masks).
# The two motorcycle photos are the same scene from two cameras: one class.
SCENES = {
    "astronaut": ["astronaut.png"],
    "cat": ["chelsea.png"],
    "coffee": ["coffee.png"],
    "galaxies": ["hubble_deep_field.jpg"],
    "immunohistochemistry": ["ihc.png"],
    "motorcycle": ["motorcycle_left.png", "motorcycle_right.png"],
    "retina": ["retina.jpg"],
    "rocket": ["rocket.jpg"],
}
CROPS = 60


def skimage_data(name: str) -> str:
    return os.path.join(os.path.dirname(skimage.__file__), "data", name)


def fashion_mnist(out: str, per_class: int, ext: str) -> None:
    for i, label, rows, cols, grey in fashion_mnist_folders.first_per_class(per_class):
        d = os.path.join(out, label)
        os.makedirs(d, exist_ok=True)
        image = Image.frombytes("L", (cols, rows), grey)
        image.save(os.path.join(d, f"{i:05d}.{ext}"), quality=95)


def photos(out: str) -> None:
    os.makedirs(out)
    for files in SCENES.values():
        for name in files:
            shutil.copyfile(skimage_data(name), os.path.join(out, name))


def scenes(out: str) -> None:
    rng = random.Random(20261202)
    for label, files in SCENES.items():
        d = os.path.join(out, label)
        os.makedirs(d)
        sources = [Image.open(skimage_data(f)).convert("RGB") for f in files]
        for k in range(CROPS):
            img = sources[k % len(sources)]
            w, h = img.size
            side = rng.uniform(0.4, 0.85)
            cw, ch = int(w * side * rng.uniform(0.8, 1.0)), int(h * side * rng.uniform(0.8, 1.0))
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            longest = rng.randint(160, 320)
            scale = longest / max(cw, ch)
            crop = img.crop((x, y, x + cw, y + ch)).resize(
                (max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BILINEAR)
            crop.save(os.path.join(d, f"{k:02d}.jpg"), quality=90)


def formats(out: str) -> None:
    os.makedirs(os.path.join(out, "reference"))
    cat = Image.open(skimage_data("chelsea.png")).convert("RGB")  # 451x300
    grey = cat.convert("L")
    rgba = cat.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(cat.size))
    variants = {
        "chelsea.jpg": lambda p: cat.save(p, quality=90),
        "chelsea.png": lambda p: cat.save(p),
        "chelsea.webp": lambda p: cat.save(p, quality=85),
        "chelsea_lossless.webp": lambda p: cat.save(p, lossless=True),
        "chelsea.tiff": lambda p: cat.save(p),
        "chelsea.gif": lambda p: cat.save(p),
        "chelsea.bmp": lambda p: cat.save(p),
        "chelsea_grey.png": lambda p: grey.save(p),
        "chelsea_rgba.png": lambda p: rgba.save(p),
        # 16-bit grey: each 8-bit level v stored as v * 257, so it reads back as v.
        "chelsea_16bit.png": lambda p: Image.fromarray(
            np.asarray(grey).astype(np.uint16) * 257).save(p),
        "chelsea_cmyk.jpg": lambda p: cat.convert("CMYK").save(p, quality=95),
        "chelsea_progressive.jpg": lambda p: cat.save(p, quality=85, progressive=True),
        "chelsea_444.jpg": lambda p: cat.save(p, quality=95, subsampling=0),
        "chelsea_grey.jpg": lambda p: grey.save(p, quality=90),
    }
    for name, save in variants.items():
        path = os.path.join(out, name)
        save(path)
        ref = Image.open(path)
        if ref.mode == "I;16":
            ref = Image.fromarray((np.asarray(ref) >> 8).astype(np.uint8))
        ref.convert("RGB").save(os.path.join(out, "reference", name + ".png"))
    # The JPEG as Pillow decodes it at 1/4 scale in the DCT domain (draft(), libjpeg's scaling).
    quarter = Image.open(os.path.join(out, "chelsea.jpg"))
    quarter.draft("RGB", (112, 75))  # Pillow picks the scale 451 // 112 = 300 // 75 = 4
    quarter.convert("RGB").save(os.path.join(out, "reference", "chelsea.jpg.quarter.png"))


def main(out: str) -> None:
    if os.path.exists(os.path.join(out, "VERSION")) and open(os.path.join(out, "VERSION")).read() == VERSION:
        return
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    fashion_mnist(os.path.join(tmp, "fashion-mnist"), PER_CLASS, "png")
    fashion_mnist(os.path.join(tmp, "fashion-mnist-jpeg"), JPEG_PER_CLASS, "jpg")
    photos(os.path.join(tmp, "photos"))
    scenes(os.path.join(tmp, "scenes"))
    formats(os.path.join(tmp, "formats"))
    with open(os.path.join(tmp, "VERSION"), "w") as f:
        f.write(VERSION)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)


if __name__ == "__main__":
    main(sys.argv[1])
