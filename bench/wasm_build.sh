#!/usr/bin/env bash
# Head fit + model file write for CLASSES classes x SHOTS photos, natively (in-process,
# examples/head_speed.rs) and in WebAssembly under Node (scripts/cbr-node.mjs, the same
# embeddings, the same bytes), side by side, plus the .wasm size. The photos are the first SHOTS
# of the first CLASSES classes of Tiny ImageNet (../shared) when present, else Fashion-MNIST from
# the fixtures (10 classes at most). Usage: bench/wasm_build.sh [CLASSES] [SHOTS] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
classes=${1:-40} shots=${2:-5} repeats=${3:-5}
data=${CBR_SHARED:-../shared}/datasets/tiny_imagenet_val
[ -d "$data" ] || data=$CBR_FIXTURES/fashion-mnist
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  echo "path,label"
  for c in $(ls "$data" | head -n "$classes"); do
    for f in $(ls "$data/$c" | head -n "$shots"); do echo "$(cd "$data/$c" && pwd)/$f,$c"; done
  done
} >"$work/images.csv"
"$CBR_BIN" embed "$work/images.csv" -o "$work/part.parquet" -q
# The default embedder's file, where cbr caches it (cbr::cache::dir).
embedder=${CBR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cbr}/models/efficientnet-lite0.onnx
native=$(cargo run --release --quiet --example head_speed -- "$work/part.parquet" "$embedder" "$repeats")
wasm=$(node scripts/cbr-node.mjs build --embeddings "$work/part.parquet" --embedder "$embedder" \
  -o "$work/wasm.onnx" --repeat "$repeats" 2>/dev/null)
python3 - "$native" "$wasm" "$(stat -c %s web/pkg/cbr_core.wasm)" "$(sha256sum "$work/wasm.onnx" | cut -c1-64)" "$data" <<'PY'
import json, statistics, sys
native, wasm = json.loads(sys.argv[1]), json.loads(sys.argv[2])
wasm_ms = statistics.median(wasm["times_ms"])
print(f"data: {sys.argv[5]}; {native['classes']} classes, {native['rows']} rows; model {native['bytes'] / 1e6:.1f} MB")
print(f"head fit + write, native (in-process), median of {len(native['ms'])}: {native['median_ms']:.1f} ms")
print(f"head fit + write, WebAssembly in Node, median of {len(wasm['times_ms'])}: {wasm_ms:.1f} ms ({wasm_ms / native['median_ms']:.2f}x native)")
print(f"cbr_core.wasm: {int(sys.argv[3]) / 1e6:.2f} MB; same bytes: {native['sha256'] == sys.argv[4]}")
PY
