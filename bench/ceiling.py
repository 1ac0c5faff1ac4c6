#!/usr/bin/env python3
"""The inference-only ceiling of an ONNX embedder: images/s of ONNX Runtime on random input in
[-1, 1], batch 32, both cores, no decode, for 15 s. Used by bench/phone_photos.sh and bench/int8.sh.

    python3 bench/ceiling.py EMBEDDER.onnx
"""
import sys
import time

import numpy as np
import onnxruntime as ort

s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
x = np.random.default_rng(0).uniform(-1, 1, (32, 3, 224, 224)).astype(np.float32)
s.run(None, {name: x})
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < 15:
    s.run(None, {name: x})
    n += 32
print("%.1f" % (n / (time.perf_counter() - t0)))
