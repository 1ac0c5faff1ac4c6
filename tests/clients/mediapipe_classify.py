#!/usr/bin/env python3
"""Classifies images with MediaPipe's ImageClassifier (Google's task library,
written independently of cbr), which reads the labels, the input
normalisation and the score threshold from the model's TFLite Model Metadata.
Prints one JSON line per image:

    python3 mediapipe_classify.py MODEL.tflite IMAGE...
    {"path": ..., "categories": [{"label": ..., "score": ..., "index": ...}, ...]}

Categories are best first. The answer is the first one: for a model with an
"unknown" entry (a last label such as `unknown` in labelmap.txt) that label
means "none of the classes"; an empty list means every entry scored below the
metadata's score threshold, which is "unknown" too.
"""

import json
import sys

try:
    import numpy as np
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.stderr.write(f"missing Python package ({e}): pip install mediapipe\n")
    sys.exit(2)


def rgb_image(path):
    """The file as an SRGB mp.Image: MediaPipe's classifier refuses the GRAY8 image that
    create_from_file makes of a greyscale JPEG, so grey is replicated to three channels (as
    cbr and PIL's convert("RGB") do) and alpha dropped (as MediaPipe itself does)."""
    image = mp.Image.create_from_file(path)
    if image.image_format == mp.ImageFormat.SRGB:
        return image
    pixels = image.numpy_view()
    if pixels.ndim == 2 or pixels.shape[2] == 1:
        pixels = np.repeat(pixels.reshape(pixels.shape[0], pixels.shape[1], 1), 3, axis=2)
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels[:, :, :3]))


def main(argv):
    if len(argv) < 3:
        sys.stderr.write("usage: mediapipe_classify.py MODEL.tflite IMAGE...\n")
        sys.exit(1)
    model, images = argv[1], argv[2:]
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model), max_results=3)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for path in images:
            result = classifier.classify(rgb_image(path))
            head = result.classifications[0]
            cats = [{"label": c.category_name, "score": c.score, "index": c.index} for c in head.categories]
            print(json.dumps({"path": path, "head": head.head_name, "categories": cats}), flush=True)
    sys.stderr.write(f"mediapipe {mp.__version__}: classified {len(images)} images\n")


if __name__ == "__main__":
    main(sys.argv)
