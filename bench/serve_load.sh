#!/usr/bin/env bash
# Load test of `cbr serve` on loopback: classify requests from 16 concurrent
# clients for 60 s (wrk, closed loop: each client sends its next request when
# the previous answer arrives); throughput, p50/p99 latency, errors, server
# memory (RSS) before, during and after. Then the ceiling: ONNX Runtime called
# directly from Python on the same model file and the same image, in a loop
# (batch 1, and batch 16 like the server's batching). Markdown report on stdout.
#
#   bench/serve_load.sh                 # ~2.5 minutes
#
# Knobs: CLIENTS=16 DURATION=60 CEILING_SECS=20 CBR=<repo>/target/release/cbr
#        DATASETS=<repo>/../shared/datasets CBR_CACHE_DIR (as for cbr)
# Needs: wrk (apt-get install -y wrk), curl, and .venv/ from scripts/setup.sh (onnxruntime, numpy, Pillow).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# The Python of the repository's virtual environment (scripts/setup.sh makes it), or $CBR_PYTHON.
PY=${CBR_PYTHON:-$REPO/.venv/bin/python}
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-60}
CEILING_SECS=${CEILING_SECS:-20}
CBR=${CBR:-$REPO/target/release/cbr}
DATASETS=${DATASETS:-$REPO/../shared/datasets}
CUB=$DATASETS/cub200_010

die() { echo "serve_load.sh: error: $*" >&2; exit 2; }
command -v wrk >/dev/null || die "wrk is missing: apt-get install -y wrk"
command -v curl >/dev/null || die "curl is missing: apt-get install -y curl"
"$PY" -c "import onnxruntime, numpy, PIL" 2>/dev/null || die "$PY needs onnxruntime, numpy and Pillow (scripts/setup.sh installs them)"
[ -x "$CBR" ] || (cd "$REPO" && cargo build --release -q) || die "cannot build cbr"
[ -d "$CUB" ] || die "$CUB is missing"

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# --- server with a model: 10 CUB classes x 5 images ---------------------------
"$CBR" serve --addr 127.0.0.1:0 --models "$WORK/models" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/.*listening on //p' "$WORK/server.out" | head -1)
[ -n "$URL" ] || die "cbr serve did not start: $(cat "$WORK/server.err")"
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/"$SERVER_PID"/status; }

curl -sf -XPOST "$URL/api/models" -H 'Content-Type: application/json' -d '{"name":"load"}' >/dev/null
for class in "$CUB"/*/; do
  label=$(basename "$class")
  args=()
  for f in $(ls "$class" | sort | head -5); do args+=(-F "file=@$class$f"); done
  curl -sf -XPOST "$URL/api/models/load/labels/$label/images" "${args[@]}" >/dev/null
done
curl -sf -XPOST "$URL/api/models/load/build" >/dev/null
until curl -sf "$URL/api/models/load/build" | grep -q '"state":"done"'; do
  curl -sf "$URL/api/models/load/build" | grep -q '"state":"failed"' && die "build failed: $(curl -s "$URL/api/models/load/build")"
  sleep 0.5
done
IMAGE=$(ls "$CUB"/001.*/* | sort | tail -1)
curl -sf "$URL/api/models/load/model.onnx" -o "$WORK/model.onnx"
for _ in 1 2 3 4 5; do curl -sf -XPOST "$URL/api/models/load/classify" -H 'Content-Type: image/jpeg' --data-binary @"$IMAGE" >/dev/null; done
ANSWER=$(curl -sf -XPOST "$URL/api/models/load/classify?k=1" -H 'Content-Type: image/jpeg' --data-binary @"$IMAGE")

# --- load: wrk, CLIENTS connections, raw-body classify ------------------------
cat >"$WORK/classify.lua" <<'EOF'
local f = assert(io.open(os.getenv("IMAGE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.2f rps=%.1f p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f errors=%d status_errors=%d timeouts=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect + e.read + e.write + e.status + e.timeout, e.status, e.timeout))
end
EOF
RSS_BEFORE=$(rss)
( while kill -0 "$SERVER_PID" 2>/dev/null; do rss; echo; sleep 2; done ) >"$WORK/rss.txt" &
SAMPLER=$!
IMAGE=$IMAGE wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --timeout 30s -s "$WORK/classify.lua" "$URL/api/models/load/classify" >"$WORK/wrk.txt" 2>&1
kill $SAMPLER 2>/dev/null || true
RSS_AFTER=$(rss)
RSS_MAX=$(sort -n "$WORK/rss.txt" | tail -1)
RESULT=$(grep '^RESULT' "$WORK/wrk.txt" || die "wrk failed: $(cat "$WORK/wrk.txt")")
val() { echo "$RESULT" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
ERRORS_AFTER=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$URL/api/models/load/classify" -H 'Content-Type: image/jpeg' --data-binary @"$IMAGE")

# --- ceiling: ONNX Runtime directly from Python, same model, same image -------
CEILING=$("$PY" - "$WORK/model.onnx" "$IMAGE" "$CEILING_SECS" <<'EOF'
import json, sys, time
import numpy as np, onnxruntime as ort
from PIL import Image
model, image, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
meta = json.loads(s.get_modelmeta().custom_metadata_map["cbr"])
p = meta["preprocess"]
img = Image.open(image).convert("RGB").resize((p["width"], p["height"]), Image.BILINEAR)
x = (np.asarray(img, dtype=np.float32) - np.array(p["mean"], np.float32)) / np.array(p["std"], np.float32)
if p["layout"].lower() == "nchw":
    x = x.transpose(2, 0, 1)
x = x[None]
name = meta["embedder"]["input"]
out = []
for batch in (1, 16):
    xb = np.repeat(x, batch, axis=0)
    try:
        s.run(["scores"], {name: xb})
    except Exception:
        out.append("batch%d=n/a" % batch)
        continue
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs / 2:
        s.run(["scores"], {name: xb})
        n += batch
    out.append("batch%d=%.1f" % (batch, n / (time.perf_counter() - t0)))
print(" ".join(out))
EOF
)
cval() { echo "$CEILING" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

cat <<EOF
## cbr serve load test

- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); server: \`cbr serve\` (defaults), model: 10 CUB classes x 5 images, default embedder
- load: wrk, $CLIENTS concurrent clients (connections), ${DURATION} s, \`POST /api/models/load/classify\` with a $(stat -c %s "$IMAGE")-byte JPEG as the raw body
- answer for that image: $ANSWER

| metric | value |
|---|---|
| requests | $(val requests) in $(val seconds) s |
| throughput | **$(val rps) images/s** |
| latency p50 / p90 / p99 / max | $(val p50_ms) / $(val p90_ms) / $(val p99_ms) / $(val max_ms) ms |
| errors (connect/read/write/non-2xx/timeout) | **$(val errors)** (non-2xx $(val status_errors), timeouts $(val timeouts)) |
| server RSS before / max during / after | $RSS_BEFORE / $RSS_MAX / $RSS_AFTER MiB |
| status of one more request after the run | $ERRORS_AFTER |
| ceiling: ONNX Runtime from Python, same model and image, batch 1 | $(cval batch1) images/s (model only: no decode, no HTTP) |
| ceiling: same, batch 16 | $(cval batch16) images/s |
EOF
if [ "$(val errors)" != "0" ]; then echo "serve_load.sh: there were errors" >&2; exit 1; fi
