#!/usr/bin/env bash
# TFLite classifiers: float vs int8 retrieval block. One Markdown report:
#  1. top-1 accuracy on cub200_010 (5 index images per class, the rest queries), built with
#     `cbr build --embedder EMBEDDER.tflite --tflite-block float|int8`, run in Python LiteRT
#     (ai_edge_litert Interpreter, 1 thread), for the default head and the original max rule;
#  2. model size and single-image latency (Python LiteRT, 1 thread, median of 50 invokes) at 100
#     and 10,000 index images (synthetic rows, 5 per class; examples/tflite_synthetic.rs), next to
#     the embedder alone.
#
#   bench/tflite_block.sh > results.md
#
# Knobs: DATASETS (default <repo>/../shared/datasets),
# EMBEDDER (default ../shared/models/mobilenet_v3_small_224_1.0_uint8_embedder.tflite).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# The Python of the repository's virtual environment (scripts/setup.sh makes it), or $CBR_PYTHON.
PY=${CBR_PYTHON:-$REPO/.venv/bin/python}
DATASETS=${DATASETS:-$REPO/../shared/datasets}
EMBEDDER=${EMBEDDER:-$REPO/../shared/models/mobilenet_v3_small_224_1.0_uint8_embedder.tflite}
die() { echo "tflite_block.sh: error: $*" >&2; exit 2; }
[ -d "$DATASETS/cub200_010" ] || die "$DATASETS/cub200_010 is missing (set DATASETS=...); refusing to run."
[ -f "$EMBEDDER" ] || die "embedder $EMBEDDER is missing (set EMBEDDER=...)"
"$PY" -c 'import ai_edge_litert, numpy, PIL' 2>/dev/null || die "needs $PY with ai-edge-litert, numpy, pillow"
(cd "$REPO" && cargo build --release --quiet && cargo build --release --quiet --example tflite_synthetic) >&2
WORK=$(mktemp -d /tmp/cbr-tflite-block.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cp "$REPO/target/release/cbr" "$WORK/cbr"
cp "$REPO/target/release/examples/tflite_synthetic" "$WORK/synthetic"
"$WORK/cbr" runtime install >/dev/null

# 5 index images per class (first by name), the rest queries.
for class in "$DATASETS"/cub200_010/*/; do
  name=$(basename "$class"); mkdir -p "$WORK/index/$name" "$WORK/queries/$name"
  i=0
  for f in $(ls "$class" | sort); do
    if [ $i -lt 5 ]; then ln -s "$class$f" "$WORK/index/$name/$f"; else ln -s "$class$f" "$WORK/queries/$name/$f"; fi
    i=$((i + 1))
  done
done
nq=$(find "$WORK/queries" -type l | wc -l)

echo "### TFLite float vs int8 retrieval block — $(date -u +%F) — $(nproc) cores, embedder $(basename "$EMBEDDER")"
echo
echo "Accuracy: cub200_010, 5 index images per class, $nq queries; Python LiteRT (ai_edge_litert $("$PY" -c 'import importlib.metadata as m; print(m.version("ai-edge-litert"))')), 1 thread."
echo
echo "| head | block | top-1 | model bytes | ms/image (median) |"
echo "|---|---|---:|---:|---:|"
for head in default original; do
  for block in float int8; do
    extra=(); [ $head = original ] && extra=(--original)
    "$WORK/cbr" build "$WORK/index" -o "$WORK/m.tflite" --embedder "$EMBEDDER" --tflite-block $block --quiet "${extra[@]}"
    r=$("$PY" "$HERE/tflite_eval.py" "$WORK/m.tflite" "$WORK/queries")
    acc=$(sed 's/.*accuracy=\([^ ]*\).*/\1/' <<<"$r"); ms=$(sed 's/.*ms_per_image=\([^ ]*\).*/\1/' <<<"$r")
    echo "| $head | $block | $acc | $(stat -c %s "$WORK/m.tflite") | $ms |"
  done
done
echo
echo "Size and latency with synthetic index rows (5 per class), Python LiteRT, 1 thread, median of 50 invokes:"
echo
echo "| index images | head | block | model bytes | bytes over embedder | operators | ms/image |"
echo "|---:|---|---|---:|---:|---:|---:|"
emb_bytes=$(stat -c %s "$EMBEDDER")
echo "| — | (embedder alone) | — | $emb_bytes | 0 | — | $("$PY" "$HERE/tflite_eval.py" "$EMBEDDER" --latency | cut -d= -f2) |"
for rows in 100 10000; do
  for head in max default; do
    for block in float int8; do
      info=$("$WORK/synthetic" "$EMBEDDER" $rows 5 $block $head "$WORK/s.tflite")
      bytes=$(stat -c %s "$WORK/s.tflite"); ops=$(sed 's/.*operators=\([0-9]*\).*/\1/' <<<"$info")
      ms=$("$PY" "$HERE/tflite_eval.py" "$WORK/s.tflite" --latency | cut -d= -f2)
      echo "| $rows | $head | $block | $bytes | $((bytes - emb_bytes)) | $ops | $ms |"
    done
  done
done
