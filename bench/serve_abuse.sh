#!/usr/bin/env bash
# Load and abuse run of `cbr serve` on loopback (issue 12), bounded in time and
# memory, three phases:
#   A. wrk, CLIENTS connections x DURATION s of classify (after a 5 s warm-up):
#      errors, latency, RSS sampled each second (flat: the second half's peak
#      within 5% or 20 MB of the first half's);
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
NAME=serve_abuse.sh
source "$(dirname "${BASH_SOURCE[0]}")/serve_common.sh"
STALLED=${STALLED:-64}
MODELS=${MODELS:-20}
MAX_MB=${MAX_MB:-300}

start_server --max-loaded 100 --max-loaded-mb "$MAX_MB"
# "load": 10 classes x 5 images; m1..mMODELS: 3 classes x 3 images each.
build_model load 0 10 5
for i in $(seq 1 "$MODELS"); do build_model "m$i" "$i" 3 3; done
RSS_IDLE=$(rss)   # the embedder (kept for builds) loaded, no classifier yet
# Warm-up: the session's buffers grow to the largest batch once; "flat" is measured after.
classify_load 5 load >/dev/null

# --- A: plain load ------------------------------------------------------------
# RSS sampled every second: "flat" means the second half of the run reaches no
# higher than the first half did (no growth trend once the working set is in use).
( while kill -0 "$SERVER_PID" 2>/dev/null; do rss; echo; sleep 1; done ) >"$WORK/rss_a.txt" &
SAMPLER=$!
A=$(classify_load "$DURATION" load)
kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true
N_A=$(grep -c . "$WORK/rss_a.txt")
RSS_A0=$(head -n $((N_A / 2)) "$WORK/rss_a.txt" | sort -n | tail -1)
RSS_A1=$(tail -n +$((N_A / 2 + 1)) "$WORK/rss_a.txt" | sort -n | tail -1)

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
EXTRA_PIDS+=($!)
sleep 1
B=$(classify_load "$DURATION" load)
kill "${EXTRA_PIDS[@]}"; wait "${EXTRA_PIDS[@]}" 2>/dev/null || true; EXTRA_PIDS=()
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

ok() { if [ "$1" = 1 ]; then echo pass; else echo FAIL; fi; }
# Flat: the second half's peak at most 5% or 20 MB above the first half's.
A_OK=$(ok "$([ "$(field "$A" errors)" = 0 ] && [ "$RSS_A1" -le $((RSS_A0 + RSS_A0 / 20 > RSS_A0 + 20 ? RSS_A0 + RSS_A0 / 20 : RSS_A0 + 20)) ] && echo 1)")
B_OK=$(ok "$([ "$(field "$B" errors)" = 0 ] && awk -v p="$(field "$B" p99_ms)" 'BEGIN{exit !(p < 1000)}' && echo 1)")
C_OK=$(ok "$([ "$C_ERR" = 0 ] && [ "$RSS_C_MAX" -le "$BOUND" ] && echo 1)")

cat <<EOF
## cbr serve: load and abuse ($(date -u +%Y-%m-%d), $(nproc) cores, loopback)

| phase | requests | req/s | p50 ms | p99 ms | max ms | errors | RSS MB | target | |
|---|---|---|---|---|---|---|---|---|---|
| A: $CLIENTS conns x ${DURATION}s classify | $(field "$A" requests) | $(field "$A" rps) | $(field "$A" p50_ms) | $(field "$A" p99_ms) | $(field "$A" max_ms) | $(field "$A" errors) | peak $RSS_A0 (1st half) -> $RSS_A1 (2nd half) | 0 errors, flat RSS | $A_OK |
| B: same + $STALLED stalled uploads ($REOPENED re-opened after 408) | $(field "$B" requests) | $(field "$B" rps) | $(field "$B" p50_ms) | $(field "$B" p99_ms) | $(field "$B" max_ms) | $(field "$B" errors) | $(rss) | p99 < 1000 ms | $B_OK |
| C: $MODELS models in turn x2 | $((2 * MODELS)) | | | | | $C_ERR | max $RSS_C_MAX (idle $RSS_IDLE + bound $MAX_MB = $BOUND) | RSS <= $BOUND | $C_OK |

Loaded at the end: $LOADED MB measured (models, MB), --max-loaded-mb $MAX_MB.
EOF
case "$A_OK$B_OK$C_OK" in *FAIL*) exit 1 ;; esac
