#!/usr/bin/env python3
"""Scores images with a model built by `cbr build`, using only onnxruntime,
numpy and PIL: a client written independently of cbr's Rust code, from the
model file's own description of itself.

    python3 onnxruntime_scores.py MODEL.onnx IMAGE...

Everything needed comes from the model: the labels and the preprocessing are in
the ONNX `metadata_props` entry `cbr` (JSON). Prints one JSON line per image:

    {"path": ..., "top1": LABEL, "unknown": BOOL, "scores": {LABEL: SCORE, ...}}

A model with an "unknown" entry (metadata `unknown_label`) has one score more
than it has labels, the unknown entry last; the answer is the best entry, so
"unknown" is true when the unknown entry is the best. Calibrated scores are
checked to be probabilities: in [0, 1], summing to 1 with the unknown entry.

Before scoring, checks the model's outputs (`scores`, `similarities`,
`embedding`) against the metadata, and runs onnx's checker when the `onnx`
package is importable (it is optional). Any failed check exits non-zero with
the reason on stderr.
"""

import json
import sys

try:
    import numpy as np
    import onnxruntime as ort
    from PIL import Image
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.stderr.write(f"missing Python package ({e}): pip install onnxruntime numpy pillow\n")
    sys.exit(2)


def fail(msg):
    sys.stderr.write(f"onnxruntime_scores.py: {msg}\n")
    sys.exit(1)


def read_metadata(session):
    props = session.get_modelmeta().custom_metadata_map
    if "cbr" not in props:
        fail(f"the model has no `cbr` metadata entry (found keys: {sorted(props)})")
    return json.loads(props["cbr"])


def check_outputs(session, meta, batch, outputs):
    """Declared and actual shapes of the three outputs, against the metadata."""
    n_classes = len(meta["labels"]) + (1 if meta.get("unknown_label") else 0)
    n_index = sum(meta["images_per_label"])
    dim = meta["embedder"]["dim"]
    expected = {"scores": n_classes, "similarities": n_index, "embedding": dim}
    declared = {o.name: o.shape for o in session.get_outputs()}
    for name, width in expected.items():
        if name not in declared:
            fail(f"the model has no output {name!r} (outputs: {sorted(declared)})")
        shape = declared[name]
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width):
            fail(f"output {name!r} is declared with shape {shape}, expected [batch, {width}]")
        actual = outputs[name].shape
        if actual != (batch, width):
            fail(f"output {name!r} has shape {actual} for a batch of {batch}, expected {(batch, width)}")
        if outputs[name].dtype != np.float32:
            fail(f"output {name!r} is {outputs[name].dtype}, expected float32")


def run_onnx_checker(path):
    try:
        import onnx
    except ImportError:
        sys.stderr.write("onnx is not installed: onnx.checker not run\n")
        return
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:  # the checker raises several exception types
        fail(f"onnx.checker rejects the model: {e}")
    sys.stderr.write(f"onnx {onnx.__version__} checker: ok\n")


def preprocess(path, p):
    """PIL version of cbr's recipe: RGB, bilinear resize (stretch, or centre
    crop to the aspect ratio), (x - mean) / std per model channel, layout."""
    w, h = p["width"], p["height"]
    img = Image.open(path)
    img.load()
    # EXIF orientation, as cbr applies it.
    try:
        from PIL import ImageOps

        img = ImageOps.exif_transpose(img)
    except Exception:
        pass
    img = img.convert("RGB")
    if p.get("resample", "antialiased") != "antialiased":
        fail(f"this client resizes as PIL does; the model wants {p['resample']!r} resampling")
    resize = p.get("resize", "stretch")
    if img.size != (w, h):
        if resize == "stretch":
            img = img.resize((w, h), Image.BILINEAR)
        elif resize == "center-crop":
            sw, sh = img.size
            if sw * h > sh * w:  # too wide: crop the width
                cw = sh * w / h
                box = ((sw - cw) / 2, 0, (sw + cw) / 2, sh)
            else:
                ch = sw * h / w
                box = (0, (sh - ch) / 2, sw, (sh + ch) / 2)
            img = img.resize((w, h), Image.BILINEAR, box=box)
        else:
            fail(f"unknown resize mode {resize!r} in the metadata")
    x = np.asarray(img, dtype=np.uint8).astype(np.float32)  # H, W, 3 (RGB)
    if p["channel_order"] == "bgr":
        x = x[:, :, ::-1]
    elif p["channel_order"] != "rgb":
        fail(f"unknown channel order {p['channel_order']!r}")
    mean = np.asarray(p["mean"], dtype=np.float32)
    std = np.asarray(p["std"], dtype=np.float32)
    x = (x - mean) / std
    if p["layout"] == "nchw":
        x = x.transpose(2, 0, 1)
    elif p["layout"] != "nhwc":
        fail(f"unknown layout {p['layout']!r}")
    return np.ascontiguousarray(x[None], dtype=np.float32)


def main(argv):
    if len(argv) < 3:
        fail("usage: onnxruntime_scores.py MODEL.onnx IMAGE...")
    model, images = argv[1], argv[2:]
    run_onnx_checker(model)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = read_metadata(session)
    labels = list(meta["labels"])
    unknown = meta.get("unknown_label")
    if unknown:
        labels.append(unknown)
    p = meta["preprocess"]
    input_name = meta["embedder"]["input"]
    inputs = [i.name for i in session.get_inputs()]
    if inputs != [input_name]:
        fail(f"the model's inputs are {inputs}, the metadata says {input_name!r}")
    names = ["scores", "similarities", "embedding"]
    for path in images:
        x = preprocess(path, p)
        outputs = dict(zip(names, session.run(names, {input_name: x})))
        check_outputs(session, meta, 1, outputs)
        scores = outputs["scores"][0]
        if meta.get("temperature") is not None:
            if scores.min() < 0 or scores.max() > 1 or abs(float(scores.sum()) - 1) > 1e-4:
                fail(f"{path}: scores are not probabilities (min {scores.min()}, max {scores.max()}, sum {scores.sum()})")
        top1 = labels[int(np.argmax(scores))]
        line = {
            "path": path,
            "top1": top1,
            "unknown": bool(unknown) and top1 == unknown,
            "scores": {label: float(s) for label, s in zip(labels, scores)},
        }
        print(json.dumps(line), flush=True)
    sys.stderr.write(f"onnxruntime {ort.__version__}: scored {len(images)} images with {len(labels)} classes\n")


if __name__ == "__main__":
    main(sys.argv)
