#!/usr/bin/env python3
"""Runs a .tflite image model with the ai-edge-litert Interpreter (Google's
LiteRT, a client written independently of cbr) and prints its first output for
each image, one JSON line per image:

    python3 litert_run.py MODEL.tflite [--mean M --std S] IMAGE...
    {"path": ..., "output": [...], "labels": [...] | null}

Preprocessing, as the TFLite Task Library does it: RGB, whole image resized
(bilinear, PIL) to the input size. A uint8 input gets the raw pixels; a float
input gets (pixel - mean) / std, with mean/std from the model's TFLite Model
Metadata (NormalizationOptions) or from --mean/--std when the model has none.
Quantized outputs are dequantized with the tensor's scale and zero point.
When the model carries TFLite Model Metadata, the labels are read from the
associated file named by the output's TENSOR_AXIS_LABELS entry in the zip
appended to the model, and printed too.
"""

import io
import json
import sys
import zipfile

try:
    import numpy as np
    from PIL import Image, ImageOps
    from ai_edge_litert.interpreter import Interpreter
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta_fb
    from mediapipe.tasks.metadata import schema_py_generated as model_fb
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.stderr.write(f"missing Python package ({e}): pip install ai-edge-litert mediapipe numpy pillow\n")
    sys.exit(2)


def fail(msg):
    sys.stderr.write(f"litert_run.py: {msg}\n")
    sys.exit(1)


def read_metadata(data):
    """(ModelMetadata or None) from the model's TFLITE_METADATA entry."""
    model = model_fb.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        if m.Name() == b"TFLITE_METADATA":
            buf = model.Buffers(m.Buffer()).DataAsNumpy().tobytes()
            if not meta_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0):
                fail("TFLITE_METADATA does not carry the M001 identifier")
            return meta_fb.ModelMetadataT.InitFromObj(meta_fb.ModelMetadata.GetRootAs(buf, 0))
    return None


def labels_from(meta, data):
    out = meta.subgraphMetadata[0].outputTensorMetadata[0]
    files = [f for f in (out.associatedFiles or []) if f.type == meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS]
    if len(files) != 1:
        fail(f"expected one TENSOR_AXIS_LABELS file on the output, found {len(files)}")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        text = z.read(files[0].name.decode()).decode("utf-8")
    return text.splitlines()


def normalization(meta):
    units = meta.subgraphMetadata[0].inputTensorMetadata[0].processUnits or []
    for u in units:
        if u.optionsType == meta_fb.ProcessUnitOptions.NormalizationOptions:
            return np.asarray(u.options.mean, np.float32), np.asarray(u.options.std, np.float32)
    return None


def main(argv):
    args = argv[1:]
    mean = std = None
    if len(args) >= 5 and args[1] == "--mean" and args[3] == "--std":
        mean, std = np.float32(args[2]), np.float32(args[4])
        args = [args[0]] + args[5:]
    if len(args) < 2:
        fail("usage: litert_run.py MODEL.tflite [--mean M --std S] IMAGE...")
    path, images = args[0], args[1:]
    data = open(path, "rb").read()
    meta = read_metadata(data)
    labels = labels_from(meta, data) if meta else None
    if meta is not None and mean is None:
        norm = normalization(meta)
        if norm is not None:
            mean, std = norm
    it = Interpreter(model_path=path)
    it.allocate_tensors()
    inp = it.get_input_details()
    out = it.get_output_details()
    if len(inp) != 1:
        fail(f"expected one input, got {len(inp)}")
    _, h, w, c = inp[0]["shape"]
    for image in images:
        img = ImageOps.exif_transpose(Image.open(image)).convert("RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        x = np.asarray(img, dtype=np.uint8)[None]
        if inp[0]["dtype"] == np.float32:
            if mean is None:
                fail("a float input needs normalisation: the model has no NormalizationOptions and no --mean/--std was given")
            x = ((x.astype(np.float32) - mean) / std).astype(np.float32)
        elif inp[0]["dtype"] != np.uint8:
            fail(f"unsupported input type {inp[0]['dtype']}")
        it.set_tensor(inp[0]["index"], x)
        it.invoke()
        y = it.get_tensor(out[0]["index"])
        scale, zero = out[0]["quantization"]
        if y.dtype != np.float32:
            y = (y.astype(np.float32) - zero) * scale
        print(json.dumps({"path": image, "output": [float(v) for v in y.reshape(-1)], "labels": labels}), flush=True)


if __name__ == "__main__":
    main(sys.argv)
