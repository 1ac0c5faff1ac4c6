#!/usr/bin/env bash
# cbr build speed vs the Python user's equivalent, plus cbr classify latency
# and peak memory. One command, one Markdown report on stdout.
#
#   bench/build_speed.sh            # from anywhere; ~10 minutes on 2 cores
#
# Environment knobs (all optional):
#   CBR_CACHE_DIR   where cbr keeps ONNX Runtime and embedders (as for cbr itself)
#   DATASETS        default: <repo>/../shared/datasets
#   REPS=3          repetitions per tool and dataset (the median is reported)
#   TINY_CLASSES=40 classes of tiny_imagenet_val to use (x50 images); 200 = all 10,000
#   WORKERS=2       decode processes for the "optimised" Python variant (0 = skip it)
#   CBR_ENV=""      extra environment for the cbr runs, e.g. "RAYON_NUM_THREADS=1"
#   KEEP=1          keep the scratch folder (models, logs, raw timings)
#   WAIT_IDLE=60    before each timed run, wait up to this many seconds for the
#                   CPUs to be >=85% idle (shared machine); 0 = don't wait
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# The Python of the repository's virtual environment (scripts/setup.sh makes it), or $CBR_PYTHON.
PY=${CBR_PYTHON:-$REPO/.venv/bin/python}
DATASETS=${DATASETS:-$REPO/../shared/datasets}
REPS=${REPS:-3}
TINY_CLASSES=${TINY_CLASSES:-40}
WORKERS=${WORKERS:-2}
CBR_ENV=${CBR_ENV:-}
WAIT_IDLE=${WAIT_IDLE:-60}

die() { echo "build_speed.sh: error: $*" >&2; exit 2; }

# --- preconditions -----------------------------------------------------------
if [ ! -d "$DATASETS" ]; then
    die "no datasets folder at $DATASETS (expected ../shared/datasets next to the repo, with cub200_010/ and tiny_imagenet_val/). Set DATASETS=/path if it lives elsewhere. Refusing to run."
fi
DATASETS=$(cd "$DATASETS" && pwd)
for d in cub200_010 tiny_imagenet_val; do
    [ -d "$DATASETS/$d" ] || die "$DATASETS/$d is missing; refusing to run."
done
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is needed for peak RSS: apt-get install -y time"
"$PY" -c 'import onnxruntime, numpy, PIL' 2>/dev/null ||
    die "$PY with onnxruntime, numpy and pillow is needed for the reference (scripts/setup.sh makes .venv/ with them)"

if [ ! -x "$REPO/target/release/cbr" ]; then
    echo "target/release/cbr missing: building it (cargo build --release)" >&2
    (cd "$REPO" && cargo build --release) >&2
fi

WORK=$(mktemp -d /tmp/cbr-build-speed.XXXXXX)
if [ "${KEEP:-0}" = 1 ]; then echo "scratch: $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi

# Snapshot the binary: others may rebuild target/release/cbr during the run.
cp "$REPO/target/release/cbr" "$WORK/cbr"
CBR="$WORK/cbr"

# The embedder, located the way a user would: `cbr models pull` prints its path.
MODEL=$("$CBR" models pull | tail -n 1)
[ -f "$MODEL" ] || die "cbr models pull did not print an existing embedder path (got: $MODEL)"

# --- datasets (never copied: the subset is symlinks to class folders) -------
CUB="$DATASETS/cub200_010"
TINY_ALL="$DATASETS/tiny_imagenet_val"
TINY="$WORK/tiny_imagenet_val_${TINY_CLASSES}c"
mkdir -p "$TINY"
for c in $(ls "$TINY_ALL" | sort | head -n "$TINY_CLASSES"); do
    [ -d "$TINY_ALL/$c" ] && ln -s "$TINY_ALL/$c" "$TINY/$c"
done
count_images() { find -L "$1" -mindepth 2 -type f ! -name '.*' | wc -l; }

RESULTS="$WORK/results.tsv"   # dataset images tool rep wall_s rss_kb inner_s
: >"$RESULTS"

# Waits (up to WAIT_IDLE s) until the machine is >=85% idle over 2 s, so that
# other people's compiles do not land inside a measurement.
NOT_IDLE=0
wait_idle() {
    [ "$WAIT_IDLE" -gt 0 ] || return 0
    local waited=0 u n s idle io irq sirq st t1 i1 t2 i2 pct
    while :; do
        read -r _ u n s idle io irq sirq st _ </proc/stat; t1=$((u+n+s+idle+io+irq+sirq+st)); i1=$idle
        sleep 2; waited=$((waited + 2))
        read -r _ u n s idle io irq sirq st _ </proc/stat; t2=$((u+n+s+idle+io+irq+sirq+st)); i2=$idle
        pct=$((100 * (i2 - i1) / (t2 - t1 + 1)))
        [ "$pct" -ge 85 ] && return 0
        if [ "$waited" -ge "$WAIT_IDLE" ]; then
            echo "  (machine still busy: ${pct}% idle after ${waited} s; measuring anyway)" >&2
            NOT_IDLE=$((NOT_IDLE + 1)); return 0
        fi
    done
}

# run_timed DATASET_NAME IMAGES TOOL REP -- command...
run_timed() {
    local ds=$1 n=$2 tool=$3 rep=$4; shift 5
    wait_idle
    local log="$WORK/log.$ds.$(echo "$tool" | tr -c 'a-zA-Z0-9' _).$rep"
    /usr/bin/time -f '%e %M' -o "$log.time" "$@" >"$log.out" 2>"$log.err" ||
        { cat "$log.err" >&2; die "$tool failed on $ds"; }
    local wall rss inner
    read -r wall rss <"$log.time"
    # In-process time of decode+embed: cbr prints "embedded in X s", the reference "seconds=X".
    inner=$(grep -oE 'embedded in [0-9.]+ s' "$log.err" | grep -oE '[0-9.]+' ||
            grep -oE 'seconds=[0-9.]+' "$log.out" | cut -d= -f2 || echo nan)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ds" "$n" "$tool" "$rep" "$wall" "$rss" "${inner:-nan}" >>"$RESULTS"
    printf '  %-18s %-22s rep %s: %6.2f s wall, %4d MB peak RSS\n' "$ds" "$tool" "$rep" "$wall" $((rss / 1024)) >&2
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

for ds in cub200_010 tiny_imagenet_val; do
    if [ "$ds" = cub200_010 ]; then root=$CUB; name=cub200_010; else root=$TINY; name="tiny_imagenet_val (${TINY_CLASSES} classes)"; fi
    n=$(count_images "$root")
    echo "$name: $n images" >&2
    # Interleave tools inside each repetition so load changes hit all of them alike.
    for rep in $(seq 1 "$REPS"); do
        run_timed "$name" "$n" "cbr build" "$rep" -- env $CBR_ENV "$CBR" build "$root" -o "$WORK/$ds.onnx"
        run_timed "$name" "$n" "python (plain)" "$rep" -- "$PY" "$HERE/reference_build.py" "$root" --model "$MODEL" -o "$WORK/$ds.npz"
        if [ "$WORKERS" -gt 0 ]; then
            run_timed "$name" "$n" "python (--workers $WORKERS)" "$rep" -- "$PY" "$HERE/reference_build.py" "$root" --model "$MODEL" -o "$WORK/$ds.w.npz" --workers "$WORKERS"
        fi
    done
done

# --- classify latency (model built on cub200_010 above) ----------------------
CLS_MODEL="$WORK/cub200_010.onnx"
find "$CUB" -type f ! -name '.*' | sort | head -n 200 >"$WORK/imgs200"
ONE=$(head -n 1 "$WORK/imgs200")
mapfile -t IMGS200 <"$WORK/imgs200"
CLS_TSV="$WORK/classify.tsv"; : >"$CLS_TSV"

# time_runs NAME RUNS -- command...  (whole process, wall seconds, one line per run)
time_runs() {
    local name=$1 runs=$2; shift 3
    if command -v hyperfine >/dev/null; then
        hyperfine -N --warmup 2 --runs "$runs" --export-json "$WORK/hf.json" -- "$(printf '%q ' "$@")" >/dev/null 2>&1 ||
            hyperfine --warmup 2 --runs "$runs" --export-json "$WORK/hf.json" -- "$(printf '%q ' "$@")" >/dev/null
        "$PY" -c 'import json,sys; [print(t) for t in json.load(open(sys.argv[1]))["results"][0]["times"]]' "$WORK/hf.json" |
            sed "s/^/$name\t/" >>"$CLS_TSV"
    else
        "$@" >/dev/null; "$@" >/dev/null   # warm-up (page cache, ORT library)
        for _ in $(seq 1 "$runs"); do
            local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
            echo -e "$name\t$(echo "$t1 - $t0" | bc)" >>"$CLS_TSV"
        done
    fi
}
echo "classify latency (hyperfine: $(command -v hyperfine || echo 'not installed, bash loop'))" >&2
wait_idle
time_runs cold1 10 -- env $CBR_ENV "$CBR" classify "$CLS_MODEL" "$ONE" --top-k 1
wait_idle
time_runs batch200 5 -- env $CBR_ENV "$CBR" classify "$CLS_MODEL" "${IMGS200[@]}" --top-k 1
/usr/bin/time -f '%M' -o "$WORK/cls.rss" env $CBR_ENV "$CBR" classify "$CLS_MODEL" "${IMGS200[@]}" --top-k 1 >/dev/null
CLS_RSS=$(cat "$WORK/cls.rss")

LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg); runs started on a busy machine: $NOT_IDLE"

# --- report ------------------------------------------------------------------
"$PY" - "$RESULTS" "$CLS_TSV" "$CLS_RSS" "$LOAD_START" "$LOAD_END" "$REPS" "$CBR_ENV" <<'EOF'
import sys, statistics as st, collections, platform, datetime, os
res, cls, cls_rss, l0, l1, reps, cbr_env = sys.argv[1:]
rows = collections.OrderedDict()
for line in open(res):
    ds, n, tool, rep, wall, rss, inner = line.rstrip("\n").split("\t")
    r = rows.setdefault((ds, tool), {"n": int(n), "wall": [], "rss": [], "inner": []})
    r["wall"].append(float(wall)); r["rss"].append(int(rss))
    try: r["inner"].append(float(inner))
    except ValueError: pass
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"## cbr build vs Python reference — {datetime.date.today()} — {os.cpu_count()} cores ({cpu}), "
      f"median of {reps}; load avg start {l0}, end {l1}" + (f"; cbr env: {cbr_env}" if cbr_env else ""))
print()
print("| dataset | images | tool | median s (process) | images/s | ratio cbr/this | median s (decode+embed loop) | loop images/s | loop ratio cbr/this | peak RSS MB |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for (ds, tool), r in rows.items():
    cbr = rows[(ds, "cbr build")]
    w, wc = st.median(r["wall"]), st.median(cbr["wall"])
    i = st.median(r["inner"]) if r["inner"] else float("nan")
    ic = st.median(cbr["inner"]) if cbr["inner"] else float("nan")
    ratio = "—" if tool == "cbr build" else f"{w / wc:.2f}x"
    iratio = "—" if tool == "cbr build" else f"{i / ic:.2f}x"
    print(f"| {ds} | {r['n']} | {tool} | {w:.2f} | {r['n'] / w:.1f} | {ratio} | {i:.2f} | {r['n'] / i:.1f} | {iratio} | {max(r['rss']) / 1024:.0f} |")
print()
print("ratio cbr/this = this tool's time / cbr's time = cbr images/s ÷ this tool's images/s (>1: cbr is faster).")
print("'process' = whole command, start to exit (imports, ONNX Runtime + model load, decode, embed, write);")
print("'loop' = the in-process decode+embed time each tool prints itself (cbr: 'embedded in X s', 0.1 s resolution).")
print()
t = collections.defaultdict(list)
for line in open(cls):
    k, v = line.split("\t"); t[k].append(float(v))
cold, b200 = st.median(t["cold1"]), st.median(t["batch200"])
print("## cbr classify (model built from cub200_010, --top-k 1)")
print()
print("| measure | median |")
print("|---|---:|")
print(f"| cold: 1 image, whole process (n={len(t['cold1'])}) | {cold * 1000:.0f} ms |")
print(f"| 200 images, whole process (n={len(t['batch200'])}) | {b200 * 1000:.0f} ms |")
print(f"| warm per image = (t200 − t1) / 199 | {(b200 - cold) / 199 * 1000:.1f} ms ({199 / (b200 - cold):.0f} images/s) |")
print(f"| peak RSS, 200 images | {int(cls_rss) / 1024:.0f} MB |")
print()
print("warm per-image time is amortised over chunks of 32 (decoded in parallel, scored as one batch), not a batch-1 latency.")
EOF
