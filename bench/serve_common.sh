# Sourced by bench/serve_load.sh and bench/serve_abuse.sh: the knobs they share, a `cbr serve`
# on loopback with its RSS, server-side models built from CUB photos, and wrk's classify script.
# The sourcing script sets NAME (for messages) first.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-60}
CBR=${CBR:-$REPO/target/release/cbr}
DATASETS=${DATASETS:-$REPO/../shared/datasets}
CUB=$DATASETS/cub200_010

die() { echo "$NAME: error: $*" >&2; exit 2; }
command -v wrk >/dev/null || die "wrk is missing: apt-get install -y wrk"
command -v curl >/dev/null || die "curl is missing: apt-get install -y curl"
[ -x "$CBR" ] || die "no cbr binary at $CBR (cargo build --release, or set CBR)"
[ -d "$CUB" ] || die "$CUB is missing"

WORK=$(mktemp -d)
SERVER_PID=""
EXTRA_PIDS=()   # background helpers the script starts: killed on exit
cleanup() {
  for p in "${EXTRA_PIDS[@]}" "$SERVER_PID"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_server [cbr serve options...]: sets SERVER_PID, URL and PORT.
start_server() {
  "$CBR" serve --addr 127.0.0.1:0 --models "$WORK/models" "$@" \
    >"$WORK/server.out" 2>"$WORK/server.err" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q "listening on" "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/.*listening on //p' "$WORK/server.out" | head -1)
  [ -n "$URL" ] || die "cbr serve did not start: $(cat "$WORK/server.err")"
  PORT=${URL##*:}
}

# The server's resident memory, MiB.
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/"$SERVER_PID"/status; }

# build_model NAME FIRST N PER: a server model of N CUB classes (a window from class FIRST,
# wrapping around) with PER images each, uploaded and built through the API.
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
    curl -sf "$URL/api/models/$name/build" | grep -q '"state":"failed"' &&
      die "build of $name failed: $(curl -s "$URL/api/models/$name/build")"
    sleep 0.3
  done
}

# The image every classify request sends.
IMAGE=$(ls "$CUB"/001.*/* | sort | tail -1)

# wrk's script: POST the image as the raw body; at the end one line
# `RESULT requests=.. seconds=.. rps=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. errors=.. status_errors=.. timeouts=..`.
cat >"$WORK/classify.lua" <<'LUA'
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
LUA

# classify_load SECONDS MODEL: wrk with CLIENTS connections; prints its RESULT line.
classify_load() {
  IMAGE=$IMAGE wrk -t2 -c"$CLIENTS" -d"${1}s" --timeout 30s -s "$WORK/classify.lua" \
    "$URL/api/models/$2/classify" >"$WORK/wrk.txt" 2>&1
  grep '^RESULT' "$WORK/wrk.txt" || die "wrk failed: $(cat "$WORK/wrk.txt")"
}

# field RESULT_LINE KEY: one value of a RESULT line.
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
