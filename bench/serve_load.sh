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
NAME=serve_load.sh
source "$(dirname "${BASH_SOURCE[0]}")/serve_common.sh"
# The Python of the repository's virtual environment (scripts/setup.sh makes it), or $CBR_PYTHON.
PY=${CBR_PYTHON:-$REPO/.venv/bin/python}
CEILING_SECS=${CEILING_SECS:-20}
"$PY" -c "import onnxruntime, numpy, PIL" 2>/dev/null || die "$PY needs onnxruntime, numpy and Pillow (scripts/setup.sh installs them)"

# --- server with a model: 10 CUB classes x 5 images ---------------------------
start_server
build_model load 0 10 5
curl -sf "$URL/api/models/load/model.onnx" -o "$WORK/model.onnx"
for _ in 1 2 3 4 5; do curl -sf -XPOST "$URL/api/models/load/classify" -H 'Content-Type: image/jpeg' --data-binary @"$IMAGE" >/dev/null; done
ANSWER=$(curl -sf -XPOST "$URL/api/models/load/classify?k=1" -H 'Content-Type: image/jpeg' --data-binary @"$IMAGE")

# --- load: wrk, CLIENTS connections, raw-body classify ------------------------
RSS_BEFORE=$(rss)
( while kill -0 "$SERVER_PID" 2>/dev/null; do rss; echo; sleep 2; done ) >"$WORK/rss.txt" &
SAMPLER=$!
RESULT=$(classify_load "$DURATION" load)
kill $SAMPLER 2>/dev/null || true
RSS_AFTER=$(rss)
RSS_MAX=$(sort -n "$WORK/rss.txt" | tail -1)
val() { field "$RESULT" "$1"; }
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
