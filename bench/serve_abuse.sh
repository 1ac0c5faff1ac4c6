#!/usr/bin/env bash
# Load and abuse run of `cbr serve` on loopback (issue 12), bounded in time and
# memory, three phases:
#   A. wrk, CLIENTS connections x DURATION s of classify (after a 5 s warm-up):
#      errors, latency, RSS at the start and end (flat: within 5% or 20 MB);
#   B. the same while STALLED uploads are held open (each sends a classify
#      request's headers with Content-Length: 100000 and then stalls; the
#      server drops it after --read-timeout, and it reconnects): classify p99;
#   C. MODELS models classified in turn, twice, with --max-loaded-mb MAX_MB:
#      the highest RSS against the bound (RSS before any model was loaded +
#      MAX_MB).
# Prints a Markdown table; exits 1 when a phase misses its target (A: 0
# errors; B: 0 errors and p99 < 1 s; C: RSS under the bound).
#
#   bench/serve_abuse.sh            # ~4 minutes
#
# Knobs: CLIENTS=16 DURATION=60 STALLED=64 MODELS=20 MAX_MB=300
#        CBR=<repo>/target/release/cbr DATASETS=<repo>/../shared/datasets
# Needs: wrk (apt-get install -y wrk), curl, python3.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-60}
STALLED=${STALLED:-64}
MODELS=${MODELS:-20}
MAX_MB=${MAX_MB:-300}
CBR=${CBR:-$REPO/target/release/cbr}
DATASETS=${DATASETS:-$REPO/../shared/datasets}
CUB=$DATASETS/cub200_010

die() { echo "serve_abuse.sh: error: $*" >&2; exit 2; }
command -v wrk >/dev/null || die "wrk is missing: apt-get install -y wrk"
command -v curl >/dev/null || die "curl is missing: apt-get install -y curl"
[ -x "$CBR" ] || die "no cbr binary at $CBR (cargo build --release, or set CBR)"
[ -d "$CUB" ] || die "$CUB is missing"

WORK=$(mktemp -d)
SERVER_PID=""
STALL_PID=""
cleanup() {
  [ -n "$STALL_PID" ] && kill "$STALL_PID" 2>/dev/null
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"$CBR" serve --addr 127.0.0.1:0 --models "$WORK/models" --max-loaded 100 --max-loaded-mb "$MAX_MB" \
  >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/.*listening on //p' "$WORK/server.out" | head -1)
[ -n "$URL" ] || die "cbr serve did not start: $(cat "$WORK/server.err")"
PORT=${URL##*:}
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/"$SERVER_PID"/status; }

# Model i: 3 classes (a window over the 10 CUB classes) x 3 images.
mapfile -t CLASSES < <(ls -d "$CUB"/*/ | sort)
build_model() {
  local name=$1 first=$2 n=$3 per=$4
  curl -sf -XPOST "$URL/api/models" -H 'Content-Type: application/json' -d "{\"name\":\"$name\"}" >/dev/null
  for k in $(seq 0 $((n - 1))); do
    local class=${CLASSES[$(((first + k) % ${#CLASSES[@]}))]}
    local args=()
    for f in $(ls "$class" | sort | head -"$per"); do args+=(-F "file=@$class$f"); done
    curl -sf -XPOST "$URL/api/models/$name/labels/$(basename "$class")/images" "${args[@]}" >/dev/null
  done
  curl -sf -XPOST "$URL/api/models/$name/build" >/dev/null
  until curl -sf "$URL/api/models/$name/build" | grep -q '"state":"done"'; do
    curl -sf "$URL/api/models/$name/build" | grep -q '"state":"failed"' && die "build of $name failed"
    sleep 0.3
  done
}
build_model load 0 10 5
for i in $(seq 1 "$MODELS"); do build_model "m$i" "$i" 3 3; done
IMAGE=$(ls "$CUB"/001.*/* | sort | tail -1)
RSS_IDLE=$(rss)   # the embedder (kept for builds) loaded, no classifier yet

cat >"$WORK/classify.lua" <<'EOF'
local f = assert(io.open(os.getenv("IMAGE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.1f %.1f %.1f %.1f %d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
load() {  # load SECONDS; prints: requests rps p50 p99 max errors
  IMAGE=$IMAGE wrk -t2 -c"$CLIENTS" -d"${1}s" --timeout 30s -s "$WORK/classify.lua" \
    "$URL/api/models/load/classify" | sed -n 's/^RESULT //p'
}
# Warm-up: the session's buffers grow to the largest batch once; "flat" is measured after.
load 5 >/dev/null

# --- A: plain load ------------------------------------------------------------
RSS_A0=$(rss)
read -r A_REQ A_RPS A_P50 A_P99 A_MAX A_ERR < <(load "$DURATION")
RSS_A1=$(rss)

# --- B: the same with stalled uploads held open ---------------------------------
cat >"$WORK/stall.py" <<'EOF'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
head = (f"POST /api/models/load/classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n").encode() + b"\xff\xd8"
def stall():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head)
    s.setblocking(False)
    return s
socks = [stall() for _ in range(n)]
reopened = 0
while True:  # keep n held: the server drops each after --read-timeout
    time.sleep(0.2)
    for i, s in enumerate(socks):
        try:
            if s.recv(65536) == b"":
                raise ConnectionError
        except BlockingIOError:
            continue
        except OSError:
            pass
        s.close()
        socks[i] = stall()
        reopened += 1
        with open(sys.argv[3], "w") as f:
            f.write(str(reopened))
EOF
python3 "$WORK/stall.py" "$PORT" "$STALLED" "$WORK/reopened" &
STALL_PID=$!
sleep 1
read -r B_REQ B_RPS B_P50 B_P99 B_MAX B_ERR < <(load "$DURATION")
kill "$STALL_PID"; wait "$STALL_PID" 2>/dev/null || true; STALL_PID=""
REOPENED=$(cat "$WORK/reopened" 2>/dev/null || echo 0)

# --- C: many models in turn -----------------------------------------------------
RSS_C_MAX=0
C_ERR=0
for round in 1 2; do
  for i in $(seq 1 "$MODELS"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$URL/api/models/m$i/classify" \
      -H 'Content-Type: image/jpeg' --data-binary @"$IMAGE")
    [ "$code" = 200 ] || C_ERR=$((C_ERR + 1))
    r=$(rss); [ "$r" -gt "$RSS_C_MAX" ] && RSS_C_MAX=$r
  done
done
HEALTH=$(curl -sf "$URL/api/health")
LOADED=$(echo "$HEALTH" | python3 -c 'import json,sys; h=json.load(sys.stdin); print(h["loaded_models"], round(h["loaded_bytes"]/2**20))')
BOUND=$((RSS_IDLE + MAX_MB))

ok() { if [ "$1" = 1 ]; then echo pass; else echo FAIL; FAILED=1; fi; }
FAILED=0
# Flat: at most 5% or 20 MB of growth over the run.
A_OK=$(ok "$([ "$A_ERR" = 0 ] && [ "$RSS_A1" -le $((RSS_A0 + RSS_A0 / 20 > RSS_A0 + 20 ? RSS_A0 + RSS_A0 / 20 : RSS_A0 + 20)) ] && echo 1)")
B_OK=$(ok "$([ "$B_ERR" = 0 ] && awk -v p="$B_P99" 'BEGIN{exit !(p < 1000)}' && echo 1)")
C_OK=$(ok "$([ "$C_ERR" = 0 ] && [ "$RSS_C_MAX" -le "$BOUND" ] && echo 1)")

cat <<EOF
## cbr serve: load and abuse ($(date -u +%Y-%m-%d), $(nproc) cores, loopback)

| phase | requests | req/s | p50 ms | p99 ms | max ms | errors | RSS MB | target | |
|---|---|---|---|---|---|---|---|---|---|
| A: $CLIENTS conns x ${DURATION}s classify | $A_REQ | $A_RPS | $A_P50 | $A_P99 | $A_MAX | $A_ERR | $RSS_A0 -> $RSS_A1 | 0 errors, flat RSS | $A_OK |
| B: same + $STALLED stalled uploads ($REOPENED re-opened after 408) | $B_REQ | $B_RPS | $B_P50 | $B_P99 | $B_MAX | $B_ERR | $(rss) | p99 < 1000 ms | $B_OK |
| C: $MODELS models in turn x2 | $((2 * MODELS)) | | | | | $C_ERR | max $RSS_C_MAX (idle $RSS_IDLE + bound $MAX_MB = $BOUND) | RSS <= $BOUND | $C_OK |

Loaded at the end: $LOADED MB measured (models, MB), --max-loaded-mb $MAX_MB.
EOF
exit "$FAILED"
