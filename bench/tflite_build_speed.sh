#!/usr/bin/env bash
# `cbr build` with a .tflite embedder (LiteRT from Rust) vs a plain Python
# ai_edge_litert Interpreter loop embedding the same images. One Markdown table.
#
#   bench/tflite_build_speed.sh
#
# Knobs: DATASETS (default <repo>/../shared/datasets), REPS=3,
# EMBEDDER (default ../shared/models/mobilenet_v3_small_224_1.0_uint8_embedder.tflite),
# DATASET=cub200_010.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# The Python of the repository's virtual environment (scripts/setup.sh makes it), or $CBR_PYTHON.
PY=${CBR_PYTHON:-$REPO/.venv/bin/python}
DATASETS=${DATASETS:-$REPO/../shared/datasets}
DATASET=${DATASET:-cub200_010}
REPS=${REPS:-3}
EMBEDDER=${EMBEDDER:-$REPO/../shared/models/mobilenet_v3_small_224_1.0_uint8_embedder.tflite}

die() { echo "tflite_build_speed.sh: error: $*" >&2; exit 2; }
[ -d "$DATASETS/$DATASET" ] || die "$DATASETS/$DATASET is missing (set DATASETS=...); refusing to run."
[ -f "$EMBEDDER" ] || die "embedder $EMBEDDER is missing (set EMBEDDER=...)"
"$PY" -c 'import ai_edge_litert, numpy, PIL' 2>/dev/null ||
    die "$PY with ai-edge-litert, numpy and pillow is needed (scripts/setup.sh makes .venv/ with them)"
[ -x "$REPO/target/release/cbr" ] || (cd "$REPO" && cargo build --release) >&2

WORK=$(mktemp -d /tmp/cbr-tflite-speed.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cp "$REPO/target/release/cbr" "$WORK/cbr"   # others may rebuild target/ meanwhile
"$WORK/cbr" runtime install >/dev/null

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
: >"$WORK/cbr.txt"; : >"$WORK/py.txt"; : >"$WORK/cbr_loop.txt"; : >"$WORK/py_loop.txt"; : >"$WORK/cbr_cpu.txt"; : >"$WORK/py_cpu.txt"
for rep in $(seq "$REPS"); do
    echo "rep $rep/$REPS" >&2
    t0=$(now)
    /usr/bin/time -o "$WORK/cpu" -f "%U %S" "$WORK/cbr" build "$DATASETS/$DATASET" --embedder "$EMBEDDER" -o "$WORK/m.tflite" 2>"$WORK/cbr.log"
    t1=$(now)
    awk '{print $1 + $2}' "$WORK/cpu" >>"$WORK/cbr_cpu.txt"
    echo "$t1 - $t0" | bc -l >>"$WORK/cbr.txt"
    sed -n 's/.*embedded in \([0-9.]*\) s.*/\1/p' "$WORK/cbr.log" >>"$WORK/cbr_loop.txt"
    t0=$(now)
    line=$(/usr/bin/time -o "$WORK/cpu" -f "%U %S" "$PY" "$HERE/litert_reference.py" "$DATASETS/$DATASET" --model "$EMBEDDER" --out "$WORK/ref.npz")
    t1=$(now)
    awk '{print $1 + $2}' "$WORK/cpu" >>"$WORK/py_cpu.txt"
    echo "$t1 - $t0" | bc -l >>"$WORK/py.txt"
    echo "$line" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' >>"$WORK/py_loop.txt"
    images=$(echo "$line" | sed -n 's/images=\([0-9]*\).*/\1/p')
done

c=$(median <"$WORK/cbr.txt"); p=$(median <"$WORK/py.txt")
cl=$(median <"$WORK/cbr_loop.txt"); pl=$(median <"$WORK/py_loop.txt")
cc=$(median <"$WORK/cbr_cpu.txt"); pc=$(median <"$WORK/py_cpu.txt")
echo "### cbr build (.tflite embedder, LiteRT) vs Python ai_edge_litert loop — $(date -u +%F) — $(nproc) cores, median of $REPS"
echo
echo "embedder: $(basename "$EMBEDDER"); dataset: $DATASET ($images images); load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| tool | median s (process) | images/s | median s (decode+embed loop) | loop images/s | CPU s (user+sys) |"
echo "|---|---:|---:|---:|---:|---:|"
printf "| cbr build -o m.tflite | %.2f | %.1f | %.2f | %.1f | %.2f |\n" "$c" "$(echo "$images / $c" | bc -l)" "$cl" "$(echo "$images / $cl" | bc -l)" "$cc"
printf "| python ai_edge_litert | %.2f | %.1f | %.2f | %.1f | %.2f |\n" "$p" "$(echo "$images / $p" | bc -l)" "$pl" "$(echo "$images / $pl" | bc -l)" "$pc"
echo
printf "ratio (python / cbr): wall time, process %.2fx, loop %.2fx; CPU time %.2fx\n" "$(echo "$p / $c" | bc -l)" "$(echo "$pl / $cl" | bc -l)" "$(echo "$pc / $cc" | bc -l)"
echo "(cbr's process also computes the head with leave-one-out calibration and writes the classifier; the Python loop only embeds)"
