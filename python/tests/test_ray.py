"""examples/ray_embed.py on a real local Ray cluster (a head node and a second worker node on
this machine, in a loopback-only network namespace): the shards its tasks write merge, with `cbr build --embeddings`, into the model a
direct `cbr build` writes, byte for byte; also when a task's worker process is killed half way
and Ray runs the task again."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli, scene_images, write_manifest

RAY = str(Path(sys.executable).parent / "ray")
EXAMPLE = str(REPO / "examples" / "ray_embed.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_netns(holder: subprocess.Popen, *cmd: str) -> list:
    """`cmd` run in the holder's network namespace."""
    return ["nsenter", f"--net=/proc/{holder.pid}/ns/net", *cmd]


def wait_for_nodes(holder, address: str, count: int, env: dict, timeout: float = 120) -> None:
    probe = (
        "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
        "print(len([n for n in ray.nodes() if n['Alive']]))"
    )
    deadline = time.time() + timeout
    alive = None
    while time.time() < deadline:
        p = subprocess.run(
            in_netns(holder, sys.executable, "-c", probe, address),
            capture_output=True, text=True, env=env,
        )
        if p.returncode == 0 and p.stdout.strip() and int(p.stdout.split()[-1]) >= count:
            return
        alive = p.stdout.strip() or p.stderr[-500:]
        time.sleep(1)
    raise AssertionError(f"the Ray cluster did not reach {count} nodes: {alive}")


@pytest.fixture(scope="module")
def cluster():
    """`ray start --head --block` plus a second node, each a child process of this test (so
    stopping them ends exactly the Ray processes this test started), in a network namespace of
    their own with only the loopback interface: Ray would otherwise advertise and dial the
    machine's own address, and its usage-stats module probes cloud metadata addresses even with
    usage stats off. There those connections fail at once and no packet leaves the machine."""
    holder = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep infinity"]
    )
    # Short: Ray puts its sockets under the temporary directory (108-byte path limit).
    temp = tempfile.mkdtemp(prefix="cbr-ray-", dir="/tmp")
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--block", "--disable-usage-stats"]
    logs = [open(Path(temp) / f"node-{i}.log", "w") for i in range(2)]
    nodes = []
    try:
        deadline = time.time() + 30
        while "UP" not in subprocess.run(
            in_netns(holder, "ip", "-o", "link", "show", "lo"), capture_output=True, text=True
        ).stdout:
            assert time.time() < deadline, "could not make a network namespace (unshare, nsenter)"
            time.sleep(0.2)
        nodes.append(subprocess.Popen(
            in_netns(holder, RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                     f"--temp-dir={temp}", *common),
            stdout=logs[0], stderr=subprocess.STDOUT, env=env,
        ))
        wait_for_nodes(holder, address, 1, env)
        nodes.append(subprocess.Popen(
            in_netns(holder, RAY, "start", f"--address={address}", *common),
            stdout=logs[1], stderr=subprocess.STDOUT, env=env,
        ))
        wait_for_nodes(holder, address, 2, env)
        yield {"address": address, "env": env, "holder": holder}
    finally:
        for p in reversed(nodes):
            p.terminate()
        for p in reversed(nodes):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        holder.kill()
        holder.wait()
        for f in logs:
            f.close()


def run_example(cluster, manifest: Path, out: Path, *extra: str) -> dict:
    p = subprocess.run(
        in_netns(cluster["holder"], sys.executable, EXAMPLE, str(manifest), "--out", str(out),
                 "--address", cluster["address"], *extra),
        capture_output=True, text=True, env=cluster["env"], timeout=600,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_ray_shards_build_the_direct_model_even_after_a_killed_worker(cluster, tmp_path):
    paths, labels = scene_images(4, 10)
    manifest = write_manifest(tmp_path / "m.csv", paths, labels)
    run_cli("build", str(manifest), "-o", str(tmp_path / "direct.onnx"), "-q", "--no-cache")
    direct = (tmp_path / "direct.onnx").read_bytes()

    summary = run_example(cluster, manifest, tmp_path / "parts", "--shards", "4", "--no-cache")
    assert (summary["nodes"], summary["embedded"], summary["skipped"]) == (2, 40, 0), summary
    assert summary["task_nodes"] == 2, f"the tasks ran on one node only: {summary}"
    run_cli("build", "--embeddings", f"{tmp_path}/parts/*.parquet", "-o",
            str(tmp_path / "ray.onnx"), "-q")
    assert (tmp_path / "ray.onnx").read_bytes() == direct

    # Shard 0's first attempt kills its own worker half way; Ray runs it again.
    marker = tmp_path / "killed"
    summary = run_example(
        cluster, manifest, tmp_path / "parts2", "--shards", "4", "--no-cache",
        "--kill-once", str(marker),
    )
    assert marker.is_file() and marker.read_text().startswith("killed worker"), "no task was killed"
    assert summary["embedded"] == 40, summary
    shards = sorted(p.name for p in (tmp_path / "parts2").iterdir())
    assert shards == [f"part-{i:05d}.parquet" for i in range(4)], shards
    run_cli("build", "--embeddings", f"{tmp_path}/parts2/*.parquet", "-o",
            str(tmp_path / "ray2.onnx"), "-q")
    assert (tmp_path / "ray2.onnx").read_bytes() == direct
