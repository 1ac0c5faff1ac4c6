#!/usr/bin/env bash
# Phone-size photos (issue 16): what `cbr build` reaches on 12-megapixel JPEGs against the
# inference-only ceiling, measured in the same run, plus the decode alone.
#   1. N phone-size JPEGs (4032x3024, quality 90) made from CUB photos (PIL, bicubic), 5 classes;
#   2. decode + resize per image, one thread: full decode vs the reduced (DCT-scaled) one cbr uses,
#      and how far apart the two 224x224 inputs are (examples/decode_speed.rs); the same with
#      Pillow, in full and with draft(), as a Python user would;
#   3. `cbr build --no-cache` on them (images/s, median of REPS), and the same build with the
#      embeddings cached, whose difference is the embed phase (decode + inference);
#   4. the ceiling: ONNX Runtime from Python on the default embedder, batch 32, both cores,
#      random input (no decode).
# Prints a Markdown table. Knobs: N=60 REPS=3 DATASETS=<repo>/../shared/datasets
# EMBEDDER=efficientnet-lite0 (e.g. efficientnet-lite0-int8: its own, faster, ceiling)
#
#   bench/phone_photos.sh     # ~3 minutes
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${CBR_PYTHON:-$REPO/.venv/bin/python}
N=${N:-60}
REPS=${REPS:-3}
DATASETS=${DATASETS:-$REPO/../shared/datasets}
EMBEDDER=${EMBEDDER:-efficientnet-lite0}
CUB=$DATASETS/cub200_010
die() { echo "phone_photos.sh: error: $*" >&2; exit 2; }
[ -d "$CUB" ] || die "$CUB is missing"
"$PY" -c "import onnxruntime, numpy, PIL" 2>/dev/null || die "$PY needs onnxruntime, numpy, Pillow (scripts/setup.sh)"
(cd "$REPO" && cargo build --release -q --bin cbr --example decode_speed) || die "cannot build cbr"
CBR=$REPO/target/release/cbr
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PY" - "$CUB" "$WORK/photos" "$N" <<'PY'
import os, sys
from PIL import Image
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
classes = sorted(os.listdir(src))[:5]
for k in range(n):
    c = classes[k % len(classes)]
    files = sorted(os.listdir(os.path.join(src, c)))
    f = files[(k // len(classes)) % len(files)]
    os.makedirs(os.path.join(out, c), exist_ok=True)
    Image.open(os.path.join(src, c, f)).convert("RGB").resize((4032, 3024), Image.BICUBIC).save(
        os.path.join(out, c, f"{k:03d}.jpg"), quality=90)
PY

DECODE=$("$REPO/target/release/examples/decode_speed" 224 "$WORK"/photos/*/*.jpg)
d() { echo "$DECODE" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# What a Python user would write: Pillow (libjpeg-turbo) decode + bilinear resize, one thread,
# in full and with draft() (Pillow's DCT-scaled decode).
PIL_MS=$("$PY" - "$WORK"/photos/*/*.jpg <<'PY'
import sys, time
from PIL import Image
files = sys.argv[1:]
def run(draft):
    t0 = time.perf_counter()
    for f in files:
        im = Image.open(f)
        if draft:
            im.draft("RGB", (448, 448))
        im.convert("RGB").resize((224, 224), Image.BILINEAR)
    return 1e3 * (time.perf_counter() - t0) / len(files)
print("full_ms=%.1f draft_ms=%.1f" % (run(False), run(True)))
PY
)
p() { echo "$PIL_MS" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

times=()
for _ in $(seq "$REPS"); do
  t0=$(date +%s.%N)
  "$CBR" build "$WORK/photos" -o "$WORK/m.onnx" --embedder "$EMBEDDER" --no-cache --quiet
  times+=("$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN {printf "%.2f", a - b}')")
done
BUILD_S=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((REPS + 1) / 2))p")
BUILD_RATE=$(awk -v n="$N" -v s="$BUILD_S" 'BEGIN {printf "%.1f", n / s}')
# The same build with every embedding cached: what is not decode + inference (hashing the files,
# loading the embedder, the head, writing the model). The embed phase is the difference.
"$CBR" build "$WORK/photos" -o "$WORK/m.onnx" --embedder "$EMBEDDER" --quiet
t0=$(date +%s.%N)
"$CBR" build "$WORK/photos" -o "$WORK/m.onnx" --embedder "$EMBEDDER" --quiet
CACHED_S=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN {printf "%.2f", a - b}')
EMBED_RATE=$(awk -v n="$N" -v s="$BUILD_S" -v c="$CACHED_S" 'BEGIN {printf "%.1f", n / (s - c)}')

"$CBR" models pull "$EMBEDDER" >/dev/null
MODEL=${CBR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cbr}/models/$EMBEDDER.onnx
[ -f "$MODEL" ] || die "no embedder at $MODEL (cbr models pull $EMBEDDER)"
CEILING=$("$PY" "$HERE/ceiling.py" "$MODEL")

cat <<EOF
## Phone-size photos: $N JPEGs, 4032x3024, quality 90, $EMBEDDER ($(nproc) cores, $(date -u +%Y-%m-%d))

| what | value |
|---|---|
| decode + resize to 224x224, one thread: full decode | $(d full_ms) ms/image |
| same, reduced (DCT-scaled) decode, as cbr does | $(d reduced_ms) ms/image ($(d speedup)x) |
| Pillow decode + resize, one thread: full / with draft() | $(p full_ms) / $(p draft_ms) ms/image |
| difference of the two inputs | mean $(d mean_abs_diff_grey), max $(d max_abs_diff_grey) grey levels |
| \`cbr build --no-cache\` (median of $REPS) | $BUILD_S s, **$BUILD_RATE images/s** |
| inference-only ceiling (ONNX Runtime, Python, batch 32, no decode) | $CEILING images/s |
| cbr build / ceiling | **$(awk -v b="$BUILD_RATE" -v c="$CEILING" 'BEGIN {printf "%.0f", 100 * b / c}')%** |
| the same build with every embedding cached (the part that is not decode + inference) | $CACHED_S s |
| embed phase: N / (build - cached build) | $EMBED_RATE images/s, **$(awk -v b="$EMBED_RATE" -v c="$CEILING" 'BEGIN {printf "%.0f", 100 * b / c}')%** of the ceiling |
EOF
