"""FAISS IndexFlatIP on the vectors written by `examples/scale.rs gen`, timed
like cbr's search: median single-query latency and one batch's throughput.
Writes FAISS's top-1 ids (faiss_top1.u32) so the Rust side can check that
both find the same rows. Prints one JSON object."""
import argparse, json, os, time

import faiss
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--dir", required=True)
p.add_argument("--singles", type=int, default=50)
p.add_argument("--batch", type=int, default=1000)
p.add_argument("--k", type=int, default=10)
a = p.parse_args()

meta = json.load(open(os.path.join(a.dir, "meta.json")))
n, d = meta["n"], meta["dim"]
index = faiss.IndexFlatIP(d)
# Memory-mapped, so FAISS's own copy is the only one in memory.
rows = np.memmap(os.path.join(a.dir, "rows.f32"), dtype="<f4", mode="r", shape=(n, d))
for start in range(0, n, 65536):
    index.add(np.ascontiguousarray(rows[start : start + 65536]))
del rows
queries = np.fromfile(os.path.join(a.dir, "queries.f32"), dtype="<f4").reshape(-1, d)

for i in range(2):
    index.search(queries[i : i + 1], a.k)
times = []
for i in range(a.singles):
    q = queries[i % len(queries)][None, :]
    t = time.perf_counter()
    index.search(q, a.k)
    times.append((time.perf_counter() - t) * 1e3)
times.sort()

batch = queries[: a.batch]
t = time.perf_counter()
_, ids = index.search(batch, a.k)
batch_s = time.perf_counter() - t
ids[:, 0].astype("<u4").tofile(os.path.join(a.dir, "faiss_top1.u32"))
print(json.dumps({"what": "faiss-flat-ip", "n": n, "dim": d, "k": a.k, "single_ms": times[len(times) // 2],
                  "batch": len(batch), "batch_qps": len(batch) / batch_s, "threads": faiss.omp_get_max_threads(),
                  "faiss": faiss.__version__}))
