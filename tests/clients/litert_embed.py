#!/usr/bin/env python3
"""Runs a .tflite model with the Python `ai_edge_litert` Interpreter on input
tensors written by a test, as an independent reference for cbr's LiteRT code.

    python3 litert_embed.py MODEL.tflite INPUTS.f32 N OUTPUTS.f32

INPUTS.f32 holds N real-valued (preprocessed) input tensors as little-endian
float32. A quantized (uint8/int8) input is quantized here with its own
scale/zero-point; a quantized first output is dequantized. OUTPUTS.f32 receives
the N outputs as little-endian float32.
"""

import sys

try:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.stderr.write(f"missing Python package ({e}): pip install ai-edge-litert==2.3.0 numpy\n")
    sys.exit(2)


def main():
    model, inputs, n, outputs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    it = Interpreter(model_path=model)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    out = it.get_output_details()[0]
    shape = inp["shape"]
    x = np.fromfile(inputs, dtype="<f4").reshape((n, *shape[1:]))
    result = []
    for image in x:
        if inp["dtype"] in (np.uint8, np.int8):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            q = np.clip(np.round(image / scale) + zero, info.min, info.max).astype(inp["dtype"])
            it.set_tensor(inp["index"], q[None])
        else:
            it.set_tensor(inp["index"], image[None].astype(np.float32))
        it.invoke()
        y = it.get_tensor(out["index"]).reshape(-1)
        if out["dtype"] in (np.uint8, np.int8):
            scale, zero = out["quantization"]
            y = (y.astype(np.int64) - zero).astype(np.float32) * np.float32(scale)
        result.append(y.astype("<f4"))
    np.concatenate(result).tofile(outputs)


if __name__ == "__main__":
    main()
