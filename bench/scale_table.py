"""Prints the scale table (markdown) from the JSON lines of bench/scale.sh."""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
by = {}
for r in rows:
    by.setdefault(r["n"], []).append(r)


def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def n_str(n):
    return f"{n // 1000000}M" if n >= 1000000 else f"{n // 1000}k"


print("Exact top-10 search, 1280-d f32 rows (ratios: FAISS time / cbr time, >1 = cbr faster)\n")
print("| N | FAISS single ms (2 thr / 1 thr) | cbr FlatIndex single ms | ratio | FAISS batch q/s (2 thr / 1 thr) | cbr batch q/s | ratio | cbr top-1 = FAISS top-1 |")
print("|---|---|---|---|---|---|---|---|")
best = {}
for n, rs in sorted(by.items()):
    faiss = [r for r in rs if r["what"] == "faiss-flat-ip"]
    flat = next((r for r in rs if r["what"] == "cbr-flat"), None)
    if not faiss or not flat:
        continue
    f2 = next((r for r in faiss if r["threads"] > 1), faiss[0])
    f1 = next((r for r in faiss if r["threads"] == 1), faiss[-1])
    fs = min(f2["single_ms"], f1["single_ms"])
    fb = max(f2["batch_qps"], f1["batch_qps"])
    best[n] = (fs, fb)
    print(f"| {n_str(n)} | {fmt(f2['single_ms'])} / {fmt(f1['single_ms'])} | {fmt(flat['single_ms'])} | {fs / flat['single_ms']:.2f} "
          f"| {f2['batch_qps']:.0f} / {f1['batch_qps']:.0f} (batch {f1['batch']}) | {flat['batch_qps']:.0f} | {flat['batch_qps'] / fb:.2f} "
          f"| {fmt(flat.get('top1_agrees_with_faiss'), 3)} |")
print("\nRatios compare with FAISS's better thread setting.\n")

print("Exported ONNX head in ONNX Runtime (embedding input -> scores; ratios vs FAISS's best, >1 = head faster;")
print("peak memory: of building the head and writing the file, and of ONNX Runtime loading it from the file)\n")
print("| N | rows | classes | head ops | file MB | build peak MB | load s | load peak MB | single ms | vs FAISS single | batch q/s | vs FAISS batch |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
BUILD = ("read rows into the index", "head", "graph", "encode", "write")
for n, rs in sorted(by.items()):
    for r in (r for r in rs if r["what"] == "onnx-head"):
        dtype = r.get("dtype", "f32")
        if "skipped" in r:
            print(f"| {n_str(n)} | {dtype} | {r['classes']} | - | - | - | - | - | - | - | - | {r['skipped']} |")
            continue
        fs, fb = best.get(n, (None, None))
        mem = r.get("memory", {})
        build = max((mem[p]["peak_mb"] for p in BUILD if p in mem), default=None)
        load = mem.get("load in ONNX Runtime from the file", {}).get("peak_mb")
        file_mb = r["file_bytes"] / 1e6
        times = lambda mb: "-" if mb is None else f"{mb} ({mb * 2**20 / r['file_bytes']:.1f}x)"
        print(f"| {n_str(n)} | {dtype} | {r['classes']} | {r['ops']} | {file_mb:.0f} | {times(build)} | {r['load_s']:.2f} | {times(load)} | {fmt(r['single_ms'])} "
              f"| {fs / r['single_ms']:.2f} | {r['batch_qps']:.0f} | {r['batch_qps'] / fb:.2f} |")

print("\nApproximate search: cbr IVF index (top-10; recall@1 against exact search on the same queries; * = the index's default probes)\n")
print("| N | cells | probed | build s | single ms | speedup vs cbr exact | vs FAISS exact | batch q/s | recall@1 |")
print("|---|---|---|---|---|---|---|---|---|")
files = []
for n, rs in sorted(by.items()):
    flat = next((r for r in rs if r["what"] == "cbr-flat"), None)
    fs, _ = best.get(n, (None, None))
    for ivf in (r for r in rs if r["what"] == "cbr-ivf"):
        star = "*" if ivf.get("default_nprobe") else ""
        print(f"| {n_str(n)} | {ivf['lists']} | {ivf['nprobe']}{star} | {ivf['build_s']:.1f} | {ivf['single_ms']:.3f} | {flat['single_ms'] / ivf['single_ms']:.0f}x "
              f"| {fs / ivf['single_ms']:.0f}x | {ivf['batch_qps']:.0f} | {ivf['recall_at_1']:.3f} |")
    files += [r for r in rs if r["what"] == "cbr-ivf-file"]
for f in files:
    print(f"\nIVF file at {n_str(f['n'])}: {f['file_bytes'] / 1e9:.2f} GB, saved in {f['save_s']:.1f} s, loaded (and checked) in {f['load_s']:.1f} s.")
