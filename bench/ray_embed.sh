#!/usr/bin/env bash
# Throughput of examples/ray_embed.py on a local Ray cluster of NODES nodes with one CPU each
# (the head, plus a second node on the same machine for NODES=2), embedding PHOTOS without the
# embedding cache into SHARDS shards; then, for reference, one `cbr embed` process over the same
# images. Prints the example's JSON summary (images_per_second) and the reference's rate.
#   bench/ray_embed.sh .fixtures/scenes 1
#   bench/ray_embed.sh .fixtures/scenes 2
# Needs scripts/setup.sh (.venv-wheel/) and the wheel installed there (scripts/test.sh does it).
# The Ray processes are children of this script (ray start --block) and are stopped by it. It runs
# in a network namespace of its own with only the loopback interface (unshare, as root): Ray
# would otherwise advertise and dial the machine's own address, and its usage-stats module probes
# cloud metadata addresses even with usage stats off.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CBR_BENCH_NETNS:-}" ]; then
  exec unshare --net env CBR_BENCH_NETNS=1 "$0" "$@"
fi
ip link set lo up
photos=$1 nodes=${2:-1} shards=${3:-8}
bin=$PWD/.venv-wheel/bin
tmp=$(mktemp -d /tmp/cbr-ray-XXXX)
port=$("$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
address=127.0.0.1:$port
export RAY_USAGE_STATS_ENABLED=0
opts=(--num-cpus=1 --object-store-memory=100000000 --block --disable-usage-stats)
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait; rm -rf "$tmp"; }
trap stop EXIT
wait_nodes() {
  for _ in $(seq 120); do
    n=$("$bin/python" -c 'import ray,sys; ray.init(address=sys.argv[1], log_to_driver=False); print(len([x for x in ray.nodes() if x["Alive"]]))' "$address" 2>/dev/null | tail -n 1 || true)
    [ "${n:-0}" -ge "$1" ] && return 0
    sleep 1
  done
  echo "the cluster did not reach $1 nodes" >&2
  return 1
}
"$bin/ray" start --head --port="$port" --include-dashboard=false --temp-dir="$tmp" "${opts[@]}" \
  >"$tmp/head.log" 2>&1 &
pids+=($!)
wait_nodes 1
if [ "$nodes" -ge 2 ]; then
  "$bin/ray" start --address="$address" "${opts[@]}" >"$tmp/node2.log" 2>&1 &
  pids+=($!)
  wait_nodes 2
fi
"$bin/python" examples/ray_embed.py "$photos" --out "$tmp/parts" --address "$address" \
  --shards "$shards" --no-cache
n=$(find "$photos" -type f | wc -l)
t0=$(date +%s.%N)
"$bin/cbr" embed "$photos" -o "$tmp/one.parquet" --no-cache -q
t1=$(date +%s.%N)
echo "reference: one \`cbr embed\` process: $n images in $(echo "$t1 - $t0" | bc) s ($(echo "scale=1; $n / ($t1 - $t0)" | bc) images/s)"
