#!/usr/bin/env bash
# The main job, end to end: build a classifier from real labelled photos with
# the default embedder (5 images per class), classify the held-out photos, and
# print the accuracy.
#
# Photos: $PHOTOS (a folder <label>/<images>) if set, else
# ../shared/datasets/cub200_010 (10 bird species) when it exists, else
# Fashion-MNIST from Debian (`apt-get install dataset-fashion-mnist`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
cbr=$CBR_BIN
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -n "${PHOTOS:-}" ]; then
  photos=$PHOTOS
elif [ -d ../shared/datasets/cub200_010 ]; then
  photos=../shared/datasets/cub200_010
else
  # scripts/setup.sh installed Debian's dataset-fashion-mnist.
  "$CBR_PYTHON" scripts/fashion_mnist_folders.py "$work/photos" 40
  photos=$work/photos
fi

# 5 images per class for the classifier, the rest held out.
for class in "$photos"/*/; do
  name=$(basename "$class")
  mkdir -p "$work/index/$name" "$work/heldout/$name"
  i=0
  while IFS= read -r f; do
    if [ $i -lt 5 ]; then dest=index; else dest=heldout; fi
    ln -s "$(cd "$class" && pwd)/$f" "$work/$dest/$name/$f"
    i=$((i + 1))
  done < <(ls "$class" | LC_ALL=C sort)
done

echo "== cbr build $photos (5 per class) -o classifier.onnx"
$cbr build "$work/index" -o classifier.onnx
# Not `| head`: under pipefail, head closing the pipe early would fail the script (SIGPIPE).
info=$($cbr info classifier.onnx)
sed -n 1,6p <<<"$info"
echo "== cbr classify (held-out photos; first lines shown)"
$cbr classify classifier.onnx "$work"/heldout/*/* --top-k 1 --json > "$work/predictions.jsonl"
heldout=("$work"/heldout/*/*)
$cbr classify classifier.onnx "${heldout[@]:0:3}" --top-k 3
"$CBR_PYTHON" - "$work/predictions.jsonl" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
right = sum(r["top"][0]["label"] == os.path.basename(os.path.dirname(r["path"])) for r in rows)
print(f"== accuracy on {len(rows)} held-out photos: {right / len(rows):.1%} top-1")
PY
