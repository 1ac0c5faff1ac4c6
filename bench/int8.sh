#!/usr/bin/env bash
# The int8 embedder cbr quantizes itself (issue 16), side by side with the float one, in one run:
#   1. the inference-only ceiling of each: ONNX Runtime from Python, batch 32, both cores, no decode;
#   2. `cbr build --no-cache` on CUB-10 (543 photos), ONNX classifiers (ONNX Runtime) and TFLite
#      classifiers (LiteRT), median of REPS;
#   3. `cbr classify` of every CUB-10 photo with each ONNX model (one process, load included);
#   4. top-1 at K=1 and K=5 (`cbr eval --shots 1,5 --seeds 5`, default rule) on CUB-10 and Tiny
#      ImageNet (10,000 photos; skip with TINY=0).
# Prints a Markdown table with the ratios. Knobs: REPS=3 TINY=1 DATASETS=<repo>/../shared/datasets
#
#   bench/int8.sh     # ~8 minutes (Tiny ImageNet's first embedding pass is most of it)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${CBR_PYTHON:-$REPO/.venv/bin/python}
REPS=${REPS:-3}
TINY=${TINY:-1}
DATASETS=${DATASETS:-$REPO/../shared/datasets}
CUB=$DATASETS/cub200_010
TINYDIR=$DATASETS/tiny_imagenet_val
die() { echo "int8.sh: error: $*" >&2; exit 2; }
[ -d "$CUB" ] || die "$CUB is missing"
[ "$TINY" = 0 ] || [ -d "$TINYDIR" ] || die "$TINYDIR is missing (TINY=0 skips it)"
"$PY" -c "import onnxruntime, numpy" 2>/dev/null || die "$PY needs onnxruntime and numpy (scripts/setup.sh)"
(cd "$REPO" && cargo build --release -q --bin cbr) || die "cannot build cbr"
CBR=$REPO/target/release/cbr
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FLOAT=efficientnet-lite0
INT8=efficientnet-lite0-int8
MODELS=${CBR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cbr}/models
"$CBR" models pull "$FLOAT" >/dev/null
"$CBR" models pull "$INT8" >/dev/null

ceiling() {
  "$PY" "$HERE/ceiling.py" "$1"
}

secs() { # secs COMMAND...: wall seconds
  local t0
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN {printf "%.2f", a - b}'
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
build_rate() { # build_rate EMBEDDER EXT: images/s of `cbr build --no-cache`, median of REPS
  local t=() n
  n=$(find "$CUB" -type f | wc -l)
  for _ in $(seq "$REPS"); do
    t+=("$(secs "$CBR" build "$CUB" -o "$WORK/m.$2" --embedder "$1" --no-cache --quiet)")
  done
  awk -v n="$n" -v s="$(median "${t[@]}")" 'BEGIN {printf "%.1f", n / s}'
}
classify_rate() { # classify_rate EMBEDDER: images/s of `cbr classify` on every CUB-10 photo
  local n
  "$CBR" build "$CUB" -o "$WORK/c.onnx" --embedder "$1" --quiet
  n=$(find "$CUB" -type f | wc -l)
  mapfile -t files < <(find "$CUB" -type f | sort)
  awk -v n="$n" -v s="$(secs "$CBR" classify "$WORK/c.onnx" --json "${files[@]}")" 'BEGIN {printf "%.1f", n / s}'
}
top1() { # top1 DIR EMBEDDER: "K=1 / K=5" of the default rule
  "$CBR" eval "$1" --shots 1,5 --seeds 5 --embedder "$2" 2>/dev/null |
    awk '/discriminant \(default\)/ {a[++n] = $3} END {printf "%s / %s", a[1], a[2]}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }

C_F=$(ceiling "$MODELS/$FLOAT.onnx");   C_Q=$(ceiling "$MODELS/$INT8.onnx")
B_F=$(build_rate "$FLOAT" onnx);        B_Q=$(build_rate "$INT8" onnx)
T_F=$(build_rate "$FLOAT" tflite);      T_Q=$(build_rate "$INT8" tflite)
K_F=$(classify_rate "$FLOAT");          K_Q=$(classify_rate "$INT8")
A_F=$(top1 "$CUB" "$FLOAT");            A_Q=$(top1 "$CUB" "$INT8")
if [ "$TINY" != 0 ]; then
  I_F=$(top1 "$TINYDIR" "$FLOAT");      I_Q=$(top1 "$TINYDIR" "$INT8")
else
  I_F="(TINY=0)"; I_Q="(TINY=0)"
fi
size() { du -k "$1" | cut -f1; }

cat <<EOF2
## int8 embedder vs float ($(nproc) cores, $(date -u +%Y-%m-%d))

| | $FLOAT | $INT8 | int8 / float |
|---|---|---|---|
| embedder file (ONNX / TFLite twin) | $(size "$MODELS/$FLOAT.onnx") / $(size "$MODELS/$FLOAT.tflite") KB | $(size "$MODELS/$INT8.onnx") / $(size "$MODELS/$INT8.tflite") KB | |
| inference-only ceiling (ONNX Runtime, batch 32, no decode) | $C_F img/s | $C_Q img/s | **$(ratio "$C_Q" "$C_F")** |
| \`cbr build --no-cache\` CUB-10, ONNX (median of $REPS) | $B_F img/s | $B_Q img/s | **$(ratio "$B_Q" "$B_F")** |
| same, TFLite classifier (LiteRT) | $T_F img/s | $T_Q img/s | **$(ratio "$T_Q" "$T_F")** |
| \`cbr classify\` all 543 CUB-10 photos (load included) | $K_F img/s | $K_Q img/s | **$(ratio "$K_Q" "$K_F")** |
| top-1 % CUB-10, K=1 / K=5 (\`cbr eval --seeds 5\`) | $A_F | $A_Q | |
| top-1 % Tiny ImageNet, K=1 / K=5 | $I_F | $I_Q | |
EOF2
