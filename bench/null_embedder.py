#!/usr/bin/env python3
"""Writes a do-nothing "embedder" (input [N,3,224,224] -> per-channel mean [N,3])
so that `cbr build --embedder null.onnx --mean 127 --std 128` and
`reference_build.py --model null.onnx` time decoding + preprocessing alone.

  python3 bench/null_embedder.py /tmp/null.onnx
"""
import sys
import onnx
from onnx import TensorProto, helper

x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])
y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])
axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
node = helper.make_node("ReduceMean", ["input", "axes"], ["embedding"], keepdims=0)
g = helper.make_graph([node], "null", [x], [y], initializer=[axes])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, sys.argv[1])
