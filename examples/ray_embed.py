#!/usr/bin/env python3
"""Embed a labelled image set on a Ray cluster, one Parquet shard per task, then build.

    python examples/ray_embed.py PHOTOS --out parts/ [--address auto] [--shards N]
    cbr build --embeddings 'parts/*.parquet' -o model.onnx

PHOTOS is a folder <root>/<label>/<images> or a CSV manifest (path,label) that every Ray node
can read at the same path (a shared volume or object storage mounted with a FUSE driver).
Each task runs ``cbr.embed_shard(PHOTOS, parts/part-I.parquet, (I, N))``: the library call
behind ``cbr embed PHOTOS --shard I/N``, so the parts are the files that command writes and
``cbr build --embeddings`` merges them into the model a direct ``cbr build PHOTOS`` writes,
byte for byte. A shard is a pure function of the image list, written atomically, so a task
whose worker dies is simply run again by Ray (``max_retries``).

Needs the ``classification-by-retrieval`` wheel (``import cbr``) and ``ray`` on every node;
each node fetches ONNX Runtime and the embedder into its cbr cache on first use (or copy a
warm ``$CBR_CACHE_DIR`` into the node image). docs/scale.md says how to run it on KubeRay or a
``ray up`` cluster and what it measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any, Dict, Optional

import ray

import cbr


def embed_part(
    photos: str,
    out: str,
    index: int,
    count: int,
    embedder: str,
    augment: bool,
    cache: bool,
    kill_once: Optional[str],
) -> Dict[str, Any]:
    """One Ray task: shard ``index`` of ``count`` into ``out/part-INDEX.parquet``."""
    output = os.path.join(out, f"part-{index:05d}.parquet")

    def progress(done: int, total: int) -> None:
        # Fault injection for the test (--kill-once): the first attempt of shard 0 to get half
        # way kills its own worker process, as a lost node or the OOM killer would.
        if kill_once and index == 0 and done >= total // 2:
            try:
                fd = os.open(kill_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, f"killed worker {os.getpid()} at {done}/{total}\n".encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    report = cbr.embed_shard(
        photos,
        output,
        (index, count),
        embedder=embedder,
        augment=augment,
        cache=cache,
        progress=progress if kill_once else None,
    )
    report["node"] = ray.get_runtime_context().get_node_id()
    report["pid"] = os.getpid()
    return report


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("photos", help="folder <root>/<label>/<images> or CSV manifest (path,label)")
    p.add_argument("--out", required=True, help="folder for the Parquet shards")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (auto, or HOST:PORT); default: start a local Ray",
    )
    p.add_argument("--shards", type=int, default=0, help="number of shards (default: 4 per CPU)")
    p.add_argument("--embedder", default=cbr.DEFAULT_EMBEDDER)
    p.add_argument("--augment", action="store_true", help="also embed mirror images")
    p.add_argument("--no-cache", action="store_true", help="do not use cbr's embedding cache")
    p.add_argument("--cpus-per-task", type=float, default=1.0)
    p.add_argument("--max-retries", type=int, default=3, help="re-runs of a task whose worker died")
    p.add_argument("--build", metavar="MODEL", help="then build MODEL from the shards here")
    p.add_argument("--kill-once", metavar="MARKER", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    photos = os.path.abspath(a.photos)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    ray.init(address=a.address, log_to_driver=False)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        count = a.shards or 4 * cpus
        task = ray.remote(num_cpus=a.cpus_per_task, max_retries=a.max_retries)(embed_part)
        start = time.time()
        refs = [
            task.remote(
                photos, out, i, count, a.embedder, a.augment, not a.no_cache, a.kill_once
            )
            for i in range(count)
        ]
        reports = ray.get(refs)
        seconds = time.time() - start
    finally:
        ray.shutdown()
    embedded = sum(r["embedded"] for r in reports)
    summary = {
        "shards": count,
        "nodes": nodes,
        "cpus": cpus,
        "images": reports[0]["images"] if reports else 0,
        "embedded": embedded,
        "cached": sum(r["cached"] for r in reports),
        "skipped": sum(len(r["skipped"]) for r in reports),
        "seconds": round(seconds, 3),
        "images_per_second": round(embedded / seconds, 2) if seconds > 0 else None,
        "task_nodes": len({r["node"] for r in reports}),
        "out": out,
    }
    print(json.dumps(summary), flush=True)
    if a.build:
        model = cbr.build_from_shards(
            os.path.join(out, "*.parquet"), a.build, embedder=a.embedder, augment=a.augment
        )
        print(f"wrote {a.build}: {len(model.labels)} classes", file=sys.stderr)
    else:
        print(
            f"next: cbr build --embeddings '{out}/*.parquet' -o model.onnx"
            + (" --augment" if a.augment else ""),
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
