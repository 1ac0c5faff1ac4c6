#!/usr/bin/env python3
"""Top-1 accuracy and single-image latency of a cbr .tflite classifier in the
ai_edge_litert Interpreter (Python LiteRT), on a folder of query images
(<dir>/<label>/*), or latency alone on a random input.

    tflite_eval.py MODEL.tflite QUERY_DIR     -> accuracy=… queries=… ms_per_image=…
    tflite_eval.py MODEL.tflite --latency     -> ms_per_image=… (median of 50 invokes)

Labels come from the model's labelmap.txt (TFLite Model Metadata zip);
preprocessing: RGB, bilinear resize to the input size (PIL), raw uint8 or
(x - mean) / std from the metadata for float inputs. One interpreter thread.
"""
import io, os, sys, time, zipfile
import numpy as np
from PIL import Image, ImageOps
from ai_edge_litert.interpreter import Interpreter

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clients"))
from litert_run import read_metadata, labels_from, normalization  # noqa: E402


def main():
    model = sys.argv[1]
    data = open(model, "rb").read()
    it = Interpreter(model_path=model, num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    _, h, w, _ = inp["shape"]
    if sys.argv[2] == "--latency":
        x = np.random.default_rng(0).integers(0, 255, size=inp["shape"]).astype(inp["dtype"])
        times = []
        for i in range(60):
            it.set_tensor(inp["index"], x)
            t = time.perf_counter(); it.invoke(); dt = time.perf_counter() - t
            if i >= 10:
                times.append(dt)
        print(f"ms_per_image={1000 * np.median(times):.2f}")
        return
    meta = read_metadata(data)
    labels = labels_from(meta, data)
    norm = normalization(meta) if inp["dtype"] == np.float32 else None
    root = sys.argv[2]
    correct = total = 0
    times = []
    for label in sorted(os.listdir(root)):
        for f in sorted(os.listdir(os.path.join(root, label))):
            img = ImageOps.exif_transpose(Image.open(os.path.join(root, label, f))).convert("RGB").resize((w, h), Image.BILINEAR)
            x = np.asarray(img, dtype=np.uint8)[None]
            if norm is not None:
                x = ((x.astype(np.float32) - norm[0]) / norm[1]).astype(np.float32)
            it.set_tensor(inp["index"], x)
            t = time.perf_counter(); it.invoke(); times.append(time.perf_counter() - t)
            scores = it.get_tensor(out["index"])[0]
            correct += labels[int(np.argmax(scores))] == label
            total += 1
    print(f"accuracy={correct / total:.4f} queries={total} ms_per_image={1000 * np.median(times):.2f}")


if __name__ == "__main__":
    main()
