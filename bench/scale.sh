#!/usr/bin/env bash
# The scale table: cbr's exact search (FlatIndex), its approximate index (IVF)
# and the exported ONNX head in ONNX Runtime, beside FAISS IndexFlatIP on the
# same synthetic vectors (1280-d, clustered), in one run.
#
#   bench/scale.sh           # N = 10k, 100k, 1M  (~25-35 min, ~12 GB peak memory)
#   bench/scale.sh --quick   # N = 10k, 100k      (~2 min)
#
# Needs FAISS (bench only), in the repository's virtual environment (scripts/setup.sh):
#   .venv/bin/python -m pip install -r bench/requirements-scale.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${CBR_PYTHON:-$PWD/.venv/bin/python}

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

"$PY" -c "import faiss" 2>/dev/null || { echo "FAISS is missing: $PY -m pip install -r bench/requirements-scale.txt" >&2; exit 1; }
cargo build --release --locked --example scale >&2
bin=target/release/examples/scale

work=$(mktemp -d "${TMPDIR:-/tmp}/cbr-scale.XXXXXX")
trap 'rm -rf "$work"' EXIT
out="$work/results.jsonl"

# size  clusters  single-queries  batch  onnx-class-counts  ivf-probes (empty: no IVF)
run_size() {
    local n=$1 clusters=$2 singles=$3 batch=$4 classes=$5 probes=$6
    local ivf=""
    [[ -n "$probes" ]] && ivf="--ivf --nprobe $probes"
    local dir="$work/$n"
    echo "== N = $n" >&2
    "$bin" gen --dir "$dir" --n "$n" --clusters "$clusters" --queries "$batch" >>"$out"
    "$PY" bench/scale_faiss.py --dir "$dir" --singles "$singles" --batch "$batch" >>"$out"
    OMP_NUM_THREADS=1 "$PY" bench/scale_faiss.py --dir "$dir" --singles "$singles" --batch "$batch" >>"$out"
    "$bin" search --dir "$dir" --singles "$singles" --batch "$batch" $ivf >>"$out"
    "$bin" onnx --dir "$dir" --classes "$classes" --singles "$singles" --batch "$batch" >>"$out"
    "$bin" onnx --dir "$dir" --classes "$classes" --singles "$singles" --batch "$batch" --dtype int8 >>"$out"
    rm -rf "$dir"
}

run_size 10000 100 50 1000 100,10000 ""
run_size 100000 1000 30 1000 1000,100000 0,32
if [[ $quick == 0 ]]; then
    run_size 1000000 10000 10 500 1000,100000 125,0
fi
"$PY" bench/scale_table.py "$out"
